/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../basic/json-util.h"
#include "../basic/random-util.h"
#include "../basic/string-util.h"
#include "../informer/informer.h"
#include "../log/log.h"
#include "lease.h"

#define LEASE_API "/apis/coordination.k8s.io/v1/namespaces/"

char *format_microtime(char *buf, size_t len, usec_t realtime) {
        time_t sec = (time_t) (realtime / USEC_PER_SEC);
        struct tm tm;

        if (!gmtime_r(&sec, &tm))
                return NULL;
        snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%06lluZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (unsigned long long) (realtime % USEC_PER_SEC));
        return buf;
}

/* A Lease object for path name in namespace ns, based on base (which carries the resourceVersion
 * to write against) or new when base is NULL. */
static cJSON *lease_build(const cJSON *base, const char *ns, const char *name, const char *holder,
                          usec_t duration, bool new_acquire, bool keep_transitions) {
        _cleanup_json_ cJSON *o = NULL;
        cJSON *meta, *spec;
        char now_str[MICROTIME_MAX];
        uint64_t transitions = 0;
        const char *acquire = NULL;
        const cJSON *old_spec = cJSON_GetObjectItemCaseSensitive(base, "spec");

        if (base) {
                o = cJSON_Duplicate(base, true);
                if (!o)
                        return NULL;
                cJSON_DeleteItemFromObjectCaseSensitive(o, "spec");
                (void) json_get_u64(old_spec, "leaseTransitions", &transitions);
                acquire = json_get_string(old_spec, "acquireTime");
        } else {
                o = cJSON_CreateObject();
                if (!o || !cJSON_AddStringToObject(o, "apiVersion", "coordination.k8s.io/v1") ||
                    !cJSON_AddStringToObject(o, "kind", "Lease"))
                        return NULL;
                meta = cJSON_AddObjectToObject(o, "metadata");
                if (!meta || !cJSON_AddStringToObject(meta, "name", name) ||
                    !cJSON_AddStringToObject(meta, "namespace", ns))
                        return NULL;
        }

        format_microtime(now_str, sizeof(now_str), now(CLOCK_REALTIME));
        spec = cJSON_AddObjectToObject(o, "spec");
        if (!spec || !cJSON_AddStringToObject(spec, "holderIdentity", holder) ||
            !cJSON_AddNumberToObject(spec, "leaseDurationSeconds",
                                     (double) MAX(duration / USEC_PER_SEC, 1)) ||
            !cJSON_AddStringToObject(spec, "acquireTime", new_acquire || !acquire ? now_str : acquire) ||
            !cJSON_AddStringToObject(spec, "renewTime", now_str) ||
            !cJSON_AddNumberToObject(spec, "leaseTransitions",
                                     (double) (base && !keep_transitions ? transitions + 1 : transitions)))
                return NULL;
        return TAKE_PTR(o);
}

/* ---- the elector ------------------------------------------------------------------------------ */

struct LeaderElector {
        KubeClient *client;
        char *ns, *name, *identity, *lease_path, *collection_path, *field_selector;
        usec_t lease_duration, renew_deadline, retry_period;
        LeaderElectorCallbacks cb;
        void *userdata;

        LeaderState state;
        Informer *informer;
        sd_event_source *timer;
        KubeRequest *request;

        cJSON *lease;       /* the object our next write is based on */
        char *observed_key; /* the record as last seen changing */
        char *holder;
        usec_t observed_time, observed_duration;

        usec_t pending_sent;    /* when the write in flight was sent */
        usec_t last_renew_sent; /* when the last successful write as leader was sent */

        void (*release_done)(void *userdata);
        void *release_userdata;
};

static const char *const leader_state_table[_LEADER_STATE_MAX] = {
        [LEADER_STOPPED] = "stopped", [LEADER_FOLLOWING] = "following", [LEADER_ACQUIRING] = "acquiring",
        [LEADER_LEADING] = "leading", [LEADER_RELEASING] = "releasing",
};

DEFINE_STRING_TABLE_TO_STRING(leader_state, LeaderState, leader_state_table)

int leader_elector_config_validate(const LeaderElectorConfig *c) {
        if (isempty(c->namespace) || isempty(c->name) || isempty(c->identity))
                return -EINVAL;
        if (c->retry_period == 0 || c->renew_deadline <= (usec_t) ((double) c->retry_period * 1.2) ||
            c->lease_duration <= c->renew_deadline)
                return -EINVAL;
        return 0;
}

static void leader_set_state(LeaderElector *le, LeaderState state) {
        if (le->state == state)
                return;
        log_debug("Lease %s/%s: %s → %s.", le->ns, le->name, leader_state_to_string(le->state),
                  leader_state_to_string(state));
        le->state = state;
}

bool leader_elector_is_leader(const LeaderElector *le) {
        return le->state == LEADER_LEADING &&
               now(CLOCK_MONOTONIC) < le->last_renew_sent + le->renew_deadline;
}

LeaderState leader_elector_state(const LeaderElector *le) {
        return le->state;
}

const char *leader_elector_holder(const LeaderElector *le) {
        return strempty(le->holder);
}

const char *leader_elector_identity(const LeaderElector *le) {
        return le->identity;
}

const cJSON *leader_elector_lease(const LeaderElector *le) {
        return le->lease;
}

static void leader_arm(LeaderElector *le, usec_t when) {
        (void) sd_event_source_set_time(le->timer, when);
        (void) sd_event_source_set_enabled(le->timer, SD_EVENT_ONESHOT);
}

/* Notes a record seen from the server; expiry runs from the moment it last changed. */
static void leader_observe(LeaderElector *le, const cJSON *lease) {
        const cJSON *spec = cJSON_GetObjectItemCaseSensitive(lease, "spec");
        const char *holder = strempty(json_get_string(spec, "holderIdentity"));
        uint64_t duration = 0, transitions = 0;
        _cleanup_free_ char *key = NULL;

        (void) json_get_u64(spec, "leaseDurationSeconds", &duration);
        (void) json_get_u64(spec, "leaseTransitions", &transitions);
        if (asprintf(&key, "%s|%llu|%s|%s|%llu", holder, (unsigned long long) duration,
                     strempty(json_get_string(spec, "acquireTime")),
                     strempty(json_get_string(spec, "renewTime")), (unsigned long long) transitions) < 0)
                return;
        if (streq_ptr(key, le->observed_key))
                return;

        free(le->observed_key);
        le->observed_key = TAKE_PTR(key);
        le->observed_time = now(CLOCK_MONOTONIC);
        le->observed_duration = duration > 0 ? duration * USEC_PER_SEC : le->lease_duration;
        if (!streq_ptr(holder, le->holder)) {
                (void) free_and_strdup(&le->holder, holder);
                if (!isempty(holder))
                        log_info("Lease %s/%s is now held by '%s'.", le->ns, le->name, holder);
                if (le->cb.new_leader)
                        le->cb.new_leader(le, holder, le->userdata);
        }
}

static void leader_keep(LeaderElector *le, cJSON **lease) {
        cJSON_Delete(le->lease);
        le->lease = TAKE_PTR(*lease);
}

/* When a follower should next try: now if free, else when the record will have been unchanged
 * for its lease duration; jittered so that candidates do not collide. */
static void follower_schedule(LeaderElector *le) {
        usec_t n = now(CLOCK_MONOTONIC), at;

        if (le->state != LEADER_FOLLOWING || !informer_has_synced(le->informer))
                return;
        if (!le->lease || isempty(le->holder) || streq(le->holder, le->identity))
                at = n;
        else
                at = le->observed_time + le->observed_duration;
        at += (usec_t) (random_unit() * (double) le->retry_period / 2);
        leader_arm(le, MAX(at, n));
}

static void leader_step_down(LeaderElector *le, const char *why) {
        bool was = le->state == LEADER_LEADING;

        le->request = kube_request_cancel(le->request);
        leader_set_state(le, LEADER_FOLLOWING);
        if (was) {
                log_warning("Lost leadership of lease %s/%s: %s.", le->ns, le->name, why);
                if (le->cb.stopped_leading)
                        le->cb.stopped_leading(le, le->userdata);
        }
        follower_schedule(le);
}

static int leader_write(LeaderElector *le, bool create, cJSON *body, KubeResponseHandler done);

static void leader_on_acquire(KubeRequest *req, KubeResponse *resp, void *userdata) {
        LeaderElector *le = userdata;

        (void) req;
        le->request = NULL;
        if (resp->error == -ENOENT) {
                /* The Lease was deleted: the next try creates it. */
                cJSON_Delete(le->lease);
                le->lease = NULL;
        }
        if (resp->error < 0) {
                _cleanup_json_ cJSON *current = NULL;

                log_debug("Lease %s/%s: acquire failed: %s", le->ns, le->name, resp->message);
                leader_set_state(le, LEADER_FOLLOWING);
                /* Someone else wrote it. The watch events that came while our write was in flight
                 * were not taken (our write was the reference then): catch up from the informer's
                 * cache, which has them, and decide again from there. */
                if (kube_cache_get(informer_cache(le->informer), le->ns, le->name, &current) > 0) {
                        leader_observe(le, current);
                        leader_keep(le, &current);
                        follower_schedule(le);
                } else
                        leader_arm(le, now(CLOCK_MONOTONIC) + le->retry_period);
                return;
        }
        leader_observe(le, resp->body);
        leader_keep(le, &resp->body);
        le->last_renew_sent = le->pending_sent;
        leader_set_state(le, LEADER_LEADING);
        log_info("Acquired leadership of lease %s/%s as '%s'.", le->ns, le->name, le->identity);
        leader_arm(le, now(CLOCK_MONOTONIC) + le->retry_period);
        if (le->cb.started_leading)
                le->cb.started_leading(le, le->userdata);
}

static void leader_renew_now(LeaderElector *le);

static void leader_on_refetch(KubeRequest *req, KubeResponse *resp, void *userdata) {
        LeaderElector *le = userdata;
        const char *holder;

        (void) req;
        le->request = NULL;
        if (resp->error < 0) {
                leader_arm(le, MIN(now(CLOCK_MONOTONIC) + le->retry_period,
                                   le->last_renew_sent + le->renew_deadline));
                return;
        }
        holder = json_get_string(cJSON_GetObjectItemCaseSensitive(resp->body, "spec"), "holderIdentity");
        leader_observe(le, resp->body);
        leader_keep(le, &resp->body);
        if (!streq_ptr(holder, le->identity)) {
                leader_step_down(le, "another candidate holds the lease");
                return;
        }
        leader_renew_now(le);
}

static void leader_on_renew(KubeRequest *req, KubeResponse *resp, void *userdata) {
        LeaderElector *le = userdata;

        (void) req;
        le->request = NULL;
        if (resp->error == -ESTALE || resp->error == -ENOENT) {
                /* Our copy is stale (or the lease was deleted): look again before deciding. */
                if (kube_request(le->client, KUBE_GET, le->lease_path, NULL, leader_on_refetch, le,
                                 &le->request) < 0)
                        leader_arm(le, MIN(now(CLOCK_MONOTONIC) + le->retry_period,
                                           le->last_renew_sent + le->renew_deadline));
                return;
        }
        if (resp->error < 0) {
                log_ratelimit(LOG_NOTICE, 30 * USEC_PER_SEC, 2, "Lease %s/%s: renewal failed, retrying: %s",
                              le->ns, le->name, resp->message);
                leader_arm(le, MIN(now(CLOCK_MONOTONIC) + le->retry_period,
                                   le->last_renew_sent + le->renew_deadline));
                return;
        }
        leader_observe(le, resp->body);
        leader_keep(le, &resp->body);
        le->last_renew_sent = le->pending_sent;
        leader_arm(le, now(CLOCK_MONOTONIC) + le->retry_period);
}

static void leader_renew_now(LeaderElector *le) {
        _cleanup_json_ cJSON *body = NULL;
        int r;

        body = lease_build(le->lease, le->ns, le->name, le->identity, le->lease_duration, false, true);
        r = body ? leader_write(le, false, body, leader_on_renew) : -ENOMEM;
        if (r < 0)
                leader_arm(le, MIN(now(CLOCK_MONOTONIC) + le->retry_period,
                                   le->last_renew_sent + le->renew_deadline));
}

static void leader_try_acquire(LeaderElector *le) {
        _cleanup_json_ cJSON *body = NULL;
        usec_t n = now(CLOCK_MONOTONIC);
        bool mine;
        int r;

        if (le->lease && !isempty(le->holder) && !streq(le->holder, le->identity) &&
            n < le->observed_time + le->observed_duration) {
                follower_schedule(le); /* renewed meanwhile */
                return;
        }
        mine = streq_ptr(le->holder, le->identity);
        body = lease_build(le->lease, le->ns, le->name, le->identity, le->lease_duration, !mine, mine);
        r = body ? leader_write(le, !le->lease, body, leader_on_acquire) : -ENOMEM;
        if (r < 0) {
                leader_arm(le, n + le->retry_period);
                return;
        }
        leader_set_state(le, LEADER_ACQUIRING);
}

static int leader_write(LeaderElector *le, bool create, cJSON *body, KubeResponseHandler done) {
        int r;

        le->pending_sent = now(CLOCK_MONOTONIC);
        if (create)
                r = kube_request(le->client, KUBE_POST, le->collection_path, body, done, le, &le->request);
        else
                r = kube_request(le->client, KUBE_PUT, le->lease_path, body, done, le, &le->request);
        /* Renewals must not wait behind other requests or retry on their own: the elector's timing
         * (renew deadline < lease duration) is what keeps leadership safe. */
        if (r >= 0)
                kube_request_set_flags(le->request, KUBE_REQUEST_URGENT | KUBE_REQUEST_NO_RETRY);
        return r;
}

static int leader_on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        LeaderElector *le = userdata;
        usec_t n = now(CLOCK_MONOTONIC);

        (void) s, (void) usec;
        switch (le->state) {
        case LEADER_FOLLOWING:
                if (!le->request)
                        leader_try_acquire(le);
                break;
        case LEADER_LEADING:
                if (n >= le->last_renew_sent + le->renew_deadline) {
                        leader_step_down(le, "not renewed within the renew deadline");
                        break;
                }
                if (le->request) {
                        /* A renewal is still in flight; look again at the deadline. */
                        leader_arm(le, le->last_renew_sent + le->renew_deadline);
                        break;
                }
                leader_renew_now(le);
                break;
        case LEADER_RELEASING:
                /* The release did not finish in time: give up on it. */
                le->request = kube_request_cancel(le->request);
                leader_set_state(le, LEADER_STOPPED);
                if (le->release_done)
                        le->release_done(le->release_userdata);
                break;
        default:
                break;
        }
        return 0;
}

/* The informer on our Lease. */
static void leader_on_lease(Informer *inf, const cJSON *old, const cJSON *obj, void *userdata) {
        LeaderElector *le = userdata;

        (void) inf, (void) old;
        /* While we write (acquiring, leading, releasing) our own writes are the reference: the
         * watch may still be delivering older records. */
        if (le->state != LEADER_FOLLOWING)
                return;
        leader_observe(le, obj);
        cJSON *copy = cJSON_Duplicate(obj, true);
        if (copy)
                leader_keep(le, &copy);
        follower_schedule(le);
}

static void leader_on_lease_added(Informer *inf, const cJSON *obj, void *userdata) {
        leader_on_lease(inf, NULL, obj, userdata);
}

static void leader_on_lease_deleted(Informer *inf, const cJSON *obj, void *userdata) {
        LeaderElector *le = userdata;

        (void) inf, (void) obj;
        if (le->state == LEADER_FOLLOWING) {
                cJSON_Delete(le->lease);
                le->lease = NULL;
                follower_schedule(le);
        }
}

static void leader_on_synced(Informer *inf, void *userdata) {
        (void) inf;
        follower_schedule(userdata);
}

int leader_elector_new(KubeClient *client, const LeaderElectorConfig *config,
                       const LeaderElectorCallbacks *callbacks, void *userdata, LeaderElector **ret) {
        _cleanup_(leader_elector_freep) LeaderElector *le = NULL;
        static const InformerHandlers handlers = {
                .added = leader_on_lease_added,
                .updated = leader_on_lease,
                .deleted = leader_on_lease_deleted,
                .synced = leader_on_synced,
        };
        int r;

        assert(client && config && ret);
        r = leader_elector_config_validate(config);
        if (r < 0)
                return r;

        le = calloc(1, sizeof(*le));
        if (!le)
                return -ENOMEM;
        le->client = client;
        le->lease_duration = config->lease_duration;
        le->renew_deadline = config->renew_deadline;
        le->retry_period = config->retry_period;
        if (callbacks)
                le->cb = *callbacks;
        le->userdata = userdata;
        le->ns = strdup(config->namespace);
        le->name = strdup(config->name);
        le->identity = strdup(config->identity);
        if (!le->ns || !le->name || !le->identity ||
            asprintf(&le->collection_path, LEASE_API "%s/leases", config->namespace) < 0 ||
            asprintf(&le->lease_path, LEASE_API "%s/leases/%s", config->namespace, config->name) < 0 ||
            asprintf(&le->field_selector, "metadata.name=%s", config->name) < 0)
                return -ENOMEM;

        r = informer_new(client,
                         &(InformerConfig){ .name = "leader-lease",
                                            .path = le->collection_path,
                                            .field_selector = le->field_selector },
                         &handlers, le, &le->informer);
        if (r < 0)
                return r;
        /* Renewals keep the configured period: sd-event's default accuracy (250 ms) would not. */
        r = sd_event_add_time(kube_client_event(client), &le->timer, CLOCK_MONOTONIC, USEC_INFINITY,
                              USEC_PER_MSEC, leader_on_timer, le);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(le->timer, "leader-election");

        *ret = TAKE_PTR(le);
        return 0;
}

LeaderElector *leader_elector_free(LeaderElector *le) {
        if (!le)
                return NULL;
        /* Whatever was guarded by the lease stops with the elector, even without a release. */
        if ((le->state == LEADER_LEADING || le->state == LEADER_RELEASING) && le->cb.stopped_leading) {
                le->state = LEADER_STOPPED;
                le->cb.stopped_leading(le, le->userdata);
        }
        kube_request_cancel(le->request);
        informer_free(le->informer);
        sd_event_source_disable_unref(le->timer);
        cJSON_Delete(le->lease);
        free(le->observed_key);
        free(le->holder);
        free(le->ns);
        free(le->name);
        free(le->identity);
        free(le->lease_path);
        free(le->collection_path);
        free(le->field_selector);
        free(le);
        return NULL;
}

int leader_elector_start(LeaderElector *le) {
        leader_set_state(le, LEADER_FOLLOWING);
        return informer_start(le->informer);
}

static void leader_on_release(KubeRequest *req, KubeResponse *resp, void *userdata) {
        LeaderElector *le = userdata;

        (void) req;
        le->request = NULL;
        if (resp->error < 0)
                log_warning("Failed to release lease %s/%s: %s", le->ns, le->name, resp->message);
        else
                log_info("Released lease %s/%s.", le->ns, le->name);
        leader_set_state(le, LEADER_STOPPED);
        (void) sd_event_source_set_enabled(le->timer, SD_EVENT_OFF);
        if (le->release_done)
                le->release_done(le->release_userdata);
}

int leader_elector_release(LeaderElector *le, void (*done)(void *userdata), void *userdata) {
        _cleanup_json_ cJSON *body = NULL;
        bool leading = leader_elector_is_leader(le);
        int r;

        informer_stop(le->informer);
        le->request = kube_request_cancel(le->request);
        le->release_done = done;
        le->release_userdata = userdata;

        if (!leading || !le->lease) {
                bool was = le->state == LEADER_LEADING;
                leader_set_state(le, LEADER_STOPPED);
                if (was && le->cb.stopped_leading)
                        le->cb.stopped_leading(le, le->userdata);
                if (done)
                        done(userdata);
                return 0;
        }

        /* Whatever was guarded by the lease stops before the lease is given away. */
        leader_set_state(le, LEADER_RELEASING);
        if (le->cb.stopped_leading)
                le->cb.stopped_leading(le, le->userdata);

        body = lease_build(le->lease, le->ns, le->name, "", USEC_PER_SEC, true, true);
        if (!body)
                return -ENOMEM;
        r = kube_request(le->client, KUBE_PUT, le->lease_path, body, leader_on_release, le, &le->request);
        if (r < 0)
                return r;
        leader_arm(le, now(CLOCK_MONOTONIC) + le->renew_deadline);
        return 0;
}

/* ---- heartbeat -------------------------------------------------------------------------------- */

struct LeaseHeartbeat {
        KubeClient *client;
        char *ns, *name, *holder, *lease_path, *collection_path;
        usec_t interval, duration, last_renew;
        sd_event_source *timer;
        KubeRequest *request;
        cJSON *lease;
};

static void heartbeat_arm(LeaseHeartbeat *hb, usec_t delay) {
        (void) sd_event_source_set_time(hb->timer, now(CLOCK_MONOTONIC) + delay);
        (void) sd_event_source_set_enabled(hb->timer, SD_EVENT_ONESHOT);
}

static void heartbeat_tick(LeaseHeartbeat *hb);

static void heartbeat_on_write(KubeRequest *req, KubeResponse *resp, void *userdata) {
        LeaseHeartbeat *hb = userdata;

        (void) req;
        hb->request = NULL;
        if (resp->error == -ESTALE || resp->error == -ENOENT || resp->error == -EEXIST) {
                /* Someone else wrote it, or it (or its namespace) vanished: fetch it and write
                 * again, after a pause so that a missing namespace or a twin node name does not
                 * turn into a request storm. */
                cJSON_Delete(hb->lease);
                hb->lease = NULL;
                log_ratelimit(LOG_NOTICE, USEC_PER_MINUTE, 1, "Heartbeat lease %s/%s: %s", hb->ns, hb->name,
                              resp->message);
                heartbeat_arm(hb, MIN(hb->interval, 5 * USEC_PER_SEC));
                return;
        }
        if (resp->error < 0) {
                log_ratelimit(LOG_NOTICE, USEC_PER_MINUTE, 1, "Heartbeat lease %s/%s: %s", hb->ns, hb->name,
                              resp->message);
                heartbeat_arm(hb, MIN(hb->interval, 5 * USEC_PER_SEC));
                return;
        }
        cJSON_Delete(hb->lease);
        hb->lease = TAKE_PTR(resp->body);
        hb->last_renew = now(CLOCK_MONOTONIC);
        heartbeat_arm(hb, hb->interval);
}

static void heartbeat_on_get(KubeRequest *req, KubeResponse *resp, void *userdata) {
        LeaseHeartbeat *hb = userdata;
        _cleanup_json_ cJSON *body = NULL;
        int r;

        (void) req;
        hb->request = NULL;
        if (resp->error < 0 && resp->error != -ENOENT) {
                heartbeat_arm(hb, MIN(hb->interval, 5 * USEC_PER_SEC));
                return;
        }
        if (resp->error == 0) {
                cJSON_Delete(hb->lease);
                hb->lease = TAKE_PTR(resp->body);
        }
        body = lease_build(hb->lease, hb->ns, hb->name, hb->holder, hb->duration, false, true);
        if (!body) {
                heartbeat_arm(hb, hb->interval);
                return;
        }
        r = hb->lease ? kube_request(hb->client, KUBE_PUT, hb->lease_path, body, heartbeat_on_write, hb,
                                     &hb->request)
                      : kube_request(hb->client, KUBE_POST, hb->collection_path, body, heartbeat_on_write,
                                     hb, &hb->request);
        if (r < 0)
                heartbeat_arm(hb, hb->interval);
}

static void heartbeat_tick(LeaseHeartbeat *hb) {
        _cleanup_json_ cJSON *body = NULL;
        int r;

        if (hb->request)
                return;
        if (!hb->lease) {
                r = kube_request(hb->client, KUBE_GET, hb->lease_path, NULL, heartbeat_on_get, hb,
                                 &hb->request);
                if (r < 0)
                        heartbeat_arm(hb, hb->interval);
                return;
        }
        body = lease_build(hb->lease, hb->ns, hb->name, hb->holder, hb->duration, false, true);
        r = body ? kube_request(hb->client, KUBE_PUT, hb->lease_path, body, heartbeat_on_write, hb,
                                &hb->request)
                 : -ENOMEM;
        if (r < 0)
                heartbeat_arm(hb, hb->interval);
}

static int heartbeat_on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s, (void) usec;
        heartbeat_tick(userdata);
        return 0;
}

int lease_heartbeat_new(KubeClient *client, const char *namespace, const char *name, const char *holder,
                        usec_t interval, usec_t duration, LeaseHeartbeat **ret) {
        _cleanup_(lease_heartbeat_freep) LeaseHeartbeat *hb = NULL;
        int r;

        hb = calloc(1, sizeof(*hb));
        if (!hb)
                return -ENOMEM;
        hb->client = client;
        hb->interval = interval;
        hb->duration = duration;
        hb->ns = strdup(namespace);
        hb->name = strdup(name);
        hb->holder = strdup(holder);
        if (!hb->ns || !hb->name || !hb->holder ||
            asprintf(&hb->collection_path, LEASE_API "%s/leases", namespace) < 0 ||
            asprintf(&hb->lease_path, LEASE_API "%s/leases/%s", namespace, name) < 0)
                return -ENOMEM;
        r = sd_event_add_time(kube_client_event(client), &hb->timer, CLOCK_MONOTONIC, USEC_INFINITY, 0,
                              heartbeat_on_timer, hb);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(hb->timer, "heartbeat");
        *ret = TAKE_PTR(hb);
        return 0;
}

LeaseHeartbeat *lease_heartbeat_free(LeaseHeartbeat *hb) {
        if (!hb)
                return NULL;
        kube_request_cancel(hb->request);
        sd_event_source_disable_unref(hb->timer);
        cJSON_Delete(hb->lease);
        free(hb->ns);
        free(hb->name);
        free(hb->holder);
        free(hb->lease_path);
        free(hb->collection_path);
        free(hb);
        return NULL;
}

int lease_heartbeat_start(LeaseHeartbeat *hb) {
        heartbeat_tick(hb);
        return 0;
}

usec_t lease_heartbeat_last_renew(const LeaseHeartbeat *hb) {
        return hb->last_renew;
}
