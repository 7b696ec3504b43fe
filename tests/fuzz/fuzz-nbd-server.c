/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The NBD server's connection handler (handshake and transmission) on arbitrary client bytes,
 * through an in-memory transport, against three exports of a small memfd-backed file: "" (read-write),
 * "ro" (read-only) and "denied" (refused by the export policy, so NBD_REP_ERR_POLICY and the
 * filtered NBD_OPT_LIST run too). STARTTLS is answered by a pass-through "TLS" hook, so the reset
 * of the negotiated state is exercised too. The delta extension (NBD_OPT_HWAMEID_DELTA,
 * NBD_CMD_HWAMEID_HASH) is on the same path. The server runs without worker threads: requests are
 * served in order on the calling thread, so every input replays the same way.
 *
 * Input: a 2-byte header, then the client's byte stream.
 *   h[0]  the transport hands out at most 1 + h[0] * 61 bytes per read (short reads everywhere)
 *   h[1]  < 32: writes fail once h[1] * 40 bytes were written (the client went away mid-reply);
 *         each write takes at most 1000 bytes (partial writes)
 * Oracle: every buffer handed to the transport is non-empty and non-NULL, the connection is unregistered
 * after every input, and ASan/UBSan/LeakSanitizer see nothing.
 */

#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "stream/nbd-protocol.h"
#include "stream/nbd-server.h"
#include "volume/blockio.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define EXPORT_SIZE (1024 * 1024 + 512)

typedef struct MemTransport {
        NbdTransport base;
        const uint8_t *in;
        size_t in_len, in_pos, max_read;
        size_t written, fail_after;
} MemTransport;

static ssize_t mem_read(NbdTransport *t, void *buf, size_t len, usec_t timeout) {
        MemTransport *m = (MemTransport *) t;
        size_t n = MIN(MIN(len, m->in_len - m->in_pos), m->max_read);

        memcpy(buf, m->in + m->in_pos, n);
        m->in_pos += n;
        return (ssize_t) n;
}

/* Takes at most 1000 bytes per call, so the server's partial-write handling runs too. */
static ssize_t mem_write(NbdTransport *t, const struct iovec *iov, int n_iov, usec_t timeout) {
        MemTransport *m = (MemTransport *) t;
        size_t n = 0;

        if (n_iov <= 0)
                abort();
        for (int i = 0; i < n_iov; i++) {
                if (iov[i].iov_len == 0 || !iov[i].iov_base)
                        abort(); /* the server passes only non-empty buffers */
                n += iov[i].iov_len;
        }
        if (m->fail_after > 0 && m->written >= m->fail_after)
                return -EPIPE;
        n = MIN(n, (size_t) 1000);
        m->written += n;
        return (ssize_t) n;
}

static void mem_shutdown(NbdTransport *t) {
}

static void mem_free(NbdTransport *t) {
        free(t);
}

static const NbdTransportOps mem_ops = {
        .read = mem_read,
        .write = mem_write,
        .shutdown = mem_shutdown,
        .free = mem_free,
};

/* "TLS" that passes everything through to the plain transport it owns. */
typedef struct PassTransport {
        NbdTransport base;
        NbdTransport *plain;
} PassTransport;

static ssize_t pass_read(NbdTransport *t, void *buf, size_t len, usec_t timeout) {
        NbdTransport *p = ((PassTransport *) t)->plain;
        return p->ops->read(p, buf, len, timeout);
}

static ssize_t pass_write(NbdTransport *t, const struct iovec *iov, int n_iov, usec_t timeout) {
        NbdTransport *p = ((PassTransport *) t)->plain;
        return p->ops->write(p, iov, n_iov, timeout);
}

static void pass_shutdown(NbdTransport *t) {
        NbdTransport *p = ((PassTransport *) t)->plain;
        p->ops->shutdown(p);
}

static void pass_free(NbdTransport *t) {
        nbd_transport_free(((PassTransport *) t)->plain);
        free(t);
}

static const NbdTransportOps pass_ops = {
        .read = pass_read,
        .write = pass_write,
        .shutdown = pass_shutdown,
        .free = pass_free,
};

static int pass_starttls(void *userdata, NbdTransport *plain, NbdTransport **ret_tls) {
        PassTransport *p = calloc(1, sizeof(*p));

        if (!p)
                return -ENOMEM;
        p->base.ops = &pass_ops;
        p->plain = plain;
        *ret_tls = &p->base;
        return 0;
}

static NbdServer *server;
static BlockDev *dev;

static int deny_policy(void *userdata, const char *tls_identity, const char *export_name) {
        return strcmp(export_name, "denied") == 0 ? -EACCES : 0;
}

static void setup(void) {
        char path[64];
        int fd;

        fd = memfd_create("fuzz-nbd-export", MFD_CLOEXEC);
        if (fd < 0 || ftruncate(fd, EXPORT_SIZE) < 0)
                abort();
        /* Some data among holes, so block status has something to report. */
        if (pwrite(fd, "data", 4, 65536) != 4 || pwrite(fd, "more", 4, 512 * 1024 + 7) != 4)
                abort();
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        if (blockdev_open(path, 0, &dev) < 0)
                abort();
        close(fd);
        if (nbd_server_new(&server) < 0)
                abort();
        nbd_server_set_handshake_timeout(server, 0);
        nbd_server_set_workers(server, 0);
        nbd_server_set_tls(server, pass_starttls, NULL, false);
        nbd_server_set_export_policy(server, deny_policy, NULL);
        if (nbd_server_add_export(server, "", dev, false, "fuzz export") < 0 ||
            nbd_server_add_export(server, "ro", dev, true, NULL) < 0 ||
            nbd_server_add_export(server, "denied", dev, false, NULL) < 0)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        MemTransport *m;

        if (size < 2)
                return 0;
        if (!server)
                setup();

        m = calloc(1, sizeof(*m));
        if (!m)
                return 0;
        m->base.ops = &mem_ops;
        m->max_read = 1 + (size_t) data[0] * 61;
        m->fail_after = data[1] < 32 ? (size_t) data[1] * 40 : 0;
        m->in = data + 2;
        m->in_len = size - 2;

        (void) nbd_server_serve(server, &m->base, "fuzz");
        if (nbd_server_n_connections(server) != 0)
                abort();
        return 0;
}
