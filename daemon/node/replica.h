/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The node's side of LocalVolumeReplicas: for every replica whose spec.nodeName is this node, the
 * logical volume behind it exists with at least the required size (created, or grown — never
 * shrunk), its status says where the data is and whether it is usable, and when the replica is
 * deleted (or spec.delete is set) the volume goes first: a finalizer keeps the object until then.
 *
 * Replica states: Creating → Ready; NotReady when its spec cannot be honoured or its disk is gone
 * (a condition says why, and nothing else is touched); ToBeDeleted → Deleted.
 */

#include "../basic/macro.h"
#include "../kube/kube-client.h"
#include "../kube/kube-events.h"
#include "../pool/storage.h"

#define REPLICA_FINALIZER "hwameistor.io/hwameid-volume"
/* Set by whoever creates a replica that must receive data (a migration target): the node then
 * reports synced=false until the copy has landed. */
#define REPLICA_SYNC_ANNOTATION "hwameistor.io/hwameid-sync-pending"

typedef struct ReplicaController ReplicaController;

int replica_controller_new(KubeClient *client, Storage *storage, EventRecorder *events,
                           const char *node_name, ReplicaController **ret);
ReplicaController *replica_controller_free(ReplicaController *rc);
DEFINE_TRIVIAL_CLEANUP_FUNC(ReplicaController *, replica_controller_free);

int replica_controller_start(ReplicaController *rc);

/* The storage snapshot changed (a disk vanished, a pool grew): look at every replica again. */
void replica_controller_storage_changed(ReplicaController *rc);

/* For metrics: this node's replicas in the controller's cache by status.state, counts[i] for
 * states[i] ("" for a replica without a state yet). Returns how many are in none of the states,
 * or -EAGAIN before the first list arrived. Reads only. */
int replica_controller_count_states(ReplicaController *rc, const char *const *states, size_t n,
                                    unsigned *counts);
