/* SPDX-License-Identifier: Apache-2.0 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic/hashmap.h"
#include "basic/string-util.h"
#include "cache.h"

#define LAST_APPLIED_ANNOTATION "kubectl.kubernetes.io/last-applied-configuration"

/* One heap block per object: the header, then "key\0rv\0json\0". The map borrows the key from here. */
typedef struct CacheEntry {
        uint32_t generation; /* the cache's generation when last upserted; older ones are stale */
        uint32_t rv_offset;
        uint32_t json_offset;
        uint32_t json_len;
        char data[];
} CacheEntry;

struct KubeCache {
        Hashmap *entries; /* key → CacheEntry */
        uint32_t generation;
        size_t entry_bytes; /* sum of malloc_cost() over the entries */
};

static inline const char *entry_key(const CacheEntry *e) {
        return e->data;
}
static inline const char *entry_rv(const CacheEntry *e) {
        return e->data + e->rv_offset;
}
static inline const char *entry_json(const CacheEntry *e) {
        return e->data + e->json_offset;
}

/* What a block of n bytes costs glibc's allocator: an 8-byte header, 16-byte granules, 32 at least. */
static size_t malloc_cost(size_t n) {
        return MAX(ROUND_UP(n + 8, 16), (size_t) 32);
}

static size_t entry_size(const CacheEntry *e) {
        return offsetof(CacheEntry, data) + e->json_offset + e->json_len + 1;
}

static void entry_free(void *p) {
        free(p);
}

int kube_cache_new(KubeCache **ret) {
        _cleanup_(kube_cache_freep) KubeCache *c = NULL;
        int r;

        assert(ret);

        c = calloc(1, sizeof(KubeCache));
        if (!c)
                return -ENOMEM;
        r = hashmap_new(&c->entries);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(c);
        return 0;
}

KubeCache *kube_cache_free(KubeCache *c) {
        if (!c)
                return NULL;
        hashmap_free_with(c->entries, entry_free);
        return mfree(c);
}

/* A name or namespace that cannot make keys ambiguous. */
static bool key_part_valid(const char *s) {
        return !isempty(s) && !strchr(s, '/');
}

/* "ns/name", or "name" when ns is NULL or empty; into buf when it fits, else into a new block in *ret_alloc.
 */
static int make_key(const char *ns, const char *name, char *buf, size_t size, char **ret_alloc,
                    const char **ret_key) {
        size_t nl = strlen(name), sl = isempty(ns) ? 0 : strlen(ns);
        size_t n = sl + (sl > 0) + nl + 1;
        char *k = buf;

        if (n > size) {
                k = malloc(n);
                if (!k)
                        return -ENOMEM;
                *ret_alloc = k;
        }
        if (sl > 0) {
                memcpy(k, ns, sl);
                k[sl] = '/';
                memcpy(k + sl + 1, name, nl + 1);
        } else
                memcpy(k, name, nl + 1);

        *ret_key = k;
        return 0;
}

static CacheEntry *cache_lookup(KubeCache *c, const char *ns, const char *name, int *ret_error) {
        _cleanup_free_ char *alloc = NULL;
        const char *key;
        char buf[512];
        int r;

        assert(c);

        /* Names come from API data: a missing one is absent, not a programming error. */
        if (!name) {
                *ret_error = -EINVAL;
                return NULL;
        }
        r = make_key(ns, name, buf, sizeof(buf), &alloc, &key);
        if (r < 0) {
                *ret_error = r;
                return NULL;
        }
        *ret_error = 0;
        return hashmap_get(c->entries, key);
}

static int entry_parse(const CacheEntry *e, cJSON **ret) {
        cJSON *o;

        /* The text was printed by cJSON itself, so a failure here can only be an allocation failure. */
        o = cJSON_ParseWithLength(entry_json(e), e->json_len);
        if (!o)
                return -ENOMEM;
        *ret = o;
        return 0;
}

static void strip_unread_fields(cJSON *metadata) {
        cJSON *annotations;

        cJSON_DeleteItemFromObjectCaseSensitive(metadata, "managedFields");

        annotations = cJSON_GetObjectItemCaseSensitive(metadata, "annotations");
        if (cJSON_IsObject(annotations))
                cJSON_DeleteItemFromObjectCaseSensitive(annotations, LAST_APPLIED_ANNOTATION);
}

int kube_cache_upsert(KubeCache *c, cJSON **object, cJSON **ret_old) {
        _cleanup_free_ char *key_alloc = NULL, *text = NULL;
        _cleanup_json_ cJSON *old_object = NULL;
        const char *name, *ns = NULL, *rv, *key;
        size_t key_len, rv_len, text_len, total;
        CacheEntry *old, *e;
        cJSON *metadata, *v;
        char buf[512];
        int r;

        assert(c);
        assert(object);

        if (!cJSON_IsObject(*object))
                return -EINVAL;
        metadata = cJSON_GetObjectItemCaseSensitive(*object, "metadata");
        if (!cJSON_IsObject(metadata))
                return -EINVAL;
        name = json_get_string(metadata, "name");
        rv = json_get_string(metadata, "resourceVersion");
        if (!key_part_valid(name) || isempty(rv))
                return -EINVAL;
        v = cJSON_GetObjectItemCaseSensitive(metadata, "namespace");
        if (v) {
                if (!cJSON_IsString(v) || !v->valuestring)
                        return -EINVAL;
                ns = v->valuestring;
                if (!isempty(ns) && !key_part_valid(ns))
                        return -EINVAL;
        }

        r = make_key(ns, name, buf, sizeof(buf), &key_alloc, &key);
        if (r < 0)
                return r;

        old = hashmap_get(c->entries, key);
        if (old && streq(entry_rv(old), rv)) {
                old->generation = c->generation;
                cJSON_Delete(TAKE_PTR(*object));
                if (ret_old)
                        *ret_old = NULL;
                return KUBE_CACHE_UNCHANGED;
        }

        if (old && ret_old) {
                r = entry_parse(old, &old_object);
                if (r < 0)
                        return r;
        }

        strip_unread_fields(metadata);

        /* Copy what lives inside the tree before printing: name and rv are still needed afterwards. */
        key_len = strlen(key);
        rv_len = strlen(rv);
        text = cJSON_PrintUnformatted(*object);
        if (!text)
                return -ENOMEM;
        text_len = strlen(text);

        total = key_len + 1 + rv_len + 1 + text_len + 1;
        if (total < text_len || total > UINT32_MAX)
                return -E2BIG;

        e = malloc(offsetof(CacheEntry, data) + total);
        if (!e)
                return -ENOMEM;
        e->generation = c->generation;
        e->rv_offset = (uint32_t) (key_len + 1);
        e->json_offset = (uint32_t) (key_len + 1 + rv_len + 1);
        e->json_len = (uint32_t) text_len;
        memcpy(e->data, key, key_len + 1);
        memcpy(e->data + e->rv_offset, rv, rv_len + 1);
        memcpy(e->data + e->json_offset, text, text_len + 1);

        /* The map now borrows the new entry's key, so the old entry may go. */
        r = hashmap_replace(c->entries, entry_key(e), e, NULL);
        if (r < 0) {
                free(e);
                return r;
        }

        c->entry_bytes += malloc_cost(entry_size(e));
        if (old) {
                c->entry_bytes -= malloc_cost(entry_size(old));
                free(old);
        }

        cJSON_Delete(TAKE_PTR(*object));
        if (ret_old)
                *ret_old = TAKE_PTR(old_object);
        return old ? KUBE_CACHE_UPDATED : KUBE_CACHE_ADDED;
}

static void cache_drop(KubeCache *c, CacheEntry *e) {
        CacheEntry *removed;

        removed = hashmap_remove(c->entries, entry_key(e));
        assert(removed == e);
        c->entry_bytes -= malloc_cost(entry_size(removed));
        free(removed);
}

int kube_cache_remove(KubeCache *c, const char *ns, const char *name, cJSON **ret_removed) {
        _cleanup_json_ cJSON *o = NULL;
        CacheEntry *e;
        int r;

        e = cache_lookup(c, ns, name, &r);
        if (r < 0)
                return r;
        if (!e)
                return 0;

        if (ret_removed) {
                r = entry_parse(e, &o);
                if (r < 0)
                        return r;
        }

        cache_drop(c, e);
        if (ret_removed)
                *ret_removed = TAKE_PTR(o);
        return 1;
}

int kube_cache_get(KubeCache *c, const char *ns, const char *name, cJSON **ret_copy) {
        CacheEntry *e;
        int r;

        assert(ret_copy);

        e = cache_lookup(c, ns, name, &r);
        if (r < 0)
                return r;
        if (!e)
                return 0;

        r = entry_parse(e, ret_copy);
        if (r < 0)
                return r;
        return 1;
}

const char *kube_cache_get_rv(KubeCache *c, const char *ns, const char *name) {
        CacheEntry *e;
        int r;

        e = cache_lookup(c, ns, name, &r);
        return e ? entry_rv(e) : NULL;
}

const char *kube_cache_get_json(KubeCache *c, const char *ns, const char *name) {
        CacheEntry *e;
        int r;

        e = cache_lookup(c, ns, name, &r);
        return e ? entry_json(e) : NULL;
}

size_t kube_cache_size(const KubeCache *c) {
        return c ? hashmap_size(c->entries) : 0;
}

int kube_cache_foreach(KubeCache *c, int (*fn)(const cJSON *object, void *userdata), void *userdata) {
        CacheEntry *e;
        int r;

        assert(c);
        assert(fn);

        HASHMAP_FOREACH(e, c->entries) {
                _cleanup_json_ cJSON *o = NULL;

                r = entry_parse(e, &o);
                if (r < 0)
                        return r;
                r = fn(o, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

int kube_cache_foreach_json(KubeCache *c,
                            int (*fn)(const char *key, const char *rv, const char *json, void *userdata),
                            void *userdata) {
        CacheEntry *e;
        int r;

        assert(c);
        assert(fn);

        HASHMAP_FOREACH(e, c->entries) {
                r = fn(entry_key(e), entry_rv(e), entry_json(e), userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

void kube_cache_replace_begin(KubeCache *c) {
        assert(c);

        /* Entries carry the generation of their last upsert; bumping it makes all of them stale at once.
         * (After 2^32 relists a long-untouched entry could look fresh again: harmless in practice.) */
        c->generation++;
}

int kube_cache_replace_end(KubeCache *c, int (*on_deleted)(cJSON **object, void *userdata), void *userdata) {
        size_t removed = 0;
        CacheEntry *e;
        int r;

        assert(c);

        /* Removal leaves the map's other entries in place, so iterating while removing is fine. */
        HASHMAP_FOREACH(e, c->entries) {
                _cleanup_json_ cJSON *o = NULL;

                if (e->generation == c->generation)
                        continue;

                /* Deliver first: an entry whose delivery failed stays stale, and is delivered again by the
                 * next call. The delivered object is a copy, independent of the entry. */
                if (on_deleted) {
                        r = entry_parse(e, &o);
                        if (r < 0)
                                return r;
                        r = on_deleted(&o, userdata);
                        if (r < 0)
                                return r;
                }
                cache_drop(c, e);
                removed++;
        }
        return (int) MIN(removed, (size_t) INT32_MAX);
}

size_t kube_cache_memory(const KubeCache *c) {
        if (!c)
                return 0;
        return malloc_cost(sizeof(KubeCache)) + malloc_cost(hashmap_memory(c->entries)) + c->entry_bytes;
}
