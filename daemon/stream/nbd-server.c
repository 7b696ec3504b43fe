/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The NBD server (see nbd-server.h for the threads and limits).
 *
 * A connection runs on its own thread in two phases:
 *   handshake     server greeting, client flags, then options until GO / EXPORT_NAME (enter
 *                 transmission) or ABORT; a deadline bounds the whole phase;
 *   transmission  read a request header, validate every field against the export and the hard
 *                 caps, read the payload if any, do the I/O on the shared BlockDev, write the
 *                 reply; in order, so pipelined requests simply queue in the socket.
 * Input goes through a small read buffer (many headers per recv() when the client pipelines);
 * payloads of a read-buffer's size or more are received straight into the connection's I/O
 * buffer, which grows to the largest request seen (at most NBD_MAX_PAYLOAD) and is reused.
 *
 * Errors: functions return negative errno for "drop the connection"; per-request failures are
 * replies, not errors. conn_drop() records why a client was dropped for the callback.
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

#include "../basic/list.h"
#include "../basic/time-util.h"
#include "../log/log.h"
#include "nbd-protocol.h"
#include "nbd-server.h"

#define READ_BUFFER_SIZE   (16U * 1024U)
#define IO_BUFFER_ALIGN    4096U
#define META_ID_BASE_ALLOC 1U
#define PEER_MAX           64

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
        uint64_t handshake_timeout;
        uint64_t write_timeout;
        NbdServerStartTls starttls;
        void *tls_userdata;
        bool tls_required;
        NbdServerDisconnectCallback disconnect_cb;
        void *disconnect_userdata;

        int listen_fd;
        int stop_fd; /* eventfd: wakes the acceptor */
        pthread_t acceptor;
        bool acceptor_running;
};

struct NbdConn {
        NbdServer *server;
        NbdTransport *t; /* swapped under server->lock (STARTTLS) */
        char peer[PEER_MAX];
        bool shut;            /* server asked it to end */
        usec_t read_deadline; /* CLOCK_MONOTONIC; 0 = none */
        usec_t write_timeout; /* per write without progress; 0 = none */

        /* handshake state */
        bool no_zeroes;
        bool tls;
        bool structured;
        bool meta_base_allocation;
        char *meta_export; /* the export SET_META_CONTEXT named */

        /* transmission */
        NbdExport *export;
        uint64_t size;
        uint16_t eflags;

        uint8_t *rbuf;
        size_t rpos, rlen;
        uint8_t *buf;
        size_t buf_size;

        int drop_error;
        const char *drop_reason;
        LIST_FIELDS(NbdConn, conns);
};

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
                if (c->export == e) {
                        c->shut = true;
                        c->t->ops->shutdown(c->t);
                }
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
        LIST_FOREACH (conns, c, s->conns) {
                c->shut = true;
                c->t->ops->shutdown(c->t);
        }
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

unsigned nbd_server_n_connections(NbdServer *s) {
        unsigned n;

        assert(s);
        pthread_mutex_lock(&s->lock);
        n = s->n_conns;
        pthread_mutex_unlock(&s->lock);
        return n;
}

/* ---- Connection I/O ---- */

static int conn_drop(NbdConn *c, int error, const char *reason) {
        if (!c->drop_reason) {
                c->drop_reason = reason;
                c->drop_error = error;
        }
        log_debug_errno(error, "nbd: dropping client %s: %s", c->peer, reason);
        return error < 0 ? error : -EPROTO;
}

/*
 * Exactly len bytes. -ENODATA: the stream ended before the first byte (a clean end at a message
 * boundary); -ECONNRESET: it ended within.
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

/* The I/O buffer, grown to at least size (aligned for O_DIRECT). */
static int conn_ensure_buf(NbdConn *c, size_t size) {
        void *p = NULL;

        if (size <= c->buf_size)
                return 0;
        size = MAX(ROUND_UP(size, IO_BUFFER_ALIGN), (size_t) 64 * 1024);
        if (posix_memalign(&p, IO_BUFFER_ALIGN, size) != 0)
                return -ENOMEM;
        free(c->buf);
        c->buf = p;
        c->buf_size = size;
        return 0;
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
                uint32_t total;

                memcpy(&total, list + i, 4);
                r = opt_reply(c, option, NBD_REP_SERVER, list + i + 4, total, NULL, 0);
                if (r < 0)
                        return r;
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
        return 0;
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

/* ---- Transmission ---- */

static int reply_simple(NbdConn *c, uint64_t cookie, int error, const void *data, size_t len) {
        struct nbd_simple_reply h = {
                .magic = htobe32(NBD_SIMPLE_REPLY_MAGIC),
                .error = htobe32(nbd_errno_to_wire(error)),
                .cookie = htobe64(cookie),
        };
        struct iovec iov[2] = { { &h, sizeof(h) }, { (void *) data, error == 0 ? len : 0 } };

        return conn_writev(c, iov, 2);
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

        return conn_writev(c, iov, 3);
}

/* Errors of READ and BLOCK_STATUS are structured once structured replies are on. */
static int reply_error(NbdConn *c, uint64_t cookie, uint16_t type, int error) {
        if (c->structured && (type == NBD_CMD_READ || type == NBD_CMD_BLOCK_STATUS)) {
                struct nbd_structured_reply_error e = {
                        .error = htobe32(nbd_errno_to_wire(error)),
                        .len = 0,
                };
                return reply_chunk(c, cookie, NBD_REPLY_TYPE_ERROR, &e, sizeof(e), NULL, 0);
        }
        return reply_simple(c, cookie, error, NULL, 0);
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

static bool unaligned(const NbdExport *e, uint64_t offset, uint64_t len) {
        size_t a = blockdev_alignment(e->dev);

        return e->unaligned_needs_lock && ((offset | len) & (a - 1)) != 0;
}

static int do_write(NbdConn *c, uint16_t flags, uint64_t offset, uint32_t count) {
        NbdExport *e = c->export;
        int r;

        if (count == 0)
                return 0;
        if (unaligned(e, offset, count)) {
                pthread_mutex_lock(&e->rmw_lock);
                r = blockdev_pwrite(e->dev, c->buf, count, offset);
                pthread_mutex_unlock(&e->rmw_lock);
        } else
                r = blockdev_pwrite(e->dev, c->buf, count, offset);
        if (r >= 0 && (flags & NBD_CMD_FLAG_FUA))
                r = blockdev_flush(e->dev);
        return r;
}

static int do_zero(NbdConn *c, uint16_t type, uint16_t flags, uint64_t offset, uint32_t count) {
        NbdExport *e = c->export;
        bool lock;
        int r;

        if (type == NBD_CMD_WRITE_ZEROES && (flags & NBD_CMD_FLAG_FAST_ZERO) && !e->fast_zero)
                return -ENOTSUP;
        if (count == 0)
                return 0;
        lock = unaligned(e, offset, count);
        if (lock)
                pthread_mutex_lock(&e->rmw_lock);
        if (type == NBD_CMD_WRITE_ZEROES && (flags & NBD_CMD_FLAG_NO_HOLE))
                r = blockdev_write_zeroes(e->dev, offset, count);
        else
                r = blockdev_discard(e->dev, offset, count);
        if (lock)
                pthread_mutex_unlock(&e->rmw_lock);
        if (r >= 0 && (flags & NBD_CMD_FLAG_FUA))
                r = blockdev_flush(e->dev);
        return r;
}

static int do_read(NbdConn *c, uint64_t cookie, uint64_t offset, uint32_t count) {
        int r;

        if (count == 0) {
                if (c->structured)
                        return reply_chunk(c, cookie, NBD_REPLY_TYPE_NONE, NULL, 0, NULL, 0);
                return reply_simple(c, cookie, 0, NULL, 0);
        }
        r = conn_ensure_buf(c, count);
        if (r >= 0)
                r = blockdev_pread(c->export->dev, c->buf, count, offset);
        if (r < 0)
                return reply_error(c, cookie, NBD_CMD_READ, r);
        if (c->structured) {
                uint64_t off = htobe64(offset);

                return reply_chunk(c, cookie, NBD_REPLY_TYPE_OFFSET_DATA, &off, sizeof(off), c->buf, count);
        }
        return reply_simple(c, cookie, 0, c->buf, count);
}

static int do_block_status(NbdConn *c, uint64_t cookie, uint16_t flags, uint64_t offset, uint32_t count) {
        uint64_t pos = offset, end = offset + count;
        size_t n = 0, cap, max = (flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : NBD_SERVER_MAX_EXTENTS;
        struct nbd_block_descriptor *d;
        int r;

        r = conn_ensure_buf(c, 8 * 1024);
        if (r < 0)
                return reply_error(c, cookie, NBD_CMD_BLOCK_STATUS, r);
        cap = c->buf_size / sizeof(*d);
        d = (struct nbd_block_descriptor *) c->buf;

        while (pos < end && n < max) {
                uint64_t ds, de, e_end;
                uint32_t st;

                r = blockdev_next_data(c->export->dev, pos, &ds, &de);
                if (r == -ENXIO)
                        ds = de = UINT64_MAX;
                else if (r < 0)
                        return reply_error(c, cookie, NBD_CMD_BLOCK_STATUS, r);
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
                        if (n == cap) {
                                void *p = NULL;
                                size_t nsize = c->buf_size * 2;

                                if (posix_memalign(&p, IO_BUFFER_ALIGN, nsize) != 0)
                                        break; /* a shorter reply is allowed */
                                memcpy(p, c->buf, c->buf_size);
                                free(c->buf);
                                c->buf = p;
                                c->buf_size = nsize;
                                cap = nsize / sizeof(*d);
                                d = (struct nbd_block_descriptor *) c->buf;
                        }
                        d[n].length = htobe32((uint32_t) (e_end - pos));
                        d[n].status_flags = htobe32(st);
                        n++;
                }
                pos = e_end;
        }

        uint32_t id = htobe32(META_ID_BASE_ALLOC);
        return reply_chunk(c, cookie, NBD_REPLY_TYPE_BLOCK_STATUS, &id, sizeof(id), d, n * sizeof(*d));
}

/* One request: 0 to go on, 1 after DISC, <0 to drop. */
static int conn_request(NbdConn *c) {
        struct nbd_request rq;
        uint16_t flags, type;
        uint64_t cookie, offset;
        uint32_t count;
        int r, err;

        r = conn_read(c, &rq, sizeof(rq));
        if (r == -ENODATA)
                return conn_drop(c, 0, "end of stream without NBD_CMD_DISC");
        if (r < 0)
                return conn_drop(c, r, "request header read failed");
        if (be32toh(rq.magic) != NBD_REQUEST_MAGIC)
                return conn_drop(c, -EPROTO, "bad request magic");
        flags = be16toh(rq.flags);
        type = be16toh(rq.type);
        cookie = be64toh(rq.cookie);
        offset = be64toh(rq.offset);
        count = be32toh(rq.count);

        if (type == NBD_CMD_WRITE) {
                /* The payload must be consumed before anything else happens on the stream. */
                if (count > NBD_MAX_PAYLOAD) {
                        (void) reply_simple(c, cookie, -EINVAL, NULL, 0);
                        return conn_drop(c, -EMSGSIZE, "write payload over the maximum");
                }
                r = conn_ensure_buf(c, count);
                if (r < 0) {
                        (void) reply_simple(c, cookie, -ENOMEM, NULL, 0);
                        return conn_drop(c, r, "no memory for the write payload");
                }
                r = conn_read(c, c->buf, count);
                if (r < 0)
                        return conn_drop(c, r == -ENODATA ? -ECONNRESET : r, "write payload read failed");
        }

        if (type == NBD_CMD_DISC)
                return 1;

        err = request_validate(c, type, flags, offset, count);
        if (err < 0) {
                log_debug("nbd: client %s: request type %u flags 0x%x offset %" PRIu64 " length %" PRIu32
                          " rejected: %s",
                          c->peer, type, flags, offset, count, strerror(-err));
                r = reply_error(c, cookie, type, err);
                goto finish;
        }

        switch (type) {
        case NBD_CMD_READ:
                r = do_read(c, cookie, offset, count);
                break;
        case NBD_CMD_WRITE:
                r = reply_simple(c, cookie, do_write(c, flags, offset, count), NULL, 0);
                break;
        case NBD_CMD_FLUSH:
                r = reply_simple(c, cookie, blockdev_flush(c->export->dev), NULL, 0);
                break;
        case NBD_CMD_TRIM:
        case NBD_CMD_WRITE_ZEROES:
                r = reply_simple(c, cookie, do_zero(c, type, flags, offset, count), NULL, 0);
                break;
        case NBD_CMD_BLOCK_STATUS:
                r = do_block_status(c, cookie, flags, offset, count);
                break;
        default:
                r = reply_error(c, cookie, type, -EINVAL); /* not reached: validated above */
        }
finish:
        return r < 0 ? conn_drop(c, r, "reply write failed") : 0;
}

static int conn_transmission(NbdConn *c) {
        for (;;) {
                int r = conn_request(c);

                if (r < 0)
                        return r;
                if (r > 0)
                        return conn_drop(c, 0, "NBD_CMD_DISC");
        }
}

/* ---- Connection lifecycle ---- */

static NbdConn *conn_free(NbdConn *c) {
        if (!c)
                return NULL;
        nbd_transport_free(c->t);
        free(c->meta_export);
        free(c->rbuf);
        free(c->buf);
        return mfree(c);
}

/* Registers a connection; -EBUSY when the limit is reached. Takes ownership of t on success. */
static int conn_new(NbdServer *s, NbdTransport *t, const char *peer, NbdConn **ret) {
        NbdConn *c;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->rbuf = malloc(READ_BUFFER_SIZE);
        if (!c->rbuf) {
                free(c);
                return -ENOMEM;
        }
        c->server = s;
        c->write_timeout = s->write_timeout;
        snprintf(c->peer, sizeof(c->peer), "%s", peer ? peer : "-");

        pthread_mutex_lock(&s->lock);
        if (s->n_conns >= s->max_conns) {
                pthread_mutex_unlock(&s->lock);
                free(c->rbuf);
                free(c);
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

static int conn_run(NbdConn *c) {
        int r;

        r = conn_handshake(c);
        if (r > 0)
                r = conn_transmission(c);
        conn_finish(c);
        return r < 0 ? r : 0;
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
