/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../basic/json-util.h"
#include "../basic/string-util.h"
#include "../informer/informer.h"
#include "../log/log.h"
#include "pass.h"
#include "volume.h"

#define API              "/apis/hwameistor.io/v1alpha1"
#define VOLUME_PATH      API "/localvolumes"
#define REPLICA_PATH     API "/localvolumereplicas"
#define LSN_PATH         API "/localstoragenodes"
#define MIGRATE_PATH     API "/localvolumemigrates"
#define GROUP_PATH       API "/localvolumegroups"
#define VOLUME_FINALIZER "hwameistor.io/hwameid-volume-protect"

enum {
        INF_VOLUMES,
        INF_REPLICAS,
        INF_NODES,
        INF_MIGRATES,
        INF_GROUPS,
        _INF_MAX,
};

struct VolumeController {
        EventRecorder *events;
        PassController *pc;
};

static bool has_finalizer(const cJSON *o) {
        const cJSON *i;
        cJSON_ArrayForEach(i,
                           json_field(o, "metadata", "finalizers")) if (cJSON_IsString(i) &&
                                                                        streq(i->valuestring,
                                                                              VOLUME_FINALIZER)) return true;
        return false;
}

static bool migrating(const cJSON *migrates, const char *volume) {
        const cJSON *m, *v;

        cJSON_ArrayForEach(m, migrates) {
                const char *state = json_get_string(json_field(m, "status", NULL), "state");
                if (streq_ptr(state, "Completed") || streq_ptr(state, "Aborted"))
                        continue;
                if (streq_ptr(json_get_string(json_field(m, "spec", NULL), "volumeName"), volume))
                        return true;
                cJSON_ArrayForEach(v, json_field(json_field(m, "status", NULL), "volumes",
                                                 NULL)) if (cJSON_IsString(v) &&
                                                            streq(v->valuestring, volume)) return true;
        }
        return false;
}

static int vc_send(VolumeController *vc, KubeMethod method, const char *path, const cJSON *body) {
        return pass_controller_send(vc->pc, method, path, body);
}

/* The volume's finalizers with ours added or removed. */
static int set_finalizer(VolumeController *vc, const cJSON *lv, bool add) {
        _cleanup_json_ cJSON *body = cJSON_CreateObject();
        _cleanup_free_ char *path = NULL;
        cJSON *fin = body ? cJSON_AddArrayToObject(cJSON_AddObjectToObject(body, "metadata"), "finalizers")
                          : NULL;
        const cJSON *i;

        if (!fin || asprintf(&path, VOLUME_PATH "/%s", json_name(lv)) < 0)
                return -ENOMEM;
        cJSON_ArrayForEach(
                i, json_field(lv, "metadata", "finalizers")) if (cJSON_IsString(i) &&
                                                                 !streq(i->valuestring, VOLUME_FINALIZER))
                cJSON_AddItemToArray(fin, cJSON_CreateString(i->valuestring));
        if (add)
                cJSON_AddItemToArray(fin, cJSON_CreateString(VOLUME_FINALIZER));
        return vc_send(vc, KUBE_PATCH_MERGE, path, body);
}

typedef struct Choice {
        const cJSON *replicas;
        const char *volume, *pool;
        uint64_t need, best_free;
        const cJSON *preferred;
        int best_rank;
        char best[256];
} Choice;

static bool holds_replica(const cJSON *replicas, const char *volume, const char *node) {
        const cJSON *r;
        cJSON_ArrayForEach(
                r, replicas) if (streq_ptr(json_get_string(json_field(r, "spec", NULL), "volumeName"),
                                           volume) &&
                                 streq_ptr(json_get_string(json_field(r, "spec", NULL), "nodeName"),
                                           node)) return true;
        return false;
}

static int consider(const cJSON *lsn, void *userdata) {
        Choice *q = userdata;
        const char *node = json_name(lsn);
        uint64_t free_bytes = 0;
        int rank = INT32_MAX, i = 0;
        const cJSON *p;

        if (!node || !streq_ptr(json_get_string(json_field(lsn, "status", NULL), "state"), "Ready") ||
            holds_replica(q->replicas, q->volume, node))
                return 0;
        if (json_get_u64(json_field(json_field(lsn, "status", "pools"), q->pool, NULL), "freeCapacityBytes",
                         &free_bytes) < 0 ||
            free_bytes < q->need)
                return 0;
        cJSON_ArrayForEach(p, q->preferred) {
                if (cJSON_IsString(p) && streq(p->valuestring, node))
                        rank = i;
                i++;
        }
        if (rank < q->best_rank || (rank == q->best_rank && free_bytes > q->best_free)) {
                snprintf(q->best, sizeof(q->best), "%s", node);
                q->best_rank = rank;
                q->best_free = free_bytes;
        }
        return 0;
}

static int create_replica(VolumeController *vc, const cJSON *lv, const cJSON *replicas, const cJSON *nodes,
                          size_t have) {
        const cJSON *spec = json_field(lv, "spec", NULL);
        const char *volume = json_name(lv), *uid = json_get_string(json_field(lv, "metadata", NULL), "uid");
        Choice q = { .replicas = replicas,
                     .volume = volume,
                     .best_rank = INT32_MAX,
                     .preferred = json_field(spec, "accessibility", "nodes") };
        _cleanup_json_ cJSON *body = cJSON_CreateObject();
        cJSON *meta, *rspec;
        char name[300];

        q.pool = json_get_string(spec, "poolName");
        if (!q.pool || json_get_u64(spec, "requiredCapacityBytes", &q.need) < 0 || !uid || strlen(uid) < 5)
                return 0;
        const cJSON *lsn;

        cJSON_ArrayForEach(lsn, nodes)(void) consider(lsn, &q);
        if (!q.best[0]) {
                log_ratelimit(LOG_WARNING, 10 * USEC_PER_MINUTE, 1,
                              "Volume %s: no Ready node has %" PRIu64
                              " bytes free in %s for another replica.",
                              volume, q.need, q.pool);
                return 0;
        }
        /* A name that follows from the volume and the replica's index: doing this twice makes one. */
        snprintf(name, sizeof(name), "%.240s-%.5s%zu", volume, uid, have);
        meta = body ? cJSON_AddObjectToObject(body, "metadata") : NULL;
        rspec = body ? cJSON_AddObjectToObject(body, "spec") : NULL;
        if (!meta || !rspec || !cJSON_AddStringToObject(body, "apiVersion", "hwameistor.io/v1alpha1") ||
            !cJSON_AddStringToObject(body, "kind", "LocalVolumeReplica") ||
            !cJSON_AddStringToObject(meta, "name", name) ||
            !cJSON_AddStringToObject(rspec, "volumeName", volume) ||
            !cJSON_AddStringToObject(rspec, "poolName", q.pool) ||
            !cJSON_AddStringToObject(rspec, "nodeName", q.best) ||
            !cJSON_AddNumberToObject(rspec, "requiredCapacityBytes", (double) q.need))
                return -ENOMEM;
        log_info("Volume %s: placing a replica on %s.", volume, q.best);
        event_recorder_emit(vc->events, "hwameistor.io/v1alpha1", "LocalVolume", lv, EVENT_NORMAL,
                            "ReplicaPlaced", "Replica %s on %s", name, q.best);
        return vc_send(vc, KUBE_POST, REPLICA_PATH, body);
}

/* What the volume's status should say, from its replicas. */
static cJSON *desired_status(const cJSON *lv, const cJSON *mine, uint64_t want) {
        cJSON *st = cJSON_CreateObject(), *names;
        const cJSON *r;
        uint64_t allocated = UINT64_MAX;
        size_t n = 0;
        bool all_ready = true, broken = false;

        names = st ? cJSON_AddArrayToObject(st, "replicas") : NULL;
        if (!names) {
                cJSON_Delete(st);
                return NULL;
        }
        cJSON_ArrayForEach(r, mine) {
                const char *state = json_get_string(json_field(r, "status", NULL), "state");
                uint64_t a = 0;

                cJSON_AddItemToArray(names, cJSON_CreateString(json_name(r)));
                n++;
                all_ready = all_ready && streq_ptr(state, "Ready");
                broken = broken || streq_ptr(state, "NotReady");
                if (json_get_u64(json_field(r, "status", NULL), "allocatedCapacityBytes", &a) >= 0)
                        allocated = MIN(allocated, a);
        }
        cJSON_AddStringToObject(st, "state",
                                broken                     ? "NotReady"
                                : (n >= want && all_ready) ? "Ready"
                                                           : "Creating");
        if (allocated != UINT64_MAX)
                cJSON_AddNumberToObject(st, "allocatedCapacityBytes", (double) allocated);
        (void) lv;
        return st;
}

/* Whether the fields of want equal those in have. */
static bool status_has(const cJSON *have, const cJSON *want) {
        const cJSON *w;
        cJSON_ArrayForEach(w, want) if (!cJSON_Compare(w, cJSON_GetObjectItemCaseSensitive(have, w->string),
                                                       true)) return false;
        return true;
}

/* ---- spec.config: HwameiStor's VolumeConfig, kept from the replica objects --------------------- */

static const cJSON *find_named(const cJSON *list, const char *name) {
        const cJSON *o;
        cJSON_ArrayForEach(o, list) if (streq_ptr(json_name(o), name)) return o;
        return NULL;
}

/* The id the current config gives host, or 0 (ids start at 1). */
static uint64_t config_id(const cJSON *config, const char *host) {
        const cJSON *e;
        uint64_t id;
        cJSON_ArrayForEach(e, json_field(config, "replicas",
                                         NULL)) if (streq_ptr(json_get_string(e, "hostname"), host) &&
                                                    json_get_u64(e, "id", &id) >= 0) return id;
        return 0;
}

/* Inserts a copy of s into the string array a, keeping it sorted. */
static int insert_sorted(cJSON *a, const char *s) {
        cJSON *item = cJSON_CreateString(s), *i;
        int at = 0;

        if (!item)
                return -ENOMEM;
        cJSON_ArrayForEach(i, a) {
                if (strcmp(i->valuestring, s) > 0)
                        break;
                at++;
        }
        if (!cJSON_InsertItemInArray(a, at, item)) {
                cJSON_Delete(item);
                return -ENOMEM;
        }
        return 0;
}

/*
 * What spec.config should be: one entry per replica object (its node, that node's storageIP), ids
 * kept per hostname and new ones after the highest, the primary being the replica where the
 * volume is published (else the lowest id). resourceID is -1: no replica set is a DRBD resource
 * here. The version is left out; the caller bumps it when anything else differs.
 */
static cJSON *desired_config(const cJSON *lv, const cJSON *mine, const cJSON *nodes) {
        const cJSON *spec = json_field(lv, "spec", NULL), *cur = json_field(spec, "config", NULL), *r;
        const char *published = json_get_string(json_field(lv, "status", NULL), "publishedNode");
        _cleanup_json_ cJSON *c = cJSON_CreateObject();
        cJSON *list, *e;
        uint64_t next = 0, id, lowest = UINT64_MAX;
        uint64_t need = 0;
        bool all_ready = true, primary_found = false;

        list = c ? cJSON_AddArrayToObject(c, "replicas") : NULL;
        if (!list)
                return NULL;
        cJSON_ArrayForEach(e, json_field(cur, "replicas", NULL)) if (json_get_u64(e, "id", &id) >= 0)
                next = MAX(next, id);
        cJSON_ArrayForEach(r, mine) {
                const char *host = json_get_string(json_field(r, "spec", NULL), "nodeName");
                const char *ip = json_get_string(json_field(find_named(nodes, host), "spec", NULL),
                                                 "storageIP");

                if (!host)
                        continue;
                all_ready = all_ready &&
                            streq_ptr(json_get_string(json_field(r, "status", NULL), "state"), "Ready");
                id = config_id(cur, host);
                if (id == 0)
                        id = ++next;
                lowest = MIN(lowest, id);
                e = cJSON_CreateObject();
                if (!e)
                        return NULL;
                cJSON_AddItemToArray(list, e);
                if (!cJSON_AddNumberToObject(e, "id", (double) id) ||
                    !cJSON_AddStringToObject(e, "hostname", host) ||
                    !cJSON_AddStringToObject(e, "ip", strempty(ip)) ||
                    !cJSON_AddBoolToObject(e, "primary", streq_ptr(host, published)))
                        return NULL;
                primary_found = primary_found || streq_ptr(host, published);
        }
        if (!primary_found)
                cJSON_ArrayForEach(e, list) if (json_get_u64(e, "id", &id) >= 0 && id == lowest)
                        cJSON_ReplaceItemInObjectCaseSensitive(e, "primary", cJSON_CreateTrue());
        (void) json_get_u64(spec, "requiredCapacityBytes", &need);
        if (!cJSON_AddStringToObject(c, "volumeName", json_name(lv)) ||
            !cJSON_AddNumberToObject(c, "requiredCapacityBytes", (double) need) ||
            !cJSON_AddBoolToObject(c, "convertible", cJSON_IsTrue(json_field(spec, "convertible", NULL))) ||
            !cJSON_AddNumberToObject(c, "resourceID", -1) ||
            !cJSON_AddBoolToObject(c, "readyToInitialize", true) ||
            /* once every replica has been Ready, the volume stays initialised */
            !cJSON_AddBoolToObject(c, "initialized",
                                   cJSON_IsTrue(json_field(cur, "initialized", NULL)) ||
                                           (all_ready && cJSON_GetArraySize(list) > 0)))
                return NULL;
        return TAKE_PTR(c);
}

/* Writes spec.config when it differs from what the replicas say (1), or returns 0. */
static int sync_config(VolumeController *vc, const cJSON *lv, const cJSON *mine, const cJSON *nodes) {
        const cJSON *cur = json_field(json_field(lv, "spec", NULL), "config", NULL);
        _cleanup_json_ cJSON *want = desired_config(lv, mine, nodes), *body = NULL;
        _cleanup_free_ char *path = NULL;
        uint64_t version = 0;
        const cJSON *w;
        bool same = cur != NULL;

        if (!want)
                return -ENOMEM;
        cJSON_ArrayForEach(w, want)
                same = same && cJSON_Compare(w, cJSON_GetObjectItemCaseSensitive(cur, w->string), true);
        if (same)
                return 0;
        (void) json_get_u64(cur, "version", &version);
        body = cJSON_CreateObject();
        if (!body || !cJSON_AddNumberToObject(want, "version", (double) (version + 1)) ||
            asprintf(&path, VOLUME_PATH "/%s", json_name(lv)) < 0)
                return -ENOMEM;
        cJSON_AddItemToObject(cJSON_AddObjectToObject(body, "spec"), "config", TAKE_PTR(want));
        log_debug("Volume %s: spec.config version %" PRIu64 ".", json_name(lv), version + 1);
        return vc_send(vc, KUBE_PATCH_MERGE, path, body);
}

/* A LocalVolumeGroup's accessibility.nodes: where its volumes' replicas are, sorted. */
static int sync_group(VolumeController *vc, const cJSON *lvg, const cJSON *replicas) {
        const cJSON *cur = json_field(json_field(lvg, "spec", NULL), "accessibility", "nodes"), *v, *r;
        _cleanup_json_ cJSON *body = cJSON_CreateObject();
        _cleanup_free_ char *path = NULL;
        cJSON *want;

        if (json_field(lvg, "metadata", "deletionTimestamp"))
                return 0;
        want = body ? cJSON_AddArrayToObject(cJSON_AddObjectToObject(cJSON_AddObjectToObject(body, "spec"),
                                                                     "accessibility"),
                                             "nodes")
                    : NULL;
        if (!want)
                return -ENOMEM;
        cJSON_ArrayForEach(v, json_field(json_field(lvg, "spec", NULL), "volumes", NULL)) {
                const char *volume = json_get_string(v, "localvolume");
                cJSON_ArrayForEach(r, replicas) {
                        const cJSON *rs = json_field(r, "spec", NULL);
                        const char *host = json_get_string(rs, "nodeName");
                        const cJSON *h;
                        bool have = false;

                        if (!host || !streq_ptr(json_get_string(rs, "volumeName"), volume) ||
                            json_field(r, "metadata", "deletionTimestamp"))
                                continue;
                        cJSON_ArrayForEach(h, want) have = have || streq(h->valuestring, host);
                        if (!have && insert_sorted(want, host) < 0)
                                return -ENOMEM;
                }
        }
        if (cJSON_GetArraySize(want) == 0 || cJSON_Compare(cur, want, true))
                return 0; /* a group with no replicas yet keeps what it says */
        if (asprintf(&path, GROUP_PATH "/%s", json_name(lvg)) < 0)
                return -ENOMEM;
        log_debug("Group %s: accessible from %d node(s).", json_name(lvg), cJSON_GetArraySize(want));
        return vc_send(vc, KUBE_PATCH_MERGE, path, body);
}

static int vc_volume(VolumeController *vc, const cJSON *lv, const cJSON *replicas, const cJSON *migrates,
                     const cJSON *nodes) {
        const cJSON *spec = json_field(lv, "spec", NULL), *r;
        const char *volume = json_name(lv);
        bool deleting = json_field(lv, "metadata", "deletionTimestamp") != NULL ||
                        cJSON_IsTrue(json_field(spec, "delete", NULL));
        _cleanup_json_ cJSON *mine = cJSON_CreateArray(), *st = NULL;
        uint64_t want = 1;
        size_t have = 0;
        _cleanup_free_ char *path = NULL;

        if (!mine || !volume)
                return -ENOMEM;
        (void) json_get_u64(spec, "replicaNumber", &want);
        want = CLAMP(want, (uint64_t) 1, (uint64_t) 3);
        cJSON_ArrayForEach(
                r, replicas) if (streq_ptr(json_get_string(json_field(r, "spec", NULL), "volumeName"),
                                           volume) &&
                                 !json_field(r, "metadata", "deletionTimestamp")) {
                cJSON_AddItemToArray(mine, cJSON_Duplicate(r, true));
                have++;
        }

        if (deleting) {
                _cleanup_json_ cJSON *body = NULL;
                if (have > 0) {
                        if (asprintf(&path, REPLICA_PATH "/%s", json_name(cJSON_GetArrayItem(mine, 0))) < 0)
                                return -ENOMEM;
                        log_info("Volume %s is being deleted: removing replica %s.", volume,
                                 json_name(cJSON_GetArrayItem(mine, 0)));
                        return vc_send(vc, KUBE_DELETE, path, NULL);
                }
                cJSON_ArrayForEach(r, replicas) if (streq_ptr(json_get_string(json_field(r, "spec", NULL),
                                                                              "volumeName"),
                                                              volume)) return 0; /* still going */
                if (has_finalizer(lv))
                        return set_finalizer(vc, lv, false);
                if (!streq_ptr(json_get_string(json_field(lv, "status", NULL), "state"), "Deleted")) {
                        body = cJSON_CreateObject();
                        if (!body ||
                            !cJSON_AddStringToObject(cJSON_AddObjectToObject(body, "status"), "state",
                                                     "Deleted") ||
                            asprintf(&path, VOLUME_PATH "/%s/status", volume) < 0)
                                return -ENOMEM;
                        return vc_send(vc, KUBE_PATCH_MERGE, path, body);
                }
                return 0;
        }
        if (!has_finalizer(lv))
                return set_finalizer(vc, lv, true);
        if (have > 0) {
                int k = sync_config(vc, lv, mine, nodes);
                if (k != 0)
                        return k;
        }
        if (migrating(migrates, volume))
                return 0; /* the migrate controller owns placement meanwhile */
        if (have < want)
                return create_replica(vc, lv, replicas, nodes, have);

        /* accessibility.nodes names where the replicas are, when nobody said. */
        if (cJSON_GetArraySize(json_field(spec, "accessibility", "nodes")) == 0) {
                _cleanup_json_ cJSON *body = cJSON_CreateObject();
                cJSON *acc = body ? cJSON_AddArrayToObject(
                                            cJSON_AddObjectToObject(cJSON_AddObjectToObject(body, "spec"),
                                                                    "accessibility"),
                                            "nodes")
                                  : NULL;
                if (!acc || asprintf(&path, VOLUME_PATH "/%s", volume) < 0)
                        return -ENOMEM;
                cJSON_ArrayForEach(r, mine) cJSON_AddItemToArray(
                        acc, cJSON_CreateString(json_get_string(json_field(r, "spec", NULL), "nodeName")));
                return vc_send(vc, KUBE_PATCH_MERGE, path, body);
        }

        st = desired_status(lv, mine, want);
        if (!st)
                return -ENOMEM;
        if (!status_has(json_field(lv, "status", NULL), st)) {
                _cleanup_json_ cJSON *body = cJSON_CreateObject();
                if (!body || asprintf(&path, VOLUME_PATH "/%s/status", volume) < 0)
                        return -ENOMEM;
                cJSON_AddItemToObject(body, "status", TAKE_PTR(st));
                return vc_send(vc, KUBE_PATCH_MERGE, path, body);
        }
        return 0;
}

static int vc_pass(PassController *pc, void *userdata) {
        VolumeController *vc = userdata;
        _cleanup_json_ cJSON *volumes = pass_controller_snapshot(pc, INF_VOLUMES),
                             *replicas = pass_controller_snapshot(pc, INF_REPLICAS),
                             *migrates = pass_controller_snapshot(pc, INF_MIGRATES),
                             *nodes = pass_controller_snapshot(pc, INF_NODES),
                             *groups = pass_controller_snapshot(pc, INF_GROUPS);
        const cJSON *lv, *lvg;
        int r;

        if (!volumes || !replicas || !migrates || !nodes || !groups)
                return -ENOMEM;
        cJSON_ArrayForEach(lv, volumes) {
                LOG_CONTEXT_PUSH_FIELD("HWAMEID_VOLUME", json_name(lv));
                r = vc_volume(vc, lv, replicas, migrates, nodes);
                if (r != 0)
                        return r;
        }
        cJSON_ArrayForEach(lvg, groups) {
                r = sync_group(vc, lvg, replicas);
                if (r != 0)
                        return r;
        }
        return 0;
}

int volume_controller_new(KubeClient *client, EventRecorder *events, VolumeController **ret) {
        static const InformerConfig configs[_INF_MAX] = {
                [INF_VOLUMES] = { .name = "volume-localvolumes", .path = VOLUME_PATH },
                [INF_REPLICAS] = { .name = "volume-localvolumereplicas", .path = REPLICA_PATH },
                [INF_NODES] = { .name = "volume-localstoragenodes", .path = LSN_PATH },
                [INF_MIGRATES] = { .name = "volume-localvolumemigrates", .path = MIGRATE_PATH },
                [INF_GROUPS] = { .name = "volume-localvolumegroups", .path = GROUP_PATH },
        };
        _cleanup_(volume_controller_freep) VolumeController *vc = NULL;
        int r;

        vc = calloc(1, sizeof(*vc));
        if (!vc)
                return -ENOMEM;
        vc->events = events;
        r = pass_controller_new(client, "Volume controller", configs, _INF_MAX, vc_pass, vc, &vc->pc);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(vc);
        return 0;
}

VolumeController *volume_controller_free(VolumeController *vc) {
        if (!vc)
                return NULL;
        pass_controller_free(vc->pc);
        free(vc);
        return NULL;
}

int volume_controller_start(VolumeController *vc) {
        return pass_controller_start(vc->pc);
}
