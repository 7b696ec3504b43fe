/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The NBD server of the block stream: the target node exports a replica and the source node pushes
 * its data into it (fixed newstyle only; simple and structured replies; base:allocation; the
 * hwameid delta extension, NBD_OPT_HWAMEID_DELTA and NBD_CMD_HWAMEID_HASH, see nbd-protocol.h).
 *
 * Threads: nbd_server_start() runs an acceptor thread; each accepted connection gets its own
 * thread that negotiates and then reads the client's requests (WRITE payloads included) and hands
 * them to the connection's workers (up to NBD_SERVER_WORKERS_DEFAULT threads, started as the load
 * needs them), which do the I/O on the shared BlockDev and write the replies, one at a time under
 * the connection's write lock, in the order they complete (the specification allows any order; a
 * reply or structured chunk is never interleaved with another). With 0 workers the connection's
 * thread serves each request itself, in order (deterministic: fuzzers). Everything on the wire
 * goes through an NbdTransport, so TLS can wrap the plain socket without the protocol code
 * knowing.
 *
 * Ordering: FLUSH is answered once every write answered before the FLUSH arrived is durable;
 * NBD_CMD_DISC lets every request received before it finish and be answered, then closes.
 *
 * Limits: a client must finish the handshake within the handshake timeout (10 s by default);
 * idle connections in transmission are kept; a reply the client does not read for the write
 * timeout (60 s) drops it; more than the connection limit (128) are closed at once. Per
 * connection, request payloads and reply buffers hold at most NBD_SERVER_CONN_BUFFER_MAX bytes
 * and at most NBD_SERVER_CONN_REQUESTS_MAX requests are in the server: beyond either the
 * connection stops reading requests until some are answered. Buffers are reused, and given back
 * after NBD_SERVER_IDLE_TRIM_USEC without a request.
 *
 * Library code: logs at debug level only. Why a client was dropped is reported to the optional
 * event callback as well.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "basic/macro.h"
#include "volume/blockio.h"

/* The transport (NbdTransport: read/write/shutdown/free on a connection, and the plain socket
 * one) is shared with the client side. */
#include "stream/nbd-transport.h"

/*
 * TLS hook for NBD_OPT_STARTTLS: called after the server has sent the ACK; on success *ret_tls
 * owns plain (and frees it with itself). Everything negotiated before is forgotten, as the
 * specification demands. Without a hook STARTTLS is answered NBD_REP_ERR_UNSUP.
 */
typedef int (*NbdServerStartTls)(void *userdata, NbdTransport *plain, NbdTransport **ret_tls);

/* ---- Server ---- */

typedef struct NbdServer NbdServer;

#define NBD_SERVER_MAX_CONNECTIONS_DEFAULT 128U
#define NBD_SERVER_HANDSHAKE_TIMEOUT_USEC  (10ULL * 1000000ULL)
#define NBD_SERVER_WRITE_TIMEOUT_USEC      (60ULL * 1000000ULL)
#define NBD_SERVER_MAX_EXTENTS             (64U * 1024U) /* per BLOCK_STATUS reply */
#define NBD_SERVER_PREFERRED_BLOCK_SIZE    4096U
#define NBD_SERVER_WORKERS_DEFAULT         4U
#define NBD_SERVER_WORKERS_MAX             64U
#define NBD_SERVER_CONN_BUFFER_MAX         (64U << 20) /* bytes of payloads and reply buffers */
#define NBD_SERVER_CONN_REQUESTS_MAX       256U        /* received and not yet answered */
#define NBD_SERVER_IDLE_TRIM_USEC          (2ULL * 1000000ULL)

/* What ended a connection (for the event callback); error is a negative errno or 0. */
typedef void (*NbdServerDisconnectCallback)(void *userdata, const char *peer, const char *export_name,
                                            int error, const char *reason);

int nbd_server_new(NbdServer **ret);
/* Ends every connection, waits for their threads and frees the server. Must not be called from
 * a connection's thread or a callback. */
NbdServer *nbd_server_free(NbdServer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(NbdServer *, nbd_server_free);

/* Settings; call before nbd_server_start() (later calls affect only new connections). */
void nbd_server_set_max_connections(NbdServer *s, unsigned n);
void nbd_server_set_handshake_timeout(NbdServer *s, uint64_t usec);
void nbd_server_set_write_timeout(NbdServer *s, uint64_t usec);
/* require: every option but STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD until TLS is up. */
void nbd_server_set_tls(NbdServer *s, NbdServerStartTls starttls, void *userdata, bool require);
void nbd_server_set_disconnect_callback(NbdServer *s, NbdServerDisconnectCallback cb, void *userdata);
/* Worker threads per connection (at most NBD_SERVER_WORKERS_MAX); 0 serves requests one at a time
 * on the connection's own thread. */
void nbd_server_set_workers(NbdServer *s, unsigned n);

/*
 * Export policy: may the client open export_name? tls_identity is the PSK identity of the
 * connection once NBD_OPT_STARTTLS succeeded (nbd_tls_transport_identity()), NULL on a plain
 * connection. Returns 0 to allow, a negative errno to deny: NBD_OPT_INFO, NBD_OPT_GO and
 * NBD_OPT_(LIST_|SET_)META_CONTEXT then get NBD_REP_ERR_POLICY, NBD_OPT_EXPORT_NAME closes the
 * connection, and NBD_OPT_LIST leaves the export out. Asked before the export is looked up, so a
 * denied client cannot tell which names exist. Called on connection threads, possibly
 * concurrently, without server locks held; it must not remove exports or free the server.
 */
typedef int (*NbdServerExportPolicy)(void *userdata, const char *tls_identity, const char *export_name);
void nbd_server_set_export_policy(NbdServer *s, NbdServerExportPolicy policy, void *userdata);

/*
 * Exports. dev is borrowed until nbd_server_remove_export() returns; all connections share it
 * (so FLUSH on one makes every completed write durable, and multi-conn is advertised). The
 * empty name is the default export. -EEXIST for a duplicate name, -EINVAL for a name or
 * description over NBD_MAX_STRING bytes.
 */
int nbd_server_add_export(NbdServer *s, const char *name, BlockDev *dev, bool read_only,
                          const char *description);
/* Whether zeroing is cheap (NBD_CMD_FLAG_FAST_ZERO succeeds); true by default (files: hole
 * punching), set it false for block devices that may fall back to writing zeroes. */
int nbd_server_set_export_fast_zero(NbdServer *s, const char *name, bool fast_zero);
/* Removes the export and ends the connections using it; returns once none of them touches dev
 * any more. -ENOENT if there is no such export. Not from a connection's thread. */
int nbd_server_remove_export(NbdServer *s, const char *name);

/* "ADDR:PORT", "[V6ADDR]:PORT" or "V6ADDR" is not accepted without brackets; port 0 picks one. */
int nbd_server_listen(NbdServer *s, const char *address);
/* An already bound and listening socket (ownership is taken). */
int nbd_server_listen_fd(NbdServer *s, int fd);
/* The bound port (after listen), or -errno. */
int nbd_server_get_port(NbdServer *s);
/* Starts the acceptor thread. */
int nbd_server_start(NbdServer *s);
unsigned nbd_server_n_connections(NbdServer *s);

/*
 * Serves one client on the calling thread until it disconnects (handshake and transmission);
 * takes ownership of t. Counts against the connection limit (-EBUSY when full). Returns 0 after a
 * clean end (NBD_CMD_DISC, NBD_OPT_ABORT, end of stream at a message boundary) or -errno.
 */
int nbd_server_serve(NbdServer *s, NbdTransport *t, const char *peer);
