/* SPDX-License-Identifier: Apache-2.0 */
#include "ratelimit.h"
#include "macro.h"

bool ratelimit_below(RateLimit *rl, unsigned *ret_suppressed) {
        usec_t ts;

        assert(rl);

        if (ret_suppressed)
                *ret_suppressed = 0;
        if (rl->interval == 0 || rl->burst == 0)
                return true;

        ts = now(CLOCK_MONOTONIC);
        if (rl->begin == 0 || ts < rl->begin || ts - rl->begin >= rl->interval) {
                if (ret_suppressed)
                        *ret_suppressed = rl->suppressed;
                rl->begin = ts;
                rl->num = 1;
                rl->suppressed = 0;
                return true;
        }
        if (rl->num < rl->burst) {
                rl->num++;
                return true;
        }
        rl->suppressed++;
        return false;
}
