/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../basic/json-util.h"
#include "../basic/string-util.h"
#include "../informer/informer.h"
#include "../kube/kube-update.h"
#include "../log/log.h"
#include "lsn.h"

#define LSN_PATH "/apis/hwameistor.io/v1alpha1/localstoragenodes"

struct LsnWriter {
        KubeClient *client;
        Storage *storage;
        char *node, *storage_ip, *zone, *region;
        char *path; /* of our object */
        Informer *informer;
        KubeRequest *request; /* create or spec patch in flight */
        KubeUpdate *update;   /* status write in flight */
        bool dirty;           /* a sync was asked for while a write was in flight */
        unsigned writes;
        sd_event_source *retry; /* after a failed write */
        usec_t retry_delay;
};

static int strcmp_ptr(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static int disk_compare(const void *a, const void *b) {
        return strcmp((*(const StorageDisk *const *) a)->dev_path,
                      (*(const StorageDisk *const *) b)->dev_path);
}

static char *format_rfc3339_now(char *buf, size_t len) {
        time_t t = (time_t) (now(CLOCK_REALTIME) / USEC_PER_SEC);
        struct tm tm;

        if (!gmtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                snprintf(buf, len, "1970-01-01T00:00:00Z");
        return buf;
}

/* Disks sorted by path, volumes by name: the same storage always gives the same JSON. */
int lsn_status_build(const StorageSnapshot *snap, const cJSON *current_conditions, cJSON **ret) {
        _cleanup_json_ cJSON *status = cJSON_CreateObject();
        cJSON *pools, *conditions, *cond;
        const cJSON *old;
        _cleanup_free_ char *offline = NULL;
        bool ok;

        if (!status)
                return -ENOMEM;
        pools = cJSON_AddObjectToObject(status, "pools");
        if (!pools)
                return -ENOMEM;

        for (size_t i = 0; i < snap->n_pools; i++) {
                const StoragePool *p = &snap->pools[i];
                _cleanup_free_ const StorageDisk **disks = calloc(snap->n_disks + 1, sizeof(StorageDisk *));
                _cleanup_free_ const char **vols = calloc(snap->n_volumes + 1, sizeof(char *));
                size_t nd = 0, nv = 0;
                cJSON *pool, *da, *va;

                if (!disks || !vols)
                        return -ENOMEM;
                pool = cJSON_AddObjectToObject(pools, p->name);
                ok = pool && cJSON_AddStringToObject(pool, "name", p->name) &&
                     cJSON_AddStringToObject(pool, "class", disk_class_to_string(p->class)) &&
                     cJSON_AddStringToObject(pool, "type", "REGULAR") &&
                     cJSON_AddNumberToObject(pool, "totalCapacityBytes", (double) p->total) &&
                     cJSON_AddNumberToObject(pool, "usedCapacityBytes", (double) p->used) &&
                     cJSON_AddNumberToObject(pool, "freeCapacityBytes", (double) p->free) &&
                     cJSON_AddNumberToObject(pool, "volumeCapacityBytesLimit", (double) p->total) &&
                     cJSON_AddNumberToObject(pool, "totalVolumeCount", STORAGE_VOLUMES_PER_POOL) &&
                     cJSON_AddNumberToObject(pool, "usedVolumeCount", p->volume_count) &&
                     cJSON_AddNumberToObject(pool, "freeVolumeCount",
                                             p->volume_count >= STORAGE_VOLUMES_PER_POOL
                                                     ? 0
                                                     : STORAGE_VOLUMES_PER_POOL - p->volume_count);
                da = ok ? cJSON_AddArrayToObject(pool, "disks") : NULL;
                va = da ? cJSON_AddArrayToObject(pool, "volumes") : NULL;
                if (!va)
                        return -ENOMEM;

                /* The pool's disks, and free disks of its class waiting to join it. */
                for (size_t j = 0; j < snap->n_disks; j++)
                        if (streq_ptr(snap->disks[j].pool, p->name) ||
                            (!snap->disks[j].pool && snap->disks[j].class == p->class))
                                disks[nd++] = &snap->disks[j];
                qsort(disks, nd, sizeof(StorageDisk *), disk_compare);
                for (size_t j = 0; j < nd; j++) {
                        const StorageDisk *d = disks[j];
                        cJSON *o = cJSON_CreateObject();

                        if (!o)
                                return -ENOMEM;
                        cJSON_AddItemToArray(da, o);
                        if (!cJSON_AddStringToObject(o, "devPath", d->dev_path) ||
                            !cJSON_AddStringToObject(o, "type", disk_class_to_string(d->class)) ||
                            !cJSON_AddNumberToObject(o, "capacityBytes", (double) d->capacity) ||
                            !cJSON_AddStringToObject(o, "state", storage_disk_state_to_string(d->state)))
                                return -ENOMEM;
                }

                for (size_t j = 0; j < snap->n_volumes; j++)
                        if (streq(snap->volumes[j].pool, p->name))
                                vols[nv++] = snap->volumes[j].name;
                qsort(vols, nv, sizeof(char *), strcmp_ptr);
                for (size_t j = 0; j < nv; j++) {
                        cJSON *v = cJSON_CreateString(vols[j]);
                        if (!v)
                                return -ENOMEM;
                        cJSON_AddItemToArray(va, v);
                }

                if (p->offline) {
                        char *n = NULL;
                        if (asprintf(&n, "%s%s%s: %s", strempty(offline), offline ? "; " : "", p->name,
                                     strna(p->message)) < 0)
                                return -ENOMEM;
                        free(offline);
                        offline = n;
                }
        }

        /* One condition; its transition time moves only when it changes. */
        conditions = cJSON_AddArrayToObject(status, "conditions");
        cond = cJSON_CreateObject();
        if (!conditions || !cond)
                return -ENOMEM;
        cJSON_AddItemToArray(conditions, cond);
        const char *type = offline || snap->n_pools == 0 ? "UnAvailable" : "Available";
        const char *reason = offline ? "PoolOffline" : snap->n_pools == 0 ? "NoPool" : "StorageAvailable";
        const char *message = offline              ? offline
                              : snap->n_pools == 0 ? "No pool: no disk the configuration allows is free"
                                                   : "Sufficient storage capacity";
        char ts[32];
        const char *transition = NULL;

        cJSON_ArrayForEach(old, current_conditions) if (streq_ptr(json_get_string(old, "type"), type) &&
                                                        streq_ptr(json_get_string(old, "reason"), reason))
                transition = json_get_string(old, "lastTransitionTime");
        if (!cJSON_AddStringToObject(cond, "type", type) ||
            !cJSON_AddStringToObject(cond, "status", "True") ||
            !cJSON_AddStringToObject(cond, "reason", reason) ||
            !cJSON_AddStringToObject(cond, "message", message) ||
            !cJSON_AddStringToObject(cond, "lastTransitionTime",
                                     transition ?: format_rfc3339_now(ts, sizeof(ts))))
                return -ENOMEM;

        if (!cJSON_AddStringToObject(status, "state", "Ready"))
                return -ENOMEM;
        *ret = TAKE_PTR(status);
        return 0;
}

static cJSON *lsn_spec_build(const LsnWriter *w) {
        _cleanup_json_ cJSON *spec = cJSON_CreateObject();
        cJSON *topo;

        if (!spec || !cJSON_AddStringToObject(spec, "hostname", w->node) ||
            !cJSON_AddStringToObject(spec, "storageIP", strempty(w->storage_ip)))
                return NULL;
        topo = cJSON_AddObjectToObject(spec, "topogoly"); /* sic: the API's spelling */
        if (!topo || !cJSON_AddStringToObject(topo, "zone", w->zone ?: "default") ||
            !cJSON_AddStringToObject(topo, "region", w->region ?: "default"))
                return NULL;
        return TAKE_PTR(spec);
}

static void lsn_on_written(KubeRequest *req, KubeResponse *resp, void *userdata) {
        LsnWriter *w = userdata;

        (void) req;
        w->request = NULL;
        if (resp->error < 0 && resp->error != -EEXIST)
                log_ratelimit(LOG_WARNING, USEC_PER_MINUTE, 3, "Failed to write LocalStorageNode %s: %s",
                              w->node, resp->message);
        else
                w->writes++;
        if (w->dirty) {
                w->dirty = false;
                lsn_writer_sync(w);
        }
}

static int lsn_status_mutate(cJSON *obj, void *userdata) {
        LsnWriter *w = userdata;
        const StorageSnapshot *snap = storage_snapshot(w->storage);
        const cJSON *cur = cJSON_GetObjectItemCaseSensitive(obj, "status");
        cJSON *desired = NULL;
        int r;

        if (!snap)
                return 1;
        r = lsn_status_build(snap, cJSON_GetObjectItemCaseSensitive(cur, "conditions"), &desired);
        if (r < 0)
                return r;
        if (cur && cJSON_Compare(desired, cur, true)) {
                cJSON_Delete(desired);
                return 1; /* nothing to change */
        }
        cJSON_DeleteItemFromObjectCaseSensitive(obj, "status");
        cJSON_AddItemToObject(obj, "status", desired);
        return 0;
}

static void lsn_on_status_written(KubeRequest *req, KubeResponse *resp, void *userdata) {
        LsnWriter *w = userdata;

        w->update = NULL;
        lsn_on_written(req, resp, w);
}

void lsn_writer_sync(LsnWriter *w) {
        _cleanup_json_ cJSON *cur = NULL, *spec = NULL, *desired = NULL;
        const StorageSnapshot *snap = storage_snapshot(w->storage);
        int r;

        if (!informer_has_synced(w->informer))
                return;
        if (w->request || w->update) {
                w->dirty = true;
                return;
        }

        spec = lsn_spec_build(w);
        if (!spec)
                return;
        r = kube_cache_get(informer_cache(w->informer), NULL, w->node, &cur);
        if (r < 0)
                return;
        if (r == 0) {
                _cleanup_json_ cJSON *obj = cJSON_CreateObject();
                cJSON *meta;

                if (!obj || !cJSON_AddStringToObject(obj, "apiVersion", "hwameistor.io/v1alpha1") ||
                    !cJSON_AddStringToObject(obj, "kind", "LocalStorageNode") ||
                    !(meta = cJSON_AddObjectToObject(obj, "metadata")) ||
                    !cJSON_AddStringToObject(meta, "name", w->node))
                        return;
                cJSON_AddItemToObject(obj, "spec", TAKE_PTR(spec));
                log_info("Creating LocalStorageNode %s.", w->node);
                (void) kube_request(w->client, KUBE_POST, LSN_PATH, obj, lsn_on_written, w, &w->request);
                return; /* the informer's ADDED brings us back for the status */
        }

        if (!cJSON_Compare(spec, cJSON_GetObjectItemCaseSensitive(cur, "spec"), true)) {
                _cleanup_json_ cJSON *patch = cJSON_CreateObject();

                if (!patch)
                        return;
                cJSON_AddItemToObject(patch, "spec", TAKE_PTR(spec));
                (void) kube_request(w->client, KUBE_PATCH_MERGE, w->path, patch, lsn_on_written, w,
                                    &w->request);
                return;
        }

        if (!snap)
                return;
        r = lsn_status_build(snap,
                             cJSON_GetObjectItemCaseSensitive(
                                     cJSON_GetObjectItemCaseSensitive(cur, "status"), "conditions"),
                             &desired);
        if (r < 0 || cJSON_Compare(desired, cJSON_GetObjectItemCaseSensitive(cur, "status"), true))
                return; /* up to date: an idle node writes nothing */
        (void) kube_update(w->client, w->path, true, lsn_status_mutate, lsn_on_status_written, w,
                           &w->update);
}

static int lsn_on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s, (void) usec;
        lsn_writer_sync(userdata);
        return 0;
}

static void lsn_on_object(Informer *inf, const cJSON *obj, void *userdata) {
        (void) inf, (void) obj;
        lsn_writer_sync(userdata);
}

/* A relist reports deletions while the object is still in the cache: look once it is gone. */
static void lsn_on_object_deleted(Informer *inf, const cJSON *obj, void *userdata) {
        LsnWriter *w = userdata;

        (void) inf, (void) obj;
        (void) sd_event_source_set_time_relative(w->retry, 0);
        (void) sd_event_source_set_enabled(w->retry, SD_EVENT_ONESHOT);
}

static void lsn_on_object_updated(Informer *inf, const cJSON *old, const cJSON *obj, void *userdata) {
        (void) old;
        lsn_on_object(inf, obj, userdata);
}

static void lsn_on_synced(Informer *inf, void *userdata) {
        (void) inf;
        lsn_writer_sync(userdata);
}

void lsn_writer_set_node(LsnWriter *w, const cJSON *node) {
        const cJSON *labels = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(node, "metadata"), "labels");
        const char *zone = json_get_string(labels, "topology.kubernetes.io/zone");
        const char *region = json_get_string(labels, "topology.kubernetes.io/region");

        if (streq_ptr(zone, w->zone) && streq_ptr(region, w->region))
                return;
        (void) free_and_strdup(&w->zone, zone);
        (void) free_and_strdup(&w->region, region);
        lsn_writer_sync(w);
}

void lsn_writer_set_storage_ip(LsnWriter *w, const char *ip) {
        if (free_and_strdup(&w->storage_ip, ip) > 0)
                lsn_writer_sync(w);
}

int lsn_writer_new(KubeClient *client, Storage *storage, const LsnConfig *config, LsnWriter **ret) {
        _cleanup_(lsn_writer_freep) LsnWriter *w = NULL;
        _cleanup_free_ char *selector = NULL;
        static const InformerHandlers handlers = {
                .added = lsn_on_object,
                .updated = lsn_on_object_updated,
                .deleted = lsn_on_object_deleted,
                .synced = lsn_on_synced,
        };
        int r;

        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->client = client;
        w->storage = storage;
        w->node = strdup(config->node_name);
        w->storage_ip = strdup(strempty(config->storage_ip));
        if (!w->node || !w->storage_ip || asprintf(&w->path, LSN_PATH "/%s", config->node_name) < 0 ||
            asprintf(&selector, "metadata.name=%s", config->node_name) < 0)
                return -ENOMEM;
        r = informer_new(client,
                         &(InformerConfig){
                                 .name = "localstoragenode", .path = LSN_PATH, .field_selector = selector },
                         &handlers, w, &w->informer);
        if (r < 0)
                return r;
        r = sd_event_add_time(kube_client_event(client), &w->retry, CLOCK_MONOTONIC, USEC_INFINITY, 0,
                              lsn_on_retry, w);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(w->retry, "lsn-retry");
        *ret = TAKE_PTR(w);
        return 0;
}

LsnWriter *lsn_writer_free(LsnWriter *w) {
        if (!w)
                return NULL;
        kube_request_cancel(w->request);
        kube_update_cancel(w->update);
        sd_event_source_disable_unref(w->retry);
        informer_free(w->informer);
        free(w->node);
        free(w->storage_ip);
        free(w->zone);
        free(w->region);
        free(w->path);
        free(w);
        return NULL;
}

int lsn_writer_start(LsnWriter *w) {
        return informer_start(w->informer);
}

unsigned lsn_writer_writes(const LsnWriter *w) {
        return w->writes;
}
