/* SPDX-License-Identifier: Apache-2.0 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic/fileio.h"
#include "basic/macro.h"
#include "basic/string-util.h"
#include "log/log.h"
#include "stream/copy-checkpoint.h"

#define HEADER "# hwameid copy checkpoint\n"

static bool valid_name(const char *s) {
        if (!s || !*s || strlen(s) > 4096)
                return false;
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || *s == 0x7f)
                        return false;
        return true;
}

int copy_checkpoint_save(const char *path, const CopyCheckpoint *c, const char *source,
                         const char *destination) {
        _cleanup_free_ char *text = NULL;
        char hex[2 * COPY_HASH_STATE_MAX + 1];
        int n;

        if (!valid_name(source) || !valid_name(destination) || c->hash_state_size > COPY_HASH_STATE_MAX ||
            c->offset > c->size)
                return -EINVAL;
        for (size_t i = 0; i < c->hash_state_size; i++)
                sprintf(hex + 2 * i, "%02x", c->hash_state[i]);
        hex[2 * c->hash_state_size] = 0;

        n = asprintf(&text,
                     HEADER "version=%d\nsource=%s\ndestination=%s\nsize=%" PRIu64 "\noffset=%" PRIu64
                            "\nsent=%" PRIu64 "\nskipped=%" PRIu64 "\nunchanged=%" PRIu64
                            "\nhash-version=%" PRIu32 "\nhash-state=%s\n",
                     COPY_CHECKPOINT_VERSION, source, destination, c->size, c->offset, c->sent, c->skipped,
                     c->unchanged, c->hash_version, hex);
        if (n < 0)
                return -ENOMEM;
        return write_file_atomic(path, text, (size_t) n, 0600);
}

static int parse_hex(const char *s, CopyCheckpoint *c) {
        size_t n = strlen(s);

        if (n % 2 != 0 || n / 2 > COPY_HASH_STATE_MAX)
                return -EBADMSG;
        for (size_t i = 0; i < n / 2; i++) {
                int hi = unhexchar(s[2 * i]), lo = unhexchar(s[2 * i + 1]);
                if (hi < 0 || lo < 0)
                        return -EBADMSG;
                c->hash_state[i] = (uint8_t) (hi << 4 | lo);
        }
        c->hash_state_size = (uint32_t) (n / 2);
        return 0;
}

int copy_checkpoint_load(const char *path, CopyCheckpoint *ret, char **ret_source, char **ret_destination) {
        _cleanup_free_ char *text = NULL, *source = NULL, *destination = NULL;
        CopyCheckpoint c = {};
        unsigned seen = 0, line = 0;
        uint64_t version = 0, hash_version = 0;
        char *p, *next;
        int r;

        r = read_file_bounded(path, COPY_CHECKPOINT_FILE_MAX, &text, NULL);
        if (r < 0)
                return r;

        for (p = text; p && *p; p = next) {
                static const char *const keys[] = { "version",      "source",    "destination", "size",
                                                    "offset",       "sent",      "skipped",     "unchanged",
                                                    "hash-version", "hash-state" };
                char *eq, *value;
                size_t k;

                line++;
                next = strchr(p, '\n');
                if (!next)
                        return log_debug_errno(SYNTHETIC_ERRNO(EBADMSG), "%s:%u: truncated line.", path,
                                               line);
                *next++ = 0;
                if (*p == '#' || *p == 0)
                        continue;
                eq = strchr(p, '=');
                if (!eq)
                        return log_debug_errno(SYNTHETIC_ERRNO(EBADMSG), "%s:%u: expected KEY=VALUE.", path,
                                               line);
                *eq = 0;
                value = eq + 1;
                for (k = 0; k < ELEMENTSOF(keys); k++)
                        if (streq(p, keys[k]))
                                break;
                if (k == ELEMENTSOF(keys))
                        return log_debug_errno(SYNTHETIC_ERRNO(EBADMSG), "%s:%u: unknown key '%s'.", path,
                                               line, p);
                if (seen & (1U << k))
                        return log_debug_errno(SYNTHETIC_ERRNO(EBADMSG), "%s:%u: '%s' given twice.", path,
                                               line, p);
                seen |= 1U << k;

                switch (k) {
                case 1:
                case 2:
                        if (!valid_name(value))
                                return log_debug_errno(SYNTHETIC_ERRNO(EBADMSG), "%s:%u: bad %s.", path,
                                                       line, p);
                        if (free_and_strdup(k == 1 ? &source : &destination, value) < 0)
                                return -ENOMEM;
                        break;
                case 9:
                        if (parse_hex(value, &c) < 0)
                                return log_debug_errno(SYNTHETIC_ERRNO(EBADMSG), "%s:%u: bad hash-state.",
                                                       path, line);
                        break;
                default: {
                        uint64_t *const fields[] = {
                                [0] = &version,   [3] = &c.size,      [4] = &c.offset,    [5] = &c.sent,
                                [6] = &c.skipped, [7] = &c.unchanged, [8] = &hash_version
                        };
                        if (safe_atou64(value, fields[k]) < 0)
                                return log_debug_errno(SYNTHETIC_ERRNO(EBADMSG), "%s:%u: bad number for %s.",
                                                       path, line, p);
                }
                }
        }
        if (seen != (1U << 10) - 1)
                return log_debug_errno(SYNTHETIC_ERRNO(EBADMSG), "%s: keys are missing.", path);
        if (version != COPY_CHECKPOINT_VERSION)
                return log_debug_errno(SYNTHETIC_ERRNO(EPROTONOSUPPORT),
                                       "%s: version %" PRIu64 " is not %d.", path, version,
                                       COPY_CHECKPOINT_VERSION);
        if (c.offset > c.size || hash_version > UINT32_MAX || c.sent > c.offset || c.skipped > c.offset ||
            c.unchanged > c.offset)
                return log_debug_errno(SYNTHETIC_ERRNO(EBADMSG), "%s: inconsistent figures.", path);
        c.hash_version = (uint32_t) hash_version;

        *ret = c;
        if (ret_source)
                *ret_source = TAKE_PTR(source);
        if (ret_destination)
                *ret_destination = TAKE_PTR(destination);
        return 0;
}
