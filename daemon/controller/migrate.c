/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../basic/hashmap.h"
#include "../basic/json-util.h"
#include "../basic/string-util.h"
#include "../informer/informer.h"
#include "../log/log.h"
#include "../node/sync.h"
#include "migrate.h"

#define API             "/apis/hwameistor.io/v1alpha1"
#define MIGRATE_PATH    API "/localvolumemigrates"
#define VOLUME_PATH     API "/localvolumes"
#define REPLICA_PATH    API "/localvolumereplicas"
#define LSN_PATH        API "/localstoragenodes"
#define GROUP_PATH      API "/localvolumegroups"
#define PARENT_LABEL    "hwameistor.io/hwameid-parent"
#define RESYNC_INTERVAL (5 * USEC_PER_SEC)
#define RETRY_DELAY     (2 * USEC_PER_SEC)

struct MigrateController {
        KubeClient *client;
        EventRecorder *events;
        MigrateOptions options;
        Informer *migrates, *volumes, *replicas, *nodes, *groups;
        Hashmap *queue; /* name → name (owned; the same strings as in fifo) */
        char **fifo;    /* the queue's order: every migration gets its turn */
        size_t n_fifo, fifo_cap;
        /* name → the resourceVersion a status write was based on: until the cache shows a newer
         * version of that migration, it is not looked at again (its cached state is stale). */
        Hashmap *stale;
        char *busy;
        KubeRequest *request;
        sd_event_source *defer, *resync;
};

/* ---- small helpers ------------------------------------------------------------------------- */

static const char *annotation(const cJSON *o, const char *key) {
        return json_get_string(json_field(o, "metadata", "annotations"), key);
}

static cJSON *annotation_json(const cJSON *o, const char *key) {
        const char *s = annotation(o, key);
        return s ? cJSON_Parse(s) : NULL;
}

static cJSON *cached(Informer *inf, const char *name) {
        cJSON *o = NULL;
        return name && kube_cache_get(informer_cache(inf), NULL, name, &o) > 0 ? o : NULL;
}

typedef struct ReplicaQuery {
        const char *volume, *node;
        cJSON *found;
} ReplicaQuery;

static int replica_match(const cJSON *o, void *userdata) {
        ReplicaQuery *q = userdata;
        const cJSON *spec = json_field(o, "spec", NULL);

        if (!q->found && streq_ptr(json_get_string(spec, "volumeName"), q->volume) &&
            streq_ptr(json_get_string(spec, "nodeName"), q->node) &&
            !json_field(o, "metadata", "deletionTimestamp"))
                q->found = cJSON_Duplicate(o, true);
        return 0;
}

/* The replica of volume on node (a parsed copy), or NULL. */
static cJSON *find_replica(MigrateController *mc, const char *volume, const char *node) {
        ReplicaQuery q = { .volume = volume, .node = node };
        (void) kube_cache_foreach(informer_cache(mc->replicas), replica_match, &q);
        return q.found;
}

static int holder_add(const cJSON *o, void *userdata) {
        const cJSON *spec = json_field(o, "spec", NULL);
        ReplicaQuery *q = userdata;

        if (streq_ptr(json_get_string(spec, "volumeName"), q->volume) &&
            !json_field(o, "metadata", "deletionTimestamp") && json_get_string(spec, "nodeName"))
                cJSON_AddItemToArray(q->found, cJSON_CreateString(json_get_string(spec, "nodeName")));
        return 0;
}

/* The nodes holding a replica of volume (a JSON array of names), in one pass over the cache. */
static cJSON *replica_holders(MigrateController *mc, const char *volume) {
        ReplicaQuery q = { .volume = volume, .found = cJSON_CreateArray() };

        if (q.found)
                (void) kube_cache_foreach(informer_cache(mc->replicas), holder_add, &q);
        return q.found;
}

static bool json_array_has_string(const cJSON *a, const char *s) {
        const cJSON *i;
        cJSON_ArrayForEach(i, a) if (cJSON_IsString(i) && streq(i->valuestring, s)) return true;
        return false;
}

static void now_rfc3339(char buf[static 32]) {
        time_t t = (time_t) (now(CLOCK_REALTIME) / USEC_PER_SEC);
        struct tm tm;
        strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
}

/* ---- the queue and writes ------------------------------------------------------------------ */

static void mc_enqueue(MigrateController *mc, const char *name) {
        char *copy;

        if (!name)
                return;
        (void) sd_event_source_set_enabled(mc->defer, SD_EVENT_ONESHOT);
        if (hashmap_contains(mc->queue, name))
                return;
        if (mc->n_fifo == mc->fifo_cap) {
                size_t cap = MAX(mc->fifo_cap * 2, (size_t) 16);
                char **grown = realloc(mc->fifo, cap * sizeof(char *));
                if (!grown)
                        return;
                mc->fifo = grown;
                mc->fifo_cap = cap;
        }
        copy = strdup(name);
        if (!copy || hashmap_put(mc->queue, copy, copy) < 0) {
                free(copy);
                return;
        }
        mc->fifo[mc->n_fifo++] = copy;
}

static int enqueue_json(const char *key, const char *rv, const char *json, void *userdata) {
        (void) rv, (void) json;
        mc_enqueue(userdata, key);
        return 0;
}

static void mc_enqueue_all(MigrateController *mc) {
        (void) kube_cache_foreach_json(informer_cache(mc->migrates), enqueue_json, mc);
}

static void stale_forget(MigrateController *mc, const char *name);

static void mc_on_written(KubeRequest *req, KubeResponse *resp, void *userdata) {
        MigrateController *mc = userdata;
        _cleanup_free_ char *name = TAKE_PTR(mc->busy);

        (void) req;
        mc->request = NULL;
        if (resp->error < 0 && resp->error != -ENOENT && resp->error != -EEXIST) {
                log_warning("Migration %s: writing to the API failed: %s; retrying.", strna(name),
                            resp->message);
                if (name)
                        stale_forget(mc, name); /* nothing changed: the cache is not stale */
                (void) sd_event_source_set_time_relative(mc->resync, RETRY_DELAY);
                (void) sd_event_source_set_enabled(mc->resync, SD_EVENT_ON);
                return;
        }
        /* A write that changed nothing leaves the resourceVersion as it was: nothing to wait for. */
        if (name && streq_ptr(hashmap_get(mc->stale, name),
                              json_get_string(cJSON_GetObjectItemCaseSensitive(resp->body, "metadata"),
                                              "resourceVersion")))
                stale_forget(mc, name);
        mc_enqueue(mc, name); /* look again: the next step may be due */
}

static int mc_send(MigrateController *mc, KubeMethod method, const char *path, const cJSON *body) {
        int r = kube_request(mc->client, method, path, body, mc_on_written, mc, &mc->request);
        return r < 0 ? r : 1;
}

static void stale_forget(MigrateController *mc, const char *name) {
        const char *key = NULL;
        char *rv = hashmap_get2(mc->stale, name, &key);

        if (!rv)
                return;
        hashmap_remove(mc->stale, name);
        free((char *) key);
        free(rv);
}

static void stale_remember(MigrateController *mc, const char *name) {
        const char *rv = kube_cache_get_rv(informer_cache(mc->migrates), NULL, name);
        char *k, *v;

        stale_forget(mc, name);
        k = strdup(name);
        v = rv ? strdup(rv) : NULL;
        if (!k || !v || hashmap_put(mc->stale, k, v) < 0) {
                free(k);
                free(v);
        }
}

/* Merge-patches the migration's status with the fields of st (consumed). */
static int set_status(MigrateController *mc, const char *name, cJSON *st) {
        _cleanup_json_ cJSON *body = cJSON_CreateObject();
        _cleanup_free_ char *path = NULL;
        int r;

        if (!body || !st || asprintf(&path, MIGRATE_PATH "/%s/status", name) < 0) {
                cJSON_Delete(st);
                return -ENOMEM;
        }
        cJSON_AddItemToObject(body, "status", st);
        r = mc_send(mc, KUBE_PATCH_MERGE, path, body);
        if (r > 0)
                stale_remember(mc, name);
        return r;
}

static cJSON *status_of(const char *state, const char *message) {
        cJSON *st = cJSON_CreateObject();

        if (!st)
                return NULL;
        if ((state && !cJSON_AddStringToObject(st, "state", state)) ||
            !(message ? cJSON_AddStringToObject(st, "message", message)
                      : cJSON_AddNullToObject(st, "message"))) {
                cJSON_Delete(st);
                return NULL;
        }
        return st;
}

/* Sets (value) or removes (NULL) one annotation of a replica; value_json is consumed. */
static int annotate(MigrateController *mc, const char *replica, const char *key, cJSON *value_json) {
        _cleanup_json_ cJSON *body = cJSON_CreateObject(), *value = value_json;
        _cleanup_free_ char *path = NULL, *text = value ? cJSON_PrintUnformatted(value) : NULL;
        cJSON *ann;

        ann = body ? cJSON_AddObjectToObject(cJSON_AddObjectToObject(body, "metadata"), "annotations")
                   : NULL;
        if (!ann || (value && !text) || asprintf(&path, REPLICA_PATH "/%s", replica) < 0)
                return -ENOMEM;
        if (!(text ? cJSON_AddStringToObject(ann, key, text) : cJSON_AddNullToObject(ann, key)))
                return -ENOMEM;
        return mc_send(mc, KUBE_PATCH_MERGE, path, body);
}

/* Removes two annotations of a replica in one write. */
static int unannotate2(MigrateController *mc, const char *replica, const char *k1, const char *k2) {
        _cleanup_json_ cJSON *body = cJSON_CreateObject();
        _cleanup_free_ char *path = NULL;
        cJSON *ann;

        ann = body ? cJSON_AddObjectToObject(cJSON_AddObjectToObject(body, "metadata"), "annotations")
                   : NULL;
        if (!ann || !cJSON_AddNullToObject(ann, k1) || !cJSON_AddNullToObject(ann, k2) ||
            asprintf(&path, REPLICA_PATH "/%s", replica) < 0)
                return -ENOMEM;
        return mc_send(mc, KUBE_PATCH_MERGE, path, body);
}

static int delete_replica(MigrateController *mc, const char *replica) {
        _cleanup_free_ char *path = NULL;

        if (asprintf(&path, REPLICA_PATH "/%s", replica) < 0)
                return -ENOMEM;
        return mc_send(mc, KUBE_DELETE, path, NULL);
}

/* An event on the migration and, so that "kubectl describe localvolume" tells the story too, on
 * its volume. */
static void emit(MigrateController *mc, const cJSON *m, const char *type, const char *reason,
                 const char *msg) {
        _cleanup_json_ cJSON *lv = cached(mc->volumes,
                                          json_get_string(json_field(m, "spec", NULL), "volumeName"));

        event_recorder_emit(mc->events, "hwameistor.io/v1alpha1", "LocalVolumeMigrate", m, type, reason,
                            "%s", msg);
        if (lv)
                event_recorder_emit(mc->events, "hwameistor.io/v1alpha1", "LocalVolume", lv, type, reason,
                                    "Migration %s: %s", strna(json_name(m)), msg);
}

/* ---- steps ---------------------------------------------------------------------------------- */

typedef struct TargetQuery {
        const cJSON *holders; /* nodes that hold a replica of the volume already */
        const char *source, *pool, *volume;
        uint64_t need;
        const cJSON *suggested;
        char *best;
        uint64_t best_free;
        int best_rank; /* position in suggested, or INT32_MAX */
        char why[256];
} TargetQuery;

static int target_consider(const cJSON *lsn, void *userdata) {
        TargetQuery *q = userdata;
        const char *node = json_name(lsn);
        const cJSON *pool = json_field(json_field(lsn, "status", "pools"), q->pool, NULL);
        uint64_t free_bytes = 0;
        int rank = INT32_MAX, i = 0;
        const cJSON *s;

        if (!node || streq(node, q->source))
                return 0;
        cJSON_ArrayForEach(s, q->suggested) {
                if (cJSON_IsString(s) && streq(s->valuestring, node))
                        rank = i;
                i++;
        }
        if (cJSON_GetArraySize(q->suggested) > 0 && rank == INT32_MAX)
                return 0;
        if (!streq_ptr(json_get_string(json_field(lsn, "status", NULL), "state"), "Ready")) {
                snprintf(q->why, sizeof(q->why), "node %s is not Ready", node);
                return 0;
        }
        if (json_array_has_string(q->holders, node)) {
                snprintf(q->why, sizeof(q->why), "node %s holds a replica of %s already", node, q->volume);
                return 0;
        }
        if (!pool || json_get_u64(pool, "freeCapacityBytes", &free_bytes) < 0 || free_bytes < q->need) {
                snprintf(q->why, sizeof(q->why), "node %s has no room in %s", node, q->pool);
                return 0;
        }
        if (rank < q->best_rank || (rank == q->best_rank && free_bytes > q->best_free)) {
                free(q->best);
                q->best = strdup(node);
                q->best_rank = rank;
                q->best_free = free_bytes;
        }
        return 0;
}

/* Rolls back what the migration added, then records the end. */
static int rollback(MigrateController *mc, const cJSON *m, const char *message) {
        const cJSON *st = json_field(m, "status", NULL);
        const char *target = json_get_string(st, "targetReplica");
        const char *source = json_get_string(st, "sourceReplica");
        _cleanup_json_ cJSON *t = cached(mc->replicas, target), *s = cached(mc->replicas, source);

        if (s && annotation(s, PUSH_ANNOTATION))
                return annotate(mc, source, PUSH_ANNOTATION, NULL);
        if (t && !json_field(t, "metadata", "deletionTimestamp"))
                return delete_replica(mc, target);
        if (t)
                return 0; /* its node is removing it */
        log_warning("Migration %s aborted: %s", json_name(m), message);
        emit(mc, m, EVENT_WARNING, "Aborted", message);
        {
                cJSON *x = status_of("Aborted", message);
                char ts[32];
                now_rfc3339(ts);
                if (x)
                        cJSON_AddStringToObject(x, "completionTime", ts);
                return set_status(mc, json_name(m), x);
        }
}

/* ---- groups (migrateAllVols): one child migration per volume, all to one target ----------- */

/* The volumes of lv's group that have a replica on source (lv's own volume first). */
static cJSON *group_members(MigrateController *mc, const cJSON *m, const cJSON *lv, const char *volume,
                            const char *source) {
        const char *group = json_get_string(json_field(lv, "spec", NULL), "volumegroup");
        _cleanup_json_ cJSON *lvg = NULL;
        cJSON *out = cJSON_CreateArray();
        bool all = true;
        const cJSON *i;

        if (!out)
                return NULL;
        cJSON_AddItemToArray(out, cJSON_CreateString(volume));
        if (json_get_bool(json_field(m, "spec", NULL), "migrateAllVols", &all) >= 0 && !all)
                return out;
        if (json_get_string(json_field(m, "metadata", "labels"), PARENT_LABEL))
                return out; /* a child moves its one volume */
        lvg = group ? cached(mc->groups, group) : NULL;
        cJSON_ArrayForEach(i, json_field(json_field(lvg, "spec", NULL), "volumes", NULL)) {
                const char *v = json_get_string(i, "localvolume");
                _cleanup_json_ cJSON *r = NULL;

                if (!v || streq(v, volume))
                        continue;
                r = find_replica(mc, v, source);
                if (r)
                        cJSON_AddItemToArray(out, cJSON_CreateString(v));
        }
        return out;
}

typedef struct Covering {
        const char *self, *self_parent, *volume;
        const char *found;
        char name[256];
        bool completed;
} Covering;

static int covering_match(const cJSON *o, void *userdata) {
        Covering *q = userdata;
        const char *name = json_name(o), *state = json_get_string(json_field(o, "status", NULL), "state");
        const char *parent = json_get_string(json_field(o, "metadata", "labels"), PARENT_LABEL);
        const cJSON *vols = json_field(json_field(o, "status", NULL), "volumes", NULL), *v;

        if (q->found || !name || streq(name, q->self) || streq_ptr(name, q->self_parent) ||
            streq_ptr(parent, q->self) || cJSON_GetArraySize(vols) < 2 || streq_ptr(state, "Aborted"))
                return 0;
        cJSON_ArrayForEach(v, vols) if (cJSON_IsString(v) && streq(v->valuestring, q->volume)) {
                snprintf(q->name, sizeof(q->name), "%s", name);
                q->found = q->name;
                q->completed = streq_ptr(state, "Completed");
        }
        return 0;
}

/* Another group migration that moves volume too (and whether it completed). */
static const char *covered_by(MigrateController *mc, const cJSON *m, const char *volume, bool *completed,
                              Covering *q) {
        *q = (Covering){ .self = json_name(m),
                         .self_parent = json_get_string(json_field(m, "metadata", "labels"), PARENT_LABEL),
                         .volume = volume };
        (void) kube_cache_foreach(informer_cache(mc->migrates), covering_match, q);
        *completed = q->completed;
        return q->found;
}

static char *child_name(const cJSON *m, size_t i) {
        char *n;
        return asprintf(&n, "%.200s-%zu", json_name(m), i) < 0 ? NULL : n;
}

static int finish(MigrateController *mc, const cJSON *m, const char *state, const char *type,
                  const char *msg) {
        cJSON *x = status_of(state, msg);
        char ts[32];

        emit(mc, m, type, state, msg);
        now_rfc3339(ts);
        if (x)
                cJSON_AddStringToObject(x, "completionTime", ts);
        return set_status(mc, json_name(m), x);
}

/* meta.ownerReferences names parent, so that deleting the parent takes its parts along. */
static int add_owner(cJSON *meta, const cJSON *parent) {
        const char *uid = json_get_string(json_field(parent, "metadata", NULL), "uid");
        cJSON *refs, *ref;

        if (!uid)
                return 0;
        refs = cJSON_AddArrayToObject(meta, "ownerReferences");
        ref = cJSON_CreateObject();
        if (!refs || !ref) {
                cJSON_Delete(ref);
                return -ENOMEM;
        }
        cJSON_AddItemToArray(refs, ref);
        if (!cJSON_AddStringToObject(ref, "apiVersion", "hwameistor.io/v1alpha1") ||
            !cJSON_AddStringToObject(ref, "kind", "LocalVolumeMigrate") ||
            !cJSON_AddStringToObject(ref, "name", json_name(parent)) ||
            !cJSON_AddStringToObject(ref, "uid", uid) || !cJSON_AddBoolToObject(ref, "controller", true))
                return -ENOMEM;
        return 0;
}

/* A group move: a child migration per volume, all with the parent's target; the parent follows. */
static int step_group(MigrateController *mc, const cJSON *m) {
        const cJSON *st = json_field(m, "status", NULL), *vols = json_field(st, "volumes", NULL), *v;
        const char *target = json_get_string(st, "targetNode");
        const char *source = json_get_string(json_field(m, "spec", NULL), "sourceNode");
        bool abort_requested = cJSON_IsTrue(json_field(m, "spec", "abort")) ||
                               streq_ptr(json_get_string(st, "state"), "ToBeAborted");
        uint64_t total = 0, done = 0, rate = 0;
        unsigned n = 0, completed = 0, aborted = 0, syncing = 0;
        const char *failure = NULL;
        char msg[512];
        size_t i = 0;
        int r;

        cJSON_ArrayForEach(v, vols) {
                _cleanup_free_ char *cname = child_name(m, i++);
                _cleanup_json_ cJSON *child = cached(mc->migrates, cname);
                const cJSON *cst = json_field(child, "status", NULL), *p = json_field(cst, "progress", NULL);
                const char *cstate = json_get_string(cst, "state") ?: "";
                uint64_t x;

                if (!cname)
                        return -ENOMEM;
                n++;
                if (!child) {
                        _cleanup_json_ cJSON *body = cJSON_CreateObject();
                        cJSON *meta, *spec, *labels, *sugg;

                        if (abort_requested)
                                continue;
                        meta = body ? cJSON_AddObjectToObject(body, "metadata") : NULL;
                        labels = meta ? cJSON_AddObjectToObject(meta, "labels") : NULL;
                        spec = body ? cJSON_AddObjectToObject(body, "spec") : NULL;
                        sugg = spec ? cJSON_AddArrayToObject(spec, "targetNodesSuggested") : NULL;
                        if (!sugg || !labels || !cJSON_IsString(v) ||
                            !cJSON_AddStringToObject(body, "apiVersion", "hwameistor.io/v1alpha1") ||
                            !cJSON_AddStringToObject(body, "kind", "LocalVolumeMigrate") ||
                            !cJSON_AddStringToObject(meta, "name", cname) ||
                            !cJSON_AddStringToObject(labels, PARENT_LABEL, json_name(m)) ||
                            !cJSON_AddStringToObject(spec, "volumeName", v->valuestring) ||
                            !cJSON_AddStringToObject(spec, "sourceNode", source) ||
                            !cJSON_AddBoolToObject(spec, "migrateAllVols", false))
                                return -ENOMEM;
                        cJSON_AddItemToArray(sugg, cJSON_CreateString(target));
                        r = add_owner(meta, m);
                        if (r < 0)
                                return r;
                        return mc_send(mc, KUBE_POST, MIGRATE_PATH, body);
                }
                if (abort_requested && !cJSON_IsTrue(json_field(child, "spec", "abort")) &&
                    !streq(cstate, "Completed") && !streq(cstate, "Aborted") &&
                    !streq(cstate, "PruneReplica")) {
                        _cleanup_json_ cJSON *body = cJSON_CreateObject();
                        _cleanup_free_ char *path = NULL;

                        if (!body ||
                            !cJSON_AddBoolToObject(cJSON_AddObjectToObject(body, "spec"), "abort", true) ||
                            asprintf(&path, MIGRATE_PATH "/%s", cname) < 0)
                                return -ENOMEM;
                        return mc_send(mc, KUBE_PATCH_MERGE, path, body);
                }
                completed += streq(cstate, "Completed");
                if (streq(cstate, "Aborted")) {
                        aborted++;
                        failure = failure ?: json_get_string(cst, "message");
                }
                syncing += streq(cstate, "SyncReplica") || streq(cstate, "PruneReplica");
                if (json_get_u64(p, "bytesTotal", &x) >= 0)
                        total += x;
                if (json_get_u64(p, "bytesDone", &x) >= 0)
                        done += x;
                if (json_get_u64(p, "bytesPerSecond", &x) >= 0)
                        rate += x;
        }

        if (aborted > 0 && !abort_requested) {
                snprintf(msg, sizeof(msg), "a volume of the group could not move: %s", strna(failure));
                return set_status(mc, json_name(m), status_of("ToBeAborted", msg));
        }
        if (abort_requested) {
                const char *why = json_get_string(st, "message");
                if (completed + aborted < n)
                        return 0; /* children still rolling back (or pruning) */
                return finish(mc, m, "Aborted", EVENT_WARNING,
                              !why || streq(why, "Aborting by request") ? "aborted by request" : why);
        }
        if (completed == n) {
                snprintf(msg, sizeof(msg), "%u volumes moved from %s to %s", n, source, strna(target));
                return finish(mc, m, "Completed", EVENT_NORMAL, msg);
        }
        {
                const char *state = syncing > 0 || completed > 0 ? "SyncReplica" : "AddReplica";
                const cJSON *cur = json_field(st, "progress", NULL);
                _cleanup_json_ cJSON *p = cJSON_CreateObject();
                cJSON *x;

                if (!p || !cJSON_AddNumberToObject(p, "bytesTotal", (double) total) ||
                    !cJSON_AddNumberToObject(p, "bytesDone", (double) done) ||
                    !cJSON_AddNumberToObject(p, "bytesPerSecond", (double) rate))
                        return -ENOMEM;
                if (rate > 0 && total > done)
                        cJSON_AddNumberToObject(p, "etaSeconds", (double) ((total - done) / rate));
                snprintf(msg, sizeof(msg), "%u of %u volumes moved", completed, n);
                if (streq_ptr(json_get_string(st, "state"), state) && cur && cJSON_Compare(cur, p, true) &&
                    streq_ptr(json_get_string(st, "message"), msg))
                        return 0;
                x = status_of(state, msg);
                if (!x)
                        return -ENOMEM;
                cJSON_AddItemToObject(x, "progress", TAKE_PTR(p));
                return set_status(mc, json_name(m), x);
        }
}

/* Whether the cache still lacks a write of ours to a migration other than self. */
static bool others_stale(MigrateController *mc, const char *self) {
        const char *name;
        char *rv;

        HASHMAP_FOREACH_KEY(rv, name, mc->stale)
        if (!streq(name, self) && streq_ptr(kube_cache_get_rv(informer_cache(mc->migrates), NULL, name), rv))
                return true;
        return false;
}

static int step_new(MigrateController *mc, const cJSON *m, const cJSON *lv, const char *volume,
                    const char *source) {
        _cleanup_json_ cJSON *replica = NULL;
        char msg[512], ts[32];
        uint64_t replicas = 1;
        cJSON *st, *vols;

        /* Which group migration covers which volume is read from the others' status: wait until
         * the cache has our last word on them, or two could claim one group (its update brings
         * this one back). */
        if (others_stale(mc, json_name(m)))
                return 0;
        if (!lv) {
                snprintf(msg, sizeof(msg), "volume %s does not exist", strna(volume));
                return rollback(mc, m, msg);
        }
        {
                Covering q;
                bool completed = false;
                const char *other = covered_by(mc, m, volume, &completed, &q);

                if (other && completed && !find_replica(mc, volume, source)) {
                        snprintf(msg, sizeof(msg), "Volume %s moved together with its group in migration %s",
                                 volume, other);
                        return finish(mc, m, "Completed", EVENT_NORMAL, msg);
                }
                if (other && !completed) {
                        snprintf(msg, sizeof(msg), "Volume %s moves with its group in migration %s", volume,
                                 other);
                        return streq_ptr(json_get_string(json_field(m, "status", NULL), "message"), msg)
                                       ? 0
                                       : set_status(mc, json_name(m), status_of(NULL, msg));
                }
        }
        replica = find_replica(mc, volume, source);
        if (!replica) {
                snprintf(msg, sizeof(msg), "node %s holds no replica of volume %s", strna(source), volume);
                return rollback(mc, m, msg);
        }
        (void) json_get_u64(json_field(lv, "spec", NULL), "replicaNumber", &replicas);
        now_rfc3339(ts);
        st = status_of("Submitted", NULL);
        vols = group_members(mc, m, lv, volume, source);
        if (!st || !vols || !cJSON_AddNumberToObject(st, "originalReplicaNumber", (double) replicas) ||
            !cJSON_AddStringToObject(st, "sourceReplica", json_name(replica)) ||
            !cJSON_AddStringToObject(st, "startTime", ts)) {
                cJSON_Delete(st);
                cJSON_Delete(vols);
                return -ENOMEM;
        }
        cJSON_AddItemToObject(st, "volumes", vols);
        emit(mc, m, EVENT_NORMAL, "Submitted", "Migration accepted");
        return set_status(mc, json_name(m), st);
}

typedef struct Slots {
        const char *self, *source;
        unsigned running, running_here;
} Slots;

static int slots_count(const cJSON *o, void *userdata) {
        Slots *q = userdata;
        const char *state = json_get_string(json_field(o, "status", NULL), "state");

        if (streq_ptr(json_name(o), q->self) ||
            cJSON_GetArraySize(json_field(json_field(o, "status", NULL), "volumes", NULL)) > 1)
                return 0; /* group parents copy nothing themselves */
        if (!streq_ptr(state, "AddReplica") && !streq_ptr(state, "SyncReplica") &&
            !streq_ptr(state, "PruneReplica"))
                return 0;
        q->running++;
        if (streq_ptr(json_get_string(json_field(o, "spec", NULL), "sourceNode"), q->source))
                q->running_here++;
        return 0;
}

static int step_submitted(MigrateController *mc, const cJSON *m, const cJSON *lv, const char *volume,
                          const char *source) {
        const cJSON *spec = json_field(m, "spec", NULL);
        _cleanup_json_ cJSON *replica = find_replica(mc, volume, source);
        _cleanup_json_ cJSON *holders = replica_holders(mc, volume);
        TargetQuery q = { .holders = holders, .source = source, .volume = volume, .best_rank = INT32_MAX };
        const char *published = json_get_string(json_field(lv, "status", NULL), "publishedNode");
        const char *uid = json_get_string(json_field(m, "metadata", NULL), "uid");
        char msg[512], *target_replica = NULL, *identity = NULL;
        const cJSON *vols = json_field(json_field(m, "status", NULL), "volumes", NULL), *v;
        bool group = cJSON_GetArraySize(vols) > 1;
        cJSON *st;

        if (!holders)
                return -ENOMEM;

        if (!replica)
                return rollback(mc, m, "the source replica is gone");
        cJSON_ArrayForEach(v, vols) {
                _cleanup_json_ cJSON *other = cJSON_IsString(v) ? cached(mc->volumes, v->valuestring) : NULL;
                if (other &&
                    streq_ptr(json_get_string(json_field(other, "status", NULL), "publishedNode"), source))
                        published = source;
        }
        if (streq_ptr(published, source)) {
                const char *cur = json_get_string(json_field(m, "status", NULL), "message");
                snprintf(msg, sizeof(msg), "Volume is still in use on %s", source);
                return streq_ptr(cur, msg) ? 0 : set_status(mc, json_name(m), status_of("Submitted", msg));
        }
        if (!group) {
                Slots slots = { .self = json_name(m), .source = source };
                (void) kube_cache_foreach(informer_cache(mc->migrates), slots_count, &slots);
                if ((mc->options.max_running > 0 && slots.running >= mc->options.max_running) ||
                    (mc->options.max_running_per_node > 0 &&
                     slots.running_here >= mc->options.max_running_per_node)) {
                        snprintf(msg, sizeof(msg), "Waiting for a free copy slot (%u running, %u from %s)",
                                 slots.running, slots.running_here, source);
                        return streq_ptr(json_get_string(json_field(m, "status", NULL), "message"), msg)
                                       ? 0
                                       : set_status(mc, json_name(m), status_of("Submitted", msg));
                }
        }
        q.pool = json_get_string(json_field(replica, "spec", NULL), "poolName");
        (void) json_get_u64(json_field(replica, "spec", NULL), "requiredCapacityBytes", &q.need);
        if (group) {
                /* The target must have room for the whole group. */
                q.need = 0;
                cJSON_ArrayForEach(v, vols) {
                        _cleanup_json_ cJSON *r = cJSON_IsString(v)
                                                          ? find_replica(mc, v->valuestring, source)
                                                          : NULL;
                        uint64_t need = 0;
                        (void) json_get_u64(json_field(r, "spec", NULL), "requiredCapacityBytes", &need);
                        q.need += need;
                }
        }
        q.suggested = cJSON_GetObjectItemCaseSensitive(spec, "targetNodesSuggested");
        (void) kube_cache_foreach(informer_cache(mc->nodes), target_consider, &q);
        if (!q.best) {
                if (cJSON_GetArraySize(q.suggested) > 0) {
                        snprintf(msg, sizeof(msg),
                                 "invalid target node: none of the suggested nodes qualifies%s%s",
                                 q.why[0] ? " (" : "", q.why[0] ? q.why : "");
                        if (q.why[0])
                                strncat(msg, ")", sizeof(msg) - strlen(msg) - 1);
                        return rollback(mc, m, msg);
                }
                snprintf(msg, sizeof(msg), "no node can take volume %s%s%s%s", volume, q.why[0] ? " (" : "",
                         q.why[0] ? q.why : "", q.why[0] ? ")" : "");
                if (streq_ptr(json_get_string(json_field(m, "status", NULL), "message"), msg))
                        return 0;
                return set_status(mc, json_name(m), status_of("Submitted", msg));
        }

        if (group) {
                snprintf(msg, sizeof(msg), "Moving %d volumes of the group to %s", cJSON_GetArraySize(vols),
                         q.best);
                st = status_of("AddReplica", msg);
                if (st)
                        cJSON_AddStringToObject(st, "targetNode", q.best);
                log_info("Migration %s: moving the group of %s from %s to %s.", json_name(m), volume, source,
                         q.best);
                emit(mc, m, EVENT_NORMAL, "TargetChosen", msg);
                free(q.best);
                return set_status(mc, json_name(m), st);
        }

        /* Names that follow from the migration (its UID): doing this step twice cannot make two. */
        if (!uid || strlen(uid) < 6 || strspn(uid, "0123456789abcdef-") != strlen(uid)) {
                free(q.best);
                return rollback(mc, m, "the migration has no usable UID");
        }
        if (asprintf(&target_replica, "%s-%.6s", volume, uid) < 0 ||
            asprintf(&identity, "mig-%s", uid) < 0) {
                free(target_replica);
                free(q.best);
                return -ENOMEM;
        }
        snprintf(msg, sizeof(msg), "Adding a replica of %s on %s", volume, q.best);
        st = status_of("AddReplica", msg);
        if (st) {
                cJSON_AddStringToObject(st, "targetNode", q.best);
                cJSON_AddStringToObject(st, "targetReplica", target_replica);
                cJSON_AddStringToObject(st, "identity", identity);
        }
        log_info("Migration %s: moving %s from %s to %s.", json_name(m), volume, source, q.best);
        emit(mc, m, EVENT_NORMAL, "TargetChosen", msg);
        free(target_replica);
        free(identity);
        free(q.best);
        return set_status(mc, json_name(m), st);
}

static int step_add_replica(MigrateController *mc, const cJSON *m) {
        const cJSON *st = json_field(m, "status", NULL);
        const char *target = json_get_string(st, "targetReplica"), *node = json_get_string(st, "targetNode");
        const char *identity = json_get_string(st, "identity"),
                   *source = json_get_string(st, "sourceReplica");
        _cleanup_json_ cJSON *t = cached(mc->replicas, target), *s = cached(mc->replicas, source);
        const cJSON *tst;

        if (!target || !node || !identity || !s)
                return rollback(mc, m, "the migration's status is incomplete or the source replica is gone");
        if (!t) {
                _cleanup_json_ cJSON *body = NULL;
                _cleanup_free_ char *path = NULL;
                cJSON *meta, *spec, *ann;
                const cJSON *sspec = json_field(s, "spec", NULL);

                body = cJSON_CreateObject();
                meta = body ? cJSON_AddObjectToObject(body, "metadata") : NULL;
                ann = meta ? cJSON_AddObjectToObject(meta, "annotations") : NULL;
                spec = body ? cJSON_AddObjectToObject(body, "spec") : NULL;
                if (!ann || !spec ||
                    !cJSON_AddStringToObject(body, "apiVersion", "hwameistor.io/v1alpha1") ||
                    !cJSON_AddStringToObject(body, "kind", "LocalVolumeReplica") ||
                    !cJSON_AddStringToObject(meta, "name", target) ||
                    !cJSON_AddStringToObject(ann, SYNC_PENDING_ANNOTATION, identity) ||
                    !cJSON_AddStringToObject(spec, "volumeName", json_get_string(sspec, "volumeName")) ||
                    !cJSON_AddStringToObject(spec, "poolName", json_get_string(sspec, "poolName")) ||
                    !cJSON_AddStringToObject(spec, "nodeName", node) ||
                    !cJSON_AddItemToObject(
                            spec, "requiredCapacityBytes",
                            cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(sspec, "requiredCapacityBytes"),
                                            true)) ||
                    asprintf(&path, REPLICA_PATH) < 0)
                        return -ENOMEM;
                return mc_send(mc, KUBE_POST, path, body);
        }
        tst = json_field(t, "status", NULL);
        if (!streq_ptr(json_get_string(tst, "state"), "Ready") || !annotation(t, SYNC_ENDPOINT_ANNOTATION)) {
                /* Say why it is not ready yet, as the node does. */
                const cJSON *c;
                cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(tst, "conditions")) {
                        const char *reason = json_get_string(c, "reason"),
                                   *message = json_get_string(c, "message");
                        char msg[512];
                        if (!streq_ptr(json_get_string(c, "status"), "False") || !message)
                                continue;
                        snprintf(msg, sizeof(msg), "target replica %s: %s: %s", target, strna(reason),
                                 message);
                        if (!streq_ptr(json_get_string(st, "message"), msg))
                                return set_status(mc, json_name(m), status_of("AddReplica", msg));
                }
                return 0;
        }
        {
                _cleanup_json_ cJSON *push = cJSON_CreateObject();
                if (!push || !cJSON_AddStringToObject(push, "identity", identity) ||
                    !cJSON_AddStringToObject(push, "endpoint", annotation(t, SYNC_ENDPOINT_ANNOTATION)) ||
                    !cJSON_AddStringToObject(push, "export", target) ||
                    !cJSON_AddNumberToObject(push, "round", 1))
                        return -ENOMEM;
                if (!annotation(s, PUSH_ANNOTATION)) {
                        log_info("Migration %s: the target replica %s is ready; copying.", json_name(m),
                                 target);
                        return annotate(mc, source, PUSH_ANNOTATION, TAKE_PTR(push));
                }
        }
        emit(mc, m, EVENT_NORMAL, "Copying", "Copying the data to the new replica");
        return set_status(mc, json_name(m), status_of("SyncReplica", "Copying the data"));
}

/* An event when the copy passes a quarter, half or three quarters of the way. */
static void progress_events(MigrateController *mc, const cJSON *m, const cJSON *was, const cJSON *now) {
        uint64_t before = 0, done = 0, total = 0, rate = 0;
        unsigned q0, q1;
        char msg[256];

        (void) json_get_u64(was, "bytesDone", &before);
        if (json_get_u64(now, "bytesDone", &done) < 0 || json_get_u64(now, "bytesTotal", &total) < 0 ||
            total == 0 || done >= total)
                return;
        (void) json_get_u64(now, "bytesPerSecond", &rate);
        q0 = (unsigned) (MIN(before, total) * 4 / total);
        q1 = (unsigned) (done * 4 / total);
        if (q1 <= q0 || q1 == 0)
                return;
        snprintf(msg, sizeof(msg), "%u%% copied (%" PRIu64 " of %" PRIu64 " MiB) at %" PRIu64 " MB/s",
                 q1 * 25, done >> 20, total >> 20, rate / 1000000);
        emit(mc, m, EVENT_NORMAL, "Progress", msg);
}

static int step_sync(MigrateController *mc, const cJSON *m) {
        const cJSON *st = json_field(m, "status", NULL);
        const char *target = json_get_string(st, "targetReplica"),
                   *source = json_get_string(st, "sourceReplica");
        const char *identity = json_get_string(st, "identity");
        _cleanup_json_ cJSON *t = cached(mc->replicas, target), *s = cached(mc->replicas, source),
                             *ps = NULL, *result = NULL, *push = NULL;
        uint64_t attempts = 0, round = 1, push_round = 1, ps_round = 1;
        const char *digest;
        char msg[512];

        if (!t || !s)
                return rollback(mc, m, t ? "the source replica is gone" : "the target replica is gone");
        (void) json_get_u64(st, "round", &round);
        push = annotation_json(s, PUSH_ANNOTATION);
        (void) json_get_u64(push, "round", &push_round);
        result = annotation_json(t, SYNC_RESULT_ANNOTATION);
        if (result && push_round == round) {
                bool verified = false;
                (void) json_get_bool(result, "verified", &verified);
                if (verified && cJSON_IsTrue(json_field(t, "status", "synced"))) {
                        cJSON *x = status_of("PruneReplica", "The data is verified on the target");
                        if (x)
                                cJSON_AddStringToObject(x, "digest", json_get_string(result, "digest"));
                        emit(mc, m, EVENT_NORMAL, "Synced", "The target verified the data");
                        return set_status(mc, json_name(m), x);
                }
                if (verified)
                        return 0; /* waiting for the node's synced */
                if (round >= MIGRATE_MAX_ROUNDS) {
                        snprintf(msg, sizeof(msg), "the target's data differed from the source's %u times",
                                 (unsigned) round);
                        return rollback(mc, m, msg);
                }
                /* Another round, counted first: the source pushes again (delta: only what differs
                 * moves) once the target took its export back. */
                snprintf(msg, sizeof(msg),
                         "the target's data differed from the source's (%s); copying again",
                         strna(json_get_string(result, "message")));
                emit(mc, m, EVENT_WARNING, "VerifyFailed", msg);
                {
                        cJSON *x = status_of("SyncReplica", msg);
                        if (x)
                                cJSON_AddNumberToObject(x, "round", (double) round + 1);
                        return set_status(mc, json_name(m), x);
                }
        }
        if (push_round < round) {
                if (annotation(t, SYNC_EXPECT_ANNOTATION) || annotation(t, SYNC_RESULT_ANNOTATION))
                        return unannotate2(mc, target, SYNC_EXPECT_ANNOTATION, SYNC_RESULT_ANNOTATION);
                if (!annotation(t, SYNC_ENDPOINT_ANNOTATION))
                        return 0; /* waiting for the export */
                cJSON_DeleteItemFromObjectCaseSensitive(push, "round");
                if (!push || !cJSON_AddNumberToObject(push, "round", (double) round))
                        return -ENOMEM;
                return annotate(mc, source, PUSH_ANNOTATION, TAKE_PTR(push));
        }

        ps = annotation_json(s, PUSH_STATUS_ANNOTATION);
        (void) json_get_u64(ps, "round", &ps_round);
        if (!ps || !streq_ptr(json_get_string(ps, "identity"), identity) || ps_round != round)
                return 0;
        (void) json_get_u64(ps, "attempts", &attempts);
        if (streq_ptr(json_get_string(ps, "state"), "Failed") && attempts >= MIGRATE_MAX_ATTEMPTS) {
                snprintf(msg, sizeof(msg), "copying failed %u times: %s", (unsigned) attempts,
                         strna(json_get_string(ps, "message")));
                return rollback(mc, m, msg);
        }
        digest = json_get_string(ps, "digest");
        if (streq_ptr(json_get_string(ps, "state"), "Done") && digest &&
            !annotation(t, SYNC_EXPECT_ANNOTATION)) {
                _cleanup_json_ cJSON *expect = cJSON_CreateObject();
                if (!expect || !cJSON_AddStringToObject(expect, "digest", digest) ||
                    !cJSON_AddItemToObject(
                            expect, "size",
                            cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(ps, "bytesTotal"), true)))
                        return -ENOMEM;
                return annotate(mc, target, SYNC_EXPECT_ANNOTATION, TAKE_PTR(expect));
        }
        /* Progress, when it moved. */
        {
                const cJSON *cur = json_field(st, "progress", NULL);
                _cleanup_json_ cJSON *p = cJSON_CreateObject();
                static const char *const keys[] = { "bytesTotal", "bytesDone", "bytesPerSecond",
                                                    "etaSeconds" };
                cJSON *x;

                if (!p)
                        return -ENOMEM;
                for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                        const cJSON *v = cJSON_GetObjectItemCaseSensitive(ps, keys[i]);
                        if (v)
                                cJSON_AddItemToObject(p, keys[i], cJSON_Duplicate(v, true));
                }
                if (cur && cJSON_Compare(cur, p, true))
                        return 0;
                /* Progress goes to the API in steps of 2 % (and at the end), not at every report. */
                {
                        uint64_t was = 0, now_done = 0, total = 0;
                        (void) json_get_u64(cur, "bytesDone", &was);
                        (void) json_get_u64(p, "bytesDone", &now_done);
                        (void) json_get_u64(p, "bytesTotal", &total);
                        if (cur && now_done < total && now_done >= was && now_done - was < total / 50 &&
                            !streq_ptr(json_get_string(ps, "state"), "Failed"))
                                return 0;
                }
                /* A merge patch keeps what it does not mention: what the source no longer reports
                 * (the ETA at the end) is removed explicitly. */
                for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                        if (!cJSON_GetObjectItemCaseSensitive(p, keys[i]) &&
                            cJSON_GetObjectItemCaseSensitive(cur, keys[i]))
                                cJSON_AddNullToObject(p, keys[i]);
                progress_events(mc, m, cur, p);
                x = cJSON_CreateObject();
                if (!x)
                        return -ENOMEM;
                cJSON_AddItemToObject(x, "progress", TAKE_PTR(p));
                if (streq_ptr(json_get_string(ps, "state"), "Failed")) {
                        snprintf(msg, sizeof(msg), "copy attempt %u failed: %s; retrying",
                                 (unsigned) attempts, strna(json_get_string(ps, "message")));
                        if (!streq_ptr(json_get_string(st, "message"), msg))
                                emit(mc, m, EVENT_WARNING, "CopyRetrying", msg);
                        cJSON_AddStringToObject(x, "message", msg);
                }
                return set_status(mc, json_name(m), x);
        }
}

/* Replaces from with to in a JSON array of strings (or adds to); returns a new array. */
static cJSON *swap_name(const cJSON *list, const char *from, const char *to) {
        cJSON *out = cJSON_CreateArray();
        const cJSON *i;
        bool have = false;

        if (!out)
                return NULL;
        cJSON_ArrayForEach(i, list) {
                const char *v = cJSON_IsString(i) ? i->valuestring : NULL;
                if (!v || streq(v, from))
                        continue;
                have = have || streq(v, to);
                cJSON_AddItemToArray(out, cJSON_CreateString(v));
        }
        if (!have)
                cJSON_AddItemToArray(out, cJSON_CreateString(to));
        return out;
}

static int step_prune(MigrateController *mc, const cJSON *m, const cJSON *lv, const char *volume,
                      const char *source) {
        const cJSON *st = json_field(m, "status", NULL);
        const char *target_node = json_get_string(st, "targetNode");
        const char *target = json_get_string(st, "targetReplica"),
                   *sreplica = json_get_string(st, "sourceReplica");
        _cleanup_json_ cJSON *s = cached(mc->replicas, sreplica);
        const cJSON *nodes = json_field(json_field(lv, "spec", NULL), "accessibility", "nodes");
        const cJSON *lvreplicas = json_field(lv, "status", "replicas");
        bool listed = false;
        const cJSON *i;
        char msg[512], ts[32];

        /* 1. The volume names the target (spec: where it may be used; status: its replicas). */
        cJSON_ArrayForEach(i, nodes) listed = listed || (cJSON_IsString(i) && streq(i->valuestring, source));
        if (lv && listed) {
                _cleanup_json_ cJSON *body = cJSON_CreateObject();
                _cleanup_free_ char *path = NULL;
                cJSON *acc = body ? cJSON_AddObjectToObject(cJSON_AddObjectToObject(body, "spec"),
                                                            "accessibility")
                                  : NULL;
                if (!acc || asprintf(&path, VOLUME_PATH "/%s", volume) < 0)
                        return -ENOMEM;
                cJSON_AddItemToObject(acc, "nodes", swap_name(nodes, source, target_node));
                return mc_send(mc, KUBE_PATCH_MERGE, path, body);
        }
        listed = false;
        cJSON_ArrayForEach(i, lvreplicas)
                listed = listed || (cJSON_IsString(i) && streq_ptr(i->valuestring, sreplica));
        if (lv && listed) {
                _cleanup_json_ cJSON *body = cJSON_CreateObject();
                _cleanup_free_ char *path = NULL;
                cJSON *vst = body ? cJSON_AddObjectToObject(body, "status") : NULL;
                if (!vst || asprintf(&path, VOLUME_PATH "/%s/status", volume) < 0)
                        return -ENOMEM;
                cJSON_AddItemToObject(vst, "replicas", swap_name(lvreplicas, sreplica, target));
                return mc_send(mc, KUBE_PATCH_MERGE, path, body);
        }
        /* 2. The source replica goes (its node removes the volume first). */
        if (s && annotation(s, PUSH_ANNOTATION))
                return annotate(mc, sreplica, PUSH_ANNOTATION, NULL);
        if (s && !json_field(s, "metadata", "deletionTimestamp"))
                return delete_replica(mc, sreplica);
        if (s)
                return 0;
        /* 3. Done. */
        snprintf(msg, sizeof(msg), "Volume %s moved from %s to %s", volume, source, strna(target_node));
        log_info("Migration %s: %s.", json_name(m), msg);
        emit(mc, m, EVENT_NORMAL, "Completed", msg);
        {
                cJSON *x = status_of("Completed", msg);
                now_rfc3339(ts);
                if (x)
                        cJSON_AddStringToObject(x, "completionTime", ts);
                return set_status(mc, json_name(m), x);
        }
}

/* A group's finished part goes once its parent has finished too, or is gone (an API server's
 * garbage collector would do the latter through the ownerReference; this works without one). */
static int reap_child(MigrateController *mc, const cJSON *m) {
        const char *parent = json_get_string(json_field(m, "metadata", "labels"), PARENT_LABEL);
        _cleanup_json_ cJSON *p = NULL;
        _cleanup_free_ char *path = NULL;
        const char *pstate;

        if (!parent || json_field(m, "metadata", "deletionTimestamp"))
                return 0;
        p = cached(mc->migrates, parent);
        pstate = json_get_string(json_field(p, "status", NULL), "state");
        if (p && !streq_ptr(pstate, "Completed") && !streq_ptr(pstate, "Aborted"))
                return 0;
        if (asprintf(&path, MIGRATE_PATH "/%s", json_name(m)) < 0)
                return -ENOMEM;
        log_debug("Migration %s: part of %s, which has %s; removing it.", json_name(m), parent,
                  p ? "finished" : "gone");
        return mc_send(mc, KUBE_DELETE, path, NULL);
}

static int mc_reconcile(MigrateController *mc, const cJSON *m) {
        const cJSON *spec = json_field(m, "spec", NULL), *st = json_field(m, "status", NULL);
        const char *state = json_get_string(st, "state") ?: "";
        const char *volume = json_get_string(spec, "volumeName"),
                   *source = json_get_string(spec, "sourceNode");
        _cleanup_json_ cJSON *lv = cached(mc->volumes, volume);
        bool abort_requested = false;

        LOG_CONTEXT_PUSH_FIELD("HWAMEID_MIGRATE", json_name(m));
        if (streq(state, "Completed") || streq(state, "Aborted"))
                return reap_child(mc, m);
        (void) json_get_bool(spec, "abort", &abort_requested);
        if (cJSON_GetArraySize(json_field(st, "volumes", NULL)) > 1 &&
            (streq(state, "AddReplica") || streq(state, "SyncReplica") || streq(state, "ToBeAborted") ||
             (abort_requested && !streq(state, "") && !streq(state, "Submitted")))) {
                if (abort_requested && !streq(state, "ToBeAborted"))
                        return set_status(mc, json_name(m), status_of("ToBeAborted", "Aborting by request"));
                return step_group(mc, m);
        }
        if (abort_requested && !streq(state, "PruneReplica")) {
                if (!streq(state, "ToBeAborted"))
                        return set_status(mc, json_name(m), status_of("ToBeAborted", "Aborting by request"));
                return rollback(mc, m, "aborted by request");
        }
        if (streq(state, "ToBeAborted"))
                return rollback(mc, m, json_get_string(st, "message") ?: "aborted");
        if (streq(state, ""))
                return step_new(mc, m, lv, volume, source);
        if (streq(state, "Submitted"))
                return step_submitted(mc, m, lv, volume, source);
        if (streq(state, "AddReplica"))
                return step_add_replica(mc, m);
        if (streq(state, "SyncReplica"))
                return step_sync(mc, m);
        if (streq(state, "PruneReplica"))
                return step_prune(mc, m, lv, volume, source);
        return 0;
}

/* The oldest queued name (owned by the caller now), or NULL. */
static char *mc_dequeue(MigrateController *mc) {
        char *name;

        if (mc->n_fifo == 0)
                return NULL;
        name = mc->fifo[0];
        memmove(mc->fifo, mc->fifo + 1, (--mc->n_fifo) * sizeof(char *));
        hashmap_remove(mc->queue, name);
        return name;
}

static int mc_on_defer(sd_event_source *s, void *userdata) {
        MigrateController *mc = userdata;
        char *name = NULL;
        int r;

        (void) s;
        if (mc->busy || !informer_has_synced(mc->migrates) || !informer_has_synced(mc->volumes) ||
            !informer_has_synced(mc->replicas) || !informer_has_synced(mc->nodes) ||
            !informer_has_synced(mc->groups))
                return 0;
        while (!mc->busy && (name = mc_dequeue(mc))) {
                _cleanup_json_ cJSON *m = NULL;

                m = cached(mc->migrates, name);
                if (!m) {
                        stale_forget(mc, name);
                        free(name);
                        continue;
                }
                if (streq_ptr(hashmap_get(mc->stale, name),
                              json_get_string(json_field(m, "metadata", NULL), "resourceVersion"))) {
                        free(name); /* our last write is not in the cache yet; its update brings us back */
                        continue;
                }
                stale_forget(mc, name);
                mc->busy = name;
                r = mc_reconcile(mc, m);
                if (r < 0)
                        log_warning_errno(r, "Migration %s: %m", name);
                if (r <= 0)
                        mc->busy = mfree(mc->busy);
        }
        return 0;
}

static int mc_on_resync(sd_event_source *s, uint64_t usec, void *userdata) {
        MigrateController *mc = userdata;

        mc_enqueue_all(mc);
        return sd_event_source_set_time(s, usec + RESYNC_INTERVAL);
}

static void mc_on_change(Informer *inf, const cJSON *obj, void *userdata) {
        (void) inf, (void) obj;
        mc_enqueue_all(userdata);
}

static void mc_on_update(Informer *inf, const cJSON *old, const cJSON *obj, void *userdata) {
        (void) old;
        mc_on_change(inf, obj, userdata);
}

static void mc_on_synced(Informer *inf, void *userdata) {
        (void) inf;
        mc_enqueue_all(userdata);
}

int migrate_controller_new(KubeClient *client, EventRecorder *events, const MigrateOptions *options,
                           MigrateController **ret) {
        static const InformerHandlers handlers = {
                .added = mc_on_change,
                .updated = mc_on_update,
                .deleted = mc_on_change,
                .synced = mc_on_synced,
        };
        _cleanup_(migrate_controller_freep) MigrateController *mc = NULL;
        sd_event *e = kube_client_event(client);
        int r;

        mc = calloc(1, sizeof(*mc));
        if (!mc)
                return -ENOMEM;
        mc->client = client;
        mc->events = events;
        if (options)
                mc->options = *options;
        r = hashmap_new(&mc->queue);
        if (r >= 0)
                r = hashmap_new(&mc->stale);
        if (r < 0)
                return r;
        r = informer_new(client, &(InformerConfig){ .name = "localvolumemigrates", .path = MIGRATE_PATH },
                         &handlers, mc, &mc->migrates);
        if (r >= 0)
                r = informer_new(client, &(InformerConfig){ .name = "localvolumes", .path = VOLUME_PATH },
                                 &handlers, mc, &mc->volumes);
        if (r >= 0)
                r = informer_new(
                        client, &(InformerConfig){ .name = "all-localvolumereplicas", .path = REPLICA_PATH },
                        &handlers, mc, &mc->replicas);
        if (r >= 0)
                r = informer_new(client,
                                 &(InformerConfig){ .name = "localvolumegroups", .path = GROUP_PATH },
                                 &handlers, mc, &mc->groups);
        if (r >= 0)
                r = informer_new(client, &(InformerConfig){ .name = "localstoragenodes", .path = LSN_PATH },
                                 &handlers, mc, &mc->nodes);
        if (r < 0)
                return r;
        r = sd_event_add_defer(e, &mc->defer, mc_on_defer, mc);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(mc->defer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(mc->defer, "migrate-queue");
        r = sd_event_add_time_relative(e, &mc->resync, CLOCK_MONOTONIC, RESYNC_INTERVAL, 0, mc_on_resync,
                                       mc);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(mc->resync, "migrate-resync");
        *ret = TAKE_PTR(mc);
        return 0;
}

static void free_name(void *p) {
        free(p);
}

MigrateController *migrate_controller_free(MigrateController *mc) {
        if (!mc)
                return NULL;
        kube_request_cancel(mc->request);
        informer_free(mc->migrates);
        informer_free(mc->volumes);
        informer_free(mc->replicas);
        informer_free(mc->nodes);
        informer_free(mc->groups);
        sd_event_source_disable_unref(mc->defer);
        sd_event_source_disable_unref(mc->resync);
        hashmap_free_with(mc->queue, free_name); /* frees the strings fifo points at */
        free(mc->fifo);
        {
                const char *k;
                char *v;
                HASHMAP_FOREACH_KEY(v, k, mc->stale) {
                        free((char *) k);
                        free(v);
                }
                hashmap_free(mc->stale);
        }
        free(mc->busy);
        free(mc);
        return NULL;
}

int migrate_controller_start(MigrateController *mc) {
        int r;

        r = informer_start(mc->migrates);
        if (r >= 0)
                r = informer_start(mc->volumes);
        if (r >= 0)
                r = informer_start(mc->replicas);
        if (r >= 0)
                r = informer_start(mc->nodes);
        if (r >= 0)
                r = informer_start(mc->groups);
        return r;
}

/* ---- metrics (read-only) ------------------------------------------------------------------- */

int migrate_controller_count_states(MigrateController *mc, const char *const *states, size_t n,
                                    unsigned *counts) {
        return informer_count_states(mc->migrates, states, n, counts);
}
