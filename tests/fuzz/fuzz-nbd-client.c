/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The NBD client's negotiation and reply parsing on an arbitrary server byte stream.
 *
 * Input: 1 header byte, then everything the "server" sends.
 *   h bit 0    do not negotiate structured replies
 *   h bits 1-3 the transport hands out at most 2^(bits) * 3 + 1 bytes per read (short reads)
 *   h bit 4    ask for export "disk" (else the default export "")
 * After a successful negotiation the client submits READ, BLOCK_STATUS, WRITE, WRITE_ZEROES, FLUSH
 * and TRIM (those the "server" advertised; cookies are 0x1_0000000N for the N-th accepted request),
 * then reads replies until the stream ends or breaks the protocol.
 * Oracles: every accepted request completes exactly once; block status extents are contiguous,
 * non-empty and within the request; nothing is written outside the read buffer (ASan).
 */

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stream/nbd-client.h"
#include "stream/nbd-protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct MemTransport {
        NbdTransport base;
        const uint8_t *data;
        size_t size, pos, chunk;
        bool shut;
} MemTransport;

static ssize_t mem_read(NbdTransport *t, void *buf, size_t len, usec_t timeout) {
        MemTransport *m = (MemTransport *) t;
        size_t n;

        if (m->shut || m->pos >= m->size)
                return 0;
        n = MIN(MIN(len, m->size - m->pos), m->chunk);
        memcpy(buf, m->data + m->pos, n);
        m->pos += n;
        return (ssize_t) n;
}

static ssize_t mem_write(NbdTransport *t, const struct iovec *iov, int n_iov, usec_t timeout) {
        MemTransport *m = (MemTransport *) t;
        size_t total = 0;

        if (m->shut)
                return -EPIPE;
        for (int i = 0; i < n_iov; i++)
                total += iov[i].iov_len;
        return (ssize_t) total;
}

static void mem_shutdown(NbdTransport *t) {
        ((MemTransport *) t)->shut = true;
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

#define N_REQ 6

typedef struct Req {
        unsigned completions;
        bool accepted;
        NbdCommand cmd;
        size_t n_extents;
} Req;

static void on_done(void *userdata, int error) {
        Req *r = userdata;

        if (error > 0)
                abort();
        r->completions++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static uint8_t readbuf[65536], writebuf[4096];
        static NbdExtent extents[64];
        NbdConnectOptions opts = { .connect_timeout = 5 * USEC_PER_SEC, .io_timeout = 5 * USEC_PER_SEC };
        NbdClient *c = NULL;
        MemTransport *m;
        Req reqs[N_REQ] = {};
        const NbdExportInfo *info;
        uint64_t len;

        if (size < 1)
                return 0;
        m = calloc(1, sizeof(*m));
        if (!m)
                return 0;
        m->base.ops = &mem_ops;
        m->data = data + 1;
        m->size = size - 1;
        m->chunk = ((size_t) 1 << ((data[0] >> 1) & 7)) * 3 + 1;
        opts.no_structured_replies = data[0] & 1;

        if (nbd_client_new_manual(&m->base, data[0] & 0x10 ? "disk" : "", &opts, &c) < 0)
                return 0;
        info = nbd_client_info(c);
        if (info->block_min == 0 || info->block_max < info->block_min || info->size > INT64_MAX)
                abort();

        len = MIN(info->size, (uint64_t) sizeof(readbuf));
        len -= len % info->block_min;
        if (len > 0) {
                reqs[0].cmd = (NbdCommand){ .type = NBD_CMD_READ,
                                            .length = (uint32_t) MIN(len, info->block_max),
                                            .buf = readbuf };
                reqs[1].cmd = (NbdCommand){ .type = NBD_CMD_BLOCK_STATUS,
                                            .length = (uint32_t) len,
                                            .extents = extents,
                                            .max_extents = ELEMENTSOF(extents),
                                            .n_extents = &reqs[1].n_extents };
                reqs[2].cmd = (NbdCommand){ .type = NBD_CMD_WRITE,
                                            .length = (uint32_t) MIN(len, MIN((uint64_t) sizeof(writebuf),
                                                                              (uint64_t) info->block_max)),
                                            .buf = writebuf };
                if (reqs[2].cmd.length % info->block_min != 0)
                        reqs[2].cmd.length = 0;
                reqs[3].cmd = (NbdCommand){ .type = NBD_CMD_WRITE_ZEROES,
                                            .flags = NBD_CMD_FLAG_FAST_ZERO,
                                            .length = (uint32_t) len };
                reqs[5].cmd = (NbdCommand){ .type = NBD_CMD_TRIM, .length = (uint32_t) len };
        }
        reqs[4].cmd = (NbdCommand){ .type = NBD_CMD_FLUSH };
        for (unsigned i = 0; i < N_REQ; i++) {
                if (reqs[i].cmd.type != NBD_CMD_FLUSH && reqs[i].cmd.length == 0)
                        continue;
                reqs[i].accepted = nbd_client_submit(c, &reqs[i].cmd, on_done, &reqs[i]) == 0;
        }

        while (nbd_client_dispatch_one(c) > 0)
                ;
        c = nbd_client_free(c);

        for (unsigned i = 0; i < N_REQ; i++)
                if (reqs[i].completions != (reqs[i].accepted ? 1U : 0U))
                        abort();
        if (reqs[1].accepted) {
                uint64_t pos = 0;
                if (reqs[1].n_extents > ELEMENTSOF(extents))
                        abort();
                for (size_t i = 0; i < reqs[1].n_extents; i++) {
                        if (extents[i].offset != pos || extents[i].length == 0)
                                abort();
                        pos += extents[i].length;
                }
                if (pos > reqs[1].cmd.length)
                        abort();
        }
        return 0;
}
