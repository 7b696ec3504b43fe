/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Reading and writing a replica's data, whatever holds it: a block device (an active LV), a
 * sparse file (the file backend), or a list of extents on other devices (an inactive LV reached
 * through its physical extents on its PVs, on hosts without device-mapper). The block stream
 * uses this to export and to push replicas.
 *
 * Devices are opened with O_DIRECT where the kernel allows it (the page cache would double the
 * memory a copy uses and hide I/O errors until much later); unaligned requests go through an
 * aligned bounce buffer. Every fd is O_CLOEXEC.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "../basic/macro.h"

typedef struct BlockDev BlockDev;

/* A piece of the logical volume: length bytes at offset of the file or device at path. */
typedef struct BlockExtent {
        const char *path;
        uint64_t offset, length;
} BlockExtent;

#define BLOCKDEV_READ_ONLY 0x1

/*
 * A file or block device as a whole. O_DIRECT is tried first; a filesystem that refuses it
 * (EINVAL: ramfs, some FUSE filesystems) gets buffered I/O, and so does a regular file whose size
 * is not a multiple of its block size. Flags other than BLOCKDEV_READ_ONLY are -EINVAL; anything
 * but a regular file or a block device is -ENOTBLK.
 */
int blockdev_open(const char *path, unsigned flags, BlockDev **ret);
/*
 * The concatenation of extents, in order (each path opened once, however many extents). Each
 * extent must be non-empty and lie within its file or device (-EINVAL). Extents on a device must
 * be aligned to its logical block size (-EINVAL); a file with unaligned extents is read and
 * written buffered.
 */
int blockdev_open_extents(const BlockExtent *extents, size_t n, unsigned flags, BlockDev **ret);
BlockDev *blockdev_close(BlockDev *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(BlockDev *, blockdev_close);

uint64_t blockdev_size(const BlockDev *b);
/* The alignment O_DIRECT needs here (logical block size; st_blksize for files; the largest of
 * them over extents), 1 when buffered. Requests aligned to it (buffer, offset, length) go straight
 * to the kernel. */
size_t blockdev_alignment(const BlockDev *b);
/* True when every underlying file or device is accessed with O_DIRECT. */
bool blockdev_direct(const BlockDev *b);
/* Whether any part lies on a block device (zeroing may then write zeroes instead of punching). */
bool blockdev_on_devices(const BlockDev *b);

/*
 * Whole transfers or an error: short reads past the end are -EINVAL (offset + len > size). Writes,
 * discards and zeroing on a BlockDev opened BLOCKDEV_READ_ONLY are -EBADF (what the kernel says
 * for a write to a read-only fd). Calls may run concurrently from several threads, except that
 * two unaligned direct writes touching the same logical block must not overlap in time (each
 * reads, patches and writes back the whole block).
 */
int blockdev_pread(BlockDev *b, void *buf, size_t len, uint64_t offset);
int blockdev_pwrite(BlockDev *b, const void *buf, size_t len, uint64_t offset);
/* Makes written data durable (fdatasync on each underlying fd). */
int blockdev_flush(BlockDev *b);
/*
 * Deallocates where possible, else writes zeroes: reads return zeroes afterwards either way.
 * Files: fallocate(PUNCH_HOLE). Devices: fallocate(PUNCH_HOLE) on the device (the kernel unmaps
 * only where the device guarantees zeroes: a loop device punches a hole in its file), else
 * BLKZEROOUT, else written zeroes; BLKDISCARD is not used because it leaves the data unspecified.
 * Partial logical blocks at either end of the range on a device are written as zeroes.
 * blockdev_write_zeroes() keeps the space allocated: files fallocate(ZERO_RANGE), devices
 * BLKZEROOUT, each falling back to writing zeroes.
 */
int blockdev_discard(BlockDev *b, uint64_t offset, uint64_t len);
int blockdev_write_zeroes(BlockDev *b, uint64_t offset, uint64_t len);

/*
 * Allocation map, for sparse copies: from offset, the next range that holds data, as
 * [*ret_start, *ret_end). Files use SEEK_DATA/SEEK_HOLE; devices report everything as data
 * (zero detection is the copier's job); extents over files are looked up per extent and
 * mapped back to logical offsets, and adjacent data in consecutive extents is one range. Returns 0,
 * or -ENXIO when no data follows offset (and at or past the end).
 */
int blockdev_next_data(BlockDev *b, uint64_t offset, uint64_t *ret_start, uint64_t *ret_end);
