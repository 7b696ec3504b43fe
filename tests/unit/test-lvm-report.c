/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pool/lvm-report: reports as LVM 2.03.16 prints them (captured from "vgs/pvs/lvs --reportformat
 * json --units b --nosuffix -o LVM_*_FIELDS" on loop devices, activation disabled), and what a
 * report must not get away with.
 */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pool/lvm-report.h"
#include "pool/lvm.h"

static const char vgs_real[] = "{\n"
                               "    \"report\": [\n"
                               "        {\n"
                               "            \"vg\": [\n"
                               "                {\"vg_name\":\"LocalStorage_PoolHDD\", "
                               "\"vg_size\":\"125829120\", \"vg_free\":\"20971520\", "
                               "\"vg_extent_size\":\"4194304\", \"pv_count\":\"2\", \"lv_count\":\"2\"}\n"
                               "            ]\n"
                               "        }\n"
                               "    ]\n"
                               "}";

static const char pvs_real[] = "{\n"
                               "    \"report\": [\n"
                               "        {\n"
                               "            \"pv\": [\n"
                               "                {\"pv_name\":\"/dev/loop0\", "
                               "\"vg_name\":\"LocalStorage_PoolHDD\", \"pv_size\":\"62914560\", "
                               "\"pv_free\":\"0\", \"pe_start\":\"1048576\", \"pv_missing\":\"\"},\n"
                               "                {\"pv_name\":\"/dev/loop1\", "
                               "\"vg_name\":\"LocalStorage_PoolHDD\", \"pv_size\":\"62914560\", "
                               "\"pv_free\":\"20971520\", \"pe_start\":\"1048576\", \"pv_missing\":\"\"},\n"
                               "                {\"pv_name\":\"/dev/loop2\", \"vg_name\":\"\", "
                               "\"pv_size\":\"16777216\", \"pv_free\":\"16777216\", "
                               "\"pe_start\":\"1048576\", \"pv_missing\":\"\"}\n"
                               "            ]\n"
                               "        }\n"
                               "    ]\n"
                               "}";

#define LV_ROW(name, size, start, ranges)                                                                   \
        "{\"lv_name\":\"" name "\", \"vg_name\":\"LocalStorage_PoolHDD\", \"lv_size\":\"" size "\", "       \
        "\"lv_attr\":\"-wi-XX----\", \"lv_active\":\"unknown\", \"lv_device_open\":\"unknown\", "           \
        "\"seg_start_pe\":\"" start "\", \"seg_pe_ranges\":\"" ranges "\"}"

#define LV_REPORT(rows)                                                                                     \
        "{\n    \"report\": [\n        {\n            \"lv\": [\n" rows                                     \
        "\n            ]\n        }\n    ]\n}"

/* lv1 was extended across the two PVs: two segments. */
static const char lvs_real[] = LV_REPORT("                " LV_ROW(
        "lv1", "83886080", "0",
        "/dev/loop0:0-9") ",\n"
                          "                " LV_ROW("lv1", "83886080", "10",
                                                    "/dev/loop1:0-9") ",\n"
                                                                      "                " LV_ROW(
                                                                              "lv2", "20971520", "0",
                                                                              "/dev/loop0:10-14"));

static void vgs_as_lvm_prints_them(void **state) {
        LvmVg *v = NULL;
        size_t n = 0;

        (void) state;
        assert_int_equal(lvm_report_parse_vgs(vgs_real, &v, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(v[0].name, "LocalStorage_PoolHDD");
        assert_int_equal(v[0].size, 125829120);
        assert_int_equal(v[0].free, 20971520);
        assert_int_equal(v[0].extent_size, 4194304);
        assert_int_equal(v[0].pv_count, 2);
        assert_int_equal(v[0].lv_count, 2);
        lvm_vgs_free(v, n);
}

static void pvs_as_lvm_prints_them(void **state) {
        LvmPv *p = NULL;
        size_t n = 0;

        (void) state;
        assert_int_equal(lvm_report_parse_pvs(pvs_real, &p, &n), 0);
        assert_int_equal(n, 3);
        assert_string_equal(p[0].name, "/dev/loop0");
        assert_string_equal(p[0].vg_name, "LocalStorage_PoolHDD");
        assert_int_equal(p[0].size, 62914560);
        assert_int_equal(p[0].free, 0);
        assert_int_equal(p[0].pe_start, 1048576);
        assert_null(p[0].missing);
        assert_string_equal(p[2].vg_name, ""); /* an orphan PV */
        assert_int_equal(p[2].free, 16777216);
        lvm_pvs_free(p, n);

        assert_int_equal(
                lvm_report_parse_pvs("{\"report\":[{\"pv\":[{\"pv_name\":\"[unknown]\", "
                                     "\"vg_name\":\"vg\", \"pv_size\":\"4194304\", \"pv_free\":\"0\", "
                                     "\"pe_start\":\"1048576\", \"pv_missing\":\"missing\"}]}]}",
                                     &p, &n),
                0);
        assert_int_equal(n, 1);
        assert_string_equal(p[0].name, "[unknown]");
        assert_string_equal(p[0].missing, "missing");
        lvm_pvs_free(p, n);
}

static void lvs_merged_across_two_pvs(void **state) {
        LvmLv *l = NULL;
        size_t n = 0;

        (void) state;
        assert_int_equal(lvm_report_parse_lvs(lvs_real, &l, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(l[0].name, "lv1");
        assert_string_equal(l[0].vg_name, "LocalStorage_PoolHDD");
        assert_int_equal(l[0].size, 83886080);
        assert_string_equal(l[0].attr, "-wi-XX----");
        assert_false(l[0].active); /* "unknown" without device-mapper */
        assert_false(l[0].open);
        assert_int_equal(l[0].n_ranges, 2);
        assert_string_equal(l[0].ranges[0].pv, "/dev/loop0");
        assert_int_equal(l[0].ranges[0].pe_first, 0);
        assert_int_equal(l[0].ranges[0].pe_last, 9);
        assert_string_equal(l[0].ranges[1].pv, "/dev/loop1");
        assert_int_equal(l[0].ranges[1].pe_first, 0);
        assert_int_equal(l[0].ranges[1].pe_last, 9);
        assert_string_equal(l[1].name, "lv2");
        assert_int_equal(l[1].n_ranges, 1);
        assert_int_equal(l[1].ranges[0].pe_first, 10);
        assert_int_equal(l[1].ranges[0].pe_last, 14);
        lvm_lvs_free(l, n);
}

static void lvs_segments_out_of_order_and_odd_paths(void **state) {
        /* JSON numbers (newer LVM), rows in any order, a PV path with colons, active and open. */
        static const char json[] =
                "{\"report\":[{\"lv\":[{\"lv_name\":\"a\", \"vg_name\":\"v\", \"lv_size\":8388608, "
                "\"lv_attr\":\"-wi-ao----\", \"lv_active\":\"active\", \"lv_device_open\":\"open\", "
                "\"seg_start_pe\":1, \"seg_pe_ranges\":\"/dev/disk/by-path/pci-0000:00:1f.2:3-3\"},"
                "{\"lv_name\":\"a\", \"vg_name\":\"v\", \"lv_size\":8388608, \"lv_attr\":\"-wi-ao----\", "
                "\"lv_active\":\"active\", \"lv_device_open\":\"open\", \"seg_start_pe\":0, "
                "\"seg_pe_ranges\":\"/dev/sdb:7-7\"}]}],\"log\":[]}";
        LvmLv *l = NULL;
        size_t n = 0;

        (void) state;
        assert_int_equal(lvm_report_parse_lvs(json, &l, &n), 0);
        assert_int_equal(n, 1);
        assert_true(l[0].active);
        assert_true(l[0].open);
        assert_int_equal(l[0].n_ranges, 2);
        assert_string_equal(l[0].ranges[0].pv, "/dev/sdb");
        assert_string_equal(l[0].ranges[1].pv, "/dev/disk/by-path/pci-0000:00:1f.2");
        assert_int_equal(l[0].ranges[1].pe_first, 3);
        lvm_lvs_free(l, n);
}

static void empty_reports(void **state) {
        LvmLv *l = (LvmLv *) 1;
        size_t n = 7;

        (void) state;
        assert_int_equal(lvm_report_parse_lvs(LV_REPORT(""), &l, &n), 0);
        assert_int_equal(n, 0);
        lvm_lvs_free(l, n);
}

static void bad_lvs(void **state) {
        static const char *const bad[] = {
                /* striped: two ranges in one segment (captured) */
                LV_REPORT(LV_ROW("striped", "8388608", "0", "/dev/loop1:10-10 /dev/loop2:0-0")),
                /* no ranges (thin, virtual) */
                LV_REPORT(LV_ROW("thin", "8388608", "0", "")),
                /* a gap between segments, a missing first segment, overlapping segments */
                LV_REPORT(LV_ROW("a", "8388608", "0", "/dev/sda:0-0") "," LV_ROW("a", "8388608", "2",
                                                                                 "/dev/sda:5-5")),
                LV_REPORT(LV_ROW("a", "8388608", "1", "/dev/sda:0-0")),
                LV_REPORT(LV_ROW("a", "8388608", "0", "/dev/sda:0-1") "," LV_ROW("a", "8388608", "0",
                                                                                 "/dev/sda:5-5")),
                /* rows of one LV disagreeing on its size */
                LV_REPORT(LV_ROW("a", "8388608", "0", "/dev/sda:0-0") "," LV_ROW("a", "4194304", "1",
                                                                                 "/dev/sda:1-1")),
                /* bad ranges */
                LV_REPORT(LV_ROW("a", "1", "0", "/dev/sda:5-4")),
                LV_REPORT(LV_ROW("a", "1", "0", "/dev/sda:5")),
                LV_REPORT(LV_ROW("a", "1", "0", "/dev/sda:-1-4")),
                LV_REPORT(LV_ROW("a", "1", "0", "/dev/sda:0-4294967296")),
                LV_REPORT(LV_ROW("a", "1", "0", "sda:0-4")),
                LV_REPORT(LV_ROW("a", "1", "0", "/dev/sd a:0-4")),
                LV_REPORT(LV_ROW("a", "1", "0", ":0-4")),
                /* numbers: negative, huge, fractional, not numbers */
                LV_REPORT(LV_ROW("a", "-1", "0", "/dev/sda:0-0")),
                LV_REPORT(LV_ROW("a", "9223372036854775808", "0", "/dev/sda:0-0")),
                LV_REPORT(LV_ROW("a", "99999999999999999999999", "0", "/dev/sda:0-0")),
                LV_REPORT(LV_ROW("a", "1.5", "0", "/dev/sda:0-0")),
                LV_REPORT(LV_ROW("a", "", "0", "/dev/sda:0-0")),
                LV_REPORT(LV_ROW("a", "12k", "0", "/dev/sda:0-0")),
                "{\"report\":[{\"lv\":[{\"lv_name\":\"a\",\"vg_name\":\"v\",\"lv_size\":-4,\"lv_attr\":\"\","
                "\"lv_active\":\"\",\"lv_device_open\":\"\",\"seg_start_pe\":0,\"seg_pe_ranges\":\"/dev/"
                "a:0-0\"}]}]}",
                "{\"report\":[{\"lv\":[{\"lv_name\":\"a\",\"vg_name\":\"v\",\"lv_size\":1.5,\"lv_attr\":"
                "\"\","
                "\"lv_active\":\"\",\"lv_device_open\":\"\",\"seg_start_pe\":0,\"seg_pe_ranges\":\"/dev/"
                "a:0-0\"}]}]}",
                "{\"report\":[{\"lv\":[{\"lv_name\":\"a\",\"vg_name\":\"v\",\"lv_size\":true,\"lv_attr\":"
                "\"\","
                "\"lv_active\":\"\",\"lv_device_open\":\"\",\"seg_start_pe\":0,\"seg_pe_ranges\":\"/dev/"
                "a:0-0\"}]}]}",
                /* names */
                LV_REPORT(LV_ROW("-a", "1", "0", "/dev/sda:0-0")),
                LV_REPORT(LV_ROW("a_rimage_0", "1", "0", "/dev/sda:0-0")),
                LV_REPORT(LV_ROW("[a_mlog]", "1", "0", "/dev/sda:0-0")),
                /* missing fields, wrong types, wrong shapes */
                "{\"report\":[{\"lv\":[{\"lv_name\":\"a\"}]}]}",
                "{\"report\":[{\"lv\":[{\"lv_name\":7,\"vg_name\":\"v\",\"lv_size\":\"1\",\"lv_attr\":\"\","
                "\"lv_active\":\"\",\"lv_device_open\":\"\",\"seg_start_pe\":\"0\",\"seg_pe_ranges\":\"/dev/"
                "a:0-0\"}]}]}",
                "{\"report\":[{\"lv\":[\"row\"]}]}",
                "{\"report\":[{\"lv\":{}}]}",
                "{\"report\":[{\"vg\":[]}]}",
                "{\"report\":[7]}",
                "{\"report\":{}}",
                "{}",
                "[]",
                "",
                "{\"report\":[{\"lv\":[]}]",
                "null",
        };

        (void) state;
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                LvmLv *l = (LvmLv *) 1;
                size_t n = 7;

                if (lvm_report_parse_lvs(bad[i], &l, &n) != -EBADMSG)
                        fail_msg("accepted or wrong error: %s", bad[i]);
                /* ret_ written only on success */
                assert_ptr_equal(l, (LvmLv *) 1);
                assert_int_equal(n, 7);
        }
}

static void bad_vgs_and_pvs(void **state) {
        static const char *const bad_vgs[] = {
                "{\"report\":[{\"vg\":[{\"vg_name\":\"v\",\"vg_size\":\"1\",\"vg_free\":\"2\",\"vg_extent_"
                "size\":\"1\","
                "\"pv_count\":\"1\",\"lv_count\":\"0\"}]}]}", /* free > size */
                "{\"report\":[{\"vg\":[{\"vg_name\":\"v\",\"vg_size\":\"1\",\"vg_free\":\"0\",\"vg_extent_"
                "size\":\"0\","
                "\"pv_count\":\"1\",\"lv_count\":\"0\"}]}]}", /* extent size 0 */
                "{\"report\":[{\"vg\":[{\"vg_name\":\"v\",\"vg_size\":\"1\",\"vg_free\":\"0\",\"vg_extent_"
                "size\":\"1\","
                "\"pv_count\":\"4294967296\",\"lv_count\":\"0\"}]}]}",
                "{\"report\":[{\"vg\":[{\"vg_name\":\"v "
                "v\",\"vg_size\":\"1\",\"vg_free\":\"0\",\"vg_extent_size\":\"1\","
                "\"pv_count\":\"1\",\"lv_count\":\"0\"}]}]}",
                "{\"report\":[{\"vg\":[{\"vg_name\":\"v\",\"vg_size\":\"1\"}]}]}",
        };
        static const char *const bad_pvs[] = {
                "{\"report\":[{\"pv\":[{\"pv_name\":\"loop0\",\"vg_name\":\"\",\"pv_size\":\"1\",\"pv_"
                "free\":\"1\","
                "\"pe_start\":\"0\",\"pv_missing\":\"\"}]}]}",
                "{\"report\":[{\"pv\":[{\"pv_name\":\"/dev/"
                "loop0\",\"vg_name\":\"\",\"pv_size\":\"1\",\"pv_free\":\"2\","
                "\"pe_start\":\"0\",\"pv_missing\":\"\"}]}]}",
                "{\"report\":[{\"pv\":[{\"pv_name\":\"/dev/"
                "loop0\",\"vg_name\":\"\",\"pv_size\":\"1\",\"pv_free\":\"1\","
                "\"pe_start\":\"0\"}]}]}",
                "{\"report\":[{\"pv\":[{\"pv_name\":\"/dev/loop0\",\"vg_name\":\"a/"
                "b\",\"pv_size\":\"1\",\"pv_free\":\"1\","
                "\"pe_start\":\"0\",\"pv_missing\":\"\"}]}]}",
        };

        (void) state;
        for (size_t i = 0; i < sizeof(bad_vgs) / sizeof(bad_vgs[0]); i++) {
                LvmVg *v = NULL;
                size_t n = 0;

                if (lvm_report_parse_vgs(bad_vgs[i], &v, &n) != -EBADMSG)
                        fail_msg("accepted or wrong error: %s", bad_vgs[i]);
        }
        for (size_t i = 0; i < sizeof(bad_pvs) / sizeof(bad_pvs[0]); i++) {
                LvmPv *p = NULL;
                size_t n = 0;

                if (lvm_report_parse_pvs(bad_pvs[i], &p, &n) != -EBADMSG)
                        fail_msg("accepted or wrong error: %s", bad_pvs[i]);
        }
        /* A vgs report is not a pvs report. */
        {
                LvmPv *p = NULL;
                size_t n = 0;
                assert_int_equal(lvm_report_parse_pvs(vgs_real, &p, &n), -EBADMSG);
        }
        {
                LvmVg *v = NULL;
                size_t n = 0;
                assert_int_equal(lvm_report_parse_vgs(NULL, &v, &n), -EINVAL);
        }
}

static void names(void **state) {
        static const char *const good[] = {
                "LocalStorage_PoolHDD",
                "pvc-0a1b2c3d-4e5f",
                "a",
                "a.b+c_d-e",
                "_x",
                "x-",
                "snap",
                "pvmov",
                "lv_rimag",
                "A123",
                "..a",
                "a..",
        };
        static const char *const bad[] = {
                "",           "-a",        ".",
                "..",         "a b",       "a/b",
                "a\"b",       "a'b",       "a\\b",
                "a\nb",       "é",         "snapshot",
                "snapshot1",  "pvmove0",   "x_cmeta",
                "x_cdata",    "x_cpool",   "x_corig",
                "x_mimage_0", "x_mlog",    "lvol0_pmspare",
                "x_rimage_1", "x_rmeta_1", "pool_tdata",
                "pool_tmeta", "x_vdata",   "x_vorigin",
                "x_imeta",    "x_iorig",   "x_wcorig",
                "x_cvol",     "a,b",       "a:b",
                "a*",         "a@b",
        };
        char longest[129];

        (void) state;
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
                if (!lvm_name_is_valid(good[i]))
                        fail_msg("refused: %s", good[i]);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                if (lvm_name_is_valid(bad[i]))
                        fail_msg("accepted: %s", bad[i]);
        assert_false(lvm_name_is_valid(NULL));
        memset(longest, 'a', sizeof(longest));
        longest[127] = '\0';
        assert_true(lvm_name_is_valid(longest));
        longest[127] = 'a';
        longest[128] = '\0';
        assert_false(lvm_name_is_valid(longest));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(vgs_as_lvm_prints_them),
                cmocka_unit_test(pvs_as_lvm_prints_them),
                cmocka_unit_test(lvs_merged_across_two_pvs),
                cmocka_unit_test(lvs_segments_out_of_order_and_odd_paths),
                cmocka_unit_test(empty_reports),
                cmocka_unit_test(bad_lvs),
                cmocka_unit_test(bad_vgs_and_pvs),
                cmocka_unit_test(names),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
