/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "../basic/hashmap.h"
#include "../basic/json-util.h"
#include "../basic/string-util.h"
#include "../informer/informer.h"
#include "../kube/kube-update.h"
#include "../log/log.h"
#include "replica.h"

#define REPLICA_PATH     "/apis/hwameistor.io/v1alpha1/localvolumereplicas"
#define REPLICA_SIZE_MAX (UINT64_C(1) << 50) /* 1 PiB: beyond any local disk */

typedef enum ReplicaAction {
        ACTION_NONE,
        ACTION_FINALIZER, /* adding or removing ours */
        ACTION_STORAGE,   /* creating, growing or deleting the volume */
        ACTION_STATUS,
        ACTION_DELETE, /* deleting the object after spec.delete */
} ReplicaAction;

/* A storage operation that failed for a replica: retried with a growing delay, not at once. */
typedef struct ReplicaFailure {
        char *name;
        char *message;
        unsigned attempts;
        usec_t not_before;
        bool fired; /* its retry has been queued; the next failure arms it again */
} ReplicaFailure;

#define REPLICA_RETRY_MIN (1 * USEC_PER_SEC)
#define REPLICA_RETRY_MAX (5 * USEC_PER_MINUTE)

struct ReplicaController {
        KubeClient *client;
        Storage *storage;
        EventRecorder *events;
        char *node, *selector;
        Informer *informer;
        Hashmap *queue; /* name → name (owned): replicas to look at */
        char *busy;     /* the replica being worked on */
        ReplicaAction action;
        KubeRequest *request;
        KubeUpdate *update;
        sd_event_source *defer;
        Hashmap *failures; /* name → ReplicaFailure */
        sd_event_source *retry_timer, *api_retry;
};

/* ---- the queue ---------------------------------------------------------------------------- */

static void replica_enqueue(ReplicaController *rc, const char *name) {
        char *copy;

        if (!name)
                return;
        if (rc->defer)
                (void) sd_event_source_set_enabled(rc->defer, SD_EVENT_ONESHOT);
        if (hashmap_contains(rc->queue, name))
                return;
        copy = strdup(name);
        if (!copy || hashmap_put(rc->queue, copy, copy) < 0)
                free(copy);
}

static void replica_done(ReplicaController *rc) {
        rc->busy = mfree(rc->busy);
        rc->action = ACTION_NONE;
        if (hashmap_size(rc->queue) > 0)
                (void) sd_event_source_set_enabled(rc->defer, SD_EVENT_ONESHOT);
}

/* ---- status ------------------------------------------------------------------------------- */

typedef struct ReplicaStatus {
        const char *state;
        const char *reason, *message; /* the Ready condition's, when not ready */
        const StorageVolume *volume;
        const char *pool, *volume_name;
        bool synced;
        bool inuse; /* its device is open by someone other than hwameid (mounted, in use by a pod) */
} ReplicaStatus;

static cJSON *replica_status_build(const ReplicaStatus *st, const cJSON *current) {
        _cleanup_json_ cJSON *o = cJSON_CreateObject();
        _cleanup_free_ char *path = NULL;
        cJSON *conds, *c, *disks;
        const cJSON *old;
        const char *transition = NULL;
        bool ready = streq(st->state, "Ready");
        char ts[32];
        time_t t = (time_t) (now(CLOCK_REALTIME) / USEC_PER_SEC);
        struct tm tm;

        if (!o)
                return NULL;
        if (st->volume) {
                path = storage_volume_dev_path(st->pool, st->volume_name);
                disks = path ? cJSON_AddArrayToObject(o, "disks") : NULL;
                if (!disks || !cJSON_AddStringToObject(o, "storagePath", path) ||
                    !cJSON_AddStringToObject(o, "devPath", path) ||
                    !cJSON_AddNumberToObject(o, "allocatedCapacityBytes", (double) st->volume->size))
                        return NULL;
                for (char **d = st->volume->disks; d && *d; d++)
                        cJSON_AddItemToArray(disks, cJSON_CreateString(*d));
        }
        if (!cJSON_AddStringToObject(o, "state", st->state) ||
            !cJSON_AddBoolToObject(o, "synced", st->synced) || !cJSON_AddBoolToObject(o, "inuse", st->inuse))
                return NULL;

        conds = cJSON_AddArrayToObject(o, "conditions");
        c = cJSON_CreateObject();
        if (!conds || !c)
                return NULL;
        cJSON_AddItemToArray(conds, c);
        cJSON_ArrayForEach(
                old, cJSON_GetObjectItemCaseSensitive(
                             current, "conditions")) if (streq_ptr(json_get_string(old, "type"), "Ready") &&
                                                         streq_ptr(json_get_string(old, "status"),
                                                                   ready ? "True" : "False") &&
                                                         streq_ptr(json_get_string(old, "reason"),
                                                                   st->reason ?: "VolumeReady"))
                transition = json_get_string(old, "lastTransitionTime");
        if (!transition) {
                strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
                transition = ts;
        }
        if (!cJSON_AddStringToObject(c, "type", "Ready") ||
            !cJSON_AddStringToObject(c, "status", ready ? "True" : "False") ||
            !cJSON_AddStringToObject(c, "reason", st->reason ?: "VolumeReady") ||
            !cJSON_AddStringToObject(c, "message", st->message ?: "The volume is in place") ||
            !cJSON_AddStringToObject(c, "lastTransitionTime", transition))
                return NULL;
        return TAKE_PTR(o);
}

static void replica_api_failed(ReplicaController *rc, const char *name, int error, const char *message);

static void replica_on_written(KubeRequest *req, KubeResponse *resp, void *userdata) {
        ReplicaController *rc = userdata;

        (void) req;
        rc->request = NULL;
        if (resp->error < 0 && resp->error != -ENOENT && rc->busy) {
                log_ratelimit(LOG_WARNING, USEC_PER_MINUTE, 5, "Replica %s: writing to the API failed: %s",
                              rc->busy, resp->message);
                /* Look again after a pause, whether or not anything else happens meanwhile. */
                replica_api_failed(rc, rc->busy, resp->error, resp->message);
        }
        replica_done(rc);
}

/* Merge-patches the status when it differs. Returns 1 when a write was started. */
static int replica_write_status(ReplicaController *rc, const cJSON *obj, const ReplicaStatus *st) {
        const char *name = json_get_string(cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "name");
        const cJSON *current = cJSON_GetObjectItemCaseSensitive(obj, "status");
        _cleanup_json_ cJSON *status = replica_status_build(st, current), *patch = NULL;
        _cleanup_free_ char *path = NULL;
        int r;

        if (!status)
                return -ENOMEM;
        if (current && cJSON_Compare(status, current, true))
                return 0;
        patch = cJSON_CreateObject();
        if (!patch || asprintf(&path, REPLICA_PATH "/%s/status", name) < 0)
                return -ENOMEM;
        /* A merge patch keeps what it does not mention: fields we no longer report become null. */
        const cJSON *i;
        cJSON_ArrayForEach(i, current) if (i->string &&
                                           !cJSON_GetObjectItemCaseSensitive(status, i->string) &&
                                           !cJSON_AddNullToObject(status, i->string)) return -ENOMEM;
        cJSON_AddItemToObject(patch, "status", TAKE_PTR(status));
        r = kube_request(rc->client, KUBE_PATCH_MERGE, path, patch, replica_on_written, rc, &rc->request);
        if (r < 0)
                return r;
        rc->action = ACTION_STATUS;
        return 1;
}

/* ---- finalizer ---------------------------------------------------------------------------- */

static int replica_add_finalizer(cJSON *obj, void *userdata) {
        cJSON *meta = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
        cJSON *f = cJSON_GetObjectItemCaseSensitive(meta, "finalizers");
        const cJSON *i;

        (void) userdata;
        if (cJSON_GetObjectItemCaseSensitive(meta, "deletionTimestamp"))
                return 1; /* no new finalizers once deleting */
        cJSON_ArrayForEach(i, f) if (cJSON_IsString(i) && streq(i->valuestring, REPLICA_FINALIZER)) return 1;
        if (!f)
                f = cJSON_AddArrayToObject(meta, "finalizers");
        if (!f)
                return -ENOMEM;
        cJSON_AddItemToArray(f, cJSON_CreateString(REPLICA_FINALIZER));
        return 0;
}

static int replica_remove_finalizer(cJSON *obj, void *userdata) {
        cJSON *f = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(obj, "metadata"),
                                                    "finalizers");
        int idx = 0;
        cJSON *i;

        (void) userdata;
        cJSON_ArrayForEach(i, f) {
                if (cJSON_IsString(i) && streq(i->valuestring, REPLICA_FINALIZER)) {
                        cJSON_DeleteItemFromArray(f, idx);
                        return 0;
                }
                idx++;
        }
        return 1;
}

static bool replica_has_finalizer(const cJSON *obj) {
        const cJSON *i;

        cJSON_ArrayForEach(
                i, cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(obj, "metadata"),
                                                    "finalizers")) if (cJSON_IsString(i) &&
                                                                       streq(i->valuestring,
                                                                             REPLICA_FINALIZER)) return true;
        return false;
}

static void replica_on_updated(KubeRequest *req, KubeResponse *resp, void *userdata) {
        ReplicaController *rc = userdata;

        rc->update = NULL;
        replica_on_written(req, resp, rc);
}

static int replica_update(ReplicaController *rc, const char *name, KubeMutateFn fn) {
        _cleanup_free_ char *path = NULL;
        int r;

        if (asprintf(&path, REPLICA_PATH "/%s", name) < 0)
                return -ENOMEM;
        r = kube_update(rc->client, path, false, fn, replica_on_updated, rc, &rc->update);
        if (r < 0)
                return r;
        rc->action = ACTION_FINALIZER;
        return 1;
}

/* ---- storage ------------------------------------------------------------------------------- */

static void replica_failure_free(void *p) {
        ReplicaFailure *f = p;

        if (!f)
                return;
        free(f->name);
        free(f->message);
        free(f);
}

static void replica_arm_retry(ReplicaController *rc) {
        usec_t next = USEC_INFINITY;
        ReplicaFailure *f;

        HASHMAP_FOREACH(f, rc->failures)
        next = MIN(next, f->not_before);
        if (next == USEC_INFINITY)
                return;
        (void) sd_event_source_set_time(rc->retry_timer, next);
        (void) sd_event_source_set_enabled(rc->retry_timer, SD_EVENT_ONESHOT);
}

static int replica_on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        ReplicaController *rc = userdata;
        ReplicaFailure *f;

        (void) s, (void) usec;
        HASHMAP_FOREACH(f, rc->failures)
        if (f->not_before <= now(CLOCK_MONOTONIC))
                replica_enqueue(rc, f->name);
        replica_arm_retry(rc);
        return 0;
}

/* Remembers (or forgets, error == 0) a storage failure of a replica. */
static void replica_record(ReplicaController *rc, const char *name, int error, const char *message) {
        ReplicaFailure *f = hashmap_get(rc->failures, name);

        if (error >= 0) {
                if (f) {
                        hashmap_remove(rc->failures, name);
                        replica_failure_free(f);
                }
                return;
        }
        if (!f) {
                f = calloc(1, sizeof(*f));
                if (!f || !(f->name = strdup(name)) || hashmap_put(rc->failures, f->name, f) < 0) {
                        replica_failure_free(f);
                        return;
                }
        }
        (void) free_and_strdup(&f->message, message ?: strerror(-error));
        f->attempts++;
        f->fired = false;
        f->not_before = now(CLOCK_MONOTONIC) +
                        MIN(REPLICA_RETRY_MIN << MIN(f->attempts - 1, 20U), REPLICA_RETRY_MAX);
        replica_arm_retry(rc);
}

/* An API write failed: every replica is looked at again in a few seconds (writes that are
 * already right cost nothing), whether or not anything else happens meanwhile. */
static void replica_api_failed(ReplicaController *rc, const char *name, int error, const char *message) {
        int enabled = SD_EVENT_OFF;

        (void) name, (void) error, (void) message;
        if (sd_event_source_get_enabled(rc->api_retry, &enabled) >= 0 && enabled != SD_EVENT_OFF)
                return;
        (void) sd_event_source_set_time_relative(rc->api_retry, 5 * USEC_PER_SEC);
        (void) sd_event_source_set_enabled(rc->api_retry, SD_EVENT_ONESHOT);
}

static void replica_on_storage(int error, const char *message, void *userdata) {
        ReplicaController *rc = userdata;
        char *name = TAKE_PTR(rc->busy);

        if (error < 0)
                log_warning("Replica %s: %s; retrying later.", strna(name), strna(message));
        if (name)
                replica_record(rc, name, error, message);
        /* Look again now: the status says what happened; a failed operation waits for its retry. */
        rc->action = ACTION_NONE;
        replica_enqueue(rc, name);
        free(name);
        replica_done(rc);
}

/* ---- reconcile ----------------------------------------------------------------------------- */

static bool pool_name_is_valid(const char *pool) {
        const char *c = pool ? startswith(pool, STORAGE_POOL_PREFIX) : NULL;
        return c && disk_class_from_string(c) >= 0;
}

/* Looks at one replica and starts at most one action for it. Returns 1 when an action is in
 * flight (the replica stays busy), 0 when nothing was needed, negative on error. */
static int replica_reconcile(ReplicaController *rc, const cJSON *obj) {
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
        const cJSON *spec = cJSON_GetObjectItemCaseSensitive(obj, "spec");
        const cJSON *annotations = cJSON_GetObjectItemCaseSensitive(meta, "annotations");
        const char *name = json_get_string(meta, "name");
        const char *uid = json_get_string(meta, "uid");
        const cJSON *status = cJSON_GetObjectItemCaseSensitive(obj, "status");
        const char *volume = json_get_string(spec, "volumeName");
        const char *pool = json_get_string(spec, "poolName");
        bool deleting = cJSON_GetObjectItemCaseSensitive(meta, "deletionTimestamp") != NULL;
        bool delete_requested = false;
        uint64_t size = 0;
        ReplicaStatus st = { .pool = pool, .volume_name = volume };
        const StorageVolume *v;
        const StoragePool *p;
        char msg[512];
        int r;

        LOG_CONTEXT_PUSH_FIELD("HWAMEID_REPLICA", name);
        (void) json_get_bool(spec, "delete", &delete_requested);

        /* A spec we cannot honour touches nothing: it only gets a condition saying why. */
        if (!storage_volume_name_is_valid(volume) || !pool_name_is_valid(pool) ||
            json_get_u64(spec, "requiredCapacityBytes", &size) < 0 || size < STORAGE_VOLUME_MIN_SIZE ||
            size > REPLICA_SIZE_MAX) {
                if (deleting && replica_has_finalizer(obj))
                        return replica_update(rc, name,
                                              replica_remove_finalizer); /* nothing of ours exists */
                if (!storage_volume_name_is_valid(volume))
                        snprintf(msg, sizeof(msg), "spec.volumeName '%s' is not a valid volume name",
                                 strna(volume));
                else if (!pool_name_is_valid(pool))
                        snprintf(msg, sizeof(msg),
                                 "spec.poolName '%s' is not a pool name (%sHDD, SSD or NVMe)", strna(pool),
                                 STORAGE_POOL_PREFIX);
                else
                        snprintf(msg, sizeof(msg),
                                 "spec.requiredCapacityBytes must be a whole number from %llu to %llu",
                                 (unsigned long long) STORAGE_VOLUME_MIN_SIZE,
                                 (unsigned long long) REPLICA_SIZE_MAX);
                st = (ReplicaStatus){ .state = "NotReady", .reason = "InvalidSpec", .message = msg };
                return replica_write_status(rc, obj, &st);
        }

        v = storage_find_volume(rc->storage, pool, volume);
        const ReplicaFailure *failure = hashmap_get(rc->failures, name);
        bool waiting = failure && !failure->fired && now(CLOCK_MONOTONIC) < failure->not_before;
        bool foreign = v && v->owner && uid && !streq(v->owner, uid);

        if (deleting || delete_requested) {
                if (v && !foreign) {
                        if (waiting)
                                return 0; /* the last removal failed: its retry timer brings us back */
                        if (!streq_ptr(json_get_string(cJSON_GetObjectItemCaseSensitive(obj, "status"),
                                                       "state"),
                                       "ToBeDeleted")) {
                                st = (ReplicaStatus){ .state = "ToBeDeleted",
                                                      .reason = "Deleting",
                                                      .message = "The volume is being removed",
                                                      .volume = v,
                                                      .pool = pool,
                                                      .volume_name = volume };
                                r = replica_write_status(rc, obj, &st);
                                if (r != 0)
                                        return r;
                        }
                        log_info("Removing volume %s/%s of replica %s.", pool, volume, name);
                        r = storage_volume_delete(rc->storage, pool, volume, uid, replica_on_storage, rc);
                        if (r < 0)
                                return r;
                        rc->action = ACTION_STORAGE;
                        return 1;
                }
                if (deleting)
                        return replica_has_finalizer(obj)
                                       ? replica_update(rc, name, replica_remove_finalizer)
                                       : 0;
                /* spec.delete: the volume is gone; say so, then remove the object. */
                st = (ReplicaStatus){ .state = "Deleted",
                                      .reason = "Deleted",
                                      .message = "The volume was removed" };
                r = replica_write_status(rc, obj, &st);
                if (r != 0)
                        return r;
                _cleanup_free_ char *path = NULL;
                if (asprintf(&path, REPLICA_PATH "/%s", name) < 0)
                        return -ENOMEM;
                r = kube_request(rc->client, KUBE_DELETE, path, NULL, replica_on_written, rc, &rc->request);
                if (r < 0)
                        return r;
                rc->action = ACTION_DELETE;
                return 1;
        }

        /* Before anything exists that would need cleaning up, make sure we get to clean it up. */
        if (!replica_has_finalizer(obj))
                return replica_update(rc, name, replica_add_finalizer);

        if (foreign) {
                snprintf(msg, sizeof(msg), "volume %s in pool %s belongs to another replica (UID %s)",
                         volume, pool, v->owner);
                st = (ReplicaStatus){ .state = "NotReady",
                                      .reason = "VolumeOwnedElsewhere",
                                      .message = msg };
                return replica_write_status(rc, obj, &st);
        }

        p = storage_find_pool(rc->storage, pool);
        if (!p) {
                snprintf(msg, sizeof(msg), "pool %s does not exist on node %s", pool, rc->node);
                st = (ReplicaStatus){ .state = "NotReady", .reason = "PoolNotFound", .message = msg };
                return replica_write_status(rc, obj, &st);
        }

        /* A pool that lost its disks may not list the volume any more: the disk is the problem. */
        if (!v && p->offline) {
                snprintf(msg, sizeof(msg), "pool %s is offline: %s", pool, strna(p->message));
                st = (ReplicaStatus){ .state = "NotReady", .reason = "DiskOffline", .message = msg };
                return replica_write_status(rc, obj, &st);
        }

        /* A replica that had a volume and lost it is not given an empty one: that would look Ready
         * with its data gone. Someone who knows (the cluster's controllers) decides. */
        uint64_t had = 0;
        if (!v && json_get_u64(status, "allocatedCapacityBytes", &had) >= 0 && had > 0) {
                snprintf(msg, sizeof(msg),
                         "the volume %s that held this replica's data is gone from pool %s; it is not "
                         "recreated empty",
                         volume, pool);
                st = (ReplicaStatus){ .state = "NotReady", .reason = "VolumeLost", .message = msg };
                return replica_write_status(rc, obj, &st);
        }

        if (!v || v->size < ROUND_UP(size, MAX(p->extent_size, (uint64_t) 1))) {
                uint64_t need = ROUND_UP(size, MAX(p->extent_size, (uint64_t) 1)) - (v ? v->size : 0);

                if (waiting) {
                        st = (ReplicaStatus){ .state = "NotReady",
                                              .reason = "StorageFailed",
                                              .message = failure->message,
                                              .volume = v,
                                              .pool = pool,
                                              .volume_name = volume };
                        return replica_write_status(rc, obj, &st);
                }
                if (!v && p->volume_count >= STORAGE_VOLUMES_PER_POOL) {
                        snprintf(msg, sizeof(msg), "pool %s holds %u volumes already", pool,
                                 p->volume_count);
                        st = (ReplicaStatus){ .state = "NotReady", .reason = "PoolFull", .message = msg };
                        return replica_write_status(rc, obj, &st);
                }

                if (p->offline) {
                        snprintf(msg, sizeof(msg), "pool %s is offline: %s", pool, strna(p->message));
                        st = (ReplicaStatus){ .state = "NotReady",
                                              .reason = "PoolOffline",
                                              .message = msg,
                                              .volume = v,
                                              .pool = pool,
                                              .volume_name = volume };
                        return replica_write_status(rc, obj, &st);
                }
                if (need > p->free) {
                        snprintf(msg, sizeof(msg), "pool %s has %s free, %s more needed", pool,
                                 FORMAT_BYTES(p->free), FORMAT_BYTES(need));
                        st = (ReplicaStatus){ .state = "NotReady",
                                              .reason = "InsufficientCapacity",
                                              .message = msg,
                                              .volume = v,
                                              .pool = pool,
                                              .volume_name = volume };
                        return replica_write_status(rc, obj, &st);
                }
                if (!v) {
                        st = (ReplicaStatus){ .state = "Creating",
                                              .reason = "Creating",
                                              .message = "Creating the volume" };
                        r = replica_write_status(rc, obj, &st);
                        if (r != 0)
                                return r;
                        log_info("Creating volume %s/%s (%s) for replica %s.", pool, volume,
                                 FORMAT_BYTES(size), name);
                        r = storage_volume_create(rc->storage, pool, volume, size, uid, replica_on_storage,
                                                  rc);
                } else {
                        log_info("Growing volume %s/%s to %s for replica %s.", pool, volume,
                                 FORMAT_BYTES(size), name);
                        r = storage_volume_resize(rc->storage, pool, volume, size, uid, replica_on_storage,
                                                  rc);
                }
                if (r < 0)
                        return r;
                rc->action = ACTION_STORAGE;
                return 1;
        }

        st = (ReplicaStatus){ .state = "Ready", .volume = v, .pool = pool, .volume_name = volume };
        st.synced = !json_get_string(annotations, REPLICA_SYNC_ANNOTATION);
        st.inuse = v->open && storage_volume_users(rc->storage, pool, volume) == 0;
        if (v->offline)
                st = (ReplicaStatus){ .state = "NotReady",
                                      .reason = "DiskOffline",
                                      .message = "a disk under the volume is missing",
                                      .volume = v,
                                      .pool = pool,
                                      .volume_name = volume };
        else if (v->size > ROUND_UP(size, MAX(p->extent_size, (uint64_t) 1))) {
                /* Shrinking would destroy data; the volume stays as it is and says so. */
                snprintf(msg, sizeof(msg),
                         "the volume has %" PRIu64 " bytes; shrinking to %" PRIu64 " is refused", v->size,
                         size);
                st.reason = "ShrinkRefused";
                st.message = msg;
        }
        return replica_write_status(rc, obj, &st);
}

static int replica_on_defer(sd_event_source *s, void *userdata) {
        ReplicaController *rc = userdata;
        HashmapIter i = HASHMAP_ITER_INIT;
        char *name = NULL;
        _cleanup_json_ cJSON *obj = NULL;
        int r;

        (void) s;
        if (rc->busy || !storage_snapshot(rc->storage))
                return 0;
        while (!rc->busy && hashmap_iterate(rc->queue, &i, (void **) &name, NULL)) {
                hashmap_remove(rc->queue, name);
                r = kube_cache_get(informer_cache(rc->informer), NULL, name, &obj);
                if (r <= 0) {
                        free(name);
                        continue;
                }
                rc->busy = name;
                r = replica_reconcile(rc, obj);
                cJSON_Delete(obj);
                obj = NULL;
                if (r < 0)
                        log_warning_errno(r, "Replica %s: %m", name);
                if (r <= 0)
                        rc->busy = mfree(rc->busy);
                i = HASHMAP_ITER_INIT;
        }
        return 0;
}

static void replica_on_object(Informer *inf, const cJSON *obj, void *userdata) {
        (void) inf;
        replica_enqueue(userdata,
                        json_get_string(cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "name"));
}

static void replica_on_object_updated(Informer *inf, const cJSON *old, const cJSON *obj, void *userdata) {
        (void) old;
        replica_on_object(inf, obj, userdata);
}

static void replica_on_object_deleted(Informer *inf, const cJSON *obj, void *userdata) {
        ReplicaController *rc = userdata;
        const char *name = json_get_string(cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "name");
        ReplicaFailure *f = name ? hashmap_remove(rc->failures, name) : NULL;

        (void) inf;
        replica_failure_free(f);
}

static int replica_enqueue_json(const char *key, const char *rv, const char *json, void *userdata) {
        (void) rv, (void) json;
        replica_enqueue(userdata, key);
        return 0;
}

void replica_controller_storage_changed(ReplicaController *rc) {
        (void) kube_cache_foreach_json(informer_cache(rc->informer), replica_enqueue_json, rc);
}

static int replica_on_api_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s, (void) usec;
        replica_controller_storage_changed(userdata);
        return 0;
}

int replica_controller_new(KubeClient *client, Storage *storage, EventRecorder *events,
                           const char *node_name, ReplicaController **ret) {
        _cleanup_(replica_controller_freep) ReplicaController *rc = NULL;
        static const InformerHandlers handlers = {
                .added = replica_on_object,
                .updated = replica_on_object_updated,
                .deleted = replica_on_object_deleted,
        };
        int r;

        rc = calloc(1, sizeof(*rc));
        if (!rc)
                return -ENOMEM;
        rc->client = client;
        rc->storage = storage;
        rc->events = events;
        rc->node = strdup(node_name);
        if (!rc->node || asprintf(&rc->selector, "spec.nodeName=%s", node_name) < 0)
                return -ENOMEM;
        r = hashmap_new(&rc->queue);
        if (r >= 0)
                r = hashmap_new(&rc->failures);
        if (r < 0)
                return r;
        r = sd_event_add_time(kube_client_event(client), &rc->retry_timer, CLOCK_MONOTONIC, USEC_INFINITY, 0,
                              replica_on_retry, rc);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(rc->retry_timer, "replica-retry");
        r = sd_event_add_time(kube_client_event(client), &rc->api_retry, CLOCK_MONOTONIC, USEC_INFINITY, 0,
                              replica_on_api_retry, rc);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(rc->api_retry, "replica-api-retry");
        /* Only this node's replicas: the API server filters them (a selectable field of the CRD). */
        r = informer_new(client,
                         &(InformerConfig){ .name = "localvolumereplicas",
                                            .path = REPLICA_PATH,
                                            .field_selector = rc->selector },
                         &handlers, rc, &rc->informer);
        if (r < 0)
                return r;
        r = sd_event_add_defer(kube_client_event(client), &rc->defer, replica_on_defer, rc);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(rc->defer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(rc->defer, "replica-queue");
        *ret = TAKE_PTR(rc);
        return 0;
}

static void free_name(void *p) {
        free(p);
}

ReplicaController *replica_controller_free(ReplicaController *rc) {
        if (!rc)
                return NULL;
        storage_forget_callbacks(rc->storage, rc);
        kube_request_cancel(rc->request);
        kube_update_cancel(rc->update);
        informer_free(rc->informer);
        sd_event_source_disable_unref(rc->defer);
        sd_event_source_disable_unref(rc->retry_timer);
        sd_event_source_disable_unref(rc->api_retry);
        hashmap_free_with(rc->queue, free_name);
        hashmap_free_with(rc->failures, replica_failure_free);
        free(rc->busy);
        free(rc->node);
        free(rc->selector);
        free(rc);
        return NULL;
}

int replica_controller_start(ReplicaController *rc) {
        return informer_start(rc->informer);
}

/* ---- metrics (read-only) ------------------------------------------------------------------- */

int replica_controller_count_states(ReplicaController *rc, const char *const *states, size_t n,
                                    unsigned *counts) {
        return informer_count_states(rc->informer, states, n, counts);
}
