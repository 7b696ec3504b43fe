/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The node's part in moving a replica's data: it pushes its replica's data to a target node, or
 * receives and verifies data as a target. The leader (the migrate controller) asks for both with
 * annotations on this node's LocalVolumeReplicas, and this node answers with annotations of its
 * own: every key has one writer, and each write is a merge patch of metadata.annotations.
 *
 * Target replica (created by the leader for a migration):
 *   SYNC_PENDING   (leader, removed by the node)  the migration's PSK identity: this replica must
 *                  receive data. While it is set and the replica is Ready, the node exposes the
 *                  volume on its block stream as export <replica name>, to that identity only,
 *                  and publishes SYNC_ENDPOINT.
 *   SYNC_ENDPOINT  (node)    "ADDR:PORT" of this node's block stream.
 *   SYNC_EXPECT    (leader)  {"digest": D, "size": N}: the source finished; the node withdraws the
 *                  export, hashes the first N bytes of its volume locally and answers with
 *   SYNC_RESULT    (node)    {"digest": D', "expected": D, "verified": bool, "message": …}. When
 *                  verified, SYNC_PENDING goes (so the replica reports synced=true) and DIGEST
 *                  records D; otherwise the export comes back for another push.
 *   DIGEST         (node)    the XXH3-128 of the replica's content as verified.
 *
 * Source replica:
 *   PUSH           (leader)  {"identity": I, "endpoint": "ADDR:PORT", "export": NAME}: push this
 *                  replica's data there. Runs on its own thread, with checkpoints in the checkpoint
 *                  directory (resumed after a restart or a broken connection), delta against what
 *                  the target holds, and the configured bandwidth limit. Removing the annotation
 *                  cancels the push and drops its checkpoint.
 *   PUSH_STATUS    (node)    {"identity": I, "state": "Copying"|"Done"|"Failed", "bytesTotal",
 *                  "bytesDone", "bytesSent", "bytesPerSecond", "etaSeconds", "digest", "message",
 *                  "attempts", "resumedFrom", "round"}: progress at most every few seconds, and the
 *                  end; "round" echoes PUSH's, so the leader knows which request it answers.
 *                  A failed push is retried with a growing delay while PUSH stays.
 */

#include <cjson/cJSON.h>

#include "../basic/macro.h"
#include "../kube/kube-client.h"
#include "../kube/kube-events.h"
#include "../pool/storage.h"
#include "../stream/stream-service.h"

#define SYNC_PENDING_ANNOTATION  "hwameistor.io/hwameid-sync-pending"
#define SYNC_ENDPOINT_ANNOTATION "hwameistor.io/hwameid-sync-endpoint"
#define SYNC_EXPECT_ANNOTATION   "hwameistor.io/hwameid-sync-expect"
#define SYNC_RESULT_ANNOTATION   "hwameistor.io/hwameid-sync-result"
#define SYNC_DIGEST_ANNOTATION   "hwameistor.io/hwameid-digest"
#define PUSH_ANNOTATION          "hwameistor.io/hwameid-push"
#define PUSH_STATUS_ANNOTATION   "hwameistor.io/hwameid-push-status"

typedef struct SyncAgent SyncAgent;

typedef struct SyncAgentConfig {
        const char *node_name;
        const char *checkpoint_dir; /* created when missing */
        StreamService *stream;      /* borrowed; NULL: this node cannot send or receive */
        const char *stream_problem; /* why there is no stream, for PUSH_STATUS messages */
        uint64_t bandwidth;         /* bytes per second per push; 0: unlimited */
        usec_t progress_interval;   /* PUSH_STATUS updates while copying; 0: 5 s */
} SyncAgentConfig;

int sync_agent_new(KubeClient *client, Storage *storage, EventRecorder *events,
                   const SyncAgentConfig *config, SyncAgent **ret);
/* Cancels running pushes and verifications (a push resumes from its checkpoint later) and waits for
 * their threads; withdraws every export. */
SyncAgent *sync_agent_free(SyncAgent *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(SyncAgent *, sync_agent_free);

int sync_agent_start(SyncAgent *a);
/* This node's storage address, for SYNC_ENDPOINT (with the stream's port). */
void sync_agent_set_address(SyncAgent *a, const char *ip);
/* The storage snapshot changed: volumes may have appeared. */
void sync_agent_storage_changed(SyncAgent *a);

/* {"pushes": [...], "exports": [...]} for hwameictl status. */
int sync_agent_status_json(SyncAgent *a, cJSON **ret);

/* For metrics, read on the loop. Counted since the agent was made. */
typedef struct SyncAgentStats {
        uint64_t bytes_pushed;     /* sent as data by this node's pushes, finished and running */
        uint64_t bytes_per_second; /* the running pushes' rates together (bytes sent over each one's time) */
        unsigned pushes_running;
        uint64_t pushes_completed; /* pushes that reached the end (Done) */
        uint64_t pushes_failed;    /* attempts that failed (each is retried while PUSH stays) */
} SyncAgentStats;

void sync_agent_stats(SyncAgent *a, SyncAgentStats *ret);
