/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stream/copy and stream/copy-checkpoint between local files: checkpoints are taken, a copy
 * resumed from any of them ends with the same bytes and the digest of the whole content (also when
 * the digest's state must be rebuilt from the source), resume points of another source are
 * refused, and checkpoint files round-trip and reject damage.
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
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "basic/macro.h"
#include "stream/copy-checkpoint.h"
#include "stream/copy.h"
#include "volume/blockio.h"

#define MiB  (UINT64_C(1024) * 1024)
#define SIZE (24 * MiB)

static char tmpdir[] = "/var/tmp/test-copy.XXXXXX";
static char src_path[256], dst_path[256], ck_path[256];

static void fill_random(uint8_t *p, size_t len, uint64_t seed) {
        uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;

        for (size_t i = 0; i < len; i++) {
                x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
                p[i] = (uint8_t) ((x * 0x2545F4914F6CDD1DULL) >> 56);
        }
}

/* A sparse source: data, a hole, data, a hole at the end. */
static void make_source(void) {
        _cleanup_close_ int fd = open(src_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        _cleanup_free_ uint8_t *buf = malloc(8 * MiB);

        assert_true(fd >= 0 && buf);
        fill_random(buf, 8 * MiB, 1);
        assert_int_equal(pwrite(fd, buf, 8 * MiB, 0), (ssize_t) (8 * MiB));
        assert_int_equal(pwrite(fd, buf, 6 * MiB + 123, 12 * MiB), (ssize_t) (6 * MiB + 123));
        assert_int_equal(ftruncate(fd, SIZE), 0);
}

static int setup(void **state) {
        (void) state;
        if (!mkdtemp(tmpdir))
                return -1;
        snprintf(src_path, sizeof(src_path), "%s/src", tmpdir);
        snprintf(dst_path, sizeof(dst_path), "%s/dst", tmpdir);
        snprintf(ck_path, sizeof(ck_path), "%s/ck", tmpdir);
        make_source();
        return 0;
}

static int teardown(void **state) {
        char cmd[300];
        (void) state;
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        return system(cmd) == 0 ? 0 : -1;
}

static BlockDev *open_dst(void) {
        _cleanup_close_ int fd = open(dst_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        BlockDev *b = NULL;

        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, SIZE), 0);
        assert_int_equal(blockdev_open(dst_path, 0, &b), 0);
        return b;
}

static bool same_files(void) {
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "cmp -s '%s' '%s'", src_path, dst_path);
        return system(cmd) == 0;
}

/* Records every checkpoint; stops the copy after the stop_after-th. */
typedef struct Recorder {
        CopyCheckpoint seen[64];
        unsigned n, stop_after;
        atomic_bool cancel;
} Recorder;

static int record(const CopyCheckpoint *c, void *userdata) {
        Recorder *r = userdata;

        if (r->n < ELEMENTSOF(r->seen))
                r->seen[r->n++] = *c;
        if (r->stop_after && r->n >= r->stop_after)
                atomic_store(&r->cancel, true);
        return 0;
}

static void full_copy(uint8_t digest[COPY_DIGEST_SIZE]) {
        _cleanup_(blockdev_closep) BlockDev *s = NULL, *d = open_dst();
        CopyOptions o = {};
        CopyResult res;

        assert_int_equal(blockdev_open(src_path, BLOCKDEV_READ_ONLY, &s), 0);
        assert_int_equal(copy_run(&(CopyEndpoint){ .dev = s }, &(CopyEndpoint){ .dev = d }, &o, &res), 0);
        memcpy(digest, res.digest, COPY_DIGEST_SIZE);
}

/* Interrupts a copy after its second checkpoint, then resumes from resume (modified by tweak). */
static void interrupted_then_resumed(bool forget_hash_state) {
        _cleanup_(blockdev_closep) BlockDev *s = NULL, *d = open_dst();
        uint8_t want[COPY_DIGEST_SIZE];
        Recorder rec = { .stop_after = 2 };
        CopyCheckpoint resume;
        CopyOptions o = {
                .requests = 2,
                .request_size = 1 * MiB,
                .checkpoint = record,
                .userdata = &rec,
                .checkpoint_interval = 1, /* every piece */
                .cancel = &rec.cancel,
        };
        CopyResult res;

        assert_int_equal(blockdev_open(src_path, BLOCKDEV_READ_ONLY, &s), 0);
        assert_int_equal(copy_run(&(CopyEndpoint){ .dev = s }, &(CopyEndpoint){ .dev = d }, &o, &res),
                         -ECANCELED);
        assert_true(rec.n >= 2);
        resume = rec.seen[rec.n - 1];
        assert_true(resume.offset > 0 && resume.offset < SIZE);
        assert_int_equal(resume.size, SIZE);
        if (forget_hash_state)
                resume.hash_state_size = 0;

        o = (CopyOptions){ .resume = &resume };
        assert_int_equal(copy_run(&(CopyEndpoint){ .dev = s }, &(CopyEndpoint){ .dev = d }, &o, &res), 0);
        assert_int_equal(res.resumed_from, resume.offset);
        assert_true(res.sent + res.skipped <= SIZE - resume.offset);

        d = blockdev_close(d);
        assert_true(same_files());
        full_copy(want);
        assert_memory_equal(res.digest, want, COPY_DIGEST_SIZE);
}

static void test_resume_from_a_checkpoint_gives_the_whole_digest(void **state) {
        (void) state;
        interrupted_then_resumed(false);
}

static void test_resume_rebuilds_an_unusable_digest_state_from_the_source(void **state) {
        (void) state;
        interrupted_then_resumed(true);
}

static void test_checkpoints_advance_and_the_last_one_covers_everything(void **state) {
        _cleanup_(blockdev_closep) BlockDev *s = NULL, *d = open_dst();
        Recorder rec = {};
        CopyOptions o = { .requests = 4, .checkpoint = record, .userdata = &rec, .checkpoint_interval = 1 };
        CopyResult res;

        (void) state;
        assert_int_equal(blockdev_open(src_path, BLOCKDEV_READ_ONLY, &s), 0);
        assert_int_equal(copy_run(&(CopyEndpoint){ .dev = s }, &(CopyEndpoint){ .dev = d }, &o, &res), 0);
        assert_true(rec.n >= 2);
        for (unsigned i = 1; i < rec.n; i++)
                assert_true(rec.seen[i].offset > rec.seen[i - 1].offset);
        /* The last one is taken after the final flush: a resume from it only verifies. */
        assert_int_equal(rec.seen[rec.n - 1].offset, SIZE);
        assert_int_equal(rec.seen[rec.n - 1].sent, res.sent);
        assert_int_equal(rec.seen[rec.n - 1].skipped, res.skipped);
}

static void test_a_resume_point_for_another_size_is_estale(void **state) {
        _cleanup_(blockdev_closep) BlockDev *s = NULL, *d = open_dst();
        CopyCheckpoint c = { .size = SIZE + 4096, .offset = MiB };
        CopyOptions o = { .resume = &c };
        CopyResult res;

        (void) state;
        assert_int_equal(blockdev_open(src_path, BLOCKDEV_READ_ONLY, &s), 0);
        assert_int_equal(copy_run(&(CopyEndpoint){ .dev = s }, &(CopyEndpoint){ .dev = d }, &o, &res),
                         -ESTALE);
        c = (CopyCheckpoint){ .size = SIZE, .offset = SIZE + 1 };
        assert_int_equal(copy_run(&(CopyEndpoint){ .dev = s }, &(CopyEndpoint){ .dev = d }, &o, &res),
                         -ESTALE);
}

static void test_checkpoint_files_round_trip(void **state) {
        CopyCheckpoint c = { .size = SIZE,
                             .offset = 3 * MiB,
                             .sent = MiB,
                             .skipped = 2 * MiB,
                             .hash_version = 801,
                             .hash_state_size = 5 },
                       got;
        _cleanup_free_ char *s = NULL, *d = NULL;
        struct stat st;

        (void) state;
        memcpy(c.hash_state, "\x00\x01\xfe\xff\x7f", 5);
        assert_int_equal(copy_checkpoint_save(ck_path, &c, "/dev/vg/lv", "nbds://id@10.0.0.2/lv"), 0);
        assert_int_equal(stat(ck_path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_int_equal(copy_checkpoint_load(ck_path, &got, &s, &d), 0);
        assert_string_equal(s, "/dev/vg/lv");
        assert_string_equal(d, "nbds://id@10.0.0.2/lv");
        assert_int_equal(got.size, c.size);
        assert_int_equal(got.offset, c.offset);
        assert_int_equal(got.sent, c.sent);
        assert_int_equal(got.skipped, c.skipped);
        assert_int_equal(got.hash_version, 801);
        assert_int_equal(got.hash_state_size, 5);
        assert_memory_equal(got.hash_state, c.hash_state, 5);
}

static void write_text(const char *text) {
        FILE *f = fopen(ck_path, "we");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

static void test_damaged_checkpoint_files_are_refused(void **state) {
        static const char good[] =
                "version=1\nsource=a\ndestination=b\nsize=100\noffset=50\nsent=10\nskipped=0\n"
                "unchanged=0\nhash-version=801\nhash-state=00ff\n";
        static const struct {
                const char *text;
                int error;
        } bad[] = {
                { "version=1\n", -EBADMSG }, /* keys missing */
                { "version=2\nsource=a\ndestination=b\nsize=100\noffset=50\nsent=10\nskipped=0\nunchanged="
                  "0\n"
                  "hash-version=801\nhash-state=\n",
                  -EPROTONOSUPPORT },
                { "version=1\nsource=a\ndestination=b\nsize=100\noffset=500\nsent=10\nskipped=0\nunchanged="
                  "0\n"
                  "hash-version=801\nhash-state=\n",
                  -EBADMSG }, /* offset past the size */
                { "version=1\nversion=1\n", -EBADMSG },
                { "version=1\nsource=a\ndestination=b\nsize=100\noffset=50\nsent=10\nskipped=0\nunchanged="
                  "0\n"
                  "hash-version=801\nhash-state=0",
                  -EBADMSG }, /* no final newline: truncated */
                { "version=1\nsource=a\ndestination=b\nsize=-1\noffset=50\nsent=10\nskipped=0\nunchanged=0\n"
                  "hash-version=801\nhash-state=\n",
                  -EBADMSG },
                { "color=blue\n", -EBADMSG },
                { "no equals sign\n", -EBADMSG },
        };
        CopyCheckpoint c;

        (void) state;
        write_text(good);
        assert_int_equal(copy_checkpoint_load(ck_path, &c, NULL, NULL), 0);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                write_text(bad[i].text);
                assert_int_equal(copy_checkpoint_load(ck_path, &c, NULL, NULL), bad[i].error);
        }
        assert_int_equal(unlink(ck_path), 0);
        assert_int_equal(copy_checkpoint_load(ck_path, &c, NULL, NULL), -ENOENT);
        /* Names with control characters are not written. */
        assert_int_equal(copy_checkpoint_save(ck_path, &(CopyCheckpoint){ .size = 1 }, "a\nb", "c"),
                         -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_resume_from_a_checkpoint_gives_the_whole_digest),
                cmocka_unit_test(test_resume_rebuilds_an_unusable_digest_state_from_the_source),
                cmocka_unit_test(test_checkpoints_advance_and_the_last_one_covers_everything),
                cmocka_unit_test(test_a_resume_point_for_another_size_is_estale),
                cmocka_unit_test(test_checkpoint_files_round_trip),
                cmocka_unit_test(test_damaged_checkpoint_files_are_refused),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
