/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "macro.h"
#include "string-util.h"

char *startswith(const char *s, const char *prefix) {
        size_t n = strlen(prefix);

        if (strncmp(s, prefix, n) != 0)
                return NULL;
        return (char *) s + n;
}

bool endswith(const char *s, const char *suffix) {
        size_t a = strlen(s), b = strlen(suffix);

        return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

char *strstrip(char *s) {
        char *e;

        while (isspace((unsigned char) *s))
                s++;
        e = s + strlen(s);
        while (e > s && isspace((unsigned char) e[-1]))
                e--;
        *e = '\0';
        return s;
}

int free_and_strdup(char **p, const char *s) {
        char *t = NULL;

        assert(p);
        if (streq_ptr(*p, s))
                return 0;
        if (s) {
                t = strdup(s);
                if (!t)
                        return -ENOMEM;
        }
        free(*p);
        *p = t;
        return 1;
}

int parse_boolean(const char *s) {
        static const char *const yes[] = { "1", "yes", "y", "true", "t", "on" };
        static const char *const no[] = { "0", "no", "n", "false", "f", "off" };

        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (strcasecmp(s, yes[i]) == 0)
                        return 1;
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (strcasecmp(s, no[i]) == 0)
                        return 0;
        return -EINVAL;
}

int safe_atou64(const char *s, uint64_t *ret) {
        uint64_t v = 0;

        if (!s || !isdigit((unsigned char) *s))
                return -EINVAL;
        for (; *s; s++) {
                if (!isdigit((unsigned char) *s))
                        return -EINVAL;
                if (v > (UINT64_MAX - (uint64_t) (*s - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t) (*s - '0');
        }
        *ret = v;
        return 0;
}

int safe_atou(const char *s, unsigned *ret) {
        uint64_t v;
        int r;

        r = safe_atou64(s, &v);
        if (r < 0)
                return r;
        if (v > UINT32_MAX)
                return -ERANGE;
        *ret = (unsigned) v;
        return 0;
}

int parse_size(const char *s, uint64_t *ret) {
        static const struct {
                char c;
                unsigned shift;
        } suffixes[] = { { 'K', 10 }, { 'M', 20 }, { 'G', 30 }, { 'T', 40 }, { 'P', 50 } };
        uint64_t whole = 0, frac = 0, frac_div = 1, mult = 1;
        const char *p = s;

        if (!isdigit((unsigned char) *p))
                return -EINVAL;
        for (; isdigit((unsigned char) *p); p++) {
                if (whole > (UINT64_MAX - 9) / 10)
                        return -ERANGE;
                whole = whole * 10 + (uint64_t) (*p - '0');
        }
        if (*p == '.') {
                p++;
                if (!isdigit((unsigned char) *p))
                        return -EINVAL;
                for (; isdigit((unsigned char) *p); p++)
                        if (frac_div < 1000000000ULL) {
                                frac = frac * 10 + (uint64_t) (*p - '0');
                                frac_div *= 10;
                        }
        }
        if (*p) {
                size_t i;

                for (i = 0; i < ELEMENTSOF(suffixes); i++)
                        if (toupper((unsigned char) *p) == suffixes[i].c)
                                break;
                if (i < ELEMENTSOF(suffixes)) {
                        mult = UINT64_C(1) << suffixes[i].shift;
                        p++;
                        if (*p == 'i')
                                p++;
                }
                if (*p == 'B')
                        p++;
                if (*p)
                        return -EINVAL;
        }
        if (frac_div > 1 && mult == 1)
                return -EINVAL; /* "1.5" bytes makes no sense */
        if (whole > UINT64_MAX / mult)
                return -ERANGE;
        *ret = whole * mult + frac * mult / frac_div;
        return 0;
}

char *format_bytes(char *buf, size_t len, uint64_t bytes) {
        static const char units[] = "KMGTPE";
        int i = -1;
        uint64_t v = bytes;

        while (v >= 1024 && i < (int) sizeof(units) - 2) {
                v /= 1024;
                i++;
        }
        if (i < 0)
                snprintf(buf, len, "%lluB", (unsigned long long) bytes);
        else {
                uint64_t div = UINT64_C(1) << (10 * (i + 1));
                uint64_t tenths = (bytes % div) * 10 / div;
                if (tenths > 0 && v < 100)
                        snprintf(buf, len, "%llu.%llu%c", (unsigned long long) v,
                                 (unsigned long long) tenths, units[i]);
                else
                        snprintf(buf, len, "%llu%c", (unsigned long long) v, units[i]);
        }
        return buf;
}

size_t strv_length(char *const *l) {
        size_t n = 0;

        for (; l && l[n]; n++)
                ;
        return n;
}

int strv_extend(char ***l, const char *s) {
        size_t n = strv_length(*l);
        char *t, **c;

        t = strdup(s);
        if (!t)
                return -ENOMEM;
        c = realloc(*l, sizeof(char *) * (n + 2));
        if (!c) {
                free(t);
                return -ENOMEM;
        }
        c[n] = t;
        c[n + 1] = NULL;
        *l = c;
        return 0;
}

char **strv_free(char **l) {
        strv_freep(&l);
        return NULL;
}

int strv_split(const char *s, const char *separators, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;
        int r;

        l = calloc(1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        while (*s) {
                size_t n;

                s += strspn(s, separators);
                n = strcspn(s, separators);
                if (n == 0)
                        break;
                _cleanup_free_ char *w = strndup(s, n);
                if (!w)
                        return -ENOMEM;
                r = strv_extend(&l, w);
                if (r < 0)
                        return r;
                s += n;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

char **strv_copy(char *const *l) {
        _cleanup_strv_free_ char **c = NULL;

        c = calloc(strv_length(l) + 1, sizeof(char *));
        if (!c)
                return NULL;
        for (size_t i = 0; l && l[i]; i++) {
                c[i] = strdup(l[i]);
                if (!c[i])
                        return NULL;
        }
        return TAKE_PTR(c);
}

bool strv_equal(char *const *a, char *const *b) {
        size_t n = strv_length(a);

        if (n != strv_length(b))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!streq(a[i], b[i]))
                        return false;
        return true;
}

char *strv_join(char *const *l, const char *separator) {
        size_t n = 0, k = strlen(separator), off = 0;
        char *s;

        for (size_t i = 0; l && l[i]; i++)
                n += strlen(l[i]) + (i > 0 ? k : 0);
        s = malloc(n + 1);
        if (!s)
                return NULL;
        for (size_t i = 0; l && l[i]; i++) {
                if (i > 0) {
                        memcpy(s + off, separator, k);
                        off += k;
                }
                size_t m = strlen(l[i]);
                memcpy(s + off, l[i], m);
                off += m;
        }
        s[off] = '\0';
        return s;
}

bool strv_contains(char *const *l, const char *s) {
        for (size_t i = 0; l && l[i]; i++)
                if (streq(l[i], s))
                        return true;
        return false;
}
