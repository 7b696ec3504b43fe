/* SPDX-License-Identifier: Apache-2.0 */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "basic/macro.h"
#include "stream/nbd-transport.h"

/* ---- Socket transport ---- */

typedef struct SocketTransport {
        NbdTransport base;
        int fd;
} SocketTransport;

static int poll_timeout_ms(usec_t timeout) {
        if (timeout == USEC_INFINITY)
                return -1;
        return (int) MIN(DIV_ROUND_UP(timeout, USEC_PER_MSEC), (usec_t) INT32_MAX);
}

int nbd_fd_wait(int fd, short events, usec_t timeout) {
        struct pollfd p = { .fd = fd, .events = events };
        int r;

        for (;;) {
                r = poll(&p, 1, poll_timeout_ms(timeout));
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        return -errno;
                return r == 0 ? -ETIMEDOUT : 0;
        }
}

static ssize_t socket_read(NbdTransport *t, void *buf, size_t len, usec_t timeout) {
        SocketTransport *s = (SocketTransport *) t;
        ssize_t n;
        int r;

        for (;;) {
                n = recv(s->fd, buf, len, 0);
                if (n >= 0)
                        return n;
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN)
                        return -errno;
                r = nbd_fd_wait(s->fd, POLLIN, timeout);
                if (r < 0)
                        return r;
        }
}

static ssize_t socket_write(NbdTransport *t, const struct iovec *iov, int n_iov, usec_t timeout) {
        SocketTransport *s = (SocketTransport *) t;
        struct msghdr m = { .msg_iov = (struct iovec *) iov, .msg_iovlen = n_iov };
        ssize_t n;
        int r;

        for (;;) {
                n = sendmsg(s->fd, &m, MSG_NOSIGNAL);
                if (n >= 0)
                        return n;
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN)
                        return -errno;
                r = nbd_fd_wait(s->fd, POLLOUT, timeout);
                if (r < 0)
                        return r;
        }
}

static void socket_shutdown(NbdTransport *t) {
        SocketTransport *s = (SocketTransport *) t;

        (void) shutdown(s->fd, SHUT_RDWR);
}

static void socket_free(NbdTransport *t) {
        SocketTransport *s = (SocketTransport *) t;

        safe_close(s->fd);
        free(s);
}

static const NbdTransportOps socket_ops = {
        .read = socket_read,
        .write = socket_write,
        .shutdown = socket_shutdown,
        .free = socket_free,
};

int nbd_transport_socket_new(int fd, NbdTransport **ret) {
        _cleanup_close_ int owned = fd;
        SocketTransport *s;
        int fl;

        assert(fd >= 0);
        assert(ret);

        fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
                return -errno;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->base.ops = &socket_ops;
        s->fd = TAKE_FD(owned);
        *ret = &s->base;
        return 0;
}

NbdTransport *nbd_transport_free(NbdTransport *t) {
        if (t)
                t->ops->free(t);
        return NULL;
}

int nbd_transport_fd(NbdTransport *t) {
        assert(t);
        if (t->ops != &socket_ops)
                return -ENOTSOCK;
        return ((SocketTransport *) t)->fd;
}
