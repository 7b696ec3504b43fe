/* SPDX-License-Identifier: Apache-2.0 */
/*
 * volume/blockio: reads and writes on sparse files, loop devices and extents over both, with
 * direct I/O and bounce buffers, zeroing, allocation maps, read-only opens. The loop device tests
 * need root and losetup; without them they are skipped.
 */

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "basic/macro.h"
#include "basic/string-util.h"
#include "volume/blockio.h"

#define MiB       (UINT64_C(1024) * 1024)
#define FILE_SIZE (16 * MiB)
#define N_LOOPS   3

static char tmpdir[] = "/var/tmp/test-blockio.XXXXXX";
static char loops[N_LOOPS][64];
static char loop_files[N_LOOPS][256];
static bool have_loops;

/* xorshift64*: reproducible data for each seed. */
static void fill_random(void *buf, size_t len, uint64_t seed) {
        uint8_t *p = buf;
        uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;

        for (size_t i = 0; i < len; i++) {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                p[i] = (uint8_t) ((x * 0x2545F4914F6CDD1DULL) >> 56);
        }
}

static bool all_zero(const void *buf, size_t len) {
        const uint8_t *p = buf;

        for (size_t i = 0; i < len; i++)
                if (p[i] != 0)
                        return false;
        return true;
}

static void make_sparse(const char *path, uint64_t size) {
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, (off_t) size), 0);
        close(fd);
}

static char *path_in_tmp(const char *name) {
        char *p;

        assert_true(asprintf(&p, "%s/%s", tmpdir, name) > 0);
        return p;
}

/* Reads len bytes at offset of path with plain buffered I/O (the reference view). */
static void read_direct_from(const char *path, void *buf, size_t len, uint64_t offset) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        assert_true(fd >= 0);
        assert_int_equal(pread(fd, buf, len, (off_t) offset), (ssize_t) len);
        close(fd);
}

static int attach_loop(const char *file, char *ret, size_t size) {
        char cmd[512];
        FILE *p;
        int status;

        snprintf(cmd, sizeof(cmd), "losetup -f --show '%s' 2>/dev/null", file);
        p = popen(cmd, "re");
        if (!p)
                return -errno;
        if (!fgets(ret, (int) size, p)) {
                pclose(p);
                return -EIO;
        }
        status = pclose(p);
        ret[strcspn(ret, "\n")] = '\0';
        return status == 0 && startswith(ret, "/dev/loop") ? 0 : -EIO;
}

static void detach_loop(const char *dev) {
        char cmd[512];

        snprintf(cmd, sizeof(cmd), "losetup -d '%s' 2>/dev/null", dev);
        (void) !system(cmd);
}

static int setup(void **state) {
        if (!mkdtemp(tmpdir))
                return -1;
        if (geteuid() != 0)
                return 0;
        for (size_t i = 0; i < N_LOOPS; i++) {
                snprintf(loop_files[i], sizeof(loop_files[i]), "%s/loop%zu.img", tmpdir, i);
                make_sparse(loop_files[i], FILE_SIZE);
                if (attach_loop(loop_files[i], loops[i], sizeof(loops[i])) < 0) {
                        loops[i][0] = '\0';
                        return 0;
                }
        }
        have_loops = true;
        return 0;
}

static int teardown(void **state) {
        char cmd[512];

        snprintf(cmd, sizeof(cmd), "%s/ramfs", tmpdir);
        (void) umount2(cmd, MNT_DETACH);
        for (size_t i = 0; i < N_LOOPS; i++)
                if (loops[i][0])
                        detach_loop(loops[i]);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        (void) !system(cmd);
        return 0;
}

#define REQUIRE_LOOPS()                                                                                     \
        do {                                                                                                \
                if (!have_loops)                                                                            \
                        skip();                                                                             \
        } while (0)

/* Writes random data at a mix of aligned and unaligned places and reads each back, through the
 * BlockDev and, when given, through a reference path and offset. */
static void check_round_trips(BlockDev *b) {
        static const struct {
                uint64_t offset;
                size_t len;
                size_t buf_shift; /* misaligns the memory buffer */
        } cases[] = {
                { 0, 4096, 0 },              /* aligned */
                { 4096, 512, 0 },            /* one sector */
                { 65536, 3 * 65536, 0 },     /* large aligned */
                { 1, 1, 0 },                 /* one byte, unaligned */
                { 511, 2, 0 },               /* crosses a sector boundary */
                { 4095, 4098, 0 },           /* unaligned both ends, three blocks */
                { 8192, 4096, 1 },           /* aligned offset, misaligned buffer */
                { 12345, 1500000, 3 },       /* longer than one bounce buffer */
                { FILE_SIZE - 700, 700, 0 }, /* up to the end */
                { 3 * MiB + 100, 100, 0 },   /* inside a block, both ends partial */
        };
        uint8_t *buf, *back, *raw = NULL, *rawback = NULL;

        assert_int_equal(posix_memalign((void **) &raw, 4096, 2 * MiB), 0);
        assert_int_equal(posix_memalign((void **) &rawback, 4096, 2 * MiB), 0);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                buf = raw + cases[i].buf_shift;
                back = rawback + cases[i].buf_shift;
                fill_random(buf, cases[i].len, i + 1);
                assert_int_equal(blockdev_pwrite(b, buf, cases[i].len, cases[i].offset), 0);
                memset(back, 0xAA, cases[i].len);
                assert_int_equal(blockdev_pread(b, back, cases[i].len, cases[i].offset), 0);
                assert_memory_equal(buf, back, cases[i].len);
        }

        /* The read-modify-writes kept their neighbours: the first block is case 0 patched by
         * cases 3, 4 and 5. */
        fill_random(raw, 4096, 1);
        fill_random(rawback, 1, 4);
        raw[1] = rawback[0];
        fill_random(rawback, 2, 5);
        raw[511] = rawback[0];
        raw[512] = rawback[1];
        fill_random(rawback, 1, 6);
        raw[4095] = rawback[0];
        assert_int_equal(blockdev_pread(b, rawback, 4096, 0), 0);
        assert_memory_equal(raw, rawback, 4096);

        free(raw);
        free(rawback);
}

static void test_sparse_file_round_trips_aligned_and_unaligned(void **state) {
        _cleanup_free_ char *path = path_in_tmp("rt.img");
        _cleanup_(blockdev_closep) BlockDev *b = NULL;

        make_sparse(path, FILE_SIZE);
        assert_int_equal(blockdev_open(path, 0, &b), 0);
        assert_int_equal(blockdev_size(b), FILE_SIZE);
        /* /var/tmp is a disk filesystem here: direct I/O, aligned to the filesystem block. */
        if (blockdev_direct(b))
                assert_true(blockdev_alignment(b) >= 512);
        else
                assert_int_equal(blockdev_alignment(b), 1);
        check_round_trips(b);
        assert_int_equal(blockdev_flush(b), 0);
}

static void test_loop_device_round_trips_with_direct_io(void **state) {
        _cleanup_(blockdev_closep) BlockDev *b = NULL;
        uint8_t *ref, *got;

        REQUIRE_LOOPS();
        assert_int_equal(blockdev_open(loops[0], 0, &b), 0);
        assert_int_equal(blockdev_size(b), FILE_SIZE);
        assert_true(blockdev_direct(b));
        assert_int_equal(blockdev_alignment(b), 512);
        check_round_trips(b);
        assert_int_equal(blockdev_flush(b), 0);

        /* What the device holds is what its backing file holds. */
        ref = malloc(100000);
        got = malloc(100000);
        assert_non_null(ref);
        assert_non_null(got);
        assert_int_equal(blockdev_pread(b, ref, 100000, 4000), 0);
        read_direct_from(loop_files[0], got, 100000, 4000);
        assert_memory_equal(ref, got, 100000);
        free(ref);
        free(got);
}

static void test_requests_crossing_the_end_are_einval(void **state) {
        _cleanup_free_ char *path = path_in_tmp("end.img");
        _cleanup_(blockdev_closep) BlockDev *b = NULL;
        uint8_t buf[1024] = {};
        uint64_t s, e;

        make_sparse(path, MiB);
        assert_int_equal(blockdev_open(path, 0, &b), 0);
        assert_int_equal(blockdev_pread(b, buf, 2, MiB - 1), -EINVAL);
        assert_int_equal(blockdev_pwrite(b, buf, 1024, MiB - 512), -EINVAL);
        assert_int_equal(blockdev_pread(b, buf, 1, MiB), -EINVAL);
        assert_int_equal(blockdev_pread(b, buf, 1, UINT64_MAX), -EINVAL);
        assert_int_equal(blockdev_pread(b, buf, SIZE_MAX, 1), -EINVAL); /* no overflow */
        assert_int_equal(blockdev_discard(b, MiB - 1, 2), -EINVAL);
        assert_int_equal(blockdev_write_zeroes(b, UINT64_MAX, 2), -EINVAL);
        assert_int_equal(blockdev_next_data(b, MiB, &s, &e), -ENXIO);
        /* Exactly up to the end, and empty requests at the end, are fine. */
        assert_int_equal(blockdev_pwrite(b, buf, 1, MiB - 1), 0);
        assert_int_equal(blockdev_pread(b, buf, 0, MiB), 0);
}

/* Logical [0, 3 MiB) = A[1 MiB, 2 MiB) + B[4 MiB, 5 MiB) + A[8 MiB, 9 MiB). */
static void check_extents(const char *a, const char *b_path, const char *ref_a, const char *ref_b) {
        const BlockExtent ext[] = {
                { a, 1 * MiB, 1 * MiB },
                { b_path, 4 * MiB, 1 * MiB },
                { a, 8 * MiB, 1 * MiB },
        };
        _cleanup_(blockdev_closep) BlockDev *b = NULL;
        size_t len = MiB + 1000;
        uint64_t off = MiB - 500; /* crosses both boundaries, unaligned */
        uint8_t *buf, *back, *raw;

        assert_int_equal(blockdev_open_extents(ext, ELEMENTSOF(ext), 0, &b), 0);
        assert_int_equal(blockdev_size(b), 3 * MiB);

        buf = malloc(len);
        back = malloc(len);
        raw = malloc(len);
        assert_non_null(buf);
        assert_non_null(back);
        assert_non_null(raw);
        fill_random(buf, len, 42);
        assert_int_equal(blockdev_pwrite(b, buf, len, off), 0);
        assert_int_equal(blockdev_pread(b, back, len, off), 0);
        assert_memory_equal(buf, back, len);
        assert_int_equal(blockdev_flush(b), 0);

        /* The data is where the extents say: 500 bytes at the end of A's first extent, all of B's
         * extent, then the start of A's second extent. */
        read_direct_from(ref_a, raw, 500, 2 * MiB - 500);
        assert_memory_equal(raw, buf, 500);
        read_direct_from(ref_b, raw, MiB, 4 * MiB);
        assert_memory_equal(raw, buf + 500, MiB);
        read_direct_from(ref_a, raw, 500, 8 * MiB);
        assert_memory_equal(raw, buf + 500 + MiB, 500);
        /* Nothing outside the extents was touched. */
        read_direct_from(ref_a, raw, 4096, 2 * MiB);
        assert_true(all_zero(raw, 4096));
        read_direct_from(ref_b, raw, 4096, 5 * MiB);
        assert_true(all_zero(raw, 4096));
        read_direct_from(ref_b, raw, 4096, 4 * MiB - 4096);
        assert_true(all_zero(raw, 4096));

        /* Zeroing across a boundary reads back as zeroes and keeps the rest. */
        assert_int_equal(blockdev_discard(b, 2 * MiB - 3000, 5000), 0);
        assert_int_equal(blockdev_pread(b, back, 5000, 2 * MiB - 3000), 0);
        assert_true(all_zero(back, 5000));
        assert_int_equal(blockdev_write_zeroes(b, MiB - 100, 200), 0);
        assert_int_equal(blockdev_pread(b, back, 200, MiB - 100), 0);
        assert_true(all_zero(back, 200));
        assert_int_equal(blockdev_pread(b, back, 400, MiB - 500), 0);
        assert_memory_equal(back, buf, 400);

        free(buf);
        free(back);
        free(raw);
}

static void test_extents_over_two_loop_devices_land_at_physical_offsets(void **state) {
        REQUIRE_LOOPS();
        check_extents(loops[1], loops[2], loops[1], loops[2]);
}

static void test_extents_over_two_files_land_at_physical_offsets(void **state) {
        _cleanup_free_ char *a = path_in_tmp("ext-a.img"), *b = path_in_tmp("ext-b.img");

        make_sparse(a, FILE_SIZE);
        make_sparse(b, FILE_SIZE);
        check_extents(a, b, a, b);
}

static void test_extents_are_validated(void **state) {
        _cleanup_free_ char *a = path_in_tmp("val.img");
        BlockDev *b = NULL;

        make_sparse(a, MiB);
        assert_int_equal(blockdev_open_extents((BlockExtent[]){ { a, 0, 0 } }, 1, 0, &b), -EINVAL);
        assert_int_equal(blockdev_open_extents((BlockExtent[]){ { a, 0, MiB + 1 } }, 1, 0, &b), -EINVAL);
        assert_int_equal(blockdev_open_extents((BlockExtent[]){ { a, MiB, 1 } }, 1, 0, &b), -EINVAL);
        assert_int_equal(blockdev_open_extents((BlockExtent[]){ { a, UINT64_MAX, 2 } }, 1, 0, &b), -EINVAL);
        assert_int_equal(blockdev_open_extents((BlockExtent[]){ { a, 0, 512 }, { "", 0, 512 } }, 2, 0, &b),
                         -EINVAL);
        assert_int_equal(blockdev_open_extents(NULL, 0, 0, &b), -EINVAL);
        assert_int_equal(blockdev_open_extents((BlockExtent[]){ { "/nonexistent/x", 0, 1 } }, 1, 0, &b),
                         -ENOENT);
        assert_null(b);
        if (have_loops) /* unaligned extents on a device would need read-modify-write of neighbours */
                assert_int_equal(blockdev_open_extents((BlockExtent[]){ { loops[0], 100, 4096 } }, 1, 0, &b),
                                 -EINVAL);
        /* The same file twice is one fd; an unaligned extent on a file is served buffered. */
        assert_int_equal(blockdev_open_extents((BlockExtent[]){ { a, 0, 512 }, { a, 1000, 10 } }, 2, 0, &b),
                         0);
        assert_int_equal(blockdev_size(b), 522);
        assert_false(blockdev_direct(b));
        b = blockdev_close(b);
        assert_int_equal(blockdev_open("/dev/null", 0, &b), -ENOTBLK);
}

static void check_zeroing(BlockDev *b) {
        size_t len = 3 * 65536;
        uint8_t *buf = malloc(len), *back = malloc(len);

        assert_non_null(buf);
        assert_non_null(back);
        fill_random(buf, len, 7);
        assert_int_equal(blockdev_pwrite(b, buf, len, 0), 0);

        /* Aligned discard, unaligned discard, aligned and unaligned write_zeroes. */
        assert_int_equal(blockdev_discard(b, 0, 65536), 0);
        assert_int_equal(blockdev_discard(b, 65536 + 100, 1000), 0);
        assert_int_equal(blockdev_write_zeroes(b, 2 * 65536, 8192), 0);
        assert_int_equal(blockdev_write_zeroes(b, 2 * 65536 + 10000, 333), 0);
        assert_int_equal(blockdev_pread(b, back, len, 0), 0);

        assert_true(all_zero(back, 65536));
        assert_memory_equal(back + 65536, buf + 65536, 100);
        assert_true(all_zero(back + 65536 + 100, 1000));
        assert_memory_equal(back + 65536 + 1100, buf + 65536 + 1100, 65536 - 1100);
        assert_true(all_zero(back + 2 * 65536, 8192));
        assert_memory_equal(back + 2 * 65536 + 8192, buf + 2 * 65536 + 8192, 10000 - 8192);
        assert_true(all_zero(back + 2 * 65536 + 10000, 333));
        assert_memory_equal(back + 2 * 65536 + 10333, buf + 2 * 65536 + 10333, 65536 - 10333);
        free(buf);
        free(back);
}

static void test_discard_and_write_zeroes_read_back_zeroes_on_file(void **state) {
        _cleanup_free_ char *path = path_in_tmp("zero.img");
        _cleanup_(blockdev_closep) BlockDev *b = NULL;

        make_sparse(path, FILE_SIZE);
        assert_int_equal(blockdev_open(path, 0, &b), 0);
        check_zeroing(b);
}

static void test_discard_and_write_zeroes_read_back_zeroes_on_loop_device(void **state) {
        _cleanup_(blockdev_closep) BlockDev *b = NULL;
        struct stat st;

        REQUIRE_LOOPS();
        assert_int_equal(blockdev_open(loops[0], 0, &b), 0);
        check_zeroing(b);

        /* A whole-device discard deallocates the backing file. */
        assert_int_equal(blockdev_discard(b, 0, FILE_SIZE), 0);
        assert_int_equal(blockdev_flush(b), 0);
        assert_int_equal(stat(loop_files[0], &st), 0);
        assert_true((uint64_t) st.st_blocks * 512 < MiB);
}

static void test_next_data_lists_the_written_ranges_of_a_sparse_file(void **state) {
        _cleanup_free_ char *path = path_in_tmp("map.img");
        _cleanup_(blockdev_closep) BlockDev *b = NULL;
        static const uint64_t ranges[][2] = {
                { 64 * 1024, 128 * 1024 },
                { 1 * MiB, 1 * MiB + 4096 },
                { 5 * MiB, 7 * MiB },
                { FILE_SIZE - 8192, FILE_SIZE },
        };
        uint8_t *buf;
        uint64_t off = 0, s, e;
        size_t i = 0;

        make_sparse(path, FILE_SIZE);
        assert_int_equal(blockdev_open(path, 0, &b), 0);
        buf = malloc(2 * MiB);
        assert_non_null(buf);
        memset(buf, 0x5A, 2 * MiB);
        for (size_t j = 0; j < ELEMENTSOF(ranges); j++)
                assert_int_equal(blockdev_pwrite(b, buf, ranges[j][1] - ranges[j][0], ranges[j][0]), 0);
        free(buf);

        for (;;) {
                int r = blockdev_next_data(b, off, &s, &e);

                if (r == -ENXIO)
                        break;
                assert_int_equal(r, 0);
                assert_true(i < ELEMENTSOF(ranges));
                assert_int_equal(s, ranges[i][0]);
                assert_int_equal(e, ranges[i][1]);
                i++;
                off = e;
        }
        assert_int_equal(i, ELEMENTSOF(ranges));

        /* From the middle of a range: the rest of it. */
        assert_int_equal(blockdev_next_data(b, 5 * MiB + 100, &s, &e), 0);
        assert_int_equal(s, 5 * MiB + 100);
        assert_int_equal(e, 7 * MiB);

        /* A discarded range is a hole again. */
        assert_int_equal(blockdev_discard(b, 5 * MiB, 2 * MiB), 0);
        assert_int_equal(blockdev_next_data(b, 2 * MiB, &s, &e), 0);
        assert_int_equal(s, FILE_SIZE - 8192);
}

static void test_next_data_maps_extents_over_files_back_to_logical_offsets(void **state) {
        _cleanup_free_ char *a = path_in_tmp("map-a.img"), *c = path_in_tmp("map-c.img");
        _cleanup_(blockdev_closep) BlockDev *b = NULL, *fa = NULL;
        uint8_t buf[8192];
        uint64_t s, e;

        make_sparse(a, FILE_SIZE);
        make_sparse(c, FILE_SIZE);
        memset(buf, 1, sizeof(buf));

        /* Data in the files inside and outside the extents. */
        assert_int_equal(blockdev_open(a, 0, &fa), 0);
        assert_int_equal(blockdev_pwrite(fa, buf, 8192, 0), 0);              /* outside */
        assert_int_equal(blockdev_pwrite(fa, buf, 8192, 2 * MiB - 8192), 0); /* end of extent 0 */
        assert_int_equal(blockdev_pwrite(fa, buf, 4096, 9 * MiB + 4096), 0); /* in extent 2 */
        fa = blockdev_close(fa);
        assert_int_equal(blockdev_open(c, 0, &fa), 0);
        assert_int_equal(blockdev_pwrite(fa, buf, 8192, 4 * MiB), 0); /* start of extent 1 */
        fa = blockdev_close(fa);

        assert_int_equal(blockdev_open_extents((BlockExtent[]){ { a, 1 * MiB, 1 * MiB },
                                                                { c, 4 * MiB, 1 * MiB },
                                                                { a, 9 * MiB, 1 * MiB } },
                                               3, 0, &b),
                         0);

        /* End of extent 0 and start of extent 1 are one range. */
        assert_int_equal(blockdev_next_data(b, 0, &s, &e), 0);
        assert_int_equal(s, MiB - 8192);
        assert_int_equal(e, MiB + 8192);
        assert_int_equal(blockdev_next_data(b, e, &s, &e), 0);
        assert_int_equal(s, 2 * MiB + 4096);
        assert_int_equal(e, 2 * MiB + 8192);
        assert_int_equal(blockdev_next_data(b, e, &s, &e), -ENXIO);
}

static void test_devices_are_all_data(void **state) {
        _cleanup_(blockdev_closep) BlockDev *b = NULL;
        uint64_t s, e;

        REQUIRE_LOOPS();
        assert_int_equal(blockdev_open(loops[2], 0, &b), 0);
        assert_int_equal(blockdev_next_data(b, 12345, &s, &e), 0);
        assert_int_equal(s, 12345);
        assert_int_equal(e, FILE_SIZE);
        assert_int_equal(blockdev_next_data(b, FILE_SIZE, &s, &e), -ENXIO);
}

static void test_read_only_open_refuses_writes_with_ebadf(void **state) {
        _cleanup_free_ char *path = path_in_tmp("ro.img");
        _cleanup_(blockdev_closep) BlockDev *b = NULL;
        uint8_t buf[4096] = {};

        make_sparse(path, MiB);
        assert_int_equal(blockdev_open(path, BLOCKDEV_READ_ONLY, &b), 0);
        assert_int_equal(blockdev_pread(b, buf, sizeof(buf), 0), 0);
        assert_int_equal(blockdev_pwrite(b, buf, sizeof(buf), 0), -EBADF);
        assert_int_equal(blockdev_discard(b, 0, 4096), -EBADF);
        assert_int_equal(blockdev_write_zeroes(b, 0, 4096), -EBADF);
        assert_int_equal(blockdev_flush(b), 0);
        assert_int_equal(blockdev_open(path, 0x80, &b), -EINVAL);

        if (have_loops) {
                b = blockdev_close(b);
                assert_int_equal(blockdev_open(loops[1], BLOCKDEV_READ_ONLY, &b), 0);
                assert_int_equal(blockdev_pwrite(b, buf, 1, 1), -EBADF);
        }
}

static void test_tmpfs_file_works_direct_or_buffered(void **state) {
        char path[] = "/dev/shm/test-blockio.XXXXXX";
        _cleanup_(blockdev_closep) BlockDev *b = NULL;
        int fd;

        fd = mkstemp(path);
        if (fd < 0)
                skip();
        assert_int_equal(ftruncate(fd, FILE_SIZE), 0);
        close(fd);
        assert_int_equal(blockdev_open(path, 0, &b), 0);
        /* tmpfs accepts O_DIRECT since Linux 6.6 and refused it before: either way I/O works. */
        if (!blockdev_direct(b))
                assert_int_equal(blockdev_alignment(b), 1);
        check_round_trips(b);
        check_zeroing(b);
        b = blockdev_close(b);
        unlink(path);
}

static void test_ramfs_file_falls_back_to_buffered(void **state) {
        _cleanup_free_ char *mnt = path_in_tmp("ramfs"), *path = NULL;
        _cleanup_(blockdev_closep) BlockDev *b = NULL;

        if (geteuid() != 0)
                skip();
        assert_int_equal(mkdir(mnt, 0700), 0);
        if (mount("none", mnt, "ramfs", 0, NULL) < 0)
                skip();
        assert_true(asprintf(&path, "%s/f.img", mnt) > 0);
        make_sparse(path, MiB);
        assert_int_equal(blockdev_open(path, 0, &b), 0);
        assert_false(blockdev_direct(b));
        assert_int_equal(blockdev_alignment(b), 1);
        {
                uint8_t in[777], out[777];

                fill_random(in, sizeof(in), 9);
                assert_int_equal(blockdev_pwrite(b, in, sizeof(in), 1001), 0);
                assert_int_equal(blockdev_pread(b, out, sizeof(out), 1001), 0);
                assert_memory_equal(in, out, sizeof(in));
        }
        b = blockdev_close(b);
        assert_int_equal(umount(mnt), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_sparse_file_round_trips_aligned_and_unaligned),
                cmocka_unit_test(test_loop_device_round_trips_with_direct_io),
                cmocka_unit_test(test_requests_crossing_the_end_are_einval),
                cmocka_unit_test(test_extents_over_two_loop_devices_land_at_physical_offsets),
                cmocka_unit_test(test_extents_over_two_files_land_at_physical_offsets),
                cmocka_unit_test(test_extents_are_validated),
                cmocka_unit_test(test_discard_and_write_zeroes_read_back_zeroes_on_file),
                cmocka_unit_test(test_discard_and_write_zeroes_read_back_zeroes_on_loop_device),
                cmocka_unit_test(test_next_data_lists_the_written_ranges_of_a_sparse_file),
                cmocka_unit_test(test_next_data_maps_extents_over_files_back_to_logical_offsets),
                cmocka_unit_test(test_devices_are_all_data),
                cmocka_unit_test(test_read_only_open_refuses_writes_with_ebadf),
                cmocka_unit_test(test_tmpfs_file_works_direct_or_buffered),
                cmocka_unit_test(test_ramfs_file_falls_back_to_buffered),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
