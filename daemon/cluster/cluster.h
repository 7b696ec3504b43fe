/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The node's connection to its cluster: reads the kubeconfig (retrying with capped backoff until
 * it is usable), keeps the credentials fresh (rotated certificates and tokens are picked up within
 * a minute), watches the node's own Node object, renews the node's heartbeat Lease, and takes part
 * in the election of the leader that runs the cluster-wide controllers.
 *
 * Everything runs on the event loop; the owner learns of changes through the callback and asks
 * for the details when it needs them.
 */

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <systemd/sd-event.h>

#include "../basic/macro.h"
#include "../basic/time-util.h"
#include "../node/sync.h"
#include "../pool/storage.h"

typedef struct Cluster Cluster;

typedef enum ClusterState {
        CLUSTER_WAITING,    /* no usable kubeconfig yet */
        CLUSTER_CONNECTING, /* client made, first answers pending */
        CLUSTER_CONNECTED,  /* the node's watch is synced */
        CLUSTER_DEGRADED,   /* was connected; the API answers errors or nothing */
        _CLUSTER_STATE_MAX,
        _CLUSTER_STATE_INVALID = -EINVAL,
} ClusterState;

const char *cluster_state_to_string(ClusterState s);

typedef struct ClusterConfig {
        const char *node_name;
        const char *kubeconfig;
        const char *namespace; /* for Leases */
        unsigned qps, burst;
        usec_t lease_duration, renew_deadline, retry_period;
        usec_t heartbeat_interval;
        Storage *storage;              /* the node's storage, for its LocalStorageNode and replicas */
        const char *storage_ip;        /* NULL: from storage_interface, or the route to the API */
        const char *storage_interface; /* NULL: none */
        /* Moving replicas' data (node/sync.h): the block stream (NULL: none, stream_problem says
         * why), where push checkpoints live, and the bandwidth limit per push (0: none). */
        struct StreamService *stream;
        const char *stream_problem;
        const char *checkpoint_dir;
        uint64_t bandwidth;
        /* Leader: copies at once in the cluster and per source node (0: no limit). */
        unsigned migrate_max_running, migrate_max_running_per_node;
} ClusterConfig;

typedef struct ClusterCallbacks {
        /* Something in cluster_status_json() changed (state, message, leadership). */
        void (*changed)(Cluster *c, void *userdata);
        /* This node became or stopped being the leader. */
        void (*leading)(Cluster *c, bool leading, void *userdata);
} ClusterCallbacks;

int cluster_new(sd_event *e, const ClusterConfig *config, const ClusterCallbacks *cb, void *userdata,
                Cluster **ret);
Cluster *cluster_free(Cluster *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(Cluster *, cluster_free);

int cluster_start(Cluster *c);

/* Clean shutdown: hands the leader Lease over if we hold it; done runs when that is finished
 * (bounded by the renew deadline) or at once. */
void cluster_shutdown(Cluster *c, void (*done)(void *userdata), void *userdata);

ClusterState cluster_state(const Cluster *c);
/* One line for people: what the connection is doing or waiting for. */
const char *cluster_message(const Cluster *c);
bool cluster_is_leader(const Cluster *c);

int cluster_status_json(const Cluster *c, cJSON **ret);

/* The storage snapshot changed: the LocalStorageNode and replicas follow. */
void cluster_storage_changed(Cluster *c);

/* For metrics, on the loop. This node's LocalVolumeReplicas by status.state (see
 * replica_controller_count_states()); -ENODEV while there is no replica controller (no usable
 * kubeconfig yet). */
int cluster_count_replicas(Cluster *c, const char *const *states, size_t n, unsigned *counts);
/* The cluster's LocalVolumeMigrates by status.state; -ENODEV unless this node leads. */
int cluster_count_migrations(Cluster *c, const char *const *states, size_t n, unsigned *counts);
/* This node's pushes (sync_agent_stats()); zeros while there is no sync agent. */
void cluster_push_stats(Cluster *c, SyncAgentStats *ret);
