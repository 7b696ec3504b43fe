/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The informer's local copy of one resource, keyed "namespace/name", or "name" when the object is
 * cluster-scoped (no or an empty metadata.namespace).
 *
 * Objects are stored as compact JSON text, not as cJSON trees: a tree costs 64 bytes per node plus a heap
 * block per member name and string value: about 5 times its compact text for a LocalVolume (6.9 KB
 * against 1.3 KB, managedFields already dropped).
 * Readers therefore get a freshly parsed copy (kube_cache_get()) or the borrowed text and resourceVersion
 * (kube_cache_get_json(), kube_cache_get_rv()), which answer "did it change?" without parsing.
 *
 * Before storing, fields nobody reads are dropped: metadata.managedFields and the
 * kubectl.kubernetes.io/last-applied-configuration annotation.
 *
 * resourceVersions are opaque and compared for equality only.
 */

#include <stdbool.h>
#include <stddef.h>

#include "basic/json-util.h"
#include "basic/macro.h"

typedef struct KubeCache KubeCache;

int kube_cache_new(KubeCache **ret);
KubeCache *kube_cache_free(KubeCache *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(KubeCache *, kube_cache_free);
#define _cleanup_kube_cache_free_ _cleanup_(kube_cache_freep)

typedef enum KubeCacheChange {
        KUBE_CACHE_UNCHANGED,
        KUBE_CACHE_ADDED,
        KUBE_CACHE_UPDATED,
} KubeCacheChange;

/* Inserts or replaces the object. On success the cache has taken *object (and set it NULL) and the return
 * value is the KubeCacheChange: UNCHANGED when the stored resourceVersion equals the new one (the stored
 * copy is kept), ADDED, or UPDATED. ret_old (optional) receives the previous object for UPDATED (caller
 * frees) and NULL otherwise.
 * Errors: -EINVAL for an object without metadata.name or metadata.resourceVersion (non-empty strings), or
 * with a non-string namespace, or a name or namespace containing '/' (*object untouched); -ENOMEM, in which
 * case *object stays with the caller, possibly already stripped of the fields named above; -E2BIG for an
 * object whose text exceeds 4 GiB. */
int kube_cache_upsert(KubeCache *c, cJSON **object, cJSON **ret_old);

/* Removes by key (ns NULL or "" for cluster-scoped objects). Returns 1 and the removed object in
 * ret_removed (optional, caller frees), 0 if absent, -EINVAL for a NULL name, or -ENOMEM (then nothing is
 * removed). The lookups below likewise treat a NULL name as invalid (-EINVAL, or NULL). */
int kube_cache_remove(KubeCache *c, const char *ns, const char *name, cJSON **ret_removed);

/* A freshly parsed copy of the object in *ret_copy (caller frees). Returns 1, 0 if absent (*ret_copy
 * untouched), or -EINVAL/-ENOMEM. */
int kube_cache_get(KubeCache *c, const char *ns, const char *name, cJSON **ret_copy);

/* Borrowed, valid until the next modification of the cache, or NULL when absent: the stored
 * resourceVersion, and the stored compact JSON text. */
const char *kube_cache_get_rv(KubeCache *c, const char *ns, const char *name);
const char *kube_cache_get_json(KubeCache *c, const char *ns, const char *name);

size_t kube_cache_size(const KubeCache *c);

/* Calls fn with a parsed copy of each object (freed after fn returns), in unspecified order; fn may not
 * modify the cache. Returns fn's first negative value, -ENOMEM, or 0. */
int kube_cache_foreach(KubeCache *c, int (*fn)(const cJSON *object, void *userdata), void *userdata);
/* The same without parsing: key ("ns/name" or "name"), resourceVersion and JSON text, all borrowed. */
int kube_cache_foreach_json(KubeCache *c,
                            int (*fn)(const char *key, const char *rv, const char *json, void *userdata),
                            void *userdata);

/* Relist support (client-go's Replace): begin marks every entry stale (in O(1)); upserts during the relist
 * clear the mark, UNCHANGED ones included; end removes every still-stale entry and calls
 * on_deleted(object, userdata) (optional) with a parsed copy of each, so that deletions missed while
 * disconnected are delivered. on_deleted may take ownership via TAKE_PTR(*object) and may not modify the
 * cache. Returns the number of entries removed, or on_deleted's first negative value (or -ENOMEM), in
 * which case the entry it failed on and those not yet visited stay stale, and another
 * kube_cache_replace_end() delivers them. */
void kube_cache_replace_begin(KubeCache *c);
int kube_cache_replace_end(KubeCache *c, int (*on_deleted)(cJSON **object, void *userdata), void *userdata);

/* Approximate heap bytes held: the cache, its table, and one block per entry (holding key,
 * resourceVersion and JSON text), each counted with the allocator's per-block overhead. */
size_t kube_cache_memory(const KubeCache *c);
