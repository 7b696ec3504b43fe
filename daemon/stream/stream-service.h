/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The node's end of the block stream between nodes: one NBD server, and the keys of both sides.
 *
 * Keys: every node holds the same cluster secret (a root-only file). A migration names a PSK
 * identity; both nodes derive its key with nbd_tls_derive_key(secret, identity), so no key
 * crosses the network and a key opens one migration's export only.
 *
 * Target side: stream_service_expose() opens a replica's device as an NBD export for one identity;
 * the TLS handshake knows only the identities exposed at that moment, and the export policy lets
 * an identity open its own export and nothing else (not even list the others). Withdrawing ends
 * the connections using the export before it returns, so the device can be closed right after.
 * TLS is required on every connection unless insecure (tests on isolated networks), where plain
 * clients may open any exposed export.
 *
 * Source side: stream_service_client_tls() makes the TLS context for pushing to a peer as an
 * identity.
 *
 * Thread-safe: the server's connection threads consult the table; the event loop changes it.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "basic/macro.h"
#include "stream/nbd-tls.h"
#include "volume/blockio.h"

#define STREAM_SECRET_MIN 32U   /* bytes */
#define STREAM_SECRET_MAX 4096U /* bytes */

/*
 * Reads the cluster secret: a regular file owned by root (or by the caller's user), not accessible
 * to group or others, of STREAM_SECRET_MIN..MAX bytes once trailing whitespace is dropped. Errors,
 * each logged at error level with the file and what to do: -ENOENT, -EPERM (mode or owner),
 * -EINVAL (too short or too long), or the failing call's error.
 */
int stream_secret_load(const char *path, uint8_t **ret, size_t *ret_len);

typedef struct StreamService StreamService;

typedef struct StreamServiceOptions {
        const char *listen;    /* "ADDR:PORT" (nbd_server_listen()); port 0 picks one */
        const uint8_t *secret; /* copied; NULL only when insecure */
        size_t secret_len;
        bool insecure;            /* plain TCP accepted; no keys */
        unsigned max_connections; /* 0 = the server's default */
} StreamServiceOptions;

int stream_service_new(const StreamServiceOptions *o, StreamService **ret);
StreamService *stream_service_free(StreamService *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(StreamService *, stream_service_free);

/* The bound port. */
int stream_service_port(StreamService *s);

/*
 * Exposes dev (borrowed until withdrawn) as export_name to identity. -EEXIST when export_name or
 * identity is exposed already, -EINVAL for a name or identity that is empty, too long or not
 * printable ASCII.
 */
int stream_service_expose(StreamService *s, const char *identity, const char *export_name, BlockDev *dev,
                          bool read_only);
/* Ends the export and its connections; -ENOENT when it is not exposed. */
int stream_service_withdraw(StreamService *s, const char *export_name);
unsigned stream_service_n_exposed(StreamService *s);

/* Whether this node has the cluster secret (and so pushes with TLS). */
bool stream_service_has_keys(StreamService *s);
/* A client TLS context for identity with its derived key; -EPERM when insecure (no secret). */
int stream_service_client_tls(StreamService *s, const char *identity, NbdTlsContext **ret);
