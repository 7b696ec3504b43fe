/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "time-util.h"

static TimeSource fake_source;
static void *fake_userdata;

void time_util_set_fake(TimeSource source, void *userdata) {
        fake_source = source;
        fake_userdata = userdata;
}

usec_t timespec_load(const struct timespec *ts) {
        assert(ts);
        return (usec_t) ts->tv_sec * USEC_PER_SEC + (usec_t) ts->tv_nsec / NSEC_PER_USEC;
}

usec_t now(clockid_t clock) {
        struct timespec ts;

        if (fake_source)
                return fake_source(clock, fake_userdata);

        /* Only fails for an invalid clock id, which is a programming error. */
        if (clock_gettime(clock, &ts) < 0)
                abort();
        return timespec_load(&ts);
}

static const struct {
        const char *suffix;
        usec_t usec;
} time_units[] = {
        /* Longest suffixes first, so "ms" is not read as "m" followed by garbage. */
        { "usec", 1 },
        { "msec", USEC_PER_MSEC },
        { "seconds", USEC_PER_SEC },
        { "second", USEC_PER_SEC },
        { "sec", USEC_PER_SEC },
        { "minutes", USEC_PER_MINUTE },
        { "minute", USEC_PER_MINUTE },
        { "min", USEC_PER_MINUTE },
        { "hours", USEC_PER_HOUR },
        { "hour", USEC_PER_HOUR },
        { "days", USEC_PER_DAY },
        { "day", USEC_PER_DAY },
        { "us", 1 },
        { "ms", USEC_PER_MSEC },
        { "s", USEC_PER_SEC },
        { "m", USEC_PER_MINUTE },
        { "h", USEC_PER_HOUR },
        { "d", USEC_PER_DAY },
};

int parse_sec(const char *s, usec_t *ret) {
        usec_t total = 0;
        bool any = false;

        assert(s);
        assert(ret);

        while (isspace((unsigned char) *s))
                s++;
        if (strcmp(s, "infinity") == 0) {
                *ret = USEC_INFINITY;
                return 0;
        }

        while (*s) {
                uint64_t whole = 0, frac = 0, frac_div = 1;
                usec_t unit = USEC_PER_SEC;
                bool digits = false;

                if (!isdigit((unsigned char) *s))
                        return -EINVAL;
                for (; isdigit((unsigned char) *s); s++, digits = true) {
                        if (whole > (UINT64_MAX - 9) / 10)
                                return -ERANGE;
                        whole = whole * 10 + (uint64_t) (*s - '0');
                }
                if (*s == '.') {
                        s++;
                        if (!isdigit((unsigned char) *s))
                                return -EINVAL;
                        for (; isdigit((unsigned char) *s); s++)
                                if (frac_div < 1000000000ULL) {
                                        frac = frac * 10 + (uint64_t) (*s - '0');
                                        frac_div *= 10;
                                }
                }
                if (!digits)
                        return -EINVAL;

                while (isspace((unsigned char) *s))
                        s++;
                if (isalpha((unsigned char) *s)) {
                        size_t n = 0, i;

                        while (isalpha((unsigned char) s[n]))
                                n++;
                        for (i = 0; i < ELEMENTSOF(time_units); i++)
                                if (strlen(time_units[i].suffix) == n &&
                                    strncmp(s, time_units[i].suffix, n) == 0)
                                        break;
                        if (i >= ELEMENTSOF(time_units))
                                return -EINVAL;
                        unit = time_units[i].usec;
                        s += n;
                }

                if (whole > USEC_INFINITY / unit)
                        return -ERANGE;
                usec_t part = whole * unit + frac * unit / frac_div;
                if (part > USEC_INFINITY - 1 - total)
                        return -ERANGE;
                total += part;
                any = true;

                while (isspace((unsigned char) *s))
                        s++;
        }

        if (!any)
                return -EINVAL;
        *ret = total;
        return 0;
}

char *format_timespan(char *buf, size_t len, usec_t t) {
        static const struct {
                const char *suffix;
                usec_t usec;
        } table[] = {
                { "d", USEC_PER_DAY }, { "h", USEC_PER_HOUR },  { "min", USEC_PER_MINUTE },
                { "s", USEC_PER_SEC }, { "ms", USEC_PER_MSEC }, { "us", 1 },
        };
        size_t off = 0;

        assert(buf);
        assert(len > 0);

        if (t == USEC_INFINITY) {
                snprintf(buf, len, "infinity");
                return buf;
        }
        if (t == 0) {
                snprintf(buf, len, "0");
                return buf;
        }
        for (size_t i = 0; i < ELEMENTSOF(table) && t > 0 && off < len; i++) {
                if (t < table[i].usec)
                        continue;
                int n = snprintf(buf + off, len - off, "%s%llu%s", off > 0 ? " " : "",
                                 (unsigned long long) (t / table[i].usec), table[i].suffix);
                if (n < 0)
                        break;
                off += (size_t) n;
                t %= table[i].usec;
        }
        return buf;
}
