/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The kubeconfig loader: picks one context out of a kubeconfig file (client-go's
 * tools/clientcmd/api/v1 format) and returns what is needed to reach that cluster, with every file the
 * kubeconfig names read into memory.
 *
 * Semantics, following client-go where it has an opinion:
 *   - clusters, users and contexts are lists of {name, cluster|user|context}; a name that appears twice
 *     in one list is an error (client-go's conversion refuses it); mapping keys that appear twice: the
 *     last one wins (as yaml.v2);
 *   - the given context, else current-context, is used; the context must name a cluster and a user
 *     that exist, and its namespace must be a DNS label;
 *   - relative file paths resolve against the directory of the kubeconfig (made absolute);
 *   - *-data fields are base64 of PEM (raw PEM containing "-----BEGIN" is accepted too); an empty
 *     value is the same as an absent one; setting both a *-data field and its file field is an error,
 *     as in client-go's validation; certificates must contain a CERTIFICATE PEM block and keys a
 *     PRIVATE KEY block;
 *   - a client certificate needs a key and a key needs a certificate;
 *   - token wins over tokenFile (then tokenFile is not read and token_file stays NULL); a token read
 *     from a file has surrounding whitespace removed and must not be empty;
 *   - insecure-skip-tls-verify together with a CA is an error;
 *   - server must start with https:// or http:// (kept as is; warning about it is the caller's job),
 *     trailing slashes are removed;
 *   - exec plugins, auth-provider, username/password and impersonation (as, as-uid, as-groups,
 *     as-user-extra) give -EOPNOTSUPP rather than being ignored;
 *   - booleans are YAML 1.1 plain scalars as yaml.v2 reads them (true/True/TRUE/yes/y/on…,
 *     false/…/no/n/off), or null for false; quoted strings are refused, as Go's JSON step refuses them;
 *   - plain null, ~ and empty values count as absent;
 *   - only the first YAML document is read; anchors are ignored, but aliases and "<<" merge keys
 *     are refused with -EINVAL rather than expanded;
 *   - the kubeconfig and every file it names must be regular files (symlinks are followed; anything
 *     else gives -EBADFD) of at most 1 MiB (else -EFBIG); nesting deeper
 *     than 64 levels and more than KUBECONFIG_NODES_MAX YAML nodes give -E2BIG.
 */

#include <stdbool.h>
#include <stddef.h>

#include "../basic/macro.h"

#define KUBECONFIG_FILE_MAX  (1024U * 1024U)
#define KUBECONFIG_DEPTH_MAX 64U
#define KUBECONFIG_NODES_MAX (256U * 1024U)

/* The parts of a kubeconfig that the daemon uses, for one context, with every file it names read into
 * memory. The PEM buffers are followed by a NUL byte that is not counted in their size. */
typedef struct KubeCredentials {
        char *server;          /* https://host:port, no trailing slash */
        char *tls_server_name; /* NULL unless set */
        char *proxy_url;       /* NULL unless set */
        bool insecure_skip_tls_verify;
        void *ca;
        size_t ca_size; /* PEM bundle or NULL (system CAs) */
        void *client_cert;
        size_t client_cert_size; /* PEM or NULL */
        void *client_key;
        size_t client_key_size; /* PEM or NULL (may be the same PEM as the cert: kubelet rotation) */
        char *token;            /* bearer token (from token or read from token_file) or NULL */
        char *token_file;       /* absolute path when the kubeconfig uses tokenFile, else NULL */
        char *namespace;        /* the context's namespace or NULL */
        char *context;          /* name of the context used */
        char *path;             /* the kubeconfig file this came from */
} KubeCredentials;

/* NULL-safe; wipes key, certificate and token memory (explicit_bzero) before freeing. */
KubeCredentials *kube_credentials_free(KubeCredentials *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(KubeCredentials *, kube_credentials_free);

/* Loads path; context NULL (or "") means current-context. On failure returns a negative errno and, if
 * ret_error is non-NULL, sets *ret_error to a one-line message for people (caller frees; NULL only when
 * memory ran out) that names the file and what is wrong, e.g.
 * "/etc/hwameid/kubeconfig: context 'prod' not found". */
int kubeconfig_load(const char *path, const char *context, KubeCredentials **ret, char **ret_error);

/* Parses YAML text already in memory; path is used in messages and to resolve relative file paths
 * against dirname(path). Errors as for kubeconfig_load(). */
int kubeconfig_parse(const char *path, const char *text, size_t len, const char *context,
                     KubeCredentials **ret, char **ret_error);

/* Re-reads token_file into c->token (called when the file changes, and every minute like client-go).
 * Returns 1 if the token changed, 0 if not (or when c has no token_file), negative on error (-ENODATA
 * for an empty file, -EBADMSG for control characters, or the read error), keeping the old token. */
int kube_credentials_reload_token(KubeCredentials *c);
