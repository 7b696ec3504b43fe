/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stream/nbd-server: a connection serving many requests at once. Pipelined requests, then
 * NBD_CMD_DISC, are all answered before the server closes, with worker threads and without
 * (nbd_server_serve() then reports a clean end); a protocol error after pipelined requests still
 * ends the connection with the error; removing an export, or freeing the server, while requests
 * are in flight returns only once no worker touches the device (ASan would see a worker using the
 * closed BlockDev); a client that never reads its replies is dropped after the write timeout
 * while its requests hold every buffer.
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
#include "volume/blockio.h"

#define EXPORT_SIZE (64U * 1024U * 1024U)
#define MIB         (1024U * 1024U)

static char path[] = "/var/tmp/test-nbd-server-workers.XXXXXX";

static int setup(void **state) {
        int fd = mkstemp(path);

        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, EXPORT_SIZE), 0);
        close(fd);
        return 0;
}

static int teardown(void **state) {
        unlink(path);
        return 0;
}

static void send_all(int fd, const void *p, size_t len) {
        const uint8_t *d = p;

        while (len > 0) {
                ssize_t n = send(fd, d, len, MSG_NOSIGNAL);

                assert_true(n > 0);
                d += n;
                len -= (size_t) n;
        }
}

/* 0, or -1 when the stream ended first. */
static int recv_all(int fd, void *p, size_t len) {
        uint8_t *d = p;

        while (len > 0) {
                ssize_t n = recv(fd, d, len, 0);

                if (n <= 0)
                        return -1;
                d += n;
                len -= (size_t) n;
        }
        return 0;
}

/* Greeting, flags and NBD_OPT_GO for the default export, by hand. */
static void go_default(int fd) {
        struct nbd_new_handshake hs;
        uint32_t cflags = htobe32(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
        struct nbd_new_option o = {
                .version = htobe64(NBD_OPTS_MAGIC),
                .option = htobe32(NBD_OPT_GO),
                .optlen = htobe32(6),
        };
        uint8_t data[6] = {};

        assert_int_equal(recv_all(fd, &hs, sizeof(hs)), 0);
        assert_true(be64toh(hs.nbdmagic) == NBD_MAGIC);
        send_all(fd, &cflags, sizeof(cflags));
        send_all(fd, &o, sizeof(o));
        send_all(fd, data, sizeof(data));
        for (;;) {
                struct nbd_fixed_new_option_reply r;
                uint8_t d[256];

                assert_int_equal(recv_all(fd, &r, sizeof(r)), 0);
                assert_true(be32toh(r.replylen) <= sizeof(d));
                assert_int_equal(recv_all(fd, d, be32toh(r.replylen)), 0);
                if (be32toh(r.reply) == NBD_REP_ACK)
                        return;
                assert_int_equal(be32toh(r.reply), NBD_REP_INFO);
        }
}

static void send_request(int fd, uint16_t type, uint64_t cookie, uint64_t offset, uint32_t count,
                         const void *payload) {
        struct nbd_request rq = {
                .magic = htobe32(NBD_REQUEST_MAGIC),
                .type = htobe16(type),
                .cookie = htobe64(cookie),
                .offset = htobe64(offset),
                .count = htobe32(count),
        };

        send_all(fd, &rq, sizeof(rq));
        if (payload)
                send_all(fd, payload, count);
}

typedef struct ServeJob {
        NbdServer *server;
        NbdTransport *t;
        int result;
} ServeJob;

static void *serve_thread(void *arg) {
        ServeJob *j = arg;

        j->result = nbd_server_serve(j->server, j->t, "pair");
        return NULL;
}

/* A server on one end of a socket pair, served by nbd_server_serve() on a thread; the other end
 * is returned. */
static int start_serving(NbdServer *s, ServeJob *job, pthread_t *thread) {
        int sv[2];

        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(nbd_transport_socket_new(sv[0], &job->t), 0);
        job->server = s;
        job->result = 1;
        assert_int_equal(pthread_create(thread, NULL, serve_thread, job), 0);
        return sv[1];
}

/* 32 writes of 1 MiB, 8 reads, a FLUSH and DISC, sent before any reply is read: every one is
 * answered, then the connection closes, and serving ended cleanly. */
static void pipelined_then_disc(unsigned workers) {
        _cleanup_(nbd_server_freep) NbdServer *s = NULL;
        _cleanup_(blockdev_closep) BlockDev *dev = NULL;
        _cleanup_free_ uint8_t *payload = malloc(MIB), *back = malloc(MIB);
        bool seen[41] = {};
        ServeJob job;
        pthread_t thread;
        int fd;
        uint8_t b;

        assert_non_null(payload);
        assert_non_null(back);
        for (size_t i = 0; i < MIB; i++)
                payload[i] = (uint8_t) (i * 7 + workers);
        assert_int_equal(blockdev_open(path, 0, &dev), 0);
        assert_int_equal(nbd_server_new(&s), 0);
        nbd_server_set_workers(s, workers);
        assert_int_equal(nbd_server_add_export(s, "", dev, false, NULL), 0);
        fd = start_serving(s, &job, &thread);
        go_default(fd);

        /* The socket pair buffers far less than this: the server reads while it writes replies,
         * and the replies (16 bytes each) fit in the pair's buffer until they are read below. */
        for (unsigned i = 0; i < 32; i++)
                send_request(fd, NBD_CMD_WRITE, i, (uint64_t) i * MIB, MIB, payload);
        for (unsigned i = 0; i < 8; i++)
                send_request(fd, NBD_CMD_READ, 32 + i, (uint64_t) i * MIB, 16, NULL);
        send_request(fd, NBD_CMD_FLUSH, 40, 0, 0, NULL);
        send_request(fd, NBD_CMD_DISC, 41, 0, 0, NULL);

        for (unsigned n = 0; n < 41; n++) {
                struct nbd_simple_reply r;
                uint64_t cookie;

                assert_int_equal(recv_all(fd, &r, sizeof(r)), 0);
                assert_true(be32toh(r.magic) == NBD_SIMPLE_REPLY_MAGIC);
                assert_int_equal(be32toh(r.error), 0);
                cookie = be64toh(r.cookie);
                assert_true(cookie < 41 && !seen[cookie]);
                seen[cookie] = true;
                if (cookie >= 32 && cookie < 40)
                        assert_int_equal(recv_all(fd, back, 16), 0);
        }
        assert_int_equal(recv_all(fd, &b, 1), -1); /* closed after the last reply */
        close(fd);
        assert_int_equal(pthread_join(thread, NULL), 0);
        assert_int_equal(job.result, 0);
        assert_int_equal(nbd_server_n_connections(s), 0);

        for (unsigned i = 0; i < 32; i++) {
                assert_int_equal(blockdev_pread(dev, back, MIB, (uint64_t) i * MIB), 0);
                assert_memory_equal(back, payload, MIB);
        }
}

static void pipelined_requests_then_disc_with_workers(void **state) {
        pipelined_then_disc(NBD_SERVER_WORKERS_DEFAULT);
}

static void pipelined_requests_then_disc_without_workers(void **state) {
        pipelined_then_disc(0);
}

static void protocol_error_after_pipelined_requests(void **state) {
        _cleanup_(nbd_server_freep) NbdServer *s = NULL;
        _cleanup_(blockdev_closep) BlockDev *dev = NULL;
        static const uint8_t garbage[28] = { 0xde, 0xad };
        uint8_t buf[64];
        ServeJob job;
        pthread_t thread;
        int fd;

        assert_int_equal(blockdev_open(path, 0, &dev), 0);
        assert_int_equal(nbd_server_new(&s), 0);
        assert_int_equal(nbd_server_add_export(s, "", dev, false, NULL), 0);
        fd = start_serving(s, &job, &thread);
        go_default(fd);
        for (unsigned i = 0; i < 4; i++)
                send_request(fd, NBD_CMD_READ, i, 0, 16, NULL);
        send_all(fd, garbage, sizeof(garbage));
        /* Whatever replies still come, the connection ends and serving reports the error. */
        while (recv(fd, buf, sizeof(buf), 0) > 0)
                ;
        close(fd);
        assert_int_equal(pthread_join(thread, NULL), 0);
        assert_int_equal(job.result, -EPROTO);
        assert_int_equal(nbd_server_n_connections(s), 0);
}

/* ---- Ending connections with requests in flight ---- */

typedef struct Counter {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        unsigned done, failed;
} Counter;

static void on_complete(void *userdata, int error) {
        Counter *c = userdata;

        pthread_mutex_lock(&c->lock);
        c->done++;
        if (error < 0)
                c->failed++;
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
}

static NbdClient *client_connect(int port, const char *export) {
        NbdConnectOptions o = { .max_in_flight = 64 };
        NbdClient *c = NULL;
        NbdUri uri = {};
        char s[128];

        snprintf(s, sizeof(s), "nbd://127.0.0.1:%d/%s", port, export);
        assert_int_equal(nbd_uri_parse(s, &uri), 0);
        assert_int_equal(nbd_client_connect(&uri, &o, &c), 0);
        nbd_uri_done(&uri);
        return c;
}

/* Submits n writes of 1 MiB (as many as the client allows in flight). Returns how many were
 * accepted: submitting stops at the first refusal (the connection was ended). */
static unsigned submit_writes(NbdClient *c, uint8_t *payload, unsigned n, Counter *counter) {
        unsigned i;

        for (i = 0; i < n; i++) {
                NbdCommand cmd = {
                        .type = NBD_CMD_WRITE,
                        .offset = (uint64_t) (i % 64) * MIB,
                        .length = MIB,
                        .buf = payload,
                };

                if (nbd_client_submit(c, &cmd, on_complete, counter) < 0)
                        break;
        }
        return i;
}

static void remove_export_waits_for_requests_in_flight(void **state) {
        _cleanup_(nbd_server_freep) NbdServer *s = NULL;
        BlockDev *dev = NULL;
        _cleanup_free_ uint8_t *payload = calloc(1, MIB);
        Counter counter = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };
        NbdClient *c;
        unsigned submitted;

        assert_non_null(payload);
        assert_int_equal(blockdev_open(path, 0, &dev), 0);
        assert_int_equal(nbd_server_new(&s), 0);
        assert_int_equal(nbd_server_add_export(s, "x", dev, false, NULL), 0);
        assert_int_equal(nbd_server_listen(s, "127.0.0.1:0"), 0);
        assert_int_equal(nbd_server_start(s), 0);

        c = client_connect(nbd_server_get_port(s), "x");
        submitted = submit_writes(c, payload, 64, &counter);
        assert_int_equal(submitted, 64);
        assert_int_equal(nbd_server_remove_export(s, "x"), 0);
        /* Nothing of the server touches the device any more: close it now. */
        dev = blockdev_close(dev);

        /* The connection is unregistered in the same step that releases the export. */
        assert_int_equal(nbd_server_n_connections(s), 0);
        nbd_client_free(c); /* completes what is still in flight */
        assert_int_equal(counter.done, submitted);
}

static void free_server_with_requests_in_flight(void **state) {
        NbdServer *s = NULL;
        _cleanup_(blockdev_closep) BlockDev *dev = NULL;
        _cleanup_free_ uint8_t *payload = calloc(1, MIB);
        Counter counter = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };
        NbdClient *c;
        unsigned submitted;

        assert_non_null(payload);
        assert_int_equal(blockdev_open(path, 0, &dev), 0);
        assert_int_equal(nbd_server_new(&s), 0);
        assert_int_equal(nbd_server_add_export(s, "", dev, false, NULL), 0);
        assert_int_equal(nbd_server_listen(s, "127.0.0.1:0"), 0);
        assert_int_equal(nbd_server_start(s), 0);

        c = client_connect(nbd_server_get_port(s), "");
        submitted = submit_writes(c, payload, 64, &counter);
        assert_int_equal(submitted, 64);
        s = nbd_server_free(s); /* joins every connection and its workers */
        nbd_client_free(c);
        assert_int_equal(counter.done, submitted);
}

/* A client that sends writes and never reads a reply: once the replies fill the socket, the
 * workers block in the write; the reader, with every buffer taken, waits; the write timeout then
 * drops the client, and everything is released. */
typedef struct Dropped {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool dropped;
        int error;
} Dropped;

static void on_disconnect(void *userdata, const char *peer, const char *export_name, int error,
                          const char *reason) {
        Dropped *d = userdata;

        pthread_mutex_lock(&d->lock);
        d->dropped = true;
        d->error = error;
        pthread_cond_broadcast(&d->cond);
        pthread_mutex_unlock(&d->lock);
}

static void client_not_reading_replies_is_dropped_after_the_write_timeout(void **state) {
        NbdServer *s = NULL;
        _cleanup_(blockdev_closep) BlockDev *dev = NULL;
        Dropped d = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0 };
        struct sockaddr_in sa = { .sin_family = AF_INET };
        int fd, small = 4096;

        assert_int_equal(blockdev_open(path, 0, &dev), 0);
        assert_int_equal(nbd_server_new(&s), 0);
        nbd_server_set_write_timeout(s, 200 * USEC_PER_MSEC);
        nbd_server_set_disconnect_callback(s, on_disconnect, &d);
        assert_int_equal(nbd_server_add_export(s, "", dev, true, NULL), 0);
        assert_int_equal(nbd_server_listen(s, "127.0.0.1:0"), 0);
        assert_int_equal(nbd_server_start(s), 0);

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
        sa.sin_port = htons((uint16_t) nbd_server_get_port(s));
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        go_default(fd);
        /* 1 MiB reads, far more than the socket and the 64 MiB of buffers hold, never read back.
         * The server stops reading requests at some point; sending then fails or blocks, so it
         * is done without waiting, and whatever did not fit is simply not sent. */
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
        for (unsigned i = 0; i < 1024; i++) {
                struct nbd_request rq = {
                        .magic = htobe32(NBD_REQUEST_MAGIC),
                        .type = htobe16(NBD_CMD_READ),
                        .cookie = htobe64(i),
                        .offset = htobe64((uint64_t) (i % 64) * MIB),
                        .count = htobe32(MIB),
                };
                if (send(fd, &rq, sizeof(rq), MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t) sizeof(rq))
                        break;
        }

        pthread_mutex_lock(&d.lock);
        while (!d.dropped)
                pthread_cond_wait(&d.cond, &d.lock);
        pthread_mutex_unlock(&d.lock);
        assert_int_equal(d.error, -ETIMEDOUT);
        s = nbd_server_free(s); /* returns once the connection and its workers are gone */
        close(fd);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(pipelined_requests_then_disc_with_workers),
                cmocka_unit_test(pipelined_requests_then_disc_without_workers),
                cmocka_unit_test(protocol_error_after_pipelined_requests),
                cmocka_unit_test(remove_export_waits_for_requests_in_flight),
                cmocka_unit_test(free_server_with_requests_in_flight),
                cmocka_unit_test(client_not_reading_replies_is_dropped_after_the_write_timeout),
        };

        signal(SIGPIPE, SIG_IGN);
        return cmocka_run_group_tests_name("nbd-server-workers", tests, setup, teardown);
}
