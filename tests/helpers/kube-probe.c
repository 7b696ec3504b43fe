/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kube-probe: drives the daemon's Kubernetes client layer from the command line, so that the
 * integration tests can check it against the stand-in API server. It prints one JSON object per
 * line on stdout.
 *
 *   kube-probe KUBECONFIG request METHOD PATH [BODY]    one request, then its outcome
 *   kube-probe KUBECONFIG inform PATH [FIELDSEL [LABELSEL]]
 *           an informer; every handler call as it happens; on SIGTERM the final cache and counters
 *   kube-probe KUBECONFIG bump PATH LABEL
 *           read-modify-write: sets label LABEL to one more than it was, retrying on conflicts
 *   kube-probe KUBECONFIG event NAMESPACE POD MESSAGE COUNT
 *           records the same Warning event about a pod COUNT times, then prints the recorder's counters
 *   kube-probe KUBECONFIG elect NAMESPACE NAME IDENTITY
 *           leader election (1 s / 0.6 s / 0.2 s); {"leading":…} on every change; SIGTERM releases
 */

#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "basic/json-util.h"
#include "basic/string-util.h"
#include "election/lease.h"
#include "informer/informer.h"
#include "kube/kube-client.h"
#include "kube/kube-events.h"
#include "kube/kube-update.h"
#include "kube/kubeconfig.h"
#include "log/log.h"

static sd_event *event;
static int exit_code;

static void print_json(cJSON *o) {
        char *s = cJSON_PrintUnformatted(o);

        if (s) {
                puts(s);
                fflush(stdout);
        }
        free(s);
        cJSON_Delete(o);
}

static void on_response(KubeRequest *req, KubeResponse *resp, void *userdata) {
        cJSON *o = cJSON_CreateObject();

        (void) req, (void) userdata;
        cJSON_AddNumberToObject(o, "error", resp->error);
        cJSON_AddStringToObject(o, "errno", resp->error < 0 ? strerrorname_np(-resp->error) : "");
        cJSON_AddNumberToObject(o, "http", (double) resp->http_code);
        if (resp->reason)
                cJSON_AddStringToObject(o, "reason", resp->reason);
        if (resp->message)
                cJSON_AddStringToObject(o, "message", resp->message);
        cJSON_AddNumberToObject(o, "retryAfterMs", (double) (resp->retry_after / USEC_PER_MSEC));
        if (resp->body)
                cJSON_AddItemToObject(o, "body", TAKE_PTR(resp->body));
        print_json(o);
        sd_event_exit(event, 0);
}

static void emit(const char *what, const cJSON *obj) {
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
        cJSON *o = cJSON_CreateObject();

        cJSON_AddStringToObject(o, "event", what);
        if (meta) {
                cJSON_AddStringToObject(o, "name", strempty(json_get_string(meta, "name")));
                cJSON_AddStringToObject(o, "rv", strempty(json_get_string(meta, "resourceVersion")));
        }
        print_json(o);
}

static void on_added(Informer *inf, const cJSON *obj, void *userdata) {
        emit("added", obj);
}
static void on_updated(Informer *inf, const cJSON *old, const cJSON *obj, void *userdata) {
        emit("updated", obj);
}
static void on_deleted(Informer *inf, const cJSON *obj, void *userdata) {
        emit("deleted", obj);
}
static void on_synced(Informer *inf, void *userdata) {
        emit("synced", NULL);
}

static int add_name(const char *key, const char *rv, const char *json, void *userdata) {
        cJSON *a = userdata;
        char buf[512];

        snprintf(buf, sizeof(buf), "%s@%s", key, rv);
        cJSON_AddItemToArray(a, cJSON_CreateString(buf));
        return 0;
}

static void print_informer_final(Informer *inf) {
        const InformerStats *st = informer_stats(inf);
        cJSON *o = cJSON_CreateObject(), *a = cJSON_CreateArray();

        kube_cache_foreach_json(informer_cache(inf), add_name, a);
        cJSON_AddItemToObject(o, "cache", a);
        cJSON_AddNumberToObject(o, "lists", st->lists);
        cJSON_AddNumberToObject(o, "watches", st->watches);
        cJSON_AddNumberToObject(o, "relistsExpired", st->relists_expired);
        cJSON_AddNumberToObject(o, "errors", st->errors);
        cJSON_AddStringToObject(o, "rv", informer_resource_version(inf));
        cJSON_AddNumberToObject(o, "objects", (double) kube_cache_size(informer_cache(inf)));
        cJSON_AddNumberToObject(o, "cacheBytes", (double) kube_cache_memory(informer_cache(inf)));
        print_json(o);
}

static void on_leading(LeaderElector *le, void *userdata) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddBoolToObject(o, "leading", true);
        print_json(o);
}
static void on_stopped(LeaderElector *le, void *userdata) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddBoolToObject(o, "leading", false);
        print_json(o);
}
static void on_released(void *userdata) {
        sd_event_exit(event, 0);
}

static EventRecorder *recorder;
static KubeUpdate *update;
static const char *bump_label;

static int bump(cJSON *obj, void *userdata) {
        cJSON *meta = cJSON_GetObjectItem(obj, "metadata"), *labels = cJSON_GetObjectItem(meta, "labels");
        const char *old = json_get_string(labels, bump_label);
        char value[32];

        if (!labels)
                labels = cJSON_AddObjectToObject(meta, "labels");
        snprintf(value, sizeof(value), "%d", old ? atoi(old) + 1 : 1);
        cJSON_DeleteItemFromObject(labels, bump_label);
        return cJSON_AddStringToObject(labels, bump_label, value) ? 0 : -ENOMEM;
}

static void on_bumped(KubeRequest *req, KubeResponse *resp, void *userdata) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddNumberToObject(o, "attempts", kube_update_attempts(update));
        update = NULL;
        cJSON_AddNumberToObject(o, "error", resp->error);
        if (resp->message)
                cJSON_AddStringToObject(o, "message", resp->message);
        print_json(o);
        sd_event_exit(event, 0);
}

static int on_events_check(sd_event_source *s, uint64_t usec, void *userdata) {
        const EventRecorderStats *st = event_recorder_stats(recorder);
        cJSON *o;

        if (st->pending > 0) {
                (void) sd_event_source_set_time_relative(s, 20 * USEC_PER_MSEC);
                return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }
        o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "created", st->created);
        cJSON_AddNumberToObject(o, "updated", st->updated);
        cJSON_AddNumberToObject(o, "dropped", st->dropped);
        cJSON_AddNumberToObject(o, "failed", st->failed);
        print_json(o);
        return sd_event_exit(event, 0);
}

static int on_sigterm(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        LeaderElector *le = userdata;

        if (le)
                return leader_elector_release(le, on_released, NULL);
        return sd_event_exit(event, 0);
}

int main(int argc, char *argv[]) {
        _cleanup_(kube_credentials_freep) KubeCredentials *creds = NULL;
        _cleanup_(kube_client_freep) KubeClient *client = NULL;
        _cleanup_(informer_freep) Informer *inf = NULL;
        _cleanup_(leader_elector_freep) LeaderElector *le = NULL;
        _cleanup_free_ char *error = NULL;
        sigset_t mask;
        int r;

        if (argc < 3) {
                fprintf(stderr, "usage: see the comment at the top of kube-probe.c\n");
                return 2;
        }
        log_set_max_level(getenv("KUBE_PROBE_DEBUG") ? LOG_DEBUG : LOG_NOTICE);
        curl_global_init(CURL_GLOBAL_DEFAULT);

        r = kubeconfig_load(argv[1], NULL, &creds, &error);
        if (r < 0) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddNumberToObject(o, "error", r);
                cJSON_AddStringToObject(o, "errno", strerrorname_np(-r));
                cJSON_AddStringToObject(o, "message", strempty(error));
                print_json(o);
                return 1;
        }

        sd_event_default(&event);
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);

        r = kube_client_new(event, creds, NULL, &client);
        if (r < 0) {
                fprintf(stderr, "kube_client_new: %s\n", strerror(-r));
                return 1;
        }

        if (streq(argv[2], "request") && argc >= 5) {
                static const struct {
                        const char *name;
                        KubeMethod m;
                } methods[] = {
                        { "GET", KUBE_GET },
                        { "POST", KUBE_POST },
                        { "PUT", KUBE_PUT },
                        { "MERGE", KUBE_PATCH_MERGE },
                        { "JSONPATCH", KUBE_PATCH_JSON },
                        { "STRATEGIC", KUBE_PATCH_STRATEGIC },
                        { "DELETE", KUBE_DELETE },
                };
                _cleanup_json_ cJSON *body = argc >= 6 ? cJSON_Parse(argv[5]) : NULL;
                KubeMethod m = _KUBE_METHOD_INVALID;

                for (size_t i = 0; i < ELEMENTSOF(methods); i++)
                        if (streq(methods[i].name, argv[3]))
                                m = methods[i].m;
                if (m < 0 || (argc >= 6 && !body)) {
                        fprintf(stderr, "bad method or body\n");
                        return 2;
                }
                r = kube_request(client, m, argv[4], body, on_response, NULL, NULL);
                sd_event_add_signal(event, NULL, SIGTERM, on_sigterm, NULL);
        } else if (streq(argv[2], "inform") && argc >= 4) {
                static const InformerHandlers h = {
                        .added = on_added, .updated = on_updated, .deleted = on_deleted, .synced = on_synced
                };
                r = informer_new(
                        client,
                        &(InformerConfig){ .name = "probe",
                                           .path = argv[3],
                                           .field_selector = argc >= 5 && *argv[4] ? argv[4] : NULL,
                                           .label_selector = argc >= 6 && *argv[5] ? argv[5] : NULL },
                        &h, NULL, &inf);
                if (r >= 0)
                        r = informer_start(inf);
                sd_event_add_signal(event, NULL, SIGTERM, on_sigterm, NULL);
        } else if (streq(argv[2], "bump") && argc >= 5) {
                bump_label = argv[4];
                r = kube_update(client, argv[3], false, bump, on_bumped, NULL, &update);
                sd_event_add_signal(event, NULL, SIGTERM, on_sigterm, NULL);
        } else if (streq(argv[2], "event") && argc >= 7) {
                _cleanup_json_ cJSON *pod = cJSON_Parse("{\"metadata\":{}}");
                cJSON *meta = cJSON_GetObjectItem(pod, "metadata");
                unsigned count = (unsigned) atoi(argv[6]);

                cJSON_AddStringToObject(meta, "namespace", argv[3]);
                cJSON_AddStringToObject(meta, "name", argv[4]);
                r = event_recorder_new(client, "hwameid", "probe-node", &recorder);
                for (unsigned i = 0; r >= 0 && i < count; i++)
                        event_recorder_emit(recorder, "v1", "Pod", pod, EVENT_WARNING, "ProbeTest", "%s",
                                            argv[5]);
                if (r >= 0)
                        r = sd_event_add_time_relative(event, NULL, CLOCK_MONOTONIC, 20 * USEC_PER_MSEC, 0,
                                                       on_events_check, NULL);
                sd_event_add_signal(event, NULL, SIGTERM, on_sigterm, NULL);
        } else if (streq(argv[2], "elect") && argc >= 6) {
                static const LeaderElectorCallbacks cb = { .started_leading = on_leading,
                                                           .stopped_leading = on_stopped };
                r = leader_elector_new(client,
                                       &(LeaderElectorConfig){ .namespace = argv[3],
                                                               .name = argv[4],
                                                               .identity = argv[5],
                                                               .lease_duration = 1000 * USEC_PER_MSEC,
                                                               .renew_deadline = 600 * USEC_PER_MSEC,
                                                               .retry_period = 200 * USEC_PER_MSEC },
                                       &cb, NULL, &le);
                if (r >= 0)
                        r = leader_elector_start(le);
                sd_event_add_signal(event, NULL, SIGTERM, on_sigterm, le);
        } else {
                fprintf(stderr, "unknown command\n");
                return 2;
        }
        if (r < 0) {
                fprintf(stderr, "start: %s\n", strerror(-r));
                return 1;
        }

        r = sd_event_loop(event);
        if (inf)
                print_informer_final(inf);
        le = leader_elector_free(le);
        recorder = event_recorder_free(recorder);
        inf = informer_free(inf);
        client = kube_client_free(client);
        sd_event_unref(event);
        curl_global_cleanup();
        return r < 0 ? 1 : exit_code;
}
