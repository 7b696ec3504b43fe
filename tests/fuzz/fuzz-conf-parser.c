/* SPDX-License-Identifier: Apache-2.0 */
/* The configuration parser on arbitrary bytes: it must reject or accept, never misbehave. */

#include <stdint.h>
#include <stdio.h>

#include "config/conf-parser.h"
#include "config/hwameid-conf.h"
#include "log/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char path[] = "/tmp/fuzz-conf-XXXXXX";
        Config c;
        FILE *f;
        int fd;

        log_set_max_level(LOG_CRIT); /* errors are expected; keep the output quiet */
        fd = mkstemp(path);
        if (fd < 0)
                return 0;
        f = fdopen(fd, "w");
        if (!f) {
                close(fd);
                unlink(path);
                return 0;
        }
        fwrite(data, 1, size, f);
        fclose(f);

        if (config_load(&c, path) >= 0) {
                FILE *null = fopen("/dev/null", "we");
                if (null) {
                        (void) config_dump_all(null, &c);
                        fclose(null);
                }
                config_done(&c);
        }
        unlink(path);
        return 0;
}
