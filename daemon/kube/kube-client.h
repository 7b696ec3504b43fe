/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * An asynchronous client for the Kubernetes API, driven by the sd-event loop: one libcurl multi
 * handle whose sockets and timer are event sources, so no call here ever blocks. Connections are
 * reused (HTTP/2 multiplexing where the server offers it), TLS material comes from memory, and
 * every non-2xx answer is decoded from its Status body into an errno (kube-errno.h), a reason and
 * a message.
 *
 * Requests pass a client-side token bucket (QPS/burst, as client-go) before they go out; watches
 * do not. A 429 or 5xx answer that carries Retry-After is retried after that delay, up to
 * KUBE_CLIENT_RETRIES times, before the caller hears of it.
 *
 * A request belongs to the client. Its completion handler is called exactly once, on the loop,
 * unless the request is cancelled first; the request is freed right after the handler returns.
 */

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <systemd/sd-event.h>

#include "../basic/macro.h"
#include "../basic/time-util.h"
#include "kubeconfig.h"

#define KUBE_CLIENT_RETRIES 10

typedef struct KubeClient KubeClient;
typedef struct KubeRequest KubeRequest;

typedef enum KubeMethod {
        KUBE_GET,
        KUBE_POST,
        KUBE_PUT,
        KUBE_PATCH_MERGE,     /* application/merge-patch+json */
        KUBE_PATCH_JSON,      /* application/json-patch+json */
        KUBE_PATCH_STRATEGIC, /* application/strategic-merge-patch+json (built-in kinds only) */
        KUBE_DELETE,
        _KUBE_METHOD_MAX,
        _KUBE_METHOD_INVALID = -EINVAL,
} KubeMethod;

const char *kube_method_to_string(KubeMethod m);

typedef struct KubeResponse {
        int error;           /* 0, or a negative errno (kube-errno.h) */
        long http_code;      /* 0 when no HTTP answer arrived */
        cJSON *body;         /* the parsed body: the object or list on success, the Status on
                              * failure; NULL if there was none. The handler may TAKE_PTR() it. */
        const char *reason;  /* the Status reason ("Conflict", "AlreadyExists", ...) or NULL */
        const char *message; /* for people: the Status message or the transport error; never NULL
                              * on failure */
        usec_t retry_after;  /* what the server asked for (Retry-After), or 0 */
} KubeResponse;

typedef void (*KubeResponseHandler)(KubeRequest *req, KubeResponse *resp, void *userdata);

/* Watches: called once with (NULL, 0) when a 2xx answer's headers are complete (the watch is
 * open), then with the bytes of the body as they arrive (any chunking). A negative return aborts
 * the request, which then completes with that error. */
typedef int (*KubeStreamHandler)(KubeRequest *req, const void *data, size_t size, void *userdata);

typedef struct KubeClientOptions {
        double qps; /* sustained requests per second; 0 for no limit */
        unsigned burst;
        const char *user_agent;
} KubeClientOptions;

#define KUBE_CLIENT_OPTIONS_DEFAULT                                                                         \
        { .qps = 5.0, .burst = 10, .user_agent = "hwameid/" HWAMEID_VERSION }

/* creds is copied (the caller keeps its own). */
int kube_client_new(sd_event *e, const KubeCredentials *creds, const KubeClientOptions *options,
                    KubeClient **ret);
/* Cancels every request without calling their handlers. */
KubeClient *kube_client_free(KubeClient *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(KubeClient *, kube_client_free);

/* New credentials (a rotated certificate or token) for requests started from now on. */
int kube_client_set_credentials(KubeClient *c, const KubeCredentials *creds);
const char *kube_client_server(const KubeClient *c);
sd_event *kube_client_event(const KubeClient *c);
/* The local address of the last connection that answered: the address this host reaches the
 * API server from ("" before any answer). */
const char *kube_client_local_ip(const KubeClient *c);

/*
 * Starts a request. path is absolute and may carry a query ("/api/v1/nodes?limit=500"); build
 * query values with kube_escape(). body is sent as JSON for POST, PUT and PATCH. ret (optional)
 * receives a borrowed handle for kube_request_cancel(), valid until the handler runs.
 */
int kube_request(KubeClient *c, KubeMethod method, const char *path, const cJSON *body,
                 KubeResponseHandler done, void *userdata, KubeRequest **ret);

/* Starts a long-running GET whose 2xx body is streamed to on_data; done reports the end. */
int kube_watch(KubeClient *c, const char *path, KubeStreamHandler on_data, KubeResponseHandler done,
               void *userdata, KubeRequest **ret);

/* Per-request behaviour, set right after kube_request() (before the loop runs again). */
enum {
        KUBE_REQUEST_URGENT = 1 << 0,   /* not held back by the client-side rate limit */
        KUBE_REQUEST_NO_RETRY = 1 << 1, /* no quiet Retry-After retries: the caller has its own timing */
};
void kube_request_set_flags(KubeRequest *r, unsigned flags);

/* Drops the request; its handler is not called. Returns NULL. */
KubeRequest *kube_request_cancel(KubeRequest *r);

/* Requests sent to the server so far, retries included (for tests and the benchmark). */
uint64_t kube_client_requests_sent(const KubeClient *c);

/* Percent-encodes s for a query value or path segment (RFC 3986 unreserved characters stay). */
char *kube_escape(const char *s);
