/* SPDX-License-Identifier: Apache-2.0 */
/* informer/cache: keys, resourceVersion semantics, stripping, relist, memory per object. */

#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "basic/macro.h"
#include "basic/string-util.h"
#include "informer/cache.h"

/* A LocalVolume as a real API server returns it: cluster-scoped, with managedFields from two writers and
 * the last-applied annotation of a "kubectl apply". */
#define LV_TEMPLATE                                                                                         \
        "{\"apiVersion\":\"hwameistor.io/v1alpha1\",\"kind\":\"LocalVolume\",\"metadata\":{"                \
        "\"annotations\":{\"hwameistor.io/volume-migrate-state\":\"migrateCompleted\","                     \
        "\"kubectl.kubernetes.io/last-applied-configuration\":\"{\\\"apiVersion\\\":\\\"hwameistor.io/"     \
        "v1alpha1\\\",\\\"kind\\\":\\\"LocalVolume\\\",\\\"metadata\\\":{\\\"annotations\\\":{},"           \
        "\\\"name\\\":"                                                                                     \
        "\\\"%s\\\"},\\\"spec\\\":{\\\"poolName\\\":\\\"LocalStorage_PoolHDD\\\",\\\"replicaNumber\\\":2,"  \
        "\\\"requiredCapacityBytes\\\":1073741824}}\\n\"},"                                                 \
        "\"creationTimestamp\":\"2024-03-01T10:00:00Z\",\"finalizers\":[\"hwameistor.io/finalizer\"],"      \
        "\"generation\":3,\"labels\":{\"hwameistor.io/pvc-namespace\":\"default\"},"                        \
        "\"managedFields\":["                                                                               \
        "{\"apiVersion\":\"hwameistor.io/"                                                                  \
        "v1alpha1\",\"fieldsType\":\"FieldsV1\",\"fieldsV1\":{\"f:metadata\":{"                             \
        "\"f:finalizers\":{\".\":{},\"v:\\\"hwameistor.io/finalizer\\\"\":{}}},\"f:spec\":{\".\":{},"       \
        "\"f:accessibility\":{\".\":{},\"f:nodes\":{}},\"f:config\":{\".\":{},\"f:convertible\":{},"        \
        "\"f:readyToInitialize\":{},\"f:replicas\":{},\"f:requiredCapacityBytes\":{},\"f:resourceID\":{},"  \
        "\"f:version\":{},\"f:volumeName\":{}},\"f:poolName\":{},\"f:pvcName\":{},\"f:pvcNamespace\":{},"   \
        "\"f:replicaNumber\":{},\"f:requiredCapacityBytes\":{},\"f:volumegroup\":{}}},"                     \
        "\"manager\":\"hwameistor-scheduler\",\"operation\":\"Update\",\"time\":\"2024-03-01T10:00:00Z\"}," \
        "{\"apiVersion\":\"hwameistor.io/"                                                                  \
        "v1alpha1\",\"fieldsType\":\"FieldsV1\",\"fieldsV1\":{\"f:status\":{"                               \
        "\".\":{},\"f:allocatedCapacityBytes\":{},\"f:publishedNode\":{},\"f:replicas\":{},\"f:state\":{}}" \
        "},"                                                                                                \
        "\"manager\":\"hwameid\",\"operation\":\"Update\",\"subresource\":\"status\","                      \
        "\"time\":\"2024-03-01T10:00:07Z\"}],"                                                              \
        "\"name\":\"%s\",\"resourceVersion\":\"%s\",\"uid\":\"0f6a4f3e-2b1c-4d5e-8f90-%012x\"},"            \
        "\"spec\":{\"accessibility\":{\"nodes\":[\"k8s-worker-1\",\"k8s-worker-2\"],\"regions\":["          \
        "\"default\"],"                                                                                     \
        "\"zones\":[\"default\"]},\"config\":{\"convertible\":false,\"readyToInitialize\":true,"            \
        "\"replicas\":[{\"hostname\":\"k8s-worker-1\",\"id\":1,\"ip\":\"10.6.113.101\",\"primary\":true},"  \
        "{\"hostname\":\"k8s-worker-2\",\"id\":2,\"ip\":\"10.6.113.102\",\"primary\":false}],"              \
        "\"requiredCapacityBytes\":1073741824,\"resourceID\":%u,\"version\":1,\"volumeName\":\"%s\"},"      \
        "\"convertible\":false,\"delete\":false,\"poolName\":\"LocalStorage_PoolHDD\",\"pvcName\":\"data-"  \
        "mysql-%u\","                                                                                       \
        "\"pvcNamespace\":\"default\",\"replicaNumber\":2,\"requiredCapacityBytes\":1073741824,"            \
        "\"volumegroup\":\"lvg-%s\"},"                                                                      \
        "\"status\":{\"allocatedCapacityBytes\":1073741824,\"publishedNode\":\"k8s-worker-1\","             \
        "\"replicas\":[\"%s-a1b2c3\",\"%s-d4e5f6\"],\"state\":\"Ready\"}}"

static char *lv_text(unsigned i, const char *rv) {
        char name[64], *t;

        snprintf(name, sizeof(name), "pvc-%08x-2b1c-4d5e-8f90-%012x", i * 2654435761u, i);
        assert_true(asprintf(&t, LV_TEMPLATE, name, name, rv, i, i, name, i, name, name, name) > 0);
        return t;
}

static cJSON *lv(unsigned i, const char *rv) {
        _cleanup_free_ char *t = lv_text(i, rv);
        cJSON *o = cJSON_Parse(t);

        assert_non_null(o);
        return o;
}

static cJSON *obj(const char *json) {
        cJSON *o = cJSON_Parse(json);

        assert_non_null(o);
        return o;
}

#define SIMPLE(ns, name, rv)                                                                                \
        obj("{\"metadata\":{\"namespace\":\"" ns "\",\"name\":\"" name "\",\"resourceVersion\":\"" rv       \
            "\"},"                                                                                          \
            "\"data\":\"" rv "\"}")
#define CLUSTER(name, rv)                                                                                   \
        obj("{\"metadata\":{\"name\":\"" name "\",\"resourceVersion\":\"" rv "\"},\"data\":\"" rv "\"}")

static const char *rv_of(const cJSON *o) {
        return json_get_string(cJSON_GetObjectItemCaseSensitive(o, "metadata"), "resourceVersion");
}

static void add_update_unchanged_by_rv(void **state) {
        _cleanup_kube_cache_free_ KubeCache *c = NULL;
        _cleanup_json_ cJSON *o = NULL, *old = NULL, *got = NULL;

        (void) state;
        assert_int_equal(kube_cache_new(&c), 0);

        o = CLUSTER("vol-a", "10");
        assert_int_equal(kube_cache_upsert(c, &o, &old), KUBE_CACHE_ADDED);
        assert_null(o); /* taken */
        assert_null(old);
        assert_int_equal(kube_cache_size(c), 1);

        /* the same RV: unchanged, the stored copy is kept even if the content differs */
        o = obj("{\"metadata\":{\"name\":\"vol-a\",\"resourceVersion\":\"10\"},\"data\":\"other\"}");
        assert_int_equal(kube_cache_upsert(c, &o, &old), KUBE_CACHE_UNCHANGED);
        assert_null(o);
        assert_null(old);
        assert_int_equal(kube_cache_get(c, NULL, "vol-a", &got), 1);
        assert_string_equal(json_get_string(got, "data"), "10");
        cJSON_Delete(TAKE_PTR(got));

        /* RVs are compared for equality only: "9" after "10" is an update, not an old event */
        o = CLUSTER("vol-a", "9");
        assert_int_equal(kube_cache_upsert(c, &o, &old), KUBE_CACHE_UPDATED);
        assert_non_null(old);
        assert_string_equal(rv_of(old), "10");
        assert_string_equal(kube_cache_get_rv(c, NULL, "vol-a"), "9");
        cJSON_Delete(TAKE_PTR(old));

        /* ret_old is optional */
        o = CLUSTER("vol-a", "11");
        assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_UPDATED);
        assert_int_equal(kube_cache_size(c), 1);

        /* get hands out an independent copy */
        assert_int_equal(kube_cache_get(c, "", "vol-a", &got), 1);
        assert_string_equal(rv_of(got), "11");
        cJSON_DeleteItemFromObjectCaseSensitive(got, "data");
        assert_string_equal(
                kube_cache_get_json(c, NULL, "vol-a"),
                "{\"metadata\":{\"name\":\"vol-a\",\"resourceVersion\":\"11\"},\"data\":\"11\"}");
}

static void namespaced_and_cluster_scoped_keys(void **state) {
        _cleanup_kube_cache_free_ KubeCache *c = NULL;
        _cleanup_json_ cJSON *o = NULL;

        (void) state;
        assert_int_equal(kube_cache_new(&c), 0);

        o = SIMPLE("default", "x", "1");
        assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_ADDED);
        o = SIMPLE("kube-system", "x", "2");
        assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_ADDED);
        o = CLUSTER("x", "3");
        assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_ADDED);
        /* an empty namespace is cluster-scoped: the same key as above */
        o = SIMPLE("", "x", "4");
        assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_UPDATED);
        /* "default/x" as a name cannot collide with namespace default, name x */
        o = CLUSTER("default/x", "5");
        assert_int_equal(kube_cache_upsert(c, &o, NULL), -EINVAL);
        assert_non_null(o);
        cJSON_Delete(TAKE_PTR(o));

        assert_int_equal(kube_cache_size(c), 3);
        assert_string_equal(kube_cache_get_rv(c, "default", "x"), "1");
        assert_string_equal(kube_cache_get_rv(c, "kube-system", "x"), "2");
        assert_string_equal(kube_cache_get_rv(c, NULL, "x"), "4");
        assert_string_equal(kube_cache_get_rv(c, "", "x"), "4");
        assert_null(kube_cache_get_rv(c, "other", "x"));
        assert_null(kube_cache_get_rv(c, "default", "y"));
        assert_null(kube_cache_get_rv(c, "default", NULL));
        assert_null(kube_cache_get_json(c, NULL, "default"));

        /* keys longer than the stack buffer work the same */
        char name[700], ns[600];
        memset(name, 'n', sizeof(name) - 1);
        name[sizeof(name) - 1] = '\0';
        memset(ns, 's', sizeof(ns) - 1);
        ns[sizeof(ns) - 1] = '\0';
        o = cJSON_CreateObject();
        cJSON *md = cJSON_AddObjectToObject(o, "metadata");
        assert_non_null(cJSON_AddStringToObject(md, "name", name));
        assert_non_null(cJSON_AddStringToObject(md, "namespace", ns));
        assert_non_null(cJSON_AddStringToObject(md, "resourceVersion", "7"));
        assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_ADDED);
        assert_string_equal(kube_cache_get_rv(c, ns, name), "7");
        assert_int_equal(kube_cache_remove(c, ns, name, NULL), 1);
}

static void remove_returns_the_object(void **state) {
        _cleanup_kube_cache_free_ KubeCache *c = NULL;
        _cleanup_json_ cJSON *o = NULL, *removed = NULL;

        (void) state;
        assert_int_equal(kube_cache_new(&c), 0);
        o = SIMPLE("default", "a", "1");
        assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_ADDED);
        o = SIMPLE("default", "b", "2");
        assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_ADDED);

        assert_int_equal(kube_cache_remove(c, "default", "a", &removed), 1);
        assert_non_null(removed);
        assert_string_equal(rv_of(removed), "1");
        assert_int_equal(kube_cache_remove(c, "default", "a", &removed), 0);
        assert_int_equal(kube_cache_remove(c, NULL, "b", NULL), 0); /* wrong scope */
        assert_int_equal(kube_cache_remove(c, "default", NULL, NULL), -EINVAL);
        assert_int_equal(kube_cache_remove(c, "default", "b", NULL), 1);
        assert_int_equal(kube_cache_size(c), 0);
        assert_int_equal(kube_cache_get(c, "default", "b", &o), 0);
        assert_null(o);
}

static void strips_managed_fields_and_last_applied(void **state) {
        _cleanup_kube_cache_free_ KubeCache *c = NULL;
        _cleanup_json_ cJSON *o = lv(1, "100"), *got = NULL;
        const cJSON *md, *ann;
        const char *json;

        (void) state;
        assert_int_equal(kube_cache_new(&c), 0);
        assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_ADDED);

        json = kube_cache_get_json(c, NULL, "pvc-9e3779b1-2b1c-4d5e-8f90-000000000001");
        assert_non_null(json);
        assert_null(strstr(json, "managedFields"));
        assert_null(strstr(json, "last-applied-configuration"));
        assert_null(strstr(json, "\n")); /* compact text */

        assert_int_equal(kube_cache_get(c, NULL, "pvc-9e3779b1-2b1c-4d5e-8f90-000000000001", &got), 1);
        md = cJSON_GetObjectItemCaseSensitive(got, "metadata");
        assert_null(cJSON_GetObjectItemCaseSensitive(md, "managedFields"));
        ann = cJSON_GetObjectItemCaseSensitive(md, "annotations");
        assert_true(cJSON_IsObject(ann));
        assert_string_equal(json_get_string(ann, "hwameistor.io/volume-migrate-state"), "migrateCompleted");
        assert_null(
                cJSON_GetObjectItemCaseSensitive(ann, "kubectl.kubernetes.io/last-applied-configuration"));
        /* what is read survives, numbers included */
        assert_string_equal(json_get_string(md, "uid"), "0f6a4f3e-2b1c-4d5e-8f90-000000000001");
        const cJSON *spec = cJSON_GetObjectItemCaseSensitive(got, "spec");
        uint64_t bytes;
        assert_int_equal(json_get_u64(spec, "requiredCapacityBytes", &bytes), 0);
        assert_true(bytes == 1073741824);
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(
                                 cJSON_GetObjectItemCaseSensitive(spec, "config"), "replicas")),
                         2);
}

static void invalid_objects_are_rejected(void **state) {
        static const char *const bad[] = {
                "[]",
                "{}",
                "{\"metadata\":[]}",
                "{\"metadata\":{\"resourceVersion\":\"1\"}}",
                "{\"metadata\":{\"name\":\"\",\"resourceVersion\":\"1\"}}",
                "{\"metadata\":{\"name\":7,\"resourceVersion\":\"1\"}}",
                "{\"metadata\":{\"name\":\"a\"}}",
                "{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"\"}}",
                "{\"metadata\":{\"name\":\"a\",\"resourceVersion\":12}}",
                "{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"1\",\"namespace\":null}}",
                "{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"1\",\"namespace\":\"x/y\"}}",
                "{\"metadata\":{\"name\":\"a/b\",\"resourceVersion\":\"1\"}}",
        };
        _cleanup_kube_cache_free_ KubeCache *c = NULL;

        (void) state;
        assert_int_equal(kube_cache_new(&c), 0);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_json_ cJSON *o = obj(bad[i]), *old = NULL;
                char *before = cJSON_PrintUnformatted(o), *after;

                assert_int_equal(kube_cache_upsert(c, &o, &old), -EINVAL);
                assert_non_null(o); /* still the caller's, untouched */
                assert_null(old);
                after = cJSON_PrintUnformatted(o);
                assert_string_equal(before, after);
                free(before);
                free(after);
        }
        assert_int_equal(kube_cache_size(c), 0);
}

typedef struct Deleted {
        char names[16][16];
        unsigned n;
        bool take;
        cJSON *kept[16];
        int fail_at;
} Deleted;

static int on_deleted(cJSON **object, void *userdata) {
        Deleted *d = userdata;
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(*object, "metadata");

        if (d->fail_at >= 0 && d->n == (unsigned) d->fail_at)
                return -ECANCELED;
        assert_true(d->n < ELEMENTSOF(d->names));
        snprintf(d->names[d->n], sizeof(d->names[d->n]), "%s", json_get_string(md, "name"));
        if (d->take)
                d->kept[d->n] = TAKE_PTR(*object);
        d->n++;
        return 0;
}

static bool deleted_has(const Deleted *d, const char *name) {
        for (unsigned i = 0; i < d->n; i++)
                if (streq(d->names[i], name))
                        return true;
        return false;
}

static void replace_delivers_only_the_missing_objects(void **state) {
        (void) state;
        for (int take = 0; take <= 1; take++) {
                _cleanup_kube_cache_free_ KubeCache *c = NULL;
                _cleanup_json_ cJSON *o = NULL;
                Deleted d = { .take = take, .fail_at = -1 };

                assert_int_equal(kube_cache_new(&c), 0);
                o = CLUSTER("a", "1");
                assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_ADDED);
                o = CLUSTER("b", "1");
                assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_ADDED);
                o = CLUSTER("c", "1");
                assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_ADDED);
                o = CLUSTER("d", "1");
                assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_ADDED);

                /* without a relist, replace_end removes nothing */
                assert_int_equal(kube_cache_replace_end(c, on_deleted, &d), 0);
                assert_int_equal(d.n, 0);

                /* the relist returns b unchanged, c changed and a new e; a and d were deleted meanwhile */
                kube_cache_replace_begin(c);
                o = CLUSTER("b", "1");
                assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_UNCHANGED);
                o = CLUSTER("c", "2");
                assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_UPDATED);
                o = CLUSTER("e", "2");
                assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_ADDED);
                assert_int_equal(kube_cache_replace_end(c, on_deleted, &d), 2);

                assert_int_equal(d.n, 2);
                assert_true(deleted_has(&d, "a"));
                assert_true(deleted_has(&d, "d"));
                assert_int_equal(kube_cache_size(c), 3);
                assert_null(kube_cache_get_rv(c, NULL, "a"));
                assert_string_equal(kube_cache_get_rv(c, NULL, "c"), "2");
                for (unsigned i = 0; i < d.n; i++)
                        cJSON_Delete(d.kept[i]);

                /* an empty relist deletes everything; on_deleted is optional */
                kube_cache_replace_begin(c);
                assert_int_equal(kube_cache_replace_end(c, NULL, NULL), 3);
                assert_int_equal(kube_cache_size(c), 0);
        }
}

static void replace_end_resumes_after_a_callback_error(void **state) {
        _cleanup_kube_cache_free_ KubeCache *c = NULL;
        Deleted d = { .fail_at = 1 };
        char name[8];

        (void) state;
        assert_int_equal(kube_cache_new(&c), 0);
        for (unsigned i = 0; i < 5; i++) {
                _cleanup_json_ cJSON *o = NULL;

                snprintf(name, sizeof(name), "o%u", i);
                o = CLUSTER("x", "1");
                cJSON_ReplaceItemInObject(cJSON_GetObjectItem(o, "metadata"), "name",
                                          cJSON_CreateString(name));
                assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_ADDED);
        }
        kube_cache_replace_begin(c);
        assert_int_equal(kube_cache_replace_end(c, on_deleted, &d), -ECANCELED);
        assert_int_equal(d.n, 1);
        assert_int_equal(kube_cache_size(c), 4); /* one delivered and removed; the refused one stays stale */
        d.fail_at = -1;
        assert_int_equal(kube_cache_replace_end(c, on_deleted, &d), 4);
        assert_int_equal(d.n, 5);
        assert_int_equal(kube_cache_size(c), 0);
}

static int count_objects(const cJSON *object, void *userdata) {
        assert_true(cJSON_IsObject(object));
        return ++*(int *) userdata >= 3 ? -ECANCELED : 0;
}

static int count_json(const char *key, const char *rv, const char *json, void *userdata) {
        assert_non_null(strstr(json, rv));
        assert_non_null(strstr(json, key));
        (*(int *) userdata)++;
        return 0;
}

static void foreach_visits_every_object(void **state) {
        _cleanup_kube_cache_free_ KubeCache *c = NULL;
        int n = 0;

        (void) state;
        assert_int_equal(kube_cache_new(&c), 0);
        for (unsigned i = 0; i < 5; i++) {
                cJSON *o = lv(i, "1");

                assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_ADDED);
        }
        assert_int_equal(kube_cache_foreach_json(c, count_json, &n), 0);
        assert_int_equal(n, 5);
        n = 0;
        assert_int_equal(kube_cache_foreach(c, count_objects, &n), -ECANCELED);
        assert_int_equal(n, 3);
}

#define N_OBJECTS 10000

static size_t heap_in_use(void) {
        struct mallinfo2 mi = mallinfo2();
        return mi.uordblks + mi.hblkhd;
}

static void ten_thousand_objects_memory(void **state) {
        _cleanup_kube_cache_free_ KubeCache *c = NULL;
        _cleanup_free_ char *sample = lv_text(1, "1000001");
        size_t before, after, tree_before, tree_after, mem;
        cJSON *tree;

        (void) state;
        /* what one parsed tree costs, for comparison */
        tree_before = heap_in_use();
        tree = cJSON_Parse(sample);
        tree_after = heap_in_use();
        assert_non_null(tree);
        cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItem(tree, "metadata"), "managedFields");
        size_t tree_stripped = heap_in_use();
        cJSON_Delete(tree);

        assert_int_equal(kube_cache_new(&c), 0);
        before = heap_in_use();
        for (unsigned i = 0; i < N_OBJECTS; i++) {
                char rv[16];
                cJSON *o;

                snprintf(rv, sizeof(rv), "%u", 1000000 + i);
                o = lv(i, rv);
                assert_int_equal(kube_cache_upsert(c, &o, NULL), KUBE_CACHE_ADDED);
        }
        after = heap_in_use();
        mem = kube_cache_memory(c);
        assert_int_equal(kube_cache_size(c), N_OBJECTS);

        printf("LocalVolume JSON as sent: %zu bytes; as stored: %zu bytes\n", strlen(sample),
               strlen(kube_cache_get_json(c, NULL, "pvc-9e3779b1-2b1c-4d5e-8f90-000000000001")));
        if (tree_after > tree_before)
                printf("one cJSON tree of it: %zu bytes (%zu without managedFields)\n",
                       tree_after - tree_before, tree_stripped - tree_before);
        printf("cache of %u objects: kube_cache_memory %zu bytes (%zu per object)\n", N_OBJECTS, mem,
               mem / N_OBJECTS);
        if (after > before)
                printf("cache of %u objects: mallinfo2 delta %zu bytes (%zu per object)\n", N_OBJECTS,
                       after - before, (after - before) / N_OBJECTS);
        else
                printf("mallinfo2 not available (sanitizer allocator)\n");

        /* generous sanity bounds; the target is under 2 KiB per object */
        assert_true(mem / N_OBJECTS < 4096);
        if (after > before)
                assert_true((after - before) / N_OBJECTS < 4096);

        for (unsigned i = 0; i < N_OBJECTS; i += 2) {
                char name[64];

                snprintf(name, sizeof(name), "pvc-%08x-2b1c-4d5e-8f90-%012x", i * 2654435761u, i);
                assert_int_equal(kube_cache_remove(c, NULL, name, NULL), 1);
        }
        assert_int_equal(kube_cache_size(c), N_OBJECTS / 2);
        assert_true(kube_cache_memory(c) < mem);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(add_update_unchanged_by_rv),
                cmocka_unit_test(namespaced_and_cluster_scoped_keys),
                cmocka_unit_test(remove_returns_the_object),
                cmocka_unit_test(strips_managed_fields_and_last_applied),
                cmocka_unit_test(invalid_objects_are_rejected),
                cmocka_unit_test(replace_delivers_only_the_missing_objects),
                cmocka_unit_test(replace_end_resumes_after_a_callback_error),
                cmocka_unit_test(foreach_visits_every_object),
                cmocka_unit_test(ten_thousand_objects_memory),
        };
        return cmocka_run_group_tests_name("cache", tests, NULL, NULL);
}
