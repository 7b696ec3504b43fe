/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * An informer keeps a local copy of one kind of Kubernetes object (optionally narrowed by label
 * and field selectors) and tells its owner about every change, as client-go's reflector does:
 *
 *   LISTING ──list done──> WATCHING ──stream ends cleanly──> WATCHING (re-watch from the last RV)
 *      ^                      │ error
 *      │ 410 Expired          v
 *      └────────────────── BACKOFF ──timer──> WATCHING, or LISTING after a 410
 *
 * The first list asks for resourceVersion=0 (served from the API server's cache); relists ask for
 * the last RV seen, and only after that fails with 410 for the latest state (""). Watches ask for
 * bookmarks and a random timeout of 5–10 minutes so that reconnections spread out. Errors back
 * off exponentially with jitter (800 ms doubling to 30 s, reset after 2 minutes of health) and
 * honour Retry-After.
 *
 * A relist compares what it gets with the cache: objects that changed are reported as updates,
 * objects that vanished while the watch was down as deletions, unchanged ones not at all. So the
 * handlers see each change exactly once, whatever happened to the connection.
 */

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "../basic/macro.h"
#include "../basic/time-util.h"
#include "../kube/kube-client.h"
#include "cache.h"

typedef struct Informer Informer;

typedef enum InformerState {
        INFORMER_STOPPED,
        INFORMER_LISTING,
        INFORMER_WATCHING,
        INFORMER_BACKOFF,
        _INFORMER_STATE_MAX,
        _INFORMER_STATE_INVALID = -EINVAL,
} InformerState;

const char *informer_state_to_string(InformerState s);

/* Objects passed to handlers are borrowed for the duration of the call. */
typedef struct InformerHandlers {
        void (*added)(Informer *inf, const cJSON *obj, void *userdata);
        void (*updated)(Informer *inf, const cJSON *old, const cJSON *obj, void *userdata);
        void (*deleted)(Informer *inf, const cJSON *obj, void *userdata);
        /* After each completed list: the cache now mirrors the server. */
        void (*synced)(Informer *inf, void *userdata);
        /* The informer started failing (error < 0, see informer_last_error()) or works again (0). */
        void (*health)(Informer *inf, int error, void *userdata);
} InformerHandlers;

typedef struct InformerConfig {
        const char *name;           /* for logs and status, e.g. "node", "localvolumes" */
        const char *path;           /* the collection, e.g. "/api/v1/nodes" */
        const char *label_selector; /* optional */
        const char *field_selector; /* optional, e.g. "metadata.name=k8s-node-1" */
} InformerConfig;

int informer_new(KubeClient *client, const InformerConfig *config, const InformerHandlers *handlers,
                 void *userdata, Informer **ret);
Informer *informer_free(Informer *inf);
DEFINE_TRIVIAL_CLEANUP_FUNC(Informer *, informer_free);

int informer_start(Informer *inf);
void informer_stop(Informer *inf);

InformerState informer_state(const Informer *inf);
bool informer_has_synced(const Informer *inf);
const char *informer_name(const Informer *inf);
/* The last resourceVersion seen (list, event or bookmark); "" before the first list. */
const char *informer_resource_version(const Informer *inf);
/* The last error and its message, for status output; 0/NULL when healthy. */
int informer_last_error(const Informer *inf, const char **ret_message);
KubeCache *informer_cache(Informer *inf);

/* The cached objects by status.state: counts[i] for states[i] ("" for an object without a state
 * yet). Returns how many are in none of the states, or -EAGAIN before the first list. */
int informer_count_states(Informer *inf, const char *const *states, size_t n, unsigned *counts);

/* Counters for tests and status. */
typedef struct InformerStats {
        unsigned lists, watches, relists_expired, events, errors;
} InformerStats;
const InformerStats *informer_stats(const Informer *inf);
