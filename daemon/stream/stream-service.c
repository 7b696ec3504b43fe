/* SPDX-License-Identifier: Apache-2.0 */

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "basic/fileio.h"
#include "basic/string-util.h"
#include "log/log.h"
#include "stream/nbd-protocol.h"
#include "stream/nbd-server.h"
#include "stream/stream-service.h"

typedef struct Exposure {
        char *identity;
        char *export_name;
} Exposure;

struct StreamService {
        NbdServer *server;
        NbdTlsContext *tls; /* server side; NULL when insecure */
        uint8_t *secret;
        size_t secret_len;
        bool insecure;

        pthread_mutex_t lock; /* the table */
        Exposure *exposed;
        size_t n_exposed;
};

int stream_secret_load(const char *path, uint8_t **ret, size_t *ret_len) {
        _cleanup_free_ char *text = NULL;
        struct stat st;
        size_t n;
        int r;

        /* Permissions first: a secret others could read is refused before it is even read. */
        if (stat(path, &st) < 0)
                return log_error_errno(errno, "Cannot access the cluster secret %s: %m", path);
        if (!S_ISREG(st.st_mode))
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                       "The cluster secret %s is not a regular file.", path);
        if ((st.st_mode & 0077) != 0)
                return log_error_errno(SYNTHETIC_ERRNO(EPERM),
                                       "The cluster secret %s is accessible to group or others (mode %04o); "
                                       "make it root-only: chmod 0600 %s",
                                       path, (unsigned) (st.st_mode & 07777), path);
        if (st.st_uid != 0 && st.st_uid != geteuid())
                return log_error_errno(SYNTHETIC_ERRNO(EPERM),
                                       "The cluster secret %s belongs to uid %u; it must belong to root.",
                                       path, (unsigned) st.st_uid);

        r = read_file_bounded(path, STREAM_SECRET_MAX + 64, &text, &n);
        if (r == -EFBIG)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                       "The cluster secret %s is longer than %u bytes.", path,
                                       STREAM_SECRET_MAX);
        if (r < 0)
                return log_error_errno(r, "Cannot read the cluster secret %s: %m", path);
        while (n > 0 && strchr(" \t\r\n", text[n - 1]))
                n--;
        if (n < STREAM_SECRET_MIN || n > STREAM_SECRET_MAX)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL),
                                       "The cluster secret %s has %zu bytes; it needs %u to %u (for example "
                                       "`head -c 32 /dev/urandom | base64`).",
                                       path, n, STREAM_SECRET_MIN, STREAM_SECRET_MAX);
        *ret = (uint8_t *) TAKE_PTR(text);
        *ret_len = n;
        return 0;
}

static bool valid_label(const char *s, size_t max) {
        size_t n = s ? strlen(s) : 0;

        if (n == 0 || n > max)
                return false;
        for (; *s; s++)
                if (*s <= ' ' || *s > '~' || *s == ':') /* ':' separates identity and key in PSK files */
                        return false;
        return true;
}

/* Under s->lock. */
static Exposure *find(StreamService *s, const char *identity, const char *export_name) {
        for (size_t i = 0; i < s->n_exposed; i++)
                if ((identity && streq(s->exposed[i].identity, identity)) ||
                    (export_name && streq(s->exposed[i].export_name, export_name)))
                        return &s->exposed[i];
        return NULL;
}

/* TLS: only identities exposed right now have a key. */
static int psk_lookup(void *userdata, const char *identity, uint8_t *key) {
        StreamService *s = userdata;
        bool known;
        int r;

        pthread_mutex_lock(&s->lock);
        known = find(s, identity, NULL) != NULL;
        pthread_mutex_unlock(&s->lock);
        if (!known) {
                log_debug("stream: TLS identity '%s' is not the target of any migration here.", identity);
                return -ENOKEY;
        }
        r = nbd_tls_derive_key(s->secret, s->secret_len, identity, key);
        return r < 0 ? r : NBD_TLS_DERIVED_KEY_SIZE;
}

/* An identity opens its own export only; plain connections (insecure) any exposed one. */
static int export_policy(void *userdata, const char *identity, const char *export_name) {
        StreamService *s = userdata;
        Exposure *x;
        int r = 0;

        pthread_mutex_lock(&s->lock);
        x = find(s, NULL, export_name);
        if (!x)
                r = -ENOENT;
        else if (identity ? !streq(x->identity, identity) : !s->insecure)
                r = -EACCES;
        pthread_mutex_unlock(&s->lock);
        if (r < 0)
                log_debug("stream: %s may not open export '%s'.", identity ?: "a plain client", export_name);
        return r;
}

int stream_service_new(const StreamServiceOptions *o, StreamService **ret) {
        _cleanup_(stream_service_freep) StreamService *s = NULL;
        int r;

        if (!o->listen || (!o->insecure && (!o->secret || o->secret_len < STREAM_SECRET_MIN)))
                return -EINVAL;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        pthread_mutex_init(&s->lock, NULL);
        s->insecure = o->insecure;
        if (o->secret) {
                s->secret = malloc(o->secret_len);
                if (!s->secret)
                        return -ENOMEM;
                memcpy(s->secret, o->secret, o->secret_len);
                s->secret_len = o->secret_len;
        }

        r = nbd_server_new(&s->server);
        if (r < 0)
                return r;
        if (o->max_connections > 0)
                nbd_server_set_max_connections(s->server, o->max_connections);
        if (s->secret) {
                r = nbd_tls_context_new_server(psk_lookup, s, &s->tls);
                if (r < 0)
                        return r;
                nbd_server_set_tls(s->server, nbd_tls_server_start, s->tls, !s->insecure);
        }
        nbd_server_set_export_policy(s->server, export_policy, s);
        r = nbd_server_listen(s->server, o->listen);
        if (r < 0)
                return log_error_errno(r, "Cannot listen for the block stream on %s: %m", o->listen);
        r = nbd_server_start(s->server);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

StreamService *stream_service_free(StreamService *s) {
        if (!s)
                return NULL;
        /* The server goes first: no connection thread may consult the table afterwards. */
        s->server = nbd_server_free(s->server);
        s->tls = nbd_tls_context_free(s->tls);
        for (size_t i = 0; i < s->n_exposed; i++) {
                free(s->exposed[i].identity);
                free(s->exposed[i].export_name);
        }
        free(s->exposed);
        if (s->secret) {
                explicit_bzero(s->secret, s->secret_len);
                free(s->secret);
        }
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
}

int stream_service_port(StreamService *s) {
        return nbd_server_get_port(s->server);
}

int stream_service_expose(StreamService *s, const char *identity, const char *export_name, BlockDev *dev,
                          bool read_only) {
        _cleanup_free_ char *id = NULL, *name = NULL;
        Exposure *grown;
        int r;

        if (!valid_label(identity, NBD_TLS_PSK_MAX_IDENTITY) || !valid_label(export_name, NBD_MAX_STRING) ||
            !dev)
                return -EINVAL;
        id = strdup(identity);
        name = strdup(export_name);
        if (!id || !name)
                return -ENOMEM;

        pthread_mutex_lock(&s->lock);
        if (find(s, identity, export_name)) {
                pthread_mutex_unlock(&s->lock);
                return -EEXIST;
        }
        grown = realloc(s->exposed, (s->n_exposed + 1) * sizeof(Exposure));
        if (!grown) {
                pthread_mutex_unlock(&s->lock);
                return -ENOMEM;
        }
        s->exposed = grown;
        pthread_mutex_unlock(&s->lock);

        /* The export exists before its identity does: a client can only connect once both are in. */
        r = nbd_server_add_export(s->server, export_name, dev, read_only, NULL);
        if (r < 0)
                return r;
        if (blockdev_on_devices(dev))
                (void) nbd_server_set_export_fast_zero(s->server, export_name, false);
        pthread_mutex_lock(&s->lock);
        s->exposed[s->n_exposed++] = (Exposure){ TAKE_PTR(id), TAKE_PTR(name) };
        pthread_mutex_unlock(&s->lock);
        log_debug("stream: exposing '%s' to identity '%s'.", export_name, identity);
        return 0;
}

int stream_service_withdraw(StreamService *s, const char *export_name) {
        Exposure gone = {};
        int r;

        /* The identity goes first, so no new handshake succeeds, then the export and its
         * connections. */
        pthread_mutex_lock(&s->lock);
        for (size_t i = 0; i < s->n_exposed; i++)
                if (streq(s->exposed[i].export_name, export_name)) {
                        gone = s->exposed[i];
                        s->exposed[i] = s->exposed[--s->n_exposed];
                        break;
                }
        pthread_mutex_unlock(&s->lock);
        if (!gone.export_name)
                return -ENOENT;
        r = nbd_server_remove_export(s->server, export_name);
        log_debug("stream: withdrew '%s' from identity '%s'.", export_name, gone.identity);
        free(gone.identity);
        free(gone.export_name);
        return r == -ENOENT ? 0 : r;
}

unsigned stream_service_n_exposed(StreamService *s) {
        unsigned n;

        pthread_mutex_lock(&s->lock);
        n = (unsigned) s->n_exposed;
        pthread_mutex_unlock(&s->lock);
        return n;
}

bool stream_service_has_keys(StreamService *s) {
        return s->secret != NULL;
}

int stream_service_client_tls(StreamService *s, const char *identity, NbdTlsContext **ret) {
        uint8_t key[NBD_TLS_DERIVED_KEY_SIZE];
        int r;

        if (!s->secret)
                return -EPERM;
        if (!valid_label(identity, NBD_TLS_PSK_MAX_IDENTITY))
                return -EINVAL;
        r = nbd_tls_derive_key(s->secret, s->secret_len, identity, key);
        if (r < 0)
                return r;
        r = nbd_tls_context_new_client(identity, key, sizeof(key), ret);
        explicit_bzero(key, sizeof(key));
        return r;
}
