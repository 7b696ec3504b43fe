/* SPDX-License-Identifier: Apache-2.0 */
/* informer/watch-stream: framing of watch responses into events, whatever the chunking. */

#include <errno.h>
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
#include "informer/watch-stream.h"

/* A LocalVolume as the API server sends it in a watch event (managedFields included). */
#define LV_OBJECT(rv, state)                                                                                \
        "{\"apiVersion\":\"hwameistor.io/v1alpha1\",\"kind\":\"LocalVolume\",\"metadata\":{"                \
        "\"creationTimestamp\":\"2024-03-01T10:00:00Z\",\"generation\":2,\"name\":\"pvc-1f2e3d4c\","        \
        "\"resourceVersion\":\"" rv "\",\"uid\":\"0f6a4f3e-2b1c-4d5e-8f90-a1b2c3d4e5f6\","                  \
        "\"managedFields\":[{\"apiVersion\":\"hwameistor.io/v1alpha1\",\"fieldsType\":\"FieldsV1\","        \
        "\"fieldsV1\":{\"f:spec\":{\".\":{},\"f:poolName\":{}}},\"manager\":\"hwameid\","                   \
        "\"operation\":\"Update\",\"time\":\"2024-03-01T10:00:00Z\"}]},"                                    \
        "\"spec\":{\"accessibility\":{\"nodes\":[\"node-1\",\"node-2\"]},\"poolName\":\"LocalStorage_"      \
        "PoolHDD\","                                                                                        \
        "\"replicaNumber\":2,\"requiredCapacityBytes\":1073741824,\"pvcName\":\"data-db-0\","               \
        "\"pvcNamespace\":\"default\",\"volumegroup\":\"lvg-db\"},"                                         \
        "\"status\":{\"state\":\"" state "\",\"replicas\":[\"pvc-1f2e3d4c-a1b2c3\"],"                       \
        "\"message\":\"line one\\nline two \\u00e9\"}}"

#define EVENT(type, obj) "{\"type\":\"" type "\",\"object\":" obj "}\n"
#define BOOKMARK(rv)                                                                                        \
        EVENT("BOOKMARK",                                                                                   \
              "{\"kind\":\"LocalVolume\",\"apiVersion\":\"hwameistor.io/"                                   \
              "v1alpha1\",\"metadata\":{\"resourceVersion\":\"" rv "\",\"creationTimestamp\":null}}")
#define ERROR_410(reason)                                                                                   \
        EVENT("ERROR", "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\"," \
                       "\"message\":\"too old resource version: 105 (123)\",\"reason\":\"" reason           \
                       "\",\"code\":410}")

/* Six events with "\r\n" endings and blank lines between some of them. */
static const char *const stream_parts[] = {
        EVENT("ADDED", LV_OBJECT("101", "Creating")),
        EVENT("MODIFIED", LV_OBJECT("102", "Ready")),
        "\r\n\n",
        BOOKMARK("150"),
        EVENT("MODIFIED", LV_OBJECT("160", "NotReady")),
        "{\"type\":\"DELETED\",\"object\":" LV_OBJECT("170", "Deleted") "}\r\n",
        "  \n",
        ERROR_410("Expired"),
};
static char stream_text[16384];

static void build_stream_text(void) {
        stream_text[0] = '\0';
        for (size_t i = 0; i < ELEMENTSOF(stream_parts); i++) {
                assert(strlen(stream_text) + strlen(stream_parts[i]) < sizeof(stream_text));
                strcat(stream_text, stream_parts[i]);
        }
}

/* Records a signature of every event: "TYPE rv state\n". */
typedef struct Recorder {
        char *sig;
        size_t len;
        unsigned n;
        bool take; /* keep ownership of the objects (in kept[]) */
        cJSON *kept[64];
        unsigned n_kept;
        int fail_at; /* return -ECANCELED for the event of this index (or -1) */
} Recorder;

static int record(WatchEventType type, cJSON **object, void *userdata) {
        Recorder *rec = userdata;
        const cJSON *md, *status;
        char line[256];
        int k;

        assert_non_null(object);
        assert_true(cJSON_IsObject(*object));
        assert_null((*object)->string);
        if (rec->fail_at >= 0 && rec->n == (unsigned) rec->fail_at)
                return -ECANCELED;

        md = cJSON_GetObjectItemCaseSensitive(*object, "metadata");
        status = cJSON_GetObjectItemCaseSensitive(*object, "status");
        k = snprintf(line, sizeof(line), "%s %s %s\n", watch_event_type_to_string(type),
                     strna(json_get_string(md, "resourceVersion")),
                     cJSON_IsObject(status) ? strna(json_get_string(status, "state")) : "-");
        rec->sig = realloc(rec->sig, rec->len + (size_t) k + 1);
        assert_non_null(rec->sig);
        memcpy(rec->sig + rec->len, line, (size_t) k + 1);
        rec->len += (size_t) k;
        rec->n++;

        if (rec->take && rec->n_kept < ELEMENTSOF(rec->kept))
                rec->kept[rec->n_kept++] = TAKE_PTR(*object);
        return 0;
}

static void recorder_done(Recorder *rec) {
        free(rec->sig);
        for (unsigned i = 0; i < rec->n_kept; i++)
                cJSON_Delete(rec->kept[i]);
        *rec = (Recorder){ .fail_at = -1 };
}

static const char expected_sig[] = "ADDED 101 Creating\n"
                                   "MODIFIED 102 Ready\n"
                                   "BOOKMARK 150 -\n"
                                   "MODIFIED 160 NotReady\n"
                                   "DELETED 170 Deleted\n"
                                   "ERROR n/a -\n";

static const char *strna_sig(const Recorder *rec) {
        return rec->sig ?: "";
}

static void feed_all_at_once(void **state) {
        _cleanup_watch_stream_free_ WatchStream *s = NULL;
        Recorder rec = { .fail_at = -1 };

        (void) state;
        assert_int_equal(watch_stream_new(WATCH_STREAM_MAX_EVENT_SIZE_DEFAULT, record, &rec, &s), 0);
        assert_int_equal(watch_stream_feed(s, stream_text, strlen(stream_text)), 6);
        assert_string_equal(strna_sig(&rec), expected_sig);
        assert_int_equal(watch_stream_pending(s), 0);
        recorder_done(&rec);
}

static void feed_byte_by_byte(void **state) {
        _cleanup_watch_stream_free_ WatchStream *s = NULL;
        Recorder rec = { .fail_at = -1 };
        int total = 0, r;

        (void) state;
        assert_int_equal(watch_stream_new(WATCH_STREAM_MAX_EVENT_SIZE_DEFAULT, record, &rec, &s), 0);
        for (size_t i = 0; i < strlen(stream_text); i++) {
                r = watch_stream_feed(s, stream_text + i, 1);
                assert_true(r == 0 || r == 1);
                if (r == 1) /* an event is dispatched only when its '\n' arrives */
                        assert_int_equal(stream_text[i], '\n');
                total += r;
        }
        assert_int_equal(total, 6);
        assert_string_equal(strna_sig(&rec), expected_sig);
        recorder_done(&rec);
}

static void feed_split_at_every_boundary(void **state) {
        size_t n = strlen(stream_text);

        (void) state;
        for (size_t k = 0; k <= n; k++) {
                _cleanup_watch_stream_free_ WatchStream *s = NULL;
                Recorder rec = { .fail_at = -1 };
                int a, b;

                assert_int_equal(watch_stream_new(WATCH_STREAM_MAX_EVENT_SIZE_DEFAULT, record, &rec, &s), 0);
                a = watch_stream_feed(s, stream_text, k);
                b = watch_stream_feed(s, stream_text + k, n - k);
                assert_true(a >= 0 && b >= 0);
                assert_int_equal(a + b, 6);
                assert_string_equal(strna_sig(&rec), expected_sig);
                recorder_done(&rec);
        }
}

static void feed_random_chunk_sizes(void **state) {
        size_t n = strlen(stream_text);
        unsigned seed = 42;

        (void) state;
        for (unsigned round = 0; round < 500; round++) {
                _cleanup_watch_stream_free_ WatchStream *s = NULL;
                Recorder rec = { .fail_at = -1, .take = round % 2 };
                int total = 0;

                assert_int_equal(watch_stream_new(WATCH_STREAM_MAX_EVENT_SIZE_DEFAULT, record, &rec, &s), 0);
                for (size_t off = 0; off < n;) {
                        size_t chunk = 1 + (size_t) (rand_r(&seed) % (round % 7 == 0 ? 2000 : 97));
                        int r;

                        chunk = MIN(chunk, n - off);
                        r = watch_stream_feed(s, stream_text + off, chunk);
                        assert_true(r >= 0);
                        total += r;
                        off += chunk;
                }
                assert_int_equal(total, 6);
                assert_string_equal(strna_sig(&rec), expected_sig);
                recorder_done(&rec);
        }
}

static void several_events_in_one_chunk_and_blank_lines(void **state) {
        _cleanup_watch_stream_free_ WatchStream *s = NULL;
        Recorder rec = { .fail_at = -1 };
        const char *text = "\n\r\n \t\r\n" BOOKMARK("1") BOOKMARK("2") "\r\n\r\n" BOOKMARK("3");
        const char *crlf = "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"resourceVersion\":\"9\"}}}\r\n";

        (void) state;
        assert_int_equal(watch_stream_new(1024, record, &rec, &s), 0);
        assert_int_equal(watch_stream_feed(s, "", 0), 0);
        assert_int_equal(watch_stream_feed(s, NULL, 0), 0);
        assert_int_equal(watch_stream_feed(s, text, strlen(text)), 3);
        assert_int_equal(watch_stream_feed(s, "\n\n\n", 3), 0);
        assert_int_equal(watch_stream_feed(s, crlf, strlen(crlf)), 1);
        assert_string_equal(strna_sig(&rec), "BOOKMARK 1 -\nBOOKMARK 2 -\nBOOKMARK 3 -\nADDED 9 -\n");
        recorder_done(&rec);
}

typedef struct Bookmark {
        unsigned n;
        char rv[32];
        int members;
} Bookmark;

static int on_bookmark(WatchEventType type, cJSON **object, void *userdata) {
        Bookmark *b = userdata;
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(*object, "metadata");

        assert_int_equal(type, WATCH_EVENT_BOOKMARK);
        snprintf(b->rv, sizeof(b->rv), "%s", strna(json_get_string(md, "resourceVersion")));
        b->members = cJSON_GetArraySize(md);
        b->n++;
        return 0;
}

static void bookmark_with_only_resource_version(void **state) {
        _cleanup_watch_stream_free_ WatchStream *s = NULL;
        Bookmark b = { 0 };
        const char *text =
                "{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"12746\"}}}\n";

        (void) state;
        assert_int_equal(watch_stream_new(4096, on_bookmark, &b, &s), 0);
        assert_int_equal(watch_stream_feed(s, text, strlen(text)), 1);
        assert_int_equal(b.n, 1);
        assert_string_equal(b.rv, "12746");
        assert_int_equal(b.members, 1);
}

typedef struct Status {
        unsigned n;
        int code;
        bool expired;
        char reason[32], message[64];
} Status;

static int on_status(WatchEventType type, cJSON **object, void *userdata) {
        Status *st = userdata;
        const char *reason = NULL, *message = NULL;

        assert_int_equal(type, WATCH_EVENT_ERROR);
        assert_int_equal(watch_status_parse(*object, &st->code, &reason, &message), 0);
        snprintf(st->reason, sizeof(st->reason), "%s", strna(reason));
        snprintf(st->message, sizeof(st->message), "%s", strna(message));
        st->expired = watch_status_is_expired(*object);
        st->n++;
        return 0;
}

static void error_410_expired_and_gone(void **state) {
        const char *expired = ERROR_410("Expired"), *gone = ERROR_410("Gone");
        const char *timeout = EVENT("ERROR",
                                    "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"Timeout: "
                                    "Too large resource version: 9, current: 5\",\"reason\":\"Timeout\","
                                    "\"code\":504}");
        const char *reason_only = EVENT("ERROR", "{\"reason\":\"Gone\"}");
        _cleanup_watch_stream_free_ WatchStream *s = NULL;
        Status st = { 0 };

        (void) state;
        assert_int_equal(watch_stream_new(4096, on_status, &st, &s), 0);
        assert_int_equal(watch_stream_feed(s, expired, strlen(expired)), 1);
        assert_int_equal(st.code, 410);
        assert_string_equal(st.reason, "Expired");
        assert_string_equal(st.message, "too old resource version: 105 (123)");
        assert_true(st.expired);

        assert_int_equal(watch_stream_feed(s, gone, strlen(gone)), 1);
        assert_string_equal(st.reason, "Gone");
        assert_true(st.expired);

        assert_int_equal(watch_stream_feed(s, timeout, strlen(timeout)), 1);
        assert_int_equal(st.code, 504);
        assert_false(st.expired);

        assert_int_equal(watch_stream_feed(s, reason_only, strlen(reason_only)), 1);
        assert_int_equal(st.code, 0);
        assert_string_equal(st.message, "n/a");
        assert_true(st.expired);
        assert_int_equal(st.n, 4);
}

static void status_parse_rejects_bad_members(void **state) {
        static const char *const bad[] = {
                "{\"code\":\"410\"}", "{\"code\":410.5}", "{\"code\":-1}",   "{\"code\":1e9}",
                "{\"reason\":410}",   "{\"message\":[]}", "{\"code\":null}",
        };
        int code = 7;
        const char *reason = "untouched";

        (void) state;
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_json_ cJSON *o = cJSON_Parse(bad[i]);

                assert_non_null(o);
                assert_int_equal(watch_status_parse(o, &code, &reason, NULL), -EBADMSG);
                assert_false(watch_status_is_expired(o));
        }
        assert_int_equal(code, 7);
        assert_string_equal(reason, "untouched");

        _cleanup_json_ cJSON *arr = cJSON_Parse("[410]");
        assert_int_equal(watch_status_parse(arr, &code, NULL, NULL), -EINVAL);
        assert_int_equal(watch_status_parse(NULL, NULL, NULL, NULL), -EINVAL);
        assert_false(watch_status_is_expired(NULL));
}

static void malformed_events_are_ebadmsg_and_sticky(void **state) {
        static const char *const bad[] = {
                "{\"type\":\"ADDED\",\"object\":{}\n",           /* truncated JSON */
                "not json at all\n",                             /* garbage */
                "[{\"type\":\"ADDED\",\"object\":{}}]\n",        /* not an object */
                "\"ADDED\"\n",                                   /* not an object */
                "{\"object\":{}}\n",                             /* no type */
                "{\"type\":7,\"object\":{}}\n",                  /* type not a string */
                "{\"type\":\"added\",\"object\":{}}\n",          /* unknown (case matters) */
                "{\"type\":\"SYNC\",\"object\":{}}\n",           /* unknown */
                "{\"type\":\"ADDED\"}\n",                        /* no object */
                "{\"type\":\"ADDED\",\"object\":[]}\n",          /* object not an object */
                "{\"type\":\"ADDED\",\"object\":\"x\"}\n",       /* object not an object */
                "{\"type\":\"ADDED\",\"object\":null}\n",        /* object not an object */
                "{\"type\":\"ADDED\",\"object\":{}} x\n",        /* trailing garbage */
                "{\"type\":\"ADDED\",\"object\":{}}{\"a\":1}\n", /* two objects on one line */
                "{\"type\":\"ADDED\",\"object\":{}}\0\n",        /* NUL after the object */
        };

        (void) state;
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_watch_stream_free_ WatchStream *s = NULL;
                Recorder rec = { .fail_at = -1 };
                const char *good = BOOKMARK("5");
                /* the last one has a NUL before its '\n' */
                size_t len = strlen(bad[i]) + (i == ELEMENTSOF(bad) - 1 ? 2 : 0);
                char *text;

                /* a good event first, the bad one in the same chunk, then another good one */
                assert_true(asprintf(&text, "%s", good) > 0);
                text = realloc(text, strlen(good) + len + strlen(good));
                assert_non_null(text);
                memcpy(text + strlen(good), bad[i], len);
                memcpy(text + strlen(good) + len, good, strlen(good));

                assert_int_equal(watch_stream_new(4096, record, &rec, &s), 0);
                assert_int_equal(watch_stream_feed(s, text, strlen(good) + len + strlen(good)), -EBADMSG);
                assert_int_equal(rec.n, 1); /* the event before it was dispatched, the one after not */
                assert_int_equal(watch_stream_pending(s), 0);
                /* sticky until reset */
                assert_int_equal(watch_stream_feed(s, good, strlen(good)), -EBADMSG);
                assert_int_equal(rec.n, 1);
                watch_stream_reset(s);
                assert_int_equal(watch_stream_feed(s, good, strlen(good)), 1);
                assert_int_equal(rec.n, 2);
                free(text);
                recorder_done(&rec);
        }
}

static void oversized_event_is_e2big(void **state) {
        _cleanup_watch_stream_free_ WatchStream *s = NULL;
        Recorder rec = { .fail_at = -1 };
        char big[256];
        size_t n;

        (void) state;
        assert_int_equal(watch_stream_new(0, record, &rec, &s), -EINVAL);

        /* an event of exactly max_event_size bytes passes */
        n = (size_t) snprintf(big, sizeof(big),
                              "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"resourceVersion\":\"1\"}}}");
        assert_int_equal(watch_stream_new(n, record, &rec, &s), 0);
        big[n] = '\n';
        assert_int_equal(watch_stream_feed(s, big, n + 1), 1);

        /* one byte more fails as soon as the byte arrives, before any '\n' */
        big[n] = ' ';
        assert_int_equal(watch_stream_feed(s, big, n), 0);
        assert_int_equal(watch_stream_pending(s), n);
        assert_int_equal(watch_stream_feed(s, " ", 1), -E2BIG);
        assert_int_equal(watch_stream_pending(s), 0);
        assert_int_equal(watch_stream_feed(s, "\n", 1), -E2BIG);

        /* a large chunk fails the same way */
        watch_stream_reset(s);
        memset(big, 'x', sizeof(big));
        assert_int_equal(watch_stream_feed(s, big, sizeof(big)), -E2BIG);
        watch_stream_reset(s);
        big[n] = '\n';
        assert_int_equal(watch_stream_feed(s, big, n + 1), -EBADMSG); /* not JSON, but not too big */
        assert_int_equal(rec.n, 1);
        recorder_done(&rec);
}

static void handler_taking_ownership_or_not(void **state) {
        (void) state;
        for (int take = 0; take <= 1; take++) {
                _cleanup_watch_stream_free_ WatchStream *s = NULL;
                Recorder rec = { .fail_at = -1, .take = take };

                assert_int_equal(watch_stream_new(WATCH_STREAM_MAX_EVENT_SIZE_DEFAULT, record, &rec, &s), 0);
                assert_int_equal(watch_stream_feed(s, stream_text, strlen(stream_text)), 6);
                assert_int_equal(rec.n_kept, take ? 6 : 0);
                if (take) {
                        /* the kept objects are whole, independent trees */
                        const cJSON *md = cJSON_GetObjectItemCaseSensitive(rec.kept[0], "metadata");
                        assert_string_equal(json_get_string(md, "name"), "pvc-1f2e3d4c");
                }
                recorder_done(&rec); /* ASan: no leak, no double free either way */
        }
}

static void handler_error_stops_feeding(void **state) {
        _cleanup_watch_stream_free_ WatchStream *s = NULL;
        Recorder rec = { .fail_at = 2 };

        (void) state;
        assert_int_equal(watch_stream_new(WATCH_STREAM_MAX_EVENT_SIZE_DEFAULT, record, &rec, &s), 0);
        assert_int_equal(watch_stream_feed(s, stream_text, strlen(stream_text)), -ECANCELED);
        assert_int_equal(rec.n, 2);
        assert_int_equal(watch_stream_feed(s, stream_text, strlen(stream_text)), -ECANCELED);
        assert_int_equal(rec.n, 2);
        watch_stream_reset(s);
        rec.fail_at = -1;
        assert_int_equal(watch_stream_feed(s, stream_text, strlen(stream_text)), 6);
        assert_int_equal(rec.n, 8);
        recorder_done(&rec);
}

static void pending_after_a_cut_and_reset(void **state) {
        _cleanup_watch_stream_free_ WatchStream *s = NULL;
        Recorder rec = { .fail_at = -1 };
        const char *first = EVENT("ADDED", LV_OBJECT("101", "Creating"));
        const char *second = EVENT("MODIFIED", LV_OBJECT("102", "Ready"));
        size_t half = strlen(second) / 2;

        (void) state;
        assert_int_equal(watch_stream_new(WATCH_STREAM_MAX_EVENT_SIZE_DEFAULT, record, &rec, &s), 0);
        assert_int_equal(watch_stream_pending(s), 0);
        assert_int_equal(watch_stream_feed(s, first, strlen(first)), 1);
        assert_int_equal(watch_stream_feed(s, second, half), 0);
        assert_int_equal(watch_stream_pending(s), half);

        /* the connection is cut: the half event is discarded, the next response starts afresh */
        watch_stream_reset(s);
        assert_int_equal(watch_stream_pending(s), 0);
        assert_int_equal(watch_stream_feed(s, second, strlen(second)), 1);
        assert_string_equal(strna_sig(&rec), "ADDED 101 Creating\nMODIFIED 102 Ready\n");
        recorder_done(&rec);
}

static void event_type_strings_round_trip(void **state) {
        (void) state;
        for (WatchEventType t = 0; t < _WATCH_EVENT_TYPE_MAX; t++)
                assert_int_equal(watch_event_type_from_string(watch_event_type_to_string(t)), t);
        assert_string_equal(watch_event_type_to_string(WATCH_EVENT_BOOKMARK), "BOOKMARK");
        assert_null(watch_event_type_to_string(_WATCH_EVENT_TYPE_MAX));
        assert_null(watch_event_type_to_string(_WATCH_EVENT_TYPE_INVALID));
        assert_int_equal(watch_event_type_from_string(NULL), _WATCH_EVENT_TYPE_INVALID);
        assert_int_equal(watch_event_type_from_string("Added"), _WATCH_EVENT_TYPE_INVALID);
        assert_int_equal(watch_event_type_from_string(""), _WATCH_EVENT_TYPE_INVALID);
}

static int count_only(WatchEventType type, cJSON **object, void *userdata) {
        (*(size_t *) userdata)++;
        return 0;
}

/* 10 MB of small events fed one byte at a time: with a scan of the new bytes only, this is linear (a few
 * seconds at most even under ASan); re-scanning the buffer on every byte would not finish. The big event
 * at the end makes any per-byte re-scan of the buffered bytes quadratic in its size too. */
static void ten_megabytes_in_one_byte_chunks(void **state) {
        _cleanup_watch_stream_free_ WatchStream *s = NULL;
        const char *ev = EVENT("MODIFIED", "{\"metadata\":{\"name\":\"n\",\"resourceVersion\":\"1\"}}");
        size_t ev_len = strlen(ev), target = 10 * 1024 * 1024, n_events = target / ev_len, seen = 0;
        size_t big_len = 2 * 1024 * 1024, len = n_events * ev_len, total = 0;
        char *text;

        (void) state;
        text = malloc(len + big_len + 64);
        assert_non_null(text);
        for (size_t i = 0; i < n_events; i++)
                memcpy(text + i * ev_len, ev, ev_len);
        /* {"type":"ADDED","object":{"pad":"xxxx…"}} */
        len += (size_t) sprintf(text + len, "{\"type\":\"ADDED\",\"object\":{\"pad\":\"");
        memset(text + len, 'x', big_len);
        len += big_len;
        len += (size_t) sprintf(text + len, "\"}}\n");

        assert_int_equal(watch_stream_new(WATCH_STREAM_MAX_EVENT_SIZE_DEFAULT, count_only, &seen, &s), 0);
        for (size_t i = 0; i < len; i++) {
                int r = watch_stream_feed(s, text + i, 1);
                assert_true(r >= 0);
                total += (size_t) r;
        }
        assert_int_equal(total, n_events + 1);
        assert_int_equal(seen, n_events + 1);
        assert_int_equal(watch_stream_pending(s), 0);
        free(text);
}

int main(void) {
        build_stream_text();

        const struct CMUnitTest tests[] = {
                cmocka_unit_test(feed_all_at_once),
                cmocka_unit_test(feed_byte_by_byte),
                cmocka_unit_test(feed_split_at_every_boundary),
                cmocka_unit_test(feed_random_chunk_sizes),
                cmocka_unit_test(several_events_in_one_chunk_and_blank_lines),
                cmocka_unit_test(bookmark_with_only_resource_version),
                cmocka_unit_test(error_410_expired_and_gone),
                cmocka_unit_test(status_parse_rejects_bad_members),
                cmocka_unit_test(malformed_events_are_ebadmsg_and_sticky),
                cmocka_unit_test(oversized_event_is_e2big),
                cmocka_unit_test(handler_taking_ownership_or_not),
                cmocka_unit_test(handler_error_stops_feeding),
                cmocka_unit_test(pending_after_a_cut_and_reset),
                cmocka_unit_test(event_type_strings_round_trip),
                cmocka_unit_test(ten_megabytes_in_one_byte_chunks),
        };
        return cmocka_run_group_tests_name("watch-stream", tests, NULL, NULL);
}
