/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "../basic/string-util.h"
#include "log.h"

#define LOG_MESSAGE_MAX        4096
#define LOG_CONTEXT_FIELDS_MAX 16

static LogTarget log_target = LOG_TARGET_CONSOLE;
static int log_max_level = LOG_INFO;
static const char *log_identifier = "hwameid";
static _Thread_local LogContext *log_context_top;

static const char *const log_level_table[] = {
        [LOG_EMERG] = "emerg",     [LOG_ALERT] = "alert",   [LOG_CRIT] = "crit", [LOG_ERR] = "err",
        [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice", [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

const char *log_level_to_string(int level) {
        if (level < 0 || (size_t) level >= ELEMENTSOF(log_level_table))
                return NULL;
        return log_level_table[level];
}

int log_level_from_string(const char *s) {
        unsigned u;

        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(log_level_table); i++)
                if (strcasecmp(s, log_level_table[i]) == 0)
                        return (int) i;
        if (strcasecmp(s, "error") == 0)
                return LOG_ERR;
        if (safe_atou(s, &u) >= 0 && u <= LOG_DEBUG)
                return (int) u;
        return -EINVAL;
}

/* stderr is the journal when JOURNAL_STREAM names the device and inode of fd 2. */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

void log_setup(const char *identifier) {
        if (identifier)
                log_identifier = identifier;
        log_target = stderr_is_journal() ? LOG_TARGET_JOURNAL : LOG_TARGET_CONSOLE;
}

void log_set_target(LogTarget target) {
        assert(target >= 0 && target < _LOG_TARGET_MAX);
        log_target = target;
}

LogTarget log_get_target(void) {
        return log_target;
}

void log_set_max_level(int level) {
        assert(level >= 0 && level <= LOG_DEBUG);
        log_max_level = level;
}

int log_get_max_level(void) {
        return log_max_level;
}

void log_context_push(LogContext *c) {
        c->prev = log_context_top;
        log_context_top = c;
}

void log_context_pop(LogContext *c) {
        /* Scopes unwind in order, so c is the top. */
        assert(log_context_top == c);
        log_context_top = c->prev;
}

const LogContext *log_context_current(void) {
        return log_context_top;
}

static void write_console(int level, const char *message) {
        char line[LOG_MESSAGE_MAX + 512];
        size_t off;
        int n;

        n = snprintf(line, sizeof(line), "%s%s",
                     level <= LOG_WARNING ? (level <= LOG_ERR ? "error: " : "warning: ") : "", message);
        off = n < 0 ? 0 : MIN((size_t) n, sizeof(line) - 1);
        for (const LogContext *c = log_context_top; c && off < sizeof(line) - 1; c = c->prev) {
                const char *k = startswith(c->key, "HWAMEID_") ?: c->key;
                n = snprintf(line + off, sizeof(line) - off, "%s%s=%s", c == log_context_top ? " [" : " ", k,
                             strempty(c->value));
                off = n < 0 ? off : MIN(off + (size_t) n, sizeof(line) - 1);
                if (!c->prev && off < sizeof(line) - 2)
                        line[off++] = ']';
        }
        if (off >= sizeof(line) - 1)
                off = sizeof(line) - 2;
        line[off++] = '\n';
        /* One write so that lines from threads do not interleave. */
        (void) !write(STDERR_FILENO, line, off);
}

static int write_journal(int level, int error, const char *file, int line, const char *func,
                         const char *message_id, const char *message) {
        char prio[16], code_line[32], err[32], fields[LOG_CONTEXT_FIELDS_MAX][512];
        char code_file[256], code_func[256], ident[128], msgid[64];
        _cleanup_free_ char *msg = NULL;
        struct iovec iov[8 + LOG_CONTEXT_FIELDS_MAX];
        size_t n = 0, k = 0;

        if (asprintf(&msg, "MESSAGE=%s", message) < 0)
                return -ENOMEM;
        iov[n++] = (struct iovec){ msg, strlen(msg) };
#define ADD_FIELD(buf, ...)                                                                                 \
        do {                                                                                                \
                int _m_ = snprintf(buf, sizeof(buf), __VA_ARGS__);                                          \
                iov[n++] = (struct iovec){ buf, MIN((size_t) MAX(_m_, 0), sizeof(buf) - 1) };               \
        } while (0)
        ADD_FIELD(prio, "PRIORITY=%d", level);
        ADD_FIELD(ident, "SYSLOG_IDENTIFIER=%s", log_identifier);
        ADD_FIELD(code_file, "CODE_FILE=%s", file);
        ADD_FIELD(code_line, "CODE_LINE=%d", line);
        ADD_FIELD(code_func, "CODE_FUNC=%s", func);
        if (error != 0)
                ADD_FIELD(err, "ERRNO=%d", abs(error));
        if (message_id)
                ADD_FIELD(msgid, "MESSAGE_ID=%s", message_id);
        for (const LogContext *c = log_context_top; c && k < LOG_CONTEXT_FIELDS_MAX; c = c->prev, k++)
                ADD_FIELD(fields[k], "%s=%s", c->key, strempty(c->value));
#undef ADD_FIELD
        return sd_journal_sendv(iov, (int) n);
}

int log_internal(int level, int error, const char *file, int line, const char *func, const char *message_id,
                 const char *format, ...) {
        char message[LOG_MESSAGE_MAX];
        int saved_errno = errno;
        va_list ap;

        if (level > log_max_level)
                goto finish;

        /* So that %m prints the error we were given. */
        errno = abs(error);
        va_start(ap, format);
        (void) vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);

        if (log_target != LOG_TARGET_JOURNAL ||
            write_journal(level, error, file, line, func, message_id, message) < 0)
                write_console(level, message);

finish:
        errno = saved_errno;
        return -abs(error);
}
