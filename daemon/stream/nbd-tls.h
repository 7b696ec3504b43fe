/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * TLS with pre-shared keys for NBD_OPT_STARTTLS (OpenSSL), compatible with GnuTLS peers
 * (nbdkit --tls-psk, libnbd/nbdcopy tls-psk-file, qemu tls-creds-psk).
 *
 * Keys: psktool's file format, one "identity:hexkey" line per identity. The server looks an
 * identity up through a callback, so identities may come from memory as well as from a file.
 *
 * Ciphers: TLS 1.3 TLS_AES_128_GCM_SHA256 (or CHACHA20_POLY1305_SHA256; external PSKs are bound to
 * SHA-256, as GnuTLS binds them), TLS 1.2 DHE-PSK/PSK AES-128-GCM first. TLS 1.2 is the minimum.
 *
 * The TLS transport wraps a plain socket transport (and owns it once started). Reads and writes
 * may run on different threads at once; a lock serialises the OpenSSL calls, never the waits.
 *
 * OpenSSL writes with write(), not send(MSG_NOSIGNAL): a process using this must ignore SIGPIPE.
 *
 * Library code: logs at debug level only.
 */

#include <stddef.h>
#include <stdint.h>

#include "basic/macro.h"
#include "basic/time-util.h"
#include "stream/nbd-transport.h"

#define NBD_TLS_PSK_MIN_KEY            16U  /* bytes */
#define NBD_TLS_PSK_MAX_KEY            256U /* bytes */
#define NBD_TLS_PSK_MAX_IDENTITY       255U /* bytes */
#define NBD_TLS_PSK_FILE_MAX           (1024U * 1024U)
#define NBD_TLS_HANDSHAKE_TIMEOUT_USEC (10ULL * 1000000ULL)

/* ---- PSK files ---- */

typedef struct NbdTlsPskFile NbdTlsPskFile;

/*
 * Loads "identity:hexkey" lines (empty lines and lines starting with '#' are skipped). A malformed
 * line fails the whole file with -EINVAL (and a debug message naming file:line); -EFBIG over
 * NBD_TLS_PSK_FILE_MAX. A file readable by group or others is accepted (as GnuTLS does), with a
 * debug message.
 */
int nbd_tls_psk_file_load(const char *path, NbdTlsPskFile **ret);
NbdTlsPskFile *nbd_tls_psk_file_free(NbdTlsPskFile *f);
DEFINE_TRIVIAL_CLEANUP_FUNC(NbdTlsPskFile *, nbd_tls_psk_file_free);
/* The key of identity (borrowed from f), or -ENOKEY. */
int nbd_tls_psk_file_find(const NbdTlsPskFile *f, const char *identity, const uint8_t **ret_key,
                          size_t *ret_len);

/* ---- Contexts ---- */

typedef struct NbdTlsContext NbdTlsContext;

/*
 * Server: the key of identity into key[NBD_TLS_PSK_MAX_KEY]; returns its length, -ENOKEY for an
 * unknown identity. Called on connection threads, possibly concurrently.
 */
typedef int (*NbdTlsPskLookup)(void *userdata, const char *identity, uint8_t *key);

int nbd_tls_context_new_server(NbdTlsPskLookup lookup, void *userdata, NbdTlsContext **ret);
/* A server accepting the identities of a PSK file (loaded now). */
int nbd_tls_context_new_server_file(const char *psk_file, NbdTlsContext **ret);
/* Client: identity and key are copied. */
int nbd_tls_context_new_client(const char *identity, const uint8_t *key, size_t key_len,
                               NbdTlsContext **ret);
/* Client with the key of identity from a PSK file; identity NULL: $LOGNAME, then the login name
 * (as libnbd). -ENOKEY when the file has no such identity. */
int nbd_tls_context_new_client_file(const char *psk_file, const char *identity, NbdTlsContext **ret);
/*
 * Per-migration keys: HMAC-SHA256(cluster secret, NBD_TLS_DERIVE_LABEL identity). Both nodes of a
 * migration derive the same key from the secret installed on every node and the identity the
 * migration names, a key is good for that identity alone, and no key travels over the network.
 * identity: 1..255 printable bytes.
 */
#define NBD_TLS_DERIVE_LABEL     "hwameid-nbd-psk:"
#define NBD_TLS_DERIVED_KEY_SIZE 32
int nbd_tls_derive_key(const void *secret, size_t secret_len, const char *identity,
                       uint8_t key[static NBD_TLS_DERIVED_KEY_SIZE]);

NbdTlsContext *nbd_tls_context_free(NbdTlsContext *ctx);
DEFINE_TRIVIAL_CLEANUP_FUNC(NbdTlsContext *, nbd_tls_context_free);
/* The time a server-side handshake may take (default NBD_TLS_HANDSHAKE_TIMEOUT_USEC). */
void nbd_tls_context_set_handshake_timeout(NbdTlsContext *ctx, usec_t timeout);
const char *nbd_tls_context_identity(const NbdTlsContext *ctx); /* client; NULL on a server */

/* ---- Handshake ---- */

/*
 * Runs the handshake over plain (a socket transport). On success *ret owns plain; on failure plain
 * is untouched and still the caller's. Errors: -ETIMEDOUT, -ECONNRESET (the peer closed),
 * -EKEYREJECTED (the handshake failed: unknown identity, wrong key, no common cipher), -ENOTSOCK
 * (plain is not a socket transport), -ENOMEM.
 */
int nbd_tls_client_start(NbdTlsContext *ctx, NbdTransport *plain, usec_t timeout, NbdTransport **ret);
/* The server side, shaped as NbdServerStartTls (userdata is the NbdTlsContext). */
int nbd_tls_server_start(void *userdata, NbdTransport *plain, NbdTransport **ret);

/* The negotiated protocol ("TLSv1.3") and cipher ("TLS_AES_128_GCM_SHA256"), and the PSK identity
 * in use, of a TLS transport; NULL for other transports. */
const char *nbd_tls_transport_version(NbdTransport *t);
const char *nbd_tls_transport_cipher(NbdTransport *t);
const char *nbd_tls_transport_identity(NbdTransport *t);
