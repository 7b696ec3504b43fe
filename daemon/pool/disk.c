/* SPDX-License-Identifier: Apache-2.0 */

#include <blkid.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "basic/macro.h"
#include "basic/string-util.h"
#include "log/log.h"
#include "pool/disk.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(blkid_probe, blkid_free_probe);
DEFINE_TRIVIAL_CLEANUP_FUNC(FILE *, fclose);
DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir);

/* Names under /sys/block are short; anything longer or stranger than this is not ours to probe. */
#define DISK_NAME_MAX 64
/* A partition table cannot list more partitions than this in sysfs for our purposes. */
#define DISK_PARTITIONS_MAX 4096

static const char *const disk_class_table[_DISK_CLASS_MAX] = {
        [DISK_CLASS_HDD] = "HDD",
        [DISK_CLASS_SSD] = "SSD",
        [DISK_CLASS_NVME] = "NVMe",
};

DEFINE_STRING_TABLE_TO_STRING(disk_class, DiskClass, disk_class_table)

DiskClass disk_class_from_string(const char *s) {
        if (!s)
                return _DISK_CLASS_INVALID;
        for (DiskClass c = 0; c < _DISK_CLASS_MAX; c++)
                if (strcasecmp(disk_class_table[c], s) == 0)
                        return c;
        return _DISK_CLASS_INVALID;
}

static const char *const disk_state_table[_DISK_STATE_MAX] = {
        [DISK_FREE] = "free",
        [DISK_LVM] = "lvm",
        [DISK_BUSY] = "busy",
};

DEFINE_STRING_TABLE_TO_STRING(disk_state, DiskState, disk_state_table)

void disk_done(Disk *d) {
        if (!d)
                return;
        free(d->name);
        free(d->dev_path);
        free(d->reason);
        free(d->signature);
        *d = (Disk){};
}

void disks_free(Disk *d, size_t n) {
        if (!d)
                return;
        for (size_t i = 0; i < n; i++)
                disk_done(&d[i]);
        free(d);
}

bool disk_path_allowed(char *const *patterns, const char *path) {
        if (!patterns || !path)
                return false;
        for (char *const *p = patterns; *p; p++)
                if (!isempty(*p) && fnmatch(*p, path, FNM_PATHNAME) == 0)
                        return true;
        return false;
}

/* Parses "PATTERN=CLASS"; the class is what follows the last '='. */
static int parse_override(const char *s, char **ret_pattern, DiskClass *ret_class) {
        const char *eq;
        DiskClass c;
        char *p;

        eq = strrchr(s, '=');
        if (!eq || eq == s)
                return -EINVAL;
        c = disk_class_from_string(eq + 1);
        if (c < 0)
                return -EINVAL;
        p = strndup(s, eq - s);
        if (!p)
                return -ENOMEM;
        *ret_pattern = p;
        *ret_class = c;
        return 0;
}

static int validate_overrides(char *const *overrides) {
        int r;

        if (!overrides)
                return 0;
        for (char *const *o = overrides; *o; o++) {
                _cleanup_free_ char *pattern = NULL;
                DiskClass c;

                r = parse_override(*o, &pattern, &c);
                if (r < 0)
                        return log_debug_errno(r, "Invalid disk class override '%s'.", *o);
        }
        return 0;
}

/* The class of the first override whose pattern matches, or -ENOENT. Overrides were validated. */
static int find_override(char *const *overrides, const char *path, DiskClass *ret) {
        int r;

        if (!overrides)
                return -ENOENT;
        for (char *const *o = overrides; *o; o++) {
                _cleanup_free_ char *pattern = NULL;
                DiskClass c;

                r = parse_override(*o, &pattern, &c);
                if (r < 0)
                        return r;
                if (fnmatch(pattern, path, FNM_PATHNAME) == 0) {
                        *ret = c;
                        return 0;
                }
        }
        return -ENOENT;
}

/* Reads the first line of a small (sysfs) file, without its newline. */
static int read_line_file(const char *path, char **ret) {
        _cleanup_(fclosep) FILE *f = NULL;
        _cleanup_free_ char *line = NULL;
        size_t n = 0;
        ssize_t k;

        f = fopen(path, "re");
        if (!f)
                return -errno;
        errno = 0;
        k = getline(&line, &n, f);
        if (k < 0)
                return errno == ENOMEM ? -ENOMEM : (errno > 0 ? -errno : -ENODATA);
        if (k > 4096)
                return -EBADMSG;
        line[strcspn(line, "\n")] = '\0';
        *ret = TAKE_PTR(line);
        return 0;
}

static int sysfs_read(const char *sysfs, const char *name, const char *attr, char **ret) {
        _cleanup_free_ char *p = NULL;

        if (asprintf(&p, "%s/block/%s/%s", sysfs, name, attr) < 0)
                return -ENOMEM;
        return read_line_file(p, ret);
}

static int sysfs_read_u64(const char *sysfs, const char *name, const char *attr, uint64_t *ret) {
        _cleanup_free_ char *s = NULL;
        int r;

        r = sysfs_read(sysfs, name, attr, &s);
        if (r < 0)
                return r;
        return safe_atou64(s, ret);
}

static int sysfs_read_bool(const char *sysfs, const char *name, const char *attr, bool *ret) {
        uint64_t v;
        int r;

        r = sysfs_read_u64(sysfs, name, attr, &v);
        if (r < 0)
                return r;
        if (v > 1)
                return -EBADMSG;
        *ret = v == 1;
        return 0;
}

static int parse_devnum(const char *s, dev_t *ret) {
        unsigned maj, min;
        int n = 0;

        if (sscanf(s, "%u:%u%n", &maj, &min, &n) != 2 || s[n] != '\0')
                return -EBADMSG;
        *ret = makedev(maj, min);
        return 0;
}

static int sysfs_read_devnum(const char *sysfs, const char *name, const char *attr, dev_t *ret) {
        _cleanup_free_ char *s = NULL;
        int r;

        r = sysfs_read(sysfs, name, attr, &s);
        if (r < 0)
                return r;
        return parse_devnum(s, ret);
}

/* Block device names as sysfs spells them: no path separators, no dot files, printable. */
static bool disk_name_valid(const char *name) {
        size_t l = strlen(name);

        if (l == 0 || l > DISK_NAME_MAX || name[0] == '.')
                return false;
        for (const char *c = name; *c; c++)
                if (*c == '/' || !isgraph((unsigned char) *c))
                        return false;
        return true;
}

/* Kinds of block devices that are never pool disks, whatever the configuration says. */
static bool disk_name_excluded(const char *name) {
        static const char *const prefixes[] = { "ram", "zram", "dm-", "md", "sr", "fd" };

        for (size_t i = 0; i < ELEMENTSOF(prefixes); i++)
                if (startswith(name, prefixes[i]))
                        return true;
        return false;
}

/* "cciss!c0d0" in sysfs is /dev/cciss/c0d0. */
static int disk_name_to_path(const char *name, char **ret) {
        char *p;

        if (asprintf(&p, "/dev/%s", name) < 0)
                return -ENOMEM;
        for (char *c = p + 5; *c; c++)
                if (*c == '!')
                        *c = '/';
        *ret = p;
        return 0;
}

typedef struct DiskParts {
        char **names; /* NULL-terminated */
        dev_t *devnums;
        size_t n;
} DiskParts;

static void disk_parts_done(DiskParts *p) {
        strv_free(p->names);
        free(p->devnums);
        *p = (DiskParts){};
}

/* The partitions of a disk: subdirectories of its sysfs directory that have a "partition" file. */
static int disk_list_partitions(const char *sysfs, const char *name, DiskParts *ret) {
        _cleanup_(disk_parts_done) DiskParts parts = {};
        _cleanup_(closedirp) DIR *d = NULL;
        _cleanup_free_ char *dir = NULL;
        struct dirent *de;
        int r;

        if (asprintf(&dir, "%s/block/%s", sysfs, name) < 0)
                return -ENOMEM;
        d = opendir(dir);
        if (!d)
                return -errno;

        while ((errno = 0, de = readdir(d))) {
                _cleanup_free_ char *attr = NULL, *devattr = NULL;
                dev_t devnum;
                dev_t *a;

                if (de->d_name[0] == '.' || !disk_name_valid(de->d_name))
                        continue;
                if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
                        continue;
                if (asprintf(&attr, "%s/%s/partition", dir, de->d_name) < 0)
                        return -ENOMEM;
                if (access(attr, F_OK) < 0)
                        continue;
                if (parts.n >= DISK_PARTITIONS_MAX)
                        return -E2BIG;

                if (asprintf(&devattr, "%s/dev", de->d_name) < 0)
                        return -ENOMEM;
                r = sysfs_read_devnum(sysfs, name, devattr, &devnum);
                if (r == -ENOENT)
                        continue; /* gone meanwhile */
                if (r < 0)
                        return r;

                r = strv_extend(&parts.names, de->d_name);
                if (r < 0)
                        return r;
                a = reallocarray(parts.devnums, parts.n + 1, sizeof(dev_t));
                if (!a)
                        return -ENOMEM;
                parts.devnums = a;
                parts.devnums[parts.n++] = devnum;
        }
        if (errno > 0)
                return -errno;

        *ret = parts;
        parts = (DiskParts){};
        return 0;
}

static bool disk_parts_has_devnum(const DiskParts *p, dev_t devnum) {
        for (size_t i = 0; i < p->n; i++)
                if (p->devnums[i] == devnum)
                        return true;
        return false;
}

/* Entries of a "holders" directory, joined with ", ", or NULL when there are none. */
static int list_holders(const char *sysfs, const char *name, const char *sub, char **ret) {
        _cleanup_strv_free_ char **holders = NULL;
        _cleanup_(closedirp) DIR *d = NULL;
        _cleanup_free_ char *dir = NULL;
        struct dirent *de;
        int r;

        if (asprintf(&dir, "%s/block/%s/%s%sholders", sysfs, name, strempty(sub), sub ? "/" : "") < 0)
                return -ENOMEM;
        d = opendir(dir);
        if (!d) {
                if (errno == ENOENT) {
                        *ret = NULL;
                        return 0;
                }
                return -errno;
        }
        while ((errno = 0, de = readdir(d))) {
                if (de->d_name[0] == '.' || !disk_name_valid(de->d_name))
                        continue;
                if (strv_length(holders) >= 16)
                        break;
                r = strv_extend(&holders, de->d_name);
                if (r < 0)
                        return r;
        }
        if (errno > 0)
                return -errno;
        if (!holders) {
                *ret = NULL;
                return 0;
        }
        *ret = strv_join(holders, ", ");
        return *ret ? 0 : -ENOMEM;
}

/* Undoes the octal escapes (\040) of /proc/self/mountinfo and /proc/swaps, in place. */
static void unoctal(char *s) {
        char *w = s;

        for (char *c = s; *c;) {
                if (c[0] == '\\' && c[1] >= '0' && c[1] <= '3' && c[2] >= '0' && c[2] <= '7' &&
                    c[3] >= '0' && c[3] <= '7') {
                        *w++ = (char) (((c[1] - '0') << 6) | ((c[2] - '0') << 3) | (c[3] - '0'));
                        c += 4;
                } else
                        *w++ = *c++;
        }
        *w = '\0';
}

static bool source_is_disk(const char *source, const char *name, const DiskParts *parts) {
        const char *n = startswith(source, "/dev/");

        if (!n)
                return false;
        if (streq(n, name))
                return true;
        for (size_t i = 0; i < parts->n; i++)
                if (streq(n, parts->names[i]))
                        return true;
        return false;
}

/* Where the disk or one of its partitions is mounted (the first such mount), or NULL. */
static int find_mount(dev_t devnum, const char *name, const DiskParts *parts, char **ret) {
        _cleanup_(fclosep) FILE *f = NULL;
        _cleanup_free_ char *line = NULL;
        size_t n = 0;

        f = fopen("/proc/self/mountinfo", "re");
        if (!f)
                return -errno;

        for (;;) {
                char *fields[5], *sep, *saveptr = NULL, *s, *source = NULL;
                dev_t mdev = 0;
                bool match;
                ssize_t k;
                size_t i;

                errno = 0;
                k = getline(&line, &n, f);
                if (k < 0) {
                        if (errno == ENOMEM)
                                return -ENOMEM;
                        break;
                }
                line[strcspn(line, "\n")] = '\0';

                /* "36 35 98:0 /root /mnt opts [optional...] - fstype source superopts" */
                sep = strstr(line, " - ");
                if (!sep)
                        continue;
                *sep = '\0';
                s = line;
                for (i = 0; i < ELEMENTSOF(fields); i++) {
                        fields[i] = strtok_r(s, " ", &saveptr);
                        s = NULL;
                        if (!fields[i])
                                break;
                }
                if (i < ELEMENTSOF(fields))
                        continue;
                saveptr = NULL;
                (void) strtok_r(sep + 3, " ", &saveptr); /* fstype */
                source = strtok_r(NULL, " ", &saveptr);

                match = parse_devnum(fields[2], &mdev) >= 0 &&
                        (mdev == devnum || disk_parts_has_devnum(parts, mdev));
                if (!match && source) {
                        unoctal(source);
                        match = source_is_disk(source, name, parts);
                }
                if (match) {
                        char *m;

                        unoctal(fields[4]);
                        m = strdup(fields[4]);
                        if (!m)
                                return -ENOMEM;
                        *ret = m;
                        return 1;
                }
        }

        *ret = NULL;
        return 0;
}

/* Whether the disk or one of its partitions is an active swap device. */
static int find_swap(dev_t devnum, const char *name, const DiskParts *parts) {
        _cleanup_(fclosep) FILE *f = NULL;
        _cleanup_free_ char *line = NULL;
        bool first = true;
        size_t n = 0;

        f = fopen("/proc/swaps", "re");
        if (!f)
                return errno == ENOENT ? 0 : -errno;

        for (;;) {
                struct stat st;
                ssize_t k;
                char *end;

                errno = 0;
                k = getline(&line, &n, f);
                if (k < 0) {
                        if (errno == ENOMEM)
                                return -ENOMEM;
                        break;
                }
                if (first) { /* the header */
                        first = false;
                        continue;
                }
                end = line + strcspn(line, " \t\n");
                *end = '\0';
                if (!*line)
                        continue;
                unoctal(line);
                if (source_is_disk(line, name, parts))
                        return 1;
                if (stat(line, &st) >= 0 && S_ISBLK(st.st_mode) &&
                    (st.st_rdev == devnum || disk_parts_has_devnum(parts, st.st_rdev)))
                        return 1;
        }
        return 0;
}

static const char *article(const char *word) {
        return strchr("aeiouxAEIOUX", word[0]) && word[0] ? "an" : "a";
}

typedef enum ProbeResult {
        PROBE_NOTHING,
        PROBE_LVM,
        PROBE_SIGNATURE,
        PROBE_AMBIVALENT,
} ProbeResult;

/* Looks for signatures with libblkid: filesystems, RAID and LVM labels, partition tables. */
static int probe_signature(int fd, char **ret_type, char **ret_reason) {
        _cleanup_(blkid_free_probep) blkid_probe pr = NULL;
        _cleanup_free_ char *type = NULL, *reason = NULL;
        const char *value = NULL, *usage = NULL;
        int r;

        pr = blkid_new_probe();
        if (!pr)
                return -ENOMEM;
        errno = 0;
        r = blkid_probe_set_device(pr, fd, 0, 0);
        if (r < 0)
                return negative_errno();

        if (blkid_probe_enable_superblocks(pr, 1) < 0 ||
            blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_USAGE) < 0 ||
            blkid_probe_enable_partitions(pr, 1) < 0)
                return -EIO;

        errno = 0;
        r = blkid_do_safeprobe(pr);
        if (r == -2) {
                *ret_type = NULL;
                *ret_reason = strdup("has ambiguous signatures");
                return *ret_reason ? PROBE_AMBIVALENT : -ENOMEM;
        }
        if (r < 0)
                return negative_errno();
        if (r == 1) {
                *ret_type = NULL;
                *ret_reason = NULL;
                return PROBE_NOTHING;
        }

        if (blkid_probe_lookup_value(pr, "PTTYPE", &value, NULL) == 0 && !isempty(value)) {
                type = strdup(value);
                if (!type || asprintf(&reason, "has %s %s partition table", article(value), value) < 0)
                        return -ENOMEM;
        } else if (blkid_probe_lookup_value(pr, "TYPE", &value, NULL) == 0 && !isempty(value)) {
                (void) blkid_probe_lookup_value(pr, "USAGE", &usage, NULL);
                type = strdup(value);
                if (!type)
                        return -ENOMEM;
                if (streq(value, "LVM2_member")) {
                        *ret_type = TAKE_PTR(type);
                        *ret_reason = NULL;
                        return PROBE_LVM;
                }
                if (streq_ptr(usage, "filesystem")) {
                        if (asprintf(&reason, "has %s %s filesystem", article(value), value) < 0)
                                return -ENOMEM;
                } else if (asprintf(&reason, "has %s %s signature", article(value), value) < 0)
                        return -ENOMEM;
        } else {
                reason = strdup("has an unknown signature");
                if (!reason)
                        return -ENOMEM;
        }

        *ret_type = TAKE_PTR(type);
        *ret_reason = TAKE_PTR(reason);
        return PROBE_SIGNATURE;
}

static int append_reason(char **reasons, const char *reason) {
        char *n;

        if (!*reasons) {
                n = strdup(reason);
        } else if (asprintf(&n, "%s; %s", *reasons, reason) < 0)
                n = NULL;
        if (!n)
                return -ENOMEM;
        free(*reasons);
        *reasons = n;
        return 0;
}

static int append_reasonf(char **reasons, const char *fmt, ...) _printf_(2, 3);
static int append_reasonf(char **reasons, const char *fmt, ...) {
        _cleanup_free_ char *s = NULL;
        va_list ap;
        int k;

        va_start(ap, fmt);
        k = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (k < 0)
                return -ENOMEM;
        return append_reason(reasons, s);
}

/*
 * Probes the whole disk "name" (a /sys/block entry) whose node is dev_path. Returns -ENOENT,
 * -ENXIO or -ENODEV when the disk is gone or has no medium (size 0), -ENOTBLK when it is a kind of
 * device that is never a pool disk.
 */
static int disk_probe_name(const DiskScanOptions *options, const char *sysfs, const char *name,
                           const char *dev_path, Disk *ret) {
        _cleanup_(disk_parts_done) DiskParts parts = {};
        _cleanup_free_ char *n = NULL, *p = NULL, *reasons = NULL, *holders = NULL, *mount = NULL,
                            *signature = NULL, *sigreason = NULL;
        _cleanup_close_ int fd = -EBADF;
        uint64_t sectors;
        bool rotational = false, read_only = false, removable = false, hidden = false;
        DiskClass class;
        dev_t devnum;
        struct stat st;
        int r, probe;

        if (!disk_name_valid(name) || disk_name_excluded(name))
                return -ENOTBLK;

        r = sysfs_read_devnum(sysfs, name, "dev", &devnum);
        if (r < 0)
                return r;
        r = sysfs_read_u64(sysfs, name, "size", &sectors);
        if (r < 0)
                return r;
        if (sectors == 0)
                return -ENXIO; /* a loop device without a backing file, a drive without a medium */
        if (sectors > UINT64_MAX / 512)
                return -EBADMSG;
        (void) sysfs_read_bool(sysfs, name, "hidden", &hidden);
        if (hidden)
                return -ENOTBLK; /* a path of an NVMe multipath device, not a device of its own */
        r = sysfs_read_bool(sysfs, name, "queue/rotational", &rotational);
        if (r < 0 && r != -ENOENT)
                return r;
        r = sysfs_read_bool(sysfs, name, "ro", &read_only);
        if (r < 0 && r != -ENOENT)
                return r;
        r = sysfs_read_bool(sysfs, name, "removable", &removable);
        if (r < 0 && r != -ENOENT)
                return r;

        if (startswith(name, "nvme"))
                class = DISK_CLASS_NVME;
        else
                class = rotational ? DISK_CLASS_HDD : DISK_CLASS_SSD;
        r = find_override(options->class_overrides, dev_path, &class);
        if (r < 0 && r != -ENOENT)
                return r;

        /* In use by the kernel: mounted, swap, held by another block device, partitioned. */
        r = disk_list_partitions(sysfs, name, &parts);
        if (r < 0)
                return r;
        r = find_mount(devnum, name, &parts, &mount);
        if (r < 0)
                return r;
        if (r > 0) {
                r = append_reasonf(&reasons, "is mounted at %s", mount);
                if (r < 0)
                        return r;
        }
        r = find_swap(devnum, name, &parts);
        if (r < 0)
                return r;
        if (r > 0) {
                r = append_reason(&reasons, "is used as swap");
                if (r < 0)
                        return r;
        }
        r = list_holders(sysfs, name, NULL, &holders);
        if (r < 0)
                return r;
        for (size_t i = 0; !holders && i < parts.n; i++) {
                r = list_holders(sysfs, name, parts.names[i], &holders);
                if (r < 0)
                        return r;
        }
        if (parts.n > 0) {
                r = append_reason(&reasons, "has partitions");
                if (r < 0)
                        return r;
        }

        /* What is written on it. The node must be the device sysfs described. */
        fd = open(dev_path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0) {
                if (errno == ENOENT || errno == ENXIO || errno == ENODEV || errno == ENOMEDIUM)
                        return -errno; /* gone */
                probe = -errno;
        } else if (fstat(fd, &st) < 0)
                return -errno;
        else if (!S_ISBLK(st.st_mode))
                return -ENOTBLK;
        else if (st.st_rdev != devnum)
                return -ENODEV; /* the node is stale or the name was reused meanwhile */
        else
                probe = probe_signature(fd, &signature, &sigreason);
        if (probe == -ENOMEM)
                return probe;
        if (probe < 0) {
                /* Whatever it holds is unknown, so it is never touched. */
                log_debug_errno(probe, "Failed to probe %s for signatures: %m", dev_path);
                r = append_reasonf(&reasons, "could not be probed: %s", strerrordesc_np(-probe));
                if (r < 0)
                        return r;
        } else if (sigreason) {
                r = append_reason(&reasons, sigreason);
                if (r < 0)
                        return r;
        }

        /* An active LV holds its PV: that is the normal state of a disk of ours, not "busy". */
        if (holders && probe != PROBE_LVM) {
                r = append_reasonf(&reasons, "is held by %s", holders);
                if (r < 0)
                        return r;
        }
        if (read_only) {
                r = append_reason(&reasons, "is read-only");
                if (r < 0)
                        return r;
        }

        n = strdup(name);
        p = strdup(dev_path);
        if (!n || !p)
                return -ENOMEM;

        *ret = (Disk){
                .name = TAKE_PTR(n),
                .dev_path = TAKE_PTR(p),
                .devnum = devnum,
                .size = sectors * 512,
                .class = class,
                .rotational = rotational,
                .read_only = read_only,
                .removable = removable,
                .state = reasons              ? DISK_BUSY
                         : probe == PROBE_LVM ? DISK_LVM
                                              : DISK_FREE,
                .reason = TAKE_PTR(reasons),
                .signature = TAKE_PTR(signature),
        };
        return 0;
}

static const char *sysfs_root(const DiskScanOptions *options) {
        return isempty(options->sysfs) ? "/sys" : options->sysfs;
}

static int disk_compare(const void *a, const void *b) {
        const Disk *x = a, *y = b;

        return strverscmp(x->dev_path, y->dev_path);
}

int disk_scan(const DiskScanOptions *options, Disk **ret, size_t *ret_n) {
        _cleanup_(closedirp) DIR *d = NULL;
        _cleanup_free_ char *dir = NULL;
        const char *sysfs;
        Disk *disks = NULL;
        size_t n = 0;
        struct dirent *de;
        int r;

        assert(options);
        assert(ret);
        assert(ret_n);

        r = validate_overrides(options->class_overrides);
        if (r < 0)
                return r;

        sysfs = sysfs_root(options);
        if (asprintf(&dir, "%s/block", sysfs) < 0)
                return -ENOMEM;
        d = opendir(dir);
        if (!d)
                return -errno;

        while ((errno = 0, de = readdir(d))) {
                _cleanup_free_ char *path = NULL;
                Disk disk = {};
                Disk *a;

                if (!disk_name_valid(de->d_name) || disk_name_excluded(de->d_name))
                        continue;
                r = disk_name_to_path(de->d_name, &path);
                if (r < 0)
                        goto fail;
                if (!disk_path_allowed(options->allow, path))
                        continue;

                r = disk_probe_name(options, sysfs, de->d_name, path, &disk);
                if (r == -ENOMEM || r == -EINVAL)
                        goto fail;
                if (r < 0) {
                        log_debug_errno(r, "Not reporting %s: %m", path);
                        continue;
                }

                a = reallocarray(disks, n + 1, sizeof(Disk));
                if (!a) {
                        disk_done(&disk);
                        r = -ENOMEM;
                        goto fail;
                }
                disks = a;
                disks[n++] = disk;
        }
        if (errno > 0) {
                r = -errno;
                goto fail;
        }

        if (n > 1)
                qsort(disks, n, sizeof(Disk), disk_compare);
        *ret = disks;
        *ret_n = n;
        return 0;

fail:
        disks_free(disks, n);
        return r;
}

int disk_probe(const DiskScanOptions *options, const char *dev_path, Disk *ret) {
        _cleanup_free_ char *link = NULL, *target = NULL, *path = NULL, *partition = NULL;
        const char *sysfs, *name;
        struct stat st;
        ssize_t k;
        int r;

        assert(options);
        assert(dev_path);
        assert(ret);

        r = validate_overrides(options->class_overrides);
        if (r < 0)
                return r;
        if (stat(dev_path, &st) < 0)
                return -errno;
        if (!S_ISBLK(st.st_mode))
                return -ENOTBLK;

        /* /sys/dev/block/MAJ:MIN links to the device's directory, whose name is the disk's name. */
        sysfs = sysfs_root(options);
        if (asprintf(&link, "%s/dev/block/%u:%u", sysfs, major(st.st_rdev), minor(st.st_rdev)) < 0)
                return -ENOMEM;
        target = malloc(PATH_MAX);
        if (!target)
                return -ENOMEM;
        k = readlink(link, target, PATH_MAX - 1);
        if (k < 0)
                return errno == ENOENT ? -ENODEV : -errno;
        target[k] = '\0';
        name = strrchr(target, '/');
        name = name ? name + 1 : target;
        if (!disk_name_valid(name))
                return -EBADMSG;

        if (asprintf(&partition, "%s/partition", link) < 0)
                return -ENOMEM;
        if (access(partition, F_OK) >= 0)
                return -ENOTBLK; /* a partition, not a whole disk */

        r = disk_name_to_path(name, &path);
        if (r < 0)
                return r;
        if (!disk_path_allowed(options->allow, path))
                return -EPERM;

        return disk_probe_name(options, sysfs, name, path, ret);
}
