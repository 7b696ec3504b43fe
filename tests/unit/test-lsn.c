/* SPDX-License-Identifier: Apache-2.0 */
/* node/lsn.c: the LocalStorageNode status built from a storage snapshot, in the guide's shape. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "basic/json-util.h"
#include "node/lsn.h"

static StorageDisk disks[] = {
        { .dev_path = (char *) "/dev/sdc",
          .class = DISK_CLASS_HDD,
          .capacity = 100,
          .state = STORAGE_DISK_IN_USE,
          .pool = (char *) "LocalStorage_PoolHDD" },
        { .dev_path = (char *) "/dev/sdb",
          .class = DISK_CLASS_HDD,
          .capacity = 200,
          .state = STORAGE_DISK_IN_USE,
          .pool = (char *) "LocalStorage_PoolHDD" },
        { .dev_path = (char *) "/dev/sdd",
          .class = DISK_CLASS_HDD,
          .capacity = 50,
          .state = STORAGE_DISK_AVAILABLE },
        { .dev_path = (char *) "/dev/nvme0n1",
          .class = DISK_CLASS_NVME,
          .capacity = 400,
          .state = STORAGE_DISK_OFFLINE,
          .pool = (char *) "LocalStorage_PoolNVMe" },
};
static StorageVolume volumes[] = {
        { .name = (char *) "pvc-b", .pool = (char *) "LocalStorage_PoolHDD", .size = 10 },
        { .name = (char *) "pvc-a", .pool = (char *) "LocalStorage_PoolHDD", .size = 20 },
};
static StoragePool pools[] = {
        { .name = (char *) "LocalStorage_PoolHDD",
          .class = DISK_CLASS_HDD,
          .total = 300,
          .used = 30,
          .free = 270,
          .volume_count = 2 },
        { .name = (char *) "LocalStorage_PoolNVMe",
          .class = DISK_CLASS_NVME,
          .total = 400,
          .free = 0,
          .offline = true,
          .message = (char *) "disk missing: /dev/nvme0n1" },
};
static const StorageSnapshot snap = {
        .pools = pools,
        .n_pools = 2,
        .disks = disks,
        .n_disks = 4,
        .volumes = volumes,
        .n_volumes = 2,
};

static void pools_have_the_guides_fields_sorted(void **state) {
        _cleanup_json_ cJSON *st = NULL;
        const cJSON *hdd, *d;
        char *text;

        (void) state;
        assert_int_equal(lsn_status_build(&snap, NULL, &st), 0);
        hdd = cJSON_GetObjectItem(cJSON_GetObjectItem(st, "pools"), "LocalStorage_PoolHDD");
        assert_non_null(hdd);
        assert_string_equal(json_get_string(hdd, "class"), "HDD");
        assert_string_equal(json_get_string(hdd, "type"), "REGULAR");
        assert_int_equal(cJSON_GetObjectItem(hdd, "totalCapacityBytes")->valuedouble, 300);
        assert_int_equal(cJSON_GetObjectItem(hdd, "usedCapacityBytes")->valuedouble, 30);
        assert_int_equal(cJSON_GetObjectItem(hdd, "freeCapacityBytes")->valuedouble, 270);
        assert_int_equal(cJSON_GetObjectItem(hdd, "volumeCapacityBytesLimit")->valuedouble, 300);
        assert_int_equal(cJSON_GetObjectItem(hdd, "totalVolumeCount")->valuedouble, 1000);
        assert_int_equal(cJSON_GetObjectItem(hdd, "usedVolumeCount")->valuedouble, 2);
        assert_int_equal(cJSON_GetObjectItem(hdd, "freeVolumeCount")->valuedouble, 998);
        /* Disks by path, the free HDD disk listed as Available with its class's pool. */
        d = cJSON_GetObjectItem(hdd, "disks");
        assert_int_equal(cJSON_GetArraySize(d), 3);
        assert_string_equal(json_get_string(cJSON_GetArrayItem(d, 0), "devPath"), "/dev/sdb");
        assert_string_equal(json_get_string(cJSON_GetArrayItem(d, 2), "devPath"), "/dev/sdd");
        assert_string_equal(json_get_string(cJSON_GetArrayItem(d, 2), "state"), "Available");
        assert_string_equal(json_get_string(cJSON_GetArrayItem(d, 0), "type"), "HDD");
        text = cJSON_PrintUnformatted(cJSON_GetObjectItem(hdd, "volumes"));
        assert_string_equal(text, "[\"pvc-a\",\"pvc-b\"]");
        free(text);
        assert_string_equal(json_get_string(st, "state"), "Ready");
}

static void offline_pool_makes_the_node_unavailable_with_the_reason(void **state) {
        _cleanup_json_ cJSON *st = NULL;
        const cJSON *c, *nvme;

        (void) state;
        assert_int_equal(lsn_status_build(&snap, NULL, &st), 0);
        nvme = cJSON_GetObjectItem(cJSON_GetObjectItem(st, "pools"), "LocalStorage_PoolNVMe");
        assert_string_equal(
                json_get_string(cJSON_GetArrayItem(cJSON_GetObjectItem(nvme, "disks"), 0), "state"),
                "Offline");
        c = cJSON_GetArrayItem(cJSON_GetObjectItem(st, "conditions"), 0);
        assert_string_equal(json_get_string(c, "type"), "UnAvailable");
        assert_string_equal(json_get_string(c, "reason"), "PoolOffline");
        assert_non_null(
                strstr(json_get_string(c, "message"), "LocalStorage_PoolNVMe: disk missing: /dev/nvme0n1"));
}

static void same_storage_gives_the_same_status_so_nothing_is_rewritten(void **state) {
        _cleanup_json_ cJSON *a = NULL, *b = NULL;
        cJSON *conds;

        (void) state;
        assert_int_equal(lsn_status_build(&snap, NULL, &a), 0);
        /* The transition time of an unchanged condition is kept from the current object. */
        conds = cJSON_Duplicate(cJSON_GetObjectItem(a, "conditions"), true);
        cJSON_ReplaceItemInObject(cJSON_GetArrayItem(conds, 0), "lastTransitionTime",
                                  cJSON_CreateString("2020-01-01T00:00:00Z"));
        assert_int_equal(lsn_status_build(&snap, conds, &b), 0);
        assert_string_equal(json_get_string(cJSON_GetArrayItem(cJSON_GetObjectItem(b, "conditions"), 0),
                                            "lastTransitionTime"),
                            "2020-01-01T00:00:00Z");
        cJSON_ReplaceItemInObject(a, "conditions", conds);
        assert_true(cJSON_Compare(a, b, true));
}

static void no_pool_is_unavailable(void **state) {
        const StorageSnapshot empty = {};
        _cleanup_json_ cJSON *st = NULL;

        (void) state;
        assert_int_equal(lsn_status_build(&empty, NULL, &st), 0);
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(st, "pools")), 0);
        assert_string_equal(
                json_get_string(cJSON_GetArrayItem(cJSON_GetObjectItem(st, "conditions"), 0), "reason"),
                "NoPool");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(pools_have_the_guides_fields_sorted),
                cmocka_unit_test(offline_pool_makes_the_node_unavailable_with_the_reason),
                cmocka_unit_test(same_storage_gives_the_same_status_so_nothing_is_rewritten),
                cmocka_unit_test(no_pool_is_unavailable),
        };
        return cmocka_run_group_tests_name("lsn", tests, NULL, NULL);
}
