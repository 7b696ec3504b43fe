/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdint.h>
#include <sys/random.h>
#include <time.h>

/* Non-cryptographic randomness for jitter: getrandom(), or the clock if that ever fails. */
static inline uint64_t random_u64(void) {
        uint64_t v;

        if (getrandom(&v, sizeof(v), GRND_NONBLOCK) == (ssize_t) sizeof(v))
                return v;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t) ts.tv_sec;
}

/* Uniform in [0, 1). */
static inline double random_unit(void) {
        return (double) (random_u64() >> 11) / (double) (1ULL << 53);
}
