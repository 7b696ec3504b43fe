/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Leader election on a coordination.k8s.io/v1 Lease with client-go's semantics, and the per-node
 * heartbeat Lease.
 *
 * Safety rests on two rules from client-go. A candidate judges expiry only by its own monotonic
 * clock: a lease is free when its holder is empty or when the record has not changed for
 * leaseDurationSeconds since this process last saw it change; timestamps inside the record are
 * never compared with the local clock. And writes are optimistic: every PUT carries the
 * resourceVersion it was based on, so of two racing candidates one gets 409 Conflict. The leader
 * renews every retry period and gives up when it has not renewed for the renew deadline, which is
 * shorter than the lease duration, so it stops before anyone else may start.
 *
 * Followers do not poll: they watch the Lease (an informer narrowed to its name) and try to take
 * it only when the record they watch has stayed unchanged for a lease duration. An idle follower
 * thus costs the API server nothing beyond its open watch.
 *
 * A released lease (clean shutdown) has an empty holder and lease duration 1 s, so followers take
 * over at once.
 */

#include <stdbool.h>

#include "../basic/macro.h"
#include "../basic/time-util.h"
#include "../kube/kube-client.h"

typedef struct LeaderElector LeaderElector;

typedef enum LeaderState {
        LEADER_STOPPED,
        LEADER_FOLLOWING, /* watching; trying when the lease is free */
        LEADER_ACQUIRING, /* a write that would make us leader is in flight */
        LEADER_LEADING,
        LEADER_RELEASING,
        _LEADER_STATE_MAX,
        _LEADER_STATE_INVALID = -EINVAL,
} LeaderState;

const char *leader_state_to_string(LeaderState s);

typedef struct LeaderElectorConfig {
        const char *namespace;
        const char *name;
        const char *identity; /* unique per process: "<node>_<random>" */
        usec_t lease_duration, renew_deadline, retry_period;
} LeaderElectorConfig;

typedef struct LeaderElectorCallbacks {
        void (*started_leading)(LeaderElector *le, void *userdata);
        /* Called before anyone else may lead: stop every leader-only activity here. */
        void (*stopped_leading)(LeaderElector *le, void *userdata);
        void (*new_leader)(LeaderElector *le, const char *identity, void *userdata);
} LeaderElectorCallbacks;

/* Checks client-go's constraint lease_duration > renew_deadline > 1.2 × retry_period > 0. */
int leader_elector_config_validate(const LeaderElectorConfig *config);

int leader_elector_new(KubeClient *client, const LeaderElectorConfig *config,
                       const LeaderElectorCallbacks *callbacks, void *userdata, LeaderElector **ret);
LeaderElector *leader_elector_free(LeaderElector *le);
DEFINE_TRIVIAL_CLEANUP_FUNC(LeaderElector *, leader_elector_free);

int leader_elector_start(LeaderElector *le);

/* True only while the last successful renewal (counted from when it was sent) is younger than the
 * renew deadline, whatever the loop was doing meanwhile (a stopped process wakes up as follower). */
bool leader_elector_is_leader(const LeaderElector *le);
LeaderState leader_elector_state(const LeaderElector *le);
/* The holder as last observed ("" when none), and our identity. */
const char *leader_elector_holder(const LeaderElector *le);
const char *leader_elector_identity(const LeaderElector *le);
/* The Lease object as last written or seen (for Events about it), or NULL. */
const cJSON *leader_elector_lease(const LeaderElector *le);

/*
 * Stops leading and hands the lease over (empty holder). done runs when the release is written or
 * has failed (at most a renew deadline later), or at once when we are not the leader.
 */
int leader_elector_release(LeaderElector *le, void (*done)(void *userdata), void *userdata);

/* MicroTime as the API server requires: UTC with exactly six fractional digits. */
#define MICROTIME_MAX 32
char *format_microtime(char *buf, size_t len, usec_t realtime);

/* ---- heartbeat -------------------------------------------------------------------------------- */

/*
 * A Lease that only this node writes, renewed every interval, so that the leader can tell live
 * nodes from dead ones (a heartbeat older than its leaseDurationSeconds).
 */
typedef struct LeaseHeartbeat LeaseHeartbeat;

int lease_heartbeat_new(KubeClient *client, const char *namespace, const char *name, const char *holder,
                        usec_t interval, usec_t duration, LeaseHeartbeat **ret);
LeaseHeartbeat *lease_heartbeat_free(LeaseHeartbeat *hb);
DEFINE_TRIVIAL_CLEANUP_FUNC(LeaseHeartbeat *, lease_heartbeat_free);
int lease_heartbeat_start(LeaseHeartbeat *hb);
/* CLOCK_MONOTONIC time of the last successful renewal, 0 if none. */
usec_t lease_heartbeat_last_renew(const LeaseHeartbeat *hb);
