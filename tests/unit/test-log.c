/* SPDX-License-Identifier: Apache-2.0 */
/* log/: levels, the console sink, context fields, errno handling, rate-limited lines. */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "basic/time-util.h"
#include "log/log.h"

static char captured[8192];
static int saved_stderr = -1;
static FILE *capture_file;

static void capture_start(void) {
        capture_file = tmpfile();
        assert_non_null(capture_file);
        saved_stderr = dup(STDERR_FILENO);
        dup2(fileno(capture_file), STDERR_FILENO);
}

static const char *capture_stop(void) {
        size_t n;

        dup2(saved_stderr, STDERR_FILENO);
        close(saved_stderr);
        rewind(capture_file);
        n = fread(captured, 1, sizeof(captured) - 1, capture_file);
        captured[n] = '\0';
        fclose(capture_file);
        return captured;
}

static unsigned count(const char *haystack, const char *needle) {
        unsigned n = 0;

        for (const char *p = haystack; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

static void level_names_round_trip(void **state) {
        (void) state;
        for (int l = LOG_EMERG; l <= LOG_DEBUG; l++)
                assert_int_equal(log_level_from_string(log_level_to_string(l)), l);
        assert_int_equal(log_level_from_string("error"), LOG_ERR);
        assert_int_equal(log_level_from_string("WARNING"), LOG_WARNING);
        assert_int_equal(log_level_from_string("7"), LOG_DEBUG);
        assert_int_equal(log_level_from_string("8"), -EINVAL);
        assert_int_equal(log_level_from_string("verbose"), -EINVAL);
        assert_null(log_level_to_string(8));
}

static void errno_return_value_and_percent_m(void **state) {
        int r;

        (void) state;
        log_set_max_level(LOG_INFO);
        capture_start();
        errno = EPIPE;
        r = log_error_errno(ENOENT, "Failed to open '%s': %m", "/x");
        assert_int_equal(errno, EPIPE); /* preserved */
        assert_int_equal(r, -ENOENT);
        assert_int_equal(log_warning_errno(-EACCES, "negative errno works too: %m"), -EACCES);
        /* Below the level: not printed, but the error is still returned. */
        assert_int_equal(log_debug_errno(EIO, "hidden"), -EIO);
        const char *out = capture_stop();
        assert_non_null(strstr(out, "error: Failed to open '/x': No such file or directory\n"));
        assert_non_null(strstr(out, "warning: negative errno works too: Permission denied\n"));
        assert_null(strstr(out, "hidden"));
}

static void context_fields_apply_to_their_scope_only(void **state) {
        (void) state;
        log_set_max_level(LOG_DEBUG);
        capture_start();
        {
                LOG_CONTEXT_PUSH_FIELD("HWAMEID_VOLUME", "pvc-1");
                {
                        LOG_CONTEXT_PUSH_FIELD("HWAMEID_PEER", "10.0.0.2");
                        log_info("inner");
                }
                log_info("outer");
        }
        log_info("none");
        assert_null(log_context_current());
        const char *out = capture_stop();
        assert_non_null(strstr(out, "inner [PEER=10.0.0.2 VOLUME=pvc-1]\n"));
        assert_non_null(strstr(out, "outer [VOLUME=pvc-1]\n"));
        assert_non_null(strstr(out, "none\n"));
        log_set_max_level(LOG_INFO);
}

static usec_t fake_now = 1000 * USEC_PER_SEC;
static usec_t fake_clock(clockid_t clock, void *userdata) {
        (void) clock, (void) userdata;
        return fake_now;
}

static void ratelimited_lines_say_how_many_were_dropped(void **state) {
        (void) state;
        time_util_set_fake(fake_clock, NULL);
        capture_start();
        for (int i = 0; i < 10; i++)
                log_ratelimit(LOG_WARNING, 60 * USEC_PER_SEC, 2, "reconnect %d", i);
        fake_now += 61 * USEC_PER_SEC;
        log_ratelimit(LOG_WARNING, 60 * USEC_PER_SEC, 2, "after the window");
        const char *out = capture_stop();
        time_util_set_fake(NULL, NULL);
        /* Each call site has its own limit, so only the loop's lines are limited. */
        assert_int_equal(count(out, "reconnect"), 2);
        assert_non_null(strstr(out, "after the window"));
        assert_null(strstr(out, "suppressed")); /* the second call site dropped nothing */
}

static void ratelimit_reports_suppressed_count_on_the_same_site(void **state) {
        (void) state;
        time_util_set_fake(fake_clock, NULL);
        capture_start();
        for (int round = 0; round < 2; round++) {
                for (int i = 0; i < 5; i++)
                        log_ratelimit(LOG_NOTICE, 10 * USEC_PER_SEC, 1, "line %d.%d", round, i);
                fake_now += 11 * USEC_PER_SEC;
        }
        const char *out = capture_stop();
        time_util_set_fake(NULL, NULL);
        assert_int_equal(count(out, "line "), 2);
        assert_non_null(strstr(out, "(4 similar messages suppressed)"));
}

static void long_messages_are_truncated_not_overflowed(void **state) {
        char big[10000];

        (void) state;
        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        capture_start();
        log_info("%s", big);
        const char *out = capture_stop();
        assert_true(strlen(out) > 4000);
        assert_true(strlen(out) < 5000);
        assert_int_equal(out[strlen(out) - 1], '\n');
}

static void journal_stream_detection_needs_matching_inode(void **state) {
        (void) state;
        setenv("JOURNAL_STREAM", "1:1", 1);
        log_setup("test");
        assert_int_equal(log_get_target(), LOG_TARGET_CONSOLE);
        unsetenv("JOURNAL_STREAM");
        log_setup("test");
        assert_int_equal(log_get_target(), LOG_TARGET_CONSOLE);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(level_names_round_trip),
                cmocka_unit_test(errno_return_value_and_percent_m),
                cmocka_unit_test(context_fields_apply_to_their_scope_only),
                cmocka_unit_test(ratelimited_lines_say_how_many_were_dropped),
                cmocka_unit_test(ratelimit_reports_suppressed_count_on_the_same_site),
                cmocka_unit_test(long_messages_are_truncated_not_overflowed),
                cmocka_unit_test(journal_stream_detection_needs_matching_inode),
        };
        return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
