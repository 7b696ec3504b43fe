/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Node health (leader only): every node renews its heartbeat Lease hwameid-node-<node>; a node whose
 * Lease has not been renewed for its leaseDurationSeconds is marked Offline in its
 * LocalStorageNode's status.state, and the migrate controller never chooses an Offline node as a
 * target. Staleness is judged as client-go judges leader Leases: by the local clock since this
 * leader last saw the renew time change (clocks of different machines are never compared), so a
 * new leader waits one lease duration before it calls anyone Offline. A node without any Lease is
 * Offline after HEALTH_MISSING_GRACE. The node itself writes Ready again when it is back.
 */

#include "../basic/macro.h"
#include "../kube/kube-client.h"
#include "../kube/kube-events.h"

#define HEALTH_MISSING_GRACE (2 * USEC_PER_MINUTE)
#define HEALTH_LEASE_PREFIX  "hwameid-node-"

typedef struct HealthController HealthController;

int health_controller_new(KubeClient *client, EventRecorder *events, const char *namespace,
                          HealthController **ret);
HealthController *health_controller_free(HealthController *hc);
DEFINE_TRIVIAL_CLEANUP_FUNC(HealthController *, health_controller_free);

int health_controller_start(HealthController *hc);
