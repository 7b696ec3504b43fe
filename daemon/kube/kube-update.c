/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../basic/macro.h"
#include "kube-update.h"

struct KubeUpdate {
        KubeClient *client;
        char *path, *put_path;
        KubeMutateFn mutate;
        KubeResponseHandler done;
        void *userdata;
        KubeRequest *request;
        unsigned attempts;
};

static void kube_update_free(KubeUpdate *u) {
        if (!u)
                return;
        kube_request_cancel(u->request);
        free(u->path);
        free(u->put_path);
        free(u);
}

KubeUpdate *kube_update_cancel(KubeUpdate *u) {
        kube_update_free(u);
        return NULL;
}

unsigned kube_update_attempts(const KubeUpdate *u) {
        return u->attempts;
}

static void kube_update_finish(KubeUpdate *u, KubeRequest *req, KubeResponse *resp) {
        u->request = NULL;
        u->done(req, resp, u->userdata);
        kube_update_free(u);
}

static int kube_update_get(KubeUpdate *u);

static void kube_update_on_put(KubeRequest *req, KubeResponse *resp, void *userdata) {
        KubeUpdate *u = userdata;
        int r;

        u->request = NULL;
        if (resp->error == -ESTALE && resp->http_code == 409 && u->attempts < KUBE_UPDATE_ATTEMPTS) {
                r = kube_update_get(u);
                if (r >= 0)
                        return;
        }
        kube_update_finish(u, req, resp);
}

static void kube_update_on_get(KubeRequest *req, KubeResponse *resp, void *userdata) {
        KubeUpdate *u = userdata;
        KubeResponse failed;
        int r;

        u->request = NULL;
        if (resp->error < 0 || !cJSON_IsObject(resp->body)) {
                kube_update_finish(u, req, resp);
                return;
        }

        r = u->mutate(resp->body, u->userdata);
        if (r > 0) {
                kube_update_finish(u, req, resp);
                return;
        }
        if (r >= 0)
                r = kube_request(u->client, KUBE_PUT, u->put_path, resp->body, kube_update_on_put, u,
                                 &u->request);
        if (r < 0) {
                failed = (KubeResponse){ .error = r, .message = strerror(-r) };
                kube_update_finish(u, req, &failed);
        }
}

static int kube_update_get(KubeUpdate *u) {
        u->attempts++;
        return kube_request(u->client, KUBE_GET, u->path, NULL, kube_update_on_get, u, &u->request);
}

int kube_update(KubeClient *c, const char *path, bool status, KubeMutateFn mutate, KubeResponseHandler done,
                void *userdata, KubeUpdate **ret) {
        KubeUpdate *u;
        int r;

        assert(c && path && mutate && done);

        u = calloc(1, sizeof(*u));
        if (!u)
                return -ENOMEM;
        u->client = c;
        u->mutate = mutate;
        u->done = done;
        u->userdata = userdata;
        u->path = strdup(path);
        if (!u->path || asprintf(&u->put_path, "%s%s", path, status ? "/status" : "") < 0) {
                u->put_path = NULL;
                kube_update_free(u);
                return -ENOMEM;
        }
        r = kube_update_get(u);
        if (r < 0) {
                kube_update_free(u);
                return r;
        }
        if (ret)
                *ret = u;
        return 0;
}
