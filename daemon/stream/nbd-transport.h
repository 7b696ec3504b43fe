/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The byte stream under the NBD client and server: read and write with timeouts on one
 * connection. The plain socket transport is here; TLS (nbd-tls.h) wraps it.
 */

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "basic/macro.h"
#include "basic/time-util.h"

/* ---- Transport ---- */

typedef struct NbdTransport NbdTransport;

typedef struct NbdTransportOps {
        /* Reads up to len bytes: > 0 bytes read, 0 at end of stream, -ETIMEDOUT when nothing arrived
         * within timeout (USEC_INFINITY waits forever), other -errno on failure. */
        ssize_t (*read)(NbdTransport *t, void *buf, size_t len, usec_t timeout);
        /* Writes some of iov: > 0 bytes written, -ETIMEDOUT when nothing could be written within
         * timeout, other -errno. */
        ssize_t (*write)(NbdTransport *t, const struct iovec *iov, int n_iov, usec_t timeout);
        /* Makes blocked and later reads and writes fail or see end of stream; any thread may call it. */
        void (*shutdown)(NbdTransport *t);
        void (*free)(NbdTransport *t);
} NbdTransportOps;

struct NbdTransport {
        const NbdTransportOps *ops;
};

/* A plain stream socket; takes ownership of fd (made non-blocking). */
int nbd_transport_socket_new(int fd, NbdTransport **ret);
NbdTransport *nbd_transport_free(NbdTransport *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(NbdTransport *, nbd_transport_free);

/* The socket of a plain socket transport, -ENOTSOCK for any other transport. */
int nbd_transport_fd(NbdTransport *t);

/* Waits until fd is ready for events (POLLIN, POLLOUT): 0, -ETIMEDOUT, or -errno. */
int nbd_fd_wait(int fd, short events, usec_t timeout);
