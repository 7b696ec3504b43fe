/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The migrate controller (leader only): moves a volume's replica from one node to another through
 * HwameiStor's LocalVolumeMigrate states, with the data carried by the nodes' block stream
 * (node/sync.h describes the annotations it writes and reads on the replicas).
 *
 *   ""           → Submitted    the volume exists and the source holds a replica of it; while the
 *                               volume is in use on the source (LocalVolume status.publishedNode)
 *                               it waits here, saying so in status.message
 *   Submitted    → AddReplica   a target is chosen: a Ready LocalStorageNode other than the
 *                               source, without a replica of the volume, whose pool of the volume's
 *                               class has room; the first of targetNodesSuggested that qualifies,
 *                               else the one with the most free space. Its name, the new replica's
 *                               name and the migration's PSK identity go into status first, then
 *                               the replica is created (marked sync-pending)
 *   AddReplica   → SyncReplica  once the target replica is Ready and exposed: the source replica
 *                               is asked to push; progress is mirrored into status.progress
 *   SyncReplica  → PruneReplica once the target verified the source's digest locally
 *   PruneReplica → Completed    the LocalVolume's accessibility and replica list name the target,
 *                               then the source replica is deleted (its node removes the volume
 *                               first); the digest stays in status
 *
 * spec.abort (at any state before PruneReplica), a copy that failed MIGRATE_MAX_ATTEMPTS times, or
 * a target that failed verification MIGRATE_MAX_ROUNDS times roll back: the target replica is
 * deleted, the source's push request removed; the source is never touched. Requests that cannot
 * succeed (an unknown volume, a source without a replica, suggested targets none of which
 * qualify) end Aborted with the reason, deleting nothing.
 *
 * Everything is read from and written to the API objects, so a new leader continues where the
 * last one stopped.
 */

#include <cjson/cJSON.h>

#include "../basic/macro.h"
#include "../kube/kube-client.h"
#include "../kube/kube-events.h"

#define MIGRATE_MAX_ATTEMPTS 8
#define MIGRATE_MAX_ROUNDS   3

typedef struct MigrateController MigrateController;

/* Copies at once: in the cluster, and leaving one node. A migration beyond them waits in
 * Submitted ("waiting for a free copy slot"). 0: no limit. */
typedef struct MigrateOptions {
        unsigned max_running;
        unsigned max_running_per_node;
} MigrateOptions;

int migrate_controller_new(KubeClient *client, EventRecorder *events, const MigrateOptions *options,
                           MigrateController **ret);
MigrateController *migrate_controller_free(MigrateController *mc);
DEFINE_TRIVIAL_CLEANUP_FUNC(MigrateController *, migrate_controller_free);

int migrate_controller_start(MigrateController *mc);

/* For metrics: the LocalVolumeMigrates in the controller's cache by status.state, counts[i] for
 * states[i] ("" for one without a state yet). Returns how many are in none of the states, or
 * -EAGAIN before the first list arrived. Reads only. */
int migrate_controller_count_states(MigrateController *mc, const char *const *states, size_t n,
                                    unsigned *counts);
