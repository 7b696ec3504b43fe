/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stream/stream-service: the cluster secret is refused unless root-only and long enough; a
 * migration's identity opens its own export and nothing else, only while it is exposed; keys
 * derived from another secret, unknown identities and plain clients are turned away; withdrawing
 * ends the connections. Real TLS over loopback TCP with the project's own NBD client.
 */

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "basic/macro.h"
#include "stream/nbd-client.h"
#include "stream/nbd-protocol.h"
#include "stream/stream-service.h"

#define SIZE (4U << 20)

static const char secret[] = "k3P9v0Yd2mQxW7sLr4Tn8bZc1Hf6Ju5A"; /* 32 bytes */
static char tmpdir[] = "/var/tmp/test-stream-service.XXXXXX";
static char path_a[256], path_b[256], secret_path[256];

static void make_file(const char *path, uint8_t fill) {
        _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        uint8_t buf[4096];

        assert_true(fd >= 0);
        memset(buf, fill, sizeof(buf));
        assert_int_equal(ftruncate(fd, SIZE), 0);
        assert_int_equal(pwrite(fd, buf, sizeof(buf), 0), (ssize_t) sizeof(buf));
}

static int setup(void **state) {
        (void) state;
        signal(SIGPIPE, SIG_IGN); /* nbd-tls.h: OpenSSL writes with write() */
        if (!mkdtemp(tmpdir))
                return -1;
        snprintf(path_a, sizeof(path_a), "%s/a", tmpdir);
        snprintf(path_b, sizeof(path_b), "%s/b", tmpdir);
        snprintf(secret_path, sizeof(secret_path), "%s/secret", tmpdir);
        make_file(path_a, 0xaa);
        make_file(path_b, 0xbb);
        return 0;
}

static int teardown(void **state) {
        char cmd[300];
        (void) state;
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        return system(cmd) == 0 ? 0 : -1;
}

static void write_secret(const char *text, mode_t mode) {
        _cleanup_close_ int fd = -EBADF;

        (void) unlink(secret_path);
        fd = open(secret_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        assert_true(fd >= 0);
        assert_int_equal(fchmod(fd, mode), 0);
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t) strlen(text));
}

static void test_secret_must_be_root_only_and_long_enough(void **state) {
        _cleanup_free_ uint8_t *s = NULL;
        size_t n;

        (void) state;
        write_secret("k3P9v0Yd2mQxW7sLr4Tn8bZc1Hf6Ju5A\n", 0600);
        assert_int_equal(stream_secret_load(secret_path, &s, &n), 0);
        assert_int_equal(n, 32); /* the newline is not part of it */
        assert_memory_equal(s, secret, 32);

        write_secret(secret, 0644);
        assert_int_equal(stream_secret_load(secret_path, &s, &n), -EPERM);
        write_secret(secret, 0640);
        assert_int_equal(stream_secret_load(secret_path, &s, &n), -EPERM);
        write_secret("too short\n", 0600);
        assert_int_equal(stream_secret_load(secret_path, &s, &n), -EINVAL);
        (void) unlink(secret_path);
        assert_int_equal(stream_secret_load(secret_path, &s, &n), -ENOENT);
        assert_int_equal(stream_secret_load(tmpdir, &s, &n), -EINVAL);
}

typedef struct Fixture {
        StreamService *svc;
        BlockDev *a, *b;
        char port[16];
} Fixture;

static void fixture_start(Fixture *f, bool insecure) {
        *f = (Fixture){};
        assert_int_equal(stream_service_new(&(StreamServiceOptions){ .listen = "127.0.0.1:0",
                                                                     .secret = (const uint8_t *) secret,
                                                                     .secret_len = strlen(secret),
                                                                     .insecure = insecure },
                                            &f->svc),
                         0);
        snprintf(f->port, sizeof(f->port), "%d", stream_service_port(f->svc));
        assert_int_equal(blockdev_open(path_a, 0, &f->a), 0);
        assert_int_equal(blockdev_open(path_b, 0, &f->b), 0);
        assert_int_equal(stream_service_expose(f->svc, "mig-a", "pvc-a", f->a, false), 0);
        assert_int_equal(stream_service_expose(f->svc, "mig-b", "pvc-b", f->b, false), 0);
}

static void fixture_stop(Fixture *f) {
        f->svc = stream_service_free(f->svc);
        f->a = blockdev_close(f->a);
        f->b = blockdev_close(f->b);
}

/* Connects as identity (NULL: plain) with a key derived from key_secret. */
static int connect_as(Fixture *f, const char *identity, const char *key_secret, const char *export,
                      NbdClient **ret) {
        _cleanup_(nbd_tls_context_freep) NbdTlsContext *tls = NULL;
        NbdUri uri = { .host = (char *) "127.0.0.1", .port = f->port, .export = (char *) export };
        uint8_t key[NBD_TLS_DERIVED_KEY_SIZE];
        int r;

        if (identity) {
                assert_int_equal(nbd_tls_derive_key(key_secret, strlen(key_secret), identity, key), 0);
                assert_int_equal(nbd_tls_context_new_client(identity, key, sizeof(key), &tls), 0);
                uri.tls = true;
        }
        r = nbd_client_connect(&uri, &(NbdConnectOptions){ .tls = tls }, ret);
        if (r >= 0) /* only whether it was accepted matters; closed before its TLS context goes */
                *ret = nbd_client_free(*ret);
        return r;
}

static void test_an_identity_opens_its_own_export_only(void **state) {
        Fixture f;
        NbdClient *c = NULL;

        (void) state;
        fixture_start(&f, false);
        assert_int_equal(connect_as(&f, "mig-a", secret, "pvc-a", &c), 0);
        assert_int_equal(connect_as(&f, "mig-b", secret, "pvc-b", &c), 0);
        assert_int_equal(connect_as(&f, "mig-a", secret, "pvc-b", &c), -EACCES);
        assert_int_equal(connect_as(&f, "mig-a", secret, "pvc-nonexistent", &c), -EACCES);
        /* An identity nobody exposed, and a key from another secret: the handshake fails. */
        assert_int_equal(connect_as(&f, "mig-c", secret, "pvc-a", &c), -EKEYREJECTED);
        assert_int_equal(connect_as(&f, "mig-a", "another-secret-of-sufficient-length!", "pvc-a", &c),
                         -EKEYREJECTED);
        /* TLS is required. */
        assert_int_equal(connect_as(&f, NULL, NULL, "pvc-a", &c), -EACCES);
        fixture_stop(&f);
}

static void test_withdrawing_ends_connections_and_forgets_the_identity(void **state) {
        _cleanup_(nbd_tls_context_freep) NbdTlsContext *tls = NULL;
        _cleanup_(nbd_client_freep) NbdClient *c = NULL;
        uint8_t key[NBD_TLS_DERIVED_KEY_SIZE], buf[4096];
        NbdClient *other = NULL;
        Fixture f;
        int r;

        (void) state;
        fixture_start(&f, false);
        assert_int_equal(nbd_tls_derive_key(secret, strlen(secret), "mig-a", key), 0);
        assert_int_equal(nbd_tls_context_new_client("mig-a", key, sizeof(key), &tls), 0);
        assert_int_equal(nbd_client_connect(&(NbdUri){ .tls = true,
                                                       .host = (char *) "127.0.0.1",
                                                       .port = f.port,
                                                       .export = (char *) "pvc-a" },
                                            &(NbdConnectOptions){ .tls = tls }, &c),
                         0);
        assert_int_equal(
                nbd_client_run(c, &(NbdCommand){ .type = NBD_CMD_READ, .length = 4096, .buf = buf }), 0);
        assert_int_equal(buf[0], 0xaa);

        assert_int_equal(stream_service_withdraw(f.svc, "pvc-a"), 0);
        assert_int_equal(stream_service_n_exposed(f.svc), 1);
        r = nbd_client_run(c, &(NbdCommand){ .type = NBD_CMD_READ, .length = 4096, .buf = buf });
        assert_true(r < 0);
        assert_int_equal(connect_as(&f, "mig-a", secret, "pvc-a", &other), -EKEYREJECTED);
        assert_int_equal(stream_service_withdraw(f.svc, "pvc-a"), -ENOENT);
        /* The other migration is untouched. */
        assert_int_equal(connect_as(&f, "mig-b", secret, "pvc-b", &other), 0);
        fixture_stop(&f);
}

static void test_duplicates_and_bad_names_are_refused(void **state) {
        Fixture f;

        (void) state;
        fixture_start(&f, false);
        assert_int_equal(stream_service_expose(f.svc, "mig-a", "pvc-x", f.b, false), -EEXIST);
        assert_int_equal(stream_service_expose(f.svc, "mig-x", "pvc-a", f.b, false), -EEXIST);
        assert_int_equal(stream_service_expose(f.svc, "has space", "pvc-x", f.b, false), -EINVAL);
        assert_int_equal(stream_service_expose(f.svc, "id:colon", "pvc-x", f.b, false), -EINVAL);
        assert_int_equal(stream_service_expose(f.svc, "", "pvc-x", f.b, false), -EINVAL);
        fixture_stop(&f);
}

static void test_insecure_service_takes_plain_clients_for_exposed_exports(void **state) {
        Fixture f;
        NbdClient *c = NULL;

        (void) state;
        fixture_start(&f, true);
        assert_int_equal(connect_as(&f, NULL, NULL, "pvc-a", &c), 0);
        assert_int_equal(connect_as(&f, NULL, NULL, "pvc-zzz", &c), -EACCES);
        /* TLS clients are still held to their identity. */
        assert_int_equal(connect_as(&f, "mig-b", secret, "pvc-a", &c), -EACCES);
        fixture_stop(&f);
}

static void test_client_contexts_use_the_derived_key(void **state) {
        _cleanup_(nbd_tls_context_freep) NbdTlsContext *tls = NULL;
        _cleanup_(nbd_client_freep) NbdClient *c = NULL;
        Fixture f;

        (void) state;
        fixture_start(&f, false);
        assert_int_equal(stream_service_client_tls(f.svc, "mig-b", &tls), 0);
        assert_string_equal(nbd_tls_context_identity(tls), "mig-b");
        assert_int_equal(nbd_client_connect(&(NbdUri){ .tls = true,
                                                       .host = (char *) "127.0.0.1",
                                                       .port = f.port,
                                                       .export = (char *) "pvc-b" },
                                            &(NbdConnectOptions){ .tls = tls }, &c),
                         0);
        c = nbd_client_free(c);
        assert_int_equal(stream_service_client_tls(f.svc, "bad identity", &tls), -EINVAL);
        fixture_stop(&f);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_secret_must_be_root_only_and_long_enough),
                cmocka_unit_test(test_an_identity_opens_its_own_export_only),
                cmocka_unit_test(test_withdrawing_ends_connections_and_forgets_the_identity),
                cmocka_unit_test(test_duplicates_and_bad_names_are_refused),
                cmocka_unit_test(test_insecure_service_takes_plain_clients_for_exposed_exports),
                cmocka_unit_test(test_client_contexts_use_the_derived_key),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
