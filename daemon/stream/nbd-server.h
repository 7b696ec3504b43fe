/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The NBD server of the block stream: the target node exports a replica and the source node pushes
 * its data into it (fixed newstyle only; simple and structured replies; base:allocation).
 *
 * Threads: nbd_server_start() runs an acceptor thread; each accepted connection gets its own
 * thread that negotiates and then serves the client's requests in order (pipelined requests are
 * read as they come, replies written as each completes). Everything on the wire goes through an
 * NbdTransport, so TLS can wrap the plain socket without the protocol code knowing.
 *
 * Limits: a client must finish the handshake within the handshake timeout (10 s by default);
 * idle connections in transmission are kept; a reply the client does not read for the write
 * timeout (60 s) drops it; more than the connection limit (128) are closed at once.
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
