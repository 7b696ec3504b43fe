/* SPDX-License-Identifier: Apache-2.0 */
/* kube/kubeconfig and basic/base64: decoding as Go does, every kubeconfig shape the daemon meets,
 * and an exact message for every way a kubeconfig can be wrong. */

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "basic/base64.h"
#include "basic/macro.h"
#include "basic/string-util.h"
#include "kube/kubeconfig.h"

#define CERT_PEM                                                                                            \
        "-----BEGIN CERTIFICATE-----\n"                                                                     \
        "MIIBszCCAVmgAwIBAgIUYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowCgYIKoZI\n"                                \
        "-----END CERTIFICATE-----\n"
#define CA_PEM                                                                                              \
        "-----BEGIN CERTIFICATE-----\n"                                                                     \
        "MIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAjMSEwHwYDVQQDDBhrM3Mtc2Vy\n"                                \
        "-----END CERTIFICATE-----\n"
#define KEY_PEM                                                                                             \
        "-----BEGIN EC PRIVATE KEY-----\n"                                                                  \
        "MHcCAQEEIGZha2Uga2V5IGZvciB0ZXN0cyBvbmx5IGZha2Uga2V5IGZvcqAKBggq\n"                                \
        "-----END EC PRIVATE KEY-----\n"

static char tmpdir[] = "/tmp/test-kubeconfig-XXXXXX";

static int setup_tmpdir(void **state) {
        (void) state;
        return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st, (void) flag, (void) ftw;
        return remove(path);
}

static int teardown_tmpdir(void **state) {
        (void) state;
        return nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes tmpdir/name and returns its path (static buffer per call site is not needed: callers copy). */
static char *write_file(const char *name, const char *content) {
        char *path;
        FILE *f;

        assert_true(asprintf(&path, "%s/%s", tmpdir, name) > 0);
        f = fopen(path, "we");
        assert_non_null(f);
        assert_int_equal(fwrite(content, 1, strlen(content), f), strlen(content));
        assert_int_equal(fclose(f), 0);
        return path;
}

static char *b64(const char *s) {
        char *e = NULL;

        assert_true(base64_encode(s, strlen(s), &e) >= 0);
        return e;
}

static void assert_blob(const void *p, size_t size, const char *expected) {
        assert_non_null(p);
        assert_int_equal(size, strlen(expected));
        assert_memory_equal(p, expected, size);
        assert_int_equal(((const char *) p)[size], '\0');
}

/* Loads text written to tmpdir/name and checks the errno and the complete message. */
static void expect_error(const char *name, const char *text, const char *context, int expected_r,
                         const char *expected_message) {
        _cleanup_free_ char *path = write_file(name, text), *msg = NULL, *expected = NULL;
        KubeCredentials *c = NULL;

        assert_int_equal(kubeconfig_load(path, context, &c, &msg), expected_r);
        assert_null(c);
        assert_non_null(msg);
        assert_true(asprintf(&expected, "%s: %s", path, expected_message) > 0);
        assert_string_equal(msg, expected);
        assert_null(strchr(msg, '\n'));
}

/* ---- base64 ------------------------------------------------------------------------------------- */

static void expect_decode(const char *in, const char *out) {
        _cleanup_free_ void *d = NULL;
        size_t n = 0;

        assert_int_equal(base64_decode(in, strlen(in), &d, &n), 0);
        assert_blob(d, n, out);
}

static void expect_decode_fails(const char *in) {
        void *d = (void *) 0x1;
        size_t n = 77;

        assert_int_equal(base64_decode(in, strlen(in), &d, &n), -EINVAL);
        assert_ptr_equal(d, (void *) 0x1); /* untouched on failure */
        assert_int_equal(n, 77);
}

static void base64_decodes_and_encodes_rfc4648_vectors(void **state) {
        static const char *const vectors[][2] = {
                { "", "" },
                { "f", "Zg==" },
                { "fo", "Zm8=" },
                { "foo", "Zm9v" },
                { "foob", "Zm9vYg==" },
                { "fooba", "Zm9vYmE=" },
                { "foobar", "Zm9vYmFy" },
        };

        (void) state;
        for (size_t i = 0; i < ELEMENTSOF(vectors); i++) {
                _cleanup_free_ char *e = NULL;

                expect_decode(vectors[i][1], vectors[i][0]);
                assert_int_equal(base64_encode(vectors[i][0], strlen(vectors[i][0]), &e),
                                 strlen(vectors[i][1]));
                assert_string_equal(e, vectors[i][1]);
        }
        /* The whole alphabet, including + and /. */
        expect_decode("+/+/", "\xfb\xff\xbf");
}

static void base64_skips_whitespace_and_newlines(void **state) {
        (void) state;
        expect_decode("Zm9v\nYmFy\n", "foobar");
        expect_decode("Zm9v\r\nYmFy\r\n", "foobar");
        expect_decode("  Zm 9v\tYm\nE=  ", "fooba");
        expect_decode("Zg=\n=", "f");
        expect_decode(" \n\t", "");
}

static void base64_rejects_bad_characters(void **state) {
        (void) state;
        expect_decode_fails("Zm9v!mFy");
        expect_decode_fails("Zm9v-mFy"); /* URL-safe alphabet is not StdEncoding */
        expect_decode_fails("Zm9v_mFy");
        expect_decode_fails("Zm9v\x80mFy");
        assert_int_equal(base64_decode("Zm\0v", 4, &(void *){ NULL }, &(size_t){ 0 }), -EINVAL);
}

static void base64_requires_padding_and_nothing_after_it(void **state) {
        (void) state;
        expect_decode_fails("Zg"); /* missing padding, as Go's StdEncoding */
        expect_decode_fails("Zm8");
        expect_decode_fails("Zg=");  /* half the padding */
        expect_decode_fails("Z==="); /* padding for the second character */
        expect_decode_fails("====");
        expect_decode_fails("Zg===");    /* too much padding */
        expect_decode_fails("Zg==Zg=="); /* data after padding */
        expect_decode_fails("Zm9vY");    /* a lone character */
        expect_decode_fails("Zm9v=");    /* padding for a quantum that has not started */
        expect_decode_fails("Zm9vZ=");
        /* Non-zero bits in the last character are tolerated (Go's non-strict decoding). */
        expect_decode("Zh==", "f");
}

/* ---- kubeconfig shapes --------------------------------------------------------------------------- */

static void kubeadm_inline_data_is_decoded(void **state) {
        _cleanup_free_ char *ca = b64(CA_PEM), *cert = b64(CERT_PEM), *key = b64(KEY_PEM), *text = NULL,
                            *path = NULL, *msg = NULL;
        _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;

        (void) state;
        assert_true(asprintf(&text,
                             "apiVersion: v1\n"
                             "clusters:\n"
                             "- cluster:\n"
                             "    certificate-authority-data: %s\n"
                             "    server: https://10.0.0.1:6443/\n"
                             "  name: kubernetes\n"
                             "contexts:\n"
                             "- context:\n"
                             "    cluster: kubernetes\n"
                             "    user: kubernetes-admin\n"
                             "  name: kubernetes-admin@kubernetes\n"
                             "current-context: kubernetes-admin@kubernetes\n"
                             "kind: Config\n"
                             "preferences: {}\n"
                             "users:\n"
                             "- name: kubernetes-admin\n"
                             "  user:\n"
                             "    client-certificate-data: %s\n"
                             "    client-key-data: %s\n",
                             ca, cert, key) > 0);
        path = write_file("admin.conf", text);

        assert_int_equal(kubeconfig_load(path, NULL, &c, &msg), 0);
        assert_null(msg);
        assert_string_equal(c->server, "https://10.0.0.1:6443");
        assert_string_equal(c->context, "kubernetes-admin@kubernetes");
        assert_string_equal(c->path, path);
        assert_blob(c->ca, c->ca_size, CA_PEM);
        assert_blob(c->client_cert, c->client_cert_size, CERT_PEM);
        assert_blob(c->client_key, c->client_key_size, KEY_PEM);
        assert_null(c->token);
        assert_null(c->token_file);
        assert_null(c->namespace);
        assert_null(c->tls_server_name);
        assert_null(c->proxy_url);
        assert_false(c->insecure_skip_tls_verify);
}

static void kubelet_conf_reads_combined_pem_through_symlink(void **state) {
        static const char *const refs[] = { "pki/kubelet-client-current.pem", NULL /* absolute */ };
        _cleanup_free_ char *pki = NULL, *pem = NULL, *link = NULL;

        (void) state;
        assert_true(asprintf(&pki, "%s/pki", tmpdir) > 0);
        assert_int_equal(mkdir(pki, 0755), 0);
        pem = write_file("pki/kubelet-client-2024-01-01-00-00-00.pem", CERT_PEM KEY_PEM);
        assert_true(asprintf(&link, "%s/kubelet-client-current.pem", pki) > 0);
        assert_int_equal(symlink("kubelet-client-2024-01-01-00-00-00.pem", link), 0);
        free(write_file("pki/ca.crt", CA_PEM));

        for (size_t i = 0; i < ELEMENTSOF(refs); i++) {
                _cleanup_free_ char *text = NULL, *path = NULL, *msg = NULL;
                _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;
                const char *ref = refs[i] ?: link;

                assert_true(asprintf(&text,
                                     "apiVersion: v1\n"
                                     "clusters:\n"
                                     "- cluster:\n"
                                     "    certificate-authority: pki/ca.crt\n"
                                     "    server: https://k8s.example:6443\n"
                                     "  name: default-cluster\n"
                                     "contexts:\n"
                                     "- context:\n"
                                     "    cluster: default-cluster\n"
                                     "    namespace: default\n"
                                     "    user: default-auth\n"
                                     "  name: default-context\n"
                                     "current-context: default-context\n"
                                     "kind: Config\n"
                                     "preferences: {}\n"
                                     "users:\n"
                                     "- name: default-auth\n"
                                     "  user:\n"
                                     "    client-certificate: %s\n"
                                     "    client-key: %s\n",
                                     ref, ref) > 0);
                path = write_file("kubelet.conf", text);

                assert_int_equal(kubeconfig_load(path, NULL, &c, &msg), 0);
                assert_null(msg);
                assert_string_equal(c->context, "default-context");
                assert_string_equal(c->namespace, "default");
                assert_blob(c->ca, c->ca_size, CA_PEM);
                assert_blob(c->client_cert, c->client_cert_size, CERT_PEM KEY_PEM);
                assert_blob(c->client_key, c->client_key_size, CERT_PEM KEY_PEM);
                assert_ptr_not_equal(c->client_cert, c->client_key); /* each freed on its own */
        }
}

static void relative_kubeconfig_path_resolves_against_the_working_directory(void **state) {
        _cleanup_free_ char *cwd = getcwd(NULL, 0), *msg = NULL, *expected = NULL;
        _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;

        (void) state;
        assert_non_null(cwd);
        free(write_file("token-rel", "rel-token\n"));
        free(write_file("rel.conf", "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
                                    "users: [{name: u, user: {tokenFile: token-rel}}]\n"
                                    "contexts: [{name: x, context: {cluster: c, user: u}}]\n"));
        assert_int_equal(chdir(tmpdir), 0);
        assert_int_equal(kubeconfig_load("rel.conf", "x", &c, &msg), 0);
        assert_int_equal(chdir(cwd), 0);
        assert_true(asprintf(&expected, "%s/token-rel", tmpdir) > 0);
        assert_string_equal(c->token_file, expected);
        assert_string_equal(c->token, "rel-token");
        assert_string_equal(c->path, "rel.conf");
}

#define TOKEN_CONFIG(user)                                                                                  \
        "clusters:\n"                                                                                       \
        "- name: c\n"                                                                                       \
        "  cluster:\n"                                                                                      \
        "    server: https://h:6443\n"                                                                      \
        "    insecure-skip-tls-verify: true\n"                                                              \
        "contexts:\n"                                                                                       \
        "- name: x\n"                                                                                       \
        "  context: {cluster: c, user: u}\n"                                                                \
        "current-context: x\n"                                                                              \
        "users:\n"                                                                                          \
        "- name: u\n"                                                                                       \
        "  user:\n" user

static void inline_token_wins_over_token_file(void **state) {
        _cleanup_free_ char *path = NULL, *msg = NULL;
        _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;

        (void) state;
        path = write_file("token-inline.conf", TOKEN_CONFIG("    token: \"abc.def\"\n"
                                                            "    tokenFile: /nonexistent/token\n"));
        assert_int_equal(kubeconfig_load(path, NULL, &c, &msg), 0);
        assert_string_equal(c->token, "abc.def");
        assert_null(c->token_file);
        assert_true(c->insecure_skip_tls_verify);
        assert_null(c->ca);
        assert_null(c->client_cert);
        assert_null(c->client_key);
        /* Without a token file there is nothing to reload. */
        assert_int_equal(kube_credentials_reload_token(c), 0);
        assert_string_equal(c->token, "abc.def");
}

static void token_file_is_read_trimmed_and_reloaded(void **state) {
        _cleanup_free_ char *path = NULL, *msg = NULL, *token = NULL;
        _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;

        (void) state;
        token = write_file("token", "  first-token\n");
        path = write_file("token-file.conf", TOKEN_CONFIG("    tokenFile: token\n"));
        assert_int_equal(kubeconfig_load(path, NULL, &c, &msg), 0);
        assert_string_equal(c->token, "first-token");
        assert_string_equal(c->token_file, token);

        /* Unchanged file: 0. */
        assert_int_equal(kube_credentials_reload_token(c), 0);
        /* Rotated: 1, then 0 again. */
        free(write_file("token", "second-token\n"));
        assert_int_equal(kube_credentials_reload_token(c), 1);
        assert_string_equal(c->token, "second-token");
        assert_int_equal(kube_credentials_reload_token(c), 0);
        /* Emptied or removed: an error, and the old token stays. */
        free(write_file("token", "\n"));
        assert_int_equal(kube_credentials_reload_token(c), -ENODATA);
        assert_int_equal(unlink(token), 0);
        assert_int_equal(kube_credentials_reload_token(c), -ENOENT);
        assert_string_equal(c->token, "second-token");
}

#define TWO_CONTEXTS                                                                                        \
        "clusters:\n"                                                                                       \
        "- name: dev\n"                                                                                     \
        "  cluster: {server: 'http://dev:8080', tls-server-name: dev.internal}\n"                           \
        "- name: prod\n"                                                                                    \
        "  cluster:\n"                                                                                      \
        "    server: \"https://prod.example.com:443///\"\n"                                                 \
        "    tls-server-name: kubernetes.default.svc\n"                                                     \
        "    proxy-url: socks5://127.0.0.1:1080\n"                                                          \
        "users:\n"                                                                                          \
        "- {name: dev-user, user: {token: dev-token}}\n"                                                    \
        "- name: prod-user\n"                                                                               \
        "  user:\n"                                                                                         \
        "    token: |-\n"                                                                                   \
        "      prod-token\n"                                                                                \
        "contexts:\n"                                                                                       \
        "- name: dev\n"                                                                                     \
        "  context: {cluster: dev, user: dev-user}\n"                                                       \
        "- name: prod\n"                                                                                    \
        "  context:\n"                                                                                      \
        "    cluster: prod\n"                                                                               \
        "    user: prod-user\n"                                                                             \
        "    namespace: hwameistor\n"                                                                       \
        "current-context: dev\n"

static void explicit_context_overrides_current_context(void **state) {
        _cleanup_free_ char *path = NULL;

        (void) state;
        path = write_file("two.conf", TWO_CONTEXTS);
        {
                _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;

                assert_int_equal(kubeconfig_load(path, NULL, &c, NULL), 0);
                assert_string_equal(c->context, "dev");
                assert_string_equal(c->server, "http://dev:8080"); /* kept as is; the caller warns */
                assert_string_equal(c->tls_server_name, "dev.internal");
                assert_string_equal(c->token, "dev-token");
                assert_null(c->namespace);
        }
        {
                _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;

                assert_int_equal(kubeconfig_load(path, "prod", &c, NULL), 0);
                assert_string_equal(c->context, "prod");
                assert_string_equal(c->server, "https://prod.example.com:443");
                assert_string_equal(c->tls_server_name, "kubernetes.default.svc");
                assert_string_equal(c->proxy_url, "socks5://127.0.0.1:1080");
                assert_string_equal(c->namespace, "hwameistor");
                assert_string_equal(c->token, "prod-token"); /* a block scalar, newline stripped */
        }
}

static void parse_resolves_against_the_given_path(void **state) {
        _cleanup_free_ char *msg = NULL;
        _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;
        const char *text =
                "clusters: [{name: c, cluster: {server: 'https://h', certificate-authority: ca.crt}}]\n"
                "users: [{name: u}]\n"
                "contexts: [{name: x, context: {cluster: c, user: u}}]\n";

        (void) state;
        assert_int_equal(kubeconfig_parse("/nonexistent/dir/kubeconfig", text, strlen(text), "x", &c, &msg),
                         -ENOENT);
        assert_null(c);
        assert_string_equal(msg, "/nonexistent/dir/kubeconfig: certificate-authority "
                                 "'/nonexistent/dir/ca.crt': No such file or directory");
}

static void raw_pem_and_yaml_booleans_are_accepted(void **state) {
        static const char *const truths[] = { "true", "True", "TRUE", "yes", "y", "on", "!!bool true" };
        static const char *const lies[] = { "false", "no", "off", "~", "null", "" };

        (void) state;
        for (size_t i = 0; i < ELEMENTSOF(truths) + ELEMENTSOF(lies); i++) {
                _cleanup_free_ char *text = NULL, *path = NULL, *msg = NULL;
                _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;
                bool truth = i < ELEMENTSOF(truths);

                assert_true(asprintf(&text,
                                     "clusters: [{name: c, cluster: {server: 'https://h', "
                                     "insecure-skip-tls-verify: %s}}]\n"
                                     "users:\n"
                                     "- name: u\n"
                                     "  user:\n"
                                     "    client-certificate-data: |\n"
                                     "      -----BEGIN CERTIFICATE-----\n"
                                     "      MIIB\n"
                                     "      -----END CERTIFICATE-----\n"
                                     "    client-key-data: \"-----BEGIN PRIVATE KEY-----\\nMIIE\\n"
                                     "-----END PRIVATE KEY-----\\n\"\n"
                                     "contexts: [{name: x, context: {cluster: c, user: u}}]\n",
                                     truth ? truths[i] : lies[i - ELEMENTSOF(truths)]) > 0);
                path = write_file("bool.conf", text);
                assert_int_equal(kubeconfig_load(path, "x", &c, &msg), 0);
                assert_int_equal(c->insecure_skip_tls_verify, truth);
                assert_blob(c->client_cert, c->client_cert_size,
                            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
                assert_blob(c->client_key, c->client_key_size,
                            "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n");
        }
}

static void free_accepts_null(void **state) {
        (void) state;
        assert_null(kube_credentials_free(NULL));
}

/* ---- Errors ------------------------------------------------------------------------------------- */

#define GOOD_CLUSTER "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
#define GOOD_CONTEXT "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
#define GOOD_USER    "users: [{name: u, user: {token: t}}]\n"

static void missing_and_unreadable_files_are_named(void **state) {
        _cleanup_free_ char *path = NULL, *msg = NULL, *expected = NULL;
        KubeCredentials *c = NULL;

        (void) state;
        assert_true(asprintf(&path, "%s/does-not-exist", tmpdir) > 0);
        assert_int_equal(kubeconfig_load(path, NULL, &c, &msg), -ENOENT);
        assert_null(c);
        assert_true(asprintf(&expected, "%s: No such file or directory", path) > 0);
        assert_string_equal(msg, expected);
        msg = mfree(msg);
        expected = mfree(expected);

        assert_int_equal(kubeconfig_load(tmpdir, NULL, &c, &msg), -EISDIR);
        assert_true(asprintf(&expected, "%s: Is a directory", tmpdir) > 0);
        assert_string_equal(msg, expected);

        msg = mfree(msg);
        expected = mfree(expected);
        free(path);

        /* A FIFO would block: refused without opening it for reading. */
        assert_true(asprintf(&path, "%s/fifo", tmpdir) > 0);
        assert_int_equal(mkfifo(path, 0600), 0);
        assert_int_equal(kubeconfig_load(path, NULL, &c, &msg), -EBADFD);
        assert_true(asprintf(&expected, "%s: not a regular file", path) > 0);
        assert_string_equal(msg, expected);
        assert_int_equal(unlink(path), 0);

        /* Without ret_error only the errno comes back. */
        assert_int_equal(kubeconfig_load(path, NULL, &c, NULL), -ENOENT);
}

static void bad_yaml_reports_line_and_column(void **state) {
        (void) state;
        expect_error("bad.yaml",
                     "apiVersion: v1\n"
                     "clusters:\n"
                     "- name: c\n"
                     "  cluster:\n"
                     "    server: https://h\n"
                     "users: []\n"
                     "current-context: a: b\n",
                     NULL, -EINVAL, "line 7, column 19: mapping values are not allowed in this context");
        expect_error("tab.yaml", "a:\n\tb: c\n", NULL, -EINVAL,
                     "line 2, column 1: found character that cannot start any token");
        expect_error("utf8.yaml", "a: \xff\n", NULL, -EINVAL, "byte 3: invalid leading UTF-8 octet (0xff)");
}

static void unknown_context_and_missing_current_context(void **state) {
        (void) state;
        expect_error("ctx.conf", GOOD_CLUSTER GOOD_USER GOOD_CONTEXT, "prod", -EINVAL,
                     "context 'prod' not found");
        expect_error("noctx.conf",
                     GOOD_CLUSTER GOOD_USER "contexts: [{name: x, context: {cluster: c, user: u}}]\n", NULL,
                     -EINVAL, "current-context is not set and no context was given");
        expect_error("empty.conf", "# nothing\n", NULL, -EINVAL, "the kubeconfig is empty");
        expect_error("list.conf", "- a\n", NULL, -EINVAL, "expected a mapping at the top level");
        expect_error("nocluster.conf", GOOD_USER GOOD_CONTEXT, NULL, -EINVAL,
                     "cluster 'c' of context 'x' not found");
        expect_error("nouser.conf", GOOD_CLUSTER GOOD_CONTEXT, NULL, -EINVAL,
                     "user 'u' of context 'x' not found");
        expect_error("ctxnouser.conf",
                     GOOD_CLUSTER GOOD_USER "contexts: [{name: x, context: {cluster: c}}]\n", "x", -EINVAL,
                     "context 'x' has no user");
        expect_error("badns.conf",
                     GOOD_CLUSTER GOOD_USER
                     "contexts: [{name: x, context: {cluster: c, user: u, namespace: Ns_1}}]\n",
                     "x", -EINVAL, "context 'x': namespace 'Ns_1' is not a DNS label");
        expect_error("kind.conf", "kind: Pod\n", NULL, -EINVAL, "kind is 'Pod', expected 'Config'");
        expect_error("kindlist.conf", "kind: [Config]\n", NULL, -EINVAL, "kind: expected a string");
}

static void bad_base64_names_the_field(void **state) {
        _cleanup_free_ char *cert = b64(CERT_PEM), *text = NULL;

        (void) state;
        assert_true(asprintf(&text,
                             GOOD_CLUSTER GOOD_CONTEXT "users:\n"
                                                       "- name: other\n"
                                                       "- name: u\n"
                                                       "  user:\n"
                                                       "    client-certificate-data: %s\n"
                                                       "    client-key-data: 'not*base64'\n",
                             cert) > 0);
        expect_error("b64.conf", text, NULL, -EINVAL, "users[1].user.client-key-data: invalid base64");
        expect_error("nopem.conf",
                     "clusters: [{name: c, cluster: {server: 'https://h', certificate-authority-data: "
                     "Zm9vYmFy}}]\n" GOOD_USER GOOD_CONTEXT,
                     NULL, -EINVAL,
                     "clusters[0].cluster.certificate-authority-data: no CERTIFICATE PEM block found");
}

static void missing_ca_file_is_named(void **state) {
        (void) state;
        expect_error("ca.conf",
                     "clusters: [{name: c, cluster: {server: 'https://h', certificate-authority: "
                     "/x/ca.crt}}]\n" GOOD_USER GOOD_CONTEXT,
                     NULL, -ENOENT, "certificate-authority '/x/ca.crt': No such file or directory");
}

static void cert_without_key_and_key_without_cert(void **state) {
        _cleanup_free_ char *cert = b64(CERT_PEM), *key = b64(KEY_PEM), *t1 = NULL, *t2 = NULL, *t3 = NULL;

        (void) state;
        assert_true(asprintf(&t1,
                             GOOD_CLUSTER GOOD_CONTEXT
                             "users: [{name: u, user: {client-certificate-data: %s}}]\n",
                             cert) > 0);
        expect_error("certonly.conf", t1, NULL, -EINVAL,
                     "user 'u' has a client certificate but no client key");
        assert_true(asprintf(&t2,
                             GOOD_CLUSTER GOOD_CONTEXT "users: [{name: u, user: {client-key-data: %s}}]\n",
                             key) > 0);
        expect_error("keyonly.conf", t2, NULL, -EINVAL,
                     "user 'u' has a client key but no client certificate");
        /* A certificate where the key should be. */
        assert_true(
                asprintf(&t3,
                         GOOD_CLUSTER GOOD_CONTEXT
                         "users: [{name: u, user: {client-certificate-data: %s, client-key-data: %s}}]\n",
                         cert, cert) > 0);
        expect_error("keyiscert.conf", t3, NULL, -EINVAL,
                     "users[0].user.client-key-data: no PRIVATE KEY PEM block found");
}

static void data_and_file_together_are_refused(void **state) {
        _cleanup_free_ char *ca = b64(CA_PEM), *text = NULL;

        (void) state;
        assert_true(
                asprintf(
                        &text,
                        "clusters: [{name: c, cluster: {server: 'https://h', certificate-authority: ca.crt, "
                        "certificate-authority-data: %s}}]\n" GOOD_USER GOOD_CONTEXT,
                        ca) > 0);
        expect_error(
                "both.conf", text, NULL, -EINVAL,
                "clusters[0].cluster: certificate-authority-data and certificate-authority are both set");
}

static void insecure_together_with_ca_is_refused(void **state) {
        _cleanup_free_ char *ca = b64(CA_PEM), *text = NULL;

        (void) state;
        assert_true(asprintf(&text,
                             "clusters: [{name: c, cluster: {server: 'https://h', insecure-skip-tls-verify: "
                             "true, "
                             "certificate-authority-data: %s}}]\n" GOOD_USER GOOD_CONTEXT,
                             ca) > 0);
        expect_error("insecure.conf", text, NULL, -EINVAL,
                     "cluster 'c': a certificate authority together with insecure-skip-tls-verify is not "
                     "allowed");
        expect_error("quotedbool.conf",
                     "clusters: [{name: c, cluster: {server: 'https://h', insecure-skip-tls-verify: "
                     "'true'}}]\n" GOOD_USER GOOD_CONTEXT,
                     NULL, -EINVAL,
                     "clusters[0].cluster.insecure-skip-tls-verify: expected true or false, not 'true'");
}

static void unsupported_authentication_is_eopnotsupp(void **state) {
        (void) state;
        expect_error(
                "exec.conf",
                GOOD_CLUSTER GOOD_CONTEXT "users:\n"
                                          "- name: u\n"
                                          "  user:\n"
                                          "    exec:\n"
                                          "      apiVersion: client.authentication.k8s.io/v1beta1\n"
                                          "      command: aws\n"
                                          "      args: [eks, get-token]\n",
                NULL, -EOPNOTSUPP,
                "user 'u': exec credential plugins are not supported (yet); use a client certificate or a "
                "token");
        expect_error(
                "authprovider.conf",
                GOOD_CLUSTER GOOD_CONTEXT "users: [{name: u, user: {auth-provider: {name: oidc}}}]\n", NULL,
                -EOPNOTSUPP,
                "user 'u': auth-provider plugins are not supported; use a client certificate or a token");
        expect_error("basic.conf",
                     GOOD_CLUSTER GOOD_CONTEXT "users: [{name: u, user: {username: a, password: b}}]\n",
                     NULL, -EOPNOTSUPP,
                     "user 'u': basic authentication (username/password) is not supported");
}

static void cluster_without_server_or_with_a_bad_one(void **state) {
        (void) state;
        expect_error("noserver.conf", "clusters: [{name: c, cluster: {}}]\n" GOOD_USER GOOD_CONTEXT, NULL,
                     -EINVAL, "cluster 'c' has no server");
        expect_error("emptycluster.conf", "clusters: [{name: c}]\n" GOOD_USER GOOD_CONTEXT, NULL, -EINVAL,
                     "cluster 'c' has no server");
        expect_error("scheme.conf",
                     "clusters: [{name: c, cluster: {server: 'h:6443'}}]\n" GOOD_USER GOOD_CONTEXT, NULL,
                     -EINVAL, "clusters[0].cluster.server: 'h:6443' is not a https:// or http:// URL");
        expect_error("nohost.conf",
                     "clusters: [{name: c, cluster: {server: 'https:///'}}]\n" GOOD_USER GOOD_CONTEXT, NULL,
                     -EINVAL, "clusters[0].cluster.server: 'https:///' is not a https:// or http:// URL");
        expect_error("spaces.conf",
                     "clusters: [{name: c, cluster: {server: 'https://h x'}}]\n" GOOD_USER GOOD_CONTEXT,
                     NULL, -EINVAL,
                     "clusters[0].cluster.server: 'https://h x' contains whitespace or control characters");
        expect_error("mapserver.conf",
                     "clusters: [{name: c, cluster: {server: [a]}}]\n" GOOD_USER GOOD_CONTEXT, NULL, -EINVAL,
                     "clusters[0].cluster.server: expected a string");
        expect_error("notalist.conf", "clusters: {name: c}\n" GOOD_USER GOOD_CONTEXT, NULL, -EINVAL,
                     "clusters: expected a list");
}

static void structural_limits_and_yaml_features(void **state) {
        _cleanup_free_ char *deep = NULL;

        (void) state;
        expect_error("dup.conf",
                     "clusters: [{name: c, cluster: {server: 'https://a'}}, {name: c, cluster: {server: "
                     "'https://b'}}]\n" GOOD_USER GOOD_CONTEXT,
                     NULL, -EINVAL, "clusters[1]: cluster name 'c' is used twice");
        expect_error("alias.conf",
                     "clusters: [{name: c, cluster: &x {server: 'https://a'}}, {name: d, cluster: *x}]\n",
                     NULL, -EINVAL, "line 1, column 77: YAML aliases are not supported");
        expect_error("merge.conf", "a: {<<: {b: c}}\n", NULL, -EINVAL,
                     "line 1, column 5: YAML merge keys are not supported");
        expect_error("complexkey.conf", "? [a]\n: b\n", NULL, -EINVAL,
                     "line 1, column 3: mapping keys must be scalars");

        deep = malloc(200 + 1);
        assert_non_null(deep);
        memset(deep, '[', 200);
        deep[200] = '\0';
        expect_error("deep.conf", deep, NULL, -E2BIG, "line 1, column 65: nested deeper than 64 levels");

        /* Duplicate keys: the last one wins, as in yaml.v2. */
        {
                _cleanup_free_ char *path = write_file("dupkey.conf",
                                                       "clusters: [{name: c, cluster: {server: 'https://a', "
                                                       "server: 'https://b'}}]\n" GOOD_USER GOOD_CONTEXT);
                _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;

                assert_int_equal(kubeconfig_load(path, NULL, &c, NULL), 0);
                assert_string_equal(c->server, "https://b");
        }
}

static void too_large_files_are_refused(void **state) {
        _cleanup_free_ char *big = NULL, *path = NULL, *ca_path = NULL, *text = NULL, *msg = NULL,
                            *expected = NULL;
        KubeCredentials *c = NULL;
        size_t n = KUBECONFIG_FILE_MAX + 1;

        (void) state;
        big = malloc(n + 1);
        assert_non_null(big);
        memset(big, '#', n);
        big[n] = '\0';
        expect_error("big.conf", big, NULL, -EFBIG, "file is larger than 1 MiB");

        assert_int_equal(kubeconfig_parse("/mem", big, n, NULL, &c, &msg), -EFBIG);
        assert_string_equal(msg, "/mem: file is larger than 1 MiB");

        ca_path = write_file("big-ca.crt", big);
        assert_true(asprintf(&text,
                             "clusters: [{name: c, cluster: {server: 'https://h', certificate-authority: "
                             "%s}}]\n" GOOD_USER GOOD_CONTEXT,
                             ca_path) > 0);
        assert_true(asprintf(&expected, "certificate-authority '%s': file is larger than 1 MiB", ca_path) >
                    0);
        expect_error("bigca.conf", text, NULL, -EFBIG, expected);
        (void) path;
}

static void token_file_problems_are_named(void **state) {
        _cleanup_free_ char *empty = NULL, *expected = NULL;

        (void) state;
        empty = write_file("empty-token", " \n");
        assert_true(asprintf(&expected, "tokenFile '%s': the file is empty", empty) > 0);
        expect_error("emptytoken.conf", TOKEN_CONFIG("    tokenFile: empty-token\n"), NULL, -EINVAL,
                     expected);
        expect_error("ctltoken.conf", TOKEN_CONFIG("    token: \"a\\nb\"\n"), NULL, -EINVAL,
                     "users[0].user.token: contains control characters");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(base64_decodes_and_encodes_rfc4648_vectors),
                cmocka_unit_test(base64_skips_whitespace_and_newlines),
                cmocka_unit_test(base64_rejects_bad_characters),
                cmocka_unit_test(base64_requires_padding_and_nothing_after_it),
                cmocka_unit_test(kubeadm_inline_data_is_decoded),
                cmocka_unit_test(kubelet_conf_reads_combined_pem_through_symlink),
                cmocka_unit_test(relative_kubeconfig_path_resolves_against_the_working_directory),
                cmocka_unit_test(inline_token_wins_over_token_file),
                cmocka_unit_test(token_file_is_read_trimmed_and_reloaded),
                cmocka_unit_test(explicit_context_overrides_current_context),
                cmocka_unit_test(parse_resolves_against_the_given_path),
                cmocka_unit_test(raw_pem_and_yaml_booleans_are_accepted),
                cmocka_unit_test(free_accepts_null),
                cmocka_unit_test(missing_and_unreadable_files_are_named),
                cmocka_unit_test(bad_yaml_reports_line_and_column),
                cmocka_unit_test(unknown_context_and_missing_current_context),
                cmocka_unit_test(bad_base64_names_the_field),
                cmocka_unit_test(missing_ca_file_is_named),
                cmocka_unit_test(cert_without_key_and_key_without_cert),
                cmocka_unit_test(data_and_file_together_are_refused),
                cmocka_unit_test(insecure_together_with_ca_is_refused),
                cmocka_unit_test(unsupported_authentication_is_eopnotsupp),
                cmocka_unit_test(cluster_without_server_or_with_a_bad_one),
                cmocka_unit_test(structural_limits_and_yaml_features),
                cmocka_unit_test(too_large_files_are_refused),
                cmocka_unit_test(token_file_problems_are_named),
        };
        return cmocka_run_group_tests_name("kubeconfig", tests, setup_tmpdir, teardown_tmpdir);
}
