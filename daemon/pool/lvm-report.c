/* SPDX-License-Identifier: Apache-2.0 */
/*
 * LVM's JSON report looks like this (every value a string, even with --nosuffix):
 *
 *   {"report": [ {"lv": [ {"lv_name":"lv1", "lv_size":"83886080", ...}, ... ]} ], "log": [...]}
 *
 * Rows are validated field by field; anything this code cannot represent faithfully is refused
 * with -EBADMSG instead of being guessed at.
 */

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../basic/json-util.h"
#include "../basic/string-util.h"
#include "lvm-report.h"
#include "lvm.h"

/* Sizes and offsets must fit an off_t; extent numbers are 32-bit in LVM's metadata. */
#define LVM_SIZE_MAX   ((uint64_t) INT64_MAX)
#define LVM_EXTENT_MAX ((uint64_t) UINT32_MAX)
/* Longer than any device path LVM prints. */
#define LVM_PATH_MAX 4096
#define LVM_ATTR_MAX 32

/* "[unknown]" is how LVM names a PV whose device is missing. */
#define LVM_UNKNOWN_PV "[unknown]"

/* A whole number, as a string of digits or (newer LVM, json_std) a JSON number. */
static int field_u64(const cJSON *row, const char *key, uint64_t max, uint64_t *ret) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, key);
        uint64_t u;

        if (cJSON_IsString(v)) {
                if (safe_atou64(v->valuestring, &u) < 0)
                        return -EBADMSG;
        } else if (cJSON_IsNumber(v)) {
                /* Doubles hold integers exactly up to 2^53. */
                if (!(v->valuedouble >= 0 && v->valuedouble <= 9007199254740992.0) ||
                    v->valuedouble != (double) (uint64_t) v->valuedouble)
                        return -EBADMSG;
                u = (uint64_t) v->valuedouble;
        } else
                return -EBADMSG;
        if (u > max)
                return -EBADMSG;
        *ret = u;
        return 0;
}

static int field_unsigned(const cJSON *row, const char *key, unsigned *ret) {
        uint64_t u;
        int r;

        r = field_u64(row, key, UINT32_MAX, &u);
        if (r < 0)
                return r;
        *ret = (unsigned) u;
        return 0;
}

static const char *field_string(const cJSON *row, const char *key) {
        return json_get_string(row, key);
}

static bool string_is_printable(const char *s) {
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || (unsigned char) *s >= 0x7f)
                        return false;
        return true;
}

/* An absolute device path without anything LVM's command line could split or quote, or the
 * placeholder of a missing PV. */
static bool pv_name_is_valid(const char *s) {
        if (streq(s, LVM_UNKNOWN_PV))
                return true;
        if (s[0] != '/' || strlen(s) >= LVM_PATH_MAX)
                return false;
        for (; *s; s++)
                if (!isalnum((unsigned char) *s) && !strchr("/_.:+-@=#", *s))
                        return false;
        return true;
}

/* The array of rows called key ("vg", "pv", "lv"): rows of every report section that has one. */
static int report_rows(const char *json, const char *key, cJSON **ret_root, cJSON ***ret_rows,
                       size_t *ret_n) {
        _cleanup_json_ cJSON *root = NULL;
        _cleanup_free_ cJSON **rows = NULL;
        const cJSON *report, *section;
        size_t n = 0, n_alloc = 0;
        bool found = false;

        if (!json)
                return -EINVAL;
        root = cJSON_Parse(json);
        if (!root)
                return -EBADMSG; /* cJSON does not tell out of memory from bad syntax */
        if (!cJSON_IsObject(root))
                return -EBADMSG;
        report = cJSON_GetObjectItemCaseSensitive(root, "report");
        if (!cJSON_IsArray(report))
                return -EBADMSG;

        cJSON_ArrayForEach(section, report) {
                const cJSON *list, *row;

                if (!cJSON_IsObject(section))
                        return -EBADMSG;
                list = cJSON_GetObjectItemCaseSensitive(section, key);
                if (!list)
                        continue;
                if (!cJSON_IsArray(list))
                        return -EBADMSG;
                found = true;
                cJSON_ArrayForEach(row, list) {
                        if (!cJSON_IsObject(row))
                                return -EBADMSG;
                        if (n == n_alloc) {
                                size_t m = n_alloc ? n_alloc * 2 : 16;
                                cJSON **t = reallocarray(rows, m, sizeof(*rows));
                                if (!t)
                                        return -ENOMEM;
                                rows = t;
                                n_alloc = m;
                        }
                        rows[n++] = (cJSON *) row;
                }
        }
        if (!found)
                return -EBADMSG;

        *ret_root = TAKE_PTR(root);
        *ret_rows = TAKE_PTR(rows);
        *ret_n = n;
        return 0;
}

static int strdup_checked(const char *s, char **ret) {
        char *t = strdup(s);

        if (!t)
                return -ENOMEM;
        *ret = t;
        return 0;
}

void lvm_vgs_free(LvmVg *v, size_t n) {
        if (!v)
                return;
        for (size_t i = 0; i < n; i++)
                free(v[i].name);
        free(v);
}

void lvm_pvs_free(LvmPv *p, size_t n) {
        if (!p)
                return;
        for (size_t i = 0; i < n; i++) {
                free(p[i].name);
                free(p[i].vg_name);
                free(p[i].missing);
        }
        free(p);
}

static void lvm_lv_done(LvmLv *l) {
        free(l->name);
        free(l->vg_name);
        free(l->attr);
        free(l->tags);
        for (size_t i = 0; i < l->n_ranges; i++)
                free(l->ranges[i].pv);
        free(l->ranges);
}

void lvm_lvs_free(LvmLv *l, size_t n) {
        if (!l)
                return;
        for (size_t i = 0; i < n; i++)
                lvm_lv_done(&l[i]);
        free(l);
}

int lvm_report_parse_vgs(const char *json, LvmVg **ret, size_t *ret_n) {
        _cleanup_json_ cJSON *root = NULL;
        _cleanup_free_ cJSON **rows = NULL;
        LvmVg *vgs = NULL;
        size_t n = 0, n_rows;
        int r;

        assert(ret);
        assert(ret_n);

        r = report_rows(json, "vg", &root, &rows, &n_rows);
        if (r < 0)
                return r;
        if (n_rows > 0) {
                vgs = calloc(n_rows, sizeof(*vgs));
                if (!vgs)
                        return -ENOMEM;
        }

        for (; n < n_rows; n++) {
                const cJSON *row = rows[n];
                LvmVg *v = &vgs[n];
                const char *name = field_string(row, "vg_name");

                if (!name || !lvm_name_is_valid(name)) {
                        r = -EBADMSG;
                        goto fail;
                }
                r = strdup_checked(name, &v->name);
                if (r < 0)
                        goto fail;
                if (field_u64(row, "vg_size", LVM_SIZE_MAX, &v->size) < 0 ||
                    field_u64(row, "vg_free", LVM_SIZE_MAX, &v->free) < 0 ||
                    field_u64(row, "vg_extent_size", LVM_SIZE_MAX, &v->extent_size) < 0 ||
                    field_unsigned(row, "pv_count", &v->pv_count) < 0 ||
                    field_unsigned(row, "lv_count", &v->lv_count) < 0 || v->extent_size == 0 ||
                    v->free > v->size) {
                        n++; /* v->name is set: free it too */
                        r = -EBADMSG;
                        goto fail;
                }
        }

        *ret = vgs;
        *ret_n = n_rows;
        return 0;

fail:
        lvm_vgs_free(vgs, n);
        return r;
}

int lvm_report_parse_pvs(const char *json, LvmPv **ret, size_t *ret_n) {
        _cleanup_json_ cJSON *root = NULL;
        _cleanup_free_ cJSON **rows = NULL;
        LvmPv *pvs = NULL;
        size_t n = 0, n_rows;
        int r;

        assert(ret);
        assert(ret_n);

        r = report_rows(json, "pv", &root, &rows, &n_rows);
        if (r < 0)
                return r;
        if (n_rows > 0) {
                pvs = calloc(n_rows, sizeof(*pvs));
                if (!pvs)
                        return -ENOMEM;
        }

        for (; n < n_rows;) {
                const cJSON *row = rows[n];
                LvmPv *p = &pvs[n++]; /* counted now: lvm_pvs_free() copes with NULL fields */
                const char *name = field_string(row, "pv_name");
                const char *vg = field_string(row, "vg_name");
                const char *missing = field_string(row, "pv_missing");

                if (!name || !pv_name_is_valid(name) || !vg || (!isempty(vg) && !lvm_name_is_valid(vg)) ||
                    !missing || !string_is_printable(missing) || strlen(missing) > LVM_ATTR_MAX) {
                        r = -EBADMSG;
                        goto fail;
                }
                if ((r = strdup_checked(name, &p->name)) < 0 || (r = strdup_checked(vg, &p->vg_name)) < 0 ||
                    (!isempty(missing) && (r = strdup_checked(missing, &p->missing)) < 0))
                        goto fail;
                if (field_u64(row, "pv_size", LVM_SIZE_MAX, &p->size) < 0 ||
                    field_u64(row, "pv_free", LVM_SIZE_MAX, &p->free) < 0 ||
                    field_u64(row, "pe_start", LVM_SIZE_MAX, &p->pe_start) < 0 || p->free > p->size) {
                        r = -EBADMSG;
                        goto fail;
                }
        }

        *ret = pvs;
        *ret_n = n_rows;
        return 0;

fail:
        lvm_pvs_free(pvs, n);
        return r;
}

/* "PV:FIRST-LAST". The PV path may itself contain ':' (/dev/disk/by-path/...): split at the last. */
static int parse_range(const char *s, LvmExtentRange *ret) {
        _cleanup_free_ char *copy = NULL;
        char *colon, *dash;
        uint64_t first, last;

        copy = strdup(s);
        if (!copy)
                return -ENOMEM;
        colon = strrchr(copy, ':');
        if (!colon)
                return -EBADMSG;
        *colon = '\0';
        dash = strchr(colon + 1, '-');
        if (!dash)
                return -EBADMSG;
        *dash = '\0';
        if (!pv_name_is_valid(copy) || safe_atou64(colon + 1, &first) < 0 ||
            safe_atou64(dash + 1, &last) < 0 || first > last || last > LVM_EXTENT_MAX)
                return -EBADMSG;

        *ret = (LvmExtentRange){ .pe_first = first, .pe_last = last };
        ret->pv = strdup(copy);
        if (!ret->pv)
                return -ENOMEM;
        return 0;
}

typedef struct LvSegment {
        uint64_t start;
        LvmExtentRange range;
} LvSegment;

static int segment_compare(const void *a, const void *b) {
        const LvSegment *x = a, *y = b;

        return x->start < y->start ? -1 : x->start > y->start ? 1 : 0;
}

/* Sorts the LV's segments by their first logical extent and checks that they follow each other
 * without gap or overlap, starting at 0. */
static int lv_order_segments(LvmLv *l, LvSegment *segs) {
        uint64_t next = 0;

        qsort(segs, l->n_ranges, sizeof(*segs), segment_compare);
        for (size_t i = 0; i < l->n_ranges; i++) {
                if (segs[i].start != next)
                        return -EBADMSG;
                next += segs[i].range.pe_last - segs[i].range.pe_first + 1;
                l->ranges[i] = segs[i].range;
        }
        return 0;
}

static LvmLv *lv_find(LvmLv *lvs, size_t n, const char *vg, const char *name) {
        for (size_t i = n; i > 0; i--) /* rows of one LV are adjacent: look from the end */
                if (streq(lvs[i - 1].name, name) && streq(lvs[i - 1].vg_name, vg))
                        return &lvs[i - 1];
        return NULL;
}

int lvm_report_parse_lvs(const char *json, LvmLv **ret, size_t *ret_n) {
        _cleanup_json_ cJSON *root = NULL;
        _cleanup_free_ cJSON **rows = NULL;
        _cleanup_free_ LvSegment *segs = NULL;
        _cleanup_free_ size_t *row_lv = NULL;
        LvmLv *lvs = NULL;
        size_t n = 0, n_rows;
        int r;

        assert(ret);
        assert(ret_n);

        r = report_rows(json, "lv", &root, &rows, &n_rows);
        if (r < 0)
                return r;
        if (n_rows > 0) {
                lvs = calloc(n_rows, sizeof(*lvs));
                segs = calloc(n_rows, sizeof(*segs));
                row_lv = calloc(n_rows, sizeof(*row_lv));
                if (!lvs || !segs || !row_lv) {
                        free(lvs);
                        return -ENOMEM;
                }
        }

        /* First pass: one LvmLv per distinct (vg, lv), one segment per row. */
        for (size_t i = 0; i < n_rows; i++) {
                const cJSON *row = rows[i];
                const char *name = field_string(row, "lv_name"), *vg = field_string(row, "vg_name"),
                           *attr = field_string(row, "lv_attr"), *active = field_string(row, "lv_active"),
                           *open = field_string(row, "lv_device_open"), *tags = field_string(row, "lv_tags"),
                           *ranges = field_string(row, "seg_pe_ranges");
                uint64_t size, start;
                LvmLv *l;

                if (!name || !lvm_name_is_valid(name) || !vg || !lvm_name_is_valid(vg) || !attr ||
                    !string_is_printable(attr) || strlen(attr) > LVM_ATTR_MAX || !active ||
                    !string_is_printable(active) || !open || !string_is_printable(open) || !ranges ||
                    (cJSON_GetObjectItemCaseSensitive(row, "lv_tags") &&
                     (!tags || !string_is_printable(tags))) ||
                    field_u64(row, "lv_size", LVM_SIZE_MAX, &size) < 0 ||
                    field_u64(row, "seg_start_pe", LVM_EXTENT_MAX, &start) < 0) {
                        r = -EBADMSG;
                        goto fail;
                }
                /* One range per segment: striped and mirrored segments list several, separated by
                 * spaces, and an LV without extents of its own (thin, virtual) lists none. */
                if (isempty(ranges) || strchr(ranges, ' ')) {
                        r = -EBADMSG;
                        goto fail;
                }

                l = lv_find(lvs, n, vg, name);
                if (l) {
                        if (l->size != size || !streq(l->attr, attr)) {
                                r = -EBADMSG;
                                goto fail;
                        }
                } else {
                        l = &lvs[n++];
                        if ((r = strdup_checked(name, &l->name)) < 0 ||
                            (r = strdup_checked(vg, &l->vg_name)) < 0 ||
                            (r = strdup_checked(attr, &l->attr)) < 0 ||
                            (tags && (r = strdup_checked(tags, &l->tags)) < 0))
                                goto fail;
                        l->size = size;
                        /* "active", "" or, with activation disabled, "unknown". */
                        l->active = !isempty(active) && !streq(active, "unknown");
                        /* "open", "" or "unknown". */
                        l->open = streq(open, "open");
                }
                segs[i].start = start;
                r = parse_range(ranges, &segs[i].range);
                if (r < 0)
                        goto fail;
                row_lv[i] = (size_t) (l - lvs);
                l->n_ranges++;
        }

        /* Second pass: hand each LV its segments, in logical order. */
        for (size_t k = 0; k < n; k++) {
                LvmLv *l = &lvs[k];
                _cleanup_free_ LvSegment *mine = NULL;
                size_t m = 0;

                l->ranges = calloc(l->n_ranges, sizeof(*l->ranges));
                mine = calloc(l->n_ranges, sizeof(*mine));
                if (!l->ranges || !mine) {
                        l->n_ranges = 0;
                        r = -ENOMEM;
                        goto fail;
                }
                for (size_t i = 0; i < n_rows; i++)
                        if (row_lv[i] == k) {
                                mine[m++] = segs[i];
                                segs[i].range.pv = NULL; /* now owned through mine */
                        }
                r = lv_order_segments(l, mine);
                if (r < 0) {
                        /* l->ranges holds the ranges in some order: freed with the LV. */
                        for (size_t i = 0; i < m; i++)
                                l->ranges[i] = mine[i].range;
                        goto fail;
                }
        }

        *ret = lvs;
        *ret_n = n;
        return 0;

fail:
        /* Ranges of LVs not yet handed over are still counted in n_ranges but live in segs. */
        for (size_t k = 0; k < n; k++)
                if (!lvs[k].ranges)
                        lvs[k].n_ranges = 0;
        for (size_t i = 0; i < n_rows; i++)
                free(segs[i].range.pv);
        lvm_lvs_free(lvs, n);
        return r;
}
