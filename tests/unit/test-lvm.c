/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pool/lvm: real LVM (liblvm2cmd in this process) on loop devices, through the LVM worker on a
 * real sd_event loop. Needs root and loop devices, else it exits 77 (skipped).
 *
 * Loop devices are attached with LO_FLAGS_AUTOCLEAR and their backing files are unlinked as soon
 * as they are attached: whatever happens to this process, the devices go away when its file
 * descriptors close and no file is left behind. Teardown detaches them explicitly as well.
 *
 * Isolation between two simulated nodes needs two processes (LVM_SYSTEM_DIR is process-wide):
 * the test re-executes itself as the second node (HWAMEID_TEST_LVM_CHILD in the environment).
 */

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/loop.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "basic/string-util.h"
#include "pool/lvm-report.h"
#include "pool/lvm.h"

#define VG         "LocalStorage_PoolHDD"
#define DISK_SIZE  (64ULL * 1024 * 1024)
#define CHILD_ENV  "HWAMEID_TEST_LVM_CHILD"
#define TEST_UMASK 0022
#define N_LOOPS    3

extern char **environ;

typedef struct Loop {
        int fd;
        char path[64];
} Loop;

static char tmpdir[] = "/tmp/test-lvm-XXXXXX";
static bool have_tmpdir;
static Loop loops[N_LOOPS] = { { .fd = -1 }, { .fd = -1 }, { .fd = -1 } };

typedef struct Run {
        bool finished;
        int error;
        char *report, *errors, *messages;
} Run;

typedef struct Fixture {
        sd_event *event;
        LvmWorker *lvm;
        char system_dir[256], run_dir[256];
} Fixture;

static Fixture fixture;

static int loop_attach(const char *dir, unsigned i, Loop *ret) {
        char file[512];
        int bfd, ctl, r = -EIO;

        snprintf(file, sizeof(file), "%s/disk%u.img", dir, i);
        bfd = open(file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (bfd < 0)
                return -errno;
        (void) unlink(file); /* the loop device keeps the file alive */
        if (ftruncate(bfd, (off_t) DISK_SIZE) < 0) {
                r = -errno;
                close(bfd);
                return r;
        }
        ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        if (ctl < 0) {
                r = -errno;
                close(bfd);
                return r;
        }
        /* Others may attach loop devices at the same time: retry on EBUSY. */
        for (unsigned attempt = 0; attempt < 64; attempt++) {
                struct loop_config cfg = { .fd = (uint32_t) bfd, .info.lo_flags = LO_FLAGS_AUTOCLEAR };
                int n = ioctl(ctl, LOOP_CTL_GET_FREE), lfd;

                if (n < 0) {
                        r = -errno;
                        break;
                }
                snprintf(ret->path, sizeof(ret->path), "/dev/loop%d", n);
                lfd = open(ret->path, O_RDWR | O_CLOEXEC);
                if (lfd < 0) {
                        r = -errno;
                        break;
                }
                if (ioctl(lfd, LOOP_CONFIGURE, &cfg) == 0) {
                        ret->fd = lfd;
                        r = 0;
                        break;
                }
                r = -errno;
                close(lfd);
                if (r != -EBUSY)
                        break;
        }
        close(ctl);
        close(bfd);
        return r;
}

static void loop_detach(Loop *l) {
        if (l->fd < 0)
                return;
        (void) ioctl(l->fd, LOOP_CLR_FD);
        close(l->fd);
        l->fd = -1;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st, (void) ftw;
        if (flag == FTW_DP)
                (void) rmdir(path);
        else
                (void) unlink(path);
        return 0;
}

static void cleanup_all(void) {
        fixture.lvm = lvm_worker_free(fixture.lvm);
        for (unsigned i = 0; i < N_LOOPS; i++)
                loop_detach(&loops[i]);
        if (have_tmpdir) {
                (void) nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
                have_tmpdir = false;
        }
}

static mode_t current_umask(void) {
        char line[256];
        unsigned m = 07777;
        FILE *f = fopen("/proc/self/status", "re");

        assert_non_null(f);
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "Umask: %o", &m) == 1)
                        break;
        fclose(f);
        return (mode_t) m;
}

static void on_done(LvmResult *result, void *userdata) {
        Run *run = userdata;

        run->finished = true;
        run->error = result->error;
        run->report = result->report ? strdup(result->report) : NULL;
        run->errors = result->errors ? strdup(result->errors) : NULL;
        run->messages = result->messages ? strdup(result->messages) : NULL;
}

static void run_done(Run *run) {
        free(run->report);
        free(run->errors);
        free(run->messages);
        *run = (Run){};
}

/* Runs one command through the worker while the loop turns. */
static int run_lvm(sd_event *e, LvmWorker *lvm, const char *cmdline, Run *ret) {
        int r;

        *ret = (Run){};
        r = lvm_run(lvm, cmdline, on_done, ret);
        if (r < 0)
                return r;
        if (lvm_pending(lvm) != 1)
                return -EBADE;
        while (!ret->finished) {
                r = sd_event_run(e, UINT64_MAX);
                if (r < 0)
                        return r;
        }
        if (lvm_pending(lvm) != 0 || lvm_busy_since(lvm) != 0)
                return -EBADE;
        return ret->error;
}

#define RUN_OK(cmd, run)                                                                                    \
        do {                                                                                                \
                int _r = run_lvm(fixture.event, fixture.lvm, (cmd), (run));                                 \
                if (_r != 0)                                                                                \
                        fail_msg("%s: %s\n%s", (cmd), strerror(-_r), strna((run)->errors));                 \
                assert_int_equal(current_umask(), TEST_UMASK);                                              \
        } while (0)

static int setup(void **state) {
        LvmOptions o = {};
        int r;

        (void) state;
        snprintf(fixture.system_dir, sizeof(fixture.system_dir), "%s/node1/etc/lvm", tmpdir);
        snprintf(fixture.run_dir, sizeof(fixture.run_dir), "%s/node1/run/lvm", tmpdir);
        o = (LvmOptions){ .system_dir = fixture.system_dir,
                          .run_dir = fixture.run_dir,
                          .activation = false };
        if (sd_event_new(&fixture.event) < 0)
                return -1;
        r = lvm_worker_new(fixture.event, &o, &fixture.lvm);
        if (r < 0) {
                fprintf(stderr, "lvm_worker_new: %s\n", strerror(-r));
                return -1;
        }
        if (current_umask() != TEST_UMASK)
                return -1;
        return 0;
}

static int teardown(void **state) {
        (void) state;
        cleanup_all();
        fixture.event = sd_event_unref(fixture.event);
        return 0;
}

static void config_is_valid_for_lvm(void **state) {
        char *argv[] = { "lvmconfig", "--validate", NULL };
        posix_spawn_file_actions_t fa;
        pid_t pid;
        int status;

        (void) state;
        /* LVM_SYSTEM_DIR is set by lvm_worker_new(): the tool reads the same lvm.conf. */
        assert_string_equal(getenv("LVM_SYSTEM_DIR"), fixture.system_dir);
        assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
        assert_int_equal(posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0), 0);
        assert_int_equal(posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0), 0);
        if (posix_spawnp(&pid, "lvmconfig", &fa, NULL, argv, environ) != 0) {
                posix_spawn_file_actions_destroy(&fa);
                skip();
        }
        posix_spawn_file_actions_destroy(&fa);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* liblvm2cmd's first command sets TZ when it is unset, from the worker thread, where setenv() races
 * with getenv() on the loop's thread. lvm_worker_new() sets it before the thread exists: no
 * command changes the environment. main() unsets TZ before the worker is made. */
static void commands_leave_the_environment_alone(void **state) {
        char **before = environ;
        size_t n = strv_length(environ);
        Run run;

        (void) state;
        assert_string_equal(strna(getenv("TZ")), ":/etc/localtime");
        RUN_OK("vgs --reportformat json --units b --nosuffix -o " LVM_VG_FIELDS, &run);
        run_done(&run);
        RUN_OK("pvs --reportformat json --units b --nosuffix -o " LVM_PV_FIELDS, &run);
        run_done(&run);
        assert_ptr_equal(environ, before);
        assert_int_equal(strv_length(environ), n);
}

static void only_given_devices_are_seen(void **state) {
        Run run;
        LvmPv *p = NULL;
        size_t n = 0;

        (void) state;
        /* No devices: the empty devices file hides every disk of the machine. */
        assert_int_equal(lvm_set_devices(fixture.lvm, NULL), 0);
        RUN_OK("pvs --reportformat json --units b --nosuffix -o " LVM_PV_FIELDS, &run);
        assert_int_equal(lvm_report_parse_pvs(run.report, &p, &n), 0);
        assert_int_equal(n, 0);
        lvm_pvs_free(p, n);
        run_done(&run);

        assert_int_equal(lvm_set_devices(fixture.lvm, STRV_MAKE("/dev/sda b")), -EINVAL);
        assert_int_equal(lvm_set_devices(fixture.lvm, STRV_MAKE("/dev/a,/dev/b")), -EINVAL);
        assert_int_equal(lvm_set_devices(fixture.lvm, STRV_MAKE("sda")), -EINVAL);
        assert_int_equal(lvm_set_devices(fixture.lvm, STRV_MAKE("/dev/../etc/passwd")), -EINVAL);
        assert_int_equal(lvm_set_devices(fixture.lvm, STRV_MAKE(loops[0].path, loops[1].path)), 0);
}

static void create_pool(void **state) {
        char cmd[512];
        Run run;
        LvmVg *v = NULL;
        LvmPv *p = NULL;
        size_t n = 0;

        (void) state;
        snprintf(cmd, sizeof(cmd), "pvcreate %s %s", loops[0].path, loops[1].path);
        RUN_OK(cmd, &run);
        assert_non_null(strstr(strempty(run.messages), "successfully created"));
        run_done(&run);
        snprintf(cmd, sizeof(cmd), "vgcreate " VG " %s %s", loops[0].path, loops[1].path);
        RUN_OK(cmd, &run);
        run_done(&run);

        RUN_OK("vgs --reportformat json --units b --nosuffix -o " LVM_VG_FIELDS, &run);
        assert_int_equal(lvm_report_parse_vgs(run.report, &v, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(v[0].name, VG);
        assert_int_equal(v[0].pv_count, 2);
        assert_int_equal(v[0].lv_count, 0);
        assert_int_equal(v[0].extent_size, 4 * 1024 * 1024);
        assert_int_equal(v[0].size, v[0].free);
        lvm_vgs_free(v, n);
        run_done(&run);

        RUN_OK("pvs --reportformat json --units b --nosuffix -o " LVM_PV_FIELDS, &run);
        assert_int_equal(lvm_report_parse_pvs(run.report, &p, &n), 0);
        assert_int_equal(n, 2);
        for (size_t i = 0; i < n; i++) {
                assert_string_equal(p[i].vg_name, VG);
                assert_null(p[i].missing);
                assert_true(p[i].pe_start > 0);
        }
        lvm_pvs_free(p, n);
        run_done(&run);
}

static void lv_create_extend_remove(void **state) {
        Run run;
        LvmLv *l = NULL;
        size_t n = 0;

        (void) state;
        /* Each 64 MiB disk holds 15 extents of 4 MiB. */
        RUN_OK("lvcreate -an -Zn -n lv1 -L 40M " VG, &run);
        assert_non_null(strstr(strempty(run.messages), "Logical volume \"lv1\" created."));
        assert_null(run.report);
        run_done(&run);
        RUN_OK("lvcreate -an -Zn -n lv2 -L 20M " VG, &run);
        run_done(&run);
        /* 20 extents: 10 more, which the first disk no longer has. */
        RUN_OK("lvextend -L 80M " VG "/lv1", &run);
        run_done(&run);

        RUN_OK("lvs --reportformat json --units b --nosuffix -o " LVM_LV_FIELDS " " VG, &run);
        assert_int_equal(lvm_report_parse_lvs(run.report, &l, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(l[0].name, "lv1");
        assert_int_equal(l[0].size, 80 * 1024 * 1024);
        assert_false(l[0].active);
        assert_int_equal(l[0].n_ranges, 2);
        assert_string_equal(l[0].ranges[0].pv, loops[0].path);
        assert_int_equal(l[0].ranges[0].pe_first, 0);
        assert_int_equal(l[0].ranges[0].pe_last, 9);
        assert_string_equal(l[0].ranges[1].pv, loops[1].path);
        assert_int_equal(l[0].ranges[1].pe_first, 0);
        assert_int_equal(l[0].ranges[1].pe_last, 9);
        assert_string_equal(l[1].name, "lv2");
        assert_int_equal(l[1].n_ranges, 1);
        assert_string_equal(l[1].ranges[0].pv, loops[0].path);
        assert_int_equal(l[1].ranges[0].pe_first, 10);
        assert_int_equal(l[1].ranges[0].pe_last, 14);
        lvm_lvs_free(l, n);
        run_done(&run);

        RUN_OK("lvremove -y " VG "/lv2", &run);
        run_done(&run);
        RUN_OK("lvs --reportformat json --units b --nosuffix -o " LVM_LV_FIELDS " " VG, &run);
        assert_int_equal(lvm_report_parse_lvs(run.report, &l, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(l[0].name, "lv1");
        lvm_lvs_free(l, n);
        run_done(&run);
}

static void errors_are_reported(void **state) {
        LvmWorker *second = NULL;
        LvmOptions o = { .system_dir = fixture.system_dir, .run_dir = fixture.run_dir };
        Run run;

        (void) state;
        assert_int_equal(run_lvm(fixture.event, fixture.lvm, "lvcreate -an -Zn -n lv1 -L 4M " VG, &run),
                         -EIO);
        assert_non_null(strstr(strempty(run.errors), "already exists"));
        run_done(&run);

        assert_int_equal(run_lvm(fixture.event, fixture.lvm, "lvcreate -an -Zn -n big -L 4G " VG, &run),
                         -EIO);
        assert_non_null(strstr(strempty(run.errors), "insufficient free space"));
        assert_int_equal(current_umask(), TEST_UMASK);
        run_done(&run);

        assert_int_equal(run_lvm(fixture.event, fixture.lvm, "lvs --no-such-option", &run), -EINVAL);
        run_done(&run);

        /* In LVM 2.03.16 this breaks the handle for the next command: the worker makes a new one. */
        assert_int_equal(
                run_lvm(fixture.event, fixture.lvm, "vgs --reportformat json -o vg_name NoSuchVG", &run),
                -EIO);
        assert_non_null(strstr(strempty(run.errors), "not found"));
        run_done(&run);
        RUN_OK("vgs --reportformat json --units b --nosuffix -o " LVM_VG_FIELDS, &run);
        run_done(&run);

        /* Refused before LVM sees them. */
        assert_int_equal(lvm_run(fixture.lvm, "lvcreate -n \"a b\" " VG, on_done, &run), -EINVAL);
        assert_int_equal(lvm_run(fixture.lvm, "lvs\n", on_done, &run), -EINVAL);
        assert_int_equal(lvm_run(fixture.lvm, "", on_done, &run), -EINVAL);
        assert_int_equal(lvm_pending(fixture.lvm), 0);

        /* One LVM worker per process. */
        assert_int_equal(lvm_worker_new(fixture.event, &o, &second), -EBUSY);
        assert_null(second);
        assert_false(lvm_activation(fixture.lvm));
}

static int child_main(const char *spec) {
        _cleanup_free_ char *dir = strdup(spec);
        char system_dir[512], run_dir[512];
        char *device;
        sd_event *e = NULL;
        LvmWorker *lvm = NULL;
        LvmVg *v = NULL;
        LvmPv *p = NULL;
        size_t n_vg = 0, n_pv = 0;
        char cmd[512];
        Run run = {};
        int r, ok = 0;

        /* "DIR|DEVICE" */
        device = dir ? strchr(dir, '|') : NULL;
        if (!device)
                return 2;
        *device++ = '\0';
        snprintf(system_dir, sizeof(system_dir), "%s/etc/lvm", dir);
        snprintf(run_dir, sizeof(run_dir), "%s/run/lvm", dir);

        if (sd_event_new(&e) < 0 ||
            lvm_worker_new(e, &(LvmOptions){ .system_dir = system_dir, .run_dir = run_dir }, &lvm) < 0 ||
            lvm_set_devices(lvm, STRV_MAKE(device)) < 0)
                return 3;

#define CHILD_RUN(c)                                                                                        \
        do {                                                                                                \
                run_done(&run);                                                                             \
                r = run_lvm(e, lvm, (c), &run);                                                             \
                if (r < 0) {                                                                                \
                        fprintf(stderr, "child: %s: %s\n%s\n", (c), strerror(-r), strna(run.errors));       \
                        goto out;                                                                           \
                }                                                                                           \
        } while (0)

        snprintf(cmd, sizeof(cmd), "pvcreate %s", device);
        CHILD_RUN(cmd);
        snprintf(cmd, sizeof(cmd), "vgcreate " VG " %s", device);
        CHILD_RUN(cmd);
        CHILD_RUN("vgs --reportformat json --units b --nosuffix -o " LVM_VG_FIELDS);
        if (lvm_report_parse_vgs(run.report, &v, &n_vg) < 0)
                goto out;
        CHILD_RUN("pvs --reportformat json --units b --nosuffix -o " LVM_PV_FIELDS);
        if (lvm_report_parse_pvs(run.report, &p, &n_pv) < 0)
                goto out;
        /* Its own VG, on its own disk only, with none of the other node's LVs. */
        ok = n_vg == 1 && streq(v[0].name, VG) && v[0].pv_count == 1 && v[0].lv_count == 0 && n_pv == 1 &&
             streq(p[0].name, device) && streq(p[0].vg_name, VG);
        if (!ok)
                fprintf(stderr, "child: saw %zu VGs (%u PVs, %u LVs), %zu PVs\n", n_vg,
                        n_vg ? v[0].pv_count : 0, n_vg ? v[0].lv_count : 0, n_pv);
out:
        run_done(&run);
        lvm_vgs_free(v, n_vg);
        lvm_pvs_free(p, n_pv);
        lvm_worker_free(lvm);
        sd_event_unref(e);
        return ok ? 0 : 1;
}

static void two_nodes_each_own_their_vg(void **state) {
        char spec[1024], env_child[1100];
        char self[] = "/proc/self/exe";
        char *argv[] = { self, NULL };
        char **env;
        size_t n_env = 0;
        pid_t pid;
        int status;
        Run run;
        LvmVg *v = NULL;
        LvmPv *p = NULL;
        size_t n = 0;

        (void) state;
        snprintf(spec, sizeof(spec), "%s/node2|%s", tmpdir, loops[2].path);
        snprintf(env_child, sizeof(env_child), CHILD_ENV "=%s", spec);
        while (environ[n_env])
                n_env++;
        env = calloc(n_env + 2, sizeof(char *));
        assert_non_null(env);
        memcpy(env, environ, n_env * sizeof(char *));
        env[n_env] = env_child;

        /* A new process, not a fork of this one: this one has threads and LVM state. */
        assert_int_equal(posix_spawn(&pid, self, NULL, NULL, argv, env), 0);
        free(env);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);

        /* This node still sees its own VG with its two disks and its LV, and not the other's disk. */
        RUN_OK("vgs --reportformat json --units b --nosuffix -o " LVM_VG_FIELDS, &run);
        assert_int_equal(lvm_report_parse_vgs(run.report, &v, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(v[0].name, VG);
        assert_int_equal(v[0].pv_count, 2);
        assert_int_equal(v[0].lv_count, 1);
        lvm_vgs_free(v, n);
        run_done(&run);
        RUN_OK("pvs --reportformat json --units b --nosuffix -o " LVM_PV_FIELDS, &run);
        assert_int_equal(lvm_report_parse_pvs(run.report, &p, &n), 0);
        assert_int_equal(n, 2);
        for (size_t i = 0; i < n; i++)
                assert_string_not_equal(p[i].name, loops[2].path);
        lvm_pvs_free(p, n);
        run_done(&run);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(commands_leave_the_environment_alone), /* first: no command ran yet */
                cmocka_unit_test(config_is_valid_for_lvm),
                cmocka_unit_test(only_given_devices_are_seen),
                cmocka_unit_test(create_pool),
                cmocka_unit_test(lv_create_extend_remove),
                cmocka_unit_test(errors_are_reported),
                cmocka_unit_test(two_nodes_each_own_their_vg),
        };
        const char *child = getenv(CHILD_ENV);
        int r;

        umask(TEST_UMASK);
        if (child)
                return child_main(child);

        if (geteuid() != 0) {
                fprintf(stderr, "test-lvm: needs root, skipped\n");
                return 77;
        }
        /* Before any thread: as under systemd, TZ is not set. */
        if (unsetenv("TZ") < 0)
                return 1;
        if (!mkdtemp(tmpdir))
                return 1;
        have_tmpdir = true;
        atexit(cleanup_all);
        for (unsigned i = 0; i < N_LOOPS; i++) {
                r = loop_attach(tmpdir, i, &loops[i]);
                if (r < 0) {
                        fprintf(stderr, "test-lvm: cannot attach a loop device (%s), skipped\n",
                                strerror(-r));
                        cleanup_all();
                        return 77;
                }
        }
        return cmocka_run_group_tests(tests, setup, teardown);
}
