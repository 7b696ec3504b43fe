/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../basic/json-util.h"
#include "../basic/random-util.h"
#include "../basic/string-util.h"
#include "../controller/evictor.h"
#include "../controller/health.h"
#include "../controller/migrate.h"
#include "../controller/volume.h"
#include "../election/lease.h"
#include "../informer/informer.h"
#include "../kube/kube-client.h"
#include "../kube/kube-events.h"
#include "../kube/kubeconfig.h"
#include "../log/log.h"
#include "../net/netlink.h"
#include "../node/lsn.h"
#include "../node/replica.h"
#include "../node/sync.h"
#include "cluster.h"

#define CLUSTER_RETRY_MIN (1 * USEC_PER_SEC)
#define CLUSTER_RETRY_MAX (30 * USEC_PER_SEC)
/* Rotated client certificates and tokens are picked up this often (client-go: a minute). */
#define CLUSTER_REFRESH_INTERVAL (60 * USEC_PER_SEC)
#define CLUSTER_LEADER_LEASE     "hwameid-controller"

struct Cluster {
        sd_event *event;
        char *node_name, *kubeconfig, *namespace, *storage_ip, *storage_interface;
        ClusterConfig config; /* strings point at the copies above */
        ClusterCallbacks cb;
        void *userdata;

        ClusterState state;
        char message[512];
        sd_event_source *retry_timer, *refresh_timer;
        usec_t retry_usec;

        KubeCredentials *creds;
        KubeClient *client;
        EventRecorder *events;
        Informer *node_informer;
        LeaseHeartbeat *heartbeat;
        LeaderElector *elector;
        LsnWriter *lsn;
        ReplicaController *replicas;
        SyncAgent *sync;
        MigrateController *migrate; /* while leading */
        Evictor *evictor;           /* while leading */
        HealthController *health;   /* while leading */
        VolumeController *volumes;  /* while leading */
        char *identity, *stream_problem, *checkpoint_dir;
        bool node_registered, leading;
};

static const char *const cluster_state_table[_CLUSTER_STATE_MAX] = {
        [CLUSTER_WAITING] = "waiting",
        [CLUSTER_CONNECTING] = "connecting",
        [CLUSTER_CONNECTED] = "connected",
        [CLUSTER_DEGRADED] = "degraded",
};

DEFINE_STRING_TABLE_TO_STRING(cluster_state, ClusterState, cluster_state_table)

static void cluster_changed(Cluster *c) {
        if (c->cb.changed)
                c->cb.changed(c, c->userdata);
}

static void cluster_set(Cluster *c, ClusterState state, const char *format, ...) _printf_(3, 4);
static void cluster_set(Cluster *c, ClusterState state, const char *format, ...) {
        char buf[sizeof(c->message)];
        va_list ap;

        va_start(ap, format);
        (void) vsnprintf(buf, sizeof(buf), format, ap);
        va_end(ap);
        if (state == c->state && streq(buf, c->message))
                return;
        if (state != c->state)
                log_info("Cluster connection: %s → %s: %s", cluster_state_to_string(c->state),
                         cluster_state_to_string(state), buf);
        c->state = state;
        memcpy(c->message, buf, sizeof(buf));
        cluster_changed(c);
}

/* The Node watch tells whether we are connected: it is the one request every node always has. */
static void cluster_update_connected(Cluster *c) {
        const char *msg = NULL;
        int error;

        if (!c->node_informer)
                return;
        error = informer_last_error(c->node_informer, &msg);
        if (error < 0 && c->state != CLUSTER_WAITING)
                cluster_set(c, informer_has_synced(c->node_informer) ? CLUSTER_DEGRADED : CLUSTER_CONNECTING,
                            "Kubernetes API at %s: %s; retrying.", kube_client_server(c->client),
                            strna(msg));
        else if (informer_has_synced(c->node_informer))
                cluster_set(c, CLUSTER_CONNECTED, "Connected to %s; node '%s' %s.",
                            kube_client_server(c->client), c->node_name,
                            c->node_registered ? "is registered" : "is not registered (yet)");
}

/* StorageIP= wins (given to the writer at creation); then the interface's address; then the
 * address this node reaches the API server from. Looked at again on every storage refresh. */
static void cluster_update_storage_ip(Cluster *c) {
        _cleanup_free_ char *ip = NULL;
        int r;

        if (!c->lsn)
                return;
        if (c->storage_ip) {
                if (c->sync)
                        sync_agent_set_address(c->sync, c->storage_ip);
                return;
        }
        if (c->storage_interface) {
                r = net_interface_address(c->storage_interface, AF_UNSPEC, &ip);
                if (r < 0) {
                        log_ratelimit_errno(LOG_WARNING, r, 10 * USEC_PER_MINUTE, 1,
                                            "No address on storage interface %s: %m", c->storage_interface);
                        return;
                }
                lsn_writer_set_storage_ip(c->lsn, ip);
                if (c->sync)
                        sync_agent_set_address(c->sync, ip);
                return;
        }
        if (!isempty(kube_client_local_ip(c->client))) {
                lsn_writer_set_storage_ip(c->lsn, kube_client_local_ip(c->client));
                if (c->sync)
                        sync_agent_set_address(c->sync, kube_client_local_ip(c->client));
        }
}

static void cluster_on_node_added(Informer *inf, const cJSON *obj, void *userdata) {
        Cluster *c = userdata;

        (void) inf;
        c->node_registered = true;
        if (c->lsn)
                lsn_writer_set_node(c->lsn, obj);
        cluster_update_connected(c);
}

static void cluster_on_node_updated(Informer *inf, const cJSON *old, const cJSON *obj, void *userdata) {
        (void) old;
        cluster_on_node_added(inf, obj, userdata);
}

static void cluster_on_node_deleted(Informer *inf, const cJSON *obj, void *userdata) {
        Cluster *c = userdata;

        (void) inf, (void) obj;
        c->node_registered = false;
        cluster_update_connected(c);
}

static void cluster_on_node_synced(Informer *inf, void *userdata) {
        Cluster *c = userdata;

        (void) inf;
        cluster_update_storage_ip(c);
        cluster_update_connected(c);
}

static void cluster_refresh_credentials(Cluster *c);

static void cluster_on_node_health(Informer *inf, int error, void *userdata) {
        Cluster *c = userdata;

        (void) inf;
        /* Rejected credentials: maybe they were rotated; look now rather than in a minute. */
        if (error == -EACCES)
                cluster_refresh_credentials(c);
        cluster_update_connected(c);
}

static void cluster_on_started_leading(LeaderElector *le, void *userdata) {
        Cluster *c = userdata;
        int r;

        c->leading = true;
        r = migrate_controller_new(
                c->client, c->events,
                &(MigrateOptions){ .max_running = c->config.migrate_max_running,
                                   .max_running_per_node = c->config.migrate_max_running_per_node },
                &c->migrate);
        if (r >= 0)
                r = migrate_controller_start(c->migrate);
        if (r < 0) {
                log_error_errno(r, "Failed to start the migrate controller: %m");
                c->migrate = migrate_controller_free(c->migrate);
        }
        r = evictor_new(c->client, c->events, &c->evictor);
        if (r >= 0)
                r = evictor_start(c->evictor);
        if (r < 0) {
                log_error_errno(r, "Failed to start the evictor: %m");
                c->evictor = evictor_free(c->evictor);
        }
        r = volume_controller_new(c->client, c->events, &c->volumes);
        if (r >= 0)
                r = volume_controller_start(c->volumes);
        if (r < 0) {
                log_error_errno(r, "Failed to start the volume controller: %m");
                c->volumes = volume_controller_free(c->volumes);
        }
        r = health_controller_new(c->client, c->events, c->namespace, &c->health);
        if (r >= 0)
                r = health_controller_start(c->health);
        if (r < 0) {
                log_error_errno(r, "Failed to start the node health controller: %m");
                c->health = health_controller_free(c->health);
        }
        /* As client-go does, on the Lease: `kubectl get events -n <namespace>` shows who leads. */
        event_recorder_emit(c->events, "coordination.k8s.io/v1", "Lease", leader_elector_lease(le),
                            EVENT_NORMAL, "LeaderElection", "%s became leader", c->identity);
        if (c->cb.leading)
                c->cb.leading(c, true, c->userdata);
        cluster_changed(c);
}

static void cluster_on_stopped_leading(LeaderElector *le, void *userdata) {
        Cluster *c = userdata;

        (void) le;
        c->leading = false;
        c->volumes = volume_controller_free(c->volumes);
        c->health = health_controller_free(c->health);
        c->evictor = evictor_free(c->evictor);
        c->migrate = migrate_controller_free(c->migrate);
        if (c->cb.leading)
                c->cb.leading(c, false, c->userdata);
        cluster_changed(c);
}

static void cluster_on_new_leader(LeaderElector *le, const char *identity, void *userdata) {
        (void) le, (void) identity;
        cluster_changed(userdata);
}

static bool blob_equal(const void *a, size_t an, const void *b, size_t bn) {
        return an == bn && (an == 0 || (a && b && memcmp(a, b, an) == 0));
}

static bool credentials_equal(const KubeCredentials *a, const KubeCredentials *b) {
        return streq_ptr(a->server, b->server) && streq_ptr(a->tls_server_name, b->tls_server_name) &&
               streq_ptr(a->proxy_url, b->proxy_url) &&
               a->insecure_skip_tls_verify == b->insecure_skip_tls_verify && streq_ptr(a->token, b->token) &&
               blob_equal(a->ca, a->ca_size, b->ca, b->ca_size) &&
               blob_equal(a->client_cert, a->client_cert_size, b->client_cert, b->client_cert_size) &&
               blob_equal(a->client_key, a->client_key_size, b->client_key, b->client_key_size);
}

/* Re-reads the kubeconfig and everything it names; new material is used from the next request. */
static void cluster_refresh_credentials(Cluster *c) {
        _cleanup_(kube_credentials_freep) KubeCredentials *fresh = NULL;
        _cleanup_free_ char *error = NULL;
        int r;

        if (!c->client)
                return;
        r = kubeconfig_load(c->kubeconfig, NULL, &fresh, &error);
        if (r < 0) {
                log_ratelimit_errno(LOG_WARNING, r, 10 * USEC_PER_MINUTE, 1,
                                    "Failed to re-read the kubeconfig, keeping the credentials in use: %s",
                                    strna(error));
                return;
        }
        if (credentials_equal(fresh, c->creds))
                return;
        r = kube_client_set_credentials(c->client, fresh);
        if (r < 0) {
                log_warning_errno(r, "Failed to use the new credentials from '%s', keeping the old ones: %m",
                                  c->kubeconfig);
                return;
        }
        log_info("Credentials in '%s' changed; new requests use them.", c->kubeconfig);
        kube_credentials_free(c->creds);
        c->creds = TAKE_PTR(fresh);
}

static int cluster_on_refresh(sd_event_source *s, uint64_t usec, void *userdata) {
        cluster_refresh_credentials(userdata);
        return sd_event_source_set_time(s, usec + CLUSTER_REFRESH_INTERVAL);
}

static int cluster_connect(Cluster *c) {
        static const InformerHandlers node_handlers = {
                .added = cluster_on_node_added,
                .updated = cluster_on_node_updated,
                .deleted = cluster_on_node_deleted,
                .synced = cluster_on_node_synced,
                .health = cluster_on_node_health,
        };
        static const LeaderElectorCallbacks elector_callbacks = {
                .started_leading = cluster_on_started_leading,
                .stopped_leading = cluster_on_stopped_leading,
                .new_leader = cluster_on_new_leader,
        };
        KubeClientOptions options = KUBE_CLIENT_OPTIONS_DEFAULT;
        _cleanup_free_ char *selector = NULL, *heartbeat = NULL;
        int r;

        if (startswith(c->creds->server, "http://"))
                log_warning("The kubeconfig '%s' reaches the API server over plain HTTP (%s).",
                            c->kubeconfig, c->creds->server);
        if (c->creds->insecure_skip_tls_verify)
                log_warning("The kubeconfig '%s' sets insecure-skip-tls-verify: the API server's identity "
                            "is not checked.",
                            c->kubeconfig);

        options.qps = c->config.qps;
        options.burst = c->config.burst;
        r = kube_client_new(c->event, c->creds, &options, &c->client);
        if (r < 0)
                return r;
        r = event_recorder_new(c->client, "hwameid", c->node_name, &c->events);
        if (r < 0)
                return r;

        if (asprintf(&selector, "metadata.name=%s", c->node_name) < 0 ||
            asprintf(&heartbeat, "hwameid-node-%s", c->node_name) < 0 ||
            asprintf(&c->identity, "%s_%08llx", c->node_name,
                     (unsigned long long) (random_u64() & 0xffffffffULL)) < 0)
                return -ENOMEM;

        r = informer_new(
                c->client,
                &(InformerConfig){ .name = "node", .path = "/api/v1/nodes", .field_selector = selector },
                &node_handlers, c, &c->node_informer);
        if (r < 0)
                return r;
        r = lease_heartbeat_new(c->client, c->namespace, heartbeat, c->node_name,
                                c->config.heartbeat_interval, 3 * c->config.heartbeat_interval,
                                &c->heartbeat);
        if (r < 0)
                return r;
        r = leader_elector_new(c->client,
                               &(LeaderElectorConfig){ .namespace = c->namespace,
                                                       .name = CLUSTER_LEADER_LEASE,
                                                       .identity = c->identity,
                                                       .lease_duration = c->config.lease_duration,
                                                       .renew_deadline = c->config.renew_deadline,
                                                       .retry_period = c->config.retry_period },
                               &elector_callbacks, c, &c->elector);
        if (r < 0)
                return r;

        if (c->config.storage) {
                r = lsn_writer_new(c->client, c->config.storage,
                                   &(LsnConfig){ .node_name = c->node_name, .storage_ip = c->storage_ip },
                                   &c->lsn);
                if (r < 0)
                        return r;
                r = replica_controller_new(c->client, c->config.storage, c->events, c->node_name,
                                           &c->replicas);
                if (r < 0)
                        return r;
                r = sync_agent_new(c->client, c->config.storage, c->events,
                                   &(SyncAgentConfig){ .node_name = c->node_name,
                                                       .checkpoint_dir = c->checkpoint_dir,
                                                       .stream = c->config.stream,
                                                       .stream_problem = c->stream_problem,
                                                       .bandwidth = c->config.bandwidth },
                                   &c->sync);
                if (r < 0)
                        return r;
        }

        r = informer_start(c->node_informer);
        if (r >= 0 && c->lsn)
                r = lsn_writer_start(c->lsn);
        if (r >= 0 && c->replicas)
                r = replica_controller_start(c->replicas);
        if (r >= 0 && c->sync)
                r = sync_agent_start(c->sync);
        if (r >= 0)
                r = lease_heartbeat_start(c->heartbeat);
        if (r >= 0)
                r = leader_elector_start(c->elector);
        if (r < 0)
                return r;

        r = sd_event_add_time_relative(c->event, &c->refresh_timer, CLOCK_MONOTONIC,
                                       CLUSTER_REFRESH_INTERVAL, 0, cluster_on_refresh, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(c->refresh_timer, SD_EVENT_ON);
        (void) sd_event_source_set_description(c->refresh_timer, "credentials-refresh");

        cluster_set(c, CLUSTER_CONNECTING, "Connecting to the Kubernetes API at %s.",
                    kube_client_server(c->client));
        return 0;
}

static void cluster_disconnect(Cluster *c) {
        c->refresh_timer = sd_event_source_disable_unref(c->refresh_timer);
        c->volumes = volume_controller_free(c->volumes);
        c->health = health_controller_free(c->health);
        c->evictor = evictor_free(c->evictor);
        c->migrate = migrate_controller_free(c->migrate);
        c->sync = sync_agent_free(c->sync);
        c->replicas = replica_controller_free(c->replicas);
        c->lsn = lsn_writer_free(c->lsn);
        c->elector = leader_elector_free(c->elector);
        c->heartbeat = lease_heartbeat_free(c->heartbeat);
        c->node_informer = informer_free(c->node_informer);
        c->events = event_recorder_free(c->events); /* before the client: it cancels its writes */
        c->client = kube_client_free(c->client);
        c->creds = kube_credentials_free(c->creds);
        c->identity = mfree(c->identity);
}

static int cluster_on_retry(sd_event_source *s, uint64_t usec, void *userdata);

/* One attempt to read the kubeconfig and connect; on failure the retry timer is armed. */
static void cluster_attempt(Cluster *c) {
        _cleanup_free_ char *error = NULL;
        char delay[FORMAT_TIMESPAN_MAX];
        int r;

        r = kubeconfig_load(c->kubeconfig, NULL, &c->creds, &error);
        if (r >= 0) {
                r = cluster_connect(c);
                if (r >= 0)
                        return;
                free(error);
                if (asprintf(&error, "failed to set up the client: %s", strerror(-r)) < 0)
                        error = NULL;
                cluster_disconnect(c);
        }

        format_timespan(delay, sizeof(delay), c->retry_usec);
        log_ratelimit_errno(LOG_WARNING, r, 5 * USEC_PER_MINUTE, 1,
                            "Kubernetes API not usable yet, will retry: %s", strna(error));
        cluster_set(c, CLUSTER_WAITING, "Waiting for the Kubernetes API: %s; retrying in %s.", strna(error),
                    delay);
        (void) sd_event_source_set_time_relative(c->retry_timer, c->retry_usec);
        (void) sd_event_source_set_enabled(c->retry_timer, SD_EVENT_ONESHOT);
        c->retry_usec = MIN(c->retry_usec * 2, CLUSTER_RETRY_MAX);
}

static int cluster_on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s, (void) usec;
        cluster_attempt(userdata);
        return 0;
}

int cluster_new(sd_event *e, const ClusterConfig *config, const ClusterCallbacks *cb, void *userdata,
                Cluster **ret) {
        _cleanup_(cluster_freep) Cluster *c = NULL;
        int r;

        assert(e && config && ret);

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(e);
        c->config = *config;
        c->node_name = strdup(config->node_name);
        c->kubeconfig = strdup(config->kubeconfig);
        c->namespace = strdup(config->namespace);
        c->storage_ip = isempty(config->storage_ip) ? NULL : strdup(config->storage_ip);
        c->storage_interface = isempty(config->storage_interface) ? NULL : strdup(config->storage_interface);
        c->checkpoint_dir = strdup(config->checkpoint_dir ?: "/var/lib/hwameid/copies");
        if (!c->node_name || !c->kubeconfig || !c->namespace || !c->checkpoint_dir ||
            (!isempty(config->storage_ip) && !c->storage_ip) ||
            (!isempty(config->storage_interface) && !c->storage_interface) ||
            (config->stream_problem && !(c->stream_problem = strdup(config->stream_problem))))
                return -ENOMEM;
        c->config.node_name = c->node_name;
        c->config.kubeconfig = c->kubeconfig;
        c->config.namespace = c->namespace;
        if (cb)
                c->cb = *cb;
        c->userdata = userdata;
        c->retry_usec = CLUSTER_RETRY_MIN;
        snprintf(c->message, sizeof(c->message), "Connecting to the Kubernetes API.");

        r = sd_event_add_time(e, &c->retry_timer, CLOCK_MONOTONIC, USEC_INFINITY, 0, cluster_on_retry, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(c->retry_timer, "cluster-retry");

        *ret = TAKE_PTR(c);
        return 0;
}

Cluster *cluster_free(Cluster *c) {
        if (!c)
                return NULL;
        cluster_disconnect(c);
        sd_event_source_disable_unref(c->retry_timer);
        sd_event_unref(c->event);
        free(c->node_name);
        free(c->kubeconfig);
        free(c->namespace);
        free(c->storage_ip);
        free(c->storage_interface);
        free(c->stream_problem);
        free(c->checkpoint_dir);
        free(c);
        return NULL;
}

int cluster_start(Cluster *c) {
        cluster_attempt(c);
        return 0;
}

void cluster_shutdown(Cluster *c, void (*done)(void *userdata), void *userdata) {
        (void) sd_event_source_set_enabled(c->retry_timer, SD_EVENT_OFF);
        if (c->elector) {
                int r = leader_elector_release(c->elector, done, userdata);
                if (r >= 0)
                        return;
                log_warning_errno(r, "Failed to release the leader lease: %m");
        }
        if (done)
                done(userdata);
}

void cluster_storage_changed(Cluster *c) {
        cluster_update_storage_ip(c);
        if (c->lsn)
                lsn_writer_sync(c->lsn);
        if (c->replicas)
                replica_controller_storage_changed(c->replicas);
        if (c->sync)
                sync_agent_storage_changed(c->sync);
}

ClusterState cluster_state(const Cluster *c) {
        return c->state;
}

const char *cluster_message(const Cluster *c) {
        return c->message;
}

bool cluster_is_leader(const Cluster *c) {
        return c->elector && leader_elector_is_leader(c->elector);
}

int cluster_status_json(const Cluster *c, cJSON **ret) {
        _cleanup_json_ cJSON *o = cJSON_CreateObject();
        cJSON *node, *leader, *hb;
        bool ok;

        if (!o)
                return -ENOMEM;
        ok = cJSON_AddStringToObject(o, "state", cluster_state_to_string(c->state)) &&
             cJSON_AddStringToObject(o, "message", c->message) &&
             cJSON_AddStringToObject(o, "kubeconfig", c->kubeconfig) &&
             (c->client ? cJSON_AddStringToObject(o, "server", kube_client_server(c->client))
                        : cJSON_AddNullToObject(o, "server")) &&
             cJSON_AddNumberToObject(o, "requestsSent",
                                     c->client ? (double) kube_client_requests_sent(c->client) : 0);
        node = cJSON_AddObjectToObject(o, "node");
        ok = ok && node && cJSON_AddStringToObject(node, "name", c->node_name) &&
             cJSON_AddBoolToObject(node, "registered", c->node_registered);
        leader = cJSON_AddObjectToObject(o, "leader");
        ok = ok && leader && cJSON_AddBoolToObject(leader, "leading", cluster_is_leader(c)) &&
             cJSON_AddStringToObject(leader, "lease", CLUSTER_LEADER_LEASE) &&
             cJSON_AddStringToObject(leader, "namespace", c->namespace) &&
             cJSON_AddStringToObject(leader, "identity", strempty(c->identity)) &&
             cJSON_AddStringToObject(leader, "holder", c->elector ? leader_elector_holder(c->elector) : "");
        hb = cJSON_AddObjectToObject(o, "heartbeat");
        if (ok && hb && c->heartbeat && lease_heartbeat_last_renew(c->heartbeat) > 0)
                ok = cJSON_AddNumberToObject(
                             hb, "secondsAgo",
                             (double) ((now(CLOCK_MONOTONIC) - lease_heartbeat_last_renew(c->heartbeat)) /
                                       USEC_PER_SEC)) != NULL;
        if (!ok || !hb)
                return -ENOMEM;
        if (c->sync) {
                cJSON *sync = NULL;
                int r = sync_agent_status_json(c->sync, &sync);
                if (r < 0)
                        return r;
                cJSON_AddItemToObject(o, "sync", sync);
        }
        *ret = TAKE_PTR(o);
        return 0;
}

int cluster_count_replicas(Cluster *c, const char *const *states, size_t n, unsigned *counts) {
        if (!c->replicas)
                return -ENODEV;
        return replica_controller_count_states(c->replicas, states, n, counts);
}

int cluster_count_migrations(Cluster *c, const char *const *states, size_t n, unsigned *counts) {
        if (!c->migrate || !cluster_is_leader(c))
                return -ENODEV;
        return migrate_controller_count_states(c->migrate, states, n, counts);
}

void cluster_push_stats(Cluster *c, SyncAgentStats *ret) {
        if (c->sync)
                sync_agent_stats(c->sync, ret);
        else
                *ret = (SyncAgentStats){};
}
