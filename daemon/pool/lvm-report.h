/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Parses LVM's JSON reports ("--reportformat json --units b --nosuffix"). Every field is
 * validated: sizes are whole numbers of bytes (LVM prints them as strings of digits; JSON numbers
 * are accepted too) no larger than INT64_MAX, names are LVM names, extent ranges are well formed.
 * What cannot be represented is refused with -EBADMSG rather than guessed at: an LV segment with
 * several ranges (striped, mirrored) or none (thin, virtual), segments that leave gaps. A missing
 * PV is called "[unknown]", as LVM prints it. Returns 0, -EBADMSG, -EINVAL (json NULL) or -ENOMEM.
 * Fuzzed (tests/fuzz/fuzz-lvm-report.c).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct LvmVg {
        char *name;
        uint64_t size, free, extent_size;
        unsigned pv_count, lv_count;
} LvmVg;

typedef struct LvmPv {
        char *name;    /* "/dev/loop3" */
        char *vg_name; /* "" when in no VG */
        uint64_t size, free;
        uint64_t pe_start; /* bytes from the start of the PV to its first extent */
        char *missing;     /* pv_missing attribute: non-NULL when LVM reports the PV missing */
} LvmPv;

/* One run of physical extents: extents [pe_first, pe_last] of pv (an LV segment, seg_pe_ranges).
 * Byte offset on the PV: pe_start + pe_first * vg extent_size. */
typedef struct LvmExtentRange {
        char *pv;
        uint64_t pe_first, pe_last;
} LvmExtentRange;

typedef struct LvmLv {
        char *name, *vg_name;
        uint64_t size;
        char *attr;  /* lv_attr, e.g. "-wi-a-----" */
        bool active; /* lv_active is "active" (it is "" when inactive, "unknown" without device-mapper) */
        bool open;   /* lv_device_open is "open" */
        char *tags;  /* lv_tags: comma-separated, "" when none (NULL when the report lacks the field) */
        LvmExtentRange *ranges; /* in logical order */
        size_t n_ranges;
} LvmLv;

/* Report field lists the parsers expect (pass them to -o). */
#define LVM_VG_FIELDS "vg_name,vg_size,vg_free,vg_extent_size,pv_count,lv_count"
#define LVM_PV_FIELDS "pv_name,vg_name,pv_size,pv_free,pe_start,pv_missing"
#define LVM_LV_FIELDS                                                                                       \
        "lv_name,vg_name,lv_size,lv_attr,lv_active,lv_device_open,lv_tags,seg_start_pe,seg_pe_ranges"

int lvm_report_parse_vgs(const char *json, LvmVg **ret, size_t *ret_n);
int lvm_report_parse_pvs(const char *json, LvmPv **ret, size_t *ret_n);
/* lvs prints one row per segment; rows of the same LV are merged, ranges ordered by seg_start_pe. */
int lvm_report_parse_lvs(const char *json, LvmLv **ret, size_t *ret_n);

void lvm_vgs_free(LvmVg *v, size_t n);
void lvm_pvs_free(LvmPv *p, size_t n);
void lvm_lvs_free(LvmLv *l, size_t n);
