/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* cJSON ownership and typed getters that tolerate missing or mistyped members. */

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(cJSON *, cJSON_Delete);
#define _cleanup_json_ _cleanup_(cJSON_Deletep)

/* The member's string, or NULL when absent or not a string. */
static inline const char *json_get_string(const cJSON *o, const char *key) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
        return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* o[a], or o[a][b] when b is given; NULL where anything is missing. */
static inline const cJSON *json_field(const cJSON *o, const char *a, const char *b) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
        return b ? cJSON_GetObjectItemCaseSensitive(x, b) : x;
}

/* A Kubernetes object's metadata.<key> string ("name", "uid", "resourceVersion", …). */
static inline const char *json_meta_string(const cJSON *o, const char *key) {
        return json_get_string(cJSON_GetObjectItemCaseSensitive(o, "metadata"), key);
}

static inline const char *json_name(const cJSON *o) {
        return json_meta_string(o, "name");
}

/* The member as a non-negative integer; -ENOENT when absent, -EINVAL when not a whole number
 * in range. */
static inline int json_get_u64(const cJSON *o, const char *key, uint64_t *ret) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

        if (!v)
                return -ENOENT;
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740992.0 ||
            v->valuedouble != (double) (uint64_t) v->valuedouble)
                return -EINVAL;
        *ret = (uint64_t) v->valuedouble;
        return 0;
}

static inline int json_get_bool(const cJSON *o, const char *key, bool *ret) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

        if (!v)
                return -ENOENT;
        if (!cJSON_IsBool(v))
                return -EINVAL;
        *ret = cJSON_IsTrue(v);
        return 0;
}
