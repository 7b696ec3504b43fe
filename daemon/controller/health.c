/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../basic/hashmap.h"
#include "../basic/json-util.h"
#include "../basic/string-util.h"
#include "../informer/informer.h"
#include "../log/log.h"
#include "health.h"

#define LSN_PATH       "/apis/hwameistor.io/v1alpha1/localstoragenodes"
#define CHECK_INTERVAL (2 * USEC_PER_SEC)

/* What this leader knows of one heartbeat Lease. */
typedef struct Beat {
        char *name;
        char *renew; /* spec.renewTime as last seen */
        usec_t seen; /* CLOCK_MONOTONIC when renew last changed */
        usec_t duration;
} Beat;

struct HealthController {
        KubeClient *client;
        EventRecorder *events;
        Informer *leases, *nodes;
        Hashmap *beats; /* lease name → Beat */
        KubeRequest *request;
        sd_event_source *timer;
        usec_t started;
};

static void beat_free(void *p) {
        Beat *b = p;

        if (!b)
                return;
        free(b->name);
        free(b->renew);
        free(b);
}

static void hc_on_lease(Informer *inf, const cJSON *obj, void *userdata) {
        HealthController *hc = userdata;
        const char *name = json_get_string(cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "name");
        const cJSON *spec = cJSON_GetObjectItemCaseSensitive(obj, "spec");
        const char *renew = json_get_string(spec, "renewTime");
        uint64_t seconds = 0;
        Beat *b;

        (void) inf;
        if (!name || !startswith(name, HEALTH_LEASE_PREFIX))
                return;
        b = hashmap_get(hc->beats, name);
        if (!b) {
                b = calloc(1, sizeof(*b));
                if (!b || !(b->name = strdup(name)) || hashmap_put(hc->beats, b->name, b) < 0) {
                        beat_free(b);
                        return;
                }
        }
        if (json_get_u64(spec, "leaseDurationSeconds", &seconds) >= 0 && seconds > 0)
                b->duration = seconds * USEC_PER_SEC;
        if (!streq_ptr(b->renew, renew) || b->seen == 0) {
                (void) free_and_strdup(&b->renew, renew);
                b->seen = now(CLOCK_MONOTONIC);
        }
}

static void hc_on_lease_updated(Informer *inf, const cJSON *old, const cJSON *obj, void *userdata) {
        (void) old;
        hc_on_lease(inf, obj, userdata);
}

static void hc_on_lease_deleted(Informer *inf, const cJSON *obj, void *userdata) {
        HealthController *hc = userdata;
        const char *name = json_get_string(cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "name");

        (void) inf;
        if (name)
                beat_free(hashmap_remove(hc->beats, name));
}

static void hc_on_written(KubeRequest *req, KubeResponse *resp, void *userdata) {
        HealthController *hc = userdata;

        (void) req;
        hc->request = NULL;
        if (resp->error < 0 && resp->error != -ENOENT)
                log_warning("Node health: writing to the API failed: %s", resp->message);
}

typedef struct Check {
        HealthController *hc;
        usec_t now;
        char node[256]; /* the first node found stale */
        char why[512];
} Check;

static int hc_check_node(const cJSON *lsn, void *userdata) {
        Check *c = userdata;
        const char *node = json_get_string(cJSON_GetObjectItemCaseSensitive(lsn, "metadata"), "name");
        const char *state = json_get_string(cJSON_GetObjectItemCaseSensitive(lsn, "status"), "state");
        char lease[300];
        Beat *b;

        if (c->node[0] || !node || streq_ptr(state, "Offline"))
                return 0;
        snprintf(lease, sizeof(lease), HEALTH_LEASE_PREFIX "%s", node);
        b = hashmap_get(c->hc->beats, lease);
        if (!b) {
                if (c->now - c->hc->started < HEALTH_MISSING_GRACE)
                        return 0;
                snprintf(c->why, sizeof(c->why), "no heartbeat Lease %s", lease);
        } else if (b->duration == 0 || c->now - b->seen <= b->duration)
                return 0;
        else
                snprintf(c->why, sizeof(c->why), "heartbeat Lease %s not renewed for %llus", lease,
                         (unsigned long long) ((c->now - b->seen) / USEC_PER_SEC));
        snprintf(c->node, sizeof(c->node), "%s", node);
        return 0;
}

static int hc_on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        HealthController *hc = userdata;
        _cleanup_json_ cJSON *body = NULL, *lsn = NULL;
        _cleanup_free_ char *path = NULL;
        Check c = { .hc = hc, .now = now(CLOCK_MONOTONIC) };
        int r;

        (void) sd_event_source_set_time(s, usec + CHECK_INTERVAL);
        if (hc->request || !informer_has_synced(hc->leases) || !informer_has_synced(hc->nodes))
                return 0;
        (void) kube_cache_foreach(informer_cache(hc->nodes), hc_check_node, &c);
        if (!c.node[0])
                return 0;
        body = cJSON_CreateObject();
        if (!body || !cJSON_AddStringToObject(cJSON_AddObjectToObject(body, "status"), "state", "Offline") ||
            asprintf(&path, LSN_PATH "/%s/status", c.node) < 0)
                return 0;
        log_warning("Node %s is Offline: %s.", c.node, c.why);
        if (kube_cache_get(informer_cache(hc->nodes), NULL, c.node, &lsn) > 0)
                event_recorder_emit(hc->events, "hwameistor.io/v1alpha1", "LocalStorageNode", lsn,
                                    EVENT_WARNING, "NodeOffline", "%s", c.why);
        r = kube_request(hc->client, KUBE_PATCH_MERGE, path, body, hc_on_written, hc, &hc->request);
        if (r < 0)
                log_warning_errno(r, "Node health: %m");
        return 0;
}

int health_controller_new(KubeClient *client, EventRecorder *events, const char *namespace,
                          HealthController **ret) {
        static const InformerHandlers lease_handlers = {
                .added = hc_on_lease,
                .updated = hc_on_lease_updated,
                .deleted = hc_on_lease_deleted,
        };
        static const InformerHandlers node_handlers = {};
        _cleanup_(health_controller_freep) HealthController *hc = NULL;
        _cleanup_free_ char *path = NULL;
        int r;

        hc = calloc(1, sizeof(*hc));
        if (!hc || asprintf(&path, "/apis/coordination.k8s.io/v1/namespaces/%s/leases", namespace) < 0)
                return -ENOMEM;
        hc->client = client;
        hc->events = events;
        hc->started = now(CLOCK_MONOTONIC);
        r = hashmap_new(&hc->beats);
        if (r >= 0)
                r = informer_new(client, &(InformerConfig){ .name = "health-leases", .path = path },
                                 &lease_handlers, hc, &hc->leases);
        if (r >= 0)
                r = informer_new(client,
                                 &(InformerConfig){ .name = "health-localstoragenodes", .path = LSN_PATH },
                                 &node_handlers, hc, &hc->nodes);
        if (r < 0)
                return r;
        r = sd_event_add_time_relative(kube_client_event(client), &hc->timer, CLOCK_MONOTONIC,
                                       CHECK_INTERVAL, 0, hc_on_timer, hc);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(hc->timer, SD_EVENT_ON);
        (void) sd_event_source_set_description(hc->timer, "node-health");
        *ret = TAKE_PTR(hc);
        return 0;
}

HealthController *health_controller_free(HealthController *hc) {
        if (!hc)
                return NULL;
        kube_request_cancel(hc->request);
        informer_free(hc->leases);
        informer_free(hc->nodes);
        sd_event_source_disable_unref(hc->timer);
        hashmap_free_with(hc->beats, beat_free);
        free(hc);
        return NULL;
}

int health_controller_start(HealthController *hc) {
        int r = informer_start(hc->leases);
        return r < 0 ? r : informer_start(hc->nodes);
}
