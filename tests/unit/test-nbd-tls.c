/* SPDX-License-Identifier: Apache-2.0 */
/* stream/nbd-tls.c: per-migration keys derived from the cluster secret. */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "stream/nbd-tls.h"

static const char secret[] = "0123456789abcdef-cluster-secret";

/* The same HMAC as computed by the openssl command line: the derivation is the documented one. */
static void derived_key_matches_the_openssl_command(void **state) {
        uint8_t key[NBD_TLS_DERIVED_KEY_SIZE];
        char hex[2 * NBD_TLS_DERIVED_KEY_SIZE + 1], line[256];
        FILE *p;

        (void) state;
        assert_int_equal(nbd_tls_derive_key(secret, strlen(secret), "migrate-pvc-1_7f3a", key), 0);
        for (size_t i = 0; i < sizeof(key); i++)
                snprintf(hex + 2 * i, 3, "%02x", key[i]);
        p = popen("printf '%s' '" NBD_TLS_DERIVE_LABEL
                  "migrate-pvc-1_7f3a' | openssl dgst -sha256 -mac HMAC "
                  "-macopt 'key:0123456789abcdef-cluster-secret' -r",
                  "r");
        assert_non_null(p);
        assert_non_null(fgets(line, sizeof(line), p));
        pclose(p);
        assert_int_equal(strncmp(line, hex, strlen(hex)), 0);
}

static void identities_get_different_keys(void **state) {
        uint8_t a[NBD_TLS_DERIVED_KEY_SIZE], b[NBD_TLS_DERIVED_KEY_SIZE], c[NBD_TLS_DERIVED_KEY_SIZE];

        (void) state;
        assert_int_equal(nbd_tls_derive_key(secret, strlen(secret), "m1", a), 0);
        assert_int_equal(nbd_tls_derive_key(secret, strlen(secret), "m2", b), 0);
        assert_int_equal(nbd_tls_derive_key("another-secret-of-enough-length", 31, "m1", c), 0);
        assert_memory_not_equal(a, b, sizeof(a));
        assert_memory_not_equal(a, c, sizeof(a));
}

static void bad_secrets_and_identities_are_refused(void **state) {
        uint8_t k[NBD_TLS_DERIVED_KEY_SIZE];
        char long_id[300];

        (void) state;
        memset(long_id, 'a', sizeof(long_id) - 1);
        long_id[sizeof(long_id) - 1] = '\0';
        assert_int_equal(nbd_tls_derive_key("short", 5, "m1", k), -EINVAL);
        assert_int_equal(nbd_tls_derive_key(secret, strlen(secret), "", k), -EINVAL);
        assert_int_equal(nbd_tls_derive_key(secret, strlen(secret), "has space", k), -EINVAL);
        assert_int_equal(nbd_tls_derive_key(secret, strlen(secret), long_id, k), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(derived_key_matches_the_openssl_command),
                cmocka_unit_test(identities_get_different_keys),
                cmocka_unit_test(bad_secrets_and_identities_are_refused),
        };
        return cmocka_run_group_tests_name("nbd-tls", tests, NULL, NULL);
}
