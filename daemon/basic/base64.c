/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "macro.h"

static const char base64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* 0…63 for an alphabet character, -1 otherwise. */
static int base64_value(char c) {
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

static bool base64_is_space(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void base64_wipe_and_free(uint8_t *buf, size_t size) {
        if (!buf)
                return;
        explicit_bzero(buf, size);
        free(buf);
}

int base64_decode(const char *s, size_t len, void **ret, size_t *ret_size) {
        uint8_t *buf = NULL;
        size_t n = 0, allocated;
        unsigned quantum[4], k = 0, padding = 0;

        assert(s || len == 0);
        assert(ret);
        assert(ret_size);

        /* Every 4 input characters give at most 3 bytes; one more for the terminating NUL. */
        allocated = len / 4 * 3 + 3 + 1;
        buf = malloc(allocated);
        if (!buf)
                return -ENOMEM;

        for (size_t i = 0; i < len; i++) {
                char c = s[i];
                int v;

                if (base64_is_space(c))
                        continue;
                if (k == 4 && padding == 0) {
                        /* The previous quantum was complete and had no padding. */
                        buf[n++] = (uint8_t) (quantum[0] << 2 | quantum[1] >> 4);
                        buf[n++] = (uint8_t) ((quantum[1] & 0xf) << 4 | quantum[2] >> 2);
                        buf[n++] = (uint8_t) ((quantum[2] & 0x3) << 6 | quantum[3]);
                        k = 0;
                }
                if (padding > 0) {
                        /* Inside the padding only more '=' may come, and only as many as the
                         * quantum still needs. */
                        if (c != '=' || k == 4)
                                goto invalid;
                        quantum[k++] = 0;
                        padding++;
                        continue;
                }
                if (c == '=') {
                        /* Padding may only stand for the third and fourth characters. */
                        if (k < 2)
                                goto invalid;
                        quantum[k++] = 0;
                        padding = 1;
                        continue;
                }
                v = base64_value(c);
                if (v < 0)
                        goto invalid;
                quantum[k++] = (unsigned) v;
        }

        if (k != 0 && k != 4)
                goto invalid; /* a truncated quantum: padding is required */
        if (k == 4) {
                buf[n++] = (uint8_t) (quantum[0] << 2 | quantum[1] >> 4);
                if (padding < 2)
                        buf[n++] = (uint8_t) ((quantum[1] & 0xf) << 4 | quantum[2] >> 2);
                if (padding < 1)
                        buf[n++] = (uint8_t) ((quantum[2] & 0x3) << 6 | quantum[3]);
        }
        assert(n < allocated);
        buf[n] = 0;

        *ret = buf;
        *ret_size = n;
        return 0;

invalid:
        base64_wipe_and_free(buf, allocated);
        return -EINVAL;
}

int base64_encode(const void *p, size_t size, char **ret) {
        const uint8_t *in = p;
        size_t n = 0;
        char *s;

        assert(p || size == 0);
        assert(ret);

        if (size > (size_t) INT_MAX / 4 * 3 - 3)
                return -ENOMEM;
        s = malloc(DIV_ROUND_UP(size, 3) * 4 + 1);
        if (!s)
                return -ENOMEM;

        for (size_t i = 0; i < size; i += 3) {
                unsigned a = in[i], b = i + 1 < size ? in[i + 1] : 0, c = i + 2 < size ? in[i + 2] : 0;

                s[n++] = base64_alphabet[a >> 2];
                s[n++] = base64_alphabet[(a & 0x3) << 4 | b >> 4];
                s[n++] = i + 1 < size ? base64_alphabet[(b & 0xf) << 2 | c >> 6] : '=';
                s[n++] = i + 2 < size ? base64_alphabet[c & 0x3f] : '=';
        }
        s[n] = '\0';

        *ret = s;
        return (int) n;
}
