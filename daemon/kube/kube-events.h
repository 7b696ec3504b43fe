/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Kubernetes Events (core/v1) for what users should see with `kubectl describe` or
 * `kubectl get events`: a migration started or failed, a leader took over.
 *
 * Like client-go's EventCorrelator, a repeat of the same event (same object, type, reason and
 * message) does not create a new Event: it bumps the existing one's count and lastTimestamp. Each
 * object gets a token bucket (a burst of 25, then one every 5 minutes) so that a flapping object
 * cannot flood the API server. Events of cluster-scoped objects go to the "default" namespace, as
 * client-go does. Emitting never blocks and never fails the caller: losing an Event is logged at
 * debug level only.
 */

#include <cjson/cJSON.h>

#include "../basic/macro.h"
#include "kube-client.h"

typedef struct EventRecorder EventRecorder;

#define EVENT_NORMAL  "Normal"
#define EVENT_WARNING "Warning"

/* component names the reporter ("hwameid"), host the node it runs on. */
int event_recorder_new(KubeClient *client, const char *component, const char *host, EventRecorder **ret);
EventRecorder *event_recorder_free(EventRecorder *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(EventRecorder *, event_recorder_free);

/*
 * involved is the object the event is about (its apiVersion, kind, metadata.name, namespace, uid
 * are used; built-in list items lack apiVersion/kind, so pass them when they are missing).
 * type is EVENT_NORMAL or EVENT_WARNING; reason is a short CamelCase word.
 */
void event_recorder_emit(EventRecorder *r, const char *api_version, const char *kind, const cJSON *involved,
                         const char *type, const char *reason, const char *format, ...) _printf_(7, 8);

/* Events created and updated so far, and dropped by the rate limit (for tests and status). */
typedef struct EventRecorderStats {
        unsigned created, updated, dropped, failed;
        unsigned pending; /* writes in flight */
} EventRecorderStats;
const EventRecorderStats *event_recorder_stats(const EventRecorder *r);
