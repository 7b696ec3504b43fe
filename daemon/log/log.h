/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Logging. One sink is chosen at start-up: journald (native protocol, structured fields) when
 * stderr is connected to the journal (JOURNAL_STREAM), stderr otherwise.
 *
 *   return log_error_errno(r, "Failed to open '%s': %m", path);
 *
 * logs and returns -abs(r). Library-like layers log at debug level only; code that owns a state
 * machine logs the transitions and the errors it handles. errno is preserved across every call.
 *
 * Fields pushed with LOG_CONTEXT_PUSH_FIELD() are attached to every line logged by this thread
 * until the end of the enclosing scope.
 */

#include <stdbool.h>
#include <stdlib.h>
#include <syslog.h>

#include "../basic/macro.h"
#include "../basic/ratelimit.h"

typedef enum LogTarget {
        LOG_TARGET_CONSOLE,
        LOG_TARGET_JOURNAL,
        _LOG_TARGET_MAX,
        _LOG_TARGET_INVALID = -EINVAL,
} LogTarget;

/* Chooses the sink from the environment (JOURNAL_STREAM) and sets SYSLOG_IDENTIFIER. */
void log_setup(const char *identifier);
void log_set_target(LogTarget target);
LogTarget log_get_target(void);
void log_set_max_level(int level);
int log_get_max_level(void);

/* "debug", "info", "notice", "warning", "err" (also "error"), "crit", "alert", "emerg", or 0–7. */
int log_level_from_string(const char *s);
const char *log_level_to_string(int level);

int log_internal(int level, int error, const char *file, int line, const char *func, const char *message_id,
                 const char *format, ...) _printf_(7, 8);

#define log_full_errno_id(level, error, id, ...)                                                            \
        ({                                                                                                  \
                int _level_ = (level), _e_ = (error);                                                       \
                (log_get_max_level() >= _level_)                                                            \
                        ? log_internal(_level_, _e_, __FILE__, __LINE__, __func__, (id), __VA_ARGS__)       \
                        : -abs(_e_);                                                                        \
        })
#define log_full_errno(level, error, ...) log_full_errno_id(level, error, NULL, __VA_ARGS__)
#define log_full(level, ...)              (void) log_full_errno(level, 0, __VA_ARGS__)

#define log_debug(...)                    log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)                     log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...)                   log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...)                  log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...)                    log_full(LOG_ERR, __VA_ARGS__)

#define log_debug_errno(e, ...)           log_full_errno(LOG_DEBUG, e, __VA_ARGS__)
#define log_info_errno(e, ...)            log_full_errno(LOG_INFO, e, __VA_ARGS__)
#define log_notice_errno(e, ...)          log_full_errno(LOG_NOTICE, e, __VA_ARGS__)
#define log_warning_errno(e, ...)         log_full_errno(LOG_WARNING, e, __VA_ARGS__)
#define log_error_errno(e, ...)           log_full_errno(LOG_ERR, e, __VA_ARGS__)

#define log_oom()                         log_error_errno(ENOMEM, "Out of memory.")

/* An event with a catalog entry (daemon/log/catalog-ids.h). */
#define log_struct(level, id, ...)              (void) log_full_errno_id(level, 0, id, __VA_ARGS__)
#define log_struct_errno(level, error, id, ...) log_full_errno_id(level, error, id, __VA_ARGS__)

/*
 * For lines logged in loops (reconnects, I/O errors): at most `burst` per `interval` from this
 * call site and thread; the first line after a quiet window says how many were dropped.
 */
#define log_ratelimit_errno(level, error, interval, burst, ...)                                             \
        ({                                                                                                  \
                static _Thread_local RateLimit _rl_ = RATELIMIT_INIT(interval, burst);                      \
                unsigned _dropped_;                                                                         \
                int _re_ = (error);                                                                         \
                if (ratelimit_below(&_rl_, &_dropped_)) {                                                   \
                        if (_dropped_ > 0)                                                                  \
                                log_full(level, "(%u similar messages suppressed)", _dropped_);             \
                        _re_ = log_full_errno(level, _re_, __VA_ARGS__);                                    \
                } else                                                                                      \
                        _re_ = -abs(_re_);                                                                  \
                _re_;                                                                                       \
        })
#define log_ratelimit(level, interval, burst, ...)                                                          \
        (void) log_ratelimit_errno(level, 0, interval, burst, __VA_ARGS__)

/* Structured context fields; key must be a valid journal field name (HWAMEID_VOLUME, …). */
typedef struct LogContext {
        const char *key;
        const char *value;
        struct LogContext *prev;
} LogContext;

void log_context_push(LogContext *c);
void log_context_pop(LogContext *c);
/* The innermost context of this thread (for tests and sinks). */
const LogContext *log_context_current(void);

#define LOG_CONCAT_(a, b) a##b
#define LOG_CONCAT(a, b)  LOG_CONCAT_(a, b)
#define LOG_CONTEXT_PUSH_FIELD_(k, v, n)                                                                    \
        _cleanup_(log_context_pop) LogContext n = { .key = (k), .value = (v) };                             \
        log_context_push(&n)
#define LOG_CONTEXT_PUSH_FIELD(k, v) LOG_CONTEXT_PUSH_FIELD_(k, v, LOG_CONCAT(_log_ctx_, __COUNTER__))
