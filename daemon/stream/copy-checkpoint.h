/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Copy checkpoints on disk: the resume point of an interrupted copy (CopyCheckpoint, copy.h) with
 * the names of what was being copied, so that a resume cannot continue a different copy.
 *
 * The file is text, one KEY=VALUE per line, written to a temporary file in the same directory,
 * fsync()ed and renamed over the old one (then the directory is fsync()ed): after a crash the file
 * holds the old checkpoint or the new one, never a mix. Mode 0600: it names the copy's endpoints.
 *
 *   # hwameid copy checkpoint
 *   version=1
 *   source=/dev/LocalStorage_PoolHDD/pvc-1
 *   destination=nbds://pvc-1@10.0.0.2/pvc-1
 *   size=2147483648
 *   offset=1073741824
 *   sent=104857600
 *   skipped=968884224
 *   unchanged=0
 *   hash-version=801
 *   hash-state=<hex>
 *
 * Unknown keys are an error (a newer writer), as is anything malformed: a checkpoint is only
 * ever used when it is understood completely.
 */

#include "stream/copy.h"

#define COPY_CHECKPOINT_VERSION  1
#define COPY_CHECKPOINT_FILE_MAX (16U * 1024U)

int copy_checkpoint_save(const char *path, const CopyCheckpoint *c, const char *source,
                         const char *destination);

/*
 * Reads path into *ret, with the names it was written with (to be freed). -ENOENT when there is no
 * such file, -EBADMSG (with a debug message naming the line) when it is malformed, -EFBIG over
 * COPY_CHECKPOINT_FILE_MAX, -EPROTONOSUPPORT for another version.
 */
int copy_checkpoint_load(const char *path, CopyCheckpoint *ret, char **ret_source, char **ret_destination);
