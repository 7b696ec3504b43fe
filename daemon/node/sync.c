/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../basic/hashmap.h"
#include "../basic/json-util.h"
#include "../basic/string-util.h"
#include "../informer/informer.h"
#include "../log/log.h"
#include "../stream/copy-checkpoint.h"
#include "../stream/copy.h"
#include "../stream/nbd-client.h"
#include "../stream/nbd-protocol.h"
#include "sync.h"

#define REPLICA_PATH     "/apis/hwameistor.io/v1alpha1/localvolumereplicas"
#define POLL_INTERVAL    (500 * USEC_PER_MSEC)
#define PROGRESS_DEFAULT (5 * USEC_PER_SEC)
#define RETRY_MIN        (1 * USEC_PER_SEC)
#define RETRY_MAX        (60 * USEC_PER_SEC)
#define WRITE_RETRY      (5 * USEC_PER_SEC)
#define CHECKPOINT_EVERY (2 * USEC_PER_SEC)

typedef enum JobKind {
        JOB_PUSH,
        JOB_VERIFY,
} JobKind;

/* Work on a thread: a push (connect, copy, flush) or a verification (hash the volume). The loop
 * starts it, polls it, and joins it once finished. */
typedef struct Job {
        JobKind kind;
        char *replica, *identity, *spec; /* spec: the PUSH or SYNC_EXPECT value it serves */
        char *pool, *volume;
        BlockDev *dev;
        Storage *storage;
        SyncAgent *agent; /* counts a push's bytes when it ends (sync_agent_stats()) */
        /* push */
        char *uri, *checkpoint, *source_name;
        NbdTlsContext *tls;
        uint64_t bandwidth;
        bool delta; /* ask the target for block hashes and send only what differs */
        /* verify */
        uint64_t size;
        char expected[COPY_DIGEST_STRING_MAX];

        atomic_bool cancel;
        pthread_t thread;
        bool started;

        pthread_mutex_t lock; /* below */
        CopyProgress progress;
        bool finished;
        int error;
        char message[512];
        CopyResult result;
        uint8_t digest[COPY_DIGEST_SIZE];
} Job;

typedef struct SyncEntry {
        char *name;
        /* target */
        char *exposed; /* the identity the export is exposed to; NULL when not exposed */
        BlockDev *export_dev;
        char *export_pool, *export_volume;
        Job *verify;
        char *answered; /* the SYNC_EXPECT value last answered (its result may not be visible yet) */
        /* source */
        Job *push;
        char *push_done; /* the PUSH value that finished: not started again */
        unsigned attempts;
        usec_t retry_at;
        usec_t last_progress;
        /* annotations to write (merge patch of key → string or null), and the one being written */
        cJSON *patch, *inflight;
        KubeRequest *request;
        usec_t write_after;
} SyncEntry;

struct SyncAgent {
        KubeClient *client;
        Storage *storage;
        EventRecorder *events;
        StreamService *stream;
        char *node, *selector, *checkpoint_dir, *stream_problem, *address, *endpoint;
        uint64_t bandwidth;
        usec_t progress_interval;
        Informer *informer;
        Hashmap *entries; /* name → SyncEntry */
        sd_event_source *poll;
        uint64_t pushed_bytes, pushes_completed, pushes_failed; /* sync_agent_stats() */
};

/* ---- jobs ---------------------------------------------------------------------------------- */

static void sync_stats_job_ended(Job *j);

static Job *job_free(Job *j) {
        if (!j)
                return NULL;
        if (j->started) {
                atomic_store(&j->cancel, true);
                pthread_join(j->thread, NULL);
        }
        sync_stats_job_ended(j);
        if (j->dev) {
                j->dev = blockdev_close(j->dev);
                storage_volume_release(j->storage, j->pool, j->volume);
        }
        nbd_tls_context_free(j->tls);
        pthread_mutex_destroy(&j->lock);
        free(j->replica);
        free(j->identity);
        free(j->spec);
        free(j->pool);
        free(j->volume);
        free(j->uri);
        free(j->checkpoint);
        free(j->source_name);
        free(j);
        return NULL;
}

static bool job_finished(Job *j) {
        bool f;

        pthread_mutex_lock(&j->lock);
        f = j->finished;
        pthread_mutex_unlock(&j->lock);
        return f;
}

static void job_end(Job *j, int error, const char *fmt, ...) _printf_(3, 4);
static void job_end(Job *j, int error, const char *fmt, ...) {
        va_list ap;

        pthread_mutex_lock(&j->lock);
        j->error = error;
        if (fmt) {
                va_start(ap, fmt);
                (void) vsnprintf(j->message, sizeof(j->message), fmt, ap);
                va_end(ap);
        }
        j->finished = true;
        pthread_mutex_unlock(&j->lock);
}

static void job_progress(const CopyProgress *p, void *userdata) {
        Job *j = userdata;

        pthread_mutex_lock(&j->lock);
        j->progress = *p;
        pthread_mutex_unlock(&j->lock);
}

static int push_checkpoint(const CopyCheckpoint *c, void *userdata) {
        Job *j = userdata;
        return copy_checkpoint_save(j->checkpoint, c, j->source_name, j->uri);
}

static void *push_thread(void *userdata) {
        Job *j = userdata;
        _cleanup_(nbd_client_freep) NbdClient *conn = NULL;
        CopyCheckpoint resume;
        CopyOptions o = {
                .progress = job_progress,
                .userdata = j,
                .cancel = &j->cancel,
                .bandwidth = j->bandwidth,
                .checkpoint = push_checkpoint,
                .checkpoint_interval = CHECKPOINT_EVERY,
        };
        NbdUri uri = {};
        CopyResult res;
        int r;

        r = nbd_uri_parse(j->uri, &uri);
        if (r < 0) {
                job_end(j, r, "invalid target %s", j->uri);
                return NULL;
        }
        r = nbd_client_connect(
                &uri,
                &(NbdConnectOptions){ .tls = j->tls,
                                      .delta_block_size = j->delta ? NBD_HWAMEID_DELTA_BLOCK_DEFAULT : 0 },
                &conn);
        nbd_uri_done(&uri);
        if (r < 0) {
                job_end(j, r, "cannot connect to the target %s: %s", j->uri,
                        r == -EKEYREJECTED ? "the target does not accept this migration's key (yet)"
                                           : strerror(-r));
                return NULL;
        }

        {
                _cleanup_free_ char *s = NULL, *d = NULL;
                r = copy_checkpoint_load(j->checkpoint, &resume, &s, &d);
                if (r >= 0 && streq(s, j->source_name) && streq(d, j->uri))
                        o.resume = &resume;
                else if (r != -ENOENT)
                        (void) unlink(j->checkpoint); /* another copy's, or damaged: start over */
        }

        r = copy_run(&(CopyEndpoint){ .dev = j->dev }, &(CopyEndpoint){ .conns = &conn, .n_conns = 1 }, &o,
                     &res);
        if (r == -ESTALE && o.resume) {
                /* The source's size changed since: that checkpoint is worthless. */
                (void) unlink(j->checkpoint);
                o.resume = NULL;
                r = copy_run(&(CopyEndpoint){ .dev = j->dev },
                             &(CopyEndpoint){ .conns = &conn, .n_conns = 1 }, &o, &res);
        }
        pthread_mutex_lock(&j->lock);
        j->result = res;
        pthread_mutex_unlock(&j->lock);
        if (r < 0)
                job_end(j, r, "%s %s failed at offset %" PRIu64 ": %s", strna(res.failed_side),
                        strna(res.failed_op), res.failed_offset, strerror(-r));
        else
                job_end(j, 0, NULL);
        return NULL;
}

static void *verify_thread(void *userdata) {
        Job *j = userdata;
        CopyOptions o = { .progress = job_progress, .userdata = j, .cancel = &j->cancel };
        int r;

        r = copy_digest(&(CopyEndpoint){ .dev = j->dev }, j->size, &o, j->digest);
        if (r < 0)
                job_end(j, r, "hashing the volume failed: %s", strerror(-r));
        else
                job_end(j, 0, NULL);
        return NULL;
}

static int job_start(Job *j) {
        int r;

        r = -pthread_create(&j->thread, NULL, j->kind == JOB_PUSH ? push_thread : verify_thread, j);
        if (r < 0)
                return r;
        j->started = true;
        return 0;
}

static int job_new(SyncAgent *a, JobKind kind, const char *replica, const char *identity, const char *spec,
                   const char *pool, const char *volume, Job **ret) {
        Job *j = calloc(1, sizeof(*j));
        int r;

        if (!j)
                return -ENOMEM;
        pthread_mutex_init(&j->lock, NULL);
        j->kind = kind;
        j->storage = a->storage;
        j->agent = a;
        j->replica = strdup(replica);
        j->identity = strdup(identity);
        j->spec = strdup(spec);
        j->pool = strdup(pool);
        j->volume = strdup(volume);
        if (!j->replica || !j->identity || !j->spec || !j->pool || !j->volume) {
                job_free(j);
                return -ENOMEM;
        }
        r = storage_volume_open(a->storage, pool, volume, BLOCKDEV_READ_ONLY, &j->dev);
        if (r < 0) {
                job_free(j);
                return r;
        }
        *ret = j;
        return 0;
}

/* ---- entries and annotation writes --------------------------------------------------------- */

static void sync_entry_withdraw(SyncAgent *a, SyncEntry *e);

static SyncEntry *sync_entry_free(SyncAgent *a, SyncEntry *e) {
        if (!e)
                return NULL;
        sync_entry_withdraw(a, e);
        job_free(e->verify);
        job_free(e->push);
        kube_request_cancel(e->request);
        cJSON_Delete(e->patch);
        cJSON_Delete(e->inflight);
        free(e->push_done);
        free(e->answered);
        free(e->name);
        free(e);
        return NULL;
}

static SyncEntry *sync_entry_get(SyncAgent *a, const char *name) {
        SyncEntry *e = hashmap_get(a->entries, name);

        if (e)
                return e;
        e = calloc(1, sizeof(*e));
        if (!e || !(e->name = strdup(name)) || hashmap_put(a->entries, e->name, e) < 0) {
                if (e)
                        free(e->name);
                free(e);
                return NULL;
        }
        return e;
}

/* Adds key (value, or removal with NULL) to the entry's pending annotation patch. */
static int sync_annotate(SyncEntry *e, const char *key, const char *value) {
        if (!e->patch) {
                e->patch = cJSON_CreateObject();
                if (!e->patch)
                        return -ENOMEM;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(e->patch, key);
        if (!(value ? cJSON_AddStringToObject(e->patch, key, value) : cJSON_AddNullToObject(e->patch, key)))
                return -ENOMEM;
        return 0;
}

static int sync_annotate_json(SyncEntry *e, const char *key, cJSON *value) {
        _cleanup_free_ char *s = cJSON_PrintUnformatted(value);

        cJSON_Delete(value);
        if (!s)
                return -ENOMEM;
        return sync_annotate(e, key, s);
}

static void sync_arm_poll(SyncAgent *a) {
        (void) sd_event_source_set_enabled(a->poll, SD_EVENT_ON);
}

static void sync_flush(SyncAgent *a, SyncEntry *e);

static void sync_on_written(KubeRequest *req, KubeResponse *resp, void *userdata) {
        SyncEntry *e = userdata;
        _cleanup_json_ cJSON *sent = TAKE_PTR(e->inflight);
        cJSON *i;

        (void) req;
        e->request = NULL;
        if (resp->error >= 0 || resp->error == -ENOENT)
                return;
        log_ratelimit(LOG_WARNING, USEC_PER_MINUTE, 5, "Replica %s: writing annotations failed: %s", e->name,
                      resp->message);
        e->write_after = now(CLOCK_MONOTONIC) + WRITE_RETRY;
        /* What was not written goes again, unless something newer replaced it meanwhile. */
        cJSON_ArrayForEach(i, sent) if (!e->patch || !cJSON_GetObjectItemCaseSensitive(e->patch, i->string))(
                void) sync_annotate(e, i->string, cJSON_IsString(i) ? i->valuestring : NULL);
}

/* Sends the pending patch of an entry (one request per entry at a time). A failed write is merged
 * back and retried; the poll timer brings us back. */
static void sync_flush(SyncAgent *a, SyncEntry *e) {
        _cleanup_json_ cJSON *body = NULL;
        _cleanup_free_ char *path = NULL;
        cJSON *meta;
        int r;

        if (!e->patch || e->request || now(CLOCK_MONOTONIC) < e->write_after)
                return;
        body = cJSON_CreateObject();
        meta = body ? cJSON_AddObjectToObject(body, "metadata") : NULL;
        if (!meta || asprintf(&path, REPLICA_PATH "/%s", e->name) < 0)
                return;
        cJSON_AddItemToObject(meta, "annotations", cJSON_Duplicate(e->patch, true));
        r = kube_request(a->client, KUBE_PATCH_MERGE, path, body, sync_on_written, e, &e->request);
        if (r < 0) {
                e->write_after = now(CLOCK_MONOTONIC) + WRITE_RETRY;
                return;
        }
        /* Kept until the answer: a failure puts it back for another try. */
        e->inflight = TAKE_PTR(e->patch);
}

/* ---- target side --------------------------------------------------------------------------- */

static void sync_entry_withdraw(SyncAgent *a, SyncEntry *e) {
        if (!e->exposed)
                return;
        if (a->stream)
                (void) stream_service_withdraw(a->stream, e->name);
        e->export_dev = blockdev_close(e->export_dev);
        storage_volume_release(a->storage, e->export_pool, e->export_volume);
        log_info("Replica %s: no longer exposed to %s.", e->name, e->exposed);
        e->exposed = mfree(e->exposed);
        e->export_pool = mfree(e->export_pool);
        e->export_volume = mfree(e->export_volume);
}

static int sync_entry_expose(SyncAgent *a, SyncEntry *e, const char *identity, const char *pool,
                             const char *volume) {
        int r;

        if (e->exposed && streq(e->exposed, identity))
                return 0;
        sync_entry_withdraw(a, e);
        if (!a->stream)
                return -ENOTCONN;
        r = storage_volume_open(a->storage, pool, volume, 0, &e->export_dev);
        if (r < 0)
                return r;
        e->export_pool = strdup(pool);
        e->export_volume = strdup(volume);
        e->exposed = strdup(identity);
        if (!e->export_pool || !e->export_volume || !e->exposed) {
                r = -ENOMEM;
                goto fail;
        }
        r = stream_service_expose(a->stream, identity, e->name, e->export_dev, false);
        if (r < 0)
                goto fail;
        log_info("Replica %s: exposed to migration identity %s.", e->name, identity);
        return 0;
fail:
        e->export_dev = blockdev_close(e->export_dev);
        storage_volume_release(a->storage, pool, volume);
        e->exposed = mfree(e->exposed);
        e->export_pool = mfree(e->export_pool);
        e->export_volume = mfree(e->export_volume);
        return r;
}

static bool valid_identity(const char *s) {
        size_t n = s ? strlen(s) : 0;
        return n > 0 && n <= 200 &&
               strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n &&
               s[0] != '.';
}

static void sync_target(SyncAgent *a, SyncEntry *e, const cJSON *obj, const char *pool, const char *volume,
                        bool usable) {
        const cJSON *ann = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "annotations");
        const char *identity = json_get_string(ann, SYNC_PENDING_ANNOTATION);
        const char *expect = json_get_string(ann, SYNC_EXPECT_ANNOTATION);
        const char *result = json_get_string(ann, SYNC_RESULT_ANNOTATION);
        int r;

        if (!expect)
                e->answered = mfree(e->answered);
        if (!identity || !usable) {
                sync_entry_withdraw(a, e);
                e->verify = job_free(e->verify);
                return;
        }
        if (!valid_identity(identity)) {
                log_ratelimit(LOG_WARNING, 10 * USEC_PER_MINUTE, 1,
                              "Replica %s: invalid migration identity '%s'.", e->name, identity);
                return;
        }

        if (expect) {
                _cleanup_json_ cJSON *x = cJSON_Parse(expect), *res = result ? cJSON_Parse(result) : NULL;
                const char *digest = json_get_string(x, "digest");
                uint64_t size = 0;

                if (!digest || strlen(digest) != 2 * COPY_DIGEST_SIZE ||
                    json_get_u64(x, "size", &size) < 0 || size == 0) {
                        log_ratelimit(LOG_WARNING, 10 * USEC_PER_MINUTE, 1, "Replica %s: malformed %s: %s",
                                      e->name, SYNC_EXPECT_ANNOTATION, expect);
                        return;
                }
                if (streq_ptr(json_get_string(res, "expected"), digest) || streq_ptr(e->answered, expect))
                        return; /* answered; the leader acts on the result */
                if (e->verify && streq(e->verify->spec, expect))
                        return; /* hashing */
                sync_entry_withdraw(a, e);
                e->verify = job_free(e->verify);
                r = job_new(a, JOB_VERIFY, e->name, identity, expect, pool, volume, &e->verify);
                if (r >= 0) {
                        e->verify->size = size;
                        snprintf(e->verify->expected, sizeof(e->verify->expected), "%s", digest);
                        r = job_start(e->verify);
                }
                if (r < 0) {
                        log_warning_errno(r, "Replica %s: cannot verify the copy: %m", e->name);
                        e->verify = job_free(e->verify);
                        return;
                }
                log_info("Replica %s: the source is done; verifying %" PRIu64 " bytes against xxh3-128 %s.",
                         e->name, size, digest);
                sync_arm_poll(a);
                return;
        }

        r = sync_entry_expose(a, e, identity, pool, volume);
        if (r < 0) {
                log_ratelimit_errno(LOG_WARNING, r, 10 * USEC_PER_MINUTE, 1,
                                    "Replica %s: cannot receive data for %s: %s", e->name, identity,
                                    r == -ENOTCONN ? strna(a->stream_problem) : strerror(-r));
                return;
        }
        if (a->endpoint && !streq_ptr(json_get_string(ann, SYNC_ENDPOINT_ANNOTATION), a->endpoint))
                (void) sync_annotate(e, SYNC_ENDPOINT_ANNOTATION, a->endpoint);
}

static void sync_verify_finished(SyncAgent *a, SyncEntry *e, const cJSON *obj) {
        Job *j = TAKE_PTR(e->verify);
        char got[COPY_DIGEST_STRING_MAX];
        bool ok;
        cJSON *res;

        pthread_join(j->thread, NULL);
        j->started = false;
        if (j->error != -ECANCELED)
                (void) free_and_strdup(&e->answered, j->spec);
        res = cJSON_CreateObject();
        if (!res)
                goto out;
        if (j->error < 0) {
                if (j->error == -ECANCELED)
                        goto drop;
                cJSON_AddStringToObject(res, "expected", j->expected);
                cJSON_AddBoolToObject(res, "verified", false);
                cJSON_AddStringToObject(res, "message", j->message);
                log_warning("Replica %s: %s", e->name, j->message);
        } else {
                copy_digest_to_string(j->digest, got);
                ok = streq(got, j->expected);
                cJSON_AddStringToObject(res, "digest", got);
                cJSON_AddStringToObject(res, "expected", j->expected);
                cJSON_AddBoolToObject(res, "verified", ok);
                if (ok) {
                        cJSON_AddStringToObject(res, "message", "the data matches the source");
                        (void) sync_annotate(e, SYNC_PENDING_ANNOTATION, NULL);
                        (void) sync_annotate(e, SYNC_ENDPOINT_ANNOTATION, NULL);
                        (void) sync_annotate(e, SYNC_DIGEST_ANNOTATION, got);
                        log_info("Replica %s: verified, xxh3-128 %s.", e->name, got);
                        if (obj)
                                event_recorder_emit(a->events, "hwameistor.io/v1alpha1",
                                                    "LocalVolumeReplica", obj, EVENT_NORMAL, "Synced",
                                                    "Data verified: xxh3-128 %s", got);
                } else {
                        cJSON_AddStringToObject(res, "message", "the data differs from the source");
                        log_warning("Replica %s: verification failed: xxh3-128 %s, the source has %s.",
                                    e->name, got, j->expected);
                        if (obj)
                                event_recorder_emit(
                                        a->events, "hwameistor.io/v1alpha1", "LocalVolumeReplica", obj,
                                        EVENT_WARNING, "SyncVerifyFailed",
                                        "xxh3-128 %s differs from the source's %s", got, j->expected);
                }
        }
        (void) sync_annotate_json(e, SYNC_RESULT_ANNOTATION, TAKE_PTR(res));
drop:
        cJSON_Delete(res);
out:
        job_free(j);
}

/* ---- source side --------------------------------------------------------------------------- */

static char *checkpoint_path(SyncAgent *a, const char *identity) {
        char *p;
        return asprintf(&p, "%s/%s.checkpoint", a->checkpoint_dir, identity) < 0 ? NULL : p;
}

static cJSON *push_status_json(SyncEntry *e, Job *j, const char *state, const char *message) {
        cJSON *o = cJSON_CreateObject();
        CopyProgress p;
        CopyResult res;
        double rate;

        if (!o)
                return NULL;
        pthread_mutex_lock(&j->lock);
        p = j->progress;
        res = j->result;
        pthread_mutex_unlock(&j->lock);
        /* This run's bytes over this run's time: a resumed push counts from its resume point. */
        rate = p.elapsed > 0 && p.done >= p.resumed_from
                       ? (double) (p.done - p.resumed_from) / ((double) p.elapsed / USEC_PER_SEC)
                       : 0;
        cJSON_AddStringToObject(o, "identity", j->identity);
        cJSON_AddStringToObject(o, "state", state);
        cJSON_AddNumberToObject(o, "bytesTotal", (double) (p.total ?: res.size));
        cJSON_AddNumberToObject(o, "bytesDone", (double) (streq(state, "Done") ? res.size : p.done));
        cJSON_AddNumberToObject(o, "bytesSent", (double) (streq(state, "Done") ? res.sent : p.sent));
        cJSON_AddNumberToObject(o, "bytesPerSecond", (double) (uint64_t) rate);
        if (rate > 0 && p.total > p.done && !streq(state, "Done"))
                cJSON_AddNumberToObject(o, "etaSeconds",
                                        (double) (uint64_t) ((double) (p.total - p.done) / rate));
        cJSON_AddNumberToObject(o, "attempts", e->attempts);
        if (j->kind == JOB_PUSH) {
                _cleanup_json_ cJSON *spec = cJSON_Parse(j->spec);
                uint64_t round = 0;
                if (json_get_u64(spec, "round", &round) >= 0)
                        cJSON_AddNumberToObject(o, "round", (double) round);
        }
        if (p.resumed_from > 0 || res.resumed_from > 0)
                cJSON_AddNumberToObject(o, "resumedFrom", (double) MAX(p.resumed_from, res.resumed_from));
        if (streq(state, "Done")) {
                char d[COPY_DIGEST_STRING_MAX];
                cJSON_AddStringToObject(o, "digest", copy_digest_to_string(res.digest, d));
        }
        if (message)
                cJSON_AddStringToObject(o, "message", message);
        return o;
}

static void sync_push_finished(SyncAgent *a, SyncEntry *e, const cJSON *obj) {
        Job *j = TAKE_PTR(e->push);

        pthread_join(j->thread, NULL);
        j->started = false;
        if (j->error == -ECANCELED) {
                job_free(j);
                return;
        }
        if (j->error < 0) {
                usec_t delay = MIN(RETRY_MIN << MIN(e->attempts, 16U), RETRY_MAX);
                char d[FORMAT_TIMESPAN_MAX];

                e->retry_at = now(CLOCK_MONOTONIC) + delay;
                a->pushes_failed++;
                log_warning("Replica %s: push to %s failed (attempt %u): %s; retrying in %s.", e->name,
                            j->uri, e->attempts, j->message, format_timespan(d, sizeof(d), delay));
                (void) sync_annotate_json(e, PUSH_STATUS_ANNOTATION,
                                          push_status_json(e, j, "Failed", j->message));
        } else {
                char d[COPY_DIGEST_STRING_MAX];
                /* Made while the job still has its spec: the status names the spec's round. */
                cJSON *done = push_status_json(e, j, "Done", NULL);

                free(e->push_done);
                e->push_done = TAKE_PTR(j->spec);
                e->attempts = 0;
                a->pushes_completed++;
                (void) unlink(j->checkpoint);
                log_info("Replica %s: pushed %" PRIu64 " bytes (%" PRIu64 " sent) to %s, xxh3-128 %s.",
                         e->name, j->result.size, j->result.sent, j->uri,
                         copy_digest_to_string(j->result.digest, d));
                if (obj)
                        event_recorder_emit(a->events, "hwameistor.io/v1alpha1", "LocalVolumeReplica", obj,
                                            EVENT_NORMAL, "Pushed", "Data pushed to %s: xxh3-128 %s", j->uri,
                                            d);
                (void) sync_annotate_json(e, PUSH_STATUS_ANNOTATION, done);
        }
        job_free(j);
}

static void sync_source(SyncAgent *a, SyncEntry *e, const cJSON *obj, const char *pool, const char *volume,
                        bool usable) {
        const cJSON *ann = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "annotations");
        const char *push = json_get_string(ann, PUSH_ANNOTATION);
        _cleanup_json_ cJSON *spec = NULL;
        const char *identity, *endpoint, *export;
        _cleanup_free_ char *uri = NULL;
        Job *j = NULL;
        int r;

        if (!push || !usable) {
                if (e->push) {
                        char *cp = TAKE_PTR(e->push->checkpoint);
                        bool removed = !push;
                        e->push = job_free(e->push);
                        if (removed && cp)
                                (void) unlink(cp);
                        free(cp);
                }
                if (!push) {
                        e->push_done = mfree(e->push_done);
                        e->attempts = 0;
                        if (json_get_string(ann, PUSH_STATUS_ANNOTATION))
                                (void) sync_annotate(e, PUSH_STATUS_ANNOTATION, NULL);
                }
                return;
        }
        if (e->push && streq(e->push->spec, push))
                return; /* running */
        if (streq_ptr(e->push_done, push))
                return;
        if (e->push) /* the request changed: the old push goes */
                e->push = job_free(e->push);
        if (now(CLOCK_MONOTONIC) < e->retry_at)
                return; /* the poll timer comes back */

        spec = cJSON_Parse(push);
        identity = json_get_string(spec, "identity");
        endpoint = json_get_string(spec, "endpoint");
        export = json_get_string(spec, "export");
        if (!valid_identity(identity) || isempty(endpoint) || strpbrk(endpoint, "/?#@ ") ||
            isempty(export) || strpbrk(export, "/?#@% ")) {
                log_ratelimit(LOG_WARNING, 10 * USEC_PER_MINUTE, 1, "Replica %s: malformed %s: %s", e->name,
                              PUSH_ANNOTATION, push);
                return;
        }
        if (!a->stream) {
                _cleanup_json_ cJSON *st = cJSON_CreateObject();
                char msg[512];

                snprintf(msg, sizeof(msg), "this node cannot send: %s", strna(a->stream_problem));
                if (!st || !cJSON_AddStringToObject(st, "identity", identity) ||
                    !cJSON_AddStringToObject(st, "state", "Failed") ||
                    !cJSON_AddStringToObject(st, "message", msg))
                        return;
                _cleanup_free_ char *text = cJSON_PrintUnformatted(st);
                if (text && !streq_ptr(json_get_string(ann, PUSH_STATUS_ANNOTATION), text))
                        (void) sync_annotate(e, PUSH_STATUS_ANNOTATION, text);
                return;
        }
        if (asprintf(&uri, "%s://%s@%s/%s", stream_service_has_keys(a->stream) ? "nbds" : "nbd", identity,
                     endpoint, export) < 0)
                return;

        e->attempts++;
        r = job_new(a, JOB_PUSH, e->name, identity, push, pool, volume, &j);
        if (r >= 0) {
                j->uri = TAKE_PTR(uri);
                uint64_t round = 0;

                j->bandwidth = a->bandwidth;
                /* The first attempt of a first round fills a new replica: hashing what it holds
                 * (nothing of the volume's) costs the target a full read for nothing, and a
                 * checkpoint, not a delta, is what lets an interrupted push go on. A retry that
                 * starts over, or another round into the same replica, sends only what differs. */
                (void) json_get_u64(spec, "round", &round);
                j->delta = round > 1 || e->attempts > 1;
                j->checkpoint = checkpoint_path(a, identity);
                r = asprintf(&j->source_name, "%s/%s", pool, volume) < 0 ? -ENOMEM : 0;
                if (r >= 0 && !j->checkpoint)
                        r = -ENOMEM;
                if (r >= 0 && startswith(j->uri, "nbds:"))
                        r = stream_service_client_tls(a->stream, identity, &j->tls);
                if (r >= 0)
                        r = job_start(j);
        }
        if (r < 0) {
                e->retry_at = now(CLOCK_MONOTONIC) + MIN(RETRY_MIN << MIN(e->attempts, 16U), RETRY_MAX);
                log_warning_errno(r, "Replica %s: cannot start the push: %m", e->name);
                job_free(j);
                sync_arm_poll(a);
                return;
        }
        e->push = j;
        e->last_progress = now(CLOCK_MONOTONIC);
        log_info("Replica %s: pushing to %s (attempt %u).", e->name, j->uri, e->attempts);
        (void) sync_annotate_json(e, PUSH_STATUS_ANNOTATION, push_status_json(e, j, "Copying", NULL));
        sync_arm_poll(a);
}

/* ---- reconcile ----------------------------------------------------------------------------- */

static void sync_reconcile(SyncAgent *a, const char *name) {
        _cleanup_json_ cJSON *obj = NULL;
        const cJSON *meta, *spec, *status;
        const char *pool, *volume;
        bool deleting, delete_requested = false, usable;
        SyncEntry *e;
        int r;

        r = kube_cache_get(informer_cache(a->informer), NULL, name, &obj);
        e = hashmap_get(a->entries, name);
        if (r <= 0) {
                if (e) {
                        hashmap_remove(a->entries, name);
                        sync_entry_free(a, e);
                }
                return;
        }
        meta = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
        spec = cJSON_GetObjectItemCaseSensitive(obj, "spec");
        status = cJSON_GetObjectItemCaseSensitive(obj, "status");
        pool = json_get_string(spec, "poolName");
        volume = json_get_string(spec, "volumeName");
        deleting = cJSON_GetObjectItemCaseSensitive(meta, "deletionTimestamp") != NULL;
        (void) json_get_bool(spec, "delete", &delete_requested);
        usable = !deleting && !delete_requested && streq_ptr(json_get_string(status, "state"), "Ready") &&
                 pool && volume && storage_find_volume(a->storage, pool, volume);

        e = sync_entry_get(a, name);
        if (!e)
                return;
        LOG_CONTEXT_PUSH_FIELD("HWAMEID_REPLICA", name);
        sync_target(a, e, obj, pool, volume, usable);
        sync_source(a, e, obj, pool, volume, usable);
        sync_flush(a, e);
}

static int sync_reconcile_json(const char *key, const char *rv, const char *json, void *userdata) {
        (void) rv, (void) json;
        sync_reconcile(userdata, key);
        return 0;
}

static void sync_reconcile_all(SyncAgent *a) {
        (void) kube_cache_foreach_json(informer_cache(a->informer), sync_reconcile_json, a);
}

/* Polls the jobs: progress, ends, retries, pending writes. Off when there is nothing to watch. */
static int sync_on_poll(sd_event_source *s, uint64_t usec, void *userdata) {
        SyncAgent *a = userdata;
        bool busy = false, again = false;
        SyncEntry *e;
        usec_t t = now(CLOCK_MONOTONIC);

        HASHMAP_FOREACH(e, a->entries) {
                _cleanup_json_ cJSON *obj = NULL;

                (void) kube_cache_get(informer_cache(a->informer), NULL, e->name, &obj);
                if (e->verify && job_finished(e->verify))
                        sync_verify_finished(a, e, obj);
                if (e->push && job_finished(e->push)) {
                        sync_push_finished(a, e, obj);
                        again = true;
                } else if (e->push && t - e->last_progress >= a->progress_interval) {
                        e->last_progress = t;
                        (void) sync_annotate_json(e, PUSH_STATUS_ANNOTATION,
                                                  push_status_json(e, e->push, "Copying", NULL));
                }
                if (!e->push && e->retry_at > 0 && t >= e->retry_at) {
                        e->retry_at = 0;
                        again = true;
                }
                sync_flush(a, e);
                busy = busy || e->verify || e->push || e->patch || e->request || e->retry_at > 0;
        }
        if (again)
                sync_reconcile_all(a);
        (void) sd_event_source_set_time(s, usec + POLL_INTERVAL);
        if (!busy && !again)
                (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
        return 0;
}

static void sync_on_object(Informer *inf, const cJSON *obj, void *userdata) {
        SyncAgent *a = userdata;
        (void) inf;
        sync_reconcile(a, json_get_string(cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "name"));
        sync_arm_poll(a);
}

static void sync_on_updated(Informer *inf, const cJSON *old, const cJSON *obj, void *userdata) {
        (void) old;
        sync_on_object(inf, obj, userdata);
}

static void sync_on_deleted(Informer *inf, const cJSON *obj, void *userdata) {
        SyncAgent *a = userdata;
        const char *name = json_get_string(cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "name");
        SyncEntry *e = name ? hashmap_remove(a->entries, name) : NULL;

        (void) inf;
        if (e && e->push && e->push->checkpoint)
                (void) unlink(e->push->checkpoint);
        sync_entry_free(a, e);
}

void sync_agent_storage_changed(SyncAgent *a) {
        sync_reconcile_all(a);
        sync_arm_poll(a);
}

void sync_agent_set_address(SyncAgent *a, const char *ip) {
        _cleanup_free_ char *ep = NULL;

        if (!a->stream || isempty(ip) || streq_ptr(a->address, ip))
                return;
        if (asprintf(&ep, strchr(ip, ':') ? "[%s]:%d" : "%s:%d", ip, stream_service_port(a->stream)) < 0 ||
            free_and_strdup(&a->address, ip) < 0)
                return;
        free(a->endpoint);
        a->endpoint = TAKE_PTR(ep);
        sync_reconcile_all(a);
}

int sync_agent_status_json(SyncAgent *a, cJSON **ret) {
        _cleanup_json_ cJSON *o = cJSON_CreateObject();
        cJSON *pushes, *exports;
        SyncEntry *e;

        pushes = o ? cJSON_AddArrayToObject(o, "pushes") : NULL;
        exports = o ? cJSON_AddArrayToObject(o, "exports") : NULL;
        if (!pushes || !exports)
                return -ENOMEM;
        HASHMAP_FOREACH(e, a->entries) {
                if (e->push) {
                        cJSON *p = push_status_json(e, e->push, "Copying", NULL);
                        if (!p)
                                return -ENOMEM;
                        cJSON_AddStringToObject(p, "replica", e->name);
                        cJSON_AddStringToObject(p, "target", e->push->uri);
                        cJSON_AddItemToArray(pushes, p);
                }
                if (e->exposed || e->verify) {
                        cJSON *x = cJSON_CreateObject();
                        if (!x)
                                return -ENOMEM;
                        cJSON_AddItemToArray(exports, x);
                        if (!cJSON_AddStringToObject(x, "replica", e->name) ||
                            !cJSON_AddStringToObject(x, "identity", e->exposed ?: e->verify->identity) ||
                            !cJSON_AddStringToObject(x, "state", e->verify ? "Verifying" : "Receiving"))
                                return -ENOMEM;
                }
        }
        *ret = TAKE_PTR(o);
        return 0;
}

int sync_agent_new(KubeClient *client, Storage *storage, EventRecorder *events,
                   const SyncAgentConfig *config, SyncAgent **ret) {
        static const InformerHandlers handlers = {
                .added = sync_on_object,
                .updated = sync_on_updated,
                .deleted = sync_on_deleted,
        };
        _cleanup_(sync_agent_freep) SyncAgent *a = NULL;
        int r;

        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->client = client;
        a->storage = storage;
        a->events = events;
        a->stream = config->stream;
        a->bandwidth = config->bandwidth;
        a->progress_interval = config->progress_interval ?: PROGRESS_DEFAULT;
        a->node = strdup(config->node_name);
        a->checkpoint_dir = strdup(config->checkpoint_dir);
        if (!a->node || !a->checkpoint_dir ||
            asprintf(&a->selector, "spec.nodeName=%s", config->node_name) < 0 ||
            (config->stream_problem && !(a->stream_problem = strdup(config->stream_problem))))
                return -ENOMEM;
        if (mkdir(a->checkpoint_dir, 0700) < 0 && errno != EEXIST)
                return log_error_errno(errno, "Cannot create the checkpoint directory %s: %m",
                                       a->checkpoint_dir);
        r = hashmap_new(&a->entries);
        if (r < 0)
                return r;
        r = sd_event_add_time_relative(kube_client_event(client), &a->poll, CLOCK_MONOTONIC, POLL_INTERVAL,
                                       0, sync_on_poll, a);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(a->poll, SD_EVENT_OFF);
        (void) sd_event_source_set_description(a->poll, "sync-poll");
        /* The same replicas as the replica controller: this node's, filtered by the API server. */
        r = informer_new(client,
                         &(InformerConfig){ .name = "replica-sync",
                                            .path = REPLICA_PATH,
                                            .field_selector = a->selector },
                         &handlers, a, &a->informer);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(a);
        return 0;
}

SyncAgent *sync_agent_free(SyncAgent *a) {
        SyncEntry *e;

        if (!a)
                return NULL;
        informer_free(a->informer);
        HASHMAP_FOREACH(e, a->entries)
        sync_entry_free(a, e); /* the map stores the entries' own names: freed with them */
        hashmap_free(a->entries);
        sd_event_source_disable_unref(a->poll);
        free(a->node);
        free(a->selector);
        free(a->checkpoint_dir);
        free(a->stream_problem);
        free(a->address);
        free(a->endpoint);
        free(a);
        return NULL;
}

int sync_agent_start(SyncAgent *a) {
        return informer_start(a->informer);
}

/* ---- metrics (read-only, on the loop) ------------------------------------------------------ */

/* A push's bytes move from "running" to the agent's total when its job goes, however it ended
 * (done, failed, cancelled), so the total never goes back. */
static void sync_stats_job_ended(Job *j) {
        if (j->kind != JOB_PUSH || !j->agent)
                return;
        pthread_mutex_lock(&j->lock);
        j->agent->pushed_bytes += MAX(j->progress.sent, j->result.sent);
        pthread_mutex_unlock(&j->lock);
}

void sync_agent_stats(SyncAgent *a, SyncAgentStats *ret) {
        SyncEntry *e;

        *ret = (SyncAgentStats){
                .bytes_pushed = a->pushed_bytes,
                .pushes_completed = a->pushes_completed,
                .pushes_failed = a->pushes_failed,
        };
        HASHMAP_FOREACH(e, a->entries) {
                CopyProgress p;

                if (!e->push)
                        continue;
                pthread_mutex_lock(&e->push->lock);
                p = e->push->progress;
                pthread_mutex_unlock(&e->push->lock);
                ret->pushes_running++;
                ret->bytes_pushed += p.sent;
                if (p.elapsed > 0)
                        ret->bytes_per_second += (uint64_t) ((double) p.sent * USEC_PER_SEC /
                                                             (double) p.elapsed);
        }
}
