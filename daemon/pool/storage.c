/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "../basic/hashmap.h"
#include "../basic/list.h"
#include "../basic/string-util.h"
#include "../basic/worker.h"
#include "../log/log.h"
#include "lvm-report.h"
#include "lvm.h"
#include "storage.h"

/* ---- names and small helpers ----------------------------------------------------------------- */

static const char *const storage_backend_table[_STORAGE_BACKEND_MAX] = {
        [STORAGE_BACKEND_LVM] = "lvm",
        [STORAGE_BACKEND_FILE] = "file",
};

DEFINE_STRING_TABLE_TO_STRING(storage_backend, StorageBackend, storage_backend_table)

StorageBackend storage_backend_from_string(const char *s) {
        for (StorageBackend b = 0; b < _STORAGE_BACKEND_MAX; b++)
                if (streq_ptr(s, storage_backend_table[b]))
                        return b;
        return _STORAGE_BACKEND_INVALID;
}

static const char *const storage_disk_state_table[_STORAGE_DISK_STATE_MAX] = {
        [STORAGE_DISK_AVAILABLE] = "Available",
        [STORAGE_DISK_IN_USE] = "InUse",
        [STORAGE_DISK_OFFLINE] = "Offline",
};

DEFINE_STRING_TABLE_TO_STRING(storage_disk_state, StorageDiskState, storage_disk_state_table)

bool storage_volume_name_is_valid(const char *name) {
        size_t n;

        if (!name)
                return false;
        n = strlen(name);
        /* An LV name and a file name at once; Kubernetes names (PV names) always fit. */
        return n > 0 && n <= 120 &&
               strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+_.-") == n &&
               name[0] != '-' && name[0] != '.' && lvm_name_is_valid(name);
}

char *storage_volume_dev_path(const char *pool, const char *name) {
        char *p;

        if (asprintf(&p, "/dev/%s/%s", pool, name) < 0)
                return NULL;
        return p;
}

static char *pool_name_for_class(DiskClass c) {
        char *p;

        if (asprintf(&p, STORAGE_POOL_PREFIX "%s", disk_class_to_string(c)) < 0)
                return NULL;
        return p;
}

static DiskClass pool_class(const char *pool) {
        const char *c = startswith(pool, STORAGE_POOL_PREFIX);
        return c ? disk_class_from_string(c) : _DISK_CLASS_INVALID;
}

static void snapshot_free(StorageSnapshot *s) {
        if (!s)
                return;
        for (size_t i = 0; i < s->n_pools; i++) {
                free(s->pools[i].name);
                free(s->pools[i].message);
        }
        for (size_t i = 0; i < s->n_disks; i++) {
                free(s->disks[i].dev_path);
                free(s->disks[i].pool);
        }
        for (size_t i = 0; i < s->n_volumes; i++) {
                StorageVolume *v = &s->volumes[i];
                free(v->name);
                free(v->pool);
                free(v->path);
                free(v->owner);
                strv_free(v->disks);
                for (size_t j = 0; j < v->n_extents; j++)
                        free((char *) v->extents[j].path);
                free(v->extents);
        }
        free(s->pools);
        free(s->disks);
        free(s->volumes);
        free(s);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(StorageSnapshot *, snapshot_free);

/* Growable arrays in a snapshot. */
#define STORAGE_OWNER_TAG   "hwameid_owner_"
#define STORAGE_OWNER_XATTR "user.hwameid.owner"

static bool owner_is_valid(const char *owner) {
        size_t n = owner ? strlen(owner) : 0;
        return n > 0 && n <= 64 &&
               strspn(owner, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") == n;
}

/* The owner named in LVM's comma-separated tags, or NULL. */
static char *owner_from_tags(const char *tags) {
        const char *p;
        size_t n;

        if (!tags || !(p = strstr(tags, STORAGE_OWNER_TAG)))
                return NULL;
        p += strlen(STORAGE_OWNER_TAG);
        n = strcspn(p, ",");
        return n > 0 ? strndup(p, n) : NULL;
}

#define SNAPSHOT_APPEND(array, n, ret)                                                                      \
        ({                                                                                                  \
                __typeof__(array) _a_ = realloc((array), sizeof(*(array)) * ((n) + 1));                     \
                if (_a_) {                                                                                  \
                        (array) = _a_;                                                                      \
                        (ret) = &(array)[(n)++];                                                            \
                        memset((ret), 0, sizeof(*(ret)));                                                   \
                }                                                                                           \
                _a_ ? 0 : -ENOMEM;                                                                          \
        })

/* The pool of that name in a snapshot, or NULL. */
static StoragePool *snapshot_find_pool(const StorageSnapshot *snap, const char *name) {
        for (size_t i = 0; snap && i < snap->n_pools; i++)
                if (streq(snap->pools[i].name, name))
                        return &snap->pools[i];
        return NULL;
}

/* ---- operations ------------------------------------------------------------------------------ */

typedef enum StorageOpType {
        OP_REFRESH,
        OP_CREATE,
        OP_RESIZE,
        OP_DELETE,
} StorageOpType;

typedef struct StorageOp StorageOp;
struct StorageOp {
        Storage *storage;
        StorageOpType type;
        char *pool, *name, *owner;
        uint64_t size;
        StorageDoneFn done;
        void *userdata;
        int error;
        char message[512];

        /* work for the threads */
        StorageSnapshot *result; /* file backend and disk scans produce a snapshot / disks */
        Disk *disks;
        size_t n_disks;
        char **pending_cmds; /* LVM command lines still to run, in order */
        size_t next_cmd;
        char *vgs_report, *pvs_report, *lvs_report;
        bool pools_extended; /* refresh: the second pass, after adding free disks, is done */

        LIST_FIELDS(StorageOp, ops);
};

struct Storage {
        sd_event *event;
        StorageBackend backend;
        bool lvm_activation;
        char **disks, **disk_classes, **file_classes;
        char *sysfs, *file_dir;
        uint64_t file_capacity;
        StorageChangedFn changed;
        void *userdata;

        Worker *worker;
        LvmWorker *lvm;
        StorageSnapshot *snapshot;
        StorageOp *running;
        sd_event_source *defer; /* starts the next operation */
        Hashmap *users;         /* "pool/name" → VolumeUsers: volumes that are open */
        LIST_HEAD(StorageOp, queue);
        bool freeing; /* completions that arrive now only free their operation */
};

static void storage_op_free(StorageOp *op) {
        if (!op)
                return;
        snapshot_free(op->result);
        disks_free(op->disks, op->n_disks);
        strv_free(op->pending_cmds);
        free(op->vgs_report);
        free(op->pvs_report);
        free(op->lvs_report);
        free(op->pool);
        free(op->name);
        free(op->owner);
        free(op);
}

static void storage_next(Storage *s);

static void storage_op_finish(StorageOp *op, int error, const char *fmt, ...) _printf_(3, 4);
static void storage_op_finish(StorageOp *op, int error, const char *fmt, ...) {
        Storage *s = op->storage;

        if (s->freeing) {
                if (s->running == op)
                        s->running = NULL;
                storage_op_free(op);
                return;
        }
        if (error < 0 && fmt) {
                /* Formatted aside first: the arguments may be op->message itself. */
                char buf[sizeof(op->message)];
                va_list ap;
                va_start(ap, fmt);
                (void) vsnprintf(buf, sizeof(buf), fmt, ap);
                va_end(ap);
                memcpy(op->message, buf, sizeof(buf));
        }
        s->running = NULL;
        if (op->done)
                op->done(error, error < 0 ? op->message : NULL, op->userdata);
        storage_op_free(op);
        storage_next(s);
}

static void storage_install_snapshot(Storage *s, StorageSnapshot **snap) {
        snapshot_free(s->snapshot);
        s->snapshot = TAKE_PTR(*snap);
        s->snapshot->taken = now(CLOCK_MONOTONIC);
        if (s->changed)
                s->changed(s, s->userdata);
}

/* ---- the file backend (runs on the worker thread) ---------------------------------------------- */

static int file_pool_path(const Storage *s, const char *pool, const char *name, char **ret) {
        return asprintf(ret, "%s/%s%s%s", s->file_dir, pool, name ? "/" : "", strempty(name)) < 0 ? -ENOMEM
                                                                                                  : 0;
}

static int file_scan(const Storage *s, StorageSnapshot **ret) {
        _cleanup_(snapshot_freep) StorageSnapshot *snap = calloc(1, sizeof(StorageSnapshot));
        int r;

        if (!snap)
                return -ENOMEM;
        /* mkdir -p: on a fresh machine /var/lib/hwameid may not exist yet (the unit's
         * StateDirectory= makes it under systemd). */
        _cleanup_free_ char *top = strdup(s->file_dir);
        if (!top)
                return -ENOMEM;
        for (char *slash = strchr(top + 1, '/');; slash = strchr(slash + 1, '/')) {
                if (slash)
                        *slash = '\0';
                int k = mkdir(top, 0700) < 0 && errno != EEXIST ? -errno : 0;
                if (slash)
                        *slash = '/';
                if (k < 0)
                        return k;
                if (!slash)
                        break;
        }

        for (char **c = s->file_classes; c && *c; c++) {
                _cleanup_free_ char *pool = NULL, *dir = NULL;
                bool seen = false;
                DIR *d;
                struct dirent *de;
                StoragePool *p;
                StorageDisk *disk;
                DiskClass class = disk_class_from_string(*c);

                if (class < 0)
                        return -EINVAL;
                pool = pool_name_for_class(class);
                if (!pool || file_pool_path(s, pool, NULL, &dir) < 0)
                        return -ENOMEM;
                for (size_t i = 0; i < snap->n_pools; i++)
                        seen = seen || streq(snap->pools[i].name, pool);
                if (seen)
                        continue;
                if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                        return -errno;

                r = SNAPSHOT_APPEND(snap->pools, snap->n_pools, p);
                if (r < 0)
                        return r;
                p->name = strdup(pool);
                if (!p->name)
                        return -ENOMEM;
                p->class = class;
                p->total = s->file_capacity;
                p->extent_size = 4096;

                r = SNAPSHOT_APPEND(snap->disks, snap->n_disks, disk);
                if (r < 0)
                        return r;
                disk->dev_path = strdup(dir);
                disk->pool = strdup(pool);
                if (!disk->dev_path || !disk->pool)
                        return -ENOMEM;
                disk->class = class;
                disk->capacity = s->file_capacity;
                disk->state = STORAGE_DISK_IN_USE;

                d = opendir(dir);
                if (!d)
                        return -errno;
                while ((de = readdir(d))) {
                        _cleanup_free_ char *path = NULL;
                        StorageVolume *v;
                        struct stat st;

                        if (!storage_volume_name_is_valid(de->d_name))
                                continue;
                        if (file_pool_path(s, pool, de->d_name, &path) < 0 || stat(path, &st) < 0 ||
                            !S_ISREG(st.st_mode))
                                continue;
                        if (SNAPSHOT_APPEND(snap->volumes, snap->n_volumes, v) < 0) {
                                closedir(d);
                                return -ENOMEM;
                        }
                        v->name = strdup(de->d_name);
                        v->pool = strdup(pool);
                        char owner[80];
                        ssize_t k = getxattr(path, STORAGE_OWNER_XATTR, owner, sizeof(owner) - 1);
                        if (k > 0) {
                                owner[k] = '\0';
                                v->owner = strdup(owner);
                        }
                        v->path = TAKE_PTR(path);
                        v->size = (uint64_t) st.st_size;
                        if (!v->name || !v->pool || strv_extend(&v->disks, dir) < 0) {
                                closedir(d);
                                return -ENOMEM;
                        }
                        p->used += v->size;
                        p->volume_count++;
                }
                closedir(d);
                p->free = p->used >= p->total ? 0 : p->total - p->used;
        }
        *ret = TAKE_PTR(snap);
        return 0;
}

static int file_run(void *job, void *state) {
        StorageOp *op = job;
        Storage *s = op->storage;
        _cleanup_free_ char *path = NULL;
        int r = 0;

        (void) state;
        if (op->type != OP_REFRESH) {
                if (file_pool_path(s, op->pool, op->name, &path) < 0)
                        return -ENOMEM;
        }

        switch (op->type) {
        case OP_REFRESH:
                break;
        case OP_CREATE: {
                _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                if (fd < 0 && errno == EEXIST)
                        break; /* sizes are checked on the loop */
                /* Filesystems without user xattrs keep no owner; the replica checks then rest on names. */
                if (fd >= 0 && op->owner)
                        (void) fsetxattr(fd, STORAGE_OWNER_XATTR, op->owner, strlen(op->owner), 0);
                if (fd < 0 || ftruncate(fd, (off_t) op->size) < 0 || fsync(fd) < 0) {
                        r = -errno;
                        snprintf(op->message, sizeof(op->message), "creating '%s' failed: %s", path,
                                 strerror(-r));
                        (void) unlink(path);
                }
                break;
        }
        case OP_RESIZE:
                if (truncate(path, (off_t) op->size) < 0) {
                        r = -errno;
                        snprintf(op->message, sizeof(op->message), "growing '%s' failed: %s", path,
                                 strerror(-r));
                }
                break;
        case OP_DELETE:
                if (unlink(path) < 0 && errno != ENOENT) {
                        r = -errno;
                        snprintf(op->message, sizeof(op->message), "removing '%s' failed: %s", path,
                                 strerror(-r));
                }
                break;
        }

        /* Every operation ends with a fresh look. */
        int k = file_scan(s, &op->result);
        if (r >= 0 && k < 0) {
                r = k;
                snprintf(op->message, sizeof(op->message), "scanning '%s' failed: %s", s->file_dir,
                         strerror(-k));
        }
        return r;
}

static void file_done(void *job, int result, void *userdata) {
        StorageOp *op = job;

        (void) userdata;
        if (op->storage->freeing) {
                storage_op_finish(op, -ECANCELED, NULL);
                return;
        }
        if (op->result)
                storage_install_snapshot(op->storage, &op->result);
        storage_op_finish(op, result, "%s", op->message);
}

/* ---- the LVM backend --------------------------------------------------------------------------- */

static void lvm_step(StorageOp *op);

/* Builds the snapshot from vgs, pvs and lvs reports. scanned (optional) lists the disks found by
 * the last scan; those that are free appear as Available. */
static int lvm_snapshot_build(Storage *s, const Disk *scanned, size_t n_scanned, const char *vgs_json,
                              const char *pvs_json, const char *lvs_json, StorageSnapshot **ret) {
        _cleanup_(snapshot_freep) StorageSnapshot *snap = calloc(1, sizeof(StorageSnapshot));
        LvmVg *vgs = NULL;
        LvmPv *pvs = NULL;
        LvmLv *lvs = NULL;
        size_t n_vgs = 0, n_pvs = 0, n_lvs = 0;
        int r;

        if (!snap)
                return -ENOMEM;
        r = lvm_report_parse_vgs(vgs_json, &vgs, &n_vgs);
        if (r >= 0)
                r = lvm_report_parse_pvs(pvs_json, &pvs, &n_pvs);
        if (r >= 0)
                r = lvm_report_parse_lvs(lvs_json, &lvs, &n_lvs);
        if (r < 0)
                goto finish;

        for (size_t i = 0; i < n_vgs; i++) {
                StoragePool *p;

                if (pool_class(vgs[i].name) < 0)
                        continue; /* not ours */
                r = SNAPSHOT_APPEND(snap->pools, snap->n_pools, p);
                if (r < 0)
                        goto finish;
                p->name = strdup(vgs[i].name);
                if (!p->name) {
                        r = -ENOMEM;
                        goto finish;
                }
                p->class = pool_class(vgs[i].name);
                p->total = vgs[i].size;
                p->free = vgs[i].free;
                p->used = vgs[i].size - MIN(vgs[i].free, vgs[i].size);
                p->extent_size = vgs[i].extent_size;
                p->volume_count = vgs[i].lv_count;
                p->disk_count = vgs[i].pv_count;
        }

        for (size_t i = 0; i < n_pvs; i++) {
                StorageDisk *d;
                StoragePool *pool = snapshot_find_pool(snap, pvs[i].vg_name);

                if (!pool)
                        continue;
                r = SNAPSHOT_APPEND(snap->disks, snap->n_disks, d);
                if (r < 0)
                        goto finish;
                d->dev_path = strdup(pvs[i].name);
                d->pool = strdup(pool->name);
                if (!d->dev_path || !d->pool) {
                        r = -ENOMEM;
                        goto finish;
                }
                d->class = pool->class;
                d->capacity = pvs[i].size;
                d->state = pvs[i].missing ? STORAGE_DISK_OFFLINE : STORAGE_DISK_IN_USE;
                if (pvs[i].missing) {
                        pool->offline = true;
                        free(pool->message);
                        if (asprintf(&pool->message, "disk %s is missing", pvs[i].name) < 0)
                                pool->message = NULL;
                }
        }

        /* A VG that counts more PVs than are present has lost some, whether or not pvs lists them
         * as missing (it does not always, right after a disk went away). */
        for (size_t j = 0; j < snap->n_pools; j++) {
                StoragePool *pool = &snap->pools[j];
                unsigned present = 0;

                for (size_t k = 0; k < snap->n_disks; k++)
                        if (streq_ptr(snap->disks[k].pool, pool->name) &&
                            snap->disks[k].state == STORAGE_DISK_IN_USE)
                                present++;
                if (present < pool->disk_count && !pool->offline) {
                        pool->offline = true;
                        if (asprintf(&pool->message, "%u of its %u disks are missing",
                                     pool->disk_count - present, pool->disk_count) < 0)
                                pool->message = NULL;
                }
        }

        /* Free disks that are not (yet) in a pool. */
        for (size_t i = 0; i < n_scanned; i++) {
                StorageDisk *d;
                bool known = false;

                for (size_t j = 0; j < snap->n_disks; j++)
                        if (streq(snap->disks[j].dev_path, scanned[i].dev_path))
                                known = true;
                if (known || scanned[i].state != DISK_FREE)
                        continue;
                r = SNAPSHOT_APPEND(snap->disks, snap->n_disks, d);
                if (r < 0)
                        goto finish;
                d->dev_path = strdup(scanned[i].dev_path);
                if (!d->dev_path) {
                        r = -ENOMEM;
                        goto finish;
                }
                d->class = scanned[i].class;
                d->capacity = scanned[i].size;
                d->state = STORAGE_DISK_AVAILABLE;
        }

        for (size_t i = 0; i < n_lvs; i++) {
                StorageVolume *v;
                const StoragePool *pool = snapshot_find_pool(snap, lvs[i].vg_name);

                if (!pool)
                        continue;
                r = SNAPSHOT_APPEND(snap->volumes, snap->n_volumes, v);
                if (r < 0)
                        goto finish;
                v->name = strdup(lvs[i].name);
                v->pool = strdup(pool->name);
                if (!v->name || !v->pool) {
                        r = -ENOMEM;
                        goto finish;
                }
                v->size = lvs[i].size;
                v->open = lvs[i].open;
                v->owner = owner_from_tags(lvs[i].tags);
                if (s->lvm_activation) {
                        v->path = storage_volume_dev_path(pool->name, lvs[i].name);
                        if (!v->path) {
                                r = -ENOMEM;
                                goto finish;
                        }
                }
                v->extents = calloc(MAX(lvs[i].n_ranges, (size_t) 1), sizeof(BlockExtent));
                if (!v->extents) {
                        r = -ENOMEM;
                        goto finish;
                }
                for (size_t k = 0; k < lvs[i].n_ranges; k++) {
                        const LvmExtentRange *er = &lvs[i].ranges[k];
                        const LvmPv *pv = NULL;

                        for (size_t j = 0; j < n_pvs; j++)
                                if (streq(pvs[j].name, er->pv))
                                        pv = &pvs[j];
                        if (!pv || pv->missing) {
                                v->offline = true;
                                continue;
                        }
                        v->extents[v->n_extents++] = (BlockExtent){
                                .path = strdup(pv->name),
                                .offset = pv->pe_start + er->pe_first * pool->extent_size,
                                .length = (er->pe_last - er->pe_first + 1) * pool->extent_size,
                        };
                        if (!v->extents[v->n_extents - 1].path) {
                                r = -ENOMEM;
                                goto finish;
                        }
                        if (!strv_contains(v->disks, pv->name) && strv_extend(&v->disks, pv->name) < 0) {
                                r = -ENOMEM;
                                goto finish;
                        }
                }
        }
        *ret = TAKE_PTR(snap);
        r = 0;
finish:
        lvm_vgs_free(vgs, n_vgs);
        lvm_pvs_free(pvs, n_pvs);
        lvm_lvs_free(lvs, n_lvs);
        return r;
}

/* Pools of the previous snapshot that LVM no longer reports (every disk under them vanished) stay,
 * offline, with their disks and volumes, so that the LocalStorageNode and the replicas say what
 * happened instead of forgetting the pool. */
static int snapshot_carry_lost_pools(const StorageSnapshot *old, StorageSnapshot *snap) {
        for (size_t i = 0; old && i < old->n_pools; i++) {
                const StoragePool *op = &old->pools[i];
                StoragePool *p;
                bool present = false;

                StoragePool *now_pool = NULL;
                for (size_t j = 0; j < snap->n_pools; j++)
                        if (streq(snap->pools[j].name, op->name))
                                now_pool = &snap->pools[j];
                present = now_pool != NULL;
                if (present) {
                        /* Still there but missing disks: the disks and volumes LVM no longer
                         * shows stay, offline. */
                        if (!now_pool->offline)
                                continue;
                        for (size_t j = 0; j < old->n_disks; j++) {
                                const StorageDisk *od = &old->disks[j];
                                StorageDisk *d;
                                bool listed = false;

                                if (!streq_ptr(od->pool, op->name))
                                        continue;
                                for (size_t k = 0; k < snap->n_disks; k++)
                                        listed = listed || streq(snap->disks[k].dev_path, od->dev_path);
                                if (listed)
                                        continue;
                                if (SNAPSHOT_APPEND(snap->disks, snap->n_disks, d) < 0 ||
                                    !(d->dev_path = strdup(od->dev_path)) || !(d->pool = strdup(od->pool)))
                                        return -ENOMEM;
                                d->class = od->class;
                                d->capacity = od->capacity;
                                d->state = STORAGE_DISK_OFFLINE;
                        }
                        for (size_t j = 0; j < old->n_volumes; j++) {
                                const StorageVolume *ov = &old->volumes[j];
                                StorageVolume *v;
                                bool listed = false;

                                if (!streq(ov->pool, op->name))
                                        continue;
                                for (size_t k = 0; k < snap->n_volumes; k++)
                                        listed = listed || (streq(snap->volumes[k].pool, ov->pool) &&
                                                            streq(snap->volumes[k].name, ov->name));
                                if (listed)
                                        continue;
                                if (SNAPSHOT_APPEND(snap->volumes, snap->n_volumes, v) < 0 ||
                                    !(v->name = strdup(ov->name)) || !(v->pool = strdup(ov->pool)) ||
                                    !(v->disks = strv_copy(ov->disks)) ||
                                    (ov->owner && !(v->owner = strdup(ov->owner))))
                                        return -ENOMEM;
                                v->size = ov->size;
                                v->offline = true;
                        }
                        continue;
                }

                if (SNAPSHOT_APPEND(snap->pools, snap->n_pools, p) < 0 || !(p->name = strdup(op->name)))
                        return -ENOMEM;
                p->class = op->class;
                p->total = op->total;
                p->used = op->used;
                p->free = 0;
                p->extent_size = op->extent_size;
                p->volume_count = op->volume_count;
                p->offline = true;

                for (size_t j = 0; j < old->n_disks; j++) {
                        const StorageDisk *od = &old->disks[j];
                        StorageDisk *d;
                        char *m = NULL;

                        if (!streq_ptr(od->pool, op->name))
                                continue;
                        if (SNAPSHOT_APPEND(snap->disks, snap->n_disks, d) < 0 ||
                            !(d->dev_path = strdup(od->dev_path)) || !(d->pool = strdup(od->pool)))
                                return -ENOMEM;
                        d->class = od->class;
                        d->capacity = od->capacity;
                        d->state = STORAGE_DISK_OFFLINE;
                        if (asprintf(&m, "%s%s%s", strempty(p->message),
                                     p->message ? ", " : "disk missing: ", od->dev_path) < 0)
                                return -ENOMEM;
                        free(p->message);
                        p->message = m;
                }
                for (size_t j = 0; j < old->n_volumes; j++) {
                        const StorageVolume *ov = &old->volumes[j];
                        StorageVolume *v;

                        if (!streq(ov->pool, op->name))
                                continue;
                        if (SNAPSHOT_APPEND(snap->volumes, snap->n_volumes, v) < 0 ||
                            !(v->name = strdup(ov->name)) || !(v->pool = strdup(ov->pool)) ||
                            !(v->disks = strv_copy(ov->disks)))
                                return -ENOMEM;
                        v->size = ov->size;
                        v->offline = true;
                        if (ov->owner && !(v->owner = strdup(ov->owner)))
                                return -ENOMEM;
                }
        }
        return 0;
}

/* The report commands every LVM operation ends with. */
static int lvm_queue_reports(StorageOp *op) {
        static const char *const reports[] = {
                "vgs --reportformat json --units b --nosuffix -o " LVM_VG_FIELDS,
                "pvs --reportformat json --units b --nosuffix -o " LVM_PV_FIELDS,
                "lvs --reportformat json --units b --nosuffix -o " LVM_LV_FIELDS,
        };
        for (size_t i = 0; i < ELEMENTSOF(reports); i++)
                if (strv_extend(&op->pending_cmds, reports[i]) < 0)
                        return -ENOMEM;
        return 0;
}

static void lvm_on_cmd(LvmResult *res, void *userdata) {
        StorageOp *op = userdata;
        const char *cmd = op->pending_cmds[op->next_cmd];
        char **slot = NULL;

        if (op->storage->freeing) {
                storage_op_finish(op, -ECANCELED, NULL);
                return;
        }

        if (startswith(cmd, "vgs "))
                slot = &op->vgs_report;
        else if (startswith(cmd, "pvs "))
                slot = &op->pvs_report;
        else if (startswith(cmd, "lvs "))
                slot = &op->lvs_report;

        if (res->error < 0) {
                op->error = res->error;
                snprintf(op->message, sizeof(op->message), "'%.*s' failed: %s", (int) strcspn(cmd, " "), cmd,
                         strempty(res->errors));
                /* The reports still run, so the snapshot tells what is now true. */
                while (op->pending_cmds[op->next_cmd + 1] &&
                       !startswith(op->pending_cmds[op->next_cmd + 1], "vgs "))
                        op->next_cmd++;
        } else if (slot) {
                free(*slot);
                *slot = TAKE_PTR(res->report);
        }
        op->next_cmd++;
        lvm_step(op);
}

/* After the first reports of a refresh: add every free disk to the pool of its class. Returns
 * the number of commands queued. */
static int lvm_queue_pool_growth(StorageOp *op, const StorageSnapshot *snap) {
        int n = 0;

        for (size_t i = 0; i < snap->n_disks; i++) {
                const StorageDisk *d = &snap->disks[i];
                _cleanup_free_ char *pool = NULL, *pvcreate = NULL, *vgcmd = NULL;
                bool exists = false;

                if (d->state != STORAGE_DISK_AVAILABLE)
                        continue;
                pool = pool_name_for_class(d->class);
                if (!pool)
                        return -ENOMEM;
                /* A pool whose disks vanished is not made again from other disks: its volumes
                 * would silently come back empty. It returns when its disks do. */
                const StoragePool *lost = storage_find_pool(op->storage, pool);
                bool present = false;
                for (size_t j = 0; j < snap->n_pools; j++)
                        if (streq(snap->pools[j].name, pool))
                                exists = present = true;
                if (lost && lost->offline && !present) {
                        log_ratelimit(LOG_WARNING, 10 * USEC_PER_MINUTE, 1,
                                      "Not adding disk %s: pool %s lost its disks (%s).", d->dev_path, pool,
                                      strna(lost->message));
                        continue;
                }
                /* A pool made by an earlier command of this same pass exists too. */
                for (char **c = op->pending_cmds + op->next_cmd; c && *c; c++)
                        if (startswith(*c, "vgcreate ") && strstr(*c, pool))
                                exists = true;
                if (asprintf(&pvcreate, "pvcreate %s", d->dev_path) < 0 ||
                    asprintf(&vgcmd, "%s %s %s", exists ? "vgextend" : "vgcreate", pool, d->dev_path) < 0)
                        return -ENOMEM;
                if (strv_extend(&op->pending_cmds, pvcreate) < 0 ||
                    strv_extend(&op->pending_cmds, vgcmd) < 0)
                        return -ENOMEM;
                log_info("Adding disk %s (%s, %s) to pool %s.", d->dev_path, disk_class_to_string(d->class),
                         FORMAT_BYTES(d->capacity), pool);
                n++;
        }
        return n;
}

static void lvm_step(StorageOp *op) {
        Storage *s = op->storage;
        _cleanup_(snapshot_freep) StorageSnapshot *snap = NULL;
        int r;

        if (op->pending_cmds && op->pending_cmds[op->next_cmd]) {
                r = lvm_run(s->lvm, op->pending_cmds[op->next_cmd], lvm_on_cmd, op);
                if (r < 0)
                        storage_op_finish(op, r, "failed to queue an LVM command: %s", strerror(-r));
                return;
        }

        if (!op->vgs_report || !op->pvs_report || !op->lvs_report) {
                storage_op_finish(op, op->error < 0 ? op->error : -EIO, "%s",
                                  op->error < 0 ? op->message : "LVM gave no report");
                return;
        }
        r = lvm_snapshot_build(s, op->type == OP_REFRESH ? op->disks : NULL,
                               op->type == OP_REFRESH ? op->n_disks : 0, op->vgs_report, op->pvs_report,
                               op->lvs_report, &snap);
        if (r < 0) {
                storage_op_finish(op, r, "LVM's reports could not be read: %s", strerror(-r));
                return;
        }

        if (op->type == OP_REFRESH && !op->pools_extended && op->error >= 0) {
                op->pools_extended = true;
                r = lvm_queue_pool_growth(op, snap);
                if (r < 0) {
                        storage_op_finish(op, r, "%s", strerror(-r));
                        return;
                }
                if (r > 0) {
                        r = lvm_queue_reports(op);
                        if (r < 0) {
                                storage_op_finish(op, r, "%s", strerror(-r));
                                return;
                        }
                        lvm_step(op);
                        return;
                }
        }

        if (snapshot_carry_lost_pools(s->snapshot, snap) < 0) {
                storage_op_finish(op, -ENOMEM, "out of memory");
                return;
        }

        /* Operations other than a refresh did not scan: keep the free disks we knew of. */
        if (op->type != OP_REFRESH && s->snapshot)
                for (size_t i = 0; i < s->snapshot->n_disks; i++) {
                        const StorageDisk *d = &s->snapshot->disks[i];
                        StorageDisk *n;

                        if (d->state != STORAGE_DISK_AVAILABLE)
                                continue;
                        if (SNAPSHOT_APPEND(snap->disks, snap->n_disks, n) < 0 ||
                            !(n->dev_path = strdup(d->dev_path))) {
                                storage_op_finish(op, -ENOMEM, "out of memory");
                                return;
                        }
                        n->class = d->class;
                        n->capacity = d->capacity;
                        n->state = d->state;
                }

        storage_install_snapshot(s, &snap);
        storage_op_finish(op, op->error, "%s", op->message);
}

/* The devices LVM may look at: every allowed disk that is free or already an LVM PV. */
static int lvm_update_devices(Storage *s, const Disk *disks, size_t n) {
        _cleanup_strv_free_ char **devs = NULL;

        for (size_t i = 0; i < n; i++)
                if ((disks[i].state == DISK_FREE || disks[i].state == DISK_LVM) &&
                    strv_extend(&devs, disks[i].dev_path) < 0)
                        return -ENOMEM;
        /* Keep PVs of our pools that vanished, so LVM reports them missing rather than not at all. */
        for (size_t i = 0; s->snapshot && i < s->snapshot->n_disks; i++) {
                const StorageDisk *d = &s->snapshot->disks[i];
                if (d->pool && !strv_contains(devs, d->dev_path) && strv_extend(&devs, d->dev_path) < 0)
                        return -ENOMEM;
        }
        return lvm_set_devices(s->lvm, devs);
}

static int disk_scan_run(void *job, void *state) {
        StorageOp *op = job;
        Storage *s = op->storage;
        const DiskScanOptions opts = {
                .allow = s->disks,
                .class_overrides = s->disk_classes,
                .sysfs = s->sysfs,
        };

        (void) state;
        return disk_scan(&opts, &op->disks, &op->n_disks);
}

static void disk_scan_done(void *job, int result, void *userdata) {
        StorageOp *op = job;
        Storage *s = op->storage;
        int r;

        (void) userdata;
        if (op->storage->freeing) {
                storage_op_finish(op, -ECANCELED, NULL);
                return;
        }
        if (result < 0) {
                storage_op_finish(op, result, "scanning disks failed: %s", strerror(-result));
                return;
        }
        for (size_t i = 0; i < op->n_disks; i++)
                if (op->disks[i].state == DISK_BUSY)
                        log_debug("Disk %s is not used: %s.", op->disks[i].dev_path,
                                  strna(op->disks[i].reason));
        r = lvm_update_devices(s, op->disks, op->n_disks);
        if (r >= 0)
                r = lvm_queue_reports(op);
        if (r < 0) {
                storage_op_finish(op, r, "%s", strerror(-r));
                return;
        }
        lvm_step(op);
}

/* ---- the queue ------------------------------------------------------------------------------- */

/* Checks a volume operation against the current snapshot; may complete it at once (returns 1). */
static int storage_op_check(StorageOp *op) {
        Storage *s = op->storage;
        const StoragePool *pool;
        const StorageVolume *v;

        if (op->type == OP_REFRESH)
                return 0;
        pool = storage_find_pool(s, op->pool);
        v = storage_find_volume(s, op->pool, op->name);
        if (v && v->owner && op->owner && !streq(v->owner, op->owner)) {
                op->error = -EPERM;
                snprintf(op->message, sizeof(op->message), "volume %s in pool %s belongs to %s, not %s",
                         op->name, op->pool, v->owner, op->owner);
                return -EPERM;
        }
        if (op->type == OP_DELETE) {
                if (!v)
                        return 1;
                if (storage_volume_users(s, op->pool, op->name) > 0) {
                        op->error = -EBUSY;
                        snprintf(op->message, sizeof(op->message), "volume %s in pool %s is open", op->name,
                                 op->pool);
                        return -EBUSY;
                }
                if (pool && pool->offline) {
                        op->error = -EIO;
                        snprintf(op->message, sizeof(op->message), "pool %s is offline: %s", pool->name,
                                 strna(pool->message));
                        return -EIO;
                }
                return 0;
        }
        if (!pool) {
                op->error = -ENOENT;
                snprintf(op->message, sizeof(op->message), "pool %s does not exist on this node", op->pool);
                return -ENOENT;
        }
        if (pool->extent_size > 0)
                op->size = ROUND_UP(op->size, pool->extent_size);
        if (op->type == OP_CREATE && v) {
                if (v->size >= op->size)
                        return 1;
                op->type = OP_RESIZE; /* it exists but is smaller: grow it */
        }
        if (op->type == OP_RESIZE) {
                if (!v) {
                        op->error = -ENOENT;
                        snprintf(op->message, sizeof(op->message), "volume %s does not exist in pool %s",
                                 op->name, op->pool);
                        return -ENOENT;
                }
                if (op->size < v->size) {
                        op->error = -EINVAL;
                        snprintf(op->message, sizeof(op->message),
                                 "volume %s has %" PRIu64 " bytes; shrinking to %" PRIu64 " is refused",
                                 op->name, v->size, op->size);
                        return -EINVAL;
                }
                if (op->size == v->size)
                        return 1;
        }
        uint64_t need = op->size - (v ? v->size : 0);
        if (pool->offline) {
                op->error = -EIO;
                snprintf(op->message, sizeof(op->message), "pool %s is offline: %s", pool->name,
                         strna(pool->message));
                return -EIO;
        }
        if (need > pool->free) {
                op->error = -ENOSPC;
                snprintf(op->message, sizeof(op->message),
                         "pool %s has %" PRIu64 " bytes free, %" PRIu64 " needed", pool->name, pool->free,
                         need);
                return -ENOSPC;
        }
        if (op->type == OP_CREATE && pool->volume_count >= STORAGE_VOLUMES_PER_POOL) {
                op->error = -ENOSPC;
                snprintf(op->message, sizeof(op->message), "pool %s holds %u volumes already", pool->name,
                         pool->volume_count);
                return -ENOSPC;
        }
        return 0;
}

static int storage_op_start(StorageOp *op) {
        Storage *s = op->storage;
        _cleanup_free_ char *cmd = NULL;
        const char *noact = s->lvm_activation ? "" : " --driverloaded n";
        int r;

        r = storage_op_check(op);
        if (r != 0)
                return r; /* 1: nothing to do; < 0: refused */

        if (s->backend == STORAGE_BACKEND_FILE)
                return worker_submit(s->worker, file_run, file_done, op, NULL);

        switch (op->type) {
        case OP_REFRESH:
                return worker_submit(s->worker, disk_scan_run, disk_scan_done, op, NULL);
        case OP_CREATE:
                r = asprintf(&cmd, "lvcreate -y%s%s -L %" PRIu64 "b%s%s -n %s %s", noact,
                             s->lvm_activation ? "" : " -an -Zn", op->size,
                             op->owner ? " --addtag " STORAGE_OWNER_TAG : "", strempty(op->owner), op->name,
                             op->pool);
                break;
        case OP_RESIZE:
                r = asprintf(&cmd, "lvextend%s -L %" PRIu64 "b %s/%s", noact, op->size, op->pool, op->name);
                break;
        case OP_DELETE:
                r = asprintf(&cmd, "lvremove -y%s %s/%s", noact, op->pool, op->name);
                break;
        }
        if (r < 0 || strv_extend(&op->pending_cmds, cmd) < 0 || lvm_queue_reports(op) < 0)
                return -ENOMEM;
        lvm_step(op);
        return 0;
}

static int storage_on_defer(sd_event_source *es, void *userdata) {
        Storage *s = userdata;
        StorageOp *op = NULL;
        int r;

        (void) es;
        if (s->running || !s->queue)
                return 0;
        /* Oldest first: the list is prepended to. */
        LIST_FOREACH (ops, i, s->queue)
                op = i;
        LIST_REMOVE(ops, s->queue, op);
        s->running = op;

        r = storage_op_start(op);
        if (r == 1)
                storage_op_finish(op, 0, NULL);
        else if (r < 0)
                storage_op_finish(op, r, "%s", op->message[0] ? op->message : strerror(-r));
        return 0;
}

/* Starts the next operation from the loop, never from inside the caller's call. */
static void storage_next(Storage *s) {
        if (!s->running && s->queue)
                (void) sd_event_source_set_enabled(s->defer, SD_EVENT_ONESHOT);
}

static int storage_enqueue(Storage *s, StorageOpType type, const char *pool, const char *name, uint64_t size,
                           const char *owner, StorageDoneFn done, void *userdata) {
        StorageOp *op;

        if (owner && !owner_is_valid(owner))
                return -EINVAL;
        if (type != OP_REFRESH) {
                if (!pool || pool_class(pool) < 0 || !storage_volume_name_is_valid(name))
                        return -EINVAL;
                if (type != OP_DELETE && size < STORAGE_VOLUME_MIN_SIZE)
                        return -ERANGE;
        }
        op = calloc(1, sizeof(*op));
        if (!op)
                return -ENOMEM;
        op->storage = s;
        op->type = type;
        op->size = size;
        op->done = done;
        op->userdata = userdata;
        if ((pool && !(op->pool = strdup(pool))) || (name && !(op->name = strdup(name))) ||
            (owner && !(op->owner = strdup(owner)))) {
                storage_op_free(op);
                return -ENOMEM;
        }
        LIST_PREPEND(ops, s->queue, op);
        storage_next(s);
        return 0;
}

int storage_refresh(Storage *s, StorageDoneFn done, void *userdata) {
        return storage_enqueue(s, OP_REFRESH, NULL, NULL, 0, NULL, done, userdata);
}

int storage_volume_create(Storage *s, const char *pool, const char *name, uint64_t size, const char *owner,
                          StorageDoneFn done, void *userdata) {
        return storage_enqueue(s, OP_CREATE, pool, name, size, owner, done, userdata);
}

int storage_volume_resize(Storage *s, const char *pool, const char *name, uint64_t size, const char *owner,
                          StorageDoneFn done, void *userdata) {
        return storage_enqueue(s, OP_RESIZE, pool, name, size, owner, done, userdata);
}

int storage_volume_delete(Storage *s, const char *pool, const char *name, const char *owner,
                          StorageDoneFn done, void *userdata) {
        return storage_enqueue(s, OP_DELETE, pool, name, 0, owner, done, userdata);
}

const StorageSnapshot *storage_snapshot(const Storage *s) {
        return s->snapshot;
}

const StoragePool *storage_find_pool(const Storage *s, const char *pool) {
        return snapshot_find_pool(s->snapshot, pool);
}

const StorageVolume *storage_find_volume(const Storage *s, const char *pool, const char *name) {
        for (size_t i = 0; s->snapshot && i < s->snapshot->n_volumes; i++)
                if (streq(s->snapshot->volumes[i].pool, pool) && streq(s->snapshot->volumes[i].name, name))
                        return &s->snapshot->volumes[i];
        return NULL;
}

typedef struct VolumeUsers {
        char *key; /* "pool/name" */
        unsigned count;
} VolumeUsers;

static VolumeUsers *volume_users_get(const Storage *s, const char *pool, const char *name) {
        char key[512];

        snprintf(key, sizeof(key), "%s/%s", pool, name);
        return s->users ? hashmap_get(s->users, key) : NULL;
}

unsigned storage_volume_users(const Storage *s, const char *pool, const char *name) {
        const VolumeUsers *u = volume_users_get(s, pool, name);
        return u ? u->count : 0;
}

int storage_volume_open(Storage *s, const char *pool, const char *name, unsigned flags, BlockDev **ret) {
        const StorageVolume *v = storage_find_volume(s, pool, name);
        VolumeUsers *u;
        int r;

        if (!v)
                return -ENOENT;
        if (v->offline)
                return -EIO;
        u = volume_users_get(s, pool, name);
        if (!u) {
                u = calloc(1, sizeof(*u));
                if (!u || asprintf(&u->key, "%s/%s", pool, name) < 0) {
                        free(u);
                        return -ENOMEM;
                }
                if ((!s->users && hashmap_new(&s->users) < 0) || hashmap_put(s->users, u->key, u) < 0) {
                        free(u->key);
                        free(u);
                        return -ENOMEM;
                }
        }
        if (v->path)
                r = blockdev_open(v->path, flags, ret);
        else
                r = blockdev_open_extents(v->extents, v->n_extents, flags, ret);
        if (r >= 0)
                u->count++;
        return r;
}

void storage_volume_release(Storage *s, const char *pool, const char *name) {
        VolumeUsers *u = volume_users_get(s, pool, name);

        if (u && u->count > 0)
                u->count--;
}

static void volume_users_free(void *p) {
        VolumeUsers *u = p;

        free(u->key);
        free(u);
}

void storage_forget_callbacks(Storage *s, void *userdata) {
        if (s->running && s->running->userdata == userdata)
                s->running->done = NULL;
        LIST_FOREACH (ops, op, s->queue)
                if (op->userdata == userdata)
                        op->done = NULL;
}

usec_t storage_busy_since(const Storage *s) {
        usec_t a = worker_busy_since(s->worker), b = s->lvm ? lvm_busy_since(s->lvm) : 0;

        if (a == 0 || (b != 0 && b < a))
                return b;
        return a;
}

StorageBackend storage_backend(const Storage *s) {
        return s->backend;
}

int storage_new(sd_event *e, const StorageConfig *config, StorageChangedFn changed, void *userdata,
                Storage **ret) {
        _cleanup_(storage_freep) Storage *s = NULL;
        int r;

        assert(e && config && ret);

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(e);
        s->backend = config->backend;
        s->lvm_activation = config->lvm_activation;
        s->changed = changed;
        s->userdata = userdata;
        s->file_capacity = config->file_capacity;
        s->disks = strv_copy(config->disks);
        s->disk_classes = strv_copy(config->disk_classes);
        s->file_classes = strv_copy(config->file_classes);
        s->sysfs = strdup(config->sysfs ?: "/sys");
        s->file_dir = config->file_dir ? strdup(config->file_dir) : NULL;
        if (!s->disks || !s->disk_classes || !s->file_classes || !s->sysfs ||
            (config->file_dir && !s->file_dir))
                return -ENOMEM;

        r = sd_event_add_defer(e, &s->defer, storage_on_defer, s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(s->defer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(s->defer, "storage-next");

        /* The LVM worker first: lvm_worker_new() changes the environment, which is only safe while
         * no other thread may read it. */
        if (s->backend == STORAGE_BACKEND_LVM) {
                const LvmOptions lo = {
                        .system_dir = config->lvm_system_dir,
                        .run_dir = config->lvm_run_dir,
                        .activation = config->lvm_activation,
                };
                r = lvm_worker_new(e, &lo, &s->lvm);
                if (r < 0)
                        return r;
        } else if (!s->file_dir)
                return -EINVAL;
        r = worker_new(e, "hwameid-storage", NULL, NULL, &s->worker);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(s);
        return 0;
}

Storage *storage_free(Storage *s) {
        if (!s)
                return NULL;
        /* The workers finish what runs; no operation's callback runs any more. */
        s->freeing = true;
        s->worker = worker_free(s->worker);
        s->lvm = lvm_worker_free(s->lvm);
        while (s->queue) {
                StorageOp *op = s->queue;
                LIST_REMOVE(ops, s->queue, op);
                storage_op_free(op);
        }
        storage_op_free(s->running);
        sd_event_source_disable_unref(s->defer);
        hashmap_free_with(s->users, volume_users_free);
        snapshot_free(s->snapshot);
        strv_free(s->disks);
        strv_free(s->disk_classes);
        strv_free(s->file_classes);
        free(s->sysfs);
        free(s->file_dir);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}
