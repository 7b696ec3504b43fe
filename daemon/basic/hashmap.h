/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A string-keyed hash map: open addressing (triangular probing over a power-of-two table), SipHash-1-3
 * with a random key per map, so that names chosen by API clients cannot force collisions.
 *
 * Keys are borrowed, not copied: the map stores the caller's pointer, and the caller keeps the string
 * alive and unchanged for as long as the entry exists. The usual pattern is an object that embeds its
 * own name and is stored under it; such a map costs 24 bytes per slot and no allocation per entry.
 * Neither keys nor values are freed by the map, except through hashmap_free_with().
 *
 * Removal leaves a tombstone and never moves other entries, so an iteration tolerates the removal of
 * any entry (the current one included). Insertions during an iteration may rehash the table: the
 * iteration then sees entries zero, one or two times, so don't insert while iterating.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef struct Hashmap Hashmap;

typedef struct HashmapIter {
        size_t idx;
} HashmapIter;

#define HASHMAP_ITER_INIT ((HashmapIter){ .idx = 0 })

int hashmap_new(Hashmap **ret);
/* Frees the table; keys and values stay with the caller. Accepts NULL, returns NULL. */
Hashmap *hashmap_free(Hashmap *h);
/* Calls free_value(value) for each entry first (free_value may free the key along with the value). */
Hashmap *hashmap_free_with(Hashmap *h, void (*free_value)(void *value));
DEFINE_TRIVIAL_CLEANUP_FUNC(Hashmap *, hashmap_free);
#define _cleanup_hashmap_free_ _cleanup_(hashmap_freep)

/* Adds key → value. Returns 1 if added, 0 if key is already mapped to this very value, -EEXIST if it is
 * mapped to another one, -ENOMEM. value may not be NULL (NULL means "absent" to hashmap_get()). */
int hashmap_put(Hashmap *h, const char *key, void *value);
/* Adds or overwrites; the stored key pointer becomes key (so the old key may be freed afterwards).
 * ret_old (optional) receives the previous value or NULL. Returns 1 if added, 0 if replaced, -ENOMEM. */
int hashmap_replace(Hashmap *h, const char *key, void *value, void **ret_old);
/* The value, or NULL when absent. */
void *hashmap_get(const Hashmap *h, const char *key);
/* Like hashmap_get(), also returning the stored key pointer (useful to free it). */
void *hashmap_get2(const Hashmap *h, const char *key, const char **ret_key);
bool hashmap_contains(const Hashmap *h, const char *key);
/* Removes key; returns the value it had, or NULL when absent. */
void *hashmap_remove(Hashmap *h, const char *key);
/* Removes every entry without freeing anything; keeps the table. */
void hashmap_clear(Hashmap *h);
size_t hashmap_size(const Hashmap *h);
/* Bytes of heap the map itself holds (its table and header), not counting keys and values. */
size_t hashmap_memory(const Hashmap *h);

/* Steps *i to the next entry in unspecified order; returns false at the end. Start from
 * HASHMAP_ITER_INIT. ret_value and ret_key are optional. h may be NULL (empty). */
bool hashmap_iterate(const Hashmap *h, HashmapIter *i, void **ret_value, const char **ret_key);

/* Iterates with v (and k) set to each value (and key); the temporaries avoid type-punning v through a
 * void **. */
#define HASHMAP_FOREACH_KEY(v, k, h)                                                                        \
        for (HashmapIter _hashmap_i_ = HASHMAP_ITER_INIT; ({                                                \
                     void *_hashmap_v_ = NULL;                                                              \
                     const char *_hashmap_k_ = NULL;                                                        \
                     bool _hashmap_ok_ = hashmap_iterate((h), &_hashmap_i_, &_hashmap_v_, &_hashmap_k_);    \
                     (v) = _hashmap_v_;                                                                     \
                     (k) = _hashmap_k_;                                                                     \
                     _hashmap_ok_;                                                                          \
             });)
#define HASHMAP_FOREACH(v, h)                                                                               \
        for (HashmapIter _hashmap_i_ = HASHMAP_ITER_INIT; ({                                                \
                     void *_hashmap_v_ = NULL;                                                              \
                     bool _hashmap_ok_ = hashmap_iterate((h), &_hashmap_i_, &_hashmap_v_, NULL);            \
                     (v) = _hashmap_v_;                                                                     \
                     _hashmap_ok_;                                                                          \
             });)

/* SipHash-1-3 (the map's hash) and SipHash-2-4 (same core, more rounds; exposed so that tests can check
 * the core against the reference vectors) of a byte string with a 128-bit key. */
uint64_t siphash13(const void *data, size_t len, const uint8_t key[static 16]);
uint64_t siphash24(const void *data, size_t len, const uint8_t key[static 16]);
