/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Turns the bytes of a Kubernetes watch response into events.
 *
 * The API server writes each event as one JSON object, {"type":…,"object":{…}}, followed by '\n'. A chunk
 * of the response may hold several events and an event may span several chunks, so the stream buffers
 * the unfinished event and cuts at '\n' (JSON escapes newlines inside strings, so a raw '\n' only ends an
 * event). Each byte is scanned once and copied once; each event is parsed once, when its '\n' arrives.
 */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

#include "basic/json-util.h"
#include "basic/macro.h"

typedef enum WatchEventType {
        WATCH_EVENT_ADDED,
        WATCH_EVENT_MODIFIED,
        WATCH_EVENT_DELETED,
        WATCH_EVENT_BOOKMARK,
        WATCH_EVENT_ERROR,
        _WATCH_EVENT_TYPE_MAX,
        _WATCH_EVENT_TYPE_INVALID = -EINVAL,
} WatchEventType;

/* "ADDED", "MODIFIED", …; NULL for values out of range. from_string is case-sensitive, as the API is;
 * it returns _WATCH_EVENT_TYPE_INVALID for anything else (NULL included). */
const char *watch_event_type_to_string(WatchEventType t);
WatchEventType watch_event_type_from_string(const char *s);

typedef struct WatchStream WatchStream;

/* Called once per complete event. *object is the event's "object" (always a JSON object); the callee may
 * take ownership (TAKE_PTR(*object)), else the stream frees it. A negative return stops feeding and is
 * returned by watch_stream_feed(). The handler must not feed, reset or free the stream that calls it. */
typedef int (*WatchEventHandler)(WatchEventType type, cJSON **object, void *userdata);

/* The default bound on one event: the API server's limit is about 3 MiB per object plus the envelope. */
#define WATCH_STREAM_MAX_EVENT_SIZE_DEFAULT ((size_t) 16 * 1024 * 1024)

/* max_event_size bounds one event, in bytes without its '\n' (> 0). Returns 0 or -ENOMEM/-EINVAL. */
int watch_stream_new(size_t max_event_size, WatchEventHandler handler, void *userdata, WatchStream **ret);
WatchStream *watch_stream_free(WatchStream *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(WatchStream *, watch_stream_free);
#define _cleanup_watch_stream_free_ _cleanup_(watch_stream_freep)

/* Feeds bytes as they arrive (e.g. a libcurl write callback's chunk) and dispatches every event they
 * complete, in order. Returns the number of events dispatched (lines that are empty or only whitespace,
 * and a '\r' before the '\n', are tolerated and not counted), or:
 *   -EBADMSG  an event that is not valid JSON, not an object, lacks "type" or "object", has an unknown
 *             type, or has an "object" that is not an object (cJSON does not tell a parse failure from an
 *             allocation failure, so the latter also shows up as -EBADMSG);
 *   -E2BIG    an event longer than max_event_size (detected as soon as its bytes exceed the bound, so at
 *             most max_event_size bytes are ever buffered);
 *   -ENOMEM;
 *   or the handler's negative return.
 * Events completed before the failing one have been dispatched; the bytes after it are dropped. The error
 * is sticky: every later feed returns it again until watch_stream_reset(). */
int watch_stream_feed(WatchStream *s, const void *data, size_t len);

/* Bytes buffered of an unfinished event (a connection cut mid-event leaves some). */
size_t watch_stream_pending(const WatchStream *s);

/* Discards the unfinished event and any sticky error, ready for a new response body. */
void watch_stream_reset(WatchStream *s);

/* For ERROR events (a metav1.Status object): code (e.g. 410; 0 when absent), reason (e.g. "Expired",
 * NULL when absent) and message (NULL when absent), borrowed from status. Every ret_ is optional and
 * written only on success. Returns 0, -EINVAL when status is not an object, or -EBADMSG when a member has
 * the wrong type or the code is not an integer in 0…999. */
int watch_status_parse(const cJSON *status, int *ret_code, const char **ret_reason,
                       const char **ret_message);

/* True for the "resource version too old" Status: code 410, or reason "Expired" (or "Gone", used by
 * servers before 1.18). The informer then relists. */
bool watch_status_is_expired(const cJSON *status);
