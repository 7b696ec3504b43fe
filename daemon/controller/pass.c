/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../basic/json-util.h"
#include "../log/log.h"
#include "pass.h"

struct PassController {
        KubeClient *client;
        char *name;
        PassFn fn;
        void *userdata;
        Informer *inf[PASS_INFORMERS_MAX];
        size_t n_inf;
        KubeRequest *request;
        sd_event_source *defer, *resync;
};

static int snap_add(const cJSON *o, void *userdata) {
        cJSON *dup = cJSON_Duplicate(o, true);

        if (!dup)
                return -ENOMEM;
        cJSON_AddItemToArray(userdata, dup);
        return 0;
}

cJSON *pass_controller_snapshot(PassController *pc, size_t i) {
        cJSON *a = cJSON_CreateArray();

        assert(i < pc->n_inf);
        if (a && kube_cache_foreach(informer_cache(pc->inf[i]), snap_add, a) < 0) {
                cJSON_Delete(a);
                return NULL;
        }
        return a;
}

static void pass_on_written(KubeRequest *req, KubeResponse *resp, void *userdata) {
        PassController *pc = userdata;

        (void) req;
        pc->request = NULL;
        if (resp->error < 0 && resp->error != -ENOENT && resp->error != -EEXIST) {
                log_warning("%s: writing to the API failed: %s; retrying.", pc->name, resp->message);
                (void) sd_event_source_set_time_relative(pc->resync, PASS_RETRY_DELAY);
                (void) sd_event_source_set_enabled(pc->resync, SD_EVENT_ON);
                return;
        }
        (void) sd_event_source_set_enabled(pc->defer, SD_EVENT_ONESHOT);
}

int pass_controller_send(PassController *pc, KubeMethod method, const char *path, const cJSON *body) {
        int r = kube_request(pc->client, method, path, body, pass_on_written, pc, &pc->request);
        return r < 0 ? r : 1;
}

static int pass_on_defer(sd_event_source *s, void *userdata) {
        PassController *pc = userdata;
        int r;

        (void) s;
        if (pc->request)
                return 0;
        for (size_t i = 0; i < pc->n_inf; i++)
                if (!informer_has_synced(pc->inf[i]))
                        return 0;
        r = pc->fn(pc, pc->userdata);
        if (r < 0)
                log_warning_errno(r, "%s: %m", pc->name);
        return 0;
}

static int pass_on_resync(sd_event_source *s, uint64_t usec, void *userdata) {
        PassController *pc = userdata;

        (void) sd_event_source_set_enabled(pc->defer, SD_EVENT_ONESHOT);
        return sd_event_source_set_time(s, usec + PASS_RESYNC_INTERVAL);
}

static void pass_on_change(Informer *inf, const cJSON *obj, void *userdata) {
        PassController *pc = userdata;

        (void) inf, (void) obj;
        (void) sd_event_source_set_enabled(pc->defer, SD_EVENT_ONESHOT);
}

static void pass_on_update(Informer *inf, const cJSON *old, const cJSON *obj, void *userdata) {
        (void) old;
        pass_on_change(inf, obj, userdata);
}

static void pass_on_synced(Informer *inf, void *userdata) {
        pass_on_change(inf, NULL, userdata);
}

int pass_controller_new(KubeClient *client, const char *name, const InformerConfig *configs, size_t n,
                        PassFn fn, void *userdata, PassController **ret) {
        static const InformerHandlers handlers = {
                .added = pass_on_change,
                .updated = pass_on_update,
                .deleted = pass_on_change,
                .synced = pass_on_synced,
        };
        _cleanup_(pass_controller_freep) PassController *pc = NULL;
        sd_event *e = kube_client_event(client);
        int r;

        if (n > PASS_INFORMERS_MAX)
                return -EINVAL;
        pc = calloc(1, sizeof(*pc));
        if (!pc || !(pc->name = strdup(name)))
                return -ENOMEM;
        pc->client = client;
        pc->fn = fn;
        pc->userdata = userdata;
        for (; pc->n_inf < n; pc->n_inf++) {
                r = informer_new(client, &configs[pc->n_inf], &handlers, pc, &pc->inf[pc->n_inf]);
                if (r < 0)
                        return r;
        }
        r = sd_event_add_defer(e, &pc->defer, pass_on_defer, pc);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(pc->defer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(pc->defer, name);
        r = sd_event_add_time_relative(e, &pc->resync, CLOCK_MONOTONIC, PASS_RESYNC_INTERVAL, 0,
                                       pass_on_resync, pc);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(pc->resync, name);
        *ret = TAKE_PTR(pc);
        return 0;
}

PassController *pass_controller_free(PassController *pc) {
        if (!pc)
                return NULL;
        kube_request_cancel(pc->request);
        for (size_t i = 0; i < pc->n_inf; i++)
                informer_free(pc->inf[i]);
        sd_event_source_disable_unref(pc->defer);
        sd_event_source_disable_unref(pc->resync);
        free(pc->name);
        free(pc);
        return NULL;
}

int pass_controller_start(PassController *pc) {
        for (size_t i = 0; i < pc->n_inf; i++) {
                int r = informer_start(pc->inf[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}
