/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../basic/json-util.h"
#include "../basic/string-util.h"
#include "../informer/informer.h"
#include "../log/log.h"
#include "evictor.h"
#include "pass.h"

#define API          "/apis/hwameistor.io/v1alpha1"
#define MIGRATE_PATH API "/localvolumemigrates"
#define VOLUME_PATH  API "/localvolumes"
#define REPLICA_PATH API "/localvolumereplicas"
#define GROUP_PATH   API "/localvolumegroups"
#define TRIGGER_ANN  "hwameistor.io/hwameid-evictor"

enum {
        INF_NODES,
        INF_PODS,
        INF_PVCS,
        INF_PVS,
        INF_VOLUMES,
        INF_REPLICAS,
        INF_MIGRATES,
        INF_GROUPS,
        _INF_MAX,
};

struct Evictor {
        EventRecorder *events;
        PassController *pc;
};

/* ---- helpers ------------------------------------------------------------------------------- */

static const char *label(const cJSON *o, const char *key) {
        return json_get_string(json_field(o, "metadata", "labels"), key);
}

static bool has_finalizer(const cJSON *o, const char *f) {
        const cJSON *i;
        cJSON_ArrayForEach(
                i, json_field(o, "metadata", "finalizers")) if (cJSON_IsString(i) &&
                                                                streq(i->valuestring, f)) return true;
        return false;
}

static const cJSON *find_by_name(const cJSON *items, const char *ns, const char *name) {
        const cJSON *o;
        cJSON_ArrayForEach(o, items) if (streq_ptr(json_meta_string(o, "name"), name) &&
                                         (!ns || streq_ptr(json_meta_string(o, "namespace"), ns))) return o;
        return NULL;
}

static bool node_unschedulable(const cJSON *node) {
        const cJSON *t;

        if (cJSON_IsTrue(json_field(node, "spec", "unschedulable")))
                return true;
        cJSON_ArrayForEach(
                t, json_field(node, "spec", "taints")) if (streq_ptr(json_get_string(t, "key"),
                                                                     "node.kubernetes.io/unschedulable") &&
                                                           streq_ptr(json_get_string(t, "effect"),
                                                                     "NoSchedule")) return true;
        return false;
}

static bool node_disabled(const cJSON *nodes, const char *name) {
        return streq_ptr(label(find_by_name(nodes, NULL, name), EVICTION_LABEL), "disable");
}

static bool pod_terminated(const cJSON *pod) {
        const char *phase = json_get_string(json_field(pod, "status", NULL), "phase");
        return streq_ptr(phase, "Succeeded") || streq_ptr(phase, "Failed");
}

/* The hwameid volume (LocalVolume name) behind a pod volume, or NULL. */
static const char *pod_volume_lv(const cJSON *pvcs, const cJSON *pvs, const char *ns, const cJSON *podvol) {
        const char *claim = json_get_string(json_field(podvol, "persistentVolumeClaim", NULL), "claimName");
        const cJSON *pvc = claim ? find_by_name(pvcs, ns, claim) : NULL;
        const char *pvname = json_get_string(json_field(pvc, "spec", NULL), "volumeName");
        const cJSON *pv = pvname ? find_by_name(pvs, NULL, pvname) : NULL;

        if (!pv ||
            !streq_ptr(json_get_string(json_field(json_field(pv, "spec", NULL), "csi", NULL), "driver"),
                       HWAMEID_CSI_DRIVER))
                return NULL;
        return pvname;
}

static bool replica_on(const cJSON *replicas, const char *volume, const char *node) {
        const cJSON *r;
        cJSON_ArrayForEach(
                r, replicas) if (streq_ptr(json_get_string(json_field(r, "spec", NULL), "volumeName"),
                                           volume) &&
                                 streq_ptr(json_get_string(json_field(r, "spec", NULL), "nodeName"), node) &&
                                 !json_field(r, "metadata", "deletionTimestamp")) return true;
        return false;
}

static bool terminal(const cJSON *m) {
        const char *state = json_get_string(json_field(m, "status", NULL), "state");
        return streq_ptr(state, "Completed") || streq_ptr(state, "Aborted");
}

/* Whether a migration of volume exists that is still going (or an evictor's of any state). */
static bool migration_exists(const cJSON *migrates, const char *volume) {
        const cJSON *m;
        char name[300];

        snprintf(name, sizeof(name), EVICTOR_MIGRATE_PREFIX "%s", volume);
        cJSON_ArrayForEach(m, migrates) {
                if (streq_ptr(json_meta_string(m, "name"), name))
                        return true;
                if (streq_ptr(json_get_string(json_field(m, "spec", NULL), "volumeName"), volume) &&
                    !terminal(m))
                        return true;
        }
        return false;
}

/* ---- writes -------------------------------------------------------------------------------- */

static int ev_send(Evictor *ev, KubeMethod method, const char *path, const cJSON *body) {
        return pass_controller_send(ev->pc, method, path, body);
}

static int create_migration(Evictor *ev, const char *volume, const char *node, const char *trigger,
                            const char *why) {
        _cleanup_json_ cJSON *body = cJSON_CreateObject();
        cJSON *meta, *spec, *fin, *ann;
        char name[300];

        snprintf(name, sizeof(name), EVICTOR_MIGRATE_PREFIX "%s", volume);
        meta = body ? cJSON_AddObjectToObject(body, "metadata") : NULL;
        spec = body ? cJSON_AddObjectToObject(body, "spec") : NULL;
        fin = meta ? cJSON_AddArrayToObject(meta, "finalizers") : NULL;
        ann = meta ? cJSON_AddObjectToObject(meta, "annotations") : NULL;
        if (!fin || !ann || !spec ||
            !cJSON_AddStringToObject(body, "apiVersion", "hwameistor.io/v1alpha1") ||
            !cJSON_AddStringToObject(body, "kind", "LocalVolumeMigrate") ||
            !cJSON_AddStringToObject(meta, "name", name) ||
            !cJSON_AddStringToObject(ann, TRIGGER_ANN, trigger) ||
            !cJSON_AddStringToObject(spec, "volumeName", volume) ||
            !cJSON_AddStringToObject(spec, "sourceNode", node) ||
            !cJSON_AddArrayToObject(spec, "targetNodesSuggested") ||
            !cJSON_AddBoolToObject(spec, "migrateAllVols", true))
                return -ENOMEM;
        cJSON_AddItemToArray(fin, cJSON_CreateString(EVICTOR_FINALIZER));
        log_info("Evictor: %s; moving volume %s off %s (%s).", why, volume, node, name);
        return ev_send(ev, KUBE_POST, MIGRATE_PATH, body);
}

/* ---- the pass ------------------------------------------------------------------------------ */

/* Finds the first thing to do and starts it: 1 when a write is in flight, 0 when all is done. */
static int ev_pass(PassController *pc, void *userdata) {
        Evictor *ev = userdata;
        _cleanup_json_ cJSON *nodes = pass_controller_snapshot(pc, INF_NODES),
                             *pods = pass_controller_snapshot(pc, INF_PODS),
                             *pvcs = pass_controller_snapshot(pc, INF_PVCS),
                             *pvs = pass_controller_snapshot(pc, INF_PVS),
                             *volumes = pass_controller_snapshot(pc, INF_VOLUMES),
                             *replicas = pass_controller_snapshot(pc, INF_REPLICAS),
                             *migrates = pass_controller_snapshot(pc, INF_MIGRATES),
                             *groups = pass_controller_snapshot(pc, INF_GROUPS);
        const cJSON *m, *n, *p, *v, *r;
        char why[512];

        if (!nodes || !pods || !pvcs || !pvs || !volumes || !replicas || !migrates || !groups)
                return -ENOMEM;

        /* A. The evictor's finished migrations: finalizer off; completed and cancelled ones go. */
        cJSON_ArrayForEach(m, migrates) {
                const char *name = json_meta_string(m, "name");
                _cleanup_free_ char *path = NULL;
                bool cancelled = streq_ptr(json_get_string(json_field(m, "status", NULL), "message"),
                                           "aborted by request") &&
                                 streq_ptr(json_get_string(json_field(m, "metadata", "annotations"),
                                                           TRIGGER_ANN),
                                           "node");

                if (!name || !startswith(name, EVICTOR_MIGRATE_PREFIX) || !terminal(m) ||
                    label(m, "hwameistor.io/hwameid-parent"))
                        continue; /* a group's parts belong to their parent */
                if (asprintf(&path, MIGRATE_PATH "/%s", name) < 0)
                        return -ENOMEM;
                if (has_finalizer(m, EVICTOR_FINALIZER)) {
                        _cleanup_json_ cJSON *body = cJSON_CreateObject();
                        cJSON *fin = body ? cJSON_AddArrayToObject(cJSON_AddObjectToObject(body, "metadata"),
                                                                   "finalizers")
                                          : NULL;
                        const cJSON *f;
                        if (!fin)
                                return -ENOMEM;
                        cJSON_ArrayForEach(
                                f, json_field(m, "metadata", "finalizers")) if (cJSON_IsString(f) &&
                                                                                !streq(f->valuestring,
                                                                                       EVICTOR_FINALIZER))
                                cJSON_AddItemToArray(fin, cJSON_CreateString(f->valuestring));
                        return ev_send(ev, KUBE_PATCH_MERGE, path, body);
                }
                if ((streq_ptr(json_get_string(json_field(m, "status", NULL), "state"), "Completed") ||
                     cancelled) &&
                    !json_field(m, "metadata", "deletionTimestamp"))
                        return ev_send(ev, KUBE_DELETE, path, NULL);
        }

        /* B. Uncordoned before the copy started: the node path's migrations are called off. */
        cJSON_ArrayForEach(m, migrates) {
                const char *state = json_get_string(json_field(m, "status", NULL), "state") ?: "";
                const char *source = json_get_string(json_field(m, "spec", NULL), "sourceNode");
                const cJSON *node = find_by_name(nodes, NULL, source);
                _cleanup_free_ char *path = NULL;
                _cleanup_json_ cJSON *body = NULL;

                if (!startswith(strempty(json_meta_string(m, "name")), EVICTOR_MIGRATE_PREFIX) ||
                    !streq_ptr(json_get_string(json_field(m, "metadata", "annotations"), TRIGGER_ANN),
                               "node") ||
                    cJSON_IsTrue(json_field(m, "spec", "abort")) || !node || node_unschedulable(node) ||
                    !(streq(state, "") || streq(state, "Submitted") || streq(state, "AddReplica")))
                        continue;
                body = cJSON_CreateObject();
                if (!body || !cJSON_AddBoolToObject(cJSON_AddObjectToObject(body, "spec"), "abort", true) ||
                    asprintf(&path, MIGRATE_PATH "/%s", json_meta_string(m, "name")) < 0)
                        return -ENOMEM;
                log_info("Evictor: node %s is schedulable again before %s started copying; calling it off.",
                         source, json_meta_string(m, "name"));
                return ev_send(ev, KUBE_PATCH_MERGE, path, body);
        }

        /* C. Where each volume is in use: status.publishedNode. */
        cJSON_ArrayForEach(v, volumes) {
                const char *name = json_meta_string(v, "name"), *want = NULL;
                const char *have = json_get_string(json_field(v, "status", NULL), "publishedNode");

                cJSON_ArrayForEach(p, pods) {
                        const cJSON *pv;
                        if (pod_terminated(p) || !json_get_string(json_field(p, "spec", NULL), "nodeName"))
                                continue;
                        cJSON_ArrayForEach(
                                pv,
                                json_field(p, "spec",
                                           "volumes")) if (streq_ptr(pod_volume_lv(pvcs, pvs,
                                                                                   json_meta_string(
                                                                                           p, "namespace"),
                                                                                   pv),
                                                                     name))
                                want = json_get_string(json_field(p, "spec", NULL), "nodeName");
                        if (want)
                                break;
                }
                /* Without a pod: a node that reports the volume's device open (mounted) uses it. */
                cJSON_ArrayForEach(
                        r,
                        replicas) if (!want && cJSON_IsTrue(json_field(r, "status", "inuse")) &&
                                      streq_ptr(json_get_string(json_field(r, "spec", NULL), "volumeName"),
                                                name))
                        want = json_get_string(json_field(r, "spec", NULL), "nodeName");
                if (!streq_ptr(want, have) && !(isempty(want) && isempty(have))) {
                        _cleanup_json_ cJSON *body = cJSON_CreateObject();
                        _cleanup_free_ char *path = NULL;
                        cJSON *st = body ? cJSON_AddObjectToObject(body, "status") : NULL;
                        if (!st ||
                            !(want ? cJSON_AddStringToObject(st, "publishedNode", want)
                                   : cJSON_AddNullToObject(st, "publishedNode")) ||
                            asprintf(&path, VOLUME_PATH "/%s/status", name) < 0)
                                return -ENOMEM;
                        log_debug("Evictor: volume %s is in use on %s.", name, strna(want));
                        return ev_send(ev, KUBE_PATCH_MERGE, path, body);
                }
        }

        /* C2. A pod's hwameid volumes form a LocalVolumeGroup, so that migrateAllVols moves them
         * together: made when two or more of them belong to no group yet. */
        cJSON_ArrayForEach(p, pods) {
                const char *uid = json_meta_string(p, "uid"), *ns = json_meta_string(p, "namespace");
                _cleanup_json_ cJSON *mine = cJSON_CreateArray();
                const cJSON *pv, *group = NULL, *lv;
                size_t loose = 0;
                char gname[300];

                if (!mine)
                        return -ENOMEM;
                if (pod_terminated(p) || !uid)
                        continue;
                cJSON_ArrayForEach(pv, json_field(p, "spec", "volumes")) {
                        const char *vol = pod_volume_lv(pvcs, pvs, ns, pv);
                        const cJSON *x = vol ? find_by_name(volumes, NULL, vol) : NULL;
                        const char *g = json_get_string(json_field(x, "spec", NULL), "volumegroup");

                        if (!x)
                                continue;
                        cJSON_AddItemToArray(mine, cJSON_Duplicate(x, true));
                        if (isempty(g))
                                loose++;
                        else if (!group)
                                group = find_by_name(groups, NULL, g);
                }
                if (loose == 0 || cJSON_GetArraySize(mine) < 2)
                        continue;
                snprintf(gname, sizeof(gname), "lvg-%s", uid);
                if (!group)
                        group = find_by_name(groups, NULL, gname);
                if (!group) {
                        _cleanup_json_ cJSON *body = cJSON_CreateObject();
                        cJSON *meta = body ? cJSON_AddObjectToObject(body, "metadata") : NULL;
                        cJSON *spec = body ? cJSON_AddObjectToObject(body, "spec") : NULL;
                        cJSON *vols = spec ? cJSON_AddArrayToObject(spec, "volumes") : NULL;
                        cJSON *podl = spec ? cJSON_AddArrayToObject(spec, "pods") : NULL;

                        if (!meta || !vols || !podl ||
                            !cJSON_AddStringToObject(body, "apiVersion", "hwameistor.io/v1alpha1") ||
                            !cJSON_AddStringToObject(body, "kind", "LocalVolumeGroup") ||
                            !cJSON_AddStringToObject(meta, "name", gname) ||
                            !cJSON_AddStringToObject(spec, "namespace", strempty(ns)))
                                return -ENOMEM;
                        cJSON_AddItemToArray(podl,
                                             cJSON_CreateString(strempty(json_meta_string(p, "name"))));
                        cJSON_ArrayForEach(lv, mine) {
                                cJSON *e = cJSON_CreateObject();
                                if (!e ||
                                    !cJSON_AddStringToObject(e, "localvolume",
                                                             strempty(json_meta_string(lv, "name"))) ||
                                    !cJSON_AddStringToObject(
                                            e, "pvc",
                                            strempty(json_get_string(json_field(lv, "spec", NULL),
                                                                     "pvcName")))) {
                                        cJSON_Delete(e);
                                        return -ENOMEM;
                                }
                                cJSON_AddItemToArray(vols, e);
                        }
                        log_info("Evictor: the volumes of pod %s/%s form the group %s.", strempty(ns),
                                 strna(json_meta_string(p, "name")), gname);
                        return ev_send(ev, KUBE_POST, GROUP_PATH, body);
                }
                cJSON_ArrayForEach(lv, mine) {
                        _cleanup_json_ cJSON *body = NULL;
                        _cleanup_free_ char *path = NULL;

                        if (!isempty(json_get_string(json_field(lv, "spec", NULL), "volumegroup")))
                                continue;
                        body = cJSON_CreateObject();
                        if (!body ||
                            !cJSON_AddStringToObject(cJSON_AddObjectToObject(body, "spec"), "volumegroup",
                                                     json_meta_string(group, "name")) ||
                            asprintf(&path, VOLUME_PATH "/%s", json_meta_string(lv, "name")) < 0)
                                return -ENOMEM;
                        return ev_send(ev, KUBE_PATCH_MERGE, path, body);
                }
        }

        /* D. Drained nodes: every volume with a replica there moves. */
        cJSON_ArrayForEach(n, nodes) {
                const char *node = json_meta_string(n, "name");

                if (!node_unschedulable(n) || streq_ptr(label(n, EVICTION_LABEL), "disable"))
                        continue;
                cJSON_ArrayForEach(r, replicas) {
                        const char *volume = json_get_string(json_field(r, "spec", NULL), "volumeName");
                        if (!streq_ptr(json_get_string(json_field(r, "spec", NULL), "nodeName"), node) ||
                            json_field(r, "metadata", "deletionTimestamp") || !volume ||
                            migration_exists(migrates, volume))
                                continue;
                        snprintf(why, sizeof(why), "node %s is unschedulable", node);
                        return create_migration(ev, volume, node, "node", why);
                }
        }

        /* E. Evicted pods, and pods labelled eviction=start: their volumes leave their node. */
        cJSON_ArrayForEach(p, pods) {
                const cJSON *st = json_field(p, "status", NULL), *pv;
                const char *node = json_get_string(json_field(p, "spec", NULL), "nodeName");
                bool evicted = streq_ptr(json_get_string(st, "phase"), "Failed") &&
                               streq_ptr(json_get_string(st, "reason"), "Evicted");
                bool asked = streq_ptr(label(p, EVICTION_LABEL), "start");

                if (!node || !(evicted || asked) || node_disabled(nodes, node))
                        continue;
                cJSON_ArrayForEach(pv, json_field(p, "spec", "volumes")) {
                        const char *volume = pod_volume_lv(pvcs, pvs, json_meta_string(p, "namespace"), pv);
                        if (!volume || !replica_on(replicas, volume, node) ||
                            migration_exists(migrates, volume))
                                continue;
                        snprintf(why, sizeof(why), "pod %s/%s %s", strna(json_meta_string(p, "namespace")),
                                 strna(json_meta_string(p, "name")),
                                 evicted ? "was evicted" : "is labelled eviction=start");
                        return create_migration(ev, volume, node, "pod", why);
                }
        }
        return 0;
}

int evictor_new(KubeClient *client, EventRecorder *events, Evictor **ret) {
        static const InformerConfig configs[_INF_MAX] = {
                [INF_NODES] = { .name = "evictor-nodes", .path = "/api/v1/nodes" },
                [INF_PODS] = { .name = "evictor-pods", .path = "/api/v1/pods" },
                [INF_PVCS] = { .name = "evictor-pvcs", .path = "/api/v1/persistentvolumeclaims" },
                [INF_PVS] = { .name = "evictor-pvs", .path = "/api/v1/persistentvolumes" },
                [INF_VOLUMES] = { .name = "evictor-localvolumes", .path = VOLUME_PATH },
                [INF_REPLICAS] = { .name = "evictor-localvolumereplicas", .path = REPLICA_PATH },
                [INF_MIGRATES] = { .name = "evictor-localvolumemigrates", .path = MIGRATE_PATH },
                [INF_GROUPS] = { .name = "evictor-localvolumegroups", .path = GROUP_PATH },
        };
        _cleanup_(evictor_freep) Evictor *ev = NULL;
        int r;

        ev = calloc(1, sizeof(*ev));
        if (!ev)
                return -ENOMEM;
        ev->events = events;
        r = pass_controller_new(client, "Evictor", configs, _INF_MAX, ev_pass, ev, &ev->pc);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(ev);
        return 0;
}

Evictor *evictor_free(Evictor *ev) {
        if (!ev)
                return NULL;
        pass_controller_free(ev->pc);
        free(ev);
        return NULL;
}

int evictor_start(Evictor *ev) {
        return pass_controller_start(ev->pc);
}
