/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>

#include "time-util.h"

/*
 * At most `burst` events per `interval`. When a window closes after events were suppressed,
 * ratelimit_below() reports how many through *suppressed so the caller can say so once.
 */
typedef struct RateLimit {
        usec_t interval;
        unsigned burst;
        unsigned num;
        unsigned suppressed;
        usec_t begin;
} RateLimit;

#define RATELIMIT_INIT(i, b)                                                                                \
        { .interval = (i), .burst = (b) }

/* True if this event may pass. *ret_suppressed (optional) gets the count dropped in the window
 * that just ended, once, on the first event of the new window. */
bool ratelimit_below(RateLimit *rl, unsigned *ret_suppressed);
