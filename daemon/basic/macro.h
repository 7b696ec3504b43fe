/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Scope-bound cleanup, ownership transfer and a few small helpers, after systemd's
 * cleanup-fundamental.h and nbdkit's common/utils/cleanup.h. libsystemd does not export these.
 */

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f)       __attribute__((cleanup(f)))
#define _unused_           __attribute__((unused))
#define _printf_(a, b)     __attribute__((format(printf, a, b)))

#define ELEMENTSOF(x)      (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b)          ((a) < (b) ? (a) : (b))
#define MAX(a, b)          ((a) > (b) ? (a) : (b))
#define CLAMP(x, lo, hi)   MIN(MAX((x), (lo)), (hi))
#define DIV_ROUND_UP(x, y) (((x) + (y) -1) / (y))
#define ROUND_UP(x, y)     (DIV_ROUND_UP(x, y) * (y))

/* Hand a value out of a _cleanup_ scope: returns it and resets the variable to its empty value. */
#define TAKE_GENERIC(var, type, nullvalue)                                                                  \
        ({                                                                                                  \
                type *_pvar_ = &(var);                                                                      \
                type _var_ = *_pvar_;                                                                       \
                *_pvar_ = (nullvalue);                                                                      \
                _var_;                                                                                      \
        })
#define TAKE_PTR(p) TAKE_GENERIC(p, __typeof__(p), NULL)
#define TAKE_FD(fd) TAKE_GENERIC(fd, int, -EBADF)

/* Generates "static inline void fp(T *p)" calling f(*p) when *p is non-NULL. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                             \
        static inline void func##p(type *p) {                                                               \
                if (*p)                                                                                     \
                        (void) func(*p);                                                                    \
        }

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

/* Frees each element of a NULL-terminated array and then the array. */
static inline void strv_freep(char ***p) {
        if (!*p)
                return;
        for (char **s = *p; *s; s++)
                free(*s);
        free(*p);
}
#define _cleanup_strv_free_ _cleanup_(strv_freep)

/* Returns -EBADF so that "fd = safe_close(fd)" leaves an invalid fd behind. errno is kept. */
static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void) close(fd);
                errno = saved;
        }
        return -EBADF;
}
static inline void closep(int *fd) {
        *fd = safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

/* libc calls that return -1 and set errno become -errno. */
#define RET_NERRNO(expr)                                                                                    \
        ({                                                                                                  \
                __typeof__(expr) _r_ = (expr);                                                              \
                _r_ < 0 ? -errno : _r_;                                                                     \
        })

/* Marks an errno value that did not come from a failing syscall (for log_*_errno()). */
#define SYNTHETIC_ERRNO(e) (-(e))

/* errno as a negative value, never 0 (for paths where errno "should" be set). */
static inline int negative_errno(void) {
        return errno > 0 ? -errno : -EIO;
}

/*
 * "NAME_to_string(value)" for an enum whose names sit in TABLE (indexed by value): the name, or
 * NULL for a value out of range.
 */
#define DEFINE_STRING_TABLE_TO_STRING(name, type, table)                                                    \
        const char *name##_to_string(type v) {                                                              \
                if ((long long) v < 0 || (size_t) v >= ELEMENTSOF(table))                                   \
                        return NULL;                                                                        \
                return table[v];                                                                            \
        }

/* A NULL-terminated array literal of strings. */
#define STRV_MAKE(...) ((char *[]){ __VA_ARGS__, NULL })

#define SWAP(a, b)                                                                                          \
        do {                                                                                                \
                __typeof__(a) _t_ = (a);                                                                    \
                (a) = (b);                                                                                  \
                (b) = _t_;                                                                                  \
        } while (0)

/* free() that returns NULL, for "p = mfree(p)". */
static inline void *mfree(void *p) {
        free(p);
        return NULL;
}
