/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The kubeconfig loader. libyaml's event parser builds a small tree (scalars, sequences, mappings) of
 * the first document; the tree is then walked along the few paths a kubeconfig defines. Everything
 * that may hold key material (the file text, scalars, decoded data, files read) is wiped before it
 * is freed.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "../basic/base64.h"
#include "../basic/string-util.h"
#include "kubeconfig.h"

/* ---- Wiping buffers ---------------------------------------------------------------------------- */

static void *erase_and_free(void *p, size_t size) {
        if (p) {
                explicit_bzero(p, size);
                free(p);
        }
        return NULL;
}

static char *erase_and_free_string(char *s) {
        return s ? erase_and_free(s, strlen(s)) : NULL;
}

static void erase_and_free_stringp(char **s) {
        *s = erase_and_free_string(*s);
}

/* Bytes followed by a NUL byte that size does not count. */
typedef struct Blob {
        char *data;
        size_t size;
} Blob;

static void blob_done(Blob *b) {
        b->data = erase_and_free(b->data, b->size + 1);
        b->size = 0;
}

static int blob_copy(Blob *b, const void *p, size_t size) {
        char *d = malloc(size + 1);

        if (!d)
                return -ENOMEM;
        memcpy(d, p, size);
        d[size] = '\0';
        blob_done(b);
        *b = (Blob){ d, size };
        return 0;
}

/* Reads a whole regular file of at most max bytes. Follows symlinks (the kubelet's rotated certificate
 * is one). Anything else (FIFOs, devices) is refused with -EBADFD, and opened with O_NONBLOCK so that a
 * FIFO cannot block the open. */
static int read_file_bounded(const char *path, size_t max, Blob *ret) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_(blob_done) Blob b = {};
        size_t allocated;
        struct stat st;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if ((uint64_t) st.st_size > max)
                return -EFBIG;

        /* One byte beyond max to notice files that grew, one for the NUL. */
        allocated = st.st_size > 0 ? (size_t) st.st_size + 1 : 4096;
        allocated = MIN(allocated, max + 2);
        b.data = malloc(allocated);
        if (!b.data)
                return -ENOMEM;

        for (;;) {
                ssize_t k;

                if (b.size + 1 >= allocated) {
                        size_t n = MIN(allocated * 2, max + 2);
                        char *d;

                        if (n <= allocated)
                                return -EFBIG;
                        /* Not realloc(): the old buffer must be wiped. */
                        d = malloc(n);
                        if (!d)
                                return -ENOMEM;
                        memcpy(d, b.data, b.size);
                        erase_and_free(b.data, allocated);
                        b.data = d;
                        allocated = n;
                }
                k = read(fd, b.data + b.size, allocated - 1 - b.size);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                b.size += (size_t) k;
                if (b.size > max)
                        return -EFBIG;
        }
        b.data[b.size] = '\0';

        /* Hand over; the buffer may be larger than size + 1, which blob_done() does not know. */
        if (allocated > b.size + 1) {
                Blob t = {};
                int r;

                r = blob_copy(&t, b.data, b.size);
                if (r < 0)
                        return r;
                explicit_bzero(b.data, allocated);
                *ret = t;
                return 0;
        }
        *ret = b;
        b = (Blob){};
        return 0;
}

/* ---- The YAML tree ----------------------------------------------------------------------------- */

typedef enum YNodeType {
        YNODE_SCALAR,
        YNODE_SEQUENCE,
        YNODE_MAPPING,
} YNodeType;

typedef enum YTag {
        YTAG_NONE, /* no tag */
        YTAG_STR,
        YTAG_NULL,
        YTAG_BOOL,
        YTAG_OTHER,
} YTag;

typedef struct YNode YNode;
struct YNode {
        YNodeType type;
        YTag tag;
        bool plain;  /* plain style: without a tag YAML 1.1 resolves it (null, booleans) */
        char *value; /* scalars: NUL-terminated, length bytes (may contain NUL bytes) */
        size_t length;
        YNode **children; /* sequences: items; mappings: key, value, key, value… */
        size_t n_children;
        size_t n_allocated;
};

static YNode *ynode_free(YNode *n) {
        if (!n)
                return NULL;
        for (size_t i = 0; i < n->n_children; i++)
                ynode_free(n->children[i]);
        free(n->children);
        erase_and_free(n->value, n->length + 1);
        free(n);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(YNode *, ynode_free);

static bool ynode_is_null(const YNode *n) {
        if (!n)
                return true;
        if (n->type != YNODE_SCALAR)
                return false;
        if (n->tag == YTAG_NULL)
                return true;
        if (n->tag != YTAG_NONE || !n->plain)
                return false;
        return n->length == 0 || streq(n->value, "~") || streq(n->value, "null") ||
               streq(n->value, "Null") || streq(n->value, "NULL");
}

static bool ynode_is_key(const YNode *n, const char *key) {
        return n->type == YNODE_SCALAR && strlen(n->value) == n->length && streq(n->value, key);
}

/* The value of key in mapping m (the last one if the key repeats, as in yaml.v2), or NULL when m is
 * NULL, key is absent or its value is null. */
static const YNode *ynode_get(const YNode *m, const char *key) {
        const YNode *found = NULL;

        if (!m || m->type != YNODE_MAPPING)
                return NULL;
        for (size_t i = 0; i + 1 < m->n_children; i += 2)
                if (ynode_is_key(m->children[i], key))
                        found = m->children[i + 1];
        return ynode_is_null(found) ? NULL : found;
}

static int ynode_append(YNode *parent, YNode *child) {
        if (parent->n_children == parent->n_allocated) {
                size_t n = MAX(parent->n_allocated * 2, (size_t) 4);
                YNode **c = reallocarray(parent->children, n, sizeof(YNode *));

                if (!c)
                        return -ENOMEM;
                parent->children = c;
                parent->n_allocated = n;
        }
        parent->children[parent->n_children++] = child;
        return 0;
}

static YTag ytag_from_string(const char *tag) {
        if (!tag)
                return YTAG_NONE;
        if (streq(tag, YAML_STR_TAG) || streq(tag, "!"))
                return YTAG_STR;
        if (streq(tag, YAML_NULL_TAG))
                return YTAG_NULL;
        if (streq(tag, YAML_BOOL_TAG))
                return YTAG_BOOL;
        return YTAG_OTHER;
}

/* ---- Parser state and messages ----------------------------------------------------------------- */

typedef struct KubeconfigParser {
        const char *path;
        char *dir; /* absolute directory of path, computed when first needed */
        char *error;
        size_t n_nodes;
} KubeconfigParser;

/* Records the first error as "PATH: message" and returns r. Control characters become '?' so that
 * the message stays on one line whatever the file contains. */
_printf_(3, 4) static int kc_fail(KubeconfigParser *p, int r, const char *format, ...) {
        _cleanup_free_ char *msg = NULL;
        va_list ap;
        int saved = errno;

        assert(r < 0);
        if (p->error)
                return r;

        errno = -r; /* for %m */
        va_start(ap, format);
        if (vasprintf(&msg, format, ap) < 0)
                msg = NULL;
        va_end(ap);
        errno = saved;
        if (!msg)
                return r;
        if (asprintf(&p->error, "%s: %s", p->path, msg) < 0) {
                p->error = NULL;
                return r;
        }
        for (char *c = p->error; *c; c++)
                if ((unsigned char) *c < 0x20 || *c == 0x7f)
                        *c = '?';
        return r;
}

static int kc_file_fail(KubeconfigParser *p, int r, const char *what, const char *path) {
        if (r == -ENOMEM)
                return r;
        if (r == -EFBIG)
                return kc_fail(p, r, "%s '%.256s': file is larger than 1 MiB", what, path);
        if (r == -EBADFD)
                return kc_fail(p, r, "%s '%.256s': not a regular file", what, path);
        return kc_fail(p, r, "%s '%.256s': %m", what, path);
}

/* libyaml's problem and where it is. */
static int kc_yaml_fail(KubeconfigParser *p, const yaml_parser_t *parser) {
        const char *problem = parser->problem ?: "invalid YAML";

        switch (parser->error) {
        case YAML_MEMORY_ERROR:
                return -ENOMEM;
        case YAML_READER_ERROR:
                if (parser->problem_value >= 0)
                        return kc_fail(p, -EINVAL, "byte %zu: %s (0x%02x)", parser->problem_offset, problem,
                                       (unsigned) parser->problem_value);
                return kc_fail(p, -EINVAL, "byte %zu: %s", parser->problem_offset, problem);
        default:
                return kc_fail(p, -EINVAL, "line %zu, column %zu: %s", parser->problem_mark.line + 1,
                               parser->problem_mark.column + 1, problem);
        }
}

/* Builds the tree of the first document (NULL when the stream holds none). */
static int kc_build_tree(KubeconfigParser *p, const char *text, size_t len, YNode **ret) {
        _cleanup_(ynode_freep) YNode *root = NULL;
        YNode *stack[KUBECONFIG_DEPTH_MAX];
        size_t depth = 0;
        yaml_parser_t parser;
        bool done = false;
        int r = 0;

        if (!yaml_parser_initialize(&parser))
                return -ENOMEM;
        yaml_parser_set_input_string(&parser, (const unsigned char *) text, len);

        while (!done && r >= 0) {
                _cleanup_(ynode_freep) YNode *n = NULL;
                yaml_event_t ev;

                if (!yaml_parser_parse(&parser, &ev)) {
                        r = kc_yaml_fail(p, &parser);
                        break;
                }

                switch (ev.type) {
                case YAML_STREAM_END_EVENT:
                case YAML_DOCUMENT_END_EVENT: /* only the first document counts, as in yaml.v2 */
                        done = true;
                        break;

                case YAML_ALIAS_EVENT:
                        r = kc_fail(p, -EINVAL, "line %zu, column %zu: YAML aliases are not supported",
                                    ev.start_mark.line + 1, ev.start_mark.column + 1);
                        break;

                case YAML_SCALAR_EVENT:
                case YAML_SEQUENCE_START_EVENT:
                case YAML_MAPPING_START_EVENT: {
                        YNode *parent = depth > 0 ? stack[depth - 1] : NULL;

                        if (++p->n_nodes > KUBECONFIG_NODES_MAX) {
                                r = kc_fail(p, -E2BIG, "more than %u YAML nodes", KUBECONFIG_NODES_MAX);
                                break;
                        }
                        n = calloc(1, sizeof(YNode));
                        if (!n) {
                                r = -ENOMEM;
                                break;
                        }
                        if (ev.type == YAML_SCALAR_EVENT) {
                                n->type = YNODE_SCALAR;
                                n->tag = ytag_from_string((const char *) ev.data.scalar.tag);
                                n->plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
                                n->length = ev.data.scalar.length;
                                n->value = malloc(n->length + 1);
                                if (!n->value) {
                                        r = -ENOMEM;
                                        break;
                                }
                                memcpy(n->value, ev.data.scalar.value, n->length);
                                n->value[n->length] = '\0';
                                explicit_bzero(ev.data.scalar.value, ev.data.scalar.length);
                        } else
                                n->type = ev.type == YAML_SEQUENCE_START_EVENT ? YNODE_SEQUENCE
                                                                               : YNODE_MAPPING;

                        if (parent && parent->type == YNODE_MAPPING && parent->n_children % 2 == 0) {
                                if (n->type != YNODE_SCALAR) {
                                        r = kc_fail(p, -EINVAL,
                                                    "line %zu, column %zu: mapping keys must be scalars",
                                                    ev.start_mark.line + 1, ev.start_mark.column + 1);
                                        break;
                                }
                                if (n->plain && n->tag == YTAG_NONE && streq(n->value, "<<")) {
                                        r = kc_fail(
                                                p, -EINVAL,
                                                "line %zu, column %zu: YAML merge keys are not supported",
                                                ev.start_mark.line + 1, ev.start_mark.column + 1);
                                        break;
                                }
                        }

                        if (n->type != YNODE_SCALAR && depth >= KUBECONFIG_DEPTH_MAX) {
                                r = kc_fail(p, -E2BIG, "line %zu, column %zu: nested deeper than %u levels",
                                            ev.start_mark.line + 1, ev.start_mark.column + 1,
                                            KUBECONFIG_DEPTH_MAX);
                                break;
                        }

                        YNode *added = n;
                        if (parent) {
                                r = ynode_append(parent, n);
                                if (r < 0)
                                        break;
                                TAKE_PTR(n);
                        } else {
                                assert(!root);
                                root = TAKE_PTR(n);
                        }
                        if (added->type != YNODE_SCALAR)
                                stack[depth++] = added;
                        break;
                }

                case YAML_SEQUENCE_END_EVENT:
                case YAML_MAPPING_END_EVENT:
                        assert(depth > 0);
                        depth--;
                        break;

                default:
                        break;
                }
                yaml_event_delete(&ev);
        }

        /* libyaml's buffers hold (a window of) the text, which may contain keys. */
        if (parser.raw_buffer.start)
                explicit_bzero(parser.raw_buffer.start,
                               (size_t) (parser.raw_buffer.end - parser.raw_buffer.start));
        if (parser.buffer.start)
                explicit_bzero(parser.buffer.start, (size_t) (parser.buffer.end - parser.buffer.start));
        yaml_parser_delete(&parser);

        if (r < 0)
                return r;
        *ret = TAKE_PTR(root);
        return 0;
}

/* ---- Typed access ------------------------------------------------------------------------------ */

/* A string member: 1 and *ret when set and non-empty (empty counts as absent, as client-go's len()
 * checks do), 0 and NULL when absent, null or empty. where names the mapping for messages ("" for the
 * top level). */
static int kc_get_string(KubeconfigParser *p, const YNode *m, const char *where, const char *key,
                         const char **ret) {
        const YNode *n = ynode_get(m, key);

        *ret = NULL;
        if (!n)
                return 0;
        if (n->type != YNODE_SCALAR)
                return kc_fail(p, -EINVAL, "%s%s%s: expected a string", where, *where ? "." : "", key);
        if (strlen(n->value) != n->length)
                return kc_fail(p, -EINVAL, "%s%s%s: contains a NUL byte", where, *where ? "." : "", key);
        if (n->length == 0)
                return 0;
        *ret = n->value;
        return 1;
}

/* A boolean member as yaml.v2 (YAML 1.1) resolves plain scalars; absent or null is false. */
static int kc_get_bool(KubeconfigParser *p, const YNode *m, const char *where, const char *key, bool *ret) {
        static const char *const yes[] = { "y",    "Y",    "yes", "Yes", "YES", "true",
                                           "True", "TRUE", "on",  "On",  "ON" };
        static const char *const no[] = { "n",     "N",     "no",  "No",  "NO", "false",
                                          "False", "FALSE", "off", "Off", "OFF" };
        const YNode *n = ynode_get(m, key);

        if (!n) {
                *ret = false;
                return 0;
        }
        if (n->type == YNODE_SCALAR && ((n->plain && n->tag == YTAG_NONE) || n->tag == YTAG_BOOL)) {
                for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                        if (streq(n->value, yes[i])) {
                                *ret = true;
                                return 0;
                        }
                for (size_t i = 0; i < ELEMENTSOF(no); i++)
                        if (streq(n->value, no[i])) {
                                *ret = false;
                                return 0;
                        }
        }
        if (n->type == YNODE_SCALAR)
                return kc_fail(p, -EINVAL, "%s.%s: expected true or false, not '%.64s'", where, key,
                               n->value);
        return kc_fail(p, -EINVAL, "%s.%s: expected true or false", where, key);
}

static bool has_control_chars(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f)
                        return true;
        return false;
}

/* The entry of list_key (clusters, users, contexts) named name: returns 1 with its inner mapping
 * (item_key; NULL when empty) and index, 0 when there is none. A name used twice is an error. */
static int kc_find_named(KubeconfigParser *p, const YNode *root, const char *list_key, const char *item_key,
                         const char *name, const YNode **ret_inner, size_t *ret_index) {
        const YNode *list = ynode_get(root, list_key), *found = NULL;
        size_t index = 0;
        int r;

        if (!list)
                return 0;
        if (list->type != YNODE_SEQUENCE)
                return kc_fail(p, -EINVAL, "%s: expected a list", list_key);

        for (size_t i = 0; i < list->n_children; i++) {
                const YNode *item = list->children[i];
                char where[64];
                const char *n;

                if (ynode_is_null(item))
                        continue;
                snprintf(where, sizeof(where), "%s[%zu]", list_key, i);
                if (item->type != YNODE_MAPPING)
                        return kc_fail(p, -EINVAL, "%s: expected a mapping", where);
                r = kc_get_string(p, item, where, "name", &n);
                if (r < 0)
                        return r;
                if (!streq(strempty(n), name))
                        continue;
                if (found)
                        return kc_fail(p, -EINVAL, "%s: %s name '%.128s' is used twice", where, item_key,
                                       name);
                found = item;
                index = i;
        }
        if (!found)
                return 0;

        const YNode *inner = ynode_get(found, item_key);
        if (inner && inner->type != YNODE_MAPPING)
                return kc_fail(p, -EINVAL, "%s[%zu].%s: expected a mapping", list_key, index, item_key);
        *ret_inner = inner;
        *ret_index = index;
        return 1;
}

/* ---- Files named by the kubeconfig ------------------------------------------------------------- */

static int kc_resolve_path(KubeconfigParser *p, const char *ref, char **ret) {
        char *s;

        if (ref[0] == '/')
                s = strdup(ref);
        else {
                if (!p->dir) {
                        const char *slash = strrchr(p->path, '/');
                        _cleanup_free_ char *d = NULL, *cwd = NULL;

                        if (!slash)
                                d = strdup(".");
                        else if (slash == p->path)
                                d = strdup("/");
                        else
                                d = strndup(p->path, (size_t) (slash - p->path));
                        if (!d)
                                return -ENOMEM;
                        if (d[0] != '/') {
                                cwd = getcwd(NULL, 0);
                                if (!cwd)
                                        return kc_fail(p, -errno, "cannot resolve '%.256s': %m", ref);
                                if (streq(d, "."))
                                        p->dir = TAKE_PTR(cwd);
                                else if (asprintf(&p->dir, "%s/%s", streq(cwd, "/") ? "" : cwd, d) < 0) {
                                        p->dir = NULL;
                                        return -ENOMEM;
                                }
                        } else
                                p->dir = TAKE_PTR(d);
                }
                if (asprintf(&s, "%s/%s", streq(p->dir, "/") ? "" : p->dir, ref) < 0)
                        s = NULL;
        }
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

typedef enum PemKind {
        PEM_CERTIFICATE,
        PEM_PRIVATE_KEY,
} PemKind;

static bool pem_looks_right(const Blob *b, PemKind kind) {
        if (kind == PEM_CERTIFICATE)
                return memmem(b->data, b->size, "-----BEGIN CERTIFICATE-----", 27);
        return memmem(b->data, b->size, "-----BEGIN ", 11) &&
               memmem(b->data, b->size, "PRIVATE KEY-----", 16);
}

/* Reads a PEM given inline (data_key: base64, or raw PEM) or as a file (file_key), whichever is set.
 * Returns 1 with *ret (and the resolved file in *ret_file if that was used and ret_file is non-NULL),
 * 0 when neither is set. */
static int kc_load_pem(KubeconfigParser *p, const YNode *m, const char *where, const char *data_key,
                       const char *file_key, PemKind kind, const char *same_file, const Blob *same_blob,
                       Blob *ret, char **ret_file) {
        _cleanup_(blob_done) Blob b = {};
        _cleanup_free_ char *file = NULL;
        const char *data, *ref;
        int r;

        r = kc_get_string(p, m, where, data_key, &data);
        if (r < 0)
                return r;
        r = kc_get_string(p, m, where, file_key, &ref);
        if (r < 0)
                return r;
        if (data && ref)
                return kc_fail(p, -EINVAL, "%s: %s and %s are both set", where, data_key, file_key);

        if (data) {
                size_t len = strlen(data);

                if (memmem(data, len, "-----BEGIN", 10))
                        r = blob_copy(&b, data, len);
                else {
                        void *d;
                        size_t n;

                        r = base64_decode(data, len, &d, &n);
                        if (r == -EINVAL)
                                return kc_fail(p, r, "%s.%s: invalid base64", where, data_key);
                        if (r >= 0)
                                b = (Blob){ d, n };
                }
                if (r < 0)
                        return r;
                if (b.size == 0)
                        return 0; /* decodes to nothing: as if absent */
                if (!pem_looks_right(&b, kind))
                        return kc_fail(p, -EINVAL, "%s.%s: no %s PEM block found", where, data_key,
                                       kind == PEM_CERTIFICATE ? "CERTIFICATE" : "PRIVATE KEY");
        } else if (ref) {
                r = kc_resolve_path(p, ref, &file);
                if (r < 0)
                        return r;
                if (same_file && same_blob && streq(file, same_file))
                        /* The same file for certificate and key (the kubelet's rotated PEM): read it once,
                         * so that a rotation between two reads cannot pair a key with another certificate.
                         */
                        r = blob_copy(&b, same_blob->data, same_blob->size);
                else
                        r = read_file_bounded(file, KUBECONFIG_FILE_MAX, &b);
                if (r < 0)
                        return kc_file_fail(p, r, file_key, file);
                if (!pem_looks_right(&b, kind))
                        return kc_fail(p, -EINVAL, "%s '%.256s': no %s PEM block found", file_key, file,
                                       kind == PEM_CERTIFICATE ? "CERTIFICATE" : "PRIVATE KEY");
        } else
                return 0;

        *ret = b;
        b = (Blob){};
        if (ret_file)
                *ret_file = TAKE_PTR(file);
        return 1;
}

/* A token read from a file: surrounding whitespace removed (as client-go's file token source does),
 * not empty, no control characters. */
static int token_from_blob(const Blob *b, char **ret) {
        const char *s = b->data, *e = b->data + b->size;
        char *t;

        while (s < e && strchr(" \t\r\n\v\f", *s) && *s)
                s++;
        while (e > s && strchr(" \t\r\n\v\f", e[-1]) && e[-1])
                e--;
        if (s == e)
                return -ENODATA;
        if (has_control_chars(s, (size_t) (e - s)))
                return -EBADMSG;
        t = strndup(s, (size_t) (e - s));
        if (!t)
                return -ENOMEM;
        *ret = t;
        return 0;
}

/* ---- The walk ---------------------------------------------------------------------------------- */

static bool namespace_is_valid(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
                        return false;
        return true;
}

static int kc_check_url(KubeconfigParser *p, const char *where, const char *key, const char *url,
                        const char *const *schemes) {
        const char *rest = NULL;

        if (has_control_chars(url, strlen(url)) || strchr(url, ' '))
                return kc_fail(p, -EINVAL, "%s.%s: '%.256s' contains whitespace or control characters",
                               where, key, url);
        for (size_t i = 0; schemes[i] && !rest; i++)
                rest = startswith(url, schemes[i]);
        if (!rest || *rest == '\0' || *rest == '/')
                return kc_fail(p, -EINVAL, "%s.%s: '%.256s' is not a %s URL", where, key, url,
                               schemes[1] ? "https:// or http://" : "https://");
        return 0;
}

static int kc_cluster(KubeconfigParser *p, const YNode *root, const char *name, KubeCredentials *c) {
        static const char *const server_schemes[] = { "https://", "http://", NULL };
        static const char *const proxy_schemes[] = { "https://", "http://", "socks5://", NULL };
        const YNode *cluster = NULL;
        const char *server, *s;
        char where[64];
        size_t index = 0;
        Blob ca = {};
        int r;

        r = kc_find_named(p, root, "clusters", "cluster", name, &cluster, &index);
        if (r < 0)
                return r;
        if (r == 0)
                return kc_fail(p, -EINVAL, "cluster '%.128s' of context '%.128s' not found", name,
                               c->context);
        snprintf(where, sizeof(where), "clusters[%zu].cluster", index);

        r = kc_get_string(p, cluster, where, "server", &server);
        if (r < 0)
                return r;
        if (r == 0)
                return kc_fail(p, -EINVAL, "cluster '%.128s' has no server", name);
        r = kc_check_url(p, where, "server", server, server_schemes);
        if (r < 0)
                return r;
        c->server = strdup(server);
        if (!c->server)
                return -ENOMEM;
        for (size_t n = strlen(c->server); n > 0 && c->server[n - 1] == '/'; n--)
                c->server[n - 1] = '\0';

        r = kc_get_string(p, cluster, where, "tls-server-name", &s);
        if (r < 0)
                return r;
        if (s) {
                if (has_control_chars(s, strlen(s)))
                        return kc_fail(p, -EINVAL, "%s.tls-server-name: contains control characters", where);
                c->tls_server_name = strdup(s);
                if (!c->tls_server_name)
                        return -ENOMEM;
        }

        r = kc_get_string(p, cluster, where, "proxy-url", &s);
        if (r < 0)
                return r;
        if (s) {
                r = kc_check_url(p, where, "proxy-url", s, proxy_schemes);
                if (r < 0)
                        return r;
                c->proxy_url = strdup(s);
                if (!c->proxy_url)
                        return -ENOMEM;
        }

        r = kc_get_bool(p, cluster, where, "insecure-skip-tls-verify", &c->insecure_skip_tls_verify);
        if (r < 0)
                return r;

        r = kc_load_pem(p, cluster, where, "certificate-authority-data", "certificate-authority",
                        PEM_CERTIFICATE, NULL, NULL, &ca, NULL);
        if (r < 0)
                return r;
        if (r > 0) {
                c->ca = ca.data;
                c->ca_size = ca.size;
                if (c->insecure_skip_tls_verify)
                        return kc_fail(p, -EINVAL,
                                       "cluster '%.128s': a certificate authority together with "
                                       "insecure-skip-tls-verify is not allowed",
                                       name);
        }
        return 0;
}

static int kc_user(KubeconfigParser *p, const YNode *root, const char *name, KubeCredentials *c) {
        static const struct {
                const char *key;
                const char *what;
        } unsupported[] = {
                { "exec",
                  "exec credential plugins are not supported (yet); use a client certificate or a token" },
                { "auth-provider",
                  "auth-provider plugins are not supported; use a client certificate or a token" },
                { "username", "basic authentication (username/password) is not supported" },
                { "password", "basic authentication (username/password) is not supported" },
                { "as", "impersonation (as) is not supported" },
                { "as-uid", "impersonation (as-uid) is not supported" },
                { "as-groups", "impersonation (as-groups) is not supported" },
                { "as-user-extra", "impersonation (as-user-extra) is not supported" },
        };
        _cleanup_(blob_done) Blob cert = {}, key = {};
        _cleanup_free_ char *cert_file = NULL;
        const YNode *user = NULL;
        const char *token, *token_file;
        char where[64];
        size_t index = 0;
        int r, has_cert, has_key;

        r = kc_find_named(p, root, "users", "user", name, &user, &index);
        if (r < 0)
                return r;
        if (r == 0)
                return kc_fail(p, -EINVAL, "user '%.128s' of context '%.128s' not found", name, c->context);
        snprintf(where, sizeof(where), "users[%zu].user", index);

        for (size_t i = 0; i < ELEMENTSOF(unsupported); i++)
                if (ynode_get(user, unsupported[i].key))
                        return kc_fail(p, -EOPNOTSUPP, "user '%.128s': %s", name, unsupported[i].what);

        has_cert = kc_load_pem(p, user, where, "client-certificate-data", "client-certificate",
                               PEM_CERTIFICATE, NULL, NULL, &cert, &cert_file);
        if (has_cert < 0)
                return has_cert;
        has_key = kc_load_pem(p, user, where, "client-key-data", "client-key", PEM_PRIVATE_KEY, cert_file,
                              &cert, &key, NULL);
        if (has_key < 0)
                return has_key;
        if (has_cert && !has_key)
                return kc_fail(p, -EINVAL, "user '%.128s' has a client certificate but no client key", name);
        if (has_key && !has_cert)
                return kc_fail(p, -EINVAL, "user '%.128s' has a client key but no client certificate", name);
        if (has_cert) {
                c->client_cert = TAKE_PTR(cert.data);
                c->client_cert_size = cert.size;
                c->client_key = TAKE_PTR(key.data);
                c->client_key_size = key.size;
        }

        r = kc_get_string(p, user, where, "token", &token);
        if (r < 0)
                return r;
        r = kc_get_string(p, user, where, "tokenFile", &token_file);
        if (r < 0)
                return r;
        if (token) {
                /* Token wins; tokenFile is then ignored (clientcmd/api/v1 types.go). */
                if (has_control_chars(token, strlen(token)))
                        return kc_fail(p, -EINVAL, "%s.token: contains control characters", where);
                c->token = strdup(token);
                if (!c->token)
                        return -ENOMEM;
        } else if (token_file) {
                _cleanup_(blob_done) Blob b = {};
                _cleanup_free_ char *file = NULL;

                r = kc_resolve_path(p, token_file, &file);
                if (r < 0)
                        return r;
                r = read_file_bounded(file, KUBECONFIG_FILE_MAX, &b);
                if (r < 0)
                        return kc_file_fail(p, r, "tokenFile", file);
                r = token_from_blob(&b, &c->token);
                if (r == -ENODATA)
                        return kc_fail(p, -EINVAL, "tokenFile '%.256s': the file is empty", file);
                if (r == -EBADMSG)
                        return kc_fail(p, -EINVAL, "tokenFile '%.256s': contains control characters", file);
                if (r < 0)
                        return r;
                c->token_file = TAKE_PTR(file);
        }
        return 0;
}

static int kc_walk(KubeconfigParser *p, const YNode *root, const char *context, KubeCredentials *c) {
        const YNode *ctx = NULL;
        const char *s, *cluster, *user, *ns;
        char where[64];
        size_t index = 0;
        int r;

        if (!root || ynode_is_null(root))
                return kc_fail(p, -EINVAL, "the kubeconfig is empty");
        if (root->type != YNODE_MAPPING)
                return kc_fail(p, -EINVAL, "expected a mapping at the top level");

        r = kc_get_string(p, root, "", "kind", &s);
        if (r < 0)
                return r;
        if (s && !streq(s, "Config"))
                return kc_fail(p, -EINVAL, "kind is '%.64s', expected 'Config'", s);
        r = kc_get_string(p, root, "", "apiVersion", &s);
        if (r < 0)
                return r;
        if (s && !streq(s, "v1"))
                return kc_fail(p, -EINVAL, "apiVersion is '%.64s', expected 'v1'", s);

        if (isempty(context)) {
                r = kc_get_string(p, root, "", "current-context", &context);
                if (r < 0)
                        return r;
                if (r == 0)
                        return kc_fail(p, -EINVAL, "current-context is not set and no context was given");
        }
        c->context = strdup(context);
        if (!c->context)
                return -ENOMEM;

        r = kc_find_named(p, root, "contexts", "context", context, &ctx, &index);
        if (r < 0)
                return r;
        if (r == 0)
                return kc_fail(p, -EINVAL, "context '%.128s' not found", context);
        snprintf(where, sizeof(where), "contexts[%zu].context", index);

        r = kc_get_string(p, ctx, where, "cluster", &cluster);
        if (r < 0)
                return r;
        if (r == 0)
                return kc_fail(p, -EINVAL, "context '%.128s' has no cluster", context);
        r = kc_get_string(p, ctx, where, "user", &user);
        if (r < 0)
                return r;
        if (r == 0)
                return kc_fail(p, -EINVAL, "context '%.128s' has no user", context);
        r = kc_get_string(p, ctx, where, "namespace", &ns);
        if (r < 0)
                return r;
        if (ns) {
                if (!namespace_is_valid(ns))
                        return kc_fail(p, -EINVAL, "context '%.128s': namespace '%.128s' is not a DNS label",
                                       context, ns);
                c->namespace = strdup(ns);
                if (!c->namespace)
                        return -ENOMEM;
        }

        r = kc_cluster(p, root, cluster, c);
        if (r < 0)
                return r;
        return kc_user(p, root, user, c);
}

/* ---- Public interface -------------------------------------------------------------------------- */

KubeCredentials *kube_credentials_free(KubeCredentials *c) {
        if (!c)
                return NULL;
        free(c->server);
        free(c->tls_server_name);
        free(c->proxy_url);
        free(c->ca);
        erase_and_free(c->client_cert, c->client_cert ? c->client_cert_size + 1 : 0);
        erase_and_free(c->client_key, c->client_key ? c->client_key_size + 1 : 0);
        erase_and_free_string(c->token);
        free(c->token_file);
        free(c->namespace);
        free(c->context);
        free(c->path);
        free(c);
        return NULL;
}

static int kc_finish(KubeconfigParser *p, int r, KubeCredentials **c, KubeCredentials **ret,
                     char **ret_error) {
        if (r >= 0) {
                *ret = TAKE_PTR(*c);
                free(p->error);
        } else if (ret_error) {
                if (!p->error && r != -ENOMEM)
                        (void) kc_fail(p, r, "%m");
                *ret_error = p->error;
        } else
                free(p->error);
        free(p->dir);
        return r;
}

static int kc_parse(KubeconfigParser *p, const char *text, size_t len, const char *context,
                    KubeCredentials *c) {
        _cleanup_(ynode_freep) YNode *root = NULL;
        int r;

        if (len > KUBECONFIG_FILE_MAX)
                return kc_fail(p, -EFBIG, "file is larger than 1 MiB");
        r = kc_build_tree(p, text, len, &root);
        if (r < 0)
                return r;
        return kc_walk(p, root, context, c);
}

int kubeconfig_parse(const char *path, const char *text, size_t len, const char *context,
                     KubeCredentials **ret, char **ret_error) {
        _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;
        KubeconfigParser p = { .path = path };
        int r;

        assert(path);
        assert(text || len == 0);
        assert(ret);

        c = calloc(1, sizeof(KubeCredentials));
        if (!c)
                return kc_finish(&p, -ENOMEM, &c, ret, ret_error);
        c->path = strdup(path);
        if (!c->path)
                return kc_finish(&p, -ENOMEM, &c, ret, ret_error);

        r = kc_parse(&p, text ?: "", len, context, c);
        return kc_finish(&p, r, &c, ret, ret_error);
}

int kubeconfig_load(const char *path, const char *context, KubeCredentials **ret, char **ret_error) {
        _cleanup_(blob_done) Blob text = {};
        int r;

        assert(path);
        assert(ret);

        r = read_file_bounded(path, KUBECONFIG_FILE_MAX, &text);
        if (r < 0) {
                KubeconfigParser p = { .path = path };

                if (r == -EFBIG)
                        (void) kc_fail(&p, r, "file is larger than 1 MiB");
                else if (r == -EBADFD)
                        (void) kc_fail(&p, r, "not a regular file");
                return kc_finish(&p, r, &(KubeCredentials *){ NULL }, ret, ret_error);
        }
        return kubeconfig_parse(path, text.data, text.size, context, ret, ret_error);
}

int kube_credentials_reload_token(KubeCredentials *c) {
        _cleanup_(blob_done) Blob b = {};
        _cleanup_(erase_and_free_stringp) char *t = NULL;
        int r;

        assert(c);

        if (!c->token_file)
                return 0;
        r = read_file_bounded(c->token_file, KUBECONFIG_FILE_MAX, &b);
        if (r < 0)
                return r;
        r = token_from_blob(&b, &t);
        if (r < 0)
                return r;
        if (streq_ptr(c->token, t))
                return 0;
        erase_and_free_string(c->token);
        c->token = TAKE_PTR(t);
        return 1;
}
