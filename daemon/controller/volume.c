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
#define VOLUME_FINALIZER "hwameistor.io/hwameid-volume-protect"

enum {
        INF_VOLUMES,
        INF_REPLICAS,
        INF_NODES,
        INF_MIGRATES,
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

static int create_replica(VolumeController *vc, const cJSON *lv, const cJSON *replicas, size_t have) {
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
        _cleanup_json_ cJSON *nodes = pass_controller_snapshot(vc->pc, INF_NODES);
        const cJSON *lsn;

        if (!nodes)
                return -ENOMEM;
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

static int vc_volume(VolumeController *vc, const cJSON *lv, const cJSON *replicas, const cJSON *migrates) {
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
        if (migrating(migrates, volume))
                return 0; /* the migrate controller owns it meanwhile */
        if (have < want)
                return create_replica(vc, lv, replicas, have);

        /* accessibility.nodes names where the replicas are, when nobody said. */
        if (cJSON_GetArraySize(json_field(spec, "accessibility", "nodes")) == 0) {
                _cleanup_json_ cJSON *body = cJSON_CreateObject();
                cJSON *nodes = body ? cJSON_AddArrayToObject(
                                              cJSON_AddObjectToObject(cJSON_AddObjectToObject(body, "spec"),
                                                                      "accessibility"),
                                              "nodes")
                                    : NULL;
                if (!nodes || asprintf(&path, VOLUME_PATH "/%s", volume) < 0)
                        return -ENOMEM;
                cJSON_ArrayForEach(r, mine) cJSON_AddItemToArray(
                        nodes, cJSON_CreateString(json_get_string(json_field(r, "spec", NULL), "nodeName")));
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
                             *migrates = pass_controller_snapshot(pc, INF_MIGRATES);
        const cJSON *lv;
        int r;

        if (!volumes || !replicas || !migrates)
                return -ENOMEM;
        cJSON_ArrayForEach(lv, volumes) {
                LOG_CONTEXT_PUSH_FIELD("HWAMEID_VOLUME", json_name(lv));
                r = vc_volume(vc, lv, replicas, migrates);
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
