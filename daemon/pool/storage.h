/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The node's storage: its pools and the volumes in them, whatever the backend.
 *
 *   lvm   pools are LVM volume groups LocalStorage_Pool<Class>, built from the free disks the
 *         configuration allows (one VG per class, extended as disks appear), volumes are LVs.
 *         Without device-mapper (activation off) LVs stay inactive and their data is reached
 *         through their extents on the PVs.
 *   file  pools are directories of sparse files, with a configured capacity: the try-it backend.
 *
 * Everything that blocks runs on worker threads; operations are queued and run one at a time,
 * each ending with a fresh snapshot of pools, disks and volumes, which the owner reads on the
 * loop (storage_snapshot()) to write the LocalStorageNode and the replicas' status.
 */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "../basic/macro.h"
#include "../basic/time-util.h"
#include "../volume/blockio.h"
#include "disk.h"

#define STORAGE_POOL_PREFIX      "LocalStorage_Pool"
#define STORAGE_VOLUMES_PER_POOL 1000
#define STORAGE_VOLUME_MIN_SIZE  (4ULL * 1024 * 1024)

typedef enum StorageBackend {
        STORAGE_BACKEND_LVM,
        STORAGE_BACKEND_FILE,
        _STORAGE_BACKEND_MAX,
        _STORAGE_BACKEND_INVALID = -EINVAL,
} StorageBackend;

const char *storage_backend_to_string(StorageBackend b);
StorageBackend storage_backend_from_string(const char *s);

typedef struct StorageConfig {
        StorageBackend backend;
        /* lvm */
        bool lvm_activation;
        char *const *disks;         /* glob patterns of disks that may be used */
        char *const *disk_classes;  /* "PATTERN=CLASS" overrides */
        const char *lvm_system_dir; /* this node's LVM configuration directory */
        const char *lvm_run_dir;
        const char *sysfs;
        /* file */
        const char *file_dir;      /* pools are FILE_DIR/<pool>/ */
        uint64_t file_capacity;    /* per pool */
        char *const *file_classes; /* which pools exist: "HDD", "SSD", "NVMe" */
} StorageConfig;

typedef enum StorageDiskState {
        STORAGE_DISK_AVAILABLE, /* free, not (yet) in a pool */
        STORAGE_DISK_IN_USE,    /* a PV of one of our pools */
        STORAGE_DISK_OFFLINE,   /* a PV of ours that is gone or failing */
        _STORAGE_DISK_STATE_MAX,
        _STORAGE_DISK_STATE_INVALID = -EINVAL,
} StorageDiskState;

/* "Available", "InUse", "Offline", as the LocalStorageNode API spells them. */
const char *storage_disk_state_to_string(StorageDiskState s);

typedef struct StorageDisk {
        char *dev_path;
        DiskClass class;
        uint64_t capacity;
        StorageDiskState state;
        char *pool; /* NULL when in no pool */
} StorageDisk;

typedef struct StorageVolume {
        char *name;
        char *pool;
        uint64_t size;
        char **disks;         /* devices holding its data (PVs, or the pool directory) */
        BlockExtent *extents; /* where its data lives when it has no device of its own */
        size_t n_extents;
        char *path;   /* the block device or file when it has one, else NULL */
        char *owner;  /* who created it (a replica's UID), NULL when unknown */
        bool offline; /* a disk under it is missing */
        bool open;    /* its device is open (LVM's lv_device_open): mounted or used, by us or others */
} StorageVolume;

typedef struct StoragePool {
        char *name;
        DiskClass class;
        uint64_t total, used, free, extent_size;
        unsigned volume_count;
        unsigned disk_count; /* disks the pool is made of, present or not */
        bool offline;        /* one of its disks is missing */
        char *message;       /* why it is offline */
} StoragePool;

typedef struct StorageSnapshot {
        StoragePool *pools;
        size_t n_pools;
        StorageDisk *disks;
        size_t n_disks;
        StorageVolume *volumes;
        size_t n_volumes;
        usec_t taken; /* CLOCK_MONOTONIC */
} StorageSnapshot;

typedef struct Storage Storage;

/* error is 0 or negative; message explains a failure for people (for status conditions). */
typedef void (*StorageDoneFn)(int error, const char *message, void *userdata);
/* Called on the loop after every new snapshot. */
typedef void (*StorageChangedFn)(Storage *s, void *userdata);

int storage_new(sd_event *e, const StorageConfig *config, StorageChangedFn changed, void *userdata,
                Storage **ret);
Storage *storage_free(Storage *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Storage *, storage_free);

StorageBackend storage_backend(const Storage *s);

/* Since when (CLOCK_MONOTONIC) the current blocking step (an LVM command, a disk scan) runs; 0
 * when idle. A status page says "LVM busy for 42 s" while the loop carries on. */
usec_t storage_busy_since(const Storage *s);

/* Rescans disks, builds or extends pools from free allowed disks, and takes a snapshot. */
int storage_refresh(Storage *s, StorageDoneFn done, void *userdata);

/* NULL before the first refresh completed. Valid until the next snapshot replaces it. */
const StorageSnapshot *storage_snapshot(const Storage *s);
const StoragePool *storage_find_pool(const Storage *s, const char *pool);
const StorageVolume *storage_find_volume(const Storage *s, const char *pool, const char *name);

/*
 * Volume operations. name must be a valid volume name (storage_volume_name_is_valid()), size at
 * least STORAGE_VOLUME_MIN_SIZE; it is rounded up to the pool's extent size. Creating a volume that
 * exists with at least that size succeeds; resizing only grows (-EINVAL with a message for a
 * shrink); deleting a volume that does not exist succeeds.
 *
 * owner (a replica's UID; [A-Za-z0-9-], NULL for none) is recorded with the volume (an LVM tag, an
 * extended attribute of the file) and checked by every later operation: a volume that belongs to
 * someone else is never grown, adopted or removed (-EPERM with a message). A volume that is open
 * (storage_volume_open() without storage_volume_release()) is never removed (-EBUSY).
 */
int storage_volume_create(Storage *s, const char *pool, const char *name, uint64_t size, const char *owner,
                          StorageDoneFn done, void *userdata);
int storage_volume_resize(Storage *s, const char *pool, const char *name, uint64_t size, const char *owner,
                          StorageDoneFn done, void *userdata);
int storage_volume_delete(Storage *s, const char *pool, const char *name, const char *owner,
                          StorageDoneFn done, void *userdata);

/* Forgets the callbacks of queued and running operations that were given this userdata (their
 * owner is going away); the operations themselves still run. */
void storage_forget_callbacks(Storage *s, void *userdata);

/* Opens a volume's data (the extents when it has no device of its own). The volume counts as in
 * use, and cannot be removed, until storage_volume_release() after blockdev_close(). */
int storage_volume_open(Storage *s, const char *pool, const char *name, unsigned flags, BlockDev **ret);
void storage_volume_release(Storage *s, const char *pool, const char *name);
unsigned storage_volume_users(const Storage *s, const char *pool, const char *name);

/* "/dev/<pool>/<name>": the path the API reports, whether or not it exists on this host. */
char *storage_volume_dev_path(const char *pool, const char *name);

/* A volume name that is a valid LV name and a valid file name: no '/', no leading '.' or '-'. */
bool storage_volume_name_is_valid(const char *name);
