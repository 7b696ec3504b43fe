/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * NBD client: fixed newstyle negotiation and asynchronous transmission with many requests in
 * flight on one connection.
 *
 * Negotiation (blocking, bounded by the connect timeout): NBD_OPT_STRUCTURED_REPLY, then
 * NBD_OPT_SET_META_CONTEXT "base:allocation", then NBD_OPT_GO asking for NBD_INFO_BLOCK_SIZE;
 * NBD_OPT_EXPORT_NAME when the server answers GO with NBD_REP_ERR_UNSUP or does not speak fixed
 * newstyle. Commands the server did not advertise in its transmission flags are refused locally
 * (-EOPNOTSUPP) and never sent.
 *
 * Transmission: any thread submits a command with a completion callback; the request goes onto the
 * wire at once (writes are serialised by a lock). One reader thread per connection reads replies,
 * matches cookies, reassembles structured replies into the caller's buffer (OFFSET_DATA at its
 * offset, OFFSET_HOLE as zeroes) and calls the callback on that thread: callbacks must be short and
 * must not submit on the same connection while holding locks the submitter needs. A protocol
 * violation (bad magic, unknown cookie, a chunk outside the request, an unknown non-error chunk type,
 * …) is a hard disconnect: every request in flight completes with the error (-EPROTO), and so does
 * a server that sends nothing for io_timeout while requests are pending (-ETIMEDOUT).
 *
 * All bytes go through an NbdTransport (read and write on a connection), so TLS can wrap the
 * socket without the protocol code knowing.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "basic/macro.h"
#include "basic/time-util.h"
#include "stream/nbd-transport.h"

/* ---- URIs (libnbd's form) ---- */

/*
 * nbd://HOST[:PORT][/EXPORT] (IPv6 literals in brackets, default port 10809, an empty path is the
 * default export, "//x" is export "/x", %XX escapes in the export name), nbd+unix:///EXPORT?socket=PATH,
 * and nbds:// / nbds+unix:// (tls set: TLS is mandatory). A user name ("alice@") is kept for
 * TLS-PSK (the PSK identity). Other query parameters are ignored. -EINVAL on malformed URIs.
 */
typedef struct NbdUri {
        bool tls;
        char *user;   /* NULL when absent */
        char *host;   /* NULL for nbd+unix */
        char *port;   /* "10809" when absent */
        char *socket; /* nbd+unix only */
        char *export; /* "" = default export */
} NbdUri;

bool nbd_uri_is_uri(const char *s);
int nbd_uri_parse(const char *s, NbdUri *ret);
void nbd_uri_done(NbdUri *u);

/* ---- Connection ---- */

typedef struct NbdClient NbdClient;

typedef struct NbdConnectOptions {
        usec_t connect_timeout;     /* TCP connect plus negotiation; 0 = 10 s */
        usec_t io_timeout;          /* a server silent this long with requests pending is dead; 0 = 30 s */
        unsigned max_in_flight;     /* requests outstanding at once (submitters wait beyond); 0 = 256 */
        bool no_structured_replies; /* do not negotiate structured replies (and so no block status) */
        /* TLS-PSK (nbd-tls.h, borrowed; must outlive the connection): NBD_OPT_STARTTLS is sent first
         * and the connection fails unless the server accepts it. Required for nbds:// URIs. */
        struct NbdTlsContext *tls;
        /* The delta extension (nbd-protocol.h): ask for block hashes of this size (a power of two in
         * [NBD_HWAMEID_DELTA_BLOCK_MIN, NBD_HWAMEID_DELTA_BLOCK_MAX]); 0 = do not ask. A server
         * refusing it is no error: NbdExportInfo.delta_block_size stays 0. */
        uint32_t delta_block_size;
} NbdConnectOptions;

/* What negotiation established. */
typedef struct NbdExportInfo {
        uint64_t size;
        uint16_t eflags; /* NBD_FLAG_* transmission flags as the server sent them */
        uint32_t block_min, block_preferred, block_max; /* block_max capped at NBD_MAX_PAYLOAD */
        bool structured_replies;
        bool base_allocation; /* base:allocation selected: BLOCK_STATUS available */
        uint32_t meta_context_id;
        bool fixed_newstyle;
        bool used_export_name;     /* negotiation ended with NBD_OPT_EXPORT_NAME */
        uint32_t delta_block_size; /* the server hashes blocks of this size (NBD_CMD_HWAMEID_HASH); 0: no */
} NbdExportInfo;

/*
 * Connects and negotiates. Errors: -ECONNREFUSED, -EHOSTUNREACH, -ETIMEDOUT, -ENOENT (the server
 * does not know the export), -EACCES (the server requires TLS or refused by policy), -EPROTO (the
 * server broke the protocol), -EPROTONOSUPPORT (nbds: TLS is not available in this build yet),
 * -EINVAL (bad URI), or another -errno.
 */
int nbd_client_connect(const NbdUri *uri, const NbdConnectOptions *opts, NbdClient **ret);
/* The same over an already connected transport (takes ownership of it, also on failure). */
int nbd_client_new(NbdTransport *transport, const char *export, const NbdConnectOptions *opts,
                   NbdClient **ret);
/*
 * Sends NBD_CMD_DISC when the connection is healthy and idle, closes it and joins the reader thread.
 * Requests still in flight complete with -ECONNABORTED (on the reader thread, before this returns).
 */
NbdClient *nbd_client_free(NbdClient *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(NbdClient *, nbd_client_free);

const NbdExportInfo *nbd_client_info(const NbdClient *c);
/* True when the server advertised the transmission flag (NBD_FLAG_SEND_FLUSH, …). */
bool nbd_client_has_flag(const NbdClient *c, uint16_t flag);
/* 0 while the connection works, else the error that ended it. */
int nbd_client_error(NbdClient *c);
unsigned nbd_client_in_flight(NbdClient *c);

/* ---- Commands ---- */

typedef struct NbdExtent {
        uint64_t offset, length;
        uint32_t flags; /* NBD_STATE_HOLE, NBD_STATE_ZERO */
} NbdExtent;

typedef struct NbdCommand {
        uint16_t
                type; /* NBD_CMD_READ, WRITE, FLUSH, TRIM, WRITE_ZEROES, BLOCK_STATUS, CACHE, HWAMEID_HASH */
        uint16_t flags; /* NBD_CMD_FLAG_* */
        uint64_t offset;
        uint32_t length;
        void *buf; /* READ: filled; WRITE: sent (const); HWAMEID_HASH: room for
                    * nbd_hash_reply_size(delta_block_size, length) bytes of digests, filled */
        /* BLOCK_STATUS: room for max_extents; *n_extents is set before the callback runs. Extents are
         * contiguous from offset, non-empty, and end within the request (a last extent reaching past it
         * is clipped); the server may describe less than was asked. */
        NbdExtent *extents;
        size_t max_extents;
        size_t *n_extents;
} NbdCommand;

/* error is 0 or a negative errno (the server's NBD error mapped, or the connection's error). */
typedef void (*NbdCompletion)(void *userdata, int error);

/*
 * Queues cmd (copied; buffers must stay valid until completion) and writes it to the server. Waits
 * while max_in_flight requests are outstanding. Returns 0 and the callback runs exactly once later, or
 * a negative errno and the callback never runs: -EOPNOTSUPP (not advertised by the server), -EROFS
 * (writing a read-only export), -EINVAL (out of the export, misaligned for the server's minimum
 * block size, or READ/WRITE beyond its maximum payload), or the connection's error.
 */
int nbd_client_submit(NbdClient *c, const NbdCommand *cmd, NbdCompletion cb, void *userdata);
/* Submits and waits (not usable from a completion callback). */
int nbd_client_run(NbdClient *c, const NbdCommand *cmd);

/*
 * For fuzzers and tests: negotiates over transport without starting the reader thread; replies are
 * then read by calling nbd_client_dispatch_one(), which handles one reply or chunk (> 0), returns 0
 * at end of stream and a negative errno when the connection broke (requests in flight have then
 * been failed).
 */
int nbd_client_new_manual(NbdTransport *transport, const char *export, const NbdConnectOptions *opts,
                          NbdClient **ret);
int nbd_client_dispatch_one(NbdClient *c);

const char *nbd_cmd_to_string(uint16_t type);

/* Bytes of digests an NBD_CMD_HWAMEID_HASH of length bytes returns with blocks of block_size. */
static inline uint64_t nbd_hash_reply_size(uint32_t block_size, uint64_t length) {
        return (length + block_size - 1) / block_size * 16U; /* NBD_HWAMEID_HASH_SIZE */
}
