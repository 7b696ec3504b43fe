/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../basic/hashmap.h"
#include "../basic/json-util.h"
#include "../basic/random-util.h"
#include "../basic/string-util.h"
#include "../log/log.h"
#include "kube-events.h"

#define EVENTS_MAX        4096                  /* remembered events, as client-go's LRU */
#define EVENT_MESSAGE_MAX 1024                  /* the API server refuses more */
#define EVENT_BURST       25.0                  /* per object */
#define EVENT_REFILL_USEC (5 * USEC_PER_MINUTE) /* one token per 5 minutes */

typedef struct RecordedEvent {
        char *key; /* type|reason|message|namespace|kind|name: what makes two events the same */
        EventRecorder *recorder;
        char *namespace, *name; /* of the Event object */
        cJSON *body;            /* the Event as first created */
        unsigned count, sent_count;
        bool created;
        KubeRequest *request; /* the write in flight, or NULL */
        usec_t last_use;
} RecordedEvent;

typedef struct ObjectBucket {
        char *key; /* namespace/kind/name */
        double tokens;
        usec_t refilled;
} ObjectBucket;

struct EventRecorder {
        KubeClient *client;
        char *component, *host;
        Hashmap *events;  /* key → RecordedEvent */
        Hashmap *buckets; /* object key → ObjectBucket */
        EventRecorderStats stats;
};

static void recorded_event_free(void *p) {
        RecordedEvent *e = p;

        if (!e)
                return;
        if (e->request)
                e->recorder->stats.pending--;
        kube_request_cancel(e->request);
        free(e->key);
        free(e->namespace);
        free(e->name);
        cJSON_Delete(e->body);
        free(e);
}

static void bucket_free(void *p) {
        ObjectBucket *b = p;

        if (!b)
                return;
        free(b->key);
        free(b);
}

static char *format_rfc3339(char *buf, size_t len, usec_t realtime) {
        time_t t = (time_t) (realtime / USEC_PER_SEC);
        struct tm tm;

        if (!gmtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                snprintf(buf, len, "1970-01-01T00:00:00Z");
        return buf;
}

static void event_flush(RecordedEvent *e);

static void event_on_written(KubeRequest *req, KubeResponse *resp, void *userdata) {
        RecordedEvent *e = userdata;
        EventRecorder *r = e->recorder;

        (void) req;
        e->request = NULL;
        r->stats.pending--;
        if (resp->error == -ENOENT && e->created) {
                /* The Event expired on the server (they live an hour): start a new one. */
                e->created = false;
                event_flush(e);
                return;
        }
        if (resp->error < 0) {
                r->stats.failed++;
                log_debug("Failed to record event '%s': %s", e->key, resp->message);
                return;
        }
        if (!e->created) {
                e->created = true;
                r->stats.created++;
        } else
                r->stats.updated++;
        if (e->count > e->sent_count)
                event_flush(e);
}

/* Writes the event's current count: creates it the first time, patches it after. */
static void event_flush(RecordedEvent *e) {
        EventRecorder *r = e->recorder;
        _cleanup_json_ cJSON *patch = NULL;
        _cleanup_free_ char *path = NULL;
        char now_str[32];
        int k;

        if (e->request)
                return;
        format_rfc3339(now_str, sizeof(now_str), now(CLOCK_REALTIME));

        if (!e->created) {
                cJSON *item = cJSON_GetObjectItemCaseSensitive(e->body, "count");
                if (item)
                        cJSON_SetNumberValue(item, e->count);
                cJSON_ReplaceItemInObjectCaseSensitive(e->body, "lastTimestamp",
                                                       cJSON_CreateString(now_str));
                if (asprintf(&path, "/api/v1/namespaces/%s/events", e->namespace) < 0)
                        return;
                k = kube_request(r->client, KUBE_POST, path, e->body, event_on_written, e, &e->request);
        } else {
                patch = cJSON_CreateObject();
                if (!patch || !cJSON_AddNumberToObject(patch, "count", e->count) ||
                    !cJSON_AddStringToObject(patch, "lastTimestamp", now_str) ||
                    asprintf(&path, "/api/v1/namespaces/%s/events/%s", e->namespace, e->name) < 0)
                        return;
                k = kube_request(r->client, KUBE_PATCH_MERGE, path, patch, event_on_written, e, &e->request);
        }
        if (k < 0) {
                r->stats.failed++;
                return;
        }
        e->sent_count = e->count;
        r->stats.pending++;
}

/* Drops the least recently used event that is not being written. */
static void events_evict(EventRecorder *r) {
        RecordedEvent *e, *oldest = NULL;

        HASHMAP_FOREACH(e, r->events)
        if (!e->request && (!oldest || e->last_use < oldest->last_use))
                oldest = e;
        if (oldest) {
                hashmap_remove(r->events, oldest->key);
                recorded_event_free(oldest);
        }
}

static bool bucket_take(EventRecorder *r, const char *key) {
        ObjectBucket *b = hashmap_get(r->buckets, key);
        usec_t n = now(CLOCK_MONOTONIC);

        if (!b) {
                if (hashmap_size(r->buckets) >= EVENTS_MAX) {
                        /* Forget every bucket: at worst a burst more for objects that flap. */
                        hashmap_free_with(r->buckets, bucket_free);
                        if (hashmap_new(&r->buckets) < 0)
                                return true;
                }
                b = calloc(1, sizeof(*b));
                if (!b || !(b->key = strdup(key))) {
                        free(b);
                        return true; /* out of memory: rather deliver than drop */
                }
                b->tokens = EVENT_BURST;
                b->refilled = n;
                if (hashmap_put(r->buckets, b->key, b) < 0) {
                        bucket_free(b);
                        return true;
                }
        }
        b->tokens = MIN(EVENT_BURST, b->tokens + (double) (n - b->refilled) / (double) EVENT_REFILL_USEC);
        b->refilled = n;
        if (b->tokens < 1.0)
                return false;
        b->tokens -= 1.0;
        return true;
}

static cJSON *event_build(EventRecorder *r, const char *api_version, const char *kind, const cJSON *involved,
                          const char *ns, const char *name, const char *type, const char *reason,
                          const char *message, char **ret_event_name) {
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(involved, "metadata");
        _cleanup_json_ cJSON *o = cJSON_CreateObject();
        _cleanup_free_ char *event_name = NULL;
        cJSON *m, *io, *src;
        char ts[32];
        bool ok;

        /* client-go: "<object>.<unique hex>" */
        if (!o || asprintf(&event_name, "%s.%016llx", name, (unsigned long long) random_u64()) < 0)
                return NULL;
        format_rfc3339(ts, sizeof(ts), now(CLOCK_REALTIME));

        ok = cJSON_AddStringToObject(o, "apiVersion", "v1") && cJSON_AddStringToObject(o, "kind", "Event");
        m = cJSON_AddObjectToObject(o, "metadata");
        ok = ok && m && cJSON_AddStringToObject(m, "name", event_name) &&
             cJSON_AddStringToObject(m, "namespace", ns);
        io = cJSON_AddObjectToObject(o, "involvedObject");
        ok = ok && io &&
             cJSON_AddStringToObject(io, "apiVersion",
                                     api_version ?: strempty(json_get_string(involved, "apiVersion"))) &&
             cJSON_AddStringToObject(io, "kind", kind ?: strempty(json_get_string(involved, "kind"))) &&
             cJSON_AddStringToObject(io, "name", name);
        if (ok && json_get_string(meta, "namespace"))
                ok = cJSON_AddStringToObject(io, "namespace", json_get_string(meta, "namespace")) != NULL;
        if (ok && json_get_string(meta, "uid"))
                ok = cJSON_AddStringToObject(io, "uid", json_get_string(meta, "uid")) != NULL;
        ok = ok && cJSON_AddStringToObject(o, "reason", reason) &&
             cJSON_AddStringToObject(o, "message", message) && cJSON_AddStringToObject(o, "type", type);
        src = cJSON_AddObjectToObject(o, "source");
        ok = ok && src && cJSON_AddStringToObject(src, "component", r->component) &&
             cJSON_AddStringToObject(src, "host", r->host) &&
             cJSON_AddStringToObject(o, "firstTimestamp", ts) &&
             cJSON_AddStringToObject(o, "lastTimestamp", ts) && cJSON_AddNumberToObject(o, "count", 1) &&
             cJSON_AddStringToObject(o, "reportingComponent", r->component) &&
             cJSON_AddStringToObject(o, "reportingInstance", r->host);
        if (!ok)
                return NULL;
        *ret_event_name = TAKE_PTR(event_name);
        return TAKE_PTR(o);
}

void event_recorder_emit(EventRecorder *r, const char *api_version, const char *kind, const cJSON *involved,
                         const char *type, const char *reason, const char *format, ...) {
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(involved, "metadata");
        const char *name = json_get_string(meta, "name");
        const char *ns = json_get_string(meta, "namespace");
        _cleanup_free_ char *key = NULL, *object_key = NULL;
        char message[EVENT_MESSAGE_MAX];
        RecordedEvent *e;
        va_list ap;

        if (!r || !name)
                return;
        if (isempty(ns))
                ns = "default";
        kind = kind ?: json_get_string(involved, "kind");
        va_start(ap, format);
        (void) vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);

        if (asprintf(&object_key, "%s/%s/%s", ns, strempty(kind), name) < 0 ||
            asprintf(&key, "%s|%s|%s|%s", type, reason, message, object_key) < 0)
                return;

        if (!bucket_take(r, object_key)) {
                r->stats.dropped++;
                log_debug("Event rate limit reached for %s, dropping '%s'.", object_key, reason);
                return;
        }

        e = hashmap_get(r->events, key);
        if (!e) {
                if (hashmap_size(r->events) >= EVENTS_MAX)
                        events_evict(r);
                e = calloc(1, sizeof(*e));
                if (!e)
                        return;
                e->recorder = r;
                e->key = TAKE_PTR(key);
                e->namespace = strdup(ns);
                e->body = event_build(r, api_version, kind, involved, ns, name, type, reason, message,
                                      &e->name);
                if (!e->namespace || !e->body || hashmap_put(r->events, e->key, e) < 0) {
                        recorded_event_free(e);
                        return;
                }
        }
        e->count++;
        e->last_use = now(CLOCK_MONOTONIC);
        event_flush(e);
}

int event_recorder_new(KubeClient *client, const char *component, const char *host, EventRecorder **ret) {
        _cleanup_(event_recorder_freep) EventRecorder *r = NULL;
        int k;

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->client = client;
        r->component = strdup(component);
        r->host = strdup(host);
        if (!r->component || !r->host)
                return -ENOMEM;
        k = hashmap_new(&r->events);
        if (k >= 0)
                k = hashmap_new(&r->buckets);
        if (k < 0)
                return k;
        *ret = TAKE_PTR(r);
        return 0;
}

EventRecorder *event_recorder_free(EventRecorder *r) {
        if (!r)
                return NULL;
        /* Cancels the writes in flight, so the client must still exist: free the recorder first. */
        hashmap_free_with(r->events, recorded_event_free);
        hashmap_free_with(r->buckets, bucket_free);
        free(r->component);
        free(r->host);
        free(r);
        return NULL;
}

const EventRecorderStats *event_recorder_stats(const EventRecorder *r) {
        return &r->stats;
}
