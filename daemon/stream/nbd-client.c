/* SPDX-License-Identifier: Apache-2.0 */

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "basic/macro.h"
#include "basic/string-util.h"
#include "basic/time-util.h"
#include "log/log.h"
#include "stream/nbd-client.h"
#include "stream/nbd-protocol.h"
#include "stream/nbd-tls.h"

#define CONNECT_TIMEOUT_DEFAULT (10 * USEC_PER_SEC)
#define IO_TIMEOUT_DEFAULT      (30 * USEC_PER_SEC)
#define IN_FLIGHT_DEFAULT       256U
#define IN_FLIGHT_MAX           65536U
#define SCRATCH_SIZE            65536U
/* The spec says servers SHOULD NOT send more than 2^20 extents in one chunk. */
#define EXTENTS_MAX        (1U << 20)
#define NBD_OLDSTYLE_MAGIC UINT64_C(0x00420281861253)

/* ---- URIs ---- */

bool nbd_uri_is_uri(const char *s) {
        return strncmp(s, "nbd://", 6) == 0 || strncmp(s, "nbds://", 7) == 0 ||
               strncmp(s, "nbd+unix://", 11) == 0 || strncmp(s, "nbds+unix://", 12) == 0;
}

void nbd_uri_done(NbdUri *u) {
        if (!u)
                return;
        u->user = mfree(u->user);
        u->host = mfree(u->host);
        u->port = mfree(u->port);
        u->socket = mfree(u->socket);
        u->export = mfree(u->export);
}

/* Percent-decodes [s, s+n) into a new string; NUL bytes are refused. */
static int uri_decode(const char *s, size_t n, char **ret) {
        _cleanup_free_ char *d = malloc(n + 1);
        size_t j = 0;

        if (!d)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                if (s[i] == '%') {
                        int hi, lo;
                        if (i + 2 >= n)
                                return -EINVAL;
                        hi = unhexchar(s[i + 1]);
                        lo = unhexchar(s[i + 2]);
                        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                                return -EINVAL;
                        d[j++] = (char) (hi * 16 + lo);
                        i += 2;
                } else
                        d[j++] = s[i];
        }
        d[j] = '\0';
        *ret = TAKE_PTR(d);
        return 0;
}

int nbd_uri_parse(const char *s, NbdUri *ret) {
        _cleanup_(nbd_uri_done) NbdUri u = {};
        const char *p, *auth_end, *path, *query, *at, *hostp, *portp = NULL;
        bool is_unix = false;
        size_t hostlen;
        int r;

        assert(s);
        assert(ret);

        if (strncmp(s, "nbd://", 6) == 0)
                p = s + 6;
        else if (strncmp(s, "nbds://", 7) == 0)
                p = s + 7, u.tls = true;
        else if (strncmp(s, "nbd+unix://", 11) == 0)
                p = s + 11, is_unix = true;
        else if (strncmp(s, "nbds+unix://", 12) == 0)
                p = s + 12, u.tls = true, is_unix = true;
        else
                return -EINVAL;

        auth_end = p + strcspn(p, "/?#");
        path = auth_end;
        query = path + strcspn(path, "?#");

        /* Authority: [user@]host[:port] */
        at = memchr(p, '@', auth_end - p);
        if (at) {
                r = uri_decode(p, at - p, &u.user);
                if (r < 0)
                        return r;
                if (!u.user[0])
                        return -EINVAL;
                p = at + 1;
        }
        if (is_unix) {
                const char *q;

                if (p != auth_end)
                        return -EINVAL; /* nbd+unix has no host */
                q = strstr(query, "socket=");
                if (!q || (q != query + 1 && q[-1] != '&'))
                        return -EINVAL;
                q += 7;
                r = uri_decode(q, strcspn(q, "&#"), &u.socket);
                if (r < 0)
                        return r;
                if (!u.socket[0] || strlen(u.socket) >= sizeof(((struct sockaddr_un *) NULL)->sun_path))
                        return -EINVAL;
        } else {
                if (*p == '[') {
                        const char *close = memchr(p, ']', auth_end - p);
                        if (!close || close == p + 1)
                                return -EINVAL;
                        hostp = p + 1;
                        hostlen = close - hostp;
                        if (close + 1 < auth_end) {
                                if (close[1] != ':')
                                        return -EINVAL;
                                portp = close + 2;
                        }
                } else {
                        const char *colon = memchr(p, ':', auth_end - p);
                        hostp = p;
                        hostlen = (colon ? colon : auth_end) - p;
                        if (colon)
                                portp = colon + 1;
                }
                if (hostlen == 0)
                        return -EINVAL;
                u.host = strndup(hostp, hostlen);
                if (!u.host)
                        return -ENOMEM;
                if (portp && portp < auth_end) {
                        unsigned long port = 0;
                        for (const char *c = portp; c < auth_end; c++) {
                                if (*c < '0' || *c > '9')
                                        return -EINVAL;
                                port = port * 10 + (unsigned long) (*c - '0');
                                if (port > 65535)
                                        return -EINVAL;
                        }
                        if (port == 0)
                                return -EINVAL;
                        if (asprintf(&u.port, "%lu", port) < 0)
                                return -ENOMEM;
                }
        }
        if (!u.port && asprintf(&u.port, "%d", NBD_DEFAULT_PORT) < 0)
                return -ENOMEM;

        /* Path: "" or "/" = default export; "/name" = "name" ("//x" = "/x"). */
        if (*path == '/')
                path++;
        r = uri_decode(path, query - path < 0 ? 0 : (size_t) (query - path), &u.export);
        if (r < 0)
                return r;
        if (strlen(u.export) > NBD_MAX_STRING)
                return -EINVAL;

        *ret = u;
        u = (NbdUri){};
        return 0;
}

/* ---- Client ---- */

typedef struct Inflight {
        bool in_use;
        uint32_t gen;
        NbdCommand cmd;
        NbdCompletion cb;
        void *userdata;
        int error;
        uint64_t covered; /* READ: bytes delivered by data and hole chunks */
        bool got_status;  /* BLOCK_STATUS: the chunk for our context arrived */
        size_t n_extents;
} Inflight;

struct NbdClient {
        NbdTransport *transport;
        NbdTlsContext *tls;
        NbdExportInfo info;
        char *export;
        usec_t connect_timeout, io_timeout;
        uint32_t delta_block_size; /* to ask for; 0: do not */

        pthread_mutex_t lock; /* everything below */
        pthread_cond_t cond;  /* a slot freed or the connection died */
        Inflight *slots;
        unsigned n_slots, n_in_flight, next_slot;
        int error;    /* the connection's error, 0 while healthy */
        bool closing; /* nbd_client_free() runs: end of stream is expected */
        usec_t last_rx;

        pthread_mutex_t send_lock;

        bool have_thread;
        pthread_t thread;
        uint8_t *scratch;
};

const char *nbd_cmd_to_string(uint16_t type) {
        static const char *const table[] = {
                [NBD_CMD_READ] = "read",
                [NBD_CMD_WRITE] = "write",
                [NBD_CMD_DISC] = "disc",
                [NBD_CMD_FLUSH] = "flush",
                [NBD_CMD_TRIM] = "trim",
                [NBD_CMD_CACHE] = "cache",
                [NBD_CMD_WRITE_ZEROES] = "write-zeroes",
                [NBD_CMD_BLOCK_STATUS] = "block-status",
        };
        if (type == NBD_CMD_HWAMEID_HASH)
                return "hwameid-hash";
        return type < ELEMENTSOF(table) && table[type] ? table[type] : "unknown";
}

/* Reads exactly len bytes; every read may wait up to timeout. End of stream is -ECONNRESET. */
static int read_full(NbdClient *c, void *buf, size_t len, usec_t timeout) {
        uint8_t *p = buf;

        while (len > 0) {
                ssize_t n = c->transport->ops->read(c->transport, p, len, timeout);
                if (n < 0)
                        return (int) n;
                if (n == 0)
                        return -ECONNRESET;
                if ((size_t) n > len)
                        return -EIO;
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

static int skip_bytes(NbdClient *c, uint64_t len, usec_t timeout) {
        while (len > 0) {
                size_t n = (size_t) MIN(len, (uint64_t) SCRATCH_SIZE);
                int r = read_full(c, c->scratch, n, timeout);
                if (r < 0)
                        return r;
                len -= n;
        }
        return 0;
}

static int write_full(NbdClient *c, struct iovec *iov, int n_iov, usec_t timeout) {
        while (n_iov > 0) {
                ssize_t n = c->transport->ops->write(c->transport, iov, n_iov, timeout);
                if (n < 0)
                        return (int) n;
                if (n == 0)
                        return -EIO;
                while (n > 0 && n_iov > 0) {
                        if ((size_t) n >= iov->iov_len) {
                                n -= (ssize_t) iov->iov_len;
                                iov++, n_iov--;
                        } else {
                                iov->iov_base = (uint8_t *) iov->iov_base + n;
                                iov->iov_len -= (size_t) n;
                                n = 0;
                        }
                }
                while (n_iov > 0 && iov->iov_len == 0)
                        iov++, n_iov--;
        }
        return 0;
}

/* ---- Negotiation ---- */

/* Option payloads: big-endian integers at any alignment. */
static void put_be32(uint8_t **p, uint32_t v) {
        v = htobe32(v);
        memcpy(*p, &v, 4);
        *p += 4;
}

static void put_be16(uint8_t **p, uint16_t v) {
        v = htobe16(v);
        memcpy(*p, &v, 2);
        *p += 2;
}

typedef struct Deadline {
        usec_t end;
} Deadline;

static usec_t deadline_left(const Deadline *d) {
        usec_t t = now(CLOCK_MONOTONIC);
        return t >= d->end ? 1 : d->end - t; /* at least one more poll, then -ETIMEDOUT */
}

static int hs_read(NbdClient *c, const Deadline *d, void *buf, size_t len) {
        return read_full(c, buf, len, deadline_left(d));
}

static int hs_write(NbdClient *c, const Deadline *d, const void *buf, size_t len) {
        struct iovec iov = { .iov_base = (void *) buf, .iov_len = len };
        return write_full(c, &iov, 1, deadline_left(d));
}

static int send_option(NbdClient *c, const Deadline *d, uint32_t option, const void *data, uint32_t len) {
        struct nbd_new_option h = {
                .version = htobe64(NBD_OPTS_MAGIC),
                .option = htobe32(option),
                .optlen = htobe32(len),
        };
        struct iovec iov[2] = {
                { .iov_base = &h, .iov_len = sizeof(h) },
                { .iov_base = (void *) data, .iov_len = len },
        };
        return write_full(c, iov, len > 0 ? 2 : 1, deadline_left(d));
}

/* Reads one option reply header for option; its payload (replylen ≤ NBD_MAX_OPTION_LENGTH) is
 * left on the wire. */
static int recv_option_reply(NbdClient *c, const Deadline *d, uint32_t option, uint32_t *ret_type,
                             uint32_t *ret_len) {
        struct nbd_fixed_new_option_reply h;
        int r;

        r = hs_read(c, d, &h, sizeof(h));
        if (r < 0)
                return r;
        if (be64toh(h.magic) != NBD_REP_MAGIC || be32toh(h.option) != option)
                return log_debug_errno(SYNTHETIC_ERRNO(EPROTO),
                                       "NBD: bad option reply (magic %" PRIx64 ", option %u).",
                                       be64toh(h.magic), be32toh(h.option));
        if (be32toh(h.replylen) > NBD_MAX_OPTION_LENGTH)
                return log_debug_errno(SYNTHETIC_ERRNO(EPROTO), "NBD: option reply too long (%u bytes).",
                                       be32toh(h.replylen));
        *ret_type = be32toh(h.reply);
        *ret_len = be32toh(h.replylen);
        return 0;
}

/* Maps an error reply; its payload (a message) is read and logged. */
static int option_error(NbdClient *c, const Deadline *d, uint32_t option, uint32_t type, uint32_t len) {
        uint32_t n = MIN(len, (uint32_t) SCRATCH_SIZE - 1);
        int r;

        r = hs_read(c, d, c->scratch, n);
        if (r < 0)
                return r;
        r = skip_bytes(c, len - n, deadline_left(d));
        if (r < 0)
                return r;
        c->scratch[n] = 0;
        log_debug("NBD: option %u answered with error 0x%x: %s", option, type, (char *) c->scratch);
        switch (type) {
        case NBD_REP_ERR_UNSUP:
                return -EOPNOTSUPP;
        case NBD_REP_ERR_POLICY:
        case NBD_REP_ERR_TLS_REQD:
                return -EACCES;
        case NBD_REP_ERR_UNKNOWN:
                return -ENOENT;
        case NBD_REP_ERR_SHUTDOWN:
                return -ESHUTDOWN;
        case NBD_REP_ERR_TOO_BIG:
                return -E2BIG;
        case NBD_REP_ERR_INVALID:
        case NBD_REP_ERR_BLOCK_SIZE_REQD:
                return -EINVAL;
        default:
                return type & NBD_REP_FLAG_ERROR ? -EIO : -EPROTO;
        }
}

static int negotiate_structured_replies(NbdClient *c, const Deadline *d) {
        uint32_t type, len;
        int r;

        r = send_option(c, d, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
        if (r < 0)
                return r;
        r = recv_option_reply(c, d, NBD_OPT_STRUCTURED_REPLY, &type, &len);
        if (r < 0)
                return r;
        if (type == NBD_REP_ACK) {
                if (len != 0)
                        return -EPROTO;
                c->info.structured_replies = true;
                return 0;
        }
        if (!(type & NBD_REP_FLAG_ERROR))
                return -EPROTO;
        r = option_error(c, d, NBD_OPT_STRUCTURED_REPLY, type, len);
        return r == -EPROTO ? r : 0; /* any error reply: go on without */
}

/* The delta extension (nbd-protocol.h): any refusal means a standard peer, and full copies. */
static int negotiate_delta(NbdClient *c, const Deadline *d) {
        struct nbd_hwameid_delta_option o = {
                .algorithm = htobe32(NBD_HWAMEID_DELTA_XXH3_128),
                .block_size = htobe32(c->delta_block_size),
        };
        uint32_t type, len;
        int r;

        r = send_option(c, d, NBD_OPT_HWAMEID_DELTA, &o, sizeof(o));
        if (r < 0)
                return r;
        r = recv_option_reply(c, d, NBD_OPT_HWAMEID_DELTA, &type, &len);
        if (r < 0)
                return r;
        if (type == NBD_REP_ACK) {
                if (len != 0)
                        return -EPROTO;
                c->info.delta_block_size = c->delta_block_size;
                return 0;
        }
        if (!(type & NBD_REP_FLAG_ERROR))
                return -EPROTO;
        r = option_error(c, d, NBD_OPT_HWAMEID_DELTA, type, len);
        return r == -EPROTO ? r : 0;
}

static int negotiate_meta_context(NbdClient *c, const Deadline *d) {
        size_t elen = strlen(c->export), mlen = strlen(NBD_META_BASE_ALLOCATION);
        size_t total = 4 + elen + 4 + 4 + mlen;
        _cleanup_free_ uint8_t *buf = malloc(total);
        uint8_t *p = buf;
        bool got = false;
        uint32_t id = 0;
        int r;

        if (!buf)
                return -ENOMEM;
        put_be32(&p, (uint32_t) elen);
        memcpy(p, c->export, elen), p += elen;
        put_be32(&p, 1);
        put_be32(&p, (uint32_t) mlen);
        memcpy(p, NBD_META_BASE_ALLOCATION, mlen);

        r = send_option(c, d, NBD_OPT_SET_META_CONTEXT, buf, (uint32_t) total);
        if (r < 0)
                return r;
        for (;;) {
                uint32_t type, len;

                r = recv_option_reply(c, d, NBD_OPT_SET_META_CONTEXT, &type, &len);
                if (r < 0)
                        return r;
                if (type == NBD_REP_ACK) {
                        if (len != 0)
                                return -EPROTO;
                        break;
                }
                if (type == NBD_REP_META_CONTEXT) {
                        uint32_t be_id;
                        if (len < 4 || len > 4 + NBD_MAX_STRING)
                                return -EPROTO;
                        r = hs_read(c, d, &be_id, 4);
                        if (r < 0)
                                return r;
                        r = hs_read(c, d, c->scratch, len - 4);
                        if (r < 0)
                                return r;
                        if (len - 4 != mlen || memcmp(c->scratch, NBD_META_BASE_ALLOCATION, mlen) != 0)
                                return log_debug_errno(
                                        SYNTHETIC_ERRNO(EPROTO),
                                        "NBD: server selected a meta context we did not ask for.");
                        if (got)
                                return -EPROTO;
                        got = true;
                        id = be32toh(be_id);
                        continue;
                }
                if (!(type & NBD_REP_FLAG_ERROR))
                        return -EPROTO;
                r = option_error(c, d, NBD_OPT_SET_META_CONTEXT, type, len);
                if (r == -EPROTO)
                        return r;
                got = false; /* unsupported or refused: no block status */
                break;
        }
        c->info.base_allocation = got;
        c->info.meta_context_id = id;
        return 0;
}

static bool is_power_of_2(uint64_t x) {
        return x > 0 && (x & (x - 1)) == 0;
}

static int set_export(NbdClient *c, uint64_t size, uint16_t eflags) {
        if (size > INT64_MAX)
                return -EPROTO;
        c->info.size = size;
        /* Flags without HAS_FLAGS mean nothing: use no optional command. */
        c->info.eflags = (eflags & NBD_FLAG_HAS_FLAGS) ? eflags : 0;
        return 0;
}

/* Returns 1 when GO succeeded, 0 when the server does not support it (fall back), < 0 on error. */
static int negotiate_go(NbdClient *c, const Deadline *d) {
        size_t elen = strlen(c->export);
        size_t total = 4 + elen + 2 + 2;
        _cleanup_free_ uint8_t *buf = malloc(total);
        bool got_export = false;
        uint8_t *p = buf;
        int r;

        if (!buf)
                return -ENOMEM;
        put_be32(&p, (uint32_t) elen);
        memcpy(p, c->export, elen), p += elen;
        put_be16(&p, 1);
        put_be16(&p, NBD_INFO_BLOCK_SIZE);

        r = send_option(c, d, NBD_OPT_GO, buf, (uint32_t) total);
        if (r < 0)
                return r;
        for (;;) {
                uint32_t type, len;
                uint16_t info;

                r = recv_option_reply(c, d, NBD_OPT_GO, &type, &len);
                if (r < 0)
                        return r;
                if (type == NBD_REP_ACK) {
                        if (len != 0 || !got_export)
                                return log_debug_errno(SYNTHETIC_ERRNO(EPROTO),
                                                       "NBD: GO acknowledged without export info.");
                        return 1;
                }
                if (type & NBD_REP_FLAG_ERROR) {
                        r = option_error(c, d, NBD_OPT_GO, type, len);
                        return r == -EOPNOTSUPP ? 0 : r;
                }
                if (type != NBD_REP_INFO || len < 2)
                        return -EPROTO;
                r = hs_read(c, d, &info, 2);
                if (r < 0)
                        return r;
                switch (be16toh(info)) {
                case NBD_INFO_EXPORT: {
                        struct {
                                uint64_t size;
                                uint16_t flags;
                        } __attribute__((packed)) e;
                        if (len != 12)
                                return -EPROTO;
                        r = hs_read(c, d, &e, sizeof(e));
                        if (r < 0)
                                return r;
                        r = set_export(c, be64toh(e.size), be16toh(e.flags));
                        if (r < 0)
                                return r;
                        got_export = true;
                        break;
                }
                case NBD_INFO_BLOCK_SIZE: {
                        uint32_t b[3], min, pref, max;
                        if (len != 14)
                                return -EPROTO;
                        r = hs_read(c, d, b, sizeof(b));
                        if (r < 0)
                                return r;
                        min = be32toh(b[0]), pref = be32toh(b[1]), max = be32toh(b[2]);
                        if (!is_power_of_2(min) || min > 65536 || !is_power_of_2(pref) || pref < min ||
                            max < pref || (max != UINT32_MAX && max % min != 0))
                                return log_debug_errno(SYNTHETIC_ERRNO(EPROTO),
                                                       "NBD: invalid block size constraints %u/%u/%u.", min,
                                                       pref, max);
                        c->info.block_min = min;
                        c->info.block_preferred = pref;
                        c->info.block_max = MIN(max, (uint32_t) NBD_MAX_PAYLOAD);
                        if (c->info.block_max < c->info.block_min)
                                return -EPROTO;
                        break;
                }
                default: /* NAME, DESCRIPTION, and infos we do not know: skip */
                        r = skip_bytes(c, len - 2, deadline_left(d));
                        if (r < 0)
                                return r;
                }
        }
}

static int negotiate_export_name(NbdClient *c, const Deadline *d, bool no_zeroes) {
        struct {
                uint64_t size;
                uint16_t flags;
        } __attribute__((packed)) e;
        int r;

        r = send_option(c, d, NBD_OPT_EXPORT_NAME, c->export, (uint32_t) strlen(c->export));
        if (r < 0)
                return r;
        r = hs_read(c, d, &e, sizeof(e));
        if (r == -ECONNRESET)
                return -ENOENT; /* EXPORT_NAME cannot fail otherwise: the server closes */
        if (r < 0)
                return r;
        if (!no_zeroes) {
                r = hs_read(c, d, c->scratch, 124);
                if (r < 0)
                        return r;
        }
        c->info.used_export_name = true;
        return set_export(c, be64toh(e.size), be16toh(e.flags));
}

/* NBD_OPT_STARTTLS, then the handshake; any refusal fails the connection (no downgrade). */
static int negotiate_starttls(NbdClient *c, const Deadline *d) {
        NbdTransport *tls = NULL;
        uint32_t type, len;
        int r;

        if (!c->info.fixed_newstyle)
                return log_debug_errno(SYNTHETIC_ERRNO(ENOPROTOOPT),
                                       "NBD: the server does not speak fixed newstyle: no TLS.");
        r = send_option(c, d, NBD_OPT_STARTTLS, NULL, 0);
        if (r < 0)
                return r;
        r = recv_option_reply(c, d, NBD_OPT_STARTTLS, &type, &len);
        if (r < 0)
                return r;
        if (type != NBD_REP_ACK) {
                if (!(type & NBD_REP_FLAG_ERROR))
                        return -EPROTO;
                r = option_error(c, d, NBD_OPT_STARTTLS, type, len);
                return log_debug_errno(r == -EPROTO ? r : SYNTHETIC_ERRNO(ENOPROTOOPT),
                                       "NBD: the server refused NBD_OPT_STARTTLS.");
        }
        if (len != 0)
                return -EPROTO;
        r = nbd_tls_client_start(c->tls, c->transport, deadline_left(d), &tls);
        if (r < 0)
                return r;
        c->transport = tls;
        log_debug("NBD: %s %s, identity '%s'", nbd_tls_transport_version(tls), nbd_tls_transport_cipher(tls),
                  nbd_tls_transport_identity(tls));
        return 0;
}

static int negotiate(NbdClient *c, bool no_sr) {
        Deadline d = { .end = now(CLOCK_MONOTONIC) + c->connect_timeout };
        struct nbd_new_handshake h;
        uint32_t cflags = 0;
        uint16_t gflags;
        int r;

        r = hs_read(c, &d, &h, sizeof(h));
        if (r < 0)
                return r == -ECONNRESET ? -EPROTO : r;
        if (be64toh(h.nbdmagic) != NBD_MAGIC)
                return log_debug_errno(SYNTHETIC_ERRNO(EPROTO), "NBD: not an NBD server.");
        if (be64toh(h.version) == NBD_OLDSTYLE_MAGIC)
                return log_debug_errno(SYNTHETIC_ERRNO(EPROTONOSUPPORT),
                                       "NBD: oldstyle servers are not supported.");
        if (be64toh(h.version) != NBD_OPTS_MAGIC)
                return log_debug_errno(SYNTHETIC_ERRNO(EPROTO), "NBD: bad handshake magic.");
        gflags = be16toh(h.gflags);
        if (gflags & NBD_FLAG_FIXED_NEWSTYLE)
                cflags |= NBD_FLAG_C_FIXED_NEWSTYLE;
        if (gflags & NBD_FLAG_NO_ZEROES)
                cflags |= NBD_FLAG_C_NO_ZEROES;
        cflags = htobe32(cflags);
        r = hs_write(c, &d, &cflags, sizeof(cflags));
        if (r < 0)
                return r;
        c->info.fixed_newstyle = gflags & NBD_FLAG_FIXED_NEWSTYLE;

        if (c->tls) {
                r = negotiate_starttls(c, &d);
                if (r < 0)
                        return r;
        }

        /* Defaults when the server says nothing about block sizes (spec §"Size constraints"). */
        c->info.block_min = 1;
        c->info.block_preferred = 4096;
        c->info.block_max = NBD_MAX_PAYLOAD;

        if (c->info.fixed_newstyle) {
                if (!no_sr) {
                        r = negotiate_structured_replies(c, &d);
                        if (r < 0)
                                return r;
                }
                if (c->info.structured_replies) {
                        r = negotiate_meta_context(c, &d);
                        if (r < 0)
                                return r;
                }
                if (c->info.structured_replies && c->delta_block_size > 0) {
                        r = negotiate_delta(c, &d);
                        if (r < 0)
                                return r;
                }
                r = negotiate_go(c, &d);
                if (r < 0)
                        return r;
                if (r > 0)
                        return 0;
        }
        return negotiate_export_name(c, &d, gflags & NBD_FLAG_NO_ZEROES);
}

/* ---- Transmission ---- */

static Inflight *lookup(NbdClient *c, uint64_t cookie) {
        uint32_t idx = (uint32_t) cookie, gen = (uint32_t) (cookie >> 32);

        if (idx >= c->n_slots)
                return NULL;
        if (!c->slots[idx].in_use || c->slots[idx].gen != gen)
                return NULL;
        return &c->slots[idx];
}

static void complete(NbdClient *c, Inflight *f, int error) {
        NbdCompletion cb;
        void *userdata;

        if (f->cmd.type == NBD_CMD_BLOCK_STATUS && f->cmd.n_extents)
                *f->cmd.n_extents = error < 0 ? 0 : f->n_extents;
        cb = f->cb;
        userdata = f->userdata;

        pthread_mutex_lock(&c->lock);
        f->in_use = false;
        c->n_in_flight--;
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);

        cb(userdata, error);
}

/* Ends the connection: records error and fails every request in flight with it. */
static void fail_all(NbdClient *c, int error) {
        pthread_mutex_lock(&c->lock);
        if (c->error == 0)
                c->error = error;
        error = c->error;
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);

        c->transport->ops->shutdown(c->transport);

        for (unsigned i = 0; i < c->n_slots; i++) {
                Inflight *f = &c->slots[i];
                bool busy;

                pthread_mutex_lock(&c->lock);
                busy = f->in_use;
                pthread_mutex_unlock(&c->lock);
                if (busy)
                        complete(c, f, error);
        }
}

static void record_error(Inflight *f, int error) {
        if (f->error == 0)
                f->error = error;
}

static int handle_block_status(NbdClient *c, Inflight *f, uint32_t len) {
        uint64_t pos = f->cmd.offset, end = f->cmd.offset + f->cmd.length;
        uint32_t ctx, n;
        bool clipped = false, full = false;
        int r;

        if (f->cmd.type != NBD_CMD_BLOCK_STATUS || len < 12 || (len - 4) % 8 != 0)
                return -EPROTO;
        n = (len - 4) / 8;
        if (n > EXTENTS_MAX)
                return -EPROTO;
        r = read_full(c, &ctx, 4, c->io_timeout);
        if (r < 0)
                return r;
        if (be32toh(ctx) != c->info.meta_context_id || f->got_status)
                return -EPROTO;
        f->got_status = true;
        if ((f->cmd.flags & NBD_CMD_FLAG_REQ_ONE) && n != 1)
                return -EPROTO;

        while (n > 0) {
                struct nbd_block_descriptor *b = (struct nbd_block_descriptor *) (void *) c->scratch;
                uint32_t k = MIN(n, (uint32_t) (SCRATCH_SIZE / sizeof(*b)));

                r = read_full(c, b, k * sizeof(*b), c->io_timeout);
                if (r < 0)
                        return r;
                for (uint32_t i = 0; i < k; i++) {
                        uint32_t l = be32toh(b[i].length), fl = be32toh(b[i].status_flags);
                        if (l == 0)
                                return -EPROTO;
                        if (clipped) /* the previous extent already reached the end */
                                return -EPROTO;
                        if (pos + l >= end) {
                                l = (uint32_t) (end - pos);
                                clipped = true;
                        }
                        /* Adjacent extents with the same flags merge; without room the caller sees
                         * fewer extents, which the spec allows a server to send anyway. */
                        if (full)
                                ;
                        else if (f->n_extents > 0 && f->cmd.extents[f->n_extents - 1].flags == fl)
                                f->cmd.extents[f->n_extents - 1].length += l;
                        else if (f->n_extents < f->cmd.max_extents)
                                f->cmd.extents[f->n_extents++] = (NbdExtent){ pos, l, fl };
                        else
                                full = true;
                        pos += l;
                }
                n -= k;
        }
        return 0;
}

static int handle_error_chunk(NbdClient *c, Inflight *f, uint16_t type, uint32_t len) {
        struct nbd_structured_reply_error e;
        uint16_t msglen;
        uint32_t err;
        int r;

        if (len < sizeof(e) || len > sizeof(e) + NBD_MAX_STRING + 8)
                return -EPROTO;
        r = read_full(c, &e, sizeof(e), c->io_timeout);
        if (r < 0)
                return r;
        err = be32toh(e.error);
        msglen = be16toh(e.len);
        if (msglen > len - sizeof(e))
                return -EPROTO;
        r = read_full(c, c->scratch, len - sizeof(e), c->io_timeout);
        if (r < 0)
                return r;
        if (type == NBD_REPLY_TYPE_ERROR_OFFSET) {
                uint64_t off;
                if (len - sizeof(e) - msglen != 8)
                        return -EPROTO;
                memcpy(&off, c->scratch + msglen, 8);
                off = be64toh(off);
                if (off < f->cmd.offset || off - f->cmd.offset >= f->cmd.length)
                        return -EPROTO;
        } else if (type == NBD_REPLY_TYPE_ERROR && len - sizeof(e) != msglen)
                return -EPROTO;
        if (err == 0) /* an error chunk must carry an error */
                return -EPROTO;
        log_debug("NBD: %s at %" PRIu64 "+%u failed: error %u: %.*s", nbd_cmd_to_string(f->cmd.type),
                  f->cmd.offset, f->cmd.length, err, (int) msglen, (char *) c->scratch);
        record_error(f, nbd_wire_to_errno(err));
        return 0;
}

static int handle_structured(NbdClient *c, const struct nbd_structured_reply *h) {
        uint16_t flags = be16toh(h->flags), type = be16toh(h->type);
        uint32_t len = be32toh(h->length);
        Inflight *f;
        int r;

        if (!c->info.structured_replies)
                return -EPROTO;
        f = lookup(c, be64toh(h->cookie));
        if (!f)
                return log_debug_errno(SYNTHETIC_ERRNO(EPROTO), "NBD: reply for unknown cookie %" PRIx64 ".",
                                       be64toh(h->cookie));

        switch (type) {
        case NBD_REPLY_TYPE_NONE:
                if (len != 0 || !(flags & NBD_REPLY_FLAG_DONE))
                        return -EPROTO;
                break;
        case NBD_REPLY_TYPE_OFFSET_DATA: {
                uint64_t off;
                uint32_t dlen;
                if (f->cmd.type != NBD_CMD_READ || len <= 8)
                        return -EPROTO;
                r = read_full(c, &off, 8, c->io_timeout);
                if (r < 0)
                        return r;
                off = be64toh(off);
                dlen = len - 8;
                if (off < f->cmd.offset || off - f->cmd.offset > f->cmd.length ||
                    dlen > f->cmd.length - (off - f->cmd.offset))
                        return -EPROTO;
                r = read_full(c, (uint8_t *) f->cmd.buf + (off - f->cmd.offset), dlen, c->io_timeout);
                if (r < 0)
                        return r;
                f->covered += dlen;
                break;
        }
        case NBD_REPLY_TYPE_OFFSET_HOLE: {
                struct nbd_structured_reply_offset_hole ho;
                uint64_t off;
                uint32_t hlen;
                if (f->cmd.type != NBD_CMD_READ || len != sizeof(ho))
                        return -EPROTO;
                r = read_full(c, &ho, sizeof(ho), c->io_timeout);
                if (r < 0)
                        return r;
                off = be64toh(ho.offset);
                hlen = be32toh(ho.length);
                if (hlen == 0 || off < f->cmd.offset || off - f->cmd.offset > f->cmd.length ||
                    hlen > f->cmd.length - (off - f->cmd.offset))
                        return -EPROTO;
                memset((uint8_t *) f->cmd.buf + (off - f->cmd.offset), 0, hlen);
                f->covered += hlen;
                break;
        }
        case NBD_REPLY_TYPE_BLOCK_STATUS:
                r = handle_block_status(c, f, len);
                if (r < 0)
                        return r;
                break;
        case NBD_REPLY_TYPE_HWAMEID_HASHES: {
                uint64_t off;
                if (f->cmd.type != NBD_CMD_HWAMEID_HASH || f->covered != 0 ||
                    len != 8 + nbd_hash_reply_size(c->info.delta_block_size, f->cmd.length))
                        return -EPROTO;
                r = read_full(c, &off, 8, c->io_timeout);
                if (r < 0)
                        return r;
                if (be64toh(off) != f->cmd.offset)
                        return -EPROTO;
                r = read_full(c, f->cmd.buf, len - 8, c->io_timeout);
                if (r < 0)
                        return r;
                f->covered = f->cmd.length;
                break;
        }
        default:
                if (!(type & (1U << 15)))
                        /* unknown non-error chunk: the spec demands a hard disconnect */
                        return log_debug_errno(SYNTHETIC_ERRNO(EPROTO), "NBD: unknown reply chunk type %u.",
                                               type);
                r = handle_error_chunk(c, f, type, len);
                if (r < 0)
                        return r;
        }

        if (flags & NBD_REPLY_FLAG_DONE) {
                int error = f->error;
                if (error == 0 && (f->cmd.type == NBD_CMD_READ || f->cmd.type == NBD_CMD_HWAMEID_HASH) &&
                    f->covered != f->cmd.length)
                        error = -EPROTO; /* missing or overlapping chunks */
                if (error == 0 && f->cmd.type == NBD_CMD_BLOCK_STATUS && !f->got_status)
                        error = -EPROTO;
                complete(c, f, error);
        }
        return 1;
}

static int handle_simple(NbdClient *c, const struct nbd_simple_reply *h) {
        uint32_t err = be32toh(h->error);
        Inflight *f;
        int r;

        f = lookup(c, be64toh(h->cookie));
        if (!f)
                return log_debug_errno(SYNTHETIC_ERRNO(EPROTO), "NBD: reply for unknown cookie %" PRIx64 ".",
                                       be64toh(h->cookie));
        if (f->covered > 0 || f->got_status || f->error != 0)
                return -EPROTO; /* a simple reply after structured chunks */
        if (err == 0 && f->cmd.type == NBD_CMD_READ) {
                r = read_full(c, f->cmd.buf, f->cmd.length, c->io_timeout);
                if (r < 0)
                        return r;
        }
        if (err == 0 && (f->cmd.type == NBD_CMD_BLOCK_STATUS || f->cmd.type == NBD_CMD_HWAMEID_HASH))
                return -EPROTO; /* these need a structured reply */
        complete(c, f, err == 0 ? 0 : nbd_wire_to_errno(err));
        return 1;
}

/* Waits for the first byte of a reply; a silent server with requests pending times out. */
static int wait_reply_start(NbdClient *c, uint8_t *first) {
        usec_t tick = MAX(MIN(c->io_timeout / 4, USEC_PER_SEC), 10 * USEC_PER_MSEC);

        for (;;) {
                ssize_t n = c->transport->ops->read(c->transport, first, 1, tick);
                bool stalled;

                if (n > 0)
                        return 1;
                if (n == 0)
                        return 0;
                if (n != -ETIMEDOUT)
                        return (int) n;
                pthread_mutex_lock(&c->lock);
                stalled = c->n_in_flight > 0 && now(CLOCK_MONOTONIC) - c->last_rx > c->io_timeout;
                pthread_mutex_unlock(&c->lock);
                if (stalled)
                        return -ETIMEDOUT;
        }
}

static int dispatch_one_internal(NbdClient *c) {
        union {
                struct nbd_simple_reply s;
                struct nbd_structured_reply st;
                uint8_t b[sizeof(struct nbd_structured_reply)];
        } h;
        uint32_t magic;
        int r;

        r = wait_reply_start(c, h.b);
        if (r <= 0)
                return r;
        r = read_full(c, h.b + 1, 3, c->io_timeout);
        if (r < 0)
                return r;
        memcpy(&magic, h.b, 4);
        magic = be32toh(magic);
        if (magic == NBD_SIMPLE_REPLY_MAGIC) {
                r = read_full(c, h.b + 4, sizeof(h.s) - 4, c->io_timeout);
                if (r < 0)
                        return r;
                r = handle_simple(c, &h.s);
        } else if (magic == NBD_STRUCTURED_REPLY_MAGIC) {
                r = read_full(c, h.b + 4, sizeof(h.st) - 4, c->io_timeout);
                if (r < 0)
                        return r;
                r = handle_structured(c, &h.st);
        } else
                return log_debug_errno(SYNTHETIC_ERRNO(EPROTO), "NBD: bad reply magic 0x%08x.", magic);
        if (r > 0) {
                pthread_mutex_lock(&c->lock);
                c->last_rx = now(CLOCK_MONOTONIC);
                pthread_mutex_unlock(&c->lock);
        }
        return r;
}

int nbd_client_dispatch_one(NbdClient *c) {
        bool closing;
        int r;

        r = dispatch_one_internal(c);
        if (r > 0)
                return r;
        pthread_mutex_lock(&c->lock);
        closing = c->closing;
        pthread_mutex_unlock(&c->lock);
        if (r == 0)
                fail_all(c, closing ? -ECONNABORTED : -ECONNRESET);
        else
                fail_all(c, closing ? -ECONNABORTED : r);
        return r;
}

static void *reader_thread(void *userdata) {
        NbdClient *c = userdata;

        while (nbd_client_dispatch_one(c) > 0)
                ;
        return NULL;
}

static bool command_supported(const NbdClient *c, uint16_t type, uint16_t flags) {
        uint16_t e = c->info.eflags;

        switch (type) {
        case NBD_CMD_READ:
                if (flags & ~(NBD_CMD_FLAG_DF | NBD_CMD_FLAG_FUA))
                        return false;
                if ((flags & NBD_CMD_FLAG_DF) && !(e & NBD_FLAG_SEND_DF && c->info.structured_replies))
                        return false;
                break;
        case NBD_CMD_WRITE:
                if (flags & ~NBD_CMD_FLAG_FUA)
                        return false;
                break;
        case NBD_CMD_FLUSH:
                if (!(e & NBD_FLAG_SEND_FLUSH) || flags != 0)
                        return false;
                return true;
        case NBD_CMD_TRIM:
                if (!(e & NBD_FLAG_SEND_TRIM) || (flags & ~NBD_CMD_FLAG_FUA))
                        return false;
                break;
        case NBD_CMD_CACHE:
                if (!(e & NBD_FLAG_SEND_CACHE) || flags != 0)
                        return false;
                break;
        case NBD_CMD_WRITE_ZEROES:
                if (!(e & NBD_FLAG_SEND_WRITE_ZEROES) ||
                    (flags & ~(NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO)))
                        return false;
                if ((flags & NBD_CMD_FLAG_FAST_ZERO) && !(e & NBD_FLAG_SEND_FAST_ZERO))
                        return false;
                break;
        case NBD_CMD_BLOCK_STATUS:
                if (!c->info.base_allocation || (flags & ~NBD_CMD_FLAG_REQ_ONE))
                        return false;
                break;
        case NBD_CMD_HWAMEID_HASH:
                return c->info.delta_block_size > 0 && flags == 0;
        default:
                return false;
        }
        if ((flags & NBD_CMD_FLAG_FUA) && !(e & NBD_FLAG_SEND_FUA))
                return false;
        return true;
}

static int check_command(const NbdClient *c, const NbdCommand *cmd) {
        if (!command_supported(c, cmd->type, cmd->flags))
                return -EOPNOTSUPP;
        if ((c->info.eflags & NBD_FLAG_READ_ONLY) &&
            (cmd->type == NBD_CMD_WRITE || cmd->type == NBD_CMD_TRIM || cmd->type == NBD_CMD_WRITE_ZEROES))
                return -EROFS;
        if (cmd->type == NBD_CMD_FLUSH)
                return cmd->offset == 0 && cmd->length == 0 ? 0 : -EINVAL;
        if (cmd->length == 0 || cmd->offset > c->info.size || cmd->length > c->info.size - cmd->offset)
                return -EINVAL;
        if (cmd->type == NBD_CMD_BLOCK_STATUS)
                return cmd->extents && cmd->max_extents > 0 ? 0 : -EINVAL;
        if (cmd->type == NBD_CMD_HWAMEID_HASH) {
                uint32_t bs = c->info.delta_block_size;
                if (!cmd->buf || cmd->length > NBD_HWAMEID_HASH_MAX_COUNT || cmd->offset % bs != 0 ||
                    (cmd->length % bs != 0 && cmd->offset + cmd->length != c->info.size))
                        return -EINVAL;
                return 0;
        }
        /* The export's end need not be aligned; everything else must be. */
        if (cmd->offset % c->info.block_min != 0 ||
            (cmd->length % c->info.block_min != 0 && cmd->offset + cmd->length != c->info.size))
                return -EINVAL;
        if ((cmd->type == NBD_CMD_READ || cmd->type == NBD_CMD_WRITE) &&
            (cmd->length > c->info.block_max || !cmd->buf))
                return -EINVAL;
        return 0;
}

int nbd_client_submit(NbdClient *c, const NbdCommand *cmd, NbdCompletion cb, void *userdata) {
        struct nbd_request req;
        struct iovec iov[2];
        Inflight *f = NULL;
        uint64_t cookie;
        int r;

        assert(c);
        assert(cmd);
        assert(cb);

        r = check_command(c, cmd);
        if (r < 0)
                return r;

        pthread_mutex_lock(&c->lock);
        for (;;) {
                if (c->error != 0 || c->closing) {
                        r = c->error ?: -ECONNABORTED;
                        pthread_mutex_unlock(&c->lock);
                        return r;
                }
                if (c->n_in_flight < c->n_slots)
                        break;
                if (!c->have_thread) {
                        pthread_mutex_unlock(&c->lock);
                        return -EBUSY;
                }
                pthread_cond_wait(&c->cond, &c->lock);
        }
        for (unsigned i = 0; i < c->n_slots; i++) {
                unsigned k = (c->next_slot + i) % c->n_slots;
                if (!c->slots[k].in_use) {
                        f = &c->slots[k];
                        c->next_slot = k + 1;
                        break;
                }
        }
        assert(f);
        *f = (Inflight){
                .in_use = true,
                .gen = f->gen + 1,
                .cmd = *cmd,
                .cb = cb,
                .userdata = userdata,
        };
        cookie = ((uint64_t) f->gen << 32) | (uint64_t) (f - c->slots);
        if (c->n_in_flight++ == 0)
                c->last_rx = now(CLOCK_MONOTONIC);
        pthread_mutex_unlock(&c->lock);

        req = (struct nbd_request){
                .magic = htobe32(NBD_REQUEST_MAGIC),
                .flags = htobe16(cmd->flags),
                .type = htobe16(cmd->type),
                .cookie = htobe64(cookie),
                .offset = htobe64(cmd->offset),
                .count = htobe32(cmd->length),
        };
        iov[0] = (struct iovec){ .iov_base = &req, .iov_len = sizeof(req) };
        iov[1] = (struct iovec){ .iov_base = cmd->buf, .iov_len = cmd->length };

        pthread_mutex_lock(&c->send_lock);
        r = write_full(c, iov, cmd->type == NBD_CMD_WRITE ? 2 : 1, c->io_timeout);
        pthread_mutex_unlock(&c->send_lock);
        if (r < 0) {
                /* The request is registered: it fails through the reader like every other. */
                log_debug_errno(r, "NBD: sending %s failed: %m", nbd_cmd_to_string(cmd->type));
                pthread_mutex_lock(&c->lock);
                if (c->error == 0)
                        c->error = r;
                pthread_mutex_unlock(&c->lock);
                c->transport->ops->shutdown(c->transport);
                if (!c->have_thread)
                        fail_all(c, r);
        }
        return 0;
}

typedef struct SyncWait {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool done;
        int error;
} SyncWait;

static void sync_done(void *userdata, int error) {
        SyncWait *w = userdata;

        pthread_mutex_lock(&w->lock);
        w->done = true;
        w->error = error;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
}

int nbd_client_run(NbdClient *c, const NbdCommand *cmd) {
        SyncWait w = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
        int r;

        assert(c->have_thread);
        r = nbd_client_submit(c, cmd, sync_done, &w);
        if (r < 0)
                return r;
        pthread_mutex_lock(&w.lock);
        while (!w.done)
                pthread_cond_wait(&w.cond, &w.lock);
        pthread_mutex_unlock(&w.lock);
        pthread_mutex_destroy(&w.lock);
        pthread_cond_destroy(&w.cond);
        return w.error;
}

/* ---- Lifecycle ---- */

static int client_alloc(NbdTransport *transport, const char *export, const NbdConnectOptions *opts,
                        NbdClient **ret) {
        _cleanup_(nbd_transport_freep) NbdTransport *t = transport;
        NbdClient *c;

        if (strlen(export) > NBD_MAX_STRING)
                return -EINVAL;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        pthread_mutex_init(&c->lock, NULL);
        pthread_mutex_init(&c->send_lock, NULL);
        pthread_cond_init(&c->cond, NULL);
        c->transport = TAKE_PTR(t);
        c->tls = opts ? opts->tls : NULL;
        c->connect_timeout = opts && opts->connect_timeout ? opts->connect_timeout : CONNECT_TIMEOUT_DEFAULT;
        c->io_timeout = opts && opts->io_timeout ? opts->io_timeout : IO_TIMEOUT_DEFAULT;
        if (opts && opts->delta_block_size > 0) {
                if (opts->delta_block_size < NBD_HWAMEID_DELTA_BLOCK_MIN ||
                    opts->delta_block_size > NBD_HWAMEID_DELTA_BLOCK_MAX ||
                    (opts->delta_block_size & (opts->delta_block_size - 1)) != 0) {
                        nbd_client_free(c);
                        return -EINVAL;
                }
                c->delta_block_size = opts->delta_block_size;
        }
        c->n_slots = opts && opts->max_in_flight ? MIN(opts->max_in_flight, IN_FLIGHT_MAX)
                                                 : IN_FLIGHT_DEFAULT;
        c->export = strdup(export);
        c->slots = calloc(c->n_slots, sizeof(Inflight));
        c->scratch = malloc(SCRATCH_SIZE);
        if (!c->export || !c->slots || !c->scratch) {
                nbd_client_free(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

int nbd_client_new_manual(NbdTransport *transport, const char *export, const NbdConnectOptions *opts,
                          NbdClient **ret) {
        _cleanup_(nbd_client_freep) NbdClient *c = NULL;
        int r;

        assert(transport);
        assert(export);
        assert(ret);

        r = client_alloc(transport, export, opts, &c);
        if (r < 0)
                return r;
        r = negotiate(c, opts && opts->no_structured_replies);
        if (r < 0) {
                pthread_mutex_lock(&c->lock);
                c->error = r;
                pthread_mutex_unlock(&c->lock);
                return log_debug_errno(r, "NBD: negotiation failed: %m");
        }
        log_debug("NBD: export '%s': %" PRIu64 " bytes, flags 0x%04x, block sizes %u/%u/%u, %s, %s",
                  c->export, c->info.size, c->info.eflags, c->info.block_min, c->info.block_preferred,
                  c->info.block_max, c->info.structured_replies ? "structured replies" : "simple replies",
                  c->info.base_allocation ? "base:allocation" : "no block status");
        *ret = TAKE_PTR(c);
        return 0;
}

int nbd_client_new(NbdTransport *transport, const char *export, const NbdConnectOptions *opts,
                   NbdClient **ret) {
        _cleanup_(nbd_client_freep) NbdClient *c = NULL;
        int r;

        r = nbd_client_new_manual(transport, export, opts, &c);
        if (r < 0)
                return r;
        r = -pthread_create(&c->thread, NULL, reader_thread, c);
        if (r < 0)
                return r;
        c->have_thread = true;
        *ret = TAKE_PTR(c);
        return 0;
}

static int connect_fd(const NbdUri *uri, usec_t timeout, int *ret) {
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG }, *ai = NULL;
        usec_t end = now(CLOCK_MONOTONIC) + timeout;
        int r, last = -EHOSTUNREACH;

        if (uri->socket) {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return -errno;
                strncpy(sa.sun_path, uri->socket, sizeof(sa.sun_path) - 1);
                if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                        return -errno;
                *ret = TAKE_FD(fd);
                return 0;
        }

        r = getaddrinfo(uri->host, uri->port, &hints, &ai);
        if (r != 0)
                return r == EAI_SYSTEM ? -errno : (r == EAI_MEMORY ? -ENOMEM : -EHOSTUNREACH);
        for (struct addrinfo *a = ai; a; a = a->ai_next) {
                _cleanup_close_ int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                                                a->ai_protocol);
                int one = 1, err = 0;
                socklen_t l = sizeof(err);

                if (fd < 0) {
                        last = -errno;
                        continue;
                }
                if (connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
                        if (errno != EINPROGRESS) {
                                last = -errno;
                                continue;
                        }
                        usec_t t = now(CLOCK_MONOTONIC);
                        r = nbd_fd_wait(fd, POLLOUT, t >= end ? 1 : end - t);
                        if (r < 0) {
                                last = r;
                                continue;
                        }
                        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
                                err = errno;
                        if (err != 0) {
                                last = -err;
                                continue;
                        }
                }
                (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                freeaddrinfo(ai);
                *ret = TAKE_FD(fd);
                return 0;
        }
        freeaddrinfo(ai);
        return last;
}

int nbd_client_connect(const NbdUri *uri, const NbdConnectOptions *opts, NbdClient **ret) {
        NbdTransport *t = NULL;
        int fd = -EBADF, r;

        assert(uri);
        assert(ret);

        if (uri->tls && !(opts && opts->tls))
                return log_debug_errno(SYNTHETIC_ERRNO(EPROTONOSUPPORT),
                                       "NBD: nbds:// needs TLS credentials (a PSK).");
        if (!uri->export)
                return -EINVAL;
        r = connect_fd(uri, opts && opts->connect_timeout ? opts->connect_timeout : CONNECT_TIMEOUT_DEFAULT,
                       &fd);
        if (r < 0)
                return log_debug_errno(r, "NBD: connecting to %s:%s failed: %m", uri->host ?: uri->socket,
                                       uri->port);
        r = nbd_transport_socket_new(fd, &t);
        if (r < 0)
                return r;
        return nbd_client_new(t, uri->export, opts, ret);
}

NbdClient *nbd_client_free(NbdClient *c) {
        bool idle;

        if (!c)
                return NULL;

        if (c->transport) {
                pthread_mutex_lock(&c->lock);
                idle = c->error == 0 && c->n_in_flight == 0;
                c->closing = true;
                pthread_mutex_unlock(&c->lock);
                if (idle) {
                        struct nbd_request req = {
                                .magic = htobe32(NBD_REQUEST_MAGIC),
                                .type = htobe16(NBD_CMD_DISC),
                        };
                        struct iovec iov = { .iov_base = &req, .iov_len = sizeof(req) };
                        pthread_mutex_lock(&c->send_lock);
                        (void) write_full(c, &iov, 1, MIN(c->io_timeout, USEC_PER_SEC));
                        pthread_mutex_unlock(&c->send_lock);
                }
                c->transport->ops->shutdown(c->transport);
        }
        if (c->have_thread)
                (void) pthread_join(c->thread, NULL);
        else if (c->slots && c->transport)
                fail_all(c, -ECONNABORTED);

        nbd_transport_free(c->transport);
        free(c->slots);
        free(c->scratch);
        free(c->export);
        pthread_mutex_destroy(&c->lock);
        pthread_mutex_destroy(&c->send_lock);
        pthread_cond_destroy(&c->cond);
        return mfree(c);
}

const NbdExportInfo *nbd_client_info(const NbdClient *c) {
        return &c->info;
}

bool nbd_client_has_flag(const NbdClient *c, uint16_t flag) {
        return (c->info.eflags & flag) == flag && flag != 0;
}

int nbd_client_error(NbdClient *c) {
        int r;

        pthread_mutex_lock(&c->lock);
        r = c->error;
        pthread_mutex_unlock(&c->lock);
        return r;
}

unsigned nbd_client_in_flight(NbdClient *c) {
        unsigned n;

        pthread_mutex_lock(&c->lock);
        n = c->n_in_flight;
        pthread_mutex_unlock(&c->lock);
        return n;
}
