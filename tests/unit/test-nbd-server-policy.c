/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stream/nbd-server: the export policy with TLS-PSK identities, over loopback. Three exports,
 * "mig-a", "mig-b" and "public"; the policy lets identity "id-a" open "mig-a" only, "id-b"
 * "mig-b" only, and plain clients "public" only (what the daemon does so that a migration's key
 * opens that migration's export and nothing else). Checked with NbdClient (GO) and by hand over
 * the transports (NBD_OPT_LIST, NBD_OPT_INFO, NBD_OPT_EXPORT_NAME), plus STARTTLS forgetting the
 * delta extension.
 */

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "basic/macro.h"
#include "basic/time-util.h"
#include "stream/nbd-client.h"
#include "stream/nbd-protocol.h"
#include "stream/nbd-server.h"
#include "stream/nbd-tls.h"
#include "volume/blockio.h"

#define IO_TIMEOUT (10 * USEC_PER_SEC) /* only so that a broken server fails the test, not hangs it */

static const char secret[] = "test-cluster-secret-of-enough-length";
static char path[] = "/var/tmp/test-nbd-server-policy.XXXXXX";

typedef struct Fixture {
        BlockDev *dev;
        NbdServer *server;
        NbdTlsContext *server_tls;
        NbdTlsContext *client_a, *client_b; /* outlive the transports they started */
        int port;
} Fixture;

/* What the policy was last asked (the connection threads call it). */
static pthread_mutex_t asked_lock = PTHREAD_MUTEX_INITIALIZER;
static char asked_identity[64];
static unsigned asked_count;

static int psk_lookup(void *userdata, const char *identity, uint8_t *key) {
        int r;

        if (strcmp(identity, "id-a") != 0 && strcmp(identity, "id-b") != 0)
                return -ENOKEY;
        r = nbd_tls_derive_key(secret, strlen(secret), identity, key);
        return r < 0 ? r : NBD_TLS_DERIVED_KEY_SIZE;
}

static int policy(void *userdata, const char *tls_identity, const char *export_name) {
        const char *allowed;

        pthread_mutex_lock(&asked_lock);
        snprintf(asked_identity, sizeof(asked_identity), "%s", tls_identity ?: "(plain)");
        asked_count++;
        pthread_mutex_unlock(&asked_lock);

        if (!tls_identity)
                allowed = "public";
        else if (strcmp(tls_identity, "id-a") == 0)
                allowed = "mig-a";
        else if (strcmp(tls_identity, "id-b") == 0)
                allowed = "mig-b";
        else
                return -EACCES;
        return strcmp(export_name, allowed) == 0 ? 0 : -EACCES;
}

static void assert_asked(const char *identity) {
        pthread_mutex_lock(&asked_lock);
        assert_string_equal(asked_identity, identity);
        assert_true(asked_count > 0);
        asked_count = 0;
        pthread_mutex_unlock(&asked_lock);
}

static NbdTlsContext *client_tls(const char *identity) {
        uint8_t key[NBD_TLS_DERIVED_KEY_SIZE];
        NbdTlsContext *ctx = NULL;

        assert_int_equal(nbd_tls_derive_key(secret, strlen(secret), identity, key), 0);
        assert_int_equal(nbd_tls_context_new_client(identity, key, sizeof(key), &ctx), 0);
        return ctx;
}

static NbdTlsContext *fixture_tls(const Fixture *f, const char *identity) {
        if (!identity)
                return NULL;
        return strcmp(identity, "id-a") == 0 ? f->client_a : f->client_b;
}

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(*f));
        int fd = mkstemp(path);

        assert_non_null(f);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, 1024 * 1024), 0);
        assert_int_equal(pwrite(fd, "hello", 5, 4096), 5);
        close(fd);

        assert_int_equal(blockdev_open(path, 0, &f->dev), 0);
        assert_int_equal(nbd_tls_context_new_server(psk_lookup, NULL, &f->server_tls), 0);
        assert_int_equal(nbd_server_new(&f->server), 0);
        /* TLS is optional here, so that plain clients reach the policy too. */
        nbd_server_set_tls(f->server, nbd_tls_server_start, f->server_tls, false);
        nbd_server_set_export_policy(f->server, policy, NULL);
        assert_int_equal(nbd_server_add_export(f->server, "mig-a", f->dev, false, NULL), 0);
        assert_int_equal(nbd_server_add_export(f->server, "mig-b", f->dev, false, NULL), 0);
        assert_int_equal(nbd_server_add_export(f->server, "public", f->dev, true, NULL), 0);
        assert_int_equal(nbd_server_listen(f->server, "127.0.0.1:0"), 0);
        f->port = nbd_server_get_port(f->server);
        assert_true(f->port > 0);
        assert_int_equal(nbd_server_start(f->server), 0);
        f->client_a = client_tls("id-a");
        f->client_b = client_tls("id-b");
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        nbd_server_free(f->server);
        nbd_tls_context_free(f->server_tls);
        nbd_tls_context_free(f->client_a);
        nbd_tls_context_free(f->client_b);
        blockdev_close(f->dev);
        free(f);
        unlink(path);
        return 0;
}

/* nbd_client_connect() to export as identity (NULL: plain); on success reads "hello" back. */
static int connect_as(const Fixture *f, const char *identity, const char *export) {
        _cleanup_(nbd_client_freep) NbdClient *c = NULL;
        NbdConnectOptions o = { .tls = fixture_tls(f, identity) };
        NbdUri uri = {};
        char s[256], buf[5];
        int r;

        snprintf(s, sizeof(s), "%s://%s%s127.0.0.1:%d/%s", identity ? "nbds" : "nbd", identity ?: "",
                 identity ? "@" : "", f->port, export);
        assert_int_equal(nbd_uri_parse(s, &uri), 0);
        r = nbd_client_connect(&uri, &o, &c);
        nbd_uri_done(&uri);
        if (r < 0)
                return r;
        assert_int_equal(
                nbd_client_run(
                        c, &(NbdCommand){ .type = NBD_CMD_READ, .offset = 4096, .length = 5, .buf = buf }),
                0);
        assert_memory_equal(buf, "hello", 5);
        return 0;
}

static void policy_decides_which_export_each_identity_opens(void **state) {
        Fixture *f = *state;

        assert_int_equal(connect_as(f, "id-a", "mig-a"), 0);
        assert_asked("id-a");
        assert_int_equal(connect_as(f, "id-a", "mig-b"), -EACCES);
        assert_asked("id-a");
        assert_int_equal(connect_as(f, "id-a", "public"), -EACCES);
        assert_int_equal(connect_as(f, "id-b", "mig-b"), 0);
        assert_asked("id-b");
        assert_int_equal(connect_as(f, "id-b", "mig-a"), -EACCES);
        assert_int_equal(connect_as(f, NULL, "public"), 0);
        assert_asked("(plain)");
        assert_int_equal(connect_as(f, NULL, "mig-a"), -EACCES);
        /* A name that does not exist is refused the same way: no oracle for which names do. */
        assert_int_equal(connect_as(f, "id-a", "nope"), -EACCES);
}

/* ---- By hand over a transport ---- */

static void t_write(NbdTransport *t, const void *p, size_t len) {
        struct iovec iov = { (void *) p, len };

        while (iov.iov_len > 0) {
                ssize_t n = t->ops->write(t, &iov, 1, IO_TIMEOUT);

                assert_true(n > 0);
                iov.iov_base = (uint8_t *) iov.iov_base + n;
                iov.iov_len -= (size_t) n;
        }
}

/* 0, or -1 when the stream ended (or broke) first. */
static int t_read(NbdTransport *t, void *p, size_t len) {
        uint8_t *d = p;

        while (len > 0) {
                ssize_t n = t->ops->read(t, d, len, IO_TIMEOUT);

                assert_true(n != -ETIMEDOUT);
                if (n <= 0)
                        return -1;
                d += n;
                len -= (size_t) n;
        }
        return 0;
}

static void send_option(NbdTransport *t, uint32_t option, const void *data, uint32_t len) {
        struct nbd_new_option o = {
                .version = htobe64(NBD_OPTS_MAGIC),
                .option = htobe32(option),
                .optlen = htobe32(len),
        };

        t_write(t, &o, sizeof(o));
        if (len > 0)
                t_write(t, data, len);
}

/* One option reply: its type; its data (NUL-terminated) into data[size]. */
static uint32_t option_reply(NbdTransport *t, uint32_t option, char *data, size_t size) {
        struct nbd_fixed_new_option_reply r;
        uint32_t len;

        assert_int_equal(t_read(t, &r, sizeof(r)), 0);
        assert_true(be64toh(r.magic) == NBD_REP_MAGIC);
        assert_int_equal(be32toh(r.option), option);
        len = be32toh(r.replylen);
        assert_true(len < size);
        assert_int_equal(t_read(t, data, len), 0);
        data[len] = 0;
        return be32toh(r.reply);
}

/* The export names NBD_OPT_LIST shows, comma-separated. */
static void list_exports(NbdTransport *t, char *out, size_t size) {
        char data[256];
        uint32_t type;

        out[0] = 0;
        send_option(t, NBD_OPT_LIST, NULL, 0);
        while ((type = option_reply(t, NBD_OPT_LIST, data, sizeof(data))) == NBD_REP_SERVER) {
                uint32_t l;

                memcpy(&l, data, 4);
                l = be32toh(l);
                snprintf(out + strlen(out), size - strlen(out), "%s%.*s", out[0] ? "," : "", (int) l,
                         data + 4);
        }
        assert_int_equal(type, NBD_REP_ACK);
}

static uint32_t info_or_go(NbdTransport *t, uint32_t option, const char *name, char *msg, size_t size) {
        uint8_t d[128];
        uint32_t l = (uint32_t) strlen(name), be = htobe32(l), type;

        memcpy(d, &be, 4);
        memcpy(d + 4, name, l);
        memset(d + 4 + l, 0, 2);
        send_option(t, option, d, 4 + l + 2);
        while ((type = option_reply(t, option, msg, size)) == NBD_REP_INFO)
                ;
        return type;
}

/* Connected, past the greeting; with TLS as identity when it is not NULL. */
static NbdTransport *raw_connect(const Fixture *f, const char *identity) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) f->port) };
        uint32_t cflags = htobe32(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
        struct nbd_new_handshake hs;
        NbdTransport *t = NULL, *tls = NULL;
        char data[64];
        int fd;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(nbd_transport_socket_new(fd, &t), 0);
        assert_int_equal(t_read(t, &hs, sizeof(hs)), 0);
        assert_true(be64toh(hs.nbdmagic) == NBD_MAGIC);
        t_write(t, &cflags, sizeof(cflags));
        if (!identity)
                return t;

        send_option(t, NBD_OPT_STARTTLS, NULL, 0);
        assert_int_equal(option_reply(t, NBD_OPT_STARTTLS, data, sizeof(data)), NBD_REP_ACK);
        assert_int_equal(nbd_tls_client_start(fixture_tls(f, identity), t, IO_TIMEOUT, &tls), 0);
        return tls;
}

static void list_shows_only_what_the_identity_may_open(void **state) {
        Fixture *f = *state;
        NbdTransport *t;
        char names[256];

        t = raw_connect(f, "id-a");
        list_exports(t, names, sizeof(names));
        assert_string_equal(names, "mig-a");
        assert_asked("id-a");
        nbd_transport_free(t);

        t = raw_connect(f, "id-b");
        list_exports(t, names, sizeof(names));
        assert_string_equal(names, "mig-b");
        nbd_transport_free(t);

        t = raw_connect(f, NULL);
        list_exports(t, names, sizeof(names));
        assert_string_equal(names, "public");
        assert_asked("(plain)");
        nbd_transport_free(t);
}

static void denied_info_and_go_get_err_policy_and_export_name_closes(void **state) {
        Fixture *f = *state;
        NbdTransport *t;
        char msg[256];
        uint8_t b;

        t = raw_connect(f, "id-a");
        assert_int_equal(info_or_go(t, NBD_OPT_INFO, "mig-b", msg, sizeof(msg)), NBD_REP_ERR_POLICY);
        assert_true(strlen(msg) > 0);
        assert_int_equal(info_or_go(t, NBD_OPT_GO, "mig-b", msg, sizeof(msg)), NBD_REP_ERR_POLICY);
        assert_int_equal(info_or_go(t, NBD_OPT_INFO, "public", msg, sizeof(msg)), NBD_REP_ERR_POLICY);
        assert_int_equal(info_or_go(t, NBD_OPT_INFO, "mig-a", msg, sizeof(msg)), NBD_REP_ACK);
        /* NBD_OPT_EXPORT_NAME cannot be refused: the server closes the connection. */
        send_option(t, NBD_OPT_EXPORT_NAME, "mig-b", 5);
        assert_int_equal(t_read(t, &b, 1), -1);
        nbd_transport_free(t);

        t = raw_connect(f, NULL);
        assert_int_equal(info_or_go(t, NBD_OPT_GO, "mig-a", msg, sizeof(msg)), NBD_REP_ERR_POLICY);
        assert_int_equal(info_or_go(t, NBD_OPT_GO, "public", msg, sizeof(msg)), NBD_REP_ACK);
        nbd_transport_free(t);
}

static void starttls_forgets_the_delta_extension(void **state) {
        Fixture *f = *state;
        struct nbd_hwameid_delta_option d = {
                .algorithm = htobe32(NBD_HWAMEID_DELTA_XXH3_128),
                .block_size = htobe32(65536),
        };
        struct nbd_request rq = {
                .magic = htobe32(NBD_REQUEST_MAGIC),
                .type = htobe16(NBD_CMD_HWAMEID_HASH),
                .cookie = htobe64(7),
                .count = htobe32(65536),
        };
        struct nbd_simple_reply rep;
        NbdTransport *t, *tls = NULL;
        char msg[256];

        t = raw_connect(f, NULL);
        send_option(t, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
        assert_int_equal(option_reply(t, NBD_OPT_STRUCTURED_REPLY, msg, sizeof(msg)), NBD_REP_ACK);
        send_option(t, NBD_OPT_HWAMEID_DELTA, &d, sizeof(d));
        assert_int_equal(option_reply(t, NBD_OPT_HWAMEID_DELTA, msg, sizeof(msg)), NBD_REP_ACK);
        send_option(t, NBD_OPT_STARTTLS, NULL, 0);
        assert_int_equal(option_reply(t, NBD_OPT_STARTTLS, msg, sizeof(msg)), NBD_REP_ACK);
        assert_int_equal(nbd_tls_client_start(f->client_a, t, IO_TIMEOUT, &tls), 0);

        /* Structured replies are forgotten too: the delta option is invalid until they are back. */
        send_option(tls, NBD_OPT_HWAMEID_DELTA, &d, sizeof(d));
        assert_int_equal(option_reply(tls, NBD_OPT_HWAMEID_DELTA, msg, sizeof(msg)), NBD_REP_ERR_INVALID);
        send_option(tls, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
        assert_int_equal(option_reply(tls, NBD_OPT_STRUCTURED_REPLY, msg, sizeof(msg)), NBD_REP_ACK);
        assert_int_equal(info_or_go(tls, NBD_OPT_GO, "mig-a", msg, sizeof(msg)), NBD_REP_ACK);

        /* Without the option the command is unknown. */
        t_write(tls, &rq, sizeof(rq));
        assert_int_equal(t_read(tls, &rep, sizeof(rep)), 0);
        assert_true(be32toh(rep.magic) == NBD_SIMPLE_REPLY_MAGIC);
        assert_int_equal(be32toh(rep.error), NBD_EINVAL);
        assert_true(be64toh(rep.cookie) == 7);
        nbd_transport_free(tls);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(policy_decides_which_export_each_identity_opens),
                cmocka_unit_test(list_shows_only_what_the_identity_may_open),
                cmocka_unit_test(denied_info_and_go_get_err_policy_and_export_name_closes),
                cmocka_unit_test(starttls_forgets_the_delta_extension),
        };

        /* OpenSSL writes with write(): a peer that went away must not kill the test. */
        signal(SIGPIPE, SIG_IGN);
        return cmocka_run_group_tests_name("nbd-server-policy", tests, setup, teardown);
}
