/* SPDX-License-Identifier: Apache-2.0 */
/* basic/: time, strings, string vectors, rate limits. */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "basic/list.h"
#include "basic/macro.h"
#include "basic/ratelimit.h"
#include "basic/string-util.h"
#include "basic/time-util.h"

static usec_t fake_now;
static usec_t fake_clock(clockid_t clock, void *userdata) {
        (void) clock, (void) userdata;
        return fake_now;
}

static void parse_sec_accepts_systemd_spans(void **state) {
        usec_t u;

        (void) state;
        assert_int_equal(parse_sec("30s", &u), 0);
        assert_int_equal(u, 30 * USEC_PER_SEC);
        assert_int_equal(parse_sec("1min 30s", &u), 0);
        assert_int_equal(u, 90 * USEC_PER_SEC);
        assert_int_equal(parse_sec("250ms", &u), 0);
        assert_int_equal(u, 250 * USEC_PER_MSEC);
        assert_int_equal(parse_sec("1.5s", &u), 0);
        assert_int_equal(u, 1500 * USEC_PER_MSEC);
        assert_int_equal(parse_sec("2", &u), 0); /* bare number: seconds */
        assert_int_equal(u, 2 * USEC_PER_SEC);
        assert_int_equal(parse_sec("1h2m3s", &u), 0);
        assert_int_equal(u, 3723 * USEC_PER_SEC);
        assert_int_equal(parse_sec("infinity", &u), 0);
        assert_true(u == USEC_INFINITY);
}

static void parse_sec_rejects_garbage_and_overflow(void **state) {
        usec_t u = 42;

        (void) state;
        assert_int_equal(parse_sec("", &u), -EINVAL);
        assert_int_equal(parse_sec("s", &u), -EINVAL);
        assert_int_equal(parse_sec("10 parsecs", &u), -EINVAL);
        assert_int_equal(parse_sec("-1s", &u), -EINVAL);
        assert_int_equal(parse_sec("1.s", &u), -EINVAL);
        assert_int_equal(parse_sec("99999999999999999999s", &u), -ERANGE);
        assert_int_equal(parse_sec("999999999999d", &u), -ERANGE);
        assert_int_equal(u, 42); /* untouched on failure */
}

static void format_timespan_round_trips(void **state) {
        char buf[FORMAT_TIMESPAN_MAX];
        const usec_t values[] = { 0, 1, 999, USEC_PER_SEC, 90 * USEC_PER_SEC, 250 * USEC_PER_MSEC,
                                  3 * USEC_PER_DAY + 7 * USEC_PER_HOUR + 5 };
        usec_t back;

        (void) state;
        assert_string_equal(format_timespan(buf, sizeof(buf), 90 * USEC_PER_SEC), "1min 30s");
        assert_string_equal(format_timespan(buf, sizeof(buf), 0), "0");
        assert_string_equal(format_timespan(buf, sizeof(buf), USEC_INFINITY), "infinity");
        for (size_t i = 0; i < ELEMENTSOF(values); i++) {
                format_timespan(buf, sizeof(buf), values[i]);
                assert_int_equal(parse_sec(buf, &back), 0);
                assert_true(back == values[i]);
        }
}

static void now_follows_the_fake_clock(void **state) {
        (void) state;
        time_util_set_fake(fake_clock, NULL);
        fake_now = 1234;
        assert_int_equal(now(CLOCK_MONOTONIC), 1234);
        time_util_set_fake(NULL, NULL);
        assert_true(now(CLOCK_MONOTONIC) != 1234);
}

static void parse_size_units(void **state) {
        uint64_t v;

        (void) state;
        assert_int_equal(parse_size("512", &v), 0);
        assert_int_equal(v, 512);
        assert_int_equal(parse_size("4M", &v), 0);
        assert_int_equal(v, 4ULL << 20);
        assert_int_equal(parse_size("1.5GiB", &v), 0);
        assert_int_equal(v, 3ULL << 29);
        assert_int_equal(parse_size("2t", &v), 0);
        assert_int_equal(v, 2ULL << 40);
        assert_int_equal(parse_size("1.5", &v), -EINVAL);
        assert_int_equal(parse_size("4X", &v), -EINVAL);
        assert_int_equal(parse_size("", &v), -EINVAL);
        assert_int_equal(parse_size("99999999999P", &v), -ERANGE);
}

static void safe_atou_rejects_signs_junk_and_overflow(void **state) {
        uint64_t v;
        unsigned u;

        (void) state;
        assert_int_equal(safe_atou64("18446744073709551615", &v), 0);
        assert_true(v == UINT64_MAX);
        assert_int_equal(safe_atou64("18446744073709551616", &v), -ERANGE);
        assert_int_equal(safe_atou64("-1", &v), -EINVAL);
        assert_int_equal(safe_atou64("12a", &v), -EINVAL);
        assert_int_equal(safe_atou64(" 1", &v), -EINVAL);
        assert_int_equal(safe_atou("4294967296", &u), -ERANGE);
}

static void parse_boolean_words(void **state) {
        (void) state;
        assert_int_equal(parse_boolean("yes"), 1);
        assert_int_equal(parse_boolean("On"), 1);
        assert_int_equal(parse_boolean("0"), 0);
        assert_int_equal(parse_boolean("FALSE"), 0);
        assert_int_equal(parse_boolean("maybe"), -EINVAL);
}

static void strv_split_join_copy(void **state) {
        _cleanup_strv_free_ char **l = NULL, **c = NULL;
        _cleanup_free_ char *j = NULL;

        (void) state;
        assert_int_equal(strv_split("  /dev/sd*  /dev/nvme*\t/dev/vdb ", " \t", &l), 0);
        assert_int_equal(strv_length(l), 3);
        assert_string_equal(l[1], "/dev/nvme*");
        j = strv_join(l, ",");
        assert_string_equal(j, "/dev/sd*,/dev/nvme*,/dev/vdb");
        c = strv_copy(l);
        assert_true(strv_equal(c, l));
        assert_int_equal(strv_extend(&c, "x"), 0);
        assert_false(strv_equal(c, l));
}

static void strstrip_and_prefixes(void **state) {
        char buf[] = " \t key = value \n";

        (void) state;
        assert_string_equal(strstrip(buf), "key = value");
        assert_string_equal(startswith("HWAMEID_VOLUME", "HWAMEID_"), "VOLUME");
        assert_null(startswith("VOLUME", "HWAMEID_"));
        assert_true(endswith("a.conf", ".conf"));
        assert_false(endswith("conf", ".conf"));
}

static void format_bytes_is_readable(void **state) {
        char buf[FORMAT_BYTES_MAX];

        (void) state;
        assert_string_equal(format_bytes(buf, sizeof(buf), 512), "512B");
        assert_string_equal(format_bytes(buf, sizeof(buf), 4ULL << 20), "4M");
        assert_string_equal(format_bytes(buf, sizeof(buf), 3ULL << 29), "1.5G");
}

static void ratelimit_allows_burst_then_reports_dropped(void **state) {
        RateLimit rl = RATELIMIT_INIT(10 * USEC_PER_SEC, 3);
        unsigned dropped;

        (void) state;
        time_util_set_fake(fake_clock, NULL);
        fake_now = 100 * USEC_PER_SEC;
        for (int i = 0; i < 3; i++)
                assert_true(ratelimit_below(&rl, &dropped));
        assert_false(ratelimit_below(&rl, &dropped));
        assert_false(ratelimit_below(&rl, &dropped));
        fake_now += 9 * USEC_PER_SEC;
        assert_false(ratelimit_below(&rl, &dropped));
        fake_now += 2 * USEC_PER_SEC; /* window over */
        assert_true(ratelimit_below(&rl, &dropped));
        assert_int_equal(dropped, 3);
        assert_true(ratelimit_below(&rl, &dropped));
        assert_int_equal(dropped, 0);
        time_util_set_fake(NULL, NULL);
}

typedef struct Item {
        int v;
        LIST_FIELDS(struct Item, items);
} Item;

static void list_prepend_remove(void **state) {
        Item a = { .v = 1 }, b = { .v = 2 }, c = { .v = 3 };
        LIST_HEAD(Item, head) = NULL;
        int sum = 0, n = 0;

        (void) state;
        LIST_PREPEND(items, head, &a);
        LIST_PREPEND(items, head, &b);
        LIST_PREPEND(items, head, &c);
        LIST_REMOVE(items, head, &b);
        LIST_FOREACH(items, i, head) {
                sum += i->v;
                n++;
        }
        assert_int_equal(n, 2);
        assert_int_equal(sum, 4);
        LIST_FOREACH_SAFE(items, i, next, head)
                LIST_REMOVE(items, head, i);
        assert_null(head);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(parse_sec_accepts_systemd_spans),
                cmocka_unit_test(parse_sec_rejects_garbage_and_overflow),
                cmocka_unit_test(format_timespan_round_trips),
                cmocka_unit_test(now_follows_the_fake_clock),
                cmocka_unit_test(parse_size_units),
                cmocka_unit_test(safe_atou_rejects_signs_junk_and_overflow),
                cmocka_unit_test(parse_boolean_words),
                cmocka_unit_test(strv_split_join_copy),
                cmocka_unit_test(strstrip_and_prefixes),
                cmocka_unit_test(format_bytes_is_readable),
                cmocka_unit_test(ratelimit_allows_burst_then_reports_dropped),
                cmocka_unit_test(list_prepend_remove),
        };
        return cmocka_run_group_tests_name("basic", tests, NULL, NULL);
}
