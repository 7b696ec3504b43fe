/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stream/nbd-server: the run-time API over loopback sockets: exports added and removed while
 * clients are connected (removal ends their connections and returns only when none touches the
 * device), the connection limit, listening on a given fd, and freeing a server with live clients.
 */

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "basic/macro.h"
#include "stream/nbd-protocol.h"
#include "stream/nbd-server.h"
#include "volume/blockio.h"

static char path[] = "/var/tmp/test-nbd-server.XXXXXX";

static int setup(void **state) {
        int fd = mkstemp(path);

        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, 1024 * 1024), 0);
        assert_int_equal(pwrite(fd, "hello", 5, 4096), 5);
        close(fd);
        return 0;
}

static int teardown(void **state) {
        unlink(path);
        return 0;
}

static void read_exact(int fd, void *buf, size_t len) {
        uint8_t *p = buf;

        while (len > 0) {
                ssize_t n = recv(fd, p, len, 0);
                assert_true(n > 0);
                p += n;
                len -= (size_t) n;
        }
}

/* True if the server closes the connection within 5 s. */
static bool closed_by_server(int fd) {
        struct timeval tv = { .tv_sec = 5 };
        uint8_t b[256];

        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
        for (;;) {
                ssize_t n = recv(fd, b, sizeof(b), 0);
                if (n == 0 || (n < 0 && errno == ECONNRESET))
                        return true;
                if (n < 0)
                        return false;
        }
}

static int connect_port(int port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        assert_true(fd >= 0);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        return fd;
}

/* Handshake and NBD_OPT_GO for name; returns the connected fd in transmission. */
static int connect_go(int port, const char *name) {
        struct nbd_new_handshake hs;
        uint32_t cflags = htobe32(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
        uint8_t opt[16 + 4 + 64 + 2];
        size_t nl = strlen(name), optlen = 4 + nl + 2;
        struct nbd_new_option o = {
                .version = htobe64(NBD_OPTS_MAGIC),
                .option = htobe32(NBD_OPT_GO),
                .optlen = htobe32((uint32_t) optlen),
        };
        uint32_t be = htobe32((uint32_t) nl);
        int fd = connect_port(port);

        read_exact(fd, &hs, sizeof(hs));
        assert_true(be64toh(hs.nbdmagic) == NBD_MAGIC);
        assert_int_equal(send(fd, &cflags, 4, 0), 4);
        memcpy(opt, &o, 16);
        memcpy(opt + 16, &be, 4);
        memcpy(opt + 20, name, nl);
        memset(opt + 20 + nl, 0, 2);
        assert_int_equal(send(fd, opt, 16 + optlen, 0), (ssize_t) (16 + optlen));
        for (;;) {
                struct nbd_fixed_new_option_reply r;
                uint8_t data[256];

                read_exact(fd, &r, sizeof(r));
                assert_true(be32toh(r.replylen) <= sizeof(data));
                read_exact(fd, data, be32toh(r.replylen));
                if (be32toh(r.reply) == NBD_REP_ACK)
                        return fd;
                assert_true(be32toh(r.reply) == NBD_REP_INFO);
        }
}

static void read_hello(int fd) {
        struct nbd_request rq = {
                .magic = htobe32(NBD_REQUEST_MAGIC),
                .type = htobe16(NBD_CMD_READ),
                .cookie = htobe64(99),
                .offset = htobe64(4096),
                .count = htobe32(5),
        };
        struct nbd_simple_reply rep;
        char data[5];

        assert_int_equal(send(fd, &rq, sizeof(rq), 0), (ssize_t) sizeof(rq));
        read_exact(fd, &rep, sizeof(rep));
        assert_int_equal(be32toh(rep.error), 0);
        assert_true(be64toh(rep.cookie) == 99);
        read_exact(fd, data, 5);
        assert_memory_equal(data, "hello", 5);
}

static void wait_connections(NbdServer *s, unsigned n) {
        for (int i = 0; i < 500 && nbd_server_n_connections(s) != n; i++)
                usleep(10000);
        assert_int_equal(nbd_server_n_connections(s), n);
}

static void test_remove_export_ends_its_connections_only(void **state) {
        _cleanup_(nbd_server_freep) NbdServer *s = NULL;
        _cleanup_(blockdev_closep) BlockDev *a = NULL, *b = NULL;
        int port, fa, fb;

        assert_int_equal(blockdev_open(path, 0, &a), 0);
        assert_int_equal(blockdev_open(path, BLOCKDEV_READ_ONLY, &b), 0);
        assert_int_equal(nbd_server_new(&s), 0);
        assert_int_equal(nbd_server_add_export(s, "a", a, false, NULL), 0);
        assert_int_equal(nbd_server_add_export(s, "a", a, false, NULL), -EEXIST);
        assert_int_equal(nbd_server_add_export(s, "b", b, true, "second"), 0);
        assert_int_equal(nbd_server_listen(s, "127.0.0.1:0"), 0);
        port = nbd_server_get_port(s);
        assert_true(port > 0);
        assert_int_equal(nbd_server_start(s), 0);

        fa = connect_go(port, "a");
        fb = connect_go(port, "b");
        read_hello(fa);
        read_hello(fb);
        wait_connections(s, 2);

        assert_int_equal(nbd_server_remove_export(s, "a"), 0);
        assert_int_equal(nbd_server_remove_export(s, "a"), -ENOENT);
        a = blockdev_close(a); /* nothing uses it any more */
        assert_true(closed_by_server(fa));
        read_hello(fb);
        wait_connections(s, 1);

        /* Added again at run time: new clients see it. */
        assert_int_equal(blockdev_open(path, 0, &a), 0);
        assert_int_equal(nbd_server_add_export(s, "a", a, false, NULL), 0);
        close(fa);
        fa = connect_go(port, "a");
        read_hello(fa);

        /* Freeing the server ends the remaining clients. */
        s = nbd_server_free(s);
        assert_true(closed_by_server(fa));
        assert_true(closed_by_server(fb));
        close(fa);
        close(fb);
}

static void test_connection_limit_and_listen_fd(void **state) {
        _cleanup_(nbd_server_freep) NbdServer *s = NULL;
        _cleanup_(blockdev_closep) BlockDev *d = NULL;
        struct sockaddr_in sa = { .sin_family = AF_INET };
        socklen_t len = sizeof(sa);
        int lfd, port, f1, f2, f3;

        lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(lfd >= 0);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(bind(lfd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(listen(lfd, 16), 0);
        assert_int_equal(getsockname(lfd, (struct sockaddr *) &sa, &len), 0);
        port = ntohs(sa.sin_port);

        assert_int_equal(blockdev_open(path, 0, &d), 0);
        assert_int_equal(nbd_server_new(&s), 0);
        nbd_server_set_max_connections(s, 2);
        assert_int_equal(nbd_server_add_export(s, "", d, false, NULL), 0);
        assert_int_equal(nbd_server_listen_fd(s, lfd), 0);
        assert_int_equal(nbd_server_get_port(s), port);
        assert_int_equal(nbd_server_start(s), 0);

        f1 = connect_go(port, "");
        f2 = connect_go(port, "");
        f3 = connect_port(port);
        assert_true(closed_by_server(f3));
        close(f3);
        read_hello(f1);
        close(f1);
        wait_connections(s, 1);
        f1 = connect_go(port, "");
        read_hello(f1);
        close(f1);
        close(f2);
        wait_connections(s, 0);
}

static void test_bad_listen_addresses(void **state) {
        _cleanup_(nbd_server_freep) NbdServer *s = NULL;

        assert_int_equal(nbd_server_new(&s), 0);
        assert_int_equal(nbd_server_listen(s, "127.0.0.1"), -EINVAL);
        assert_int_equal(nbd_server_listen(s, "::1:10809"), -EINVAL);
        assert_int_equal(nbd_server_listen(s, "[::1]"), -EINVAL);
        assert_int_equal(nbd_server_listen(s, "localhost:10809"), -EINVAL);
        assert_int_equal(nbd_server_listen(s, "127.0.0.1:port"), -EINVAL);
        assert_int_equal(nbd_server_start(s), -EBADF);
        assert_int_equal(nbd_server_remove_export(s, "x"), -ENOENT);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_remove_export_ends_its_connections_only),
                cmocka_unit_test(test_connection_limit_and_listen_fd),
                cmocka_unit_test(test_bad_listen_addresses),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
