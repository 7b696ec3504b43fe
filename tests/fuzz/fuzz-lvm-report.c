/* SPDX-License-Identifier: Apache-2.0 */
/* LVM's JSON reports on arbitrary bytes: every parser must accept or refuse, never misbehave. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pool/lvm-report.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *json;
        LvmVg *v;
        LvmPv *p;
        LvmLv *l;
        size_t n;

        if (size > 1024 * 1024)
                return 0;
        json = malloc(size + 1);
        if (!json)
                return 0;
        memcpy(json, data, size);
        json[size] = '\0';

        if (lvm_report_parse_vgs(json, &v, &n) >= 0)
                lvm_vgs_free(v, n);
        if (lvm_report_parse_pvs(json, &p, &n) >= 0)
                lvm_pvs_free(p, n);
        if (lvm_report_parse_lvs(json, &l, &n) >= 0) {
                /* What the parser promises about ranges. */
                for (size_t i = 0; i < n; i++)
                        for (size_t k = 0; k < l[i].n_ranges; k++)
                                if (!l[i].ranges[k].pv || l[i].ranges[k].pe_first > l[i].ranges[k].pe_last)
                                        abort();
                lvm_lvs_free(l, n);
        }
        free(json);
        return 0;
}
