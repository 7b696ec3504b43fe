/* SPDX-License-Identifier: Apache-2.0 */

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "basic/string-util.h"
#include "watch-stream.h"

/* A buffer that grew beyond this for one large event is released once the event is done. */
#define WATCH_STREAM_BUFFER_KEEP ((size_t) 64 * 1024)

struct WatchStream {
        WatchEventHandler handler;
        void *userdata;
        size_t max_event_size;

        /* The unfinished event: len bytes, never a '\n' among them; cap > len leaves room for a NUL. */
        char *buf;
        size_t len;
        size_t cap;

        int error; /* sticky, until reset */
        bool dispatching;
};

static const char *const watch_event_type_table[_WATCH_EVENT_TYPE_MAX] = {
        [WATCH_EVENT_ADDED] = "ADDED",     [WATCH_EVENT_MODIFIED] = "MODIFIED",
        [WATCH_EVENT_DELETED] = "DELETED", [WATCH_EVENT_BOOKMARK] = "BOOKMARK",
        [WATCH_EVENT_ERROR] = "ERROR",
};

DEFINE_STRING_TABLE_TO_STRING(watch_event_type, WatchEventType, watch_event_type_table)

WatchEventType watch_event_type_from_string(const char *s) {
        if (!s)
                return _WATCH_EVENT_TYPE_INVALID;
        for (WatchEventType t = 0; t < _WATCH_EVENT_TYPE_MAX; t++)
                if (streq(watch_event_type_table[t], s))
                        return t;
        return _WATCH_EVENT_TYPE_INVALID;
}

int watch_stream_new(size_t max_event_size, WatchEventHandler handler, void *userdata, WatchStream **ret) {
        WatchStream *s;

        assert(handler);
        assert(ret);

        if (max_event_size == 0 || max_event_size >= SIZE_MAX / 2)
                return -EINVAL;

        s = calloc(1, sizeof(WatchStream));
        if (!s)
                return -ENOMEM;

        *s = (WatchStream){
                .handler = handler,
                .userdata = userdata,
                .max_event_size = max_event_size,
        };
        *ret = s;
        return 0;
}

WatchStream *watch_stream_free(WatchStream *s) {
        if (!s)
                return NULL;
        assert(!s->dispatching);
        free(s->buf);
        return mfree(s);
}

size_t watch_stream_pending(const WatchStream *s) {
        return s ? s->len : 0;
}

void watch_stream_reset(WatchStream *s) {
        assert(s);
        assert(!s->dispatching);

        s->len = 0;
        s->error = 0;
        if (s->cap > WATCH_STREAM_BUFFER_KEEP) {
                s->buf = mfree(s->buf);
                s->cap = 0;
        }
}

/* Appends n bytes of the unfinished event, keeping room for a terminating NUL. */
static int watch_stream_append(WatchStream *s, const char *p, size_t n) {
        size_t need;

        if (n == 0)
                return 0;

        if (s->len + n > s->max_event_size)
                return -E2BIG;

        need = s->len + n + 1;
        if (need > s->cap) {
                size_t cap = MAX(need, MAX(s->cap * 2, (size_t) 4096));
                char *b;

                cap = MIN(cap, s->max_event_size + 1);
                b = realloc(s->buf, cap);
                if (!b)
                        return -ENOMEM;
                s->buf = b;
                s->cap = cap;
        }

        memcpy(s->buf + s->len, p, n);
        s->len += n;
        return 0;
}

static bool is_json_space(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Parses the buffered line as one event and hands it to the handler. Returns 1 when an event was
 * dispatched, 0 for a blank line, or a negative errno. */
static int watch_stream_dispatch_line(WatchStream *s) {
        _cleanup_json_ cJSON *envelope = NULL, *object = NULL;
        const char *end = NULL, *type;
        size_t n = s->len;
        WatchEventType t;
        cJSON *o;
        int r;

        s->len = 0; /* consumed, whatever happens */

        while (n > 0 && is_json_space(s->buf[n - 1]))
                n--; /* trailing "\r" and blanks */
        if (n == 0)
                return 0;

        /* cJSON is given the length, and the NUL guards against any read past it. */
        s->buf[n] = '\0';
        envelope = cJSON_ParseWithLengthOpts(s->buf, n, &end, false);
        if (!envelope)
                return -EBADMSG;
        /* Nothing but blanks may follow the object: "{…}{…}" or "{…} x" are not one event. */
        if (!end || end < s->buf || end > s->buf + n)
                return -EBADMSG;
        for (; end < s->buf + n; end++)
                if (!is_json_space(*end))
                        return -EBADMSG;

        if (!cJSON_IsObject(envelope))
                return -EBADMSG;

        type = json_get_string(envelope, "type");
        t = watch_event_type_from_string(type);
        if (t < 0)
                return -EBADMSG;

        o = cJSON_GetObjectItemCaseSensitive(envelope, "object");
        if (!cJSON_IsObject(o))
                return -EBADMSG;

        object = cJSON_DetachItemViaPointer(envelope, o);
        if (!object)
                return -EBADMSG;
        /* The detached item still carries its member name "object"; the event's object is a root. */
        if (object->string && !(object->type & cJSON_StringIsConst))
                cJSON_free(object->string);
        object->string = NULL;
        cJSON_Delete(TAKE_PTR(envelope));

        s->dispatching = true;
        r = s->handler(t, &object, s->userdata);
        s->dispatching = false;
        if (r < 0)
                return r;
        return 1;
}

static int watch_stream_fail(WatchStream *s, int r) {
        assert(r < 0);
        s->error = r;
        s->len = 0;
        return r;
}

int watch_stream_feed(WatchStream *s, const void *data, size_t len) {
        const char *p = data, *end;
        size_t dispatched = 0;
        int r;

        assert(s);
        assert(data || len == 0);
        assert(!s->dispatching);

        if (s->error < 0)
                return s->error;
        if (len == 0)
                return 0;

        end = p + len;
        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));

                r = watch_stream_append(s, p, (size_t) ((nl ?: end) - p));
                if (r < 0)
                        return watch_stream_fail(s, r);
                if (!nl)
                        break;
                p = nl + 1;

                r = watch_stream_dispatch_line(s);
                if (r < 0)
                        return watch_stream_fail(s, r);
                dispatched += (size_t) r;

                if (s->cap > WATCH_STREAM_BUFFER_KEEP) {
                        s->buf = mfree(s->buf);
                        s->cap = 0;
                }
        }

        return (int) MIN(dispatched, (size_t) INT_MAX);
}

int watch_status_parse(const cJSON *status, int *ret_code, const char **ret_reason,
                       const char **ret_message) {
        const cJSON *code, *reason, *message;
        int c = 0;

        if (!cJSON_IsObject(status))
                return -EINVAL;

        code = cJSON_GetObjectItemCaseSensitive(status, "code");
        if (code) {
                if (!cJSON_IsNumber(code) || !(code->valuedouble >= 0 && code->valuedouble <= 999) ||
                    code->valuedouble != (double) (int) code->valuedouble)
                        return -EBADMSG;
                c = (int) code->valuedouble;
        }

        reason = cJSON_GetObjectItemCaseSensitive(status, "reason");
        if (reason && !cJSON_IsString(reason))
                return -EBADMSG;
        message = cJSON_GetObjectItemCaseSensitive(status, "message");
        if (message && !cJSON_IsString(message))
                return -EBADMSG;

        if (ret_code)
                *ret_code = c;
        if (ret_reason)
                *ret_reason = reason ? reason->valuestring : NULL;
        if (ret_message)
                *ret_message = message ? message->valuestring : NULL;
        return 0;
}

bool watch_status_is_expired(const cJSON *status) {
        const char *reason;
        int code;

        if (watch_status_parse(status, &code, &reason, NULL) < 0)
                return false;
        return code == 410 || streq_ptr(reason, "Expired") || streq_ptr(reason, "Gone");
}
