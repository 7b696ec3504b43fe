/* SPDX-License-Identifier: Apache-2.0 */

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "basic/macro.h"
#include "basic/string-util.h"
#include "log/log.h"
#include "volume/blockio.h"

/* Unaligned direct I/O and written zeroes go through buffers of at most this size. */
#define BOUNCE_MAX (1024U * 1024U)
/* Bounce buffers are aligned to this, which satisfies every alignment accepted below. */
#define BOUNCE_ALIGN       4096U
#define ALIGNMENT_MIN      512U
#define ALIGNMENT_MAX      65536U
#define BLOCKDEV_FILES_MAX 1024U

typedef struct BlockFile {
        char *path;
        int fd;
        bool block; /* a block device (else a regular file) */
        bool direct;
        size_t align; /* what O_DIRECT needs (offset, length and memory), 1 when buffered */
        uint64_t size;
} BlockFile;

typedef struct BlockSeg {
        size_t file;     /* index into files */
        uint64_t start;  /* logical offset */
        uint64_t offset; /* offset in the file */
        uint64_t length;
} BlockSeg;

struct BlockDev {
        BlockFile *files;
        size_t n_files;
        BlockSeg *segs;
        size_t n_segs;
        uint64_t size;
        bool read_only;
};

static bool is_power_of_2(uint64_t x) {
        return x > 0 && (x & (x - 1)) == 0;
}

static void block_file_done(BlockFile *f) {
        free(f->path);
        f->path = NULL;
        f->fd = safe_close(f->fd);
}

BlockDev *blockdev_close(BlockDev *b) {
        if (!b)
                return NULL;
        for (size_t i = 0; i < b->n_files; i++)
                block_file_done(&b->files[i]);
        free(b->files);
        free(b->segs);
        return mfree(b);
}

/* Stops using O_DIRECT on this file (regular files whose layout does not allow it). */
static int block_file_set_buffered(BlockFile *f) {
        int fl;

        if (!f->direct)
                return 0;
        fl = fcntl(f->fd, F_GETFL);
        if (fl < 0)
                return -errno;
        if (fcntl(f->fd, F_SETFL, fl & ~O_DIRECT) < 0)
                return -errno;
        f->direct = false;
        f->align = 1;
        return 0;
}

static int block_file_open(const char *path, bool read_only, BlockFile *ret) {
        _cleanup_free_ char *p = NULL;
        _cleanup_close_ int fd = -EBADF;
        int flags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY;
        bool direct = true;
        BlockFile f;
        uint64_t size;
        size_t align;
        struct stat st;
        int r;

        p = strdup(path);
        if (!p)
                return -ENOMEM;

        fd = open(path, flags | O_DIRECT);
        if (fd < 0 && errno == EINVAL) {
                /* The filesystem does not do direct I/O (ramfs, some FUSE filesystems). */
                log_debug("%s refuses O_DIRECT, using buffered I/O.", path);
                direct = false;
                fd = open(path, flags);
        }
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;

        if (S_ISBLK(st.st_mode)) {
                int ssz = 0;

                if (ioctl(fd, BLKGETSIZE64, &size) < 0)
                        return -errno;
                if (ioctl(fd, BLKSSZGET, &ssz) < 0)
                        return -errno;
                if (ssz < (int) ALIGNMENT_MIN || ssz > (int) ALIGNMENT_MAX || !is_power_of_2(ssz))
                        return -EBADMSG;
                align = (size_t) ssz;
        } else if (S_ISREG(st.st_mode)) {
                size = (uint64_t) st.st_size;
                /* st_blksize is at least the filesystem's block size, which direct I/O accepts. */
                if (st.st_blksize >= (blksize_t) ALIGNMENT_MIN &&
                    st.st_blksize <= (blksize_t) ALIGNMENT_MAX && is_power_of_2(st.st_blksize))
                        align = (size_t) st.st_blksize;
                else
                        align = BOUNCE_ALIGN;
        } else
                return -ENOTBLK;

        if (size > INT64_MAX)
                return -EFBIG;

        f = (BlockFile){
                .path = TAKE_PTR(p),
                .fd = TAKE_FD(fd),
                .block = S_ISBLK(st.st_mode),
                .direct = direct,
                .align = direct ? align : 1,
                .size = size,
        };

        /* The last block of a file whose size is not a multiple of it cannot be written directly. */
        if (f.direct && !f.block && f.size % f.align != 0) {
                r = block_file_set_buffered(&f);
                if (r < 0) {
                        block_file_done(&f);
                        return r;
                }
        }
        *ret = f;
        return 0;
}

/* Adds path to the files of b unless it is there already; returns its index. */
static int blockdev_add_file(BlockDev *b, const char *path, size_t *ret_index) {
        BlockFile *a;
        int r;

        for (size_t i = 0; i < b->n_files; i++)
                if (streq(b->files[i].path, path)) {
                        *ret_index = i;
                        return 0;
                }
        if (b->n_files >= BLOCKDEV_FILES_MAX)
                return -E2BIG;

        a = reallocarray(b->files, b->n_files + 1, sizeof(BlockFile));
        if (!a)
                return -ENOMEM;
        b->files = a;
        r = block_file_open(path, b->read_only, &b->files[b->n_files]);
        if (r < 0)
                return r;
        *ret_index = b->n_files++;
        return 0;
}

int blockdev_open_extents(const BlockExtent *extents, size_t n, unsigned flags, BlockDev **ret) {
        _cleanup_(blockdev_closep) BlockDev *b = NULL;
        uint64_t total = 0;
        int r;

        assert(extents || n == 0);
        assert(ret);

        if (n == 0 || (flags & ~BLOCKDEV_READ_ONLY) != 0)
                return -EINVAL;

        b = calloc(1, sizeof(BlockDev));
        if (!b)
                return -ENOMEM;
        b->read_only = flags & BLOCKDEV_READ_ONLY;
        b->segs = calloc(n, sizeof(BlockSeg));
        if (!b->segs)
                return -ENOMEM;

        for (size_t i = 0; i < n; i++) {
                const BlockExtent *e = &extents[i];
                BlockFile *f;
                size_t fi;

                if (isempty(e->path) || e->length == 0)
                        return -EINVAL;
                r = blockdev_add_file(b, e->path, &fi);
                if (r < 0)
                        return r;
                f = &b->files[fi];
                if (e->offset > f->size || e->length > f->size - e->offset)
                        return -EINVAL;
                if (e->length > INT64_MAX - total)
                        return -EFBIG;

                /* Unaligned extents cannot be reached with direct I/O without touching their
                 * neighbours: refused on devices, buffered I/O on files. */
                if (f->direct && ((e->offset | e->length) & (f->align - 1)) != 0) {
                        if (f->block)
                                return -EINVAL;
                        r = block_file_set_buffered(f);
                        if (r < 0)
                                return r;
                }

                b->segs[i] = (BlockSeg){
                        .file = fi,
                        .start = total,
                        .offset = e->offset,
                        .length = e->length,
                };
                total += e->length;
        }
        b->n_segs = n;
        b->size = total;

        *ret = TAKE_PTR(b);
        return 0;
}

int blockdev_open(const char *path, unsigned flags, BlockDev **ret) {
        _cleanup_(blockdev_closep) BlockDev *b = NULL;
        size_t fi;
        int r;

        assert(path);
        assert(ret);

        if ((flags & ~BLOCKDEV_READ_ONLY) != 0)
                return -EINVAL;

        b = calloc(1, sizeof(BlockDev));
        if (!b)
                return -ENOMEM;
        b->read_only = flags & BLOCKDEV_READ_ONLY;
        r = blockdev_add_file(b, path, &fi);
        if (r < 0)
                return r;

        b->size = b->files[fi].size;
        if (b->size > 0) {
                b->segs = calloc(1, sizeof(BlockSeg));
                if (!b->segs)
                        return -ENOMEM;
                b->segs[0] = (BlockSeg){ .file = fi, .start = 0, .offset = 0, .length = b->size };
                b->n_segs = 1;
        }

        *ret = TAKE_PTR(b);
        return 0;
}

uint64_t blockdev_size(const BlockDev *b) {
        assert(b);
        return b->size;
}

size_t blockdev_alignment(const BlockDev *b) {
        size_t a = 1;

        assert(b);
        for (size_t i = 0; i < b->n_files; i++)
                a = MAX(a, b->files[i].align);
        return a;
}

bool blockdev_direct(const BlockDev *b) {
        assert(b);
        for (size_t i = 0; i < b->n_files; i++)
                if (!b->files[i].direct)
                        return false;
        return b->n_files > 0;
}

bool blockdev_on_devices(const BlockDev *b) {
        assert(b);
        for (size_t i = 0; i < b->n_files; i++)
                if (b->files[i].block)
                        return true;
        return false;
}

static int check_range(const BlockDev *b, uint64_t offset, uint64_t len) {
        if (offset > b->size || len > b->size - offset)
                return -EINVAL;
        return 0;
}

/* Whole transfers, restarted after EINTR and partial transfers. An early end of file is -EIO. */
static int raw_io(int fd, bool write, void *buf, size_t len, uint64_t offset) {
        uint8_t *p = buf;

        while (len > 0) {
                ssize_t k;

                if (write)
                        k = pwrite(fd, p, len, (off_t) offset);
                else
                        k = pread(fd, p, len, (off_t) offset);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EIO;
                p += k;
                len -= (size_t) k;
                offset += (uint64_t) k;
        }
        return 0;
}

static void *bounce_alloc(size_t size) {
        void *p = NULL;

        if (posix_memalign(&p, BOUNCE_ALIGN, size) != 0)
                return NULL;
        return p;
}

/*
 * One transfer within one file. Direct I/O that is not aligned (buffer, offset or length) goes
 * through a bounce buffer covering the aligned blocks; the partial blocks at either end of a
 * write are read first. Two unaligned writes that share a block must not run concurrently.
 */
static int file_io(const BlockFile *f, bool write, void *buf, size_t len, uint64_t offset) {
        _cleanup_free_ uint8_t *bounce = NULL;
        uint8_t *p = buf;
        size_t a = f->align, bsize;
        int r;

        if (!f->direct || (((uintptr_t) buf | len | offset) & (a - 1)) == 0)
                return raw_io(f->fd, write, buf, len, offset);

        bsize = (size_t) MIN((uint64_t) BOUNCE_MAX, ROUND_UP((offset & (a - 1)) + (uint64_t) len, a));
        bounce = bounce_alloc(bsize);
        if (!bounce)
                return -ENOMEM;

        while (len > 0) {
                uint64_t base = offset & ~((uint64_t) a - 1);
                size_t head = (size_t) (offset - base);
                size_t n = MIN(len, bsize - head);
                size_t span = ROUND_UP(head + n, a);

                if (!write) {
                        r = raw_io(f->fd, false, bounce, span, base);
                        if (r < 0)
                                return r;
                        memcpy(p, bounce + head, n);
                } else {
                        if (head != 0) {
                                r = raw_io(f->fd, false, bounce, a, base);
                                if (r < 0)
                                        return r;
                        }
                        if ((head + n) % a != 0 && (head == 0 || span > a)) {
                                r = raw_io(f->fd, false, bounce + span - a, a, base + span - a);
                                if (r < 0)
                                        return r;
                        }
                        memcpy(bounce + head, p, n);
                        r = raw_io(f->fd, true, bounce, span, base);
                        if (r < 0)
                                return r;
                }

                p += n;
                len -= n;
                offset += n;
        }
        return 0;
}

/* The segment that holds logical offset (which is < b->size). */
static size_t find_seg(const BlockDev *b, uint64_t offset) {
        size_t lo = 0, hi = b->n_segs;

        while (hi - lo > 1) {
                size_t mid = lo + (hi - lo) / 2;

                if (b->segs[mid].start <= offset)
                        lo = mid;
                else
                        hi = mid;
        }
        return lo;
}

static int blockdev_io(BlockDev *b, bool write, void *buf, size_t len, uint64_t offset) {
        uint8_t *p = buf;
        int r;

        assert(b);
        assert(buf || len == 0);

        if (write && b->read_only)
                return -EBADF;
        r = check_range(b, offset, len);
        if (r < 0)
                return r;

        for (size_t i = len > 0 ? find_seg(b, offset) : 0; len > 0; i++) {
                const BlockSeg *s = &b->segs[i];
                uint64_t in = offset - s->start;
                size_t n = (size_t) MIN((uint64_t) len, s->length - in);

                r = file_io(&b->files[s->file], write, p, n, s->offset + in);
                if (r < 0)
                        return r;
                p += n;
                len -= n;
                offset += n;
        }
        return 0;
}

int blockdev_pread(BlockDev *b, void *buf, size_t len, uint64_t offset) {
        return blockdev_io(b, false, buf, len, offset);
}

int blockdev_pwrite(BlockDev *b, const void *buf, size_t len, uint64_t offset) {
        return blockdev_io(b, true, (void *) buf, len, offset);
}

int blockdev_flush(BlockDev *b) {
        assert(b);

        for (size_t i = 0; i < b->n_files; i++)
                if (fdatasync(b->files[i].fd) < 0)
                        return -errno;
        return 0;
}

static int file_write_zero_buffers(const BlockFile *f, uint64_t offset, uint64_t len) {
        _cleanup_free_ uint8_t *zeroes = NULL;
        size_t size = (size_t) MIN(len, (uint64_t) BOUNCE_MAX);
        int r;

        size = ROUND_UP(size, BOUNCE_ALIGN);
        zeroes = bounce_alloc(size);
        if (!zeroes)
                return -ENOMEM;
        memset(zeroes, 0, size);

        while (len > 0) {
                size_t n = (size_t) MIN(len, (uint64_t) size);

                r = file_io(f, true, zeroes, n, offset);
                if (r < 0)
                        return r;
                offset += n;
                len -= n;
        }
        return 0;
}

static bool errno_unsupported(int r) {
        return r == -EOPNOTSUPP || r == -ENOTTY || r == -ENOSYS || r == -EINVAL;
}

/*
 * The part of [offset, offset+len) that is aligned to the device's logical blocks goes to op; the
 * partial blocks at either end, and everything when op is not supported, get written zeroes.
 */
static int device_zero_range(const BlockFile *f, uint64_t offset, uint64_t len,
                             int (*op)(const BlockFile *f, uint64_t offset, uint64_t len)) {
        uint64_t a = f->align > 1 ? f->align : ALIGNMENT_MIN;
        uint64_t start = ROUND_UP(offset, a), end = (offset + len) & ~(a - 1);
        int r;

        if (start >= end)
                return file_write_zero_buffers(f, offset, len);

        r = op(f, start, end - start);
        if (r < 0) {
                if (!errno_unsupported(r))
                        return r;
                log_debug_errno(r, "Zeroing %s with its own operation failed, writing zeroes: %m", f->path);
                return file_write_zero_buffers(f, offset, len);
        }
        if (start > offset) {
                r = file_write_zero_buffers(f, offset, start - offset);
                if (r < 0)
                        return r;
        }
        if (offset + len > end) {
                r = file_write_zero_buffers(f, end, offset + len - end);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int device_zeroout(const BlockFile *f, uint64_t offset, uint64_t len) {
        uint64_t range[2] = { offset, len };

        return RET_NERRNO(ioctl(f->fd, BLKZEROOUT, range));
}

/*
 * fallocate(PUNCH_HOLE) on a block device deallocates where the device guarantees zeroes on later
 * reads (REQ_OP_WRITE_ZEROES with unmapping allowed: loop devices punch a hole in their file, NVMe
 * deallocates, SCSI uses WRITE SAME with UNMAP) and fails with EOPNOTSUPP elsewhere. BLKDISCARD
 * cannot be used: it leaves the contents unspecified.
 */
static int device_punch(const BlockFile *f, uint64_t offset, uint64_t len) {
        int r;

        r = RET_NERRNO(
                fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) offset, (off_t) len));
        if (errno_unsupported(r))
                r = device_zeroout(f, offset, len);
        return r;
}

static int file_zero(const BlockFile *f, bool deallocate, uint64_t offset, uint64_t len) {
        int r;

        if (len == 0)
                return 0;

        if (f->block)
                return device_zero_range(f, offset, len, deallocate ? device_punch : device_zeroout);

        r = RET_NERRNO(fallocate(
                f->fd, (deallocate ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE) | FALLOC_FL_KEEP_SIZE,
                (off_t) offset, (off_t) len));
        if (r >= 0)
                return 0;
        if (r != -EOPNOTSUPP && r != -ENOSYS)
                return r;
        log_debug_errno(r, "fallocate() on %s not supported, writing zeroes: %m", f->path);
        return file_write_zero_buffers(f, offset, len);
}

static int blockdev_zero(BlockDev *b, bool deallocate, uint64_t offset, uint64_t len) {
        int r;

        assert(b);

        if (b->read_only)
                return -EBADF;
        r = check_range(b, offset, len);
        if (r < 0)
                return r;

        for (size_t i = len > 0 ? find_seg(b, offset) : 0; len > 0; i++) {
                const BlockSeg *s = &b->segs[i];
                uint64_t in = offset - s->start;
                uint64_t n = MIN(len, s->length - in);

                r = file_zero(&b->files[s->file], deallocate, s->offset + in, n);
                if (r < 0)
                        return r;
                len -= n;
                offset += n;
        }
        return 0;
}

int blockdev_discard(BlockDev *b, uint64_t offset, uint64_t len) {
        return blockdev_zero(b, true, offset, len);
}

int blockdev_write_zeroes(BlockDev *b, uint64_t offset, uint64_t len) {
        return blockdev_zero(b, false, offset, len);
}

/*
 * The first data at or after logical offset in segment s, as a logical range clipped to the
 * segment: 1 and the range, or 0 when the rest of the segment is a hole.
 */
static int seg_next_data(const BlockDev *b, const BlockSeg *s, uint64_t offset, uint64_t *ret_start,
                         uint64_t *ret_end) {
        const BlockFile *f = &b->files[s->file];
        uint64_t phys = s->offset + (offset - s->start), phys_end = s->offset + s->length;
        off_t d, h;

        if (f->block) {
                *ret_start = offset;
                *ret_end = s->start + s->length;
                return 1;
        }

        d = lseek(f->fd, (off_t) phys, SEEK_DATA);
        if (d < 0)
                return errno == ENXIO ? 0 : -errno;
        if ((uint64_t) d >= phys_end)
                return 0;
        h = lseek(f->fd, d, SEEK_HOLE);
        if (h < 0)
                return -errno;
        if ((uint64_t) h <= (uint64_t) d)
                return -EIO;

        *ret_start = s->start + ((uint64_t) d - s->offset);
        *ret_end = s->start + (MIN((uint64_t) h, phys_end) - s->offset);
        return 1;
}

int blockdev_next_data(BlockDev *b, uint64_t offset, uint64_t *ret_start, uint64_t *ret_end) {
        uint64_t start = 0, end = 0;
        size_t i;
        int r;

        assert(b);
        assert(ret_start);
        assert(ret_end);

        if (offset >= b->size)
                return -ENXIO;

        /* The first data range... */
        for (i = find_seg(b, offset); i < b->n_segs; i++) {
                const BlockSeg *s = &b->segs[i];

                r = seg_next_data(b, s, MAX(offset, s->start), &start, &end);
                if (r < 0)
                        return r;
                if (r > 0)
                        break;
        }
        if (i >= b->n_segs)
                return -ENXIO;

        /* ...continued into the following segments while they start with data. */
        for (i++; i < b->n_segs && end == b->segs[i].start; i++) {
                uint64_t s2, e2;

                r = seg_next_data(b, &b->segs[i], b->segs[i].start, &s2, &e2);
                if (r < 0)
                        return r;
                if (r == 0 || s2 != end)
                        break;
                end = e2;
        }

        *ret_start = start;
        *ret_end = end;
        return 0;
}
