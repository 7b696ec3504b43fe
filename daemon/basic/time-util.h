/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Every clock read in the daemon goes through here, so tests can run time forwards without
 * sleeping (time_util_set_fake()).
 */

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

typedef uint64_t usec_t;

#define USEC_INFINITY   ((usec_t) UINT64_MAX)
#define USEC_PER_MSEC   ((usec_t) 1000ULL)
#define USEC_PER_SEC    ((usec_t) 1000000ULL)
#define USEC_PER_MINUTE (60ULL * USEC_PER_SEC)
#define USEC_PER_HOUR   (60ULL * USEC_PER_MINUTE)
#define USEC_PER_DAY    (24ULL * USEC_PER_HOUR)
#define NSEC_PER_USEC   ((uint64_t) 1000ULL)

/* Current time of the given clock (CLOCK_MONOTONIC, CLOCK_BOOTTIME, CLOCK_REALTIME). */
usec_t now(clockid_t clock);

/* Tests: make now() return the value that the hook returns instead. NULL restores the real clocks. */
typedef usec_t (*TimeSource)(clockid_t clock, void *userdata);
void time_util_set_fake(TimeSource source, void *userdata);

usec_t timespec_load(const struct timespec *ts);

/*
 * Durations: "30s", "1min 30s", "250ms", "2h", "1.5s", a bare number means seconds (as systemd's
 * parse_sec()). "infinity" gives USEC_INFINITY. Returns -EINVAL on bad syntax, -ERANGE on overflow.
 */
int parse_sec(const char *s, usec_t *ret);

/* Formats a duration compactly ("1min 30s", "250ms", "0"); buf must hold FORMAT_TIMESPAN_MAX. */
#define FORMAT_TIMESPAN_MAX 64
char *format_timespan(char *buf, size_t len, usec_t t);
