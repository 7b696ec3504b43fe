/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The watch-stream framer on arbitrary bytes, cut into chunks whose sizes come from the input.
 *
 * Input: a 4-byte header, then the response body.
 *   h[0]  chunk sizes: a generator seeded from the header yields 1 … 2^(h[0] % 13) bytes per chunk
 *   h[1]  bit i set: the handler takes ownership of event i (mod 8)
 *   h[2]  the handler fails on event h[2] when h[2] < 64
 *   h[3]  max_event_size = 2^(6 + h[3] % 19): 64 bytes … 16 MiB
 * Oracle: the same body fed in one piece must give the same events (types and objects), the same result
 * and the same number of pending bytes. Events also drive a KubeCache, so its validation is fuzzed too.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "informer/cache.h"
#include "informer/watch-stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Trace {
        uint64_t digest; /* FNV-1a over type and printed object of each event */
        unsigned n;
        uint8_t take_mask;
        int fail_at;
        KubeCache *cache;
} Trace;

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
        const uint8_t *b = p;

        for (size_t i = 0; i < n; i++) {
                h ^= b[i];
                h *= UINT64_C(0x100000001b3);
        }
        return h;
}

static int on_event(WatchEventType type, cJSON **object, void *userdata) {
        Trace *t = userdata;
        char *printed;
        int r;

        if (!object || !cJSON_IsObject(*object) || type < 0 || type >= _WATCH_EVENT_TYPE_MAX)
                abort();
        if (t->fail_at >= 0 && t->n == (unsigned) t->fail_at)
                return -ECANCELED;

        printed = cJSON_PrintUnformatted(*object);
        if (printed) {
                t->digest = fnv1a(t->digest, &type, sizeof(type));
                t->digest = fnv1a(t->digest, printed, strlen(printed));
                free(printed);
        }

        if (type == WATCH_EVENT_ERROR) {
                int code;
                const char *reason, *message;

                if (watch_status_parse(*object, &code, &reason, &message) >= 0 && (code < 0 || code > 999))
                        abort();
                (void) watch_status_is_expired(*object);
        }

        if (t->cache) {
                const cJSON *md = cJSON_GetObjectItemCaseSensitive(*object, "metadata");
                const char *ns = json_get_string(md, "namespace"), *name = json_get_string(md, "name");

                if (type == WATCH_EVENT_DELETED)
                        (void) kube_cache_remove(t->cache, ns, name, NULL);
                else if (type == WATCH_EVENT_ADDED || type == WATCH_EVENT_MODIFIED) {
                        _cleanup_json_ cJSON *copy = cJSON_Duplicate(*object, true), *old = NULL;

                        r = kube_cache_upsert(t->cache, &copy, &old);
                        if (r >= 0 && name) {
                                _cleanup_json_ cJSON *got = NULL;

                                if (kube_cache_get(t->cache, ns, name, &got) == 0)
                                        abort(); /* just stored, must be there */
                        }
                }
        }

        if (t->take_mask & (1u << (t->n % 8)))
                cJSON_Delete(TAKE_PTR(*object));
        t->n++;
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_watch_stream_free_ WatchStream *chunked = NULL, *whole = NULL;
        _cleanup_kube_cache_free_ KubeCache *cache = NULL;
        Trace a = { .digest = UINT64_C(0xcbf29ce484222325) }, b;
        const uint8_t *body;
        size_t body_len, max_event_size;
        uint32_t rng;
        unsigned max_shift;
        int ra = 0, rb;

        if (size < 4)
                return 0;

        max_shift = data[0] % 13;
        a.take_mask = data[1];
        a.fail_at = data[2] < 64 ? data[2] : -1;
        max_event_size = (size_t) 1 << (6 + data[3] % 19);
        rng = (uint32_t) data[0] << 24 | (uint32_t) data[1] << 16 | (uint32_t) data[2] << 8 | data[3];
        rng |= 1;
        body = data + 4;
        body_len = size - 4;

        if (kube_cache_new(&cache) < 0)
                return 0;
        b = a;
        a.cache = cache;

        if (watch_stream_new(max_event_size, on_event, &a, &chunked) < 0 ||
            watch_stream_new(max_event_size, on_event, &b, &whole) < 0)
                return 0;

        for (size_t off = 0; off < body_len;) {
                size_t chunk;
                int r;

                rng ^= rng << 13; /* xorshift32 */
                rng ^= rng >> 17;
                rng ^= rng << 5;
                chunk = 1 + (rng & (((size_t) 1 << max_shift) - 1));
                chunk = chunk < body_len - off ? chunk : body_len - off;

                r = watch_stream_feed(chunked, body + off, chunk);
                off += chunk;
                if (r < 0) {
                        ra = r;
                        break;
                }
        }

        rb = watch_stream_feed(whole, body, body_len);
        if (rb >= 0)
                rb = 0;

        if (ra != rb || a.n != b.n || a.digest != b.digest)
                abort();
        if (ra == 0 && watch_stream_pending(chunked) != watch_stream_pending(whole))
                abort();
        if (watch_stream_pending(chunked) > max_event_size)
                abort();

        /* after an error: sticky until reset, then usable again */
        if (ra < 0) {
                if (watch_stream_feed(chunked, "\n", 1) != ra)
                        abort();
                watch_stream_reset(chunked);
                if (watch_stream_pending(chunked) != 0)
                        abort();
                a.fail_at = -1;
                if (watch_stream_feed(chunked, "{\"type\":\"BOOKMARK\",\"object\":{}}\n", 33) != 1)
                        abort();
        }

        /* a relist that sees nothing removes everything */
        kube_cache_replace_begin(cache);
        (void) kube_cache_replace_end(cache, NULL, NULL);
        if (kube_cache_size(cache) != 0)
                abort();
        return 0;
}
