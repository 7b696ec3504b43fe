/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/*
 * Replaces path with data: written to "path.tmp" (mode, O_NOFOLLOW), fsync()ed, renamed over
 * path, and the directory fsync()ed, so that after a crash path holds the old contents or the new,
 * never a mix. The temporary file is removed on failure.
 */
int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode);

/* Reads a whole regular file of at most max bytes into a NUL-terminated buffer; -EFBIG beyond. */
int read_file_bounded(const char *path, size_t max, char **ret, size_t *ret_len);
