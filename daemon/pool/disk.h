/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Local disk discovery with libblkid and sysfs. A disk may become part of a pool only when the
 * configuration allows its path (glob patterns) and it is free: no signature of any kind (no
 * filesystem, no partition table, no RAID or LVM label), no partitions, not mounted, not held by
 * another device (device-mapper, md, bcache). A disk with any signature is never written.
 *
 * Disks that already are PVs of this node's pools (an LVM2_member signature on an allowed disk)
 * are reported as such, so pools are found again after a restart.
 *
 * Blocking (opens and probes devices): call it from a worker thread.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "../basic/macro.h"

typedef enum DiskClass {
        DISK_CLASS_HDD,
        DISK_CLASS_SSD,
        DISK_CLASS_NVME,
        _DISK_CLASS_MAX,
        _DISK_CLASS_INVALID = -EINVAL,
} DiskClass;

/* "HDD", "SSD", "NVMe": the spelling of the LocalStorageNode API. from_string is case-insensitive. */
const char *disk_class_to_string(DiskClass c);
DiskClass disk_class_from_string(const char *s);

typedef enum DiskState {
        DISK_FREE, /* may be added to a pool */
        DISK_LVM,  /* an LVM PV (LVM2_member): maybe one of ours, lvs tells */
        DISK_BUSY, /* in use by something else: never touched */
        _DISK_STATE_MAX,
        _DISK_STATE_INVALID = -EINVAL,
} DiskState;

const char *disk_state_to_string(DiskState s);

typedef struct Disk {
        char *name;     /* "sdb", "nvme0n1", "loop3" */
        char *dev_path; /* "/dev/sdb" */
        dev_t devnum;
        uint64_t size; /* bytes */
        DiskClass class;
        bool rotational, read_only, removable;
        DiskState state;
        char *reason;    /* for DISK_BUSY: why, for people ("has an ext4 filesystem", "is mounted at
                          * /var", "has partitions", "is held by dm-0"); several reasons are joined
                          * with "; " */
        char *signature; /* what libblkid found: the TYPE ("ext4", "LVM2_member") or the PTTYPE
                          * ("dos", "gpt") of a partition table; NULL when nothing */
} Disk;

typedef struct DiskScanOptions {
        char *const *allow;           /* glob patterns on /dev paths; NULL or empty: no disk */
        char *const *class_overrides; /* "PATTERN=CLASS" ("/dev/loop1=SSD") */
        const char *sysfs;            /* "/sys" unless a test says otherwise */
} DiskScanOptions;

/*
 * Every allowed disk (whole block devices only, no partitions), sorted by path (strverscmp:
 * /dev/loop2 before /dev/loop10). Never reported: ram*, zram*, dm-*, md*, sr*, fd*, hidden devices
 * (NVMe multipath paths) and devices of size 0 (loop devices without a backing file, drives
 * without a medium), nor a disk that disappears while it is probed. A disk that cannot be opened
 * or probed is reported DISK_BUSY with the error as reason. An LVM2_member disk stays DISK_LVM
 * when device-mapper devices hold it (its LVs are active). -EINVAL: an invalid class override.
 */
int disk_scan(const DiskScanOptions *options, Disk **ret, size_t *ret_n);

/*
 * One device: its size, class and state, as disk_scan() would report it; dev_path may be any node
 * or symlink of the device, the Disk names the canonical /dev/NAME, and that is what must be
 * allowed. Errors: -EPERM not allowed, -ENOTBLK not a whole disk of a kind that can be a pool disk
 * (a partition, dm-*, ...), -ENXIO size 0 (a detached loop device), -ENOENT/-ENODEV gone,
 * -EINVAL an invalid class override.
 */
int disk_probe(const DiskScanOptions *options, const char *dev_path, Disk *ret);

void disk_done(Disk *d);
void disks_free(Disk *d, size_t n);

/* True when path matches one of the patterns (fnmatch, FNM_PATHNAME). */
bool disk_path_allowed(char *const *patterns, const char *path);
