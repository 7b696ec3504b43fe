/* SPDX-License-Identifier: Apache-2.0 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>

#include "basic/macro.h"
#include "basic/string-util.h"
#include "log/log.h"
#include "stream/nbd-tls.h"

/* AES-128-GCM first: the fastest cipher here (AES-NI). External PSKs are SHA-256 bound. */
#define TLS13_CIPHERSUITES "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"
#define TLS12_CIPHERS                                                                                       \
        "DHE-PSK-AES128-GCM-SHA256:ECDHE-PSK-CHACHA20-POLY1305:PSK-AES128-GCM-SHA256:"                      \
        "DHE-PSK-AES256-GCM-SHA384:PSK-AES256-GCM-SHA384:DHE-PSK-CHACHA20-POLY1305:"                        \
        "PSK-CHACHA20-POLY1305"
#define BOUNCE_SIZE 16384U /* one TLS record */

static const unsigned char tls13_aes128gcm_sha256[2] = { 0x13, 0x01 };

/* ---- PSK files ---- */

typedef struct PskEntry {
        char *identity;
        uint8_t *key;
        size_t len;
} PskEntry;

struct NbdTlsPskFile {
        PskEntry *entries;
        size_t n;
};

NbdTlsPskFile *nbd_tls_psk_file_free(NbdTlsPskFile *f) {
        if (!f)
                return NULL;
        for (size_t i = 0; i < f->n; i++) {
                free(f->entries[i].identity);
                if (f->entries[i].key)
                        OPENSSL_cleanse(f->entries[i].key, f->entries[i].len);
                free(f->entries[i].key);
        }
        free(f->entries);
        return mfree(f);
}

static int psk_parse_line(const char *path, unsigned lineno, char *line, PskEntry *ret) {
        char *colon = strchr(line, ':'), *hex;
        size_t idlen, hexlen;
        uint8_t *key;

        if (!colon)
                return log_debug_errno(SYNTHETIC_ERRNO(EINVAL), "%s:%u: expected IDENTITY:HEXKEY.", path,
                                       lineno);
        idlen = (size_t) (colon - line);
        hex = colon + 1;
        hexlen = strlen(hex);
        if (idlen == 0 || idlen > NBD_TLS_PSK_MAX_IDENTITY)
                return log_debug_errno(SYNTHETIC_ERRNO(EINVAL), "%s:%u: identity is empty or too long.",
                                       path, lineno);
        if (hexlen == 0 || hexlen % 2 != 0)
                return log_debug_errno(SYNTHETIC_ERRNO(EINVAL),
                                       "%s:%u: the key must be an even number of hex digits.", path, lineno);
        if (hexlen / 2 < NBD_TLS_PSK_MIN_KEY || hexlen / 2 > NBD_TLS_PSK_MAX_KEY)
                return log_debug_errno(SYNTHETIC_ERRNO(EINVAL), "%s:%u: the key must be %u…%u bytes.", path,
                                       lineno, NBD_TLS_PSK_MIN_KEY, NBD_TLS_PSK_MAX_KEY);
        key = malloc(hexlen / 2);
        if (!key)
                return -ENOMEM;
        for (size_t i = 0; i < hexlen / 2; i++) {
                int hi = unhexchar(hex[2 * i]), lo = unhexchar(hex[2 * i + 1]);
                if (hi < 0 || lo < 0) {
                        OPENSSL_cleanse(key, hexlen / 2);
                        free(key);
                        return log_debug_errno(SYNTHETIC_ERRNO(EINVAL), "%s:%u: the key is not hex.", path,
                                               lineno);
                }
                key[i] = (uint8_t) (hi << 4 | lo);
        }
        ret->identity = strndup(line, idlen);
        if (!ret->identity) {
                OPENSSL_cleanse(key, hexlen / 2);
                free(key);
                return -ENOMEM;
        }
        ret->key = key;
        ret->len = hexlen / 2;
        return 0;
}

int nbd_tls_psk_file_load(const char *path, NbdTlsPskFile **ret) {
        _cleanup_(nbd_tls_psk_file_freep) NbdTlsPskFile *f = NULL;
        _cleanup_close_ int fd = -EBADF;
        char *buf = NULL, *line, *next;
        size_t size = 0;
        unsigned lineno = 0;
        struct stat st;
        int r = 0;

        assert(path);
        assert(ret);

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return log_debug_errno(errno, "%s: cannot open: %m", path);
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return log_debug_errno(SYNTHETIC_ERRNO(EINVAL), "%s: not a regular file.", path);
        if (st.st_size > (off_t) NBD_TLS_PSK_FILE_MAX)
                return log_debug_errno(SYNTHETIC_ERRNO(EFBIG), "%s: larger than %u bytes.", path,
                                       NBD_TLS_PSK_FILE_MAX);
        if (st.st_mode & (S_IRWXG | S_IRWXO))
                log_debug("%s: readable by group or others (mode %04o); keep PSK files 0600.", path,
                          (unsigned) (st.st_mode & 07777));

        buf = malloc(NBD_TLS_PSK_FILE_MAX + 1);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t n = read(fd, buf + size, NBD_TLS_PSK_FILE_MAX + 1 - size);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = -errno;
                        goto finish;
                }
                if (n == 0)
                        break;
                size += (size_t) n;
                if (size > NBD_TLS_PSK_FILE_MAX) {
                        r = log_debug_errno(SYNTHETIC_ERRNO(EFBIG), "%s: larger than %u bytes.", path,
                                            NBD_TLS_PSK_FILE_MAX);
                        goto finish;
                }
        }
        buf[size] = 0;
        if (memchr(buf, 0, size)) {
                r = log_debug_errno(SYNTHETIC_ERRNO(EINVAL), "%s: contains NUL bytes.", path);
                goto finish;
        }

        f = calloc(1, sizeof(*f));
        if (!f) {
                r = -ENOMEM;
                goto finish;
        }
        for (line = buf; line && *line; line = next) {
                size_t l;
                PskEntry *e;

                lineno++;
                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                l = strlen(line);
                if (l > 0 && line[l - 1] == '\r')
                        line[--l] = 0;
                if (l == 0 || line[0] == '#')
                        continue;
                e = reallocarray(f->entries, f->n + 1, sizeof(PskEntry));
                if (!e) {
                        r = -ENOMEM;
                        goto finish;
                }
                f->entries = e;
                r = psk_parse_line(path, lineno, line, &f->entries[f->n]);
                if (r < 0)
                        goto finish;
                f->n++;
        }
        *ret = TAKE_PTR(f);
        r = 0;
finish:
        OPENSSL_cleanse(buf, size);
        free(buf);
        return r;
}

int nbd_tls_psk_file_find(const NbdTlsPskFile *f, const char *identity, const uint8_t **ret_key,
                          size_t *ret_len) {
        assert(f);
        assert(identity);

        /* The first line for an identity wins, as with GnuTLS. */
        for (size_t i = 0; i < f->n; i++)
                if (strcmp(f->entries[i].identity, identity) == 0) {
                        if (ret_key)
                                *ret_key = f->entries[i].key;
                        if (ret_len)
                                *ret_len = f->entries[i].len;
                        return 0;
                }
        return -ENOKEY;
}

/* ---- Contexts ---- */

struct NbdTlsContext {
        SSL_CTX *ssl_ctx;
        bool server;
        usec_t handshake_timeout;
        /* server */
        NbdTlsPskLookup lookup;
        void *userdata;
        NbdTlsPskFile *file;
        /* client */
        char *identity;
        uint8_t *key;
        size_t key_len;
};

typedef struct TlsTransport {
        NbdTransport base;
        NbdTransport *plain;
        int fd;
        SSL *ssl;
        pthread_mutex_t lock;       /* OpenSSL calls on ssl */
        pthread_mutex_t write_lock; /* one write (and its bounce buffer) at a time */
        bool shut;
        char identity[NBD_TLS_PSK_MAX_IDENTITY + 1];
        uint8_t bounce[BOUNCE_SIZE];
} TlsTransport;

static NbdTlsContext *ctx_of(SSL *ssl) {
        return SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
}

static void remember_identity(SSL *ssl, const char *identity) {
        TlsTransport *t = SSL_get_app_data(ssl);

        if (t)
                snprintf(t->identity, sizeof(t->identity), "%s", identity);
}

static void log_ssl_errors(const char *what) {
        unsigned long e;
        char buf[256];

        while ((e = ERR_get_error()) != 0) {
                ERR_error_string_n(e, buf, sizeof(buf));
                log_debug("NBD TLS: %s: %s", what, buf);
        }
}

/* Server, TLS 1.3. An unknown identity gets no session, and the handshake then fails (no
 * certificate to fall back to). */
static int server_find_session(SSL *ssl, const unsigned char *identity, size_t identity_len,
                               SSL_SESSION **sess) {
        NbdTlsContext *ctx = ctx_of(ssl);
        char id[NBD_TLS_PSK_MAX_IDENTITY + 1];
        uint8_t key[NBD_TLS_PSK_MAX_KEY];
        const SSL_CIPHER *cipher;
        SSL_SESSION *s;
        int n;

        *sess = NULL;
        if (identity_len == 0 || identity_len > NBD_TLS_PSK_MAX_IDENTITY ||
            memchr(identity, 0, identity_len))
                return 1;
        memcpy(id, identity, identity_len);
        id[identity_len] = 0;
        n = ctx->lookup(ctx->userdata, id, key);
        if (n <= 0 || (size_t) n > sizeof(key)) {
                log_debug("NBD TLS: unknown PSK identity '%s'.", id);
                return 1;
        }
        cipher = SSL_CIPHER_find(ssl, tls13_aes128gcm_sha256);
        s = SSL_SESSION_new();
        if (!cipher || !s || !SSL_SESSION_set1_master_key(s, key, (size_t) n) ||
            !SSL_SESSION_set_cipher(s, cipher) || !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
                OPENSSL_cleanse(key, sizeof(key));
                SSL_SESSION_free(s);
                return 0;
        }
        OPENSSL_cleanse(key, sizeof(key));
        remember_identity(ssl, id);
        *sess = s;
        return 1;
}

/* Server, TLS 1.2. */
static unsigned server_psk(SSL *ssl, const char *identity, unsigned char *psk, unsigned max_psk_len) {
        NbdTlsContext *ctx = ctx_of(ssl);
        uint8_t key[NBD_TLS_PSK_MAX_KEY];
        int n;

        if (!identity || strlen(identity) > NBD_TLS_PSK_MAX_IDENTITY)
                return 0;
        n = ctx->lookup(ctx->userdata, identity, key);
        if (n <= 0 || (size_t) n > sizeof(key) || (unsigned) n > max_psk_len) {
                log_debug("NBD TLS: unknown PSK identity '%s'.", identity);
                OPENSSL_cleanse(key, sizeof(key));
                return 0;
        }
        memcpy(psk, key, (size_t) n);
        OPENSSL_cleanse(key, sizeof(key));
        remember_identity(ssl, identity);
        return (unsigned) n;
}

/* Client, TLS 1.3. */
static int client_use_session(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen,
                              SSL_SESSION **sess) {
        NbdTlsContext *ctx = ctx_of(ssl);
        const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, tls13_aes128gcm_sha256);
        SSL_SESSION *s;

        *sess = NULL;
        *id = NULL;
        *idlen = 0;
        if (!cipher)
                return 0;
        if (md && EVP_MD_get_type(md) != NID_sha256)
                return 1; /* a resumed or HelloRetryRequest'ed handshake with another hash: no PSK */
        s = SSL_SESSION_new();
        if (!s || !SSL_SESSION_set1_master_key(s, ctx->key, ctx->key_len) ||
            !SSL_SESSION_set_cipher(s, cipher) || !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
                SSL_SESSION_free(s);
                return 0;
        }
        *id = (const unsigned char *) ctx->identity;
        *idlen = strlen(ctx->identity);
        *sess = s;
        return 1;
}

/* Client, TLS 1.2. */
static unsigned client_psk(SSL *ssl, const char *hint, char *identity, unsigned max_identity_len,
                           unsigned char *psk, unsigned max_psk_len) {
        NbdTlsContext *ctx = ctx_of(ssl);
        size_t l = strlen(ctx->identity);

        if (l + 1 > max_identity_len || ctx->key_len > max_psk_len)
                return 0;
        memcpy(identity, ctx->identity, l + 1);
        memcpy(psk, ctx->key, ctx->key_len);
        return (unsigned) ctx->key_len;
}

static int context_alloc(bool server, NbdTlsContext **ret) {
        _cleanup_(nbd_tls_context_freep) NbdTlsContext *ctx = NULL;
        SSL_CTX *c;

        ctx = calloc(1, sizeof(*ctx));
        if (!ctx)
                return -ENOMEM;
        ctx->server = server;
        ctx->handshake_timeout = NBD_TLS_HANDSHAKE_TIMEOUT_USEC;
        c = ctx->ssl_ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
        if (!c)
                return -ENOMEM;
        SSL_CTX_set_app_data(c, ctx);
        if (!SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) ||
            !SSL_CTX_set_ciphersuites(c, TLS13_CIPHERSUITES) || !SSL_CTX_set_cipher_list(c, TLS12_CIPHERS)) {
                log_ssl_errors("setting up a context");
                return -EINVAL;
        }
        SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET |
                                       SSL_OP_CIPHER_SERVER_PREFERENCE);
        SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
        if (server) {
                (void) SSL_CTX_set_num_tickets(c, 0);
                (void) SSL_CTX_set_dh_auto(c, 1);
                SSL_CTX_set_psk_find_session_callback(c, server_find_session);
                SSL_CTX_set_psk_server_callback(c, server_psk);
        } else {
                SSL_CTX_set_psk_use_session_callback(c, client_use_session);
                SSL_CTX_set_psk_client_callback(c, client_psk);
        }
        *ret = TAKE_PTR(ctx);
        return 0;
}

int nbd_tls_context_new_server(NbdTlsPskLookup lookup, void *userdata, NbdTlsContext **ret) {
        NbdTlsContext *ctx;
        int r;

        assert(lookup);
        assert(ret);

        r = context_alloc(true, &ctx);
        if (r < 0)
                return r;
        ctx->lookup = lookup;
        ctx->userdata = userdata;
        *ret = ctx;
        return 0;
}

static int file_lookup(void *userdata, const char *identity, uint8_t *key) {
        const uint8_t *k;
        size_t l;
        int r;

        r = nbd_tls_psk_file_find(userdata, identity, &k, &l);
        if (r < 0)
                return r;
        memcpy(key, k, l);
        return (int) l;
}

int nbd_tls_context_new_server_file(const char *psk_file, NbdTlsContext **ret) {
        _cleanup_(nbd_tls_psk_file_freep) NbdTlsPskFile *f = NULL;
        NbdTlsContext *ctx;
        int r;

        assert(psk_file);
        assert(ret);

        r = nbd_tls_psk_file_load(psk_file, &f);
        if (r < 0)
                return r;
        r = nbd_tls_context_new_server(file_lookup, f, &ctx);
        if (r < 0)
                return r;
        ctx->file = TAKE_PTR(f);
        *ret = ctx;
        return 0;
}

int nbd_tls_context_new_client(const char *identity, const uint8_t *key, size_t key_len,
                               NbdTlsContext **ret) {
        _cleanup_(nbd_tls_context_freep) NbdTlsContext *ctx = NULL;
        int r;

        assert(identity);
        assert(key);
        assert(ret);

        if (identity[0] == 0 || strlen(identity) > NBD_TLS_PSK_MAX_IDENTITY || key_len == 0 ||
            key_len > NBD_TLS_PSK_MAX_KEY)
                return -EINVAL;
        r = context_alloc(false, &ctx);
        if (r < 0)
                return r;
        ctx->identity = strdup(identity);
        ctx->key = malloc(key_len);
        if (!ctx->identity || !ctx->key)
                return -ENOMEM;
        memcpy(ctx->key, key, key_len);
        ctx->key_len = key_len;
        *ret = TAKE_PTR(ctx);
        return 0;
}

int nbd_tls_context_new_client_file(const char *psk_file, const char *identity, NbdTlsContext **ret) {
        _cleanup_(nbd_tls_psk_file_freep) NbdTlsPskFile *f = NULL;
        char login[LOGIN_NAME_MAX + 1];
        const uint8_t *key;
        size_t len;
        int r;

        assert(psk_file);
        assert(ret);

        if (!identity || !identity[0]) {
                identity = getenv("LOGNAME");
                if (!identity || !identity[0]) {
                        r = getlogin_r(login, sizeof(login));
                        if (r != 0)
                                return log_debug_errno(r, "NBD TLS: no PSK identity: no user name given, "
                                                          "no $LOGNAME and no login name.");
                        identity = login;
                }
        }
        r = nbd_tls_psk_file_load(psk_file, &f);
        if (r < 0)
                return r;
        r = nbd_tls_psk_file_find(f, identity, &key, &len);
        if (r < 0)
                return log_debug_errno(r, "NBD TLS: identity '%s' was not found in %s.", identity, psk_file);
        return nbd_tls_context_new_client(identity, key, len, ret);
}

NbdTlsContext *nbd_tls_context_free(NbdTlsContext *ctx) {
        if (!ctx)
                return NULL;
        SSL_CTX_free(ctx->ssl_ctx);
        nbd_tls_psk_file_free(ctx->file);
        free(ctx->identity);
        if (ctx->key)
                OPENSSL_cleanse(ctx->key, ctx->key_len);
        free(ctx->key);
        return mfree(ctx);
}

void nbd_tls_context_set_handshake_timeout(NbdTlsContext *ctx, usec_t timeout) {
        assert(ctx);
        ctx->handshake_timeout = timeout > 0 ? timeout : NBD_TLS_HANDSHAKE_TIMEOUT_USEC;
}

const char *nbd_tls_context_identity(const NbdTlsContext *ctx) {
        return ctx && !ctx->server ? ctx->identity : NULL;
}

/* ---- Transport ---- */

static const NbdTransportOps tls_ops;

static TlsTransport *tls_of(NbdTransport *t) {
        return t && t->ops == &tls_ops ? (TlsTransport *) t : NULL;
}

/* Maps a failed SSL call (err from SSL_get_error, saved_errno from right after it). */
static ssize_t map_ssl_error(TlsTransport *t, int err, int saved_errno, bool *ret_wait_read,
                             bool *ret_wait_write) {
        *ret_wait_read = err == SSL_ERROR_WANT_READ;
        *ret_wait_write = err == SSL_ERROR_WANT_WRITE;
        switch (err) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
                return 0;
        case SSL_ERROR_ZERO_RETURN:
                return -ECONNRESET;
        case SSL_ERROR_SYSCALL:
                log_ssl_errors("I/O");
                return saved_errno > 0 ? -saved_errno : -ECONNRESET;
        default:
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
                /* OpenSSL 3 reports a peer that vanished without close_notify this way. */
                if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
                        ERR_clear_error();
                        return -ECONNRESET;
                }
#endif
                log_ssl_errors("I/O");
                return -EPROTO;
        }
}

static ssize_t tls_read(NbdTransport *base, void *buf, size_t len, usec_t timeout) {
        TlsTransport *t = (TlsTransport *) base;

        if (len == 0)
                return 0;
        for (;;) {
                bool wr, ww;
                int n, err = 0, saved;
                ssize_t r;

                pthread_mutex_lock(&t->lock);
                ERR_clear_error();
                errno = 0;
                n = SSL_read(t->ssl, buf, (int) MIN(len, (size_t) INT_MAX));
                saved = errno;
                if (n <= 0)
                        err = SSL_get_error(t->ssl, n);
                pthread_mutex_unlock(&t->lock);
                if (n > 0)
                        return n;
                r = map_ssl_error(t, err, saved, &wr, &ww);
                if (r < 0) /* close_notify, or the peer or our shutdown closed the socket */
                        return r == -ECONNRESET || __atomic_load_n(&t->shut, __ATOMIC_ACQUIRE) ? 0 : r;
                r = nbd_fd_wait(t->fd, wr ? POLLIN : POLLOUT, timeout);
                if (r < 0)
                        return r;
        }
}

static ssize_t tls_write(NbdTransport *base, const struct iovec *iov, int n_iov, usec_t timeout) {
        TlsTransport *t = (TlsTransport *) base;
        const void *p;
        size_t len = 0;
        ssize_t ret;

        while (n_iov > 0 && iov->iov_len == 0)
                iov++, n_iov--;
        if (n_iov <= 0)
                return -EINVAL;

        pthread_mutex_lock(&t->write_lock);
        if (iov->iov_len >= BOUNCE_SIZE || n_iov == 1) {
                p = iov->iov_base;
                len = MIN(iov->iov_len, (size_t) INT_MAX);
        } else {
                /* Gather small pieces (a request header and its payload) into one record. */
                for (int i = 0; i < n_iov && len < BOUNCE_SIZE; i++) {
                        size_t k = MIN(iov[i].iov_len, BOUNCE_SIZE - len);
                        memcpy(t->bounce + len, iov[i].iov_base, k);
                        len += k;
                }
                p = t->bounce;
        }
        for (;;) {
                bool wr, ww;
                int n, err = 0, saved;

                pthread_mutex_lock(&t->lock);
                ERR_clear_error();
                errno = 0;
                n = SSL_write(t->ssl, p, (int) len);
                saved = errno;
                if (n <= 0)
                        err = SSL_get_error(t->ssl, n);
                pthread_mutex_unlock(&t->lock);
                if (n > 0) {
                        ret = n;
                        break;
                }
                ret = map_ssl_error(t, err, saved, &wr, &ww);
                if (ret < 0) {
                        if (ret == -ECONNRESET)
                                ret = -EPIPE;
                        break;
                }
                ret = nbd_fd_wait(t->fd, wr ? POLLIN : POLLOUT, timeout);
                if (ret < 0)
                        break;
        }
        pthread_mutex_unlock(&t->write_lock);
        return ret;
}

/* Sends close_notify once, without waiting (the socket is non-blocking). */
static void send_close_notify(TlsTransport *t) {
        pthread_mutex_lock(&t->lock);
        if (!(SSL_get_shutdown(t->ssl) & SSL_SENT_SHUTDOWN) && SSL_is_init_finished(t->ssl)) {
                ERR_clear_error();
                (void) SSL_shutdown(t->ssl);
                ERR_clear_error();
        }
        pthread_mutex_unlock(&t->lock);
}

static void tls_shutdown(NbdTransport *base) {
        TlsTransport *t = (TlsTransport *) base;

        __atomic_store_n(&t->shut, true, __ATOMIC_RELEASE);
        /* Not in the middle of a record someone else is writing. */
        if (pthread_mutex_trylock(&t->write_lock) == 0) {
                send_close_notify(t);
                pthread_mutex_unlock(&t->write_lock);
        }
        t->plain->ops->shutdown(t->plain);
}

static void tls_free(NbdTransport *base) {
        TlsTransport *t = (TlsTransport *) base;

        if (!__atomic_load_n(&t->shut, __ATOMIC_ACQUIRE))
                send_close_notify(t);
        SSL_free(t->ssl);
        nbd_transport_free(t->plain);
        pthread_mutex_destroy(&t->lock);
        pthread_mutex_destroy(&t->write_lock);
        free(t);
}

static const NbdTransportOps tls_ops = {
        .read = tls_read,
        .write = tls_write,
        .shutdown = tls_shutdown,
        .free = tls_free,
};

static int tls_start(NbdTlsContext *ctx, NbdTransport *plain, usec_t timeout, NbdTransport **ret) {
        usec_t end = timeout == USEC_INFINITY ? USEC_INFINITY : now(CLOCK_MONOTONIC) + timeout;
        TlsTransport *t;
        int fd, r;

        assert(ctx);
        assert(plain);
        assert(ret);

        fd = nbd_transport_fd(plain);
        if (fd < 0)
                return fd;
        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->base.ops = &tls_ops;
        t->fd = fd;
        pthread_mutex_init(&t->lock, NULL);
        pthread_mutex_init(&t->write_lock, NULL);
        t->ssl = SSL_new(ctx->ssl_ctx);
        if (!t->ssl || !SSL_set_fd(t->ssl, fd)) {
                r = -ENOMEM;
                goto fail;
        }
        SSL_set_app_data(t->ssl, t);
        if (!ctx->server)
                snprintf(t->identity, sizeof(t->identity), "%s", ctx->identity);

        for (;;) {
                int n, err, saved;
                usec_t left = USEC_INFINITY;

                ERR_clear_error();
                errno = 0;
                n = ctx->server ? SSL_accept(t->ssl) : SSL_connect(t->ssl);
                saved = errno;
                if (n == 1)
                        break;
                err = SSL_get_error(t->ssl, n);
                if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
                        log_ssl_errors("handshake");
                        if (err == SSL_ERROR_SSL)
                                r = -EKEYREJECTED;
                        else
                                r = saved > 0 ? -saved : -ECONNRESET;
                        log_debug_errno(r, "NBD TLS: handshake failed: %m");
                        goto fail;
                }
                if (end != USEC_INFINITY) {
                        usec_t nw = now(CLOCK_MONOTONIC);
                        left = nw >= end ? 1 : end - nw;
                }
                r = nbd_fd_wait(fd, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, left);
                if (r < 0)
                        goto fail;
        }
        log_debug("NBD TLS: %s, %s, identity '%s'", SSL_get_version(t->ssl),
                  SSL_CIPHER_get_name(SSL_get_current_cipher(t->ssl)), t->identity);
        t->plain = plain;
        *ret = &t->base;
        return 0;

fail:
        SSL_free(t->ssl);
        pthread_mutex_destroy(&t->lock);
        pthread_mutex_destroy(&t->write_lock);
        free(t);
        return r;
}

int nbd_tls_client_start(NbdTlsContext *ctx, NbdTransport *plain, usec_t timeout, NbdTransport **ret) {
        assert(ctx && !ctx->server);
        return tls_start(ctx, plain, timeout, ret);
}

int nbd_tls_server_start(void *userdata, NbdTransport *plain, NbdTransport **ret) {
        NbdTlsContext *ctx = userdata;

        assert(ctx && ctx->server);
        return tls_start(ctx, plain, ctx->handshake_timeout, ret);
}

const char *nbd_tls_transport_version(NbdTransport *t) {
        TlsTransport *s = tls_of(t);
        return s ? SSL_get_version(s->ssl) : NULL;
}

const char *nbd_tls_transport_cipher(NbdTransport *t) {
        TlsTransport *s = tls_of(t);
        return s ? SSL_CIPHER_get_name(SSL_get_current_cipher(s->ssl)) : NULL;
}

const char *nbd_tls_transport_identity(NbdTransport *t) {
        TlsTransport *s = tls_of(t);
        return s ? s->identity : NULL;
}

int nbd_tls_derive_key(const void *secret, size_t secret_len, const char *identity,
                       uint8_t key[static NBD_TLS_DERIVED_KEY_SIZE]) {
        uint8_t msg[sizeof(NBD_TLS_DERIVE_LABEL) - 1 + 255];
        size_t n = identity ? strlen(identity) : 0, label = sizeof(NBD_TLS_DERIVE_LABEL) - 1;
        unsigned out = 0;

        if (!secret || secret_len < 16 || secret_len > 4096 || n == 0 || n > 255)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) identity[i] < 0x21 || (unsigned char) identity[i] > 0x7e)
                        return -EINVAL;
        memcpy(msg, NBD_TLS_DERIVE_LABEL, label);
        memcpy(msg + label, identity, n);
        if (!HMAC(EVP_sha256(), secret, (int) secret_len, msg, label + n, key, &out) ||
            out != NBD_TLS_DERIVED_KEY_SIZE)
                return -EIO;
        return 0;
}
