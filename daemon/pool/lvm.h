/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * LVM through liblvm2cmd, in-process, on one worker thread: liblvm2cmd is neither re-entrant nor
 * fast, so every command of this process goes through lvm_run(), in order.
 *
 * Isolation: each command is given the node's own devices (--devices DEV,DEV...), and the process
 * uses its own LVM configuration directory (LVM_SYSTEM_DIR, written by lvm_worker_new() with the
 * locking directory of this node, and an empty LVM devices file so that a command given no
 * devices sees none), so that several simulated nodes on one machine can each own a VG called
 * LocalStorage_PoolHDD on their own disks without seeing each other's. LVM_SYSTEM_DIR, the log
 * callback and the umask are process-wide: there is at most one LvmWorker per process.
 *
 * Without device-mapper (activation = false) lvm.conf says "global { activation = 0 }", which
 * is what "--driverloaded n" does for one command, for every command; LVs are created inactive
 * and not zeroed ("lvcreate -an -Zn ..."); their data is then reached through their extents on
 * the PVs (lvm-report.h, LvmLv.ranges).
 *
 * liblvm2cmd sets the process umask (global/umask): lvm.conf is written with the process's umask
 * at lvm_worker_new() time and that umask is restored after init and after every command, so
 * other threads creating files in the meantime are not affected either way.
 *
 * Reports (vgs, pvs, lvs) are read as JSON (--reportformat json), which liblvm2cmd delivers through
 * its log callback; lvm-report.c parses them.
 */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "../basic/macro.h"

typedef struct LvmWorker LvmWorker;

typedef struct LvmOptions {
        const char *system_dir; /* LVM_SYSTEM_DIR for this process; lvm.conf is written there */
        const char *run_dir;    /* locking and run directory of this node's LVM */
        bool activation;        /* false: no device-mapper on this host */
} LvmOptions;

typedef struct LvmResult {
        int error;      /* 0, or a negative errno: -EINVAL bad command line, -EIO command failed,
                         * -ECANCELED never ran (worker freed), -EMSGSIZE output too large */
        char *report;   /* JSON report text (level-4 lines), or NULL */
        char *errors;   /* what LVM said at error level, joined with "\n", or NULL */
        char *messages; /* other things LVM printed ("Logical volume "x" created.", warnings), or NULL */
} LvmResult;

typedef void (*LvmDoneFn)(LvmResult *result, void *userdata);

/* Creates system_dir (lvm.conf, devices/) and run_dir/lock, sets LVM_SYSTEM_DIR (and TZ when unset,
 * which LVM would otherwise set from its thread) and initialises liblvm2cmd on the worker thread.
 * It changes the environment: call it before the process has any other thread. -EBUSY when this
 * process already has an LvmWorker, -EINVAL for directories that are not absolute or contain
 * quotes, backslashes or control characters. */
int lvm_worker_new(sd_event *e, const LvmOptions *options, LvmWorker **ret);
LvmWorker *lvm_worker_free(LvmWorker *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(LvmWorker *, lvm_worker_free);

/*
 * Runs an LVM command line ("vgcreate LocalStorage_PoolHDD /dev/sdb") with this node's devices
 * (the current device list, added as --devices) on the worker thread; done runs on the loop. The
 * result's strings belong to the caller of done only during the call (TAKE_PTR them to keep).
 * Every argument the caller interpolates must have been validated (names by lvm_name_is_valid()).
 * Command lines with quotes, backslashes or control characters are refused (-EINVAL): LVM splits
 * them at whitespace and nothing is meant to need quoting. Report commands add
 * "--reportformat json --units b --nosuffix -o FIELDS" themselves (lvm-report.h).
 */
int lvm_run(LvmWorker *w, const char *cmdline, LvmDoneFn done, void *userdata);

/* The devices LVM may see ("/dev/loop3" ...); replaced as disks come and go; applies to commands
 * submitted afterwards. -EINVAL unless every one is a "/dev/..." path of [A-Za-z0-9/_.:+@=#-]. */
int lvm_set_devices(LvmWorker *w, char *const *devices);

bool lvm_activation(const LvmWorker *w);
size_t lvm_pending(const LvmWorker *w);
/* Since when the running command runs (CLOCK_MONOTONIC), 0 when idle. */
uint64_t lvm_busy_since(const LvmWorker *w);

/* LVM's rules for VG and LV names: [a-zA-Z0-9+_.-], not starting with '-', not "." or "..",
 * at most 127 bytes, and (LV rules, applied to VG names too) no reserved prefix ("snapshot",
 * "pvmove") nor reserved part ("_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_imeta",
 * "_iorig", "_mimage", "_mlog", "_pmspare", "_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata",
 * "_vorigin", "_wcorig"). */
bool lvm_name_is_valid(const char *name);
