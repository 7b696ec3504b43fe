/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pool/disk: discovery of real loop disks, blank, with a filesystem, partitioned, an LVM PV and
 * mounted. Needs root, losetup, mkfs.ext4, sfdisk and pvcreate: without them the whole binary is
 * skipped (exit 77).
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cmocka.h>

#include "basic/macro.h"
#include "basic/string-util.h"
#include "pool/disk.h"

#define MiB       (UINT64_C(1024) * 1024)
#define DISK_SIZE (64 * MiB)

enum { BLANK, EXT4, PARTED, PV, _N_DISKS };

static char tmpdir[] = "/var/tmp/test-disk.XXXXXX";
static char mnt[256];
static bool mounted;
static char images[_N_DISKS][256];
static char devs[_N_DISKS][64];

static int run(const char *fmt, ...) _printf_(1, 2);
static int run(const char *fmt, ...) {
        char cmd[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(cmd, sizeof(cmd), fmt, ap);
        va_end(ap);
        return system(cmd) == 0 ? 0 : -EIO;
}

static int attach_loop(const char *file, bool partscan, char *ret, size_t size) {
        char cmd[512];
        FILE *p;
        int status;

        snprintf(cmd, sizeof(cmd), "losetup %s -f --show '%s' 2>/dev/null", partscan ? "-P" : "", file);
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

static void cleanup_all(void) {
        if (mounted && umount(mnt) >= 0)
                mounted = false;
        for (size_t i = 0; i < _N_DISKS; i++)
                if (devs[i][0]) {
                        (void) run("losetup -d '%s' 2>/dev/null", devs[i]);
                        devs[i][0] = '\0';
                }
        (void) run("rm -rf '%s'", tmpdir);
}

static int prepare(void) {
        if (geteuid() != 0)
                return -EPERM;
        if (!mkdtemp(tmpdir))
                return -errno;
        snprintf(mnt, sizeof(mnt), "%s/mnt", tmpdir);
        if (mkdir(mnt, 0700) < 0)
                return -errno;

        for (size_t i = 0; i < _N_DISKS; i++) {
                snprintf(images[i], sizeof(images[i]), "%s/disk%zu.img", tmpdir, i);
                if (run("truncate -s %" PRIu64 " '%s'", DISK_SIZE, images[i]) < 0)
                        return -EIO;
        }
        /* The partition table is written to the file: losetup -P then makes the kernel read it. */
        if (run("echo 'start=2048, size=20480' | sfdisk -q '%s' >/dev/null 2>&1", images[PARTED]) < 0)
                return -EIO;

        for (size_t i = 0; i < _N_DISKS; i++)
                if (attach_loop(images[i], i == PARTED, devs[i], sizeof(devs[i])) < 0) {
                        devs[i][0] = '\0';
                        return -EIO;
                }

        /* Kernels built without partition table parsers see no partitions after losetup -P:
         * partx reads the table and adds them (BLKPG). */
        if (run("test -e /sys/block/%s/%sp1 || partx -a '%s' >/dev/null 2>&1", devs[PARTED] + 5,
                devs[PARTED] + 5, devs[PARTED]) < 0)
                return -EIO;

        if (run("mkfs.ext4 -q -F '%s' >/dev/null 2>&1", devs[EXT4]) < 0)
                return -EIO;
        if (run("LVM_SUPPRESS_FD_WARNINGS=1 pvcreate -q -y --devices '%s' '%s' >/dev/null 2>&1", devs[PV],
                devs[PV]) < 0)
                return -EIO;
        return 0;
}

static char *const *all_devs(void) {
        static char *l[_N_DISKS + 1];

        for (size_t i = 0; i < _N_DISKS; i++)
                l[i] = devs[i];
        l[_N_DISKS] = NULL;
        return l;
}

static const Disk *find(const Disk *d, size_t n, const char *path) {
        for (size_t i = 0; i < n; i++)
                if (streq(d[i].dev_path, path))
                        return &d[i];
        return NULL;
}

static int scan(char *const *allow, char *const *overrides, Disk **ret, size_t *ret_n) {
        DiskScanOptions o = { .allow = allow, .class_overrides = overrides };

        return disk_scan(&o, ret, ret_n);
}

static void test_blank_disk_is_free_with_size_and_name(void **state) {
        Disk *d = NULL;
        size_t n = 0;
        const Disk *x;
        struct stat st;

        assert_int_equal(scan(all_devs(), NULL, &d, &n), 0);
        assert_int_equal(n, _N_DISKS);
        x = find(d, n, devs[BLANK]);
        assert_non_null(x);
        assert_int_equal(x->state, DISK_FREE);
        assert_null(x->reason);
        assert_null(x->signature);
        assert_int_equal(x->size, DISK_SIZE);
        assert_string_equal(x->name, devs[BLANK] + 5);
        assert_int_equal(stat(devs[BLANK], &st), 0);
        assert_true(x->devnum == st.st_rdev);
        assert_false(x->read_only);
        assert_false(x->removable);
        disks_free(d, n);
}

static void test_ext4_disk_is_busy_naming_ext4(void **state) {
        Disk *d = NULL;
        size_t n = 0;
        const Disk *x;

        assert_int_equal(scan(all_devs(), NULL, &d, &n), 0);
        x = find(d, n, devs[EXT4]);
        assert_non_null(x);
        assert_int_equal(x->state, DISK_BUSY);
        assert_string_equal(x->reason, "has an ext4 filesystem");
        assert_string_equal(x->signature, "ext4");
        disks_free(d, n);
}

static void test_partitioned_disk_is_busy_with_partitions_and_table(void **state) {
        Disk *d = NULL;
        size_t n = 0;
        const Disk *x;

        assert_int_equal(scan(all_devs(), NULL, &d, &n), 0);
        x = find(d, n, devs[PARTED]);
        assert_non_null(x);
        assert_int_equal(x->state, DISK_BUSY);
        assert_non_null(strstr(x->reason, "has partitions"));
        assert_non_null(strstr(x->reason, "has a dos partition table"));
        assert_string_equal(x->signature, "dos");
        disks_free(d, n);
}

static void test_lvm_pv_is_reported_as_lvm(void **state) {
        Disk *d = NULL;
        size_t n = 0;
        const Disk *x;

        assert_int_equal(scan(all_devs(), NULL, &d, &n), 0);
        x = find(d, n, devs[PV]);
        assert_non_null(x);
        assert_int_equal(x->state, DISK_LVM);
        assert_null(x->reason);
        assert_string_equal(x->signature, "LVM2_member");
        disks_free(d, n);
}

static void test_mounted_disk_reason_names_the_mount_point(void **state) {
        _cleanup_free_ char *expect = NULL;
        Disk *d = NULL;
        size_t n = 0;
        const Disk *x;

        assert_int_equal(mount(devs[EXT4], mnt, "ext4", MS_NOATIME, NULL), 0);
        mounted = true;

        assert_int_equal(scan(all_devs(), NULL, &d, &n), 0);
        x = find(d, n, devs[EXT4]);
        assert_non_null(x);
        assert_int_equal(x->state, DISK_BUSY);
        assert_true(asprintf(&expect, "is mounted at %s", mnt) > 0);
        assert_non_null(strstr(x->reason, expect));
        assert_non_null(strstr(x->reason, "ext4"));
        disks_free(d, n);

        assert_int_equal(umount(mnt), 0);
        mounted = false;
}

static void test_class_follows_rotational_and_overrides(void **state) {
        _cleanup_free_ char *attr = NULL, *o1 = NULL, *o2 = NULL, *o3 = NULL;
        Disk *d = NULL;
        size_t n = 0;
        const Disk *x;
        char buf[8] = {};
        DiskClass expected;
        FILE *f;

        assert_true(asprintf(&attr, "/sys/block/%s/queue/rotational", devs[BLANK] + 5) > 0);
        f = fopen(attr, "re");
        assert_non_null(f);
        assert_non_null(fgets(buf, sizeof(buf), f));
        fclose(f);
        expected = buf[0] == '1' ? DISK_CLASS_HDD : DISK_CLASS_SSD;

        assert_int_equal(scan(all_devs(), NULL, &d, &n), 0);
        x = find(d, n, devs[BLANK]);
        assert_non_null(x);
        assert_int_equal(x->class, expected);
        assert_int_equal(x->rotational, expected == DISK_CLASS_HDD);
        disks_free(d, n);

        /* The first matching override wins; class names are case-insensitive. */
        assert_true(asprintf(&o1, "%s=ssd", devs[BLANK]) > 0);
        assert_true(asprintf(&o2, "%s=HDD", devs[BLANK]) > 0);
        assert_int_equal(scan(all_devs(), STRV_MAKE(o1, o2, "/dev/loop*=NVMe"), &d, &n), 0);
        assert_int_equal(find(d, n, devs[BLANK])->class, DISK_CLASS_SSD);
        assert_int_equal(find(d, n, devs[EXT4])->class, DISK_CLASS_NVME);
        disks_free(d, n);

        assert_true(asprintf(&o3, "%s", devs[BLANK]) > 0);
        d = NULL;
        assert_int_equal(scan(all_devs(), STRV_MAKE(o3), &d, &n), -EINVAL);
        assert_int_equal(scan(all_devs(), STRV_MAKE("/dev/loop*=TAPE"), &d, &n), -EINVAL);
        assert_int_equal(scan(all_devs(), STRV_MAKE("=SSD"), &d, &n), -EINVAL);
        assert_null(d);
}

static void test_only_allowed_paths_are_reported(void **state) {
        Disk *d = NULL;
        size_t n = 99;

        assert_int_equal(scan(STRV_MAKE(devs[PV]), NULL, &d, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(d[0].dev_path, devs[PV]);
        disks_free(d, n);

        assert_int_equal(scan(STRV_MAKE("/dev/sd*"), NULL, &d, &n), 0);
        for (size_t i = 0; i < n; i++)
                assert_non_null(startswith(d[i].dev_path, "/dev/sd"));
        disks_free(d, n);

        d = NULL;
        assert_int_equal(scan((char *[]){ NULL }, NULL, &d, &n), 0);
        assert_int_equal(n, 0);
        free(d);
        d = NULL;
        assert_int_equal(scan(NULL, NULL, &d, &n), 0);
        assert_int_equal(n, 0);
        free(d);
}

static void test_all_loop_disks_sorted_without_detached_ones(void **state) {
        Disk *d = NULL;
        size_t n = 0;

        /* Other loop devices may exist: only attached ones, in path order, never a partition. */
        assert_int_equal(scan(STRV_MAKE("/dev/loop*"), NULL, &d, &n), 0);
        assert_true(n >= _N_DISKS);
        for (size_t i = 0; i < _N_DISKS; i++)
                assert_non_null(find(d, n, devs[i]));
        for (size_t i = 0; i < n; i++) {
                assert_true(d[i].size > 0);
                unsigned nr;
                int end = 0;

                assert_int_equal(sscanf(d[i].name, "loop%u%n", &nr, &end), 1); /* not loop3p1 */
                assert_int_equal(d[i].name[end], '\0');
                if (i > 0)
                        assert_true(strverscmp(d[i - 1].dev_path, d[i].dev_path) < 0);
        }
        disks_free(d, n);
}

static void test_probe_reports_like_scan(void **state) {
        DiskScanOptions o = { .allow = all_devs() };
        Disk d = {};

        assert_int_equal(disk_probe(&o, devs[EXT4], &d), 0);
        assert_string_equal(d.dev_path, devs[EXT4]);
        assert_int_equal(d.state, DISK_BUSY);
        assert_string_equal(d.reason, "has an ext4 filesystem");
        assert_int_equal(d.size, DISK_SIZE);
        disk_done(&d);

        assert_int_equal(disk_probe(&o, devs[BLANK], &d), 0);
        assert_int_equal(d.state, DISK_FREE);
        disk_done(&d);
}

static void test_probe_refuses_what_is_not_an_allowed_whole_disk(void **state) {
        DiskScanOptions o = { .allow = STRV_MAKE("/dev/*") };
        DiskScanOptions none = { .allow = STRV_MAKE("/dev/sdzz") };
        _cleanup_free_ char *part = NULL;
        Disk d = {};

        assert_int_equal(disk_probe(&none, devs[BLANK], &d), -EPERM);
        assert_int_equal(disk_probe(&o, "/dev/null", &d), -ENOTBLK);
        assert_int_equal(disk_probe(&o, "/nonexistent", &d), -ENOENT);
        assert_true(asprintf(&part, "%sp1", devs[PARTED]) > 0);
        if (access(part, F_OK) >= 0)
                assert_int_equal(disk_probe(&o, part, &d), -ENOTBLK);
        assert_null(d.name);
}

static void test_probe_of_detached_loop_device_fails(void **state) {
        DiskScanOptions o = { .allow = STRV_MAKE("/dev/loop*") };
        _cleanup_free_ char *img = NULL;
        char dev[64];
        Disk d = {};

        assert_true(asprintf(&img, "%s/detached.img", tmpdir) > 0);
        assert_int_equal(run("truncate -s 1M '%s'", img), 0);
        assert_int_equal(attach_loop(img, false, dev, sizeof(dev)), 0);
        assert_int_equal(run("losetup -d '%s'", dev), 0);

        assert_true(disk_probe(&o, dev, &d) < 0);
        assert_null(d.name);
}

static void test_class_and_state_names(void **state) {
        assert_string_equal(disk_class_to_string(DISK_CLASS_NVME), "NVMe");
        assert_int_equal(disk_class_from_string("nvme"), DISK_CLASS_NVME);
        assert_int_equal(disk_class_from_string("hdd"), DISK_CLASS_HDD);
        assert_int_equal(disk_class_from_string("floppy"), -EINVAL);
        assert_null(disk_class_to_string(_DISK_CLASS_MAX));
        assert_string_equal(disk_state_to_string(DISK_BUSY), "busy");
        assert_true(disk_path_allowed(STRV_MAKE("/dev/sd*"), "/dev/sdb"));
        assert_false(disk_path_allowed(STRV_MAKE("/dev/*"), "/dev/disk/by-id/x"));
        assert_false(disk_path_allowed(NULL, "/dev/sdb"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_blank_disk_is_free_with_size_and_name),
                cmocka_unit_test(test_ext4_disk_is_busy_naming_ext4),
                cmocka_unit_test(test_partitioned_disk_is_busy_with_partitions_and_table),
                cmocka_unit_test(test_lvm_pv_is_reported_as_lvm),
                cmocka_unit_test(test_mounted_disk_reason_names_the_mount_point),
                cmocka_unit_test(test_class_follows_rotational_and_overrides),
                cmocka_unit_test(test_only_allowed_paths_are_reported),
                cmocka_unit_test(test_all_loop_disks_sorted_without_detached_ones),
                cmocka_unit_test(test_probe_reports_like_scan),
                cmocka_unit_test(test_probe_refuses_what_is_not_an_allowed_whole_disk),
                cmocka_unit_test(test_probe_of_detached_loop_device_fails),
                cmocka_unit_test(test_class_and_state_names),
        };
        int r;

        r = prepare();
        if (r < 0) {
                fprintf(stderr, "Skipping: needs root, loop devices, sfdisk, mkfs.ext4, pvcreate (%s).\n",
                        strerror(-r));
                cleanup_all();
                return 77;
        }
        r = cmocka_run_group_tests(tests, NULL, NULL);
        cleanup_all();
        return r;
}
