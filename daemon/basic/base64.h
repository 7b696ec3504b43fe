/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Base64 with the standard alphabet (RFC 4648 §4), decoding as Go's encoding/base64 StdEncoding does,
 * because that is what reads the *-data fields of a kubeconfig:
 *
 *   - padding is required: after whitespace is removed the length is a multiple of 4, and '=' only
 *     appears as the last one or two characters;
 *   - nothing may follow the padding but whitespace;
 *   - non-zero bits left over in the last character are tolerated (Go's non-strict mode).
 *
 * Unlike Go, which skips only '\r' and '\n', space and tab are skipped as well, so that base64 folded
 * by YAML into a multi-line scalar still decodes.
 */

#include <stddef.h>

/* Decodes len bytes of s (NUL bytes are invalid characters). On success *ret is a new buffer holding
 * *ret_size bytes followed by a NUL byte that is not counted, so text stays a C string; empty input
 * gives an empty buffer. Returns 0, -EINVAL on malformed input or -ENOMEM. Partial output is wiped
 * before it is freed on failure, since it may be key material. */
int base64_decode(const char *s, size_t len, void **ret, size_t *ret_size);

/* Encodes size bytes of p with padding and no line breaks into a new NUL-terminated string. Returns
 * the string's length or -ENOMEM. */
int base64_encode(const void *p, size_t size, char **ret);
