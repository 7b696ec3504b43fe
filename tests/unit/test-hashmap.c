/* SPDX-License-Identifier: Apache-2.0 */
/* basic/hashmap: SipHash, put/get/replace/remove, growth, iteration with removal. */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "basic/hashmap.h"
#include "basic/macro.h"

static void siphash_core_matches_reference_vectors(void **state) {
        /* SipHash-2-4 reference vectors (key 00…0f, message 00 01 02 … of length i). */
        static const struct {
                size_t len;
                uint64_t hash;
        } vectors[] = {
                { 0, UINT64_C(0x726fdb47dd0e0e31) },  { 1, UINT64_C(0x74f839c593dc67fd) },
                { 7, UINT64_C(0xab0200f58b01d137) },  { 8, UINT64_C(0x93f5f5799a932462) },
                { 15, UINT64_C(0xa129ca6149be45e5) }, { 16, UINT64_C(0x3f2acc7f57c29bdb) },
                { 63, UINT64_C(0x958a324ceb064572) },
        };
        uint8_t key[16], msg[64];

        (void) state;
        for (unsigned i = 0; i < 16; i++)
                key[i] = (uint8_t) i;
        for (unsigned i = 0; i < 64; i++)
                msg[i] = (uint8_t) i;
        for (size_t i = 0; i < ELEMENTSOF(vectors); i++)
                assert_true(siphash24(msg, vectors[i].len, key) == vectors[i].hash);
}

static void siphash13_depends_on_key_and_every_byte(void **state) {
        uint8_t k1[16] = { 0 }, k2[16] = { 1 };
        char a[] = "kube-system/hwameistor-local-storage-abcde";
        uint64_t h = siphash13(a, strlen(a), k1);

        (void) state;
        assert_true(h == siphash13(a, strlen(a), k1));
        assert_true(h != siphash13(a, strlen(a), k2));
        for (size_t i = 0; i < strlen(a); i++) {
                a[i] ^= 1;
                assert_true(h != siphash13(a, strlen(a), k1));
                a[i] ^= 1;
        }
        assert_true(siphash13(a, 0, k1) != siphash13(a, 1, k1));
}

static void put_get_replace_remove(void **state) {
        _cleanup_hashmap_free_ Hashmap *h = NULL;
        int one = 1, two = 2, three = 3;
        char key_copy[] = "alpha";
        const char *k = NULL;
        void *old = NULL;

        (void) state;
        assert_int_equal(hashmap_new(&h), 0);
        assert_int_equal(hashmap_size(h), 0);
        assert_null(hashmap_get(h, "alpha"));
        assert_null(hashmap_remove(h, "alpha"));

        assert_int_equal(hashmap_put(h, "alpha", &one), 1);
        assert_int_equal(hashmap_put(h, "beta", &two), 1);
        assert_int_equal(hashmap_put(h, "alpha", &one), 0);       /* same value: no-op */
        assert_int_equal(hashmap_put(h, "alpha", &two), -EEXIST); /* another value: refused */
        assert_int_equal(hashmap_size(h), 2);
        assert_ptr_equal(hashmap_get(h, key_copy), &one); /* compared by content, not pointer */
        assert_true(hashmap_contains(h, "beta"));
        assert_false(hashmap_contains(h, "gamma"));
        assert_false(hashmap_contains(h, ""));

        /* replace swaps in the new key pointer too */
        assert_int_equal(hashmap_replace(h, key_copy, &three, &old), 0);
        assert_ptr_equal(old, &one);
        assert_ptr_equal(hashmap_get2(h, "alpha", &k), &three);
        assert_ptr_equal(k, key_copy);
        assert_int_equal(hashmap_replace(h, "gamma", &one, &old), 1);
        assert_null(old);
        assert_int_equal(hashmap_size(h), 3);

        assert_ptr_equal(hashmap_remove(h, "alpha"), &three);
        assert_null(hashmap_remove(h, "alpha"));
        assert_null(hashmap_get(h, "alpha"));
        assert_int_equal(hashmap_size(h), 2);

        /* the empty string is a key like any other */
        assert_int_equal(hashmap_put(h, "", &two), 1);
        assert_ptr_equal(hashmap_get(h, ""), &two);

        hashmap_clear(h);
        assert_int_equal(hashmap_size(h), 0);
        assert_null(hashmap_get(h, "beta"));
}

#define N_BIG 150000

static void grows_past_100k_entries(void **state) {
        _cleanup_hashmap_free_ Hashmap *h = NULL;
        char **keys;
        size_t n;

        (void) state;
        assert_int_equal(hashmap_new(&h), 0);
        keys = calloc(N_BIG, sizeof(char *));
        assert_non_null(keys);
        for (size_t i = 0; i < N_BIG; i++) {
                assert_true(asprintf(&keys[i], "hwameistor/pvc-%08zx-replica-%zu", i * 2654435761u, i) > 0);
                assert_int_equal(hashmap_put(h, keys[i], keys[i]), 1);
                assert_int_equal(hashmap_size(h), i + 1);
        }
        for (size_t i = 0; i < N_BIG; i++)
                assert_ptr_equal(hashmap_get(h, keys[i]), keys[i]);
        assert_null(hashmap_get(h, "hwameistor/absent"));
        /* the table stays within 2× of the 3/4 load limit: 24-byte slots, at most ~64 bytes per entry */
        assert_true(hashmap_memory(h) <= (size_t) N_BIG * 64 + 1024);

        /* remove the even ones, check, add them back */
        for (size_t i = 0; i < N_BIG; i += 2)
                assert_ptr_equal(hashmap_remove(h, keys[i]), keys[i]);
        assert_int_equal(hashmap_size(h), N_BIG / 2);
        for (size_t i = 0; i < N_BIG; i++)
                assert_ptr_equal(hashmap_get(h, keys[i]), i % 2 ? keys[i] : NULL);
        for (size_t i = 0; i < N_BIG; i += 2)
                assert_int_equal(hashmap_put(h, keys[i], keys[i]), 1);
        assert_int_equal(hashmap_size(h), N_BIG);

        n = 0;
        const char *k;
        char *v;
        HASHMAP_FOREACH_KEY(v, k, h) {
                assert_ptr_equal(v, k);
                n++;
        }
        assert_int_equal(n, N_BIG);

        for (size_t i = 0; i < N_BIG; i++)
                free(keys[i]);
        free(keys);
}

static void churn_does_not_grow_the_table(void **state) {
        _cleanup_hashmap_free_ Hashmap *h = NULL;
        char keys[64][16];
        size_t max_mem = 0;

        (void) state;
        assert_int_equal(hashmap_new(&h), 0);
        for (unsigned i = 0; i < ELEMENTSOF(keys); i++) {
                snprintf(keys[i], sizeof(keys[i]), "k%u", i);
                assert_int_equal(hashmap_put(h, keys[i], keys[i]), 1);
        }
        /* remove and re-add entries in a rotating window: tombstones must be reclaimed */
        for (unsigned round = 0; round < 200000; round++) {
                unsigned i = round % ELEMENTSOF(keys);
                char tmp[16];

                assert_ptr_equal(hashmap_remove(h, keys[i]), keys[i]);
                snprintf(tmp, sizeof(tmp), "k%u", i);
                assert_null(hashmap_get(h, tmp));
                assert_int_equal(hashmap_put(h, keys[i], keys[i]), 1);
                max_mem = MAX(max_mem, hashmap_memory(h));
        }
        assert_int_equal(hashmap_size(h), ELEMENTSOF(keys));
        assert_true(max_mem <= 256 * 24 + 256);
}

static void iteration_tolerates_removing_the_current_entry(void **state) {
        _cleanup_hashmap_free_ Hashmap *h = NULL;
        static char keys[1000][8];
        static unsigned seen[1000];
        unsigned *v;
        size_t n = 0;

        (void) state;
        assert_int_equal(hashmap_new(&h), 0);
        for (unsigned i = 0; i < ELEMENTSOF(keys); i++) {
                snprintf(keys[i], sizeof(keys[i]), "%u", i);
                assert_int_equal(hashmap_put(h, keys[i], &seen[i]), 1);
        }

        /* remove every odd entry as it is visited; every entry is still visited exactly once */
        HASHMAP_FOREACH(v, h) {
                unsigned i = (unsigned) (v - seen);

                (*v)++;
                n++;
                if (i % 2)
                        assert_ptr_equal(hashmap_remove(h, keys[i]), v);
        }
        assert_int_equal(n, ELEMENTSOF(keys));
        assert_int_equal(hashmap_size(h), ELEMENTSOF(keys) / 2);
        for (unsigned i = 0; i < ELEMENTSOF(keys); i++)
                assert_int_equal(seen[i], 1);

        /* remove all of the rest while iterating, ending with an empty map */
        n = 0;
        HASHMAP_FOREACH(v, h) {
                unsigned i = (unsigned) (v - seen);

                assert_int_equal(i % 2, 0);
                (*v)++;
                n++;
                assert_ptr_equal(hashmap_remove(h, keys[i]), v);
        }
        assert_int_equal(n, ELEMENTSOF(keys) / 2);
        assert_int_equal(hashmap_size(h), 0);
        for (unsigned i = 0; i < ELEMENTSOF(keys); i++)
                assert_int_equal(seen[i], i % 2 ? 1 : 2);
}

static void iteration_tolerates_removing_other_entries(void **state) {
        _cleanup_hashmap_free_ Hashmap *h = NULL;
        static char keys[500][8];
        static unsigned seen[500];
        bool removed[500] = { false };
        unsigned *v;

        (void) state;
        assert_int_equal(hashmap_new(&h), 0);
        for (unsigned i = 0; i < ELEMENTSOF(keys); i++) {
                snprintf(keys[i], sizeof(keys[i]), "%u", i);
                assert_int_equal(hashmap_put(h, keys[i], &seen[i]), 1);
        }

        /* at each step remove the current entry and its "partner" (which may or may not be visited yet) */
        HASHMAP_FOREACH(v, h) {
                unsigned i = (unsigned) (v - seen), p = (unsigned) ELEMENTSOF(keys) - 1 - i;

                assert_false(removed[i]);
                (*v)++;
                removed[i] = true;
                assert_non_null(hashmap_remove(h, keys[i]));
                if (!removed[p]) {
                        removed[p] = true;
                        assert_non_null(hashmap_remove(h, keys[p]));
                }
        }
        assert_int_equal(hashmap_size(h), 0);
        for (unsigned i = 0; i < ELEMENTSOF(keys); i++)
                assert_true(seen[i] <= 1);
}

static unsigned freed;
static void count_free(void *p) {
        freed++;
        free(p);
}

static void free_with_frees_values_and_null_is_fine(void **state) {
        Hashmap *h = NULL;
        HashmapIter i = HASHMAP_ITER_INIT;
        char *keys[10];

        (void) state;
        assert_null(hashmap_free(NULL));
        assert_false(hashmap_iterate(NULL, &i, NULL, NULL));
        assert_int_equal(hashmap_size(NULL), 0);
        assert_null(hashmap_get(NULL, "x"));

        assert_int_equal(hashmap_new(&h), 0);
        assert_false(hashmap_iterate(h, &i, NULL, NULL));
        for (unsigned k = 0; k < ELEMENTSOF(keys); k++) {
                /* the key lives in the value: freeing the value frees the key */
                assert_true(asprintf(&keys[k], "value-%u", k) > 0);
                assert_int_equal(hashmap_put(h, keys[k], keys[k]), 1);
        }
        freed = 0;
        assert_null(hashmap_free_with(h, count_free));
        assert_int_equal(freed, ELEMENTSOF(keys));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(siphash_core_matches_reference_vectors),
                cmocka_unit_test(siphash13_depends_on_key_and_every_byte),
                cmocka_unit_test(put_get_replace_remove),
                cmocka_unit_test(grows_past_100k_entries),
                cmocka_unit_test(churn_does_not_grow_the_table),
                cmocka_unit_test(iteration_tolerates_removing_the_current_entry),
                cmocka_unit_test(iteration_tolerates_removing_other_entries),
                cmocka_unit_test(free_with_frees_values_and_null_is_fine),
        };
        return cmocka_run_group_tests_name("hashmap", tests, NULL, NULL);
}
