/* SPDX-License-Identifier: Apache-2.0 */

/*
 * The manager owns the event loop and everything that lives on it.
 *
 * Flow of events. One sd_event loop runs on the main thread; every fd, timer and signal is a
 * source on it, and every piece of control-plane state is touched only from its callbacks:
 *
 *   SIGTERM/SIGINT ─> manager_on_signal ─> STOPPING=1, loop exits, manager_free() unwinds
 *   SIGHUP         ─> manager_reload ─> RELOADING=1, config re-read (kept on error), READY=1
 *   control socket ─> control.c reads a request ─> manager_on_control ─> reply
 *   watchdog timer ─> notify.c sends WATCHDOG=1 while the loop keeps iterating
 *   metrics HTTP   ─> metrics/metrics.c serves /metrics, /healthz, /readyz (libmicrohttpd, its
 *                     epoll fd polled by this loop); manager_collect_metrics reads the state
 *   cluster        ─> cluster.c: kubeconfig (retried with backoff until usable), the API client
 *                     (libcurl multi on this loop), the Node watch, the heartbeat Lease, leader
 *                     election; manager_on_cluster_changed turns its state into STATUS=
 *
 * On SIGTERM the leader hands its Lease over before the loop exits, so another node leads at once.
 *
 * READY=1 is sent once local start-up is done (configuration read, control socket bound). The
 * daemon never waits for the cluster to be ready: it says what it waits for and keeps trying.
 * Blocking work (LVM, bulk copies) never runs here; it runs on worker threads that post results
 * back to the loop.
 */

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "basic/json-util.h"
#include "basic/string-util.h"
#include "basic/time-util.h"
#include "cluster/cluster.h"
#include "control/control.h"
#include "log/catalog-ids.h"
#include "log/log.h"
#include "manager.h"
#include "metrics/metrics.h"
#include "notify.h"
#include "pool/storage.h"
#include "stream/stream-service.h"

/* A stop that waits for the API (lease hand-over) ends after this, whatever happens. */
#define MANAGER_STOP_TIMEOUT (5 * USEC_PER_SEC)

struct Manager {
        sd_event *event;
        sd_event_source *sigterm_source, *sigint_source, *sighup_source, *watchdog_source;

        char *config_path;
        Config config;
        int log_level_override;
        unsigned n_reloads;
        char *last_reload_error; /* NULL when the last reload worked */

        ControlServer *control;
        ManagerState state;
        usec_t start_usec;

        Cluster *cluster;
        sd_event_source *stop_timer;

        Storage *storage;
        sd_event_source *storage_timer;
        bool storage_refreshing;

        StreamService *stream;
        char *stream_listen;  /* ADDR:PORT as bound */
        char *stream_problem; /* why there is no stream service */

        MetricsServer *metrics;
        char *metrics_listen;  /* ADDR:PORT as bound */
        char *metrics_problem; /* why there is no metrics endpoint although one is configured */
};

static const char *const manager_state_table[_MANAGER_STATE_MAX] = {
        [MANAGER_STARTING] = "starting",
        [MANAGER_RUNNING] = "running",
        [MANAGER_RELOADING] = "reloading",
        [MANAGER_STOPPING] = "stopping",
};

DEFINE_STRING_TABLE_TO_STRING(manager_state, ManagerState, manager_state_table)

static void manager_set_state(Manager *m, ManagerState state) {
        if (m->state == state)
                return;
        log_debug("Manager state %s → %s.", manager_state_to_string(m->state),
                  manager_state_to_string(state));
        m->state = state;
}

/* What STATUS= says while running: the cluster connection and our role in it. */
static void manager_format_status(Manager *m, char *buf, size_t len) {
        const char *role = "";

        if (m->cluster && cluster_state(m->cluster) == CLUSTER_CONNECTED)
                role = cluster_is_leader(m->cluster) ? " Leading the cluster controllers." : " Following.";
        if (m->last_reload_error)
                (void) snprintf(buf, len,
                                "Running with the previous configuration (reload failed: %s). %s%s",
                                m->last_reload_error, m->cluster ? cluster_message(m->cluster) : "", role);
        else
                (void) snprintf(buf, len, "%s%s", m->cluster ? cluster_message(m->cluster) : "Starting.",
                                role);
}

/* STATUS= says what the daemon is doing; derived from state, never stored twice. */
static void manager_update_status(Manager *m) {
        char buf[512];

        if (m->state != MANAGER_RUNNING)
                return;
        manager_format_status(m, buf, sizeof(buf));
        (void) notify_status("%s", buf);
}

static void manager_apply_log_level(Manager *m) {
        log_set_max_level(m->log_level_override >= 0 ? m->log_level_override : m->config.log_level);
}

static void manager_on_cluster_changed(Cluster *c, void *userdata) {
        (void) c;
        manager_update_status(userdata);
}

static void manager_on_leading(Cluster *c, bool leading, void *userdata) {
        (void) c, (void) userdata;
        /* The cluster-wide controllers start and stop here. */
        if (leading)
                log_struct(LOG_NOTICE, HWAMEID_MESSAGE_LEADER_ACQUIRED,
                           "This node now leads the cluster controllers.");
        else
                log_struct(LOG_NOTICE, HWAMEID_MESSAGE_LEADER_LOST,
                           "This node no longer leads the cluster controllers.");
}

static void manager_on_storage_changed(Storage *s, void *userdata) {
        Manager *m = userdata;

        (void) s;
        if (m->cluster)
                cluster_storage_changed(m->cluster);
}

static void manager_on_storage_refreshed(int error, const char *message, void *userdata) {
        Manager *m = userdata;

        m->storage_refreshing = false;
        if (error < 0)
                log_ratelimit_errno(LOG_WARNING, error, 10 * USEC_PER_MINUTE, 2,
                                    "Refreshing the pools failed: %s", strna(message));
}

static int manager_on_storage_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        int r;

        if (!m->storage_refreshing) {
                r = storage_refresh(m->storage, manager_on_storage_refreshed, m);
                if (r >= 0)
                        m->storage_refreshing = true;
        }
        return sd_event_source_set_time(s, usec + m->config.storage_refresh);
}

/* The node's pools: created at start, looked at again every RefreshInterval. */
static int manager_storage_start(Manager *m) {
        const StorageConfig sc = {
                .backend = storage_backend_from_string(m->config.storage_backend),
                .lvm_activation = m->config.lvm_activation >= 0 ? m->config.lvm_activation
                                                                : access("/dev/mapper/control", F_OK) >= 0,
                .disks = m->config.disks,
                .disk_classes = m->config.disk_classes,
                .lvm_system_dir = m->config.lvm_directory,
                .lvm_run_dir = m->config.lvm_directory,
                .file_dir = m->config.file_directory,
                .file_capacity = m->config.file_pool_capacity,
                .file_classes = m->config.file_pool_classes,
        };
        int r;

        r = storage_new(m->event, &sc, manager_on_storage_changed, m, &m->storage);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the %s storage backend: %m",
                                       m->config.storage_backend);
        log_info(
                "Storage backend %s%s.", m->config.storage_backend,
                sc.backend == STORAGE_BACKEND_LVM
                        ? (sc.lvm_activation ? " with activation" : " without activation (no device-mapper)")
                        : "");

        r = sd_event_add_time_relative(m->event, &m->storage_timer, CLOCK_MONOTONIC, 0, 0,
                                       manager_on_storage_timer, m);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(m->storage_timer, SD_EVENT_ON);
        (void) sd_event_source_set_description(m->storage_timer, "storage-refresh");
        return 0;
}

/* (Re)creates the cluster connection from the configuration; it starts trying at once. */
/* The block stream endpoint. Without it volumes cannot move to or from this node, but everything
 * else works: a missing cluster secret is a warning, not a reason to stop. Settings apply at start. */
static int manager_stream_start(Manager *m) {
        _cleanup_free_ uint8_t *secret = NULL;
        const char *addr = m->config.stream_listen_address ?: m->config.storage_ip ?: "0.0.0.0";
        size_t secret_len = 0;
        int r;

        free(m->stream_listen);
        if (asprintf(&m->stream_listen, strchr(addr, ':') ? "[%s]:%u" : "%s:%u", addr,
                     m->config.stream_port) < 0)
                return -ENOMEM;

        if (!m->config.stream_insecure || access(m->config.cluster_secret_file, F_OK) >= 0) {
                r = stream_secret_load(m->config.cluster_secret_file, &secret, &secret_len);
                if (r < 0) {
                        free(m->stream_problem);
                        if (asprintf(&m->stream_problem, "the cluster secret %s is %s",
                                     m->config.cluster_secret_file,
                                     r == -ENOENT   ? "missing"
                                     : r == -EPERM  ? "not root-only (chmod 0600 it)"
                                     : r == -EINVAL ? "not 32 to 4096 bytes"
                                                    : "unreadable") < 0)
                                return -ENOMEM;
                        log_warning("Volumes cannot move to or from this node: %s.", m->stream_problem);
                        return 0;
                }
        }
        if (m->config.stream_insecure)
                log_warning("The block stream accepts plain TCP ([Stream] Insecure=yes): for isolated test "
                            "networks only.");

        r = stream_service_new(&(StreamServiceOptions){ .listen = m->stream_listen,
                                                        .secret = secret,
                                                        .secret_len = secret_len,
                                                        .insecure = m->config.stream_insecure },
                               &m->stream);
        if (secret)
                explicit_bzero(secret, secret_len);
        if (r < 0) {
                free(m->stream_problem);
                if (asprintf(&m->stream_problem, "cannot listen on %s: %s", m->stream_listen, strerror(-r)) <
                    0)
                        return -ENOMEM;
                log_warning("Volumes cannot move to or from this node: %s.", m->stream_problem);
                return 0;
        }
        m->stream_problem = mfree(m->stream_problem);
        free(m->stream_listen);
        if (asprintf(&m->stream_listen, strchr(addr, ':') ? "[%s]:%d" : "%s:%d", addr,
                     stream_service_port(m->stream)) < 0)
                return -ENOMEM;
        log_info("Block stream listening on %s%s.", m->stream_listen,
                 m->config.stream_insecure ? " (plain TCP accepted)"
                                           : " (TLS-PSK, keys derived from the cluster secret)");
        return 0;
}

static int manager_cluster_start(Manager *m) {
        static const ClusterCallbacks callbacks = {
                .changed = manager_on_cluster_changed,
                .leading = manager_on_leading,
        };
        const ClusterConfig cc = {
                .node_name = m->config.node_name,
                .kubeconfig = m->config.kubeconfig,
                .namespace = m->config.namespace,
                .qps = m->config.qps,
                .burst = m->config.burst,
                .lease_duration = m->config.lease_duration,
                .renew_deadline = m->config.renew_deadline,
                .retry_period = m->config.retry_period,
                .heartbeat_interval = m->config.heartbeat_interval,
                .storage = m->storage,
                .storage_ip = m->config.storage_ip,
                .storage_interface = m->config.storage_interface,
                .stream = m->stream,
                .stream_problem = m->stream_problem,
                .checkpoint_dir = m->config.checkpoint_dir,
                .bandwidth = m->config.stream_bandwidth,
                .migrate_max_running = m->config.migrate_max_running,
                .migrate_max_running_per_node = m->config.migrate_max_running_per_node,
        };
        int r;

        m->cluster = cluster_free(m->cluster);
        r = cluster_new(m->event, &cc, &callbacks, m, &m->cluster);
        if (r < 0)
                return r;
        return cluster_start(m->cluster);
}

/* ---- metrics ----------------------------------------------------------------------------- */

/* The states of LocalVolumeReplicas and LocalVolumeMigrates as metric labels; "" (none yet) is
 * "Pending", anything else "Other": the label values stay a fixed set whatever the API holds. */
static const char *const manager_replica_states[] = { "",         "Creating",    "Ready",
                                                      "NotReady", "ToBeDeleted", "Deleted" };
static const char *const manager_migrate_states[] = {
        "", "Submitted", "AddReplica", "SyncReplica", "PruneReplica", "Completed", "ToBeAborted", "Aborted"
};
#define MANAGER_STATES_MAX 8
_Static_assert(ELEMENTSOF(manager_replica_states) <= MANAGER_STATES_MAX &&
                       ELEMENTSOF(manager_migrate_states) <= MANAGER_STATES_MAX,
               "room for every state's count");

static int manager_metrics_by_state(MetricsText *t, const char *name, const char *help,
                                    const char *const *states, size_t n, const unsigned *counts, int other) {
        (void) metrics_text_family(t, name, METRICS_GAUGE, help);
        for (size_t i = 0; i < n; i++)
                (void) metrics_text_sample(
                        t, METRICS_LABELS("state", isempty(states[i]) ? "Pending" : states[i]), counts[i]);
        return metrics_text_sample(t, METRICS_LABELS("state", "Other"), other);
}

static void manager_metrics_pools(Manager *m, MetricsText *t) {
        const StorageSnapshot *snap = m->storage ? storage_snapshot(m->storage) : NULL;
        static const struct {
                const char *name, *help;
        } families[] = {
                { "hwameid_pool_capacity_bytes", "Size of the storage pool." },
                { "hwameid_pool_free_bytes", "Unallocated space in the storage pool." },
                { "hwameid_pool_volumes", "Volumes in the storage pool." },
                { "hwameid_pool_offline", "1 when a disk of the storage pool is missing." },
        };

        for (size_t f = 0; f < ELEMENTSOF(families); f++) {
                (void) metrics_text_family(t, families[f].name, METRICS_GAUGE, families[f].help);
                for (size_t i = 0; snap && i < snap->n_pools; i++) {
                        const StoragePool *p = &snap->pools[i];
                        double v = f == 0   ? (double) p->total
                                   : f == 1 ? (double) p->free
                                   : f == 2 ? (double) p->volume_count
                                            : (double) p->offline;
                        (void) metrics_text_sample(t,
                                                   METRICS_LABELS("pool", p->name, "class",
                                                                  strna(disk_class_to_string(p->class))),
                                                   v);
                }
        }
}

/* GET /metrics, on the loop: everything is read where it lives, nothing is kept. */
static int manager_collect_metrics(MetricsText *t, void *userdata) {
        Manager *m = userdata;
        bool leading = m->cluster && cluster_is_leader(m->cluster);
        unsigned counts[MANAGER_STATES_MAX];
        SyncAgentStats push = {};
        int r;

        (void) metrics_text_family(t, "hwameid_up", METRICS_GAUGE, "1 while hwameid runs.");
        (void) metrics_text_sample(t, NULL, 1);
        (void) metrics_text_family(t, "hwameid_build_info", METRICS_GAUGE,
                                   "The running version of hwameid.");
        (void) metrics_text_sample(t, METRICS_LABELS("version", HWAMEID_VERSION), 1);
        (void) metrics_text_family(t, "hwameid_cluster_connected", METRICS_GAUGE,
                                   "1 when the node is connected to the Kubernetes API server.");
        (void) metrics_text_sample(t, NULL, m->cluster && cluster_state(m->cluster) == CLUSTER_CONNECTED);
        (void) metrics_text_family(
                t, "hwameid_leader", METRICS_GAUGE,
                "1 when this node leads the cluster controllers (holds the leader Lease).");
        (void) metrics_text_sample(t, NULL, leading);

        manager_metrics_pools(m, t);

        /* Before the first list of the node's replicas, there is no count to give. */
        r = m->cluster ? cluster_count_replicas(m->cluster, manager_replica_states,
                                                ELEMENTSOF(manager_replica_states), counts)
                       : -ENODEV;
        if (r >= 0)
                (void) manager_metrics_by_state(
                        t, "hwameid_replicas", "LocalVolumeReplicas of this node by status.state.",
                        manager_replica_states, ELEMENTSOF(manager_replica_states), counts, r);

        (void) metrics_text_family(t, "hwameid_stream_exports", METRICS_GAUGE,
                                   "Replicas this node offers on its block stream as a migration's target.");
        (void) metrics_text_sample(t, NULL, m->stream ? stream_service_n_exposed(m->stream) : 0);

        if (m->cluster)
                cluster_push_stats(m->cluster, &push);
        (void) metrics_text_family(t, "hwameid_push_bytes_total", METRICS_COUNTER,
                                   "Volume data this node sent to other nodes (zero blocks and blocks the "
                                   "target already held are not sent).");
        (void) metrics_text_sample(t, NULL, (double) push.bytes_pushed);
        (void) metrics_text_family(t, "hwameid_push_bytes_per_second", METRICS_GAUGE,
                                   "The send rate of the running pushes together.");
        (void) metrics_text_sample(t, NULL, (double) push.bytes_per_second);
        (void) metrics_text_family(t, "hwameid_pushes_running", METRICS_GAUGE,
                                   "Pushes of replica data from this node under way.");
        (void) metrics_text_sample(t, NULL, push.pushes_running);
        (void) metrics_text_family(t, "hwameid_pushes_completed_total", METRICS_COUNTER,
                                   "Pushes from this node that sent all of a replica's data.");
        (void) metrics_text_sample(t, NULL, (double) push.pushes_completed);
        (void) metrics_text_family(t, "hwameid_pushes_failed_total", METRICS_COUNTER,
                                   "Push attempts from this node that failed (each is retried).");
        (void) metrics_text_sample(t, NULL, (double) push.pushes_failed);

        /* Only the leader watches the migrations. */
        r = leading ? cluster_count_migrations(m->cluster, manager_migrate_states,
                                               ELEMENTSOF(manager_migrate_states), counts)
                    : -ENODEV;
        if (r >= 0)
                (void) manager_metrics_by_state(
                        t, "hwameid_migrations", "LocalVolumeMigrates by status.state (on the leader only).",
                        manager_migrate_states, ELEMENTSOF(manager_migrate_states), counts, r);
        return metrics_text_error(t);
}

/* GET /readyz: connected to the API server and the storage scanned. */
static bool manager_metrics_ready(char *reason, size_t size, void *userdata) {
        Manager *m = userdata;
        bool connected = m->cluster && cluster_state(m->cluster) == CLUSTER_CONNECTED;
        bool scanned = m->storage && storage_snapshot(m->storage);

        if (m->state == MANAGER_STOPPING) {
                (void) snprintf(reason, size, "Shutting down.");
                return false;
        }
        if (connected && scanned)
                return true;
        (void) snprintf(reason, size, "%s%s%s",
                        connected    ? ""
                        : m->cluster ? cluster_message(m->cluster)
                                     : "Starting.",
                        connected || scanned ? "" : " ",
                        scanned ? "" : "The storage has not been scanned yet.");
        return false;
}

/* The monitoring endpoint. Not essential: when it cannot listen the daemon runs without it and
 * says why. Settings apply at start. */
static int manager_metrics_start(Manager *m) {
        static const MetricsCallbacks callbacks = {
                .collect = manager_collect_metrics,
                .ready = manager_metrics_ready,
        };
        const char *addr = m->config.metrics_listen_address;
        int r;

        if (m->config.metrics_port == 0) {
                log_info("No metrics endpoint ([Metrics] Port=0).");
                return 0;
        }
        if (asprintf(&m->metrics_listen, strchr(addr, ':') ? "[%s]:%u" : "%s:%u", addr,
                     m->config.metrics_port) < 0)
                return -ENOMEM;
        r = metrics_server_new(
                m->event,
                &(MetricsServerOptions){ .address = addr, .port = (uint16_t) m->config.metrics_port },
                &callbacks, m, &m->metrics);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                if (asprintf(&m->metrics_problem, "cannot listen on %s: %s", m->metrics_listen,
                             strerror(-r)) < 0)
                        return -ENOMEM;
                log_warning("No metrics endpoint: %s.", m->metrics_problem);
                return 0;
        }
        log_info("Metrics on http://%s/metrics, health on /healthz and /readyz.", m->metrics_listen);
        return 0;
}

static int manager_metrics_json(Manager *m, cJSON *parent) {
        cJSON *o = cJSON_AddObjectToObject(parent, "metrics");
        bool ok;

        if (!o)
                return -ENOMEM;
        ok = cJSON_AddStringToObject(o, "state", m->metrics ? "listening" : "disabled") &&
             cJSON_AddStringToObject(o, "address", m->metrics_listen ?: "") &&
             cJSON_AddNumberToObject(o, "port", m->metrics ? metrics_server_port(m->metrics) : 0) &&
             cJSON_AddNumberToObject(o, "requests",
                                     m->metrics ? (double) metrics_server_requests(m->metrics) : 0) &&
             (m->metrics_problem ? cJSON_AddStringToObject(o, "problem", m->metrics_problem)
                                 : cJSON_AddNullToObject(o, "problem"));
        return ok ? 0 : -ENOMEM;
}

static int manager_on_control(const char *command, const cJSON *request, cJSON **ret_reply, char **ret_error,
                              void *userdata) {
        Manager *m = userdata;

        (void) request;
        if (streq(command, "status"))
                return manager_status_json(m, ret_reply);

        if (asprintf(ret_error, "Unknown command '%s'.", command) < 0)
                return -ENOMEM;
        return -EOPNOTSUPP;
}

static int manager_bind_control(Manager *m) {
        ControlServer *s = NULL;
        int r;

        r = control_server_new(m->event, m->config.control_socket, manager_on_control, m, &s);
        if (r == -EADDRINUSE)
                return log_error_errno(r, "Another hwameid is answering on control socket '%s'.",
                                       m->config.control_socket);
        if (r < 0)
                return log_error_errno(r, "Failed to bind control socket '%s': %m",
                                       m->config.control_socket);
        control_server_free(m->control);
        m->control = s;
        return 0;
}

int manager_reload(Manager *m) {
        Config new = {};
        int r;

        manager_set_state(m, MANAGER_RELOADING);
        (void) notify_reloading();
        log_info("Reloading configuration from '%s'.", m->config_path);
        m->n_reloads++;

        r = config_load(&new, m->config_path);
        if (r < 0) {
                free(m->last_reload_error);
                m->last_reload_error = strdup(r == -ENOMEM ? "out of memory"
                                                           : "invalid configuration, see the log");
                log_struct_errno(LOG_ERR, r, HWAMEID_MESSAGE_RELOAD_FAILED,
                                 "Reloading '%s' failed; keeping the running configuration.",
                                 m->config_path);
                goto finish;
        }
        m->last_reload_error = mfree(m->last_reload_error);

        if (!streq(new.node_name, m->config.node_name)) {
                log_warning("[Node] Name= changed from '%s' to '%s'; this takes effect at the next restart.",
                            m->config.node_name, new.node_name);
                SWAP(new.node_name, m->config.node_name);
        }
        if (new.metrics_port != m->config.metrics_port ||
            !streq(new.metrics_listen_address, m->config.metrics_listen_address))
                log_notice("[Metrics] changed; this takes effect at the next restart.");
        if (!streq(new.control_socket, m->config.control_socket)) {
                SWAP(new.control_socket, m->config.control_socket);
                if (manager_bind_control(m) < 0) {
                        log_warning("Keeping control socket '%s'.", new.control_socket);
                        SWAP(new.control_socket, m->config.control_socket);
                }
        }
        bool cluster_changed = !streq(new.kubeconfig, m->config.kubeconfig) ||
                               !streq(new.namespace, m->config.namespace) || new.qps != m->config.qps ||
                               new.burst != m->config.burst ||
                               new.lease_duration != m->config.lease_duration ||
                               new.renew_deadline != m->config.renew_deadline ||
                               new.retry_period != m->config.retry_period ||
                               new.heartbeat_interval != m->config.heartbeat_interval;

        /* What remains in new after the swaps is the old value or equal to the running one. */
        SWAP(new.kubeconfig, m->config.kubeconfig);
        SWAP(new.namespace, m->config.namespace);
        m->config.qps = new.qps;
        m->config.burst = new.burst;
        m->config.lease_duration = new.lease_duration;
        m->config.renew_deadline = new.renew_deadline;
        m->config.retry_period = new.retry_period;
        m->config.heartbeat_interval = new.heartbeat_interval;
        m->config.log_level = new.log_level;
        manager_apply_log_level(m);

        if (cluster_changed) {
                log_info("Kubernetes settings changed; reconnecting with kubeconfig '%s'.",
                         m->config.kubeconfig);
                r = manager_cluster_start(m);
                if (r < 0)
                        log_warning_errno(r, "Failed to restart the cluster connection, ignoring: %m");
        }

finish:
        config_done(&new);
        manager_set_state(m, MANAGER_RUNNING);
        manager_update_status(m);
        (void) notify_ready(NULL);
        return r < 0 ? r : 0;
}

static void manager_on_cluster_stopped(void *userdata) {
        Manager *m = userdata;

        (void) sd_event_exit(m->event, 0);
}

static int manager_on_stop_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        (void) s, (void) usec;
        log_warning("Hand-over did not finish within %llus, exiting anyway.",
                    (unsigned long long) (MANAGER_STOP_TIMEOUT / USEC_PER_SEC));
        return sd_event_exit(m->event, 0);
}

static int manager_on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        (void) s;
        switch (si->ssi_signo) {
        case SIGHUP:
                if (m->state == MANAGER_STOPPING)
                        return 0; /* too late to reload */
                (void) manager_reload(m);
                return 0;
        case SIGTERM:
        case SIGINT:
                if (m->state == MANAGER_STOPPING) {
                        log_notice("Received a second stop signal, exiting now.");
                        return sd_event_exit(m->event, 0);
                }
                log_info("Received %s, shutting down.", si->ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
                manager_set_state(m, MANAGER_STOPPING);
                (void) notify_stopping(m->cluster && cluster_is_leader(m->cluster)
                                               ? "Shutting down: handing the leader lease over."
                                               : "Shutting down.");
                (void) sd_event_add_time_relative(m->event, &m->stop_timer, CLOCK_MONOTONIC,
                                                  MANAGER_STOP_TIMEOUT, 0, manager_on_stop_timeout, m);
                if (m->cluster)
                        cluster_shutdown(m->cluster, manager_on_cluster_stopped, m);
                else
                        manager_on_cluster_stopped(m);
                return 0;
        default:
                return 0;
        }
}

int manager_new(const char *config_path, Config *config, int log_level_override, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        sigset_t mask;
        int r;

        assert(config_path);
        assert(config);
        assert(ret);

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->config_path = strdup(config_path);
        if (!m->config_path)
                return -ENOMEM;
        m->config = *config;
        *config = (Config){};
        m->log_level_override = log_level_override;
        m->start_usec = now(CLOCK_MONOTONIC);
        manager_apply_log_level(m);

        r = sd_event_default(&m->event);
        if (r < 0)
                return r;

        /* Signals are delivered through signalfd, so they must be blocked first. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return -errno;
        r = sd_event_add_signal(m->event, &m->sigterm_source, SIGTERM, manager_on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, &m->sigint_source, SIGINT, manager_on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, &m->sighup_source, SIGHUP, manager_on_signal, m);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        metrics_server_free(m->metrics); /* first: its callbacks read everything below */
        free(m->metrics_listen);
        free(m->metrics_problem);
        control_server_free(m->control);
        cluster_free(m->cluster);
        stream_service_free(m->stream);
        free(m->stream_listen);
        free(m->stream_problem);
        sd_event_source_disable_unref(m->storage_timer);
        storage_free(m->storage);
        sd_event_source_disable_unref(m->stop_timer);
        sd_event_source_disable_unref(m->watchdog_source);
        sd_event_source_disable_unref(m->sigterm_source);
        sd_event_source_disable_unref(m->sigint_source);
        sd_event_source_disable_unref(m->sighup_source);
        sd_event_unref(m->event);
        config_done(&m->config);
        free(m->config_path);
        free(m->last_reload_error);
        free(m);
        return NULL;
}

int manager_start(Manager *m) {
        int r;

        log_struct(LOG_INFO, HWAMEID_MESSAGE_STARTED, "hwameid %s starting on node '%s'.", HWAMEID_VERSION,
                   m->config.node_name);

        r = manager_bind_control(m);
        if (r < 0)
                return r;

        r = manager_storage_start(m);
        if (r < 0)
                return r;

        r = manager_stream_start(m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the block stream: %m");

        r = manager_metrics_start(m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the metrics endpoint: %m");

        r = notify_watchdog_start(m->event, &m->watchdog_source);
        if (r < 0)
                return log_error_errno(r, "Failed to start watchdog pings: %m");

        r = manager_cluster_start(m);
        if (r < 0)
                return log_error_errno(r, "Failed to start the cluster connection: %m");
        return 0;
}

int manager_run(Manager *m) {
        int r;

        char status[512];

        manager_set_state(m, MANAGER_RUNNING);
        manager_format_status(m, status, sizeof(status));
        (void) notify_ready(status);

        r = sd_event_loop(m->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");

        log_struct(LOG_INFO, HWAMEID_MESSAGE_STOPPED, "hwameid stopped.");
        return r;
}

static int manager_storage_json(Manager *m, cJSON *parent) {
        const StorageSnapshot *snap = m->storage ? storage_snapshot(m->storage) : NULL;
        cJSON *st = cJSON_AddObjectToObject(parent, "storage"), *pools, *disks;

        if (!st || !cJSON_AddStringToObject(st, "backend", m->config.storage_backend))
                return -ENOMEM;
        usec_t busy = m->storage ? storage_busy_since(m->storage) : 0;
        if (!cJSON_AddNumberToObject(st, "busySeconds",
                                     busy ? (double) ((now(CLOCK_MONOTONIC) - busy) / USEC_PER_SEC) : 0))
                return -ENOMEM;
        pools = cJSON_AddArrayToObject(st, "pools");
        disks = cJSON_AddArrayToObject(st, "disks");
        if (!pools || !disks)
                return -ENOMEM;
        for (size_t i = 0; snap && i < snap->n_pools; i++) {
                const StoragePool *p = &snap->pools[i];
                cJSON *o = cJSON_CreateObject();

                if (!o)
                        return -ENOMEM;
                cJSON_AddItemToArray(pools, o);
                if (!cJSON_AddStringToObject(o, "name", p->name) ||
                    !cJSON_AddStringToObject(o, "class", disk_class_to_string(p->class)) ||
                    !cJSON_AddNumberToObject(o, "totalBytes", (double) p->total) ||
                    !cJSON_AddNumberToObject(o, "freeBytes", (double) p->free) ||
                    !cJSON_AddNumberToObject(o, "volumes", p->volume_count) ||
                    !cJSON_AddBoolToObject(o, "offline", p->offline))
                        return -ENOMEM;
        }
        for (size_t i = 0; snap && i < snap->n_disks; i++) {
                const StorageDisk *d = &snap->disks[i];
                cJSON *o = cJSON_CreateObject();

                if (!o)
                        return -ENOMEM;
                cJSON_AddItemToArray(disks, o);
                if (!cJSON_AddStringToObject(o, "devPath", d->dev_path) ||
                    !cJSON_AddStringToObject(o, "state", storage_disk_state_to_string(d->state)) ||
                    !cJSON_AddNumberToObject(o, "capacityBytes", (double) d->capacity) ||
                    !(d->pool ? cJSON_AddStringToObject(o, "pool", d->pool)
                              : cJSON_AddNullToObject(o, "pool")))
                        return -ENOMEM;
        }
        return 0;
}

static int manager_stream_json(Manager *m, cJSON *parent) {
        cJSON *st = cJSON_AddObjectToObject(parent, "stream");
        bool ok;

        if (!st)
                return -ENOMEM;
        ok = cJSON_AddStringToObject(st, "state", m->stream ? "listening" : "disabled") &&
             cJSON_AddStringToObject(st, "address", m->stream_listen ?: "") &&
             cJSON_AddNumberToObject(st, "port", m->stream ? stream_service_port(m->stream) : 0) &&
             cJSON_AddBoolToObject(st, "tls", !m->config.stream_insecure) &&
             cJSON_AddNumberToObject(st, "exposed", m->stream ? stream_service_n_exposed(m->stream) : 0) &&
             (m->stream_problem ? cJSON_AddStringToObject(st, "problem", m->stream_problem)
                                : cJSON_AddNullToObject(st, "problem"));
        return ok ? 0 : -ENOMEM;
}

int manager_status_json(Manager *m, cJSON **ret) {
        _cleanup_json_ cJSON *o = NULL, *cluster = NULL;
        bool ok = true;
        int r;

        o = cJSON_CreateObject();
        if (!o)
                return -ENOMEM;
        if (m->cluster) {
                r = cluster_status_json(m->cluster, &cluster);
                if (r < 0)
                        return r;
        } else {
                cluster = cJSON_CreateObject();
                if (!cluster || !cJSON_AddStringToObject(cluster, "kubeconfig", m->config.kubeconfig))
                        return -ENOMEM;
        }

        ok = ok && cJSON_AddStringToObject(o, "version", HWAMEID_VERSION);
        ok = ok && cJSON_AddNumberToObject(o, "pid", getpid());
        ok = ok && cJSON_AddStringToObject(o, "node", m->config.node_name);
        ok = ok && cJSON_AddStringToObject(o, "state", manager_state_to_string(m->state));
        ok = ok && cJSON_AddStringToObject(o, "status", notify_get_status());
        ok = ok && cJSON_AddNumberToObject(o, "uptimeSeconds",
                                           (double) ((now(CLOCK_MONOTONIC) - m->start_usec) / USEC_PER_SEC));
        ok = ok && cJSON_AddStringToObject(o, "configFile", m->config_path);
        ok = ok && cJSON_AddNumberToObject(o, "reloads", m->n_reloads);
        ok = ok &&
             (m->last_reload_error ? cJSON_AddStringToObject(o, "lastReloadError", m->last_reload_error)
                                   : cJSON_AddNullToObject(o, "lastReloadError"));
        ok = ok && cJSON_AddStringToObject(o, "logLevel", log_level_to_string(log_get_max_level()));
        ok = ok && cJSON_AddStringToObject(o, "controlSocket", control_server_path(m->control));
        ok = ok && manager_storage_json(m, o) >= 0;
        ok = ok && manager_stream_json(m, o) >= 0;
        ok = ok && manager_metrics_json(m, o) >= 0;
        if (!ok)
                return -ENOMEM;
        cJSON_AddItemToObject(o, "cluster", TAKE_PTR(cluster));

        *ret = TAKE_PTR(o);
        return 0;
}
