/* SPDX-License-Identifier: Apache-2.0 */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "../basic/json-util.h"
#include "../basic/list.h"
#include "../basic/string-util.h"
#include "kube-client.h"
#include "kube-errno.h"

#define KUBE_RESPONSE_MAX       (256U * 1024U * 1024U)
#define KUBE_CONNECT_TIMEOUT_MS 10000L
#define KUBE_REQUEST_TIMEOUT_MS 60000L
#define KUBE_RETRY_AFTER_MAX    (60 * USEC_PER_SEC)
/* A watch that delivers nothing (not even a bookmark) for this long is presumed dead. */
#define KUBE_WATCH_SILENCE_SEC 180L

struct KubeRequest {
        KubeClient *client;
        KubeMethod method;
        char *path;
        char *body;
        bool watch;
        bool active; /* on the multi handle, else queued */
        KubeResponseHandler done;
        KubeStreamHandler on_data;
        void *userdata;

        CURL *easy;
        struct curl_slist *headers;
        struct curl_slist *connect_to; /* libcurl does not copy it: each transfer has its own */
        char errbuf[CURL_ERROR_SIZE];
        char *resp;
        size_t resp_len, resp_cap;
        usec_t retry_after;
        int abort_error;
        int start_error; /* set when the transfer could not be set up */
        unsigned flags;  /* KUBE_REQUEST_* */
        unsigned attempts;
        usec_t not_before;
        char message[512];

        LIST_FIELDS(KubeRequest, requests);
};

struct KubeClient {
        sd_event *event;
        CURLM *multi;
        sd_event_source *curl_timer, *queue_timer;

        /* Connection settings derived from the credentials. */
        char *base_url;                 /* scheme://host:port as curl connects */
        struct curl_slist *connect_to;  /* for tls-server-name */
        struct curl_blob ca, cert, key; /* CURL_BLOB_COPY: libcurl keeps its own copies */
        void *ca_data, *cert_data, *key_data;
        char *auth_header; /* "Authorization: Bearer …" or NULL */
        char *proxy;       /* the kubeconfig's proxy-url, or NULL for libcurl's environment rules */
        bool insecure;
        char *user_agent;

        char local_ip[64];

        double qps, tokens;
        unsigned burst;
        usec_t tokens_usec;
        uint64_t n_sent;

        LIST_HEAD(KubeRequest, queued);
        LIST_HEAD(KubeRequest, active);
};

static const char *const kube_method_table[_KUBE_METHOD_MAX] = {
        [KUBE_GET] = "GET",           [KUBE_POST] = "POST",        [KUBE_PUT] = "PUT",
        [KUBE_PATCH_MERGE] = "PATCH", [KUBE_PATCH_JSON] = "PATCH", [KUBE_PATCH_STRATEGIC] = "PATCH",
        [KUBE_DELETE] = "DELETE",
};

DEFINE_STRING_TABLE_TO_STRING(kube_method, KubeMethod, kube_method_table)

static const char *kube_method_content_type(KubeMethod m) {
        switch (m) {
        case KUBE_PATCH_MERGE:
                return "Content-Type: application/merge-patch+json";
        case KUBE_PATCH_JSON:
                return "Content-Type: application/json-patch+json";
        case KUBE_PATCH_STRATEGIC:
                return "Content-Type: application/strategic-merge-patch+json";
        default:
                return "Content-Type: application/json";
        }
}

char *kube_escape(const char *s) {
        static const char hex[] = "0123456789ABCDEF";
        size_t n = strlen(s);
        char *e, *p;

        e = malloc(n * 3 + 1);
        if (!e)
                return NULL;
        for (p = e; *s; s++) {
                unsigned char ch = (unsigned char) *s;
                if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                    strchr("-._~", ch))
                        *p++ = (char) ch;
                else {
                        *p++ = '%';
                        *p++ = hex[ch >> 4];
                        *p++ = hex[ch & 15];
                }
        }
        *p = '\0';
        return e;
}

static void kube_request_free(KubeRequest *r) {
        KubeClient *c;

        if (!r)
                return;
        c = r->client;
        if (r->easy) {
                if (r->active)
                        (void) curl_multi_remove_handle(c->multi, r->easy);
                curl_easy_cleanup(r->easy);
        }
        if (r->active)
                LIST_REMOVE(requests, c->active, r);
        else
                LIST_REMOVE(requests, c->queued, r);
        curl_slist_free_all(r->headers);
        curl_slist_free_all(r->connect_to);
        free(r->resp);
        free(r->path);
        free(r->body);
        free(r);
}

void kube_request_set_flags(KubeRequest *r, unsigned flags) {
        if (r)
                r->flags = flags;
}

KubeRequest *kube_request_cancel(KubeRequest *r) {
        kube_request_free(r);
        return NULL;
}

uint64_t kube_client_requests_sent(const KubeClient *c) {
        return c->n_sent;
}

const char *kube_client_server(const KubeClient *c) {
        return c->base_url;
}

sd_event *kube_client_event(const KubeClient *c) {
        return c->event;
}

const char *kube_client_local_ip(const KubeClient *c) {
        return c->local_ip;
}

/* ---- libcurl callbacks ------------------------------------------------------------------ */

static size_t kube_request_on_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
        KubeRequest *r = userdata;
        size_t n = size * nmemb;

        if (r->watch) {
                long code = 0;

                (void) curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
                if (code >= 200 && code < 300) {
                        int k = r->on_data(r, ptr, n, r->userdata);
                        if (k < 0) {
                                r->abort_error = k;
                                return 0; /* makes libcurl fail the transfer with CURLE_WRITE_ERROR */
                        }
                        return n;
                }
        }

        if (n > KUBE_RESPONSE_MAX - r->resp_len) {
                r->abort_error = -EFBIG;
                return 0;
        }
        if (r->resp_len + n + 1 > r->resp_cap) {
                size_t cap = MAX(r->resp_cap * 2, r->resp_len + n + 1);
                char *b = realloc(r->resp, MAX(cap, (size_t) 16384));
                if (!b) {
                        r->abort_error = -ENOMEM;
                        return 0;
                }
                r->resp = b;
                r->resp_cap = MAX(cap, (size_t) 16384);
        }
        memcpy(r->resp + r->resp_len, ptr, n);
        r->resp_len += n;
        r->resp[r->resp_len] = '\0';
        return n;
}

static size_t kube_request_on_header(char *buffer, size_t size, size_t nitems, void *userdata) {
        KubeRequest *r = userdata;
        size_t n = size * nitems;
        const char *name = "retry-after:";
        size_t k = strlen(name);

        /* The blank line ends the headers: a watch that got 2xx is open, say so before any data. */
        if (r->watch && n <= 2 && (n == 0 || buffer[0] == '\r' || buffer[0] == '\n')) {
                long code = 0;

                (void) curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
                if (code >= 200 && code < 300) {
                        int e = r->on_data(r, NULL, 0, r->userdata);
                        if (e < 0) {
                                r->abort_error = e;
                                return 0;
                        }
                }
                return n;
        }

        if (n > k && strncasecmp(buffer, name, k) == 0) {
                char value[32];
                size_t len = MIN(n - k, sizeof(value) - 1);
                uint64_t secs;

                memcpy(value, buffer + k, len);
                value[len] = '\0';
                /* Seconds only; the HTTP-date form is not used by the API server. */
                if (safe_atou64(strstrip(value), &secs) >= 0)
                        r->retry_after = MIN(secs * USEC_PER_SEC, KUBE_RETRY_AFTER_MAX);
        }
        return n;
}

static int kube_client_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static int kube_client_on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        KubeClient *c = userp;
        sd_event_source *io = socketp;
        uint32_t events = 0;
        int r;

        (void) easy;

        if (what == CURL_POLL_REMOVE) {
                if (io) {
                        sd_event_source_disable_unref(io);
                        (void) curl_multi_assign(c->multi, fd, NULL);
                }
                return 0;
        }

        if (what & CURL_POLL_IN)
                events |= EPOLLIN;
        if (what & CURL_POLL_OUT)
                events |= EPOLLOUT;

        if (io) {
                r = sd_event_source_set_io_events(io, events);
                if (r >= 0)
                        r = sd_event_source_set_enabled(io, SD_EVENT_ON);
                return r < 0 ? -1 : 0;
        }

        r = sd_event_add_io(c->event, &io, fd, events, kube_client_on_io, c);
        if (r < 0)
                return -1;
        (void) sd_event_source_set_description(io, "kube-socket");
        if (curl_multi_assign(c->multi, fd, io) != CURLM_OK) {
                sd_event_source_disable_unref(io);
                return -1;
        }
        return 0;
}

static int kube_client_on_curl_timer_set(CURLM *multi, long timeout_ms, void *userp) {
        KubeClient *c = userp;
        int r;

        (void) multi;
        if (timeout_ms < 0)
                return sd_event_source_set_enabled(c->curl_timer, SD_EVENT_OFF) < 0 ? -1 : 0;

        r = sd_event_source_set_time(c->curl_timer,
                                     now(CLOCK_MONOTONIC) + (usec_t) timeout_ms * USEC_PER_MSEC);
        if (r >= 0)
                r = sd_event_source_set_enabled(c->curl_timer, SD_EVENT_ONESHOT);
        return r < 0 ? -1 : 0;
}

/* ---- completion ------------------------------------------------------------------------ */

static void kube_client_schedule_queue(KubeClient *c);

/* Fills resp from what the transfer produced. */
static void kube_request_build_response(KubeRequest *r, CURLcode result, KubeResponse *resp) {
        long code = 0, os_errno = 0;

        *resp = (KubeResponse){ .retry_after = r->retry_after };
        (void) curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
        resp->http_code = code;

        if (r->abort_error < 0) {
                resp->error = r->abort_error;
                snprintf(r->message, sizeof(r->message), "%s",
                         r->abort_error == -EFBIG ? "response too large" : strerror(-r->abort_error));
                resp->message = r->message;
                return;
        }

        if (result != CURLE_OK) {
                (void) curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_errno);
                resp->error = kube_errno_from_curl(result, os_errno);
                snprintf(r->message, sizeof(r->message), "%s",
                         r->errbuf[0] ? r->errbuf : curl_easy_strerror(result));
                resp->message = r->message;
                return;
        }

        if (r->resp_len > 0) {
                resp->body = cJSON_ParseWithLength(r->resp, r->resp_len);
                if (!resp->body && code >= 200 && code < 300) {
                        resp->error = -EBADMSG;
                        resp->message = "the server's answer is not valid JSON";
                        return;
                }
        }

        if (code >= 200 && code < 300)
                return;

        resp->reason = json_get_string(resp->body, "reason");
        resp->error = kube_errno_from_http(code, resp->reason);
        if (json_get_string(resp->body, "message"))
                resp->message = json_get_string(resp->body, "message");
        else {
                snprintf(r->message, sizeof(r->message), "HTTP %ld", code);
                resp->message = r->message;
        }
        if (resp->retry_after == 0) {
                const cJSON *details = cJSON_GetObjectItemCaseSensitive(resp->body, "details");
                uint64_t secs;

                if (json_get_u64(details, "retryAfterSeconds", &secs) >= 0)
                        resp->retry_after = MIN(secs * USEC_PER_SEC, KUBE_RETRY_AFTER_MAX);
        }
}

static void kube_request_finish(KubeRequest *r, CURLcode result) {
        KubeClient *c = r->client;
        KubeResponse resp;

        kube_request_build_response(r, result, &resp);
        if (resp.http_code > 0) {
                char *ip = NULL;

                if (curl_easy_getinfo(r->easy, CURLINFO_LOCAL_IP, &ip) == CURLE_OK && ip)
                        (void) snprintf(c->local_ip, sizeof(c->local_ip), "%s", ip);
        }

        /* The server asked us to come back later: do so, quietly, a bounded number of times. */
        if (!r->watch && !(r->flags & KUBE_REQUEST_NO_RETRY) && resp.retry_after > 0 &&
            (resp.http_code == 429 || resp.http_code >= 500) && r->attempts < KUBE_CLIENT_RETRIES) {
                cJSON_Delete(resp.body);
                (void) curl_multi_remove_handle(c->multi, r->easy);
                curl_easy_cleanup(r->easy);
                r->easy = NULL;
                curl_slist_free_all(r->headers);
                r->headers = NULL;
                r->resp_len = 0;
                r->retry_after = 0;
                r->not_before = now(CLOCK_MONOTONIC) + resp.retry_after;
                LIST_REMOVE(requests, c->active, r);
                r->active = false;
                LIST_PREPEND(requests, c->queued, r);
                kube_client_schedule_queue(c);
                return;
        }

        r->done(r, &resp, r->userdata);
        cJSON_Delete(resp.body);
        kube_request_free(r);
}

static void kube_client_process_done(KubeClient *c) {
        CURLMsg *msg;
        int left;

        while ((msg = curl_multi_info_read(c->multi, &left))) {
                KubeRequest *r = NULL;

                if (msg->msg != CURLMSG_DONE)
                        continue;
                if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &r) != CURLE_OK || !r)
                        continue;
                kube_request_finish(r, msg->data.result);
        }
}

static int kube_client_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        KubeClient *c = userdata;
        int action = 0, running;

        (void) s;
        if (revents & EPOLLIN)
                action |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                action |= CURL_CSELECT_OUT;
        if (revents & (EPOLLERR | EPOLLHUP))
                action |= CURL_CSELECT_ERR;

        (void) curl_multi_socket_action(c->multi, fd, action, &running);
        kube_client_process_done(c);
        return 0;
}

static int kube_client_on_curl_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        KubeClient *c = userdata;
        int running;

        (void) s, (void) usec;
        (void) curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        kube_client_process_done(c);
        return 0;
}

/* ---- starting transfers ------------------------------------------------------------------ */

#define SETOPT(easy, opt, value)                                                                            \
        do {                                                                                                \
                if (curl_easy_setopt(easy, opt, value) != CURLE_OK)                                         \
                        return -EIO;                                                                        \
        } while (0)

/* libcurl 7.88 does not create its sockets close-on-exec. */
static curl_socket_t kube_client_open_socket(void *clientp, curlsocktype purpose,
                                             struct curl_sockaddr *address) {
        (void) clientp, (void) purpose;
        return socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

static int kube_request_setup(KubeRequest *r) {
        KubeClient *c = r->client;
        _cleanup_free_ char *url = NULL;
        struct curl_slist *l;

        if (asprintf(&url, "%s%s", c->base_url, r->path) < 0)
                return -ENOMEM;

        r->easy = curl_easy_init();
        if (!r->easy)
                return -ENOMEM;

        r->errbuf[0] = '\0';
        r->abort_error = 0;
        SETOPT(r->easy, CURLOPT_URL, url);
        SETOPT(r->easy, CURLOPT_PRIVATE, r);
        SETOPT(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
        SETOPT(r->easy, CURLOPT_NOSIGNAL, 1L);
        SETOPT(r->easy, CURLOPT_PROTOCOLS_STR, "https,http");
        SETOPT(r->easy, CURLOPT_TCP_KEEPALIVE, 1L);
        SETOPT(r->easy, CURLOPT_CONNECTTIMEOUT_MS, KUBE_CONNECT_TIMEOUT_MS);
        SETOPT(r->easy, CURLOPT_WRITEFUNCTION, kube_request_on_write);
        SETOPT(r->easy, CURLOPT_WRITEDATA, r);
        SETOPT(r->easy, CURLOPT_HEADERFUNCTION, kube_request_on_header);
        SETOPT(r->easy, CURLOPT_HEADERDATA, r);
        SETOPT(r->easy, CURLOPT_USERAGENT, c->user_agent);
        SETOPT(r->easy, CURLOPT_PIPEWAIT, 1L); /* prefer multiplexing over a new connection */
        SETOPT(r->easy, CURLOPT_OPENSOCKETFUNCTION, kube_client_open_socket);
        if (r->watch) {
                SETOPT(r->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
                SETOPT(r->easy, CURLOPT_LOW_SPEED_TIME, KUBE_WATCH_SILENCE_SEC);
        } else {
                SETOPT(r->easy, CURLOPT_TIMEOUT_MS, KUBE_REQUEST_TIMEOUT_MS);
                SETOPT(r->easy, CURLOPT_ACCEPT_ENCODING, "");
        }

        SETOPT(r->easy, CURLOPT_SSL_VERIFYPEER, c->insecure ? 0L : 1L);
        SETOPT(r->easy, CURLOPT_SSL_VERIFYHOST, c->insecure ? 0L : 2L);
        if (c->ca.data)
                SETOPT(r->easy, CURLOPT_CAINFO_BLOB, &c->ca);
        if (c->cert.data) {
                SETOPT(r->easy, CURLOPT_SSLCERTTYPE, "PEM");
                SETOPT(r->easy, CURLOPT_SSLCERT_BLOB, &c->cert);
                SETOPT(r->easy, CURLOPT_SSLKEYTYPE, "PEM");
                SETOPT(r->easy, CURLOPT_SSLKEY_BLOB, &c->key);
        }
        if (c->connect_to) {
                curl_slist_free_all(r->connect_to);
                r->connect_to = curl_slist_append(NULL, c->connect_to->data);
                if (!r->connect_to)
                        return -ENOMEM;
                SETOPT(r->easy, CURLOPT_CONNECT_TO, r->connect_to);
        }
        if (c->proxy)
                SETOPT(r->easy, CURLOPT_PROXY, c->proxy);

        switch (r->method) {
        case KUBE_GET:
                SETOPT(r->easy, CURLOPT_HTTPGET, 1L);
                break;
        case KUBE_POST:
                SETOPT(r->easy, CURLOPT_POST, 1L);
                break;
        default:
                SETOPT(r->easy, CURLOPT_CUSTOMREQUEST, kube_method_to_string(r->method));
        }
        if (r->body) {
                SETOPT(r->easy, CURLOPT_POSTFIELDS, r->body);
                SETOPT(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(r->body));
        }

        l = curl_slist_append(r->headers, "Accept: application/json");
        if (l)
                r->headers = l, l = curl_slist_append(r->headers, "Expect:");
        if (l && r->body)
                r->headers = l, l = curl_slist_append(r->headers, kube_method_content_type(r->method));
        if (l && c->auth_header)
                r->headers = l, l = curl_slist_append(r->headers, c->auth_header);
        if (!l)
                return -ENOMEM;
        r->headers = l;
        SETOPT(r->easy, CURLOPT_HTTPHEADER, r->headers);
        return 0;
}

static int kube_request_start(KubeRequest *r) {
        KubeClient *c = r->client;
        int k;

        k = kube_request_setup(r);
        if (k < 0)
                return k;
        if (curl_multi_add_handle(c->multi, r->easy) != CURLM_OK)
                return -EIO;
        LIST_REMOVE(requests, c->queued, r);
        r->active = true;
        LIST_PREPEND(requests, c->active, r);
        r->attempts++;
        c->n_sent++;
        return 0;
}

/* Fails a request that could not even be started; called from the queue timer, so handlers
 * never run inside kube_request(). */
static void kube_request_fail(KubeRequest *r, int error) {
        KubeResponse resp = { .error = error };

        snprintf(r->message, sizeof(r->message), "failed to start request: %s", strerror(-error));
        resp.message = r->message;
        r->done(r, &resp, r->userdata);
        kube_request_free(r);
}

static void kube_client_refill(KubeClient *c, usec_t n) {
        if (c->qps <= 0)
                return;
        if (n > c->tokens_usec)
                c->tokens = MIN((double) c->burst,
                                c->tokens + (double) (n - c->tokens_usec) * c->qps / (double) USEC_PER_SEC);
        c->tokens_usec = n;
}

static int kube_client_on_queue(sd_event_source *s, uint64_t usec, void *userdata) {
        KubeClient *c = userdata;
        usec_t n = now(CLOCK_MONOTONIC), next = USEC_INFINITY;
        KubeRequest *last = NULL;

        (void) s, (void) usec;
        kube_client_refill(c, n);

        /* Oldest first: the list is prepended to, so walk from its tail. Nothing here calls a
         * handler, so the list changes only by what this loop does. */
        LIST_FOREACH (requests, i, c->queued)
                last = i;
        for (KubeRequest *r = last, *prev; r; r = prev) {
                prev = r->requests_prev;
                if (r->start_error < 0)
                        continue;
                if (r->not_before > n) {
                        next = MIN(next, r->not_before);
                        continue;
                }
                if (!r->watch && !(r->flags & KUBE_REQUEST_URGENT) && c->qps > 0) {
                        if (c->tokens < 1.0) {
                                next = MIN(next,
                                           n + (usec_t) ((1.0 - c->tokens) * USEC_PER_SEC / c->qps) + 1);
                                continue;
                        }
                        c->tokens -= 1.0;
                }
                r->start_error = kube_request_start(r);
                if (r->start_error >= 0)
                        r->start_error = 0;
        }

        if (next != USEC_INFINITY) {
                (void) sd_event_source_set_time(c->queue_timer, next);
                (void) sd_event_source_set_enabled(c->queue_timer, SD_EVENT_ONESHOT);
        }

        /* Requests that could not be started fail now, one at a time, since a handler may start
         * or cancel others. */
        for (;;) {
                KubeRequest *failed = NULL;

                LIST_FOREACH (requests, i, c->queued)
                        if (i->start_error < 0)
                                failed = i;
                if (!failed)
                        break;
                kube_request_fail(failed, failed->start_error);
        }
        return 0;
}

static void kube_client_schedule_queue(KubeClient *c) {
        (void) sd_event_source_set_time(c->queue_timer, 0);
        (void) sd_event_source_set_enabled(c->queue_timer, SD_EVENT_ONESHOT);
}

static int kube_client_enqueue(KubeClient *c, KubeMethod method, const char *path, const cJSON *body,
                               bool watch, KubeStreamHandler on_data, KubeResponseHandler done,
                               void *userdata, KubeRequest **ret) {
        KubeRequest *r;

        assert(c);
        assert(path && path[0] == '/');
        assert(done);

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->client = c;
        r->method = method;
        r->watch = watch;
        r->on_data = on_data;
        r->done = done;
        r->userdata = userdata;
        r->path = strdup(path);
        if (!r->path) {
                free(r);
                return -ENOMEM;
        }
        if (body && method != KUBE_GET) {
                r->body = cJSON_PrintUnformatted(body);
                if (!r->body) {
                        free(r->path);
                        free(r);
                        return -ENOMEM;
                }
        }
        LIST_PREPEND(requests, c->queued, r);
        kube_client_schedule_queue(c);
        if (ret)
                *ret = r;
        return 0;
}

int kube_request(KubeClient *c, KubeMethod method, const char *path, const cJSON *body,
                 KubeResponseHandler done, void *userdata, KubeRequest **ret) {
        assert(method >= 0 && method < _KUBE_METHOD_MAX);
        return kube_client_enqueue(c, method, path, body, false, NULL, done, userdata, ret);
}

int kube_watch(KubeClient *c, const char *path, KubeStreamHandler on_data, KubeResponseHandler done,
               void *userdata, KubeRequest **ret) {
        assert(on_data);
        return kube_client_enqueue(c, KUBE_GET, path, NULL, true, on_data, done, userdata, ret);
}

/* ---- the client ------------------------------------------------------------------------ */

static void blob_set(struct curl_blob *b, void **store, const void *data, size_t size) {
        free(*store);
        *store = NULL;
        *b = (struct curl_blob){};
        if (!data)
                return;
        *store = malloc(size);
        if (!*store)
                return;
        memcpy(*store, data, size);
        *b = (struct curl_blob){ .data = *store, .len = size, .flags = CURL_BLOB_COPY };
}

static void blob_wipe(void **store, struct curl_blob *b) {
        if (*store)
                explicit_bzero(*store, b->len);
        free(*store);
        *store = NULL;
        *b = (struct curl_blob){};
}

/* Splits "https://host:port" (brackets for IPv6 kept) and, with a TLS server name, connects to
 * the real host while verifying and sending SNI for the configured name. */
static int kube_client_set_server(KubeClient *c, const char *server, const char *tls_server_name) {
        _cleanup_free_ char *host = NULL, *port = NULL, *scheme = NULL;
        CURLU *u;
        int r = 0;

        u = curl_url();
        if (!u)
                return -ENOMEM;
        if (curl_url_set(u, CURLUPART_URL, server, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
                r = -EINVAL;
                goto finish;
        }

        free(c->base_url);
        c->base_url = NULL;
        curl_slist_free_all(c->connect_to);
        c->connect_to = NULL;

        if (isempty(tls_server_name)) {
                if (asprintf(&c->base_url, "%s://%s:%s", scheme, host, port) < 0)
                        c->base_url = NULL, r = -ENOMEM;
        } else {
                _cleanup_free_ char *spec = NULL;

                if (asprintf(&c->base_url, "%s://%s:%s", scheme, tls_server_name, port) < 0 ||
                    asprintf(&spec, "%s:%s:%s:%s", tls_server_name, port, host, port) < 0) {
                        r = -ENOMEM;
                        goto finish;
                }
                c->connect_to = curl_slist_append(NULL, spec);
                if (!c->connect_to)
                        r = -ENOMEM;
        }
finish:
        if (host)
                curl_free(TAKE_PTR(host));
        if (port)
                curl_free(TAKE_PTR(port));
        if (scheme)
                curl_free(TAKE_PTR(scheme));
        curl_url_cleanup(u);
        return r;
}

int kube_client_set_credentials(KubeClient *c, const KubeCredentials *creds) {
        int r;

        assert(c);
        assert(creds);

        r = kube_client_set_server(c, creds->server, creds->tls_server_name);
        if (r < 0)
                return r;
        c->insecure = creds->insecure_skip_tls_verify;
        if (free_and_strdup(&c->proxy, creds->proxy_url) < 0)
                return -ENOMEM;

        blob_wipe(&c->ca_data, &c->ca);
        blob_wipe(&c->cert_data, &c->cert);
        blob_wipe(&c->key_data, &c->key);
        blob_set(&c->ca, &c->ca_data, creds->ca, creds->ca_size);
        blob_set(&c->cert, &c->cert_data, creds->client_cert, creds->client_cert_size);
        blob_set(&c->key, &c->key_data, creds->client_key, creds->client_key_size);
        if ((creds->ca && !c->ca_data) || (creds->client_cert && !c->cert_data) ||
            (creds->client_key && !c->key_data))
                return -ENOMEM;

        if (c->auth_header) {
                explicit_bzero(c->auth_header, strlen(c->auth_header));
                c->auth_header = mfree(c->auth_header);
        }
        if (creds->token && asprintf(&c->auth_header, "Authorization: Bearer %s", creds->token) < 0) {
                c->auth_header = NULL;
                return -ENOMEM;
        }
        return 0;
}

int kube_client_new(sd_event *e, const KubeCredentials *creds, const KubeClientOptions *options,
                    KubeClient **ret) {
        _cleanup_(kube_client_freep) KubeClient *c = NULL;
        KubeClientOptions defaults = KUBE_CLIENT_OPTIONS_DEFAULT;
        int r;

        assert(e);
        assert(creds);
        assert(ret);

        if (!options)
                options = &defaults;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(e);
        c->qps = options->qps;
        c->burst = MAX(options->burst, 1U);
        c->tokens = c->burst;
        c->tokens_usec = now(CLOCK_MONOTONIC);
        c->user_agent = strdup(options->user_agent ?: "hwameid");
        if (!c->user_agent)
                return -ENOMEM;

        r = kube_client_set_credentials(c, creds);
        if (r < 0)
                return r;

        c->multi = curl_multi_init();
        if (!c->multi)
                return -ENOMEM;
        if (curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, kube_client_on_curl_socket) != CURLM_OK ||
            curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c) != CURLM_OK ||
            curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, kube_client_on_curl_timer_set) != CURLM_OK ||
            curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c) != CURLM_OK ||
            curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX) != CURLM_OK)
                return -EIO;

        r = sd_event_add_time(e, &c->curl_timer, CLOCK_MONOTONIC, USEC_INFINITY, 0,
                              kube_client_on_curl_timer, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(c->curl_timer, "kube-curl-timer");
        r = sd_event_add_time(e, &c->queue_timer, CLOCK_MONOTONIC, USEC_INFINITY, 0, kube_client_on_queue,
                              c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(c->queue_timer, "kube-queue");

        *ret = TAKE_PTR(c);
        return 0;
}

KubeClient *kube_client_free(KubeClient *c) {
        if (!c)
                return NULL;
        while (c->active)
                kube_request_free(c->active);
        while (c->queued)
                kube_request_free(c->queued);
        if (c->multi)
                curl_multi_cleanup(c->multi);
        sd_event_source_disable_unref(c->curl_timer);
        sd_event_source_disable_unref(c->queue_timer);
        sd_event_unref(c->event);
        blob_wipe(&c->ca_data, &c->ca);
        blob_wipe(&c->cert_data, &c->cert);
        blob_wipe(&c->key_data, &c->key);
        if (c->auth_header)
                explicit_bzero(c->auth_header, strlen(c->auth_header));
        free(c->auth_header);
        free(c->base_url);
        free(c->proxy);
        curl_slist_free_all(c->connect_to);
        free(c->user_agent);
        free(c);
        return NULL;
}
