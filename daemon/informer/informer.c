/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "../basic/json-util.h"
#include "../basic/random-util.h"
#include "../basic/string-util.h"
#include "../log/log.h"
#include "informer.h"
#include "watch-stream.h"

#define INFORMER_PAGE_SIZE             500
#define INFORMER_BACKOFF_MIN           (800 * USEC_PER_MSEC)
#define INFORMER_BACKOFF_MAX           (30 * USEC_PER_SEC)
#define INFORMER_HEALTHY_RESET         (2 * USEC_PER_MINUTE)
#define INFORMER_WATCH_TIMEOUT_MIN_SEC 300

struct Informer {
        KubeClient *client;
        char *name, *path, *label_selector, *field_selector;
        InformerHandlers handlers;
        void *userdata;

        InformerState state;
        KubeCache *cache;
        WatchStream *stream;
        KubeRequest *request; /* the list page or the watch in flight */
        sd_event_source *timer;

        char *rv;             /* last resourceVersion seen */
        char *continue_token; /* of the list in progress */
        bool relist_from_scratch;
        bool next_is_list; /* after the backoff: list (true) or watch (false) */
        bool synced;

        usec_t backoff, last_failure;
        usec_t watch_started;  /* when the current watch was started */
        unsigned watch_events; /* stats.events then */
        int last_error;
        char last_message[256];
        char stream_error[256]; /* what an ERROR event said */
        InformerStats stats;
};

static const char *const informer_state_table[_INFORMER_STATE_MAX] = {
        [INFORMER_STOPPED] = "stopped",
        [INFORMER_LISTING] = "listing",
        [INFORMER_WATCHING] = "watching",
        [INFORMER_BACKOFF] = "backoff",
};

DEFINE_STRING_TABLE_TO_STRING(informer_state, InformerState, informer_state_table)

static void informer_set_state(Informer *inf, InformerState state) {
        if (inf->state == state)
                return;
        log_debug("Informer %s: %s → %s.", inf->name, informer_state_to_string(inf->state),
                  informer_state_to_string(state));
        inf->state = state;
}

static void informer_set_rv(Informer *inf, const char *rv) {
        if (!isempty(rv))
                (void) free_and_strdup(&inf->rv, rv);
}

static const char *object_rv(const cJSON *obj) {
        return json_get_string(cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "resourceVersion");
}

static int informer_list(Informer *inf);
static int informer_watch(Informer *inf);

/* Appends "&key=escaped(value)" when value is set. */
static int query_add(char **q, const char *key, const char *value) {
        _cleanup_free_ char *e = NULL;
        char *n;

        if (!value)
                return 0;
        e = kube_escape(value);
        if (!e)
                return -ENOMEM;
        if (asprintf(&n, "%s%s%s=%s", *q, strchr(*q, '?') ? "&" : "?", key, e) < 0)
                return -ENOMEM;
        free(*q);
        *q = n;
        return 0;
}

/* ---- failures and backoff ------------------------------------------------------------------ */

static void informer_fail(Informer *inf, int error, const char *message, usec_t retry_after, bool relist);

static int query_add_selectors(char **q, const Informer *inf) {
        int r = query_add(q, "labelSelector", inf->label_selector);
        return r < 0 ? r : query_add(q, "fieldSelector", inf->field_selector);
}

static int informer_on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Informer *inf = userdata;
        int r;

        (void) s, (void) usec;
        r = inf->next_is_list ? informer_list(inf) : informer_watch(inf);
        if (r < 0)
                informer_fail(inf, r, "failed to start a request", 0, inf->next_is_list);
        return 0;
}

/* Records an error and retries after a jittered, growing delay (at least retry_after). */
static void informer_fail(Informer *inf, int error, const char *message, usec_t retry_after, bool relist) {
        usec_t n = now(CLOCK_MONOTONIC), delay;

        inf->stats.errors++;
        /* The owner hears of every change of error, so that a 401 after a connection error still
         * makes it look at its credentials. */
        bool changed = inf->last_error != error;
        inf->last_error = error;
        (void) snprintf(inf->last_message, sizeof(inf->last_message), "%s", message ?: strerror(-error));

        if (inf->last_failure == 0 || n - inf->last_failure >= INFORMER_HEALTHY_RESET)
                inf->backoff = INFORMER_BACKOFF_MIN;
        else
                inf->backoff = MIN(inf->backoff * 2, INFORMER_BACKOFF_MAX);
        inf->last_failure = n;

        delay = inf->backoff + (usec_t) (random_unit() * (double) inf->backoff);
        delay = MAX(delay, retry_after);

        log_ratelimit_errno(LOG_WARNING, error, 30 * USEC_PER_SEC, 3,
                            "Informer %s: %s; retrying in %llu ms.", inf->name, inf->last_message,
                            (unsigned long long) (delay / USEC_PER_MSEC));

        inf->next_is_list = relist;
        informer_set_state(inf, INFORMER_BACKOFF);
        (void) sd_event_source_set_time(inf->timer, n + delay);
        (void) sd_event_source_set_enabled(inf->timer, SD_EVENT_ONESHOT);
        if (changed && inf->handlers.health)
                inf->handlers.health(inf, error, inf->userdata);
}

static void informer_healthy(Informer *inf) {
        if (inf->last_error == 0)
                return;
        inf->last_error = 0;
        inf->last_message[0] = '\0';
        if (inf->handlers.health)
                inf->handlers.health(inf, 0, inf->userdata);
}

/* ---- applying objects to the cache ---------------------------------------------------------- */

/* Stores obj (borrowed) and tells the handlers what changed. */
static int informer_apply(Informer *inf, const cJSON *obj) {
        _cleanup_json_ cJSON *copy = NULL, *old = NULL;
        int change;

        copy = cJSON_Duplicate(obj, true);
        if (!copy)
                return -ENOMEM;
        change = kube_cache_upsert(inf->cache, &copy, &old);
        if (change < 0)
                return change;

        switch (change) {
        case KUBE_CACHE_ADDED:
                if (inf->handlers.added)
                        inf->handlers.added(inf, obj, inf->userdata);
                break;
        case KUBE_CACHE_UPDATED:
                if (inf->handlers.updated)
                        inf->handlers.updated(inf, old, obj, inf->userdata);
                break;
        default:
                break;
        }
        return 0;
}

static int informer_remove(Informer *inf, const cJSON *obj) {
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
        _cleanup_json_ cJSON *removed = NULL;
        int r;

        r = kube_cache_remove(inf->cache, json_get_string(meta, "namespace"), json_get_string(meta, "name"),
                              &removed);
        if (r > 0 && inf->handlers.deleted)
                inf->handlers.deleted(inf, obj, inf->userdata);
        return 0;
}

static int informer_on_replace_deleted(cJSON **object, void *userdata) {
        Informer *inf = userdata;

        if (inf->handlers.deleted)
                inf->handlers.deleted(inf, *object, inf->userdata);
        return 0;
}

/* ---- list ---------------------------------------------------------------------------------- */

static void informer_on_list(KubeRequest *req, KubeResponse *resp, void *userdata) {
        Informer *inf = userdata;
        const cJSON *items, *meta, *item;
        const char *cont;
        int r;

        (void) req;
        inf->request = NULL;

        if (resp->error == -ESTALE && resp->http_code == 410) {
                /* The RV or the continue token is too old: start over from the latest state. */
                inf->stats.relists_expired++;
                inf->relist_from_scratch = true;
                inf->continue_token = mfree(inf->continue_token);
                r = informer_list(inf);
                if (r < 0)
                        informer_fail(inf, r, NULL, 0, true);
                return;
        }
        if (resp->error < 0) {
                inf->continue_token = mfree(inf->continue_token);
                informer_fail(inf, resp->error, resp->message, resp->retry_after, true);
                return;
        }

        items = cJSON_GetObjectItemCaseSensitive(resp->body, "items");
        meta = cJSON_GetObjectItemCaseSensitive(resp->body, "metadata");
        if (!cJSON_IsObject(meta) || !(cJSON_IsArray(items) || cJSON_IsNull(items) || !items)) {
                informer_fail(inf, -EBADMSG, "list answer is not a list", 0, true);
                return;
        }

        if (!inf->continue_token)
                kube_cache_replace_begin(inf->cache);
        cJSON_ArrayForEach(item, items) {
                r = informer_apply(inf, item);
                if (r < 0)
                        log_debug_errno(r, "Informer %s: ignoring an unusable list item: %m", inf->name);
        }

        cont = json_get_string(meta, "continue");
        if (!isempty(cont)) {
                if (free_and_strdup(&inf->continue_token, cont) < 0) {
                        informer_fail(inf, -ENOMEM, NULL, 0, true);
                        return;
                }
                r = informer_list(inf);
                if (r < 0)
                        informer_fail(inf, r, NULL, 0, true);
                return;
        }

        inf->continue_token = mfree(inf->continue_token);
        (void) kube_cache_replace_end(inf->cache, informer_on_replace_deleted, inf);
        informer_set_rv(inf, json_get_string(meta, "resourceVersion"));
        inf->relist_from_scratch = false;
        inf->synced = true;
        /* Parsing the pages left much freed memory behind; give it back. */
        (void) malloc_trim(0);
        informer_healthy(inf);
        if (inf->handlers.synced)
                inf->handlers.synced(inf, inf->userdata);

        r = informer_watch(inf);
        if (r < 0)
                informer_fail(inf, r, NULL, 0, false);
}

static int informer_list(Informer *inf) {
        _cleanup_free_ char *q = NULL;
        char limit[32];
        int r;

        q = strdup(inf->path);
        if (!q)
                return -ENOMEM;
        snprintf(limit, sizeof(limit), "%d", INFORMER_PAGE_SIZE);
        r = query_add(&q, "limit", limit);
        if (r >= 0 && inf->continue_token)
                r = query_add(&q, "continue", inf->continue_token);
        else if (r >= 0)
                /* client-go: the first list from the watch cache ("0"), relists from where we were,
                 * and the latest state ("") only when that was too old. */
                r = query_add(&q, "resourceVersion", inf->relist_from_scratch ? NULL : (inf->rv ?: "0"));
        if (r >= 0)
                r = query_add_selectors(&q, inf);
        if (r < 0)
                return r;

        r = kube_request(inf->client, KUBE_GET, q, NULL, informer_on_list, inf, &inf->request);
        if (r < 0)
                return r;
        inf->stats.lists += !inf->continue_token;
        informer_set_state(inf, INFORMER_LISTING);
        return 0;
}

/* ---- watch --------------------------------------------------------------------------------- */

static int informer_on_event(WatchEventType type, cJSON **object, void *userdata) {
        Informer *inf = userdata;
        int code = 0;
        const char *message = NULL;

        inf->stats.events++;
        switch (type) {
        case WATCH_EVENT_ADDED:
        case WATCH_EVENT_MODIFIED:
                informer_set_rv(inf, object_rv(*object));
                return informer_apply(inf, *object);
        case WATCH_EVENT_DELETED:
                informer_set_rv(inf, object_rv(*object));
                return informer_remove(inf, *object);
        case WATCH_EVENT_BOOKMARK:
                informer_set_rv(inf, object_rv(*object));
                return 0;
        case WATCH_EVENT_ERROR:
                (void) watch_status_parse(*object, &code, NULL, &message);
                (void) snprintf(inf->stream_error, sizeof(inf->stream_error), "watch error %d: %s", code,
                                strna(message));
                return watch_status_is_expired(*object) ? -ESTALE : -EIO;
        default:
                return -EBADMSG;
        }
}

static int informer_on_watch_data(KubeRequest *req, const void *data, size_t size, void *userdata) {
        Informer *inf = userdata;
        int r;

        (void) req;
        informer_healthy(inf); /* the watch is open */
        if (size == 0)
                return 0;
        r = watch_stream_feed(inf->stream, data, size);
        return r < 0 ? r : 0;
}

static void informer_on_watch_done(KubeRequest *req, KubeResponse *resp, void *userdata) {
        Informer *inf = userdata;
        int r;

        (void) req;
        inf->request = NULL;

        if (resp->error == 0 && now(CLOCK_MONOTONIC) - inf->watch_started < USEC_PER_SEC &&
            inf->stats.events == inf->watch_events) {
                /* Ended at once with nothing in it: something in between is wrong; do not spin. */
                informer_fail(inf, -ECONNRESET, "the watch ended as soon as it started", 0, false);
                return;
        }
        if (resp->error == 0) {
                /* The server ended the watch (its timeout): carry on from where we are. */
                informer_healthy(inf);
                r = informer_watch(inf);
                if (r < 0)
                        informer_fail(inf, r, NULL, 0, false);
                return;
        }
        if (resp->error == -ESTALE) {
                /* 410: the history we would resume from is gone; relist and reconcile. */
                inf->stats.relists_expired++;
                log_debug("Informer %s: resourceVersion %s expired, relisting.", inf->name, strna(inf->rv));
                r = informer_list(inf);
                if (r < 0)
                        informer_fail(inf, r, NULL, 0, true);
                return;
        }
        informer_fail(inf, resp->error,
                      resp->error == -EIO && inf->stream_error[0] ? inf->stream_error : resp->message,
                      resp->retry_after, false);
}

static int informer_watch(Informer *inf) {
        _cleanup_free_ char *q = NULL;
        char timeout[32];
        int r;

        q = strdup(inf->path);
        if (!q)
                return -ENOMEM;
        /* 5–10 minutes, random, so that the watches of many nodes do not reconnect in step. */
        snprintf(timeout, sizeof(timeout), "%u",
                 INFORMER_WATCH_TIMEOUT_MIN_SEC +
                         (unsigned) (random_u64() % (INFORMER_WATCH_TIMEOUT_MIN_SEC + 1)));
        r = query_add(&q, "watch", "1");
        if (r >= 0)
                r = query_add(&q, "allowWatchBookmarks", "true");
        if (r >= 0)
                r = query_add(&q, "resourceVersion", inf->rv ?: "0");
        if (r >= 0)
                r = query_add(&q, "timeoutSeconds", timeout);
        if (r >= 0)
                r = query_add_selectors(&q, inf);
        if (r < 0)
                return r;

        watch_stream_reset(inf->stream);
        inf->stream_error[0] = '\0';
        r = kube_watch(inf->client, q, informer_on_watch_data, informer_on_watch_done, inf, &inf->request);
        if (r < 0)
                return r;
        inf->stats.watches++;
        inf->watch_started = now(CLOCK_MONOTONIC);
        inf->watch_events = inf->stats.events;
        informer_set_state(inf, INFORMER_WATCHING);
        return 0;
}

/* ---- object ------------------------------------------------------------------------------- */

int informer_new(KubeClient *client, const InformerConfig *config, const InformerHandlers *handlers,
                 void *userdata, Informer **ret) {
        _cleanup_(informer_freep) Informer *inf = NULL;
        int r;

        assert(client);
        assert(config && config->name && config->path);
        assert(ret);

        inf = calloc(1, sizeof(*inf));
        if (!inf)
                return -ENOMEM;
        inf->client = client;
        inf->userdata = userdata;
        if (handlers)
                inf->handlers = *handlers;
        inf->name = strdup(config->name);
        inf->path = strdup(config->path);
        if (!inf->name || !inf->path)
                return -ENOMEM;
        if (config->label_selector && !(inf->label_selector = strdup(config->label_selector)))
                return -ENOMEM;
        if (config->field_selector && !(inf->field_selector = strdup(config->field_selector)))
                return -ENOMEM;

        r = kube_cache_new(&inf->cache);
        if (r < 0)
                return r;
        r = watch_stream_new(WATCH_STREAM_MAX_EVENT_SIZE_DEFAULT, informer_on_event, inf, &inf->stream);
        if (r < 0)
                return r;
        r = sd_event_add_time(kube_client_event(client), &inf->timer, CLOCK_MONOTONIC, USEC_INFINITY, 0,
                              informer_on_timer, inf);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(inf->timer, "informer-backoff");

        *ret = TAKE_PTR(inf);
        return 0;
}

Informer *informer_free(Informer *inf) {
        if (!inf)
                return NULL;
        informer_stop(inf);
        sd_event_source_disable_unref(inf->timer);
        watch_stream_free(inf->stream);
        kube_cache_free(inf->cache);
        free(inf->rv);
        free(inf->continue_token);
        free(inf->name);
        free(inf->path);
        free(inf->label_selector);
        free(inf->field_selector);
        free(inf);
        return NULL;
}

int informer_start(Informer *inf) {
        if (inf->state != INFORMER_STOPPED)
                return 0;
        return informer_list(inf);
}

void informer_stop(Informer *inf) {
        inf->request = kube_request_cancel(inf->request);
        if (inf->timer)
                (void) sd_event_source_set_enabled(inf->timer, SD_EVENT_OFF);
        informer_set_state(inf, INFORMER_STOPPED);
}

InformerState informer_state(const Informer *inf) {
        return inf->state;
}

bool informer_has_synced(const Informer *inf) {
        return inf->synced;
}

const char *informer_name(const Informer *inf) {
        return inf->name;
}

const char *informer_resource_version(const Informer *inf) {
        return strempty(inf->rv);
}

int informer_last_error(const Informer *inf, const char **ret_message) {
        if (ret_message)
                *ret_message = inf->last_error < 0 ? inf->last_message : NULL;
        return inf->last_error;
}

KubeCache *informer_cache(Informer *inf) {
        return inf->cache;
}

const InformerStats *informer_stats(const Informer *inf) {
        return &inf->stats;
}

typedef struct StateCount {
        const char *const *states;
        size_t n;
        unsigned *counts;
        unsigned other;
} StateCount;

static int count_one(const cJSON *obj, void *userdata) {
        StateCount *q = userdata;
        const char *state = json_get_string(cJSON_GetObjectItemCaseSensitive(obj, "status"), "state") ?: "";

        for (size_t i = 0; i < q->n; i++)
                if (streq(q->states[i], state)) {
                        q->counts[i]++;
                        return 0;
                }
        q->other++;
        return 0;
}

int informer_count_states(Informer *inf, const char *const *states, size_t n, unsigned *counts) {
        StateCount q = { .states = states, .n = n, .counts = counts };
        int r;

        if (!informer_has_synced(inf))
                return -EAGAIN;
        for (size_t i = 0; i < n; i++)
                counts[i] = 0;
        r = kube_cache_foreach(informer_cache(inf), count_one, &q);
        return r < 0 ? r : (int) q.other;
}
