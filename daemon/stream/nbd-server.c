/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The NBD server (see nbd-server.h for the threads and limits).
 *
 * A connection runs on its own thread in two phases:
 *   handshake     server greeting, client flags, then options until GO / EXPORT_NAME (enter
 *                 transmission) or ABORT; a deadline bounds the whole phase;
 *   transmission  the connection's thread (the reader) reads a request header, validates every
 *                 field against the export and the hard caps, takes a buffer from the
 *                 connection's pool (the payload of a WRITE, room for the reply of a READ,
 *                 BLOCK_STATUS or HASH), reads the payload, and queues the request; workers take
 *                 requests off the queue, do the I/O on the shared BlockDev and write the reply
 *                 under the write lock (one reply or chunk at a time, whole). Rejected requests
 *                 are queued too, with their error, so the reader never writes (but once: the
 *                 reply to an oversized WRITE before it drops the client).
 * Input goes through a small read buffer (many headers per recv() when the client pipelines);
 * payloads of a read-buffer's size or more are received straight into their pool buffer.
 *
 * Memory: pool buffers come in power-of-two classes from 64 KiB to NBD_MAX_PAYLOAD, are reused
 * (fresh memory is slow to touch on these machines), and all of them, in use or free, count
 * against NBD_SERVER_CONN_BUFFER_MAX: when a new one would exceed it, free ones are released, and
 * when none is free the reader waits for a worker to give one back. Any single request fits.
 *
 * Locks: server->lock (exports, connections) may be held when taking a connection's lock, never
 * the other way round. conn->lock guards the queue, the pool, the worker counts and the drop
 * reason; conn->write_lock serialises replies; neither is held across a blocking call but the
 * reply write itself.
 *
 * Errors: functions return negative errno for "drop the connection"; per-request failures are
 * replies, not errors. conn_drop() records why a client was dropped for the callback. A worker
 * that cannot write a reply marks the connection dead (conn_fail()): the transport is shut down,
 * the reader stops, and what is still queued is discarded unexecuted.
 */

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>

#include <xxhash.h>

#include "../basic/list.h"
#include "../basic/time-util.h"
#include "../log/log.h"
#include "nbd-protocol.h"
#include "nbd-server.h"
#include "nbd-tls.h"

#define READ_BUFFER_SIZE   (16U * 1024U)
#define IO_BUFFER_ALIGN    4096U
#define META_ID_BASE_ALLOC 1U
#define PEER_MAX           64
#define POOL_SHIFT_MIN     16U /* 64 KiB */
#define POOL_SHIFT_MAX     25U /* 32 MiB: NBD_MAX_PAYLOAD */
#define POOL_CLASSES       (POOL_SHIFT_MAX - POOL_SHIFT_MIN + 1U)
#define HASH_CHUNK_MAX     (4U << 20) /* bytes read at once for NBD_CMD_HWAMEID_HASH */

_Static_assert((1U << POOL_SHIFT_MAX) == NBD_MAX_PAYLOAD, "the largest buffer holds any payload");
_Static_assert(NBD_SERVER_CONN_BUFFER_MAX >= (1U << POOL_SHIFT_MAX), "one request always fits");
_Static_assert(HASH_CHUNK_MAX >= NBD_HWAMEID_DELTA_BLOCK_MAX, "a hash chunk holds a block");

typedef struct NbdExport NbdExport;
typedef struct NbdConn NbdConn;

struct NbdExport {
        char *name;
        char *description;
        BlockDev *dev;
        bool read_only;
        bool fast_zero;
        bool unaligned_needs_lock; /* direct I/O with alignment > 1: unaligned writes are RMW */
        unsigned users;            /* connections in transmission on it */
        pthread_mutex_t rmw_lock;
        LIST_FIELDS(NbdExport, exports);
};

struct NbdServer {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        LIST_HEAD(NbdExport, exports);
        LIST_HEAD(NbdConn, conns);
        unsigned n_conns;
        unsigned max_conns;
        unsigned workers;
        uint64_t handshake_timeout;
        uint64_t write_timeout;
        NbdServerStartTls starttls;
        void *tls_userdata;
        bool tls_required;
        NbdServerDisconnectCallback disconnect_cb;
        void *disconnect_userdata;
        NbdServerExportPolicy policy;
        void *policy_userdata;

        int listen_fd;
        int stop_fd; /* eventfd: wakes the acceptor */
        pthread_t acceptor;
        bool acceptor_running;
};

/* A pool buffer: 1 << (POOL_SHIFT_MIN + cls) bytes at data, aligned for O_DIRECT. */
typedef struct NbdBuffer {
        struct NbdBuffer *next; /* on a free list */
        uint8_t *data;
        unsigned cls;
} NbdBuffer;

/* A request between the reader and a worker. */
typedef struct NbdRequest {
        struct NbdRequest *next; /* queue */
        uint16_t type, flags;
        uint64_t cookie, offset;
        uint32_t count;
        int error;      /* < 0: rejected, reply with this */
        NbdBuffer *buf; /* payload or reply room, NULL if none is needed */
} NbdRequest;

struct NbdConn {
        NbdServer *server;
        NbdTransport *t; /* swapped under server->lock (STARTTLS), fixed in transmission */
        char peer[PEER_MAX];
        bool shut;            /* server asked it to end (under server->lock) */
        usec_t read_deadline; /* CLOCK_MONOTONIC; 0 = none */
        usec_t write_timeout; /* per write without progress; 0 = none */

        /* handshake state (read-only once transmission starts) */
        bool no_zeroes;
        bool tls;
        bool structured;
        bool meta_base_allocation;
        char *meta_export;                                /* the export SET_META_CONTEXT named */
        uint32_t delta_block_size;                        /* NBD_OPT_HWAMEID_DELTA acknowledged: > 0 */
        uint8_t delta_zero_digest[NBD_HWAMEID_HASH_SIZE]; /* of a whole block of zeroes */

        /* transmission (read-only once it starts) */
        NbdExport *export;
        uint64_t size;
        uint16_t eflags;
        unsigned max_workers;

        /* the reader's input buffer */
        uint8_t *rbuf;
        size_t rpos, rlen;

        pthread_mutex_t lock;
        pthread_cond_t work_cond;   /* workers: a request was queued, or closing */
        pthread_cond_t reader_cond; /* reader: a request finished (memory, a slot), or dead */
        NbdRequest *queue_head, *queue_tail;
        unsigned n_queued;          /* in the queue */
        unsigned n_pending;         /* queued or being served */
        unsigned n_workers, n_idle; /* started; waiting for work */
        pthread_t *workers;         /* [max_workers] */
        bool closing;               /* workers end once the queue is empty */
        bool dead;                  /* no more replies: serve nothing more */
        NbdBuffer *pool_free[POOL_CLASSES];
        size_t pool_held; /* bytes of all pool buffers, in use or free */
        int drop_error;
        const char *drop_reason;

        pthread_mutex_t write_lock; /* one reply at a time on the wire */

        LIST_FIELDS(NbdConn, conns);
};

static void conn_kick(NbdConn *c);

/* ---- Exports ---- */

static NbdExport *export_free(NbdExport *e) {
        if (!e)
                return NULL;
        pthread_mutex_destroy(&e->rmw_lock);
        free(e->name);
        free(e->description);
        return mfree(e);
}

/* Under s->lock. */
static NbdExport *server_find_export(NbdServer *s, const char *name) {
        LIST_FOREACH (exports, e, s->exports)
                if (strcmp(e->name, name) == 0)
                        return e;
        return NULL;
}

static bool valid_string(const char *s) {
        return s && strlen(s) <= NBD_MAX_STRING;
}

int nbd_server_add_export(NbdServer *s, const char *name, BlockDev *dev, bool read_only,
                          const char *description) {
        NbdExport *e;

        assert(s);
        assert(dev);

        if (!valid_string(name) || (description && !valid_string(description)))
                return -EINVAL;

        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        pthread_mutex_init(&e->rmw_lock, NULL);
        e->name = strdup(name);
        e->description = description ? strdup(description) : NULL;
        if (!e->name || (description && !e->description)) {
                export_free(e);
                return -ENOMEM;
        }
        e->dev = dev;
        e->read_only = read_only;
        e->fast_zero = true;
        e->unaligned_needs_lock = blockdev_alignment(dev) > 1;

        pthread_mutex_lock(&s->lock);
        if (server_find_export(s, name)) {
                pthread_mutex_unlock(&s->lock);
                export_free(e);
                return -EEXIST;
        }
        LIST_PREPEND(exports, s->exports, e);
        pthread_mutex_unlock(&s->lock);
        log_debug("nbd: export '%s' added (%" PRIu64 " bytes%s)", name, blockdev_size(dev),
                  read_only ? ", read-only" : "");
        return 0;
}

int nbd_server_set_export_fast_zero(NbdServer *s, const char *name, bool fast_zero) {
        NbdExport *e;

        assert(s);
        assert(name);

        pthread_mutex_lock(&s->lock);
        e = server_find_export(s, name);
        if (e)
                e->fast_zero = fast_zero;
        pthread_mutex_unlock(&s->lock);
        return e ? 0 : -ENOENT;
}

int nbd_server_remove_export(NbdServer *s, const char *name) {
        NbdExport *e;

        assert(s);
        assert(name);

        pthread_mutex_lock(&s->lock);
        e = server_find_export(s, name);
        if (!e) {
                pthread_mutex_unlock(&s->lock);
                return -ENOENT;
        }
        LIST_REMOVE(exports, s->exports, e);
        LIST_FOREACH (conns, c, s->conns)
                if (c->export == e)
                        conn_kick(c);
        /* Users drop to 0 once their workers are joined: nothing touches dev any more. */
        while (e->users > 0)
                pthread_cond_wait(&s->cond, &s->lock);
        pthread_mutex_unlock(&s->lock);

        log_debug("nbd: export '%s' removed", name);
        export_free(e);
        return 0;
}

/* ---- Server object ---- */

int nbd_server_new(NbdServer **ret) {
        NbdServer *s;

        assert(ret);

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->cond, NULL);
        s->max_conns = NBD_SERVER_MAX_CONNECTIONS_DEFAULT;
        s->workers = NBD_SERVER_WORKERS_DEFAULT;
        s->handshake_timeout = NBD_SERVER_HANDSHAKE_TIMEOUT_USEC;
        s->write_timeout = NBD_SERVER_WRITE_TIMEOUT_USEC;
        s->listen_fd = -EBADF;
        s->stop_fd = -EBADF;
        *ret = s;
        return 0;
}

NbdServer *nbd_server_free(NbdServer *s) {
        if (!s)
                return NULL;

        if (s->acceptor_running) {
                uint64_t one = 1;

                if (write(s->stop_fd, &one, sizeof(one)) != sizeof(one))
                        log_debug_errno(errno, "nbd: failed to wake the acceptor, ignoring: %m");
                (void) pthread_join(s->acceptor, NULL);
                s->acceptor_running = false;
        }

        pthread_mutex_lock(&s->lock);
        LIST_FOREACH (conns, c, s->conns)
                conn_kick(c);
        while (s->n_conns > 0)
                pthread_cond_wait(&s->cond, &s->lock);
        pthread_mutex_unlock(&s->lock);

        LIST_FOREACH_SAFE (exports, e, n, s->exports) {
                LIST_REMOVE(exports, s->exports, e);
                export_free(e);
        }
        safe_close(s->listen_fd);
        safe_close(s->stop_fd);
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
        return mfree(s);
}

void nbd_server_set_max_connections(NbdServer *s, unsigned n) {
        assert(s);
        pthread_mutex_lock(&s->lock);
        s->max_conns = MAX(n, 1U);
        pthread_mutex_unlock(&s->lock);
}

void nbd_server_set_handshake_timeout(NbdServer *s, uint64_t usec) {
        assert(s);
        pthread_mutex_lock(&s->lock);
        s->handshake_timeout = usec;
        pthread_mutex_unlock(&s->lock);
}

void nbd_server_set_write_timeout(NbdServer *s, uint64_t usec) {
        assert(s);
        pthread_mutex_lock(&s->lock);
        s->write_timeout = usec;
        pthread_mutex_unlock(&s->lock);
}

void nbd_server_set_tls(NbdServer *s, NbdServerStartTls starttls, void *userdata, bool require) {
        assert(s);
        pthread_mutex_lock(&s->lock);
        s->starttls = starttls;
        s->tls_userdata = userdata;
        s->tls_required = require && starttls;
        pthread_mutex_unlock(&s->lock);
}

void nbd_server_set_disconnect_callback(NbdServer *s, NbdServerDisconnectCallback cb, void *userdata) {
        assert(s);
        pthread_mutex_lock(&s->lock);
        s->disconnect_cb = cb;
        s->disconnect_userdata = userdata;
        pthread_mutex_unlock(&s->lock);
}

void nbd_server_set_workers(NbdServer *s, unsigned n) {
        assert(s);
        pthread_mutex_lock(&s->lock);
        s->workers = MIN(n, NBD_SERVER_WORKERS_MAX);
        pthread_mutex_unlock(&s->lock);
}

void nbd_server_set_export_policy(NbdServer *s, NbdServerExportPolicy policy, void *userdata) {
        assert(s);
        pthread_mutex_lock(&s->lock);
        s->policy = policy;
        s->policy_userdata = userdata;
        pthread_mutex_unlock(&s->lock);
}

unsigned nbd_server_n_connections(NbdServer *s) {
        unsigned n;

        assert(s);
        pthread_mutex_lock(&s->lock);
        n = s->n_conns;
        pthread_mutex_unlock(&s->lock);
        return n;
}

/* ---- Connection I/O ---- */

/* Records why the client is dropped (the first reason wins); returns error, or -EPROTO for a
 * clean end (error 0) so that callers can return it as "stop". Any thread; not under c->lock. */
static int conn_drop(NbdConn *c, int error, const char *reason) {
        pthread_mutex_lock(&c->lock);
        if (!c->drop_reason) {
                c->drop_reason = reason;
                c->drop_error = error;
        }
        pthread_mutex_unlock(&c->lock);
        log_debug_errno(error, "nbd: dropping client %s: %s", c->peer, reason);
        return error < 0 ? error : -EPROTO;
}

/* No more replies can go out: stop the reader and everything queued. Not under c->lock. */
static int conn_fail(NbdConn *c, int error, const char *reason) {
        int r = conn_drop(c, error, reason);

        pthread_mutex_lock(&c->lock);
        c->dead = true;
        pthread_cond_broadcast(&c->work_cond);
        pthread_cond_broadcast(&c->reader_cond);
        pthread_mutex_unlock(&c->lock);
        c->t->ops->shutdown(c->t);
        return r;
}

/* The server ends the connection (under s->lock): blocked reads and writes fail, waits end. */
static void conn_kick(NbdConn *c) {
        c->shut = true;
        pthread_mutex_lock(&c->lock);
        if (!c->drop_reason) {
                c->drop_reason = "the server ended the connection (export removed or server stopped)";
                c->drop_error = -ESHUTDOWN;
        }
        c->dead = true;
        pthread_cond_broadcast(&c->work_cond);
        pthread_cond_broadcast(&c->reader_cond);
        pthread_mutex_unlock(&c->lock);
        c->t->ops->shutdown(c->t);
        log_debug("nbd: ending the connection of client %s", c->peer);
}

static bool conn_is_dead(NbdConn *c) {
        bool dead;

        pthread_mutex_lock(&c->lock);
        dead = c->dead;
        pthread_mutex_unlock(&c->lock);
        return dead;
}

/*
 * Exactly len bytes. -ENODATA: the stream ended before the first byte (a clean end at a message
 * boundary); -ECONNRESET: it ended in the middle; -ETIMEDOUT: the read deadline passed.
 */
static ssize_t conn_transport_read(NbdConn *c, void *p, size_t len) {
        usec_t timeout = USEC_INFINITY;

        if (c->read_deadline > 0) {
                usec_t n = now(CLOCK_MONOTONIC);

                if (n >= c->read_deadline)
                        return -ETIMEDOUT;
                timeout = c->read_deadline - n;
        }
        return c->t->ops->read(c->t, p, len, timeout);
}

static int conn_read(NbdConn *c, void *p, size_t len) {
        uint8_t *d = p;
        size_t got = 0;

        while (got < len) {
                size_t avail = c->rlen - c->rpos;
                ssize_t n;

                if (avail > 0) {
                        size_t k = MIN(avail, len - got);

                        memcpy(d + got, c->rbuf + c->rpos, k);
                        c->rpos += k;
                        got += k;
                        continue;
                }
                c->rpos = c->rlen = 0;
                if (len - got >= READ_BUFFER_SIZE) {
                        n = conn_transport_read(c, d + got, len - got);
                        if (n > 0) {
                                got += (size_t) n;
                                continue;
                        }
                } else {
                        n = conn_transport_read(c, c->rbuf, READ_BUFFER_SIZE);
                        if (n > 0) {
                                c->rlen = (size_t) n;
                                continue;
                        }
                }
                if (n < 0)
                        return (int) n;
                return got == 0 ? -ENODATA : -ECONNRESET;
        }
        return 0;
}

/* Reads and throws away len bytes (the payload of a rejected WRITE). */
static int conn_skip(NbdConn *c, size_t len) {
        uint8_t scratch[4096];

        while (len > 0) {
                size_t k = MIN(len, sizeof(scratch));
                int r = conn_read(c, scratch, k);

                if (r < 0)
                        return r == -ENODATA ? -ECONNRESET : r;
                len -= k;
        }
        return 0;
}

/* All of iov (at most 4 entries; empty ones are skipped). */
static int conn_writev(NbdConn *c, const struct iovec *iov_in, int n_in) {
        usec_t timeout = c->write_timeout > 0 ? c->write_timeout : USEC_INFINITY;
        struct iovec iov[4], *v = iov;
        int n = 0;

        assert(n_in >= 0 && (size_t) n_in <= ELEMENTSOF(iov));
        for (int i = 0; i < n_in; i++)
                if (iov_in[i].iov_len > 0)
                        iov[n++] = iov_in[i];

        while (n > 0) {
                ssize_t k = c->t->ops->write(c->t, v, n, timeout);

                if (k < 0)
                        return (int) k;
                if (k == 0)
                        return -EPIPE;
                while (n > 0 && (size_t) k >= v->iov_len) {
                        k -= (ssize_t) v->iov_len;
                        v++;
                        n--;
                }
                if (n > 0) {
                        v->iov_base = (uint8_t *) v->iov_base + k;
                        v->iov_len -= (size_t) k;
                }
        }
        return 0;
}

/* One whole reply (or structured chunk) in transmission, under the write lock; nothing once the
 * connection is dead. Any thread. */
static int reply_writev(NbdConn *c, const struct iovec *iov, int n) {
        int r;

        pthread_mutex_lock(&c->write_lock);
        r = conn_is_dead(c) ? -ECONNABORTED : conn_writev(c, iov, n);
        pthread_mutex_unlock(&c->write_lock);
        return r;
}

/* ---- Buffer pool (under c->lock) ---- */

static size_t pool_class_size(unsigned cls) {
        return (size_t) 1 << (POOL_SHIFT_MIN + cls);
}

static unsigned pool_class(size_t size) {
        unsigned cls = 0;

        assert(size <= pool_class_size(POOL_CLASSES - 1));
        while (pool_class_size(cls) < size)
                cls++;
        return cls;
}

static void pool_release_one(NbdConn *c, unsigned cls) {
        NbdBuffer *b = c->pool_free[cls];

        c->pool_free[cls] = b->next;
        c->pool_held -= pool_class_size(cls);
        free(b->data);
        free(b);
}

/* Gives every free buffer back to the system. */
static void pool_trim(NbdConn *c) {
        for (unsigned cls = 0; cls < POOL_CLASSES; cls++)
                while (c->pool_free[cls])
                        pool_release_one(c, cls);
}

static bool pool_has_free(NbdConn *c) {
        for (unsigned cls = 0; cls < POOL_CLASSES; cls++)
                if (c->pool_free[cls])
                        return true;
        return false;
}

/* A buffer of at least size bytes: a free one of its class, or a new one within the limit (free
 * ones of other classes are released to make room). -EAGAIN: wait for one to come back. */
static int pool_get(NbdConn *c, size_t size, NbdBuffer **ret) {
        unsigned cls = pool_class(size);
        size_t bytes = pool_class_size(cls);
        NbdBuffer *b;
        void *p = NULL;

        b = c->pool_free[cls];
        if (b) {
                c->pool_free[cls] = b->next;
                b->next = NULL;
                *ret = b;
                return 0;
        }
        for (unsigned k = POOL_CLASSES; k > 0 && c->pool_held + bytes > NBD_SERVER_CONN_BUFFER_MAX; k--)
                while (c->pool_free[k - 1] && c->pool_held + bytes > NBD_SERVER_CONN_BUFFER_MAX)
                        pool_release_one(c, k - 1);
        if (c->pool_held + bytes > NBD_SERVER_CONN_BUFFER_MAX)
                return -EAGAIN;

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        if (posix_memalign(&p, IO_BUFFER_ALIGN, bytes) != 0) {
                free(b);
                return -ENOMEM;
        }
        b->data = p;
        b->cls = cls;
        c->pool_held += bytes;
        *ret = b;
        return 0;
}

static void pool_put(NbdConn *c, NbdBuffer *b) {
        if (!b)
                return;
        b->next = c->pool_free[b->cls];
        c->pool_free[b->cls] = b;
}

/* ---- Handshake ---- */

static int opt_reply(NbdConn *c, uint32_t option, uint32_t type, const void *d1, size_t l1, const void *d2,
                     size_t l2) {
        struct nbd_fixed_new_option_reply h = {
                .magic = htobe64(NBD_REP_MAGIC),
                .option = htobe32(option),
                .reply = htobe32(type),
                .replylen = htobe32((uint32_t) (l1 + l2)),
        };
        struct iovec iov[3] = {
                { &h, sizeof(h) },
                { (void *) d1, l1 },
                { (void *) d2, l2 },
        };

        return conn_writev(c, iov, 3);
}

static int opt_ack(NbdConn *c, uint32_t option) {
        return opt_reply(c, option, NBD_REP_ACK, NULL, 0, NULL, 0);
}

static int opt_error(NbdConn *c, uint32_t option, uint32_t type, const char *msg) {
        log_debug("nbd: client %s: option %" PRIu32 ": %s", c->peer, option, msg);
        return opt_reply(c, option, type, msg, strlen(msg), NULL, 0);
}

static uint16_t get_u16(const uint8_t *p) {
        uint16_t v;
        memcpy(&v, p, sizeof(v));
        return be16toh(v);
}

static uint32_t get_u32(const uint8_t *p) {
        uint32_t v;
        memcpy(&v, p, sizeof(v));
        return be32toh(v);
}

/* Export flags as this connection will see them. */
static uint16_t export_flags(const NbdConn *c, const NbdExport *e) {
        uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_CAN_MULTI_CONN;

        if (e->read_only)
                f |= NBD_FLAG_READ_ONLY;
        else
                f |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
                     NBD_FLAG_SEND_FAST_ZERO;
        if (c->structured)
                f |= NBD_FLAG_SEND_DF;
        return f;
}

/* A copy of what a connection needs from an export, taken under the lock. */
typedef struct ExportInfo {
        char name[NBD_MAX_STRING + 1];
        char description[NBD_MAX_STRING + 1];
        bool has_description;
        uint64_t size;
        uint16_t eflags;
        uint32_t preferred;
} ExportInfo;

/* Looks the export up and, if bind, makes it the connection's export. -ENOENT if none. */
static int conn_lookup_export(NbdConn *c, const char *name, bool bind, ExportInfo *ret) {
        NbdServer *s = c->server;
        NbdExport *e;

        pthread_mutex_lock(&s->lock);
        e = server_find_export(s, name);
        if (!e || c->shut) {
                pthread_mutex_unlock(&s->lock);
                return -ENOENT;
        }
        if (ret) {
                snprintf(ret->name, sizeof(ret->name), "%s", e->name);
                ret->has_description = e->description != NULL;
                snprintf(ret->description, sizeof(ret->description), "%s",
                         e->description ? e->description : "");
                ret->size = blockdev_size(e->dev);
                ret->eflags = export_flags(c, e);
                ret->preferred = (uint32_t) MAX((size_t) NBD_SERVER_PREFERRED_BLOCK_SIZE,
                                                MIN(blockdev_alignment(e->dev), (size_t) 65536));
        }
        if (bind) {
                e->users++;
                c->export = e;
                c->size = blockdev_size(e->dev);
                c->eflags = export_flags(c, e);
        }
        pthread_mutex_unlock(&s->lock);
        return 0;
}

/* Asks the export policy whether this connection may open name: 0 or the policy's negative errno. */
static int conn_check_policy(NbdConn *c, const char *name) {
        NbdServer *s = c->server;
        NbdServerExportPolicy policy;
        const char *identity;
        void *userdata;
        int r;

        pthread_mutex_lock(&s->lock);
        policy = s->policy;
        userdata = s->policy_userdata;
        pthread_mutex_unlock(&s->lock);
        if (!policy)
                return 0;

        identity = c->tls ? nbd_tls_transport_identity(c->t) : NULL;
        r = policy(userdata, identity, name);
        if (r >= 0)
                return 0;
        log_debug_errno(r, "nbd: client %s: export '%s' denied by the policy (%s%s%s): %m", c->peer, name,
                        identity ? "TLS identity '" : "plain connection", identity ?: "",
                        identity ? "'" : "");
        return r;
}

static int handle_export_name(NbdConn *c, const uint8_t *data, uint32_t len) {
        struct nbd_export_name_option_reply r = {};
        char name[NBD_MAX_STRING + 1];
        struct iovec iov[1];

        if (c->server->tls_required && !c->tls)
                return conn_drop(c, -EACCES, "NBD_OPT_EXPORT_NAME without TLS");
        if (len > NBD_MAX_STRING)
                return conn_drop(c, -ENAMETOOLONG, "export name too long");
        memcpy(name, data, len);
        name[len] = 0;
        if (strlen(name) != len)
                return conn_drop(c, -EINVAL, "export name contains NUL");
        /* NBD_OPT_EXPORT_NAME cannot fail: the connection is closed instead (as the spec says). */
        if (conn_check_policy(c, name) < 0)
                return conn_drop(c, -EACCES, "NBD_OPT_EXPORT_NAME: export denied by the policy");
        if (c->meta_export && strcmp(c->meta_export, name) != 0)
                c->meta_base_allocation = false;
        if (conn_lookup_export(c, name, true, NULL) < 0)
                return conn_drop(c, -ENOENT, "NBD_OPT_EXPORT_NAME: no such export");

        r.exportsize = htobe64(c->size);
        r.eflags = htobe16(c->eflags);
        iov[0] = (struct iovec){ &r, c->no_zeroes ? offsetof(struct nbd_export_name_option_reply, zeroes)
                                                  : sizeof(r) };
        return conn_writev(c, iov, 1) < 0 ? conn_drop(c, -EPIPE, "write failed") : 1;
}

static int handle_list(NbdConn *c, uint32_t option, uint32_t len) {
        NbdServer *s = c->server;
        _cleanup_free_ uint8_t *list = NULL;
        size_t size = 0, n = 0;
        int r;

        if (len != 0)
                return opt_error(c, option, NBD_REP_ERR_INVALID, "NBD_OPT_LIST carries no data");

        /* A snapshot, sent after unlocking: per export a u32 length (host order) and the reply
         * data, which is a u32 name length, the name and the description. */
        pthread_mutex_lock(&s->lock);
        LIST_FOREACH (exports, e, s->exports)
                size += 8 + strlen(e->name) + strlen(e->description ? e->description : "");
        list = malloc(MAX(size, (size_t) 1));
        if (list)
                LIST_FOREACH (exports, e, s->exports) {
                        const char *d = e->description ? e->description : "";
                        uint32_t l = (uint32_t) strlen(e->name), dl = (uint32_t) strlen(d);
                        uint32_t total = 4 + l + dl, be = htobe32(l);

                        memcpy(list + n, &total, 4);
                        memcpy(list + n + 4, &be, 4);
                        memcpy(list + n + 8, e->name, l);
                        memcpy(list + n + 8 + l, d, dl);
                        n += 4 + (size_t) total;
                }
        pthread_mutex_unlock(&s->lock);
        if (!list)
                return opt_error(c, option, NBD_REP_ERR_PLATFORM, "out of memory");

        for (size_t i = 0; i < n;) {
                char name[NBD_MAX_STRING + 1];
                uint32_t total, l;

                memcpy(&total, list + i, 4);
                l = get_u32(list + i + 4);
                memcpy(name, list + i + 8, l);
                name[l] = 0;
                /* Exports this client may not open are not shown to it. */
                if (conn_check_policy(c, name) >= 0) {
                        r = opt_reply(c, option, NBD_REP_SERVER, list + i + 4, total, NULL, 0);
                        if (r < 0)
                                return r;
                }
                i += 4 + (size_t) total;
        }
        return opt_ack(c, option);
}

static int handle_info_go(NbdConn *c, uint32_t option, const uint8_t *data, uint32_t len) {
        char name[NBD_MAX_STRING + 1];
        bool want_name = false, want_description = false;
        ExportInfo *info;
        uint32_t namelen;
        uint16_t n_info;
        int r;

        if (len < 6)
                return opt_error(c, option, NBD_REP_ERR_INVALID, "option too short");
        namelen = get_u32(data);
        if (namelen > len - 6)
                return opt_error(c, option, NBD_REP_ERR_INVALID, "name length exceeds the option");
        if (namelen > NBD_MAX_STRING)
                return opt_error(c, option, NBD_REP_ERR_INVALID, "export name too long");
        n_info = get_u16(data + 4 + namelen);
        if ((uint64_t) len != 4 + (uint64_t) namelen + 2 + 2 * (uint64_t) n_info)
                return opt_error(c, option, NBD_REP_ERR_INVALID, "information request count mismatch");
        memcpy(name, data + 4, namelen);
        name[namelen] = 0;
        if (strlen(name) != namelen)
                return opt_error(c, option, NBD_REP_ERR_INVALID, "export name contains NUL");
        for (uint16_t i = 0; i < n_info; i++) {
                uint16_t type = get_u16(data + 4 + namelen + 2 + 2 * (size_t) i);

                if (type == NBD_INFO_NAME)
                        want_name = true;
                else if (type == NBD_INFO_DESCRIPTION)
                        want_description = true;
        }

        info = malloc(sizeof(*info));
        if (!info)
                return opt_error(c, option, NBD_REP_ERR_PLATFORM, "out of memory");
        _cleanup_free_ ExportInfo *info_free = info;

        if (conn_check_policy(c, name) < 0)
                return opt_error(c, option, NBD_REP_ERR_POLICY, "access to this export is denied");
        if (option == NBD_OPT_GO && c->meta_export && strcmp(c->meta_export, name) != 0)
                c->meta_base_allocation = false;
        r = conn_lookup_export(c, name, option == NBD_OPT_GO, info);
        if (r < 0)
                return opt_error(c, option, NBD_REP_ERR_UNKNOWN, "no such export");

        struct nbd_fixed_new_option_reply_info_export ie = {
                .info = htobe16(NBD_INFO_EXPORT),
                .exportsize = htobe64(info->size),
                .eflags = htobe16(info->eflags),
        };
        r = opt_reply(c, option, NBD_REP_INFO, &ie, sizeof(ie), NULL, 0);
        if (r < 0)
                return r;

        struct nbd_fixed_new_option_reply_info_block_size bs = {
                .info = htobe16(NBD_INFO_BLOCK_SIZE),
                .minimum = htobe32(1),
                .preferred = htobe32(info->preferred),
                .maximum = htobe32(NBD_MAX_PAYLOAD),
        };
        r = opt_reply(c, option, NBD_REP_INFO, &bs, sizeof(bs), NULL, 0);
        if (r < 0)
                return r;

        if (want_name) {
                uint16_t t = htobe16(NBD_INFO_NAME);

                r = opt_reply(c, option, NBD_REP_INFO, &t, sizeof(t), info->name, strlen(info->name));
                if (r < 0)
                        return r;
        }
        if (want_description && info->has_description) {
                uint16_t t = htobe16(NBD_INFO_DESCRIPTION);

                r = opt_reply(c, option, NBD_REP_INFO, &t, sizeof(t), info->description,
                              strlen(info->description));
                if (r < 0)
                        return r;
        }
        r = opt_ack(c, option);
        if (r < 0)
                return r;
        return option == NBD_OPT_GO ? 1 : 0;
}

static bool meta_query_matches(const uint8_t *q, uint32_t l, bool list) {
        static const char base[] = "base:";
        static const char alloc[] = NBD_META_BASE_ALLOCATION;

        if (l == strlen(alloc) && memcmp(q, alloc, l) == 0)
                return true;
        return list && l == strlen(base) && memcmp(q, base, l) == 0;
}

static int handle_meta_context(NbdConn *c, uint32_t option, const uint8_t *data, uint32_t len) {
        bool list = option == NBD_OPT_LIST_META_CONTEXT, match = false;
        char name[NBD_MAX_STRING + 1];
        uint32_t namelen, n_queries;
        size_t p;
        int r;

        if (!list && !c->structured)
                return opt_error(c, option, NBD_REP_ERR_INVALID, "structured replies not negotiated");
        if (len < 8)
                return opt_error(c, option, NBD_REP_ERR_INVALID, "option too short");
        namelen = get_u32(data);
        if (namelen > len - 8)
                return opt_error(c, option, NBD_REP_ERR_INVALID, "name length exceeds the option");
        if (namelen > NBD_MAX_STRING)
                return opt_error(c, option, NBD_REP_ERR_INVALID, "export name too long");
        memcpy(name, data + 4, namelen);
        name[namelen] = 0;
        if (strlen(name) != namelen)
                return opt_error(c, option, NBD_REP_ERR_INVALID, "export name contains NUL");
        n_queries = get_u32(data + 4 + namelen);
        p = 8 + (size_t) namelen;
        if (n_queries > (len - p) / 4)
                return opt_error(c, option, NBD_REP_ERR_INVALID, "query count exceeds the option");

        /* Validate every query before answering anything. */
        for (uint32_t i = 0; i < n_queries; i++) {
                uint32_t l;

                if (len - p < 4)
                        return opt_error(c, option, NBD_REP_ERR_INVALID, "truncated query");
                l = get_u32(data + p);
                p += 4;
                if (l > len - p || l > NBD_MAX_STRING)
                        return opt_error(c, option, NBD_REP_ERR_INVALID, "query length exceeds the option");
                if (meta_query_matches(data + p, l, list))
                        match = true;
                p += l;
        }
        if (p != len)
                return opt_error(c, option, NBD_REP_ERR_INVALID, "trailing bytes after the queries");
        if (n_queries == 0 && list)
                match = true;

        if (conn_check_policy(c, name) < 0)
                return opt_error(c, option, NBD_REP_ERR_POLICY, "access to this export is denied");
        if (conn_lookup_export(c, name, false, NULL) < 0)
                return opt_error(c, option, NBD_REP_ERR_UNKNOWN, "no such export");

        if (!list) {
                char *copy = strdup(name);

                if (!copy)
                        return opt_error(c, option, NBD_REP_ERR_PLATFORM, "out of memory");
                free(c->meta_export);
                c->meta_export = copy;
                c->meta_base_allocation = match;
        }
        if (match) {
                uint32_t id = htobe32(META_ID_BASE_ALLOC);

                r = opt_reply(c, option, NBD_REP_META_CONTEXT, &id, sizeof(id), NBD_META_BASE_ALLOCATION,
                              strlen(NBD_META_BASE_ALLOCATION));
                if (r < 0)
                        return r;
        }
        return opt_ack(c, option);
}

static int handle_starttls(NbdConn *c, uint32_t len) {
        NbdServer *s = c->server;
        NbdTransport *tls = NULL;
        int r;

        if (len != 0)
                return opt_error(c, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID,
                                 "NBD_OPT_STARTTLS carries no data");
        if (!s->starttls)
                return opt_error(c, NBD_OPT_STARTTLS, NBD_REP_ERR_UNSUP, "TLS is not configured");
        if (c->tls)
                return opt_error(c, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, "TLS is already active");
        /* Nothing may follow STARTTLS in plaintext. */
        if (c->rpos != c->rlen)
                return conn_drop(c, -EPROTO, "data after NBD_OPT_STARTTLS");
        r = opt_ack(c, NBD_OPT_STARTTLS);
        if (r < 0)
                return r;
        r = s->starttls(s->tls_userdata, c->t, &tls);
        if (r < 0)
                return conn_drop(c, r, "TLS handshake failed");

        pthread_mutex_lock(&s->lock);
        c->t = tls;
        if (c->shut)
                c->t->ops->shutdown(c->t);
        pthread_mutex_unlock(&s->lock);

        /* Everything negotiated in plaintext is forgotten. */
        c->tls = true;
        c->structured = false;
        c->meta_base_allocation = false;
        c->meta_export = mfree(c->meta_export);
        c->delta_block_size = 0;
        return 0;
}

/* XXH3-128 of len zero bytes, in canonical form. */
static int digest_zeroes(uint64_t len, uint8_t out[static NBD_HWAMEID_HASH_SIZE]) {
        static const uint8_t zeroes[4096];
        XXH3_state_t *st;
        XXH128_canonical_t canon;

        st = XXH3_createState();
        if (!st)
                return -ENOMEM;
        if (XXH3_128bits_reset(st) == XXH_ERROR) {
                XXH3_freeState(st);
                return -EIO;
        }
        while (len > 0) {
                size_t k = (size_t) MIN(len, (uint64_t) sizeof(zeroes));

                if (XXH3_128bits_update(st, zeroes, k) == XXH_ERROR) {
                        XXH3_freeState(st);
                        return -EIO;
                }
                len -= k;
        }
        XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(st));
        XXH3_freeState(st);
        memcpy(out, canon.digest, NBD_HWAMEID_HASH_SIZE);
        return 0;
}

/* NBD_OPT_HWAMEID_DELTA (nbd-protocol.h, "The delta extension"). A refused one leaves an earlier
 * setting as it was. */
static int handle_delta(NbdConn *c, uint32_t option, const uint8_t *data, uint32_t len) {
        struct nbd_hwameid_delta_option o;
        uint8_t zero_digest[NBD_HWAMEID_HASH_SIZE];
        uint32_t algorithm, block_size;

        if (!c->structured)
                return opt_error(c, option, NBD_REP_ERR_INVALID, "structured replies not negotiated");
        if (len != sizeof(o))
                return opt_error(c, option, NBD_REP_ERR_INVALID, "the delta option carries 8 bytes");
        memcpy(&o, data, sizeof(o));
        algorithm = be32toh(o.algorithm);
        block_size = be32toh(o.block_size);
        if (algorithm != NBD_HWAMEID_DELTA_XXH3_128)
                return opt_error(c, option, NBD_REP_ERR_INVALID, "unknown hash algorithm");
        if (block_size < NBD_HWAMEID_DELTA_BLOCK_MIN || block_size > NBD_HWAMEID_DELTA_BLOCK_MAX ||
            (block_size & (block_size - 1)) != 0)
                return opt_error(c, option, NBD_REP_ERR_INVALID,
                                 "the block size must be a power of two from 4 KiB to 4 MiB");
        if (digest_zeroes(block_size, zero_digest) < 0)
                return opt_error(c, option, NBD_REP_ERR_PLATFORM, "out of memory");

        c->delta_block_size = block_size;
        memcpy(c->delta_zero_digest, zero_digest, sizeof(zero_digest));
        log_debug("nbd: client %s: delta extension on, XXH3-128 over %" PRIu32 "-byte blocks", c->peer,
                  block_size);
        return opt_ack(c, option);
}

/* 1: enter transmission; 0: ended by ABORT or end of stream; <0: dropped. */
static int conn_handshake(NbdConn *c) {
        NbdServer *s = c->server;
        struct nbd_new_handshake hs = {
                .nbdmagic = htobe64(NBD_MAGIC),
                .version = htobe64(NBD_OPTS_MAGIC),
                .gflags = htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
        };
        struct iovec iov = { &hs, sizeof(hs) };
        uint32_t cflags;
        int r;

        c->read_deadline = s->handshake_timeout > 0 ? now(CLOCK_MONOTONIC) + s->handshake_timeout : 0;

        r = conn_writev(c, &iov, 1);
        if (r < 0)
                return conn_drop(c, r, "failed to send the greeting");
        r = conn_read(c, &cflags, sizeof(cflags));
        if (r < 0)
                return conn_drop(c, r, "no client flags");
        cflags = be32toh(cflags);
        if (!(cflags & NBD_FLAG_C_FIXED_NEWSTYLE))
                return conn_drop(c, -EPROTO, "client does not speak fixed newstyle");
        if (cflags & ~(uint32_t) (NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
                return conn_drop(c, -EPROTO, "unknown client flags");
        c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;

        for (;;) {
                struct nbd_new_option o;
                _cleanup_free_ uint8_t *data = NULL;
                uint32_t option, len;

                r = conn_read(c, &o, sizeof(o));
                if (r == -ENODATA)
                        return conn_drop(c, 0, "end of stream during the handshake");
                if (r < 0)
                        return conn_drop(c, r,
                                         r == -ETIMEDOUT ? "handshake timed out" : "option read failed");
                if (be64toh(o.version) != NBD_OPTS_MAGIC)
                        return conn_drop(c, -EPROTO, "bad option magic");
                option = be32toh(o.option);
                len = be32toh(o.optlen);
                if (len > NBD_MAX_OPTION_LENGTH)
                        return conn_drop(c, -EMSGSIZE, "option too long");
                data = malloc(MAX(len, 1U));
                if (!data)
                        return conn_drop(c, -ENOMEM, "out of memory");
                r = conn_read(c, data, len);
                if (r < 0)
                        return conn_drop(c, r == -ENODATA ? -ECONNRESET : r, "truncated option");

                if (s->tls_required && !c->tls && option != NBD_OPT_STARTTLS && option != NBD_OPT_ABORT) {
                        if (option == NBD_OPT_EXPORT_NAME)
                                return conn_drop(c, -EACCES, "NBD_OPT_EXPORT_NAME without TLS");
                        r = opt_error(c, option, NBD_REP_ERR_TLS_REQD, "TLS is required");
                        if (r < 0)
                                return conn_drop(c, r, "write failed");
                        continue;
                }

                switch (option) {
                case NBD_OPT_EXPORT_NAME:
                        r = handle_export_name(c, data, len);
                        break;
                case NBD_OPT_ABORT:
                        (void) opt_ack(c, option); /* the client may already be gone */
                        return conn_drop(c, 0, "NBD_OPT_ABORT");
                case NBD_OPT_LIST:
                        r = handle_list(c, option, len);
                        break;
                case NBD_OPT_STARTTLS:
                        r = handle_starttls(c, len);
                        break;
                case NBD_OPT_INFO:
                case NBD_OPT_GO:
                        r = handle_info_go(c, option, data, len);
                        break;
                case NBD_OPT_STRUCTURED_REPLY:
                        if (len != 0) {
                                r = opt_error(c, option, NBD_REP_ERR_INVALID, "option carries no data");
                                break;
                        }
                        c->structured = true;
                        r = opt_ack(c, option);
                        break;
                case NBD_OPT_LIST_META_CONTEXT:
                case NBD_OPT_SET_META_CONTEXT:
                        r = handle_meta_context(c, option, data, len);
                        break;
                case NBD_OPT_HWAMEID_DELTA:
                        r = handle_delta(c, option, data, len);
                        break;
                default:
                        r = opt_error(c, option, NBD_REP_ERR_UNSUP, "option not supported");
                }
                if (r < 0)
                        return c->drop_reason ? r : conn_drop(c, r, "write failed");
                if (r > 0) {
                        c->read_deadline = 0;
                        return 1;
                }
        }
}

/* ---- Transmission: replies ---- */

static int reply_simple(NbdConn *c, uint64_t cookie, int error, const void *data, size_t len) {
        struct nbd_simple_reply h = {
                .magic = htobe32(NBD_SIMPLE_REPLY_MAGIC),
                .error = htobe32(nbd_errno_to_wire(error)),
                .cookie = htobe64(cookie),
        };
        struct iovec iov[2] = { { &h, sizeof(h) }, { (void *) data, error == 0 ? len : 0 } };

        return reply_writev(c, iov, 2);
}

static int reply_chunk(NbdConn *c, uint64_t cookie, uint16_t type, const void *d1, size_t l1, const void *d2,
                       size_t l2) {
        struct nbd_structured_reply h = {
                .magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC),
                .flags = htobe16(NBD_REPLY_FLAG_DONE),
                .type = htobe16(type),
                .cookie = htobe64(cookie),
                .length = htobe32((uint32_t) (l1 + l2)),
        };
        struct iovec iov[3] = { { &h, sizeof(h) }, { (void *) d1, l1 }, { (void *) d2, l2 } };

        return reply_writev(c, iov, 3);
}

/* Errors of READ, BLOCK_STATUS and HASH are structured once structured replies are on. */
static int reply_error(NbdConn *c, uint64_t cookie, uint16_t type, int error) {
        if (c->structured && (type == NBD_CMD_READ || type == NBD_CMD_BLOCK_STATUS ||
                              (type == NBD_CMD_HWAMEID_HASH && c->delta_block_size > 0))) {
                struct nbd_structured_reply_error e = {
                        .error = htobe32(nbd_errno_to_wire(error)),
                        .len = 0,
                };
                return reply_chunk(c, cookie, NBD_REPLY_TYPE_ERROR, &e, sizeof(e), NULL, 0);
        }
        return reply_simple(c, cookie, error, NULL, 0);
}

/* ---- Transmission: validation ---- */

/* NBD_CMD_HWAMEID_HASH against the contract in nbd-protocol.h. */
static int hash_validate(const NbdConn *c, uint16_t flags, uint64_t offset, uint32_t count) {
        uint32_t bs = c->delta_block_size;

        if (bs == 0)
                return -EINVAL; /* not negotiated: an unknown command */
        if (flags != 0 || count == 0 || count > NBD_HWAMEID_HASH_MAX_COUNT || offset % bs != 0)
                return -EINVAL;
        if (offset > c->size || count > c->size - offset)
                return -EOVERFLOW;
        if (count % bs != 0 && offset + count != c->size)
                return -EINVAL;
        return 0;
}

/* Checks a request against the negotiated features and the export; 0 or a negative errno to reply. */
static int request_validate(const NbdConn *c, uint16_t type, uint16_t flags, uint64_t offset,
                            uint32_t count) {
        static const uint16_t allowed[] = {
                [NBD_CMD_READ] = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_DF,
                [NBD_CMD_WRITE] = NBD_CMD_FLAG_FUA,
                [NBD_CMD_DISC] = NBD_CMD_FLAG_FUA,
                [NBD_CMD_FLUSH] = NBD_CMD_FLAG_FUA,
                [NBD_CMD_TRIM] = NBD_CMD_FLAG_FUA,
                [NBD_CMD_WRITE_ZEROES] = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO,
                [NBD_CMD_BLOCK_STATUS] = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE,
        };
        bool writes = type == NBD_CMD_WRITE || type == NBD_CMD_WRITE_ZEROES || type == NBD_CMD_TRIM;

        if (type == NBD_CMD_HWAMEID_HASH)
                return hash_validate(c, flags, offset, count);
        if (type >= ELEMENTSOF(allowed) || type == NBD_CMD_CACHE)
                return -EINVAL; /* unknown, or not advertised */
        if (flags & ~allowed[type])
                return -EINVAL;
        if ((flags & NBD_CMD_FLAG_FUA) && !(c->eflags & NBD_FLAG_SEND_FUA) && writes)
                return -EINVAL;
        if ((flags & NBD_CMD_FLAG_DF) && !c->structured)
                return -EINVAL;

        switch (type) {
        case NBD_CMD_FLUSH:
                return offset == 0 && count == 0 ? 0 : -EINVAL;
        case NBD_CMD_BLOCK_STATUS:
                if (!c->structured || !c->meta_base_allocation || count == 0)
                        return -EINVAL;
                break;
        case NBD_CMD_READ:
                if (count > NBD_MAX_PAYLOAD)
                        return -EINVAL;
                break;
        default:
                break;
        }
        if (writes && c->export->read_only)
                return -EPERM;
        if (offset > c->size || count > c->size - offset)
                return type == NBD_CMD_WRITE || type == NBD_CMD_WRITE_ZEROES ? -ENOSPC : -EINVAL;
        return 0;
}

static size_t block_status_max_extents(const NbdRequest *req) {
        if (req->flags & NBD_CMD_FLAG_REQ_ONE)
                return 1;
        return MIN((size_t) req->count, (size_t) NBD_SERVER_MAX_EXTENTS); /* extents are >= 1 byte */
}

/* HASH: the digests first (rounded up so that the data that follows stays aligned), then room to
 * read up to HASH_CHUNK_MAX bytes of whole blocks at once. */
static size_t hash_digest_room(const NbdConn *c, uint32_t count) {
        size_t n = (size_t) DIV_ROUND_UP((uint64_t) count, c->delta_block_size);

        return ROUND_UP(n * NBD_HWAMEID_HASH_SIZE, (size_t) IO_BUFFER_ALIGN);
}

static size_t hash_chunk_size(const NbdConn *c, uint32_t count) {
        return (size_t) MIN(ROUND_UP((uint64_t) count, c->delta_block_size), (uint64_t) HASH_CHUNK_MAX);
}

/* Bytes of pool buffer a valid request needs; 0 for none. */
static size_t request_buffer_size(const NbdConn *c, const NbdRequest *req) {
        switch (req->type) {
        case NBD_CMD_READ:
        case NBD_CMD_WRITE:
                return req->count;
        case NBD_CMD_BLOCK_STATUS:
                return block_status_max_extents(req) * sizeof(struct nbd_block_descriptor);
        case NBD_CMD_HWAMEID_HASH:
                return hash_digest_room(c, req->count) + hash_chunk_size(c, req->count);
        default:
                return 0;
        }
}

/* ---- Transmission: commands (on a worker, or on the reader without workers) ---- */

static bool unaligned(const NbdExport *e, uint64_t offset, uint64_t len) {
        size_t a = blockdev_alignment(e->dev);

        return e->unaligned_needs_lock && ((offset | len) & (a - 1)) != 0;
}

static int do_write(NbdConn *c, const NbdRequest *req) {
        NbdExport *e = c->export;
        int r;

        if (req->count == 0)
                return 0;
        if (unaligned(e, req->offset, req->count)) {
                pthread_mutex_lock(&e->rmw_lock);
                r = blockdev_pwrite(e->dev, req->buf->data, req->count, req->offset);
                pthread_mutex_unlock(&e->rmw_lock);
        } else
                r = blockdev_pwrite(e->dev, req->buf->data, req->count, req->offset);
        if (r >= 0 && (req->flags & NBD_CMD_FLAG_FUA))
                r = blockdev_flush(e->dev);
        return r;
}

static int do_zero(NbdConn *c, const NbdRequest *req) {
        NbdExport *e = c->export;
        bool lock;
        int r;

        if (req->type == NBD_CMD_WRITE_ZEROES && (req->flags & NBD_CMD_FLAG_FAST_ZERO) && !e->fast_zero)
                return -ENOTSUP;
        if (req->count == 0)
                return 0;
        lock = unaligned(e, req->offset, req->count);
        if (lock)
                pthread_mutex_lock(&e->rmw_lock);
        if (req->type == NBD_CMD_WRITE_ZEROES && (req->flags & NBD_CMD_FLAG_NO_HOLE))
                r = blockdev_write_zeroes(e->dev, req->offset, req->count);
        else
                r = blockdev_discard(e->dev, req->offset, req->count);
        if (lock)
                pthread_mutex_unlock(&e->rmw_lock);
        if (r >= 0 && (req->flags & NBD_CMD_FLAG_FUA))
                r = blockdev_flush(e->dev);
        return r;
}

static int do_read(NbdConn *c, const NbdRequest *req) {
        int r;

        if (req->count == 0) {
                if (c->structured)
                        return reply_chunk(c, req->cookie, NBD_REPLY_TYPE_NONE, NULL, 0, NULL, 0);
                return reply_simple(c, req->cookie, 0, NULL, 0);
        }
        r = blockdev_pread(c->export->dev, req->buf->data, req->count, req->offset);
        if (r < 0)
                return reply_error(c, req->cookie, NBD_CMD_READ, r);
        if (c->structured) {
                uint64_t off = htobe64(req->offset);

                return reply_chunk(c, req->cookie, NBD_REPLY_TYPE_OFFSET_DATA, &off, sizeof(off),
                                   req->buf->data, req->count);
        }
        return reply_simple(c, req->cookie, 0, req->buf->data, req->count);
}

static int do_block_status(NbdConn *c, const NbdRequest *req) {
        struct nbd_block_descriptor *d = (struct nbd_block_descriptor *) req->buf->data;
        uint64_t pos = req->offset, end = req->offset + req->count;
        size_t n = 0, max = block_status_max_extents(req);
        uint32_t id = htobe32(META_ID_BASE_ALLOC);
        int r;

        while (pos < end) {
                uint64_t ds, de, e_end;
                uint32_t st;

                r = blockdev_next_data(c->export->dev, pos, &ds, &de);
                if (r == -ENXIO)
                        ds = de = UINT64_MAX;
                else if (r < 0)
                        return reply_error(c, req->cookie, NBD_CMD_BLOCK_STATUS, r);
                if (ds > pos) {
                        st = NBD_STATE_HOLE | NBD_STATE_ZERO;
                        e_end = MIN(ds, end);
                } else {
                        st = 0;
                        e_end = MIN(MAX(de, pos + 1), end);
                }
                if (n > 0 && be32toh(d[n - 1].status_flags) == st)
                        d[n - 1].length = htobe32(be32toh(d[n - 1].length) + (uint32_t) (e_end - pos));
                else {
                        if (n == max)
                                break; /* a shorter reply is allowed */
                        d[n].length = htobe32((uint32_t) (e_end - pos));
                        d[n].status_flags = htobe32(st);
                        n++;
                }
                pos = e_end;
        }

        return reply_chunk(c, req->cookie, NBD_REPLY_TYPE_BLOCK_STATUS, &id, sizeof(id), d, n * sizeof(*d));
}

static void digest_block(const void *p, size_t len, uint8_t *out) {
        XXH128_canonical_t canon;

        XXH128_canonicalFromHash(&canon, XXH3_128bits(p, len));
        memcpy(out, canon.digest, NBD_HWAMEID_HASH_SIZE);
}

/* NBD_CMD_HWAMEID_HASH: one digest per block of [offset, offset + count) (validated), holes
 * hashed as zeroes without reading them. */
static int do_hash(NbdConn *c, const NbdRequest *req) {
        struct nbd_structured_reply_hwameid_hashes h = { .offset = htobe64(req->offset) };
        BlockDev *dev = c->export->dev;
        uint64_t bs = c->delta_block_size, pos = req->offset, end = req->offset + req->count;
        uint64_t ds = 0, de = 0;
        size_t n_digests = (size_t) DIV_ROUND_UP((uint64_t) req->count, bs), i = 0;
        size_t chunk = hash_chunk_size(c, req->count);
        uint8_t *digests = req->buf->data, *data = req->buf->data + hash_digest_room(c, req->count);
        bool mapped = false;
        int r;

        while (pos < end) {
                uint64_t blen = MIN(bs, end - pos), run_end;

                if (!mapped || pos >= de) {
                        r = blockdev_next_data(dev, pos, &ds, &de);
                        if (r == -ENXIO)
                                ds = de = UINT64_MAX;
                        else if (r < 0)
                                return reply_error(c, req->cookie, req->type, r);
                        mapped = true;
                }
                if (ds >= pos + blen) {
                        /* All hole: zeroes, not read. */
                        if (blen == bs)
                                memcpy(digests + i * NBD_HWAMEID_HASH_SIZE, c->delta_zero_digest,
                                       NBD_HWAMEID_HASH_SIZE);
                        else {
                                memset(data, 0, (size_t) blen);
                                digest_block(data, (size_t) blen, digests + i * NBD_HWAMEID_HASH_SIZE);
                        }
                        i++;
                        pos += blen;
                        continue;
                }

                /* Data in this block: read it and the following blocks the data range reaches, up
                 * to a chunk, at once. Blocks start at multiples of bs (the offset is one). */
                run_end = MIN(end, pos + chunk);
                if (de < run_end)
                        run_end = MAX(MIN(run_end, ROUND_UP(de, bs)), pos + blen);
                r = blockdev_pread(dev, data, (size_t) (run_end - pos), pos);
                if (r < 0)
                        return reply_error(c, req->cookie, req->type, r);
                for (uint64_t p = pos; p < run_end; p += bs, i++)
                        digest_block(data + (p - pos), (size_t) MIN(bs, run_end - p),
                                     digests + i * NBD_HWAMEID_HASH_SIZE);
                pos = run_end;
        }
        assert(i == n_digests);

        return reply_chunk(c, req->cookie, NBD_REPLY_TYPE_HWAMEID_HASHES, &h, sizeof(h), digests,
                           n_digests * NBD_HWAMEID_HASH_SIZE);
}

/* Serves one request and writes its reply. 0, or < 0 when the connection failed (recorded). */
static int request_execute(NbdConn *c, const NbdRequest *req) {
        int r;

        if (req->error < 0)
                r = reply_error(c, req->cookie, req->type, req->error);
        else
                switch (req->type) {
                case NBD_CMD_READ:
                        r = do_read(c, req);
                        break;
                case NBD_CMD_WRITE:
                        r = reply_simple(c, req->cookie, do_write(c, req), NULL, 0);
                        break;
                case NBD_CMD_FLUSH:
                        /* Every write answered before this request arrived has reached the device. */
                        r = reply_simple(c, req->cookie, blockdev_flush(c->export->dev), NULL, 0);
                        break;
                case NBD_CMD_TRIM:
                case NBD_CMD_WRITE_ZEROES:
                        r = reply_simple(c, req->cookie, do_zero(c, req), NULL, 0);
                        break;
                case NBD_CMD_BLOCK_STATUS:
                        r = do_block_status(c, req);
                        break;
                case NBD_CMD_HWAMEID_HASH:
                        r = do_hash(c, req);
                        break;
                default:
                        r = reply_error(c, req->cookie, req->type, -EINVAL); /* not reached: validated */
                }
        if (r == -ECONNABORTED && conn_is_dead(c))
                return r; /* someone else's write failed first */
        if (r < 0)
                return conn_fail(c, r, "reply write failed");
        return 0;
}

/* ---- Transmission: the queue and the workers ---- */

/* Under c->lock: the request is answered (or thrown away); its buffer goes back to the pool. */
static void request_done(NbdConn *c, NbdRequest *req) {
        pool_put(c, req->buf);
        free(req);
        assert(c->n_pending > 0);
        c->n_pending--;
        pthread_cond_signal(&c->reader_cond);
}

/* Under c->lock. */
static NbdRequest *queue_pop(NbdConn *c) {
        NbdRequest *req = c->queue_head;

        if (!req)
                return NULL;
        c->queue_head = req->next;
        if (!c->queue_head)
                c->queue_tail = NULL;
        c->n_queued--;
        req->next = NULL;
        return req;
}

static void *worker_thread(void *arg) {
        NbdConn *c = arg;

        pthread_mutex_lock(&c->lock);
        for (;;) {
                NbdRequest *req;
                bool dead;

                while (!c->queue_head && !c->closing) {
                        c->n_idle++;
                        pthread_cond_wait(&c->work_cond, &c->lock);
                        c->n_idle--;
                }
                req = queue_pop(c);
                if (!req)
                        break; /* closing, and nothing left */
                dead = c->dead;
                pthread_mutex_unlock(&c->lock);

                if (!dead)
                        (void) request_execute(c, req);

                pthread_mutex_lock(&c->lock);
                request_done(c, req);
        }
        pthread_mutex_unlock(&c->lock);
        return NULL;
}

/* Serves what is queued on the reader's own thread (no worker could be started). */
static int conn_serve_queue_inline(NbdConn *c) {
        int r = 0;

        for (;;) {
                NbdRequest *req;
                bool dead;

                pthread_mutex_lock(&c->lock);
                req = queue_pop(c);
                dead = c->dead;
                pthread_mutex_unlock(&c->lock);
                if (!req)
                        return r;
                if (!dead && r >= 0)
                        r = request_execute(c, req);
                pthread_mutex_lock(&c->lock);
                request_done(c, req);
                pthread_mutex_unlock(&c->lock);
        }
}

/* Hands a request to the workers, starting one more when every started one is busy. */
static int conn_enqueue(NbdConn *c, NbdRequest *req) {
        bool spawn = false, none;
        unsigned idx = 0;
        int r;

        pthread_mutex_lock(&c->lock);
        if (c->queue_tail)
                c->queue_tail->next = req;
        else
                c->queue_head = req;
        c->queue_tail = req;
        c->n_queued++;
        c->n_pending++;
        if (c->n_queued > c->n_idle && c->n_workers < c->max_workers) {
                spawn = true;
                idx = c->n_workers++;
        }
        pthread_cond_signal(&c->work_cond);
        pthread_mutex_unlock(&c->lock);

        if (!spawn)
                return 0;
        r = -pthread_create(&c->workers[idx], NULL, worker_thread, c);
        if (r >= 0)
                return 0;

        log_debug_errno(r, "nbd: client %s: cannot start a worker thread, ignoring: %m", c->peer);
        pthread_mutex_lock(&c->lock);
        c->n_workers--; /* only this thread starts workers: idx was the last slot */
        none = c->n_workers == 0;
        pthread_mutex_unlock(&c->lock);
        return none ? conn_serve_queue_inline(c) : 0;
}

/* Lets the workers finish what is queued (serving it unless the connection is dead), then joins
 * them. Afterwards no other thread touches the connection or the export. */
static void conn_stop_workers(NbdConn *c) {
        unsigned n;

        pthread_mutex_lock(&c->lock);
        c->closing = true;
        pthread_cond_broadcast(&c->work_cond);
        n = c->n_workers;
        pthread_mutex_unlock(&c->lock);

        for (unsigned i = 0; i < n; i++)
                (void) pthread_join(c->workers[i], NULL);

        pthread_mutex_lock(&c->lock);
        c->n_workers = 0;
        assert(!c->queue_head && c->n_pending == 0);
        pool_trim(c);
        pthread_mutex_unlock(&c->lock);
}

/* ---- Transmission: the reader ---- */

/* Waits for room for one more request in the server. */
static int conn_wait_slot(NbdConn *c) {
        int r = 0;

        pthread_mutex_lock(&c->lock);
        while (!c->dead && c->n_pending >= NBD_SERVER_CONN_REQUESTS_MAX)
                pthread_cond_wait(&c->reader_cond, &c->lock);
        if (c->dead)
                r = -ECONNABORTED;
        pthread_mutex_unlock(&c->lock);
        return r;
}

/* A pool buffer of size bytes, waiting while the connection's buffers are all in use. */
static int conn_get_buffer(NbdConn *c, size_t size, NbdBuffer **ret) {
        int r;

        pthread_mutex_lock(&c->lock);
        for (;;) {
                if (c->dead) {
                        r = -ECONNABORTED;
                        break;
                }
                r = pool_get(c, size, ret);
                if (r != -EAGAIN)
                        break;
                if (c->n_pending == 0) {
                        r = -ENOMEM; /* not reached: with nothing in flight every buffer is free */
                        break;
                }
                pthread_cond_wait(&c->reader_cond, &c->lock);
        }
        pthread_mutex_unlock(&c->lock);
        return r;
}

/*
 * Before a request header: a connection that holds free buffers and has no input waiting reads
 * with a timeout, and after NBD_SERVER_IDLE_TRIM_USEC without a byte gives its buffers back.
 * -ENODATA at end of stream.
 */
static int conn_idle_wait(NbdConn *c) {
        bool cached;
        ssize_t n;

        if (c->rpos < c->rlen)
                return 0;
        pthread_mutex_lock(&c->lock);
        cached = pool_has_free(c);
        pthread_mutex_unlock(&c->lock);
        if (!cached)
                return 0;

        c->rpos = c->rlen = 0;
        n = c->t->ops->read(c->t, c->rbuf, READ_BUFFER_SIZE, NBD_SERVER_IDLE_TRIM_USEC);
        if (n == -ETIMEDOUT) {
                pthread_mutex_lock(&c->lock);
                pool_trim(c);
                pthread_mutex_unlock(&c->lock);
                return 0;
        }
        if (n < 0)
                return (int) n;
        if (n == 0)
                return -ENODATA;
        c->rlen = (size_t) n;
        return 0;
}

static void request_free(NbdConn *c, NbdRequest *req) {
        if (!req)
                return;
        pthread_mutex_lock(&c->lock);
        pool_put(c, req->buf);
        pthread_mutex_unlock(&c->lock);
        free(req);
}

/* The next request, its payload read: 0 and *ret; 1 on NBD_CMD_DISC; < 0 to drop. */
static int conn_read_request(NbdConn *c, NbdRequest **ret) {
        struct nbd_request rq;
        NbdRequest *req;
        int r;

        r = conn_idle_wait(c);
        if (r >= 0)
                r = conn_read(c, &rq, sizeof(rq));
        if (r == -ENODATA)
                return conn_drop(c, 0, "end of stream without NBD_CMD_DISC");
        if (r < 0)
                return conn_drop(c, r, "request header read failed");
        if (be32toh(rq.magic) != NBD_REQUEST_MAGIC)
                return conn_drop(c, -EPROTO, "bad request magic");

        req = calloc(1, sizeof(*req));
        if (!req)
                return conn_drop(c, -ENOMEM, "out of memory for a request");
        req->flags = be16toh(rq.flags);
        req->type = be16toh(rq.type);
        req->cookie = be64toh(rq.cookie);
        req->offset = be64toh(rq.offset);
        req->count = be32toh(rq.count);

        if (req->type == NBD_CMD_DISC) {
                free(req);
                return 1;
        }
        if (req->type == NBD_CMD_WRITE && req->count > NBD_MAX_PAYLOAD) {
                /* Too much to read and throw away: answer, then drop. */
                (void) reply_simple(c, req->cookie, -EINVAL, NULL, 0);
                free(req);
                return conn_drop(c, -EMSGSIZE, "write payload over the maximum");
        }

        req->error = request_validate(c, req->type, req->flags, req->offset, req->count);
        if (req->error < 0)
                log_debug("nbd: client %s: request type %u flags 0x%x offset %" PRIu64 " length %" PRIu32
                          " rejected: %s",
                          c->peer, req->type, req->flags, req->offset, req->count, strerror(-req->error));
        else {
                size_t need = request_buffer_size(c, req);

                if (need > 0) {
                        r = conn_get_buffer(c, need, &req->buf);
                        if (r == -ENOMEM) {
                                log_debug("nbd: client %s: no memory for a request of %zu bytes", c->peer,
                                          need);
                                req->error = -ENOMEM;
                        } else if (r < 0) {
                                free(req);
                                return conn_drop(c, r, "connection ended while waiting for buffers");
                        }
                }
        }

        /* The payload must be consumed before anything else happens on the stream. */
        if (req->type == NBD_CMD_WRITE) {
                r = req->buf ? conn_read(c, req->buf->data, req->count) : conn_skip(c, req->count);
                if (r < 0) {
                        request_free(c, req);
                        return conn_drop(c, r == -ENODATA ? -ECONNRESET : r, "write payload read failed");
                }
        }

        *ret = req;
        return 0;
}

static void conn_transmission(NbdConn *c) {
        for (;;) {
                NbdRequest *req = NULL;
                int r;

                r = conn_wait_slot(c);
                if (r < 0)
                        break; /* dead: why is recorded */
                r = conn_read_request(c, &req);
                if (r > 0) {
                        (void) conn_drop(c, 0, "NBD_CMD_DISC");
                        break;
                }
                if (r < 0)
                        break;

                if (c->max_workers > 0) {
                        r = conn_enqueue(c, req);
                        if (r < 0)
                                break;
                        continue;
                }
                r = request_execute(c, req);
                request_free(c, req);
                if (r < 0)
                        break;
        }
        /* After NBD_CMD_DISC (or a broken request) what was received is still served and answered. */
        conn_stop_workers(c);
}

/* ---- Connection lifecycle ---- */

static NbdConn *conn_free(NbdConn *c) {
        if (!c)
                return NULL;
        nbd_transport_free(c->t);
        pool_trim(c);
        free(c->meta_export);
        free(c->rbuf);
        free(c->workers);
        pthread_mutex_destroy(&c->write_lock);
        pthread_cond_destroy(&c->reader_cond);
        pthread_cond_destroy(&c->work_cond);
        pthread_mutex_destroy(&c->lock);
        return mfree(c);
}

/* Registers a connection; -EBUSY when the limit is reached. Takes ownership of t on success. */
static int conn_new(NbdServer *s, NbdTransport *t, const char *peer, NbdConn **ret) {
        NbdConn *c;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        pthread_mutex_init(&c->lock, NULL);
        pthread_cond_init(&c->work_cond, NULL);
        pthread_cond_init(&c->reader_cond, NULL);
        pthread_mutex_init(&c->write_lock, NULL);
        c->server = s;
        snprintf(c->peer, sizeof(c->peer), "%s", peer ? peer : "-");
        c->rbuf = malloc(READ_BUFFER_SIZE);
        if (!c->rbuf) {
                conn_free(c);
                return -ENOMEM;
        }

        pthread_mutex_lock(&s->lock);
        c->write_timeout = s->write_timeout;
        c->max_workers = s->workers;
        pthread_mutex_unlock(&s->lock);
        if (c->max_workers > 0) {
                c->workers = calloc(c->max_workers, sizeof(pthread_t));
                if (!c->workers) {
                        conn_free(c);
                        return -ENOMEM;
                }
        }

        pthread_mutex_lock(&s->lock);
        if (s->n_conns >= s->max_conns) {
                pthread_mutex_unlock(&s->lock);
                conn_free(c);
                return -EBUSY;
        }
        c->t = t;
        s->n_conns++;
        LIST_PREPEND(conns, s->conns, c);
        pthread_mutex_unlock(&s->lock);

        *ret = c;
        return 0;
}

/* Reports why the connection ended, unregisters and frees it. */
static void conn_finish(NbdConn *c) {
        NbdServer *s = c->server;

        if (s->disconnect_cb)
                s->disconnect_cb(s->disconnect_userdata, c->peer, c->export ? c->export->name : NULL,
                                 c->drop_error, c->drop_reason ? c->drop_reason : "connection ended");

        /* After this the server may be freed: touch nothing of it. */
        pthread_mutex_lock(&s->lock);
        LIST_REMOVE(conns, s->conns, c);
        if (c->export)
                c->export->users--;
        c->export = NULL;
        s->n_conns--;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);

        conn_free(c);
}

/* 0 after a clean end, else the error that ended the connection. */
static int conn_run(NbdConn *c) {
        int r;

        r = conn_handshake(c);
        if (r > 0)
                conn_transmission(c);
        /* Only this thread is left. */
        r = c->drop_error;
        conn_finish(c);
        return r;
}

int nbd_server_serve(NbdServer *s, NbdTransport *t, const char *peer) {
        NbdConn *c;
        int r;

        assert(s);
        assert(t);

        r = conn_new(s, t, peer, &c);
        if (r < 0) {
                nbd_transport_free(t);
                return r;
        }
        return conn_run(c);
}

static void *conn_thread(void *arg) {
        (void) conn_run(arg);
        return NULL;
}

/* ---- Listening and accepting ---- */

static void format_peer(const struct sockaddr_storage *sa, char *buf, size_t len) {
        char host[INET6_ADDRSTRLEN] = "?";
        unsigned port = 0;

        if (sa->ss_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                (void) inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
                port = ntohs(in->sin_port);
                snprintf(buf, len, "%s:%u", host, port);
        } else if (sa->ss_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                (void) inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
                port = ntohs(in6->sin6_port);
                snprintf(buf, len, "[%s]:%u", host, port);
        } else
                snprintf(buf, len, "-");
}

static void server_accept_one(NbdServer *s) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof(sa);
        char peer[PEER_MAX];
        _cleanup_close_ int fd = -EBADF;
        NbdTransport *t = NULL;
        NbdConn *c = NULL;
        pthread_attr_t attr;
        pthread_t thread;
        int one = 1, r;

        fd = accept4(s->listen_fd, (struct sockaddr *) &sa, &salen, SOCK_CLOEXEC);
        if (fd < 0) {
                log_debug_errno(errno, "nbd: accept() failed, ignoring: %m");
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                        (void) poll(NULL, 0, 100); /* let connections end before retrying */
                return;
        }
        format_peer(&sa, peer, sizeof(peer));
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        (void) setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));

        r = nbd_transport_socket_new(TAKE_FD(fd), &t);
        if (r < 0) {
                log_debug_errno(r, "nbd: client %s: no transport: %m", peer);
                return;
        }
        r = conn_new(s, t, peer, &c);
        if (r < 0) {
                nbd_transport_free(t);
                if (s->disconnect_cb)
                        s->disconnect_cb(s->disconnect_userdata, peer, NULL, r,
                                         r == -EBUSY ? "too many connections" : "out of memory");
                log_debug_errno(r, "nbd: refusing client %s: %m", peer);
                return;
        }

        r = -pthread_attr_init(&attr);
        if (r >= 0) {
                (void) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                r = -pthread_create(&thread, &attr, conn_thread, c);
                (void) pthread_attr_destroy(&attr);
        }
        if (r < 0) {
                log_debug_errno(r, "nbd: client %s: no thread: %m", peer);
                c->drop_reason = "no thread";
                c->drop_error = r;
                conn_finish(c);
        }
}

static void *acceptor_thread(void *arg) {
        NbdServer *s = arg;

        for (;;) {
                struct pollfd p[2] = {
                        { .fd = s->listen_fd, .events = POLLIN },
                        { .fd = s->stop_fd, .events = POLLIN },
                };

                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        log_debug_errno(errno, "nbd: poll() failed, acceptor ends: %m");
                        return NULL;
                }
                if (p[1].revents)
                        return NULL;
                if (p[0].revents)
                        server_accept_one(s);
        }
}

/* "ADDR:PORT" or "[ADDR]:PORT" into host and port strings. */
static int split_address(const char *address, char *host, size_t hostlen, char *port, size_t portlen) {
        const char *colon, *h = address;
        size_t hl;

        if (address[0] == '[') {
                const char *close = strchr(address, ']');

                if (!close || close[1] != ':')
                        return -EINVAL;
                h = address + 1;
                hl = (size_t) (close - h);
                colon = close + 1;
        } else {
                colon = strrchr(address, ':');
                if (!colon || strchr(address, ':') != colon)
                        return -EINVAL;
                hl = (size_t) (colon - address);
        }
        if (hl == 0 || hl >= hostlen || strlen(colon + 1) == 0 || strlen(colon + 1) >= portlen)
                return -EINVAL;
        memcpy(host, h, hl);
        host[hl] = 0;
        strcpy(port, colon + 1);
        for (const char *q = port; *q; q++)
                if (*q < '0' || *q > '9')
                        return -EINVAL;
        return 0;
}

int nbd_server_listen(NbdServer *s, const char *address) {
        struct addrinfo hints = {
                .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
                .ai_socktype = SOCK_STREAM,
        };
        struct addrinfo *ai = NULL;
        char host[INET6_ADDRSTRLEN + 1], port[8];
        _cleanup_close_ int fd = -EBADF;
        int one = 1, r;

        assert(s);
        assert(address);

        if (s->listen_fd >= 0)
                return -EBUSY;
        r = split_address(address, host, sizeof(host), port, sizeof(port));
        if (r < 0)
                return r;
        r = getaddrinfo(host, port, &hints, &ai);
        if (r != 0)
                return r == EAI_SYSTEM ? negative_errno() : -EINVAL;

        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                r = -errno;
                freeaddrinfo(ai);
                return r;
        }
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
                r = -errno;
                freeaddrinfo(ai);
                return r;
        }
        freeaddrinfo(ai);
        s->listen_fd = TAKE_FD(fd);
        return 0;
}

int nbd_server_listen_fd(NbdServer *s, int fd) {
        assert(s);
        assert(fd >= 0);

        if (s->listen_fd >= 0)
                return -EBUSY;
        s->listen_fd = fd;
        return 0;
}

int nbd_server_get_port(NbdServer *s) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);

        assert(s);

        if (s->listen_fd < 0)
                return -EBADF;
        if (getsockname(s->listen_fd, (struct sockaddr *) &sa, &len) < 0)
                return -errno;
        if (sa.ss_family == AF_INET)
                return ntohs(((struct sockaddr_in *) &sa)->sin_port);
        if (sa.ss_family == AF_INET6)
                return ntohs(((struct sockaddr_in6 *) &sa)->sin6_port);
        return -EAFNOSUPPORT;
}

int nbd_server_start(NbdServer *s) {
        int r;

        assert(s);

        if (s->listen_fd < 0)
                return -EBADF;
        if (s->acceptor_running)
                return -EBUSY;
        if (s->stop_fd < 0) {
                s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (s->stop_fd < 0)
                        return -errno;
        }
        r = -pthread_create(&s->acceptor, NULL, acceptor_thread, s);
        if (r < 0)
                return r;
        s->acceptor_running = true;
        return 0;
}
