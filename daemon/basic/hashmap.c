/* SPDX-License-Identifier: Apache-2.0 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "hashmap.h"
#include "string-util.h"

/*
 * Layout: a power-of-two array of slots probed triangularly (i, i+1, i+3, i+6, …), which visits every
 * slot of such a table. A slot is empty (key NULL), a tombstone (key == tombstone) or used. The table is
 * rebuilt on insertion when used + tombstones would exceed 3/4 of it; the new size brings the load to at
 * most 1/2, shrinking when removals dominated. The full 64-bit hash is kept per slot, so rebuilding never
 * rehashes strings and most mismatches are rejected without strcmp().
 */

#define HASHMAP_MIN_BUCKETS 8U

typedef struct Bucket {
        uint64_t hash;
        const char *key;
        void *value;
} Bucket;

struct Hashmap {
        Bucket *buckets;
        size_t n_buckets; /* 0 or a power of two */
        size_t size;
        size_t n_tombstones;
        uint8_t hash_key[16];
};

static const char tombstone[1];
#define TOMBSTONE (&tombstone[0])

static inline bool bucket_used(const Bucket *b) {
        return b->key && b->key != TOMBSTONE;
}

/* SipHash (Aumasson, Bernstein), parametrised by the number of compression and finalisation rounds. */
static inline uint64_t rotl64(uint64_t x, unsigned b) {
        return (x << b) | (x >> (64 - b));
}

static inline uint64_t load_le64(const uint8_t *p) {
        return (uint64_t) p[0] | (uint64_t) p[1] << 8 | (uint64_t) p[2] << 16 | (uint64_t) p[3] << 24 |
               (uint64_t) p[4] << 32 | (uint64_t) p[5] << 40 | (uint64_t) p[6] << 48 | (uint64_t) p[7] << 56;
}

#define SIPROUND(v0, v1, v2, v3)                                                                            \
        do {                                                                                                \
                v0 += v1;                                                                                   \
                v1 = rotl64(v1, 13);                                                                        \
                v1 ^= v0;                                                                                   \
                v0 = rotl64(v0, 32);                                                                        \
                v2 += v3;                                                                                   \
                v3 = rotl64(v3, 16);                                                                        \
                v3 ^= v2;                                                                                   \
                v0 += v3;                                                                                   \
                v3 = rotl64(v3, 21);                                                                        \
                v3 ^= v0;                                                                                   \
                v2 += v1;                                                                                   \
                v1 = rotl64(v1, 17);                                                                        \
                v1 ^= v2;                                                                                   \
                v2 = rotl64(v2, 32);                                                                        \
        } while (0)

static inline uint64_t siphash_cd(const void *data, size_t len, const uint8_t key[static 16], unsigned c,
                                  unsigned d) {
        const uint8_t *p = data, *end = p + (len & ~(size_t) 7);
        uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
        uint64_t v0 = UINT64_C(0x736f6d6570736575) ^ k0, v1 = UINT64_C(0x646f72616e646f6d) ^ k1,
                 v2 = UINT64_C(0x6c7967656e657261) ^ k0, v3 = UINT64_C(0x7465646279746573) ^ k1;
        uint64_t b = (uint64_t) len << 56;

        assert(data || len == 0);

        for (; p < end; p += 8) {
                uint64_t m = load_le64(p);

                v3 ^= m;
                for (unsigned i = 0; i < c; i++)
                        SIPROUND(v0, v1, v2, v3);
                v0 ^= m;
        }
        for (unsigned i = 0; i < (len & 7); i++)
                b |= (uint64_t) p[i] << (8 * i);

        v3 ^= b;
        for (unsigned i = 0; i < c; i++)
                SIPROUND(v0, v1, v2, v3);
        v0 ^= b;
        v2 ^= 0xff;
        for (unsigned i = 0; i < d; i++)
                SIPROUND(v0, v1, v2, v3);
        return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t siphash13(const void *data, size_t len, const uint8_t key[static 16]) {
        return siphash_cd(data, len, key, 1, 3);
}

uint64_t siphash24(const void *data, size_t len, const uint8_t key[static 16]) {
        return siphash_cd(data, len, key, 2, 4);
}

static void random_hash_key(uint8_t key[static 16]) {
        static uint64_t counter;
        struct timespec ts;
        ssize_t n;

#ifdef GRND_INSECURE
        /* Never blocks and never fails for lack of entropy (Linux ≥ 5.6); fine for a hash seed. */
        n = getrandom(key, 16, GRND_INSECURE);
        if (n == 16)
                return;
#endif
        n = getrandom(key, 16, GRND_NONBLOCK);
        if (n == 16)
                return;

        /* Early boot on an old kernel: a weak but distinct seed is still better than a constant one. */
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t a = (uint64_t) ts.tv_nsec ^ ((uint64_t) ts.tv_sec << 32) ^ (uint64_t) getpid();
        uint64_t b = (uint64_t) (uintptr_t) key ^ ++counter * UINT64_C(0x9e3779b97f4a7c15);
        memcpy(key, &a, 8);
        memcpy(key + 8, &b, 8);
}

int hashmap_new(Hashmap **ret) {
        Hashmap *h;

        assert(ret);

        h = calloc(1, sizeof(Hashmap));
        if (!h)
                return -ENOMEM;
        random_hash_key(h->hash_key);
        *ret = h;
        return 0;
}

Hashmap *hashmap_free_with(Hashmap *h, void (*free_value)(void *value)) {
        if (!h)
                return NULL;
        if (free_value)
                for (size_t i = 0; i < h->n_buckets; i++)
                        if (bucket_used(&h->buckets[i]))
                                free_value(h->buckets[i].value);
        free(h->buckets);
        return mfree(h);
}

Hashmap *hashmap_free(Hashmap *h) {
        return hashmap_free_with(h, NULL);
}

static uint64_t hashmap_hash(const Hashmap *h, const char *key) {
        return siphash13(key, strlen(key), h->hash_key);
}

/* The slot holding key, or SIZE_MAX. */
static size_t hashmap_find(const Hashmap *h, const char *key, uint64_t hash) {
        size_t mask, idx;

        if (h->n_buckets == 0)
                return SIZE_MAX;

        mask = h->n_buckets - 1;
        idx = (size_t) hash & mask;
        for (size_t step = 1;; step++) {
                const Bucket *b = &h->buckets[idx];

                if (!b->key)
                        return SIZE_MAX;
                if (b->key != TOMBSTONE && b->hash == hash && streq(b->key, key))
                        return idx;
                /* Terminates: the load limit keeps at least one slot empty, and triangular probing of a
                 * power-of-two table visits every slot within n_buckets steps. */
                assert(step <= h->n_buckets);
                idx = (idx + step) & mask;
        }
}

static int hashmap_resize(Hashmap *h, size_t entries) {
        size_t n = HASHMAP_MIN_BUCKETS;
        Bucket *nb;

        while (n / 2 < entries) {
                if (n > SIZE_MAX / 2 / sizeof(Bucket))
                        return -ENOMEM;
                n *= 2;
        }

        nb = calloc(n, sizeof(Bucket));
        if (!nb)
                return -ENOMEM;

        for (size_t i = 0; i < h->n_buckets; i++) {
                const Bucket *b = &h->buckets[i];
                size_t idx;

                if (!bucket_used(b))
                        continue;

                idx = (size_t) b->hash & (n - 1);
                for (size_t step = 1; nb[idx].key; step++)
                        idx = (idx + step) & (n - 1);
                nb[idx] = *b;
        }

        free(h->buckets);
        h->buckets = nb;
        h->n_buckets = n;
        h->n_tombstones = 0;
        return 0;
}

/* Stores key → value in a free slot; the key must be absent. */
static int hashmap_insert_new(Hashmap *h, const char *key, uint64_t hash, void *value) {
        size_t mask, idx;
        int r;

        if ((h->size + h->n_tombstones + 1) * 4 > h->n_buckets * 3) {
                r = hashmap_resize(h, h->size + 1);
                if (r < 0)
                        return r;
        }

        mask = h->n_buckets - 1;
        idx = (size_t) hash & mask;
        for (size_t step = 1; bucket_used(&h->buckets[idx]); step++)
                idx = (idx + step) & mask;

        if (h->buckets[idx].key == TOMBSTONE)
                h->n_tombstones--;
        h->buckets[idx] = (Bucket){ .hash = hash, .key = key, .value = value };
        h->size++;
        return 1;
}

int hashmap_put(Hashmap *h, const char *key, void *value) {
        uint64_t hash;
        size_t idx;

        assert(h);
        assert(key);
        assert(value);

        hash = hashmap_hash(h, key);
        idx = hashmap_find(h, key, hash);
        if (idx != SIZE_MAX)
                return h->buckets[idx].value == value ? 0 : -EEXIST;

        return hashmap_insert_new(h, key, hash, value);
}

int hashmap_replace(Hashmap *h, const char *key, void *value, void **ret_old) {
        uint64_t hash;
        size_t idx;
        int r;

        assert(h);
        assert(key);
        assert(value);

        hash = hashmap_hash(h, key);
        idx = hashmap_find(h, key, hash);
        if (idx != SIZE_MAX) {
                Bucket *b = &h->buckets[idx];

                if (ret_old)
                        *ret_old = b->value;
                b->key = key;
                b->value = value;
                return 0;
        }

        r = hashmap_insert_new(h, key, hash, value);
        if (r < 0)
                return r;
        if (ret_old)
                *ret_old = NULL;
        return 1;
}

void *hashmap_get2(const Hashmap *h, const char *key, const char **ret_key) {
        size_t idx;

        assert(key);

        if (!h || h->size == 0)
                return NULL;

        idx = hashmap_find(h, key, hashmap_hash(h, key));
        if (idx == SIZE_MAX)
                return NULL;
        if (ret_key)
                *ret_key = h->buckets[idx].key;
        return h->buckets[idx].value;
}

void *hashmap_get(const Hashmap *h, const char *key) {
        return hashmap_get2(h, key, NULL);
}

bool hashmap_contains(const Hashmap *h, const char *key) {
        return hashmap_get(h, key) != NULL;
}

void *hashmap_remove(Hashmap *h, const char *key) {
        size_t idx;
        void *v;

        assert(key);

        if (!h || h->size == 0)
                return NULL;

        idx = hashmap_find(h, key, hashmap_hash(h, key));
        if (idx == SIZE_MAX)
                return NULL;

        v = h->buckets[idx].value;
        h->buckets[idx] = (Bucket){ .key = TOMBSTONE };
        h->n_tombstones++;
        h->size--;

        /* Nothing left: drop the tombstones too. Other entries never move, so iterators stay valid. */
        if (h->size == 0)
                hashmap_clear(h);
        return v;
}

void hashmap_clear(Hashmap *h) {
        if (!h)
                return;
        if (h->buckets)
                memset(h->buckets, 0, h->n_buckets * sizeof(Bucket));
        h->size = 0;
        h->n_tombstones = 0;
}

size_t hashmap_size(const Hashmap *h) {
        return h ? h->size : 0;
}

size_t hashmap_memory(const Hashmap *h) {
        return h ? sizeof(Hashmap) + h->n_buckets * sizeof(Bucket) : 0;
}

bool hashmap_iterate(const Hashmap *h, HashmapIter *i, void **ret_value, const char **ret_key) {
        assert(i);

        if (!h)
                return false;

        for (; i->idx < h->n_buckets; i->idx++) {
                const Bucket *b = &h->buckets[i->idx];

                if (!bucket_used(b))
                        continue;

                i->idx++;
                if (ret_value)
                        *ret_value = b->value;
                if (ret_key)
                        *ret_key = b->key;
                return true;
        }
        return false;
}
