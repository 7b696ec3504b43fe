/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}
static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return streq(a, b);
}
static inline bool isempty(const char *s) {
        return !s || !*s;
}
static inline const char *strempty(const char *s) {
        return s ?: "";
}
static inline const char *strna(const char *s) {
        return s ?: "n/a";
}

/* The value of one hexadecimal digit, or -1. */
static inline int unhexchar(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Returns a pointer past prefix in s, or NULL when s does not start with prefix. */
char *startswith(const char *s, const char *prefix);
bool endswith(const char *s, const char *suffix);

/* Strips leading and trailing whitespace in place; returns the start of the stripped string. */
char *strstrip(char *s);

/* Replaces *p with a copy of s (NULL allowed). Returns -ENOMEM or 0 (or 1 if the value changed). */
int free_and_strdup(char **p, const char *s);

/* yes/no/true/false/on/off/1/0, case-insensitive. Returns 0/1 or -EINVAL. */
int parse_boolean(const char *s);

/* Whole decimal numbers; no sign, no trailing junk. -EINVAL or -ERANGE on failure. */
int safe_atou64(const char *s, uint64_t *ret);
int safe_atou(const char *s, unsigned *ret);

/* "512", "4K", "16M", "1.5G", "2T" (base 1024, optional "B"/"iB" suffix) to bytes. */
int parse_size(const char *s, uint64_t *ret);

/* "1.5G", "512M": bytes formatted for people, base 1024. buf needs FORMAT_BYTES_MAX. */
#define FORMAT_BYTES_MAX 16
char *format_bytes(char *buf, size_t len, uint64_t bytes);
#define FORMAT_BYTES(b) format_bytes((char[FORMAT_BYTES_MAX]){}, FORMAT_BYTES_MAX, (b))

/* NULL-terminated string vectors. */
size_t strv_length(char *const *l);
/* Appends a copy of s; *l may be NULL. */
int strv_extend(char ***l, const char *s);
/* Splits s at any of the separator characters, dropping empty words. */
int strv_split(const char *s, const char *separators, char ***ret);
char **strv_free(char **l);
char **strv_copy(char *const *l);
bool strv_equal(char *const *a, char *const *b);
bool strv_contains(char *const *l, const char *s);
/* Joins with separator into a new string. */
char *strv_join(char *const *l, const char *separator);
