/* SPDX-License-Identifier: Apache-2.0 */
/*
 * liblvm2cmd on one Worker thread.
 *
 * What liblvm2cmd does to the whole process, and how this file copes:
 *   - It reads its configuration from $LVM_SYSTEM_DIR/lvm.conf: lvm_worker_new() writes that file
 *     and sets the variable (on the loop, before the thread exists). Hence one LvmWorker per
 *     process.
 *   - It sets the process umask (global/umask, 0077 by default): lvm.conf carries the process's
 *     own umask, and the umask is put back after init and after every command anyway.
 *   - Its log callback is process-wide and has no user data: what the running command says is
 *     collected through a thread-local pointer (lvm_capture).
 *   - Its first command sets TZ when it is unset (setenv("TZ", ":/etc/localtime")), on the worker
 *     thread. setenv() may move and free the environment array while the loop's thread reads it in
 *     getenv() (libcurl does for every request, sd_notify() too): a crash in libc. lvm_worker_new()
 *     sets TZ to the same value before the thread exists, so that LVM leaves the environment alone.
 *   - It only reopens stdin/stdout with its own buffers when initialised on the main thread;
 *     it is initialised on the worker thread, so it leaves them alone.
 *   - A handle is not fit for a second command (2.03.16: a command with --devices after any other
 *     command on the same handle crashes in the device scan or in free(); so does any command
 *     after a report that named a VG which does not exist). Every command therefore gets a fresh
 *     handle (lvm2_init_threaded(), lvm2_run(), lvm2_exit()): about 8 ms of set-up, next to 30 ms
 *     or more for the command itself.
 *
 * Visibility: lvm.conf enables LVM's devices file and keeps that file empty, so a command sees
 * no device at all unless it is given --devices; lvm_run() gives it this node's devices.
 */

#include <errno.h>
#include <fcntl.h>
#include <lvm2cmd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../basic/fileio.h"
#include "../basic/string-util.h"
#include "../basic/worker.h"
#include "lvm.h"

/* Longest command line accepted (LVM itself allows 64 words). */
#define LVM_CMDLINE_MAX (64U * 1024U)
/* Most output kept from one command, per kind. */
#define LVM_OUTPUT_MAX      (64U * 1024U * 1024U)
#define LVM_DEVICE_PATH_MAX 1024U

/* The file LVM reads as its devices file (relative to $LVM_SYSTEM_DIR/devices/); always empty. */
#define LVM_DEVICES_FILE "hwameid.devices"

struct LvmWorker {
        Worker *worker;
        char **devices;
        bool activation;
};

static atomic_bool lvm_worker_exists;

typedef struct LvmBuffer {
        char *data;
        size_t len, size;
        bool overflow;
} LvmBuffer;

/* What one command said: the JSON report (level 4, from a "{" line to a "}" line), errors
 * (level 3 and below) and other messages (the rest of level 4: "Logical volume ... created.",
 * warnings). */
typedef struct LvmCapture {
        LvmBuffer report, errors, messages;
        bool in_report;
} LvmCapture;

static _Thread_local LvmCapture *lvm_capture;

typedef struct LvmThread {
        mode_t umask; /* the process's, put back after everything liblvm2cmd does */
} LvmThread;

typedef struct LvmJob {
        char *cmdline;
        LvmDoneFn done;
        void *userdata;
        LvmResult result;
} LvmJob;

static void buffer_append_line(LvmBuffer *b, const char *line) {
        size_t n = strlen(line), need;

        if (b->overflow)
                return;
        need = b->len + n + 2; /* "\n" separator (or final newline) and NUL */
        if (need > LVM_OUTPUT_MAX) {
                b->overflow = true;
                return;
        }
        if (need > b->size) {
                size_t size = MAX(need, b->size * 2);
                char *d = realloc(b->data, size);
                if (!d) {
                        b->overflow = true;
                        return;
                }
                b->data = d;
                b->size = size;
        }
        if (b->len > 0)
                b->data[b->len++] = '\n';
        memcpy(b->data + b->len, line, n);
        b->len += n;
        b->data[b->len] = '\0';
}

static void lvm_on_log(int level, const char *file, int line, int dm_errno, const char *message) {
        LvmCapture *c = lvm_capture;

        (void) file, (void) line, (void) dm_errno;

        if (!c || !message)
                return;
        level &= 0xf; /* strip LVM's flag bits (_LOG_STDERR, _LOG_ONCE...) */

        if (level <= LVM2_LOG_ERROR && level != LVM2_LOG_SUPPRESS) {
                buffer_append_line(&c->errors, message);
                return;
        }
        if (level != LVM2_LOG_PRINT)
                return; /* verbose and debug output */

        /* libdm's JSON report: "{" and "}" at column 0, everything in between indented.
         * Unindented lines printed in between are messages, not JSON. */
        if (c->in_report) {
                if (streq(message, "}")) {
                        buffer_append_line(&c->report, message);
                        c->in_report = false;
                } else if (message[0] == ' ')
                        buffer_append_line(&c->report, message);
                else
                        buffer_append_line(&c->messages, message);
        } else if (streq(message, "{")) {
                buffer_append_line(&c->report, message);
                c->in_report = true;
        } else
                buffer_append_line(&c->messages, message);
}

/* The process umask, read without changing it (umask() cannot). */
static int get_umask(mode_t *ret) {
        _cleanup_free_ char *line = NULL;
        size_t size = 0;
        FILE *f;
        int r = -ENOENT;

        f = fopen("/proc/self/status", "re");
        if (!f)
                return -errno;
        while (getline(&line, &size, f) > 0) {
                const char *v = startswith(line, "Umask:");
                unsigned long m;
                char *end;

                if (!v)
                        continue;
                errno = 0;
                m = strtoul(v, &end, 8);
                r = (errno != 0 || end == v || m > 0777) ? -EINVAL : 0;
                if (r == 0)
                        *ret = (mode_t) m;
                break;
        }
        fclose(f);
        return r;
}

static void *lvm_handle_new(LvmThread *t) {
        void *h;

        h = lvm2_init_threaded();
        (void) umask(t->umask);
        return h;
}

static void lvm_handle_free(LvmThread *t, void *h) {
        if (!h)
                return;
        lvm2_exit(h);
        (void) umask(t->umask);
}

static int lvm_thread_init(void **ret_state) {
        _cleanup_free_ LvmThread *t = NULL;
        void *h;
        int r;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        r = get_umask(&t->umask);
        if (r < 0)
                return r;

        lvm2_log_fn(lvm_on_log);
        /* A first handle, only to find out early whether liblvm2cmd accepts the configuration. */
        h = lvm_handle_new(t);
        if (!h)
                return -EIO;
        lvm_handle_free(t, h);

        *ret_state = TAKE_PTR(t);
        return 0;
}

static void lvm_thread_done(void *state) {
        free(state);
}

static int lvm_rc_to_errno(int rc) {
        switch (rc) {
        case LVM2_COMMAND_SUCCEEDED:
                return 0;
        case LVM2_NO_SUCH_COMMAND:
        case LVM2_INVALID_PARAMETERS:
                return -EINVAL;
        default: /* LVM2_PROCESSING_FAILED, LVM2_INIT_FAILED */
                return -EIO;
        }
}

static int lvm_job_run(void *p, void *state) {
        LvmJob *j = p;
        LvmThread *t = state;
        LvmCapture c = {};
        void *h;
        int rc;

        h = lvm_handle_new(t);
        if (!h) {
                j->result.errors = strdup("Failed to initialise liblvm2cmd.");
                return j->result.error = -EIO;
        }

        lvm_capture = &c;
        rc = lvm2_run(h, j->cmdline);
        lvm_capture = NULL;
        (void) umask(t->umask);
        lvm_handle_free(t, h);

        j->result.error = lvm_rc_to_errno(rc);
        if (j->result.error == 0 && (c.report.overflow || c.errors.overflow || c.messages.overflow))
                j->result.error = -EMSGSIZE; /* out of memory, or more output than anyone wants */
        /* An unterminated report is of no use. */
        j->result.report = c.in_report ? mfree(c.report.data) : c.report.data;
        j->result.errors = c.errors.data;
        j->result.messages = c.messages.data;
        return j->result.error;
}

static void lvm_result_done(LvmResult *r) {
        r->report = mfree(r->report);
        r->errors = mfree(r->errors);
        r->messages = mfree(r->messages);
}

static void lvm_job_done(void *p, int result, void *userdata) {
        LvmJob *j = p;

        (void) userdata;
        j->result.error = result; /* -ECANCELED when it never ran */
        if (j->done)
                j->done(&j->result, j->userdata);
        lvm_result_done(&j->result);
        free(j->cmdline);
        free(j);
}

/* Paths written into lvm.conf inside double quotes. */
static bool conf_path_is_valid(const char *p) {
        if (!p || p[0] != '/' || strlen(p) >= LVM_DEVICE_PATH_MAX)
                return false;
        for (; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == '"' || *p == '\\' || *p == 0x7f)
                        return false;
        return true;
}

static int mkdir_p(const char *path, mode_t mode) {
        _cleanup_free_ char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1;; s++) {
                if (*s != '/' && *s != '\0')
                        continue;
                char c = *s;
                *s = '\0';
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return -errno;
                *s = c;
                if (c == '\0')
                        return 0;
        }
}

static int lvm_write_config(const LvmOptions *o, mode_t mask) {
        _cleanup_free_ char *conf = NULL, *conf_path = NULL, *devices_dir = NULL, *devices_file = NULL,
                            *lock_dir = NULL;
        int r;

        if (asprintf(&conf_path, "%s/lvm.conf", o->system_dir) < 0 ||
            asprintf(&devices_dir, "%s/devices", o->system_dir) < 0 ||
            asprintf(&devices_file, "%s/" LVM_DEVICES_FILE, devices_dir) < 0 ||
            asprintf(&lock_dir, "%s/lock", o->run_dir) < 0)
                return -ENOMEM;

        r = mkdir_p(devices_dir, 0755);
        if (r < 0)
                return r;
        r = mkdir_p(lock_dir, 0755);
        if (r < 0)
                return r;

        if (asprintf(&conf,
                     "# LVM configuration of hwameid's pools; rewritten at every start.\n"
                     "devices {\n"
                     "\t# An empty devices file: only the devices named with --devices are seen.\n"
                     "\tuse_devicesfile = 1\n"
                     "\tdevicesfile = \"" LVM_DEVICES_FILE "\"\n"
                     "\tobtain_device_list_from_udev = 0\n"
                     "\texternal_device_info_source = \"none\"\n"
                     "\thints = \"none\"\n"
                     "}\n"
                     "global {\n"
                     "\tlocking_dir = \"%s\"\n"
                     "\t# The process's own umask: liblvm2cmd sets it process-wide.\n"
                     "\tumask = 0%03o\n"
                     "\tactivation = %d\n"
                     "\tuse_lvmpolld = 0\n"
                     "\tnotify_dbus = 0\n"
                     "\tevent_activation = 0\n"
                     "\tsystem_id_source = \"none\"\n"
                     "}\n"
                     "activation {\n"
                     "\tudev_sync = %d\n"
                     "\tudev_rules = %d\n"
                     "\tmonitoring = %d\n"
                     "}\n"
                     "backup {\n"
                     "\tbackup = 1\n"
                     "\tarchive = 0\n"
                     "}\n"
                     "log {\n"
                     "\tsyslog = 0\n"
                     "}\n",
                     lock_dir, (unsigned) mask, o->activation, o->activation, o->activation,
                     o->activation) < 0)
                return -ENOMEM;

        r = write_file_atomic(conf_path, conf, strlen(conf), 0644);
        if (r < 0)
                return r;
        /* Emptied at every start; LVM only writes it when a command has no --devices. */
        return write_file_atomic(devices_file, "", 0, 0644);
}

int lvm_worker_new(sd_event *e, const LvmOptions *options, LvmWorker **ret) {
        _cleanup_(lvm_worker_freep) LvmWorker *w = NULL;
        mode_t mask;
        int r;

        assert(e);
        assert(options);
        assert(ret);

        if (!conf_path_is_valid(options->system_dir) || !conf_path_is_valid(options->run_dir))
                return -EINVAL;

        /* LVM_SYSTEM_DIR, TZ, the umask and the log callback are the process's. The environment is
         * only changed here, on the loop's thread, before the worker thread exists: the caller
         * creates the LVM worker before any other thread. */
        if (atomic_exchange(&lvm_worker_exists, true))
                return -EBUSY;
        w = calloc(1, sizeof(*w));
        if (!w) {
                atomic_store(&lvm_worker_exists, false);
                return -ENOMEM;
        }
        w->activation = options->activation;

        r = get_umask(&mask);
        if (r < 0)
                return r;
        r = lvm_write_config(options, mask);
        if (r < 0)
                return r;
        if (setenv("LVM_SYSTEM_DIR", options->system_dir, 1) < 0)
                return -errno;
        /* What LVM would set from its thread (see above); the same time zone as with TZ unset. */
        if (setenv("TZ", ":/etc/localtime", /* overwrite= */ 0) < 0)
                return -errno;

        r = worker_new(e, "lvm", lvm_thread_init, lvm_thread_done, &w->worker);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(w);
        return 0;
}

LvmWorker *lvm_worker_free(LvmWorker *w) {
        if (!w)
                return NULL;
        w->worker = worker_free(w->worker);
        strv_free(w->devices);
        free(w);
        atomic_store(&lvm_worker_exists, false);
        return NULL;
}

/* "/dev/..." with nothing LVM's command line would split (space, comma: --devices takes a
 * comma-separated list) or that has no business in a device path. */
static bool device_path_is_valid(const char *p) {
        const char *rest = startswith(p, "/dev/");

        if (!rest || isempty(rest) || strlen(p) >= LVM_DEVICE_PATH_MAX || strstr(p, "/../") ||
            endswith(p, "/.."))
                return false;
        for (; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      strchr("/_.:+-@=#", *p)))
                        return false;
        return true;
}

int lvm_set_devices(LvmWorker *w, char *const *devices) {
        char **copy = NULL;

        assert(w);

        for (size_t i = 0; devices && devices[i]; i++)
                if (!device_path_is_valid(devices[i]))
                        return -EINVAL;
        if (devices && devices[0]) {
                copy = strv_copy(devices);
                if (!copy)
                        return -ENOMEM;
        }
        strv_free(w->devices);
        w->devices = copy;
        return 0;
}

/* Printable ASCII without quotes or backslashes: LVM splits command lines at whitespace and
 * nothing is meant to be quoted. */
static bool cmdline_is_valid(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > LVM_CMDLINE_MAX || s[0] == ' ')
                return false;
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || (unsigned char) *s >= 0x7f || strchr("\"'\\`", *s))
                        return false;
        return true;
}

int lvm_run(LvmWorker *w, const char *cmdline, LvmDoneFn done, void *userdata) {
        _cleanup_free_ char *devices = NULL, *line = NULL;
        _cleanup_free_ LvmJob *j = NULL;
        const char *rest;
        size_t verb;
        int r;

        assert(w);
        assert(cmdline);

        if (!cmdline_is_valid(cmdline))
                return -EINVAL;

        /* The command word, then this node's devices, then the caller's arguments. */
        verb = strcspn(cmdline, " ");
        rest = cmdline + verb;
        if (w->devices) {
                devices = strv_join(w->devices, ",");
                if (!devices)
                        return -ENOMEM;
                r = asprintf(&line, "%.*s --devices %s%s", (int) verb, cmdline, devices, rest);
        } else
                r = asprintf(&line, "%s", cmdline);
        if (r < 0)
                return -ENOMEM;

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->cmdline = TAKE_PTR(line);
        j->done = done;
        j->userdata = userdata;

        r = worker_submit(w->worker, lvm_job_run, lvm_job_done, j, NULL);
        if (r < 0) {
                free(j->cmdline);
                return r;
        }
        TAKE_PTR(j);
        return 0;
}

bool lvm_activation(const LvmWorker *w) {
        assert(w);
        return w->activation;
}

size_t lvm_pending(const LvmWorker *w) {
        assert(w);
        return worker_pending(w->worker);
}

uint64_t lvm_busy_since(const LvmWorker *w) {
        assert(w);
        return worker_busy_since(w->worker);
}

/* Parts of LV names LVM keeps for its own sub-LVs (lvm2 lib/misc/lvm-string.c). */
static const char *const lvm_reserved_substrings[] = {
        "_cdata",   "_cmeta",  "_corig", "_cpool", "_cvol",  "_imeta", "_iorig",   "_mimage", "_mlog",
        "_pmspare", "_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig",
};

bool lvm_name_is_valid(const char *name) {
        size_t n;

        if (!name)
                return false;
        n = strlen(name);
        if (n == 0 || n > 127 || name[0] == '-' || streq(name, ".") || streq(name, ".."))
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      strchr("+_.-", *p)))
                        return false;
        if (startswith(name, "snapshot") || startswith(name, "pvmove"))
                return false;
        for (size_t i = 0; i < ELEMENTSOF(lvm_reserved_substrings); i++)
                if (strstr(name, lvm_reserved_substrings[i]))
                        return false;
        return true;
}
