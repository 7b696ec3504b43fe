/* SPDX-License-Identifier: Apache-2.0 */

/*
 * The manager owns the event loop and everything that lives on it.
 *
 * Flow of events. One sd_event loop runs on the main thread; every fd, timer and signal is a
 * source on it, and every piece of control-plane state is touched only from its callbacks:
 *
 *   SIGTERM/SIGINT ─> manager_on_signal ─> STOPPING=1, loop exits, manager_free() unwinds
 *   SIGHUP         ─> manager_reload ─> RELOADING=1, config re-read (kept on error), READY=1
 *   control socket ─> control.c reads a request ─> manager_on_control ─> reply
 *   watchdog timer ─> notify.c sends WATCHDOG=1 while the loop keeps iterating
 *   cluster timer  ─> manager_on_cluster_timer: waits, with capped exponential backoff, for the
 *                     Kubernetes API to become usable, saying why in STATUS=
 *
 * READY=1 is sent once local start-up is done (configuration read, control socket bound). The
 * daemon never waits for the cluster to be ready: it says what it waits for and keeps trying.
 * Blocking work (LVM, bulk copies) never runs here; it runs on worker threads that post results
 * back to the loop.
 */

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "basic/json-util.h"
#include "basic/string-util.h"
#include "basic/time-util.h"
#include "control/control.h"
#include "log/catalog-ids.h"
#include "log/log.h"
#include "manager.h"
#include "notify.h"

#define CLUSTER_RETRY_MIN_USEC (1 * USEC_PER_SEC)
#define CLUSTER_RETRY_MAX_USEC (30 * USEC_PER_SEC)

struct Manager {
        sd_event *event;
        sd_event_source *sigterm_source, *sigint_source, *sighup_source, *watchdog_source;

        char *config_path;
        Config config;
        int log_level_override;
        unsigned n_reloads;
        char *last_reload_error; /* NULL when the last reload worked */

        ControlServer *control;
        ManagerState state;
        usec_t start_usec;

        /* The connection to the Kubernetes API. */
        sd_event_source *cluster_timer;
        usec_t cluster_retry_usec;
        char cluster_message[256];
};

static const char *const manager_state_table[_MANAGER_STATE_MAX] = {
        [MANAGER_STARTING] = "starting",
        [MANAGER_RUNNING] = "running",
        [MANAGER_RELOADING] = "reloading",
        [MANAGER_STOPPING] = "stopping",
};

const char *manager_state_to_string(ManagerState s) {
        if (s < 0 || s >= _MANAGER_STATE_MAX)
                return NULL;
        return manager_state_table[s];
}

static void manager_set_state(Manager *m, ManagerState state) {
        if (m->state == state)
                return;
        log_debug("Manager state %s → %s.", manager_state_to_string(m->state),
                  manager_state_to_string(state));
        m->state = state;
}

/* STATUS= says what the daemon is doing; derived from state, never stored twice. */
static void manager_update_status(Manager *m) {
        if (m->state != MANAGER_RUNNING)
                return;
        if (m->last_reload_error)
                (void) notify_status("Running with the previous configuration (reload failed: %s). %s",
                                     m->last_reload_error, m->cluster_message);
        else
                (void) notify_status("%s", m->cluster_message);
}

static void manager_apply_log_level(Manager *m) {
        log_set_max_level(m->log_level_override >= 0 ? m->log_level_override : m->config.log_level);
}

/* Until the Kubernetes client exists, "usable" means the kubeconfig can be read. */
static int manager_cluster_try(Manager *m) {
        const char *path = m->config.kubeconfig;

        if (access(path, R_OK) < 0) {
                int r = -errno;
                char delay[FORMAT_TIMESPAN_MAX];

                (void) snprintf(m->cluster_message, sizeof(m->cluster_message),
                                "Waiting for the Kubernetes API: kubeconfig '%s' is not readable (%s); "
                                "retrying in %s.",
                                path, strerror(-r),
                                format_timespan(delay, sizeof(delay), m->cluster_retry_usec));
                log_ratelimit_errno(LOG_INFO, r, 5 * USEC_PER_MINUTE, 1,
                                    "Kubeconfig '%s' is not readable, will retry: %m", path);
                return r;
        }
        (void) snprintf(m->cluster_message, sizeof(m->cluster_message),
                        "Kubeconfig '%s' found; this build has no Kubernetes client yet.", path);
        log_info("Kubeconfig '%s' found.", path);
        return 0;
}

/* One attempt; on failure the timer is armed for the next one, with capped backoff. */
static int manager_cluster_attempt(Manager *m) {
        int r;

        r = manager_cluster_try(m);
        manager_update_status(m);
        if (r >= 0)
                return sd_event_source_set_enabled(m->cluster_timer, SD_EVENT_OFF);

        r = sd_event_source_set_time_relative(m->cluster_timer, m->cluster_retry_usec);
        if (r < 0)
                return r;
        m->cluster_retry_usec = MIN(m->cluster_retry_usec * 2, CLUSTER_RETRY_MAX_USEC);
        return sd_event_source_set_enabled(m->cluster_timer, SD_EVENT_ONESHOT);
}

static int manager_on_cluster_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s, (void) usec;
        return manager_cluster_attempt(userdata);
}

/* (Re)starts the attempts to reach the cluster: one now, then with the backoff reset. */
static int manager_cluster_start(Manager *m) {
        int r;

        m->cluster_retry_usec = CLUSTER_RETRY_MIN_USEC;
        if (!m->cluster_timer) {
                r = sd_event_add_time(m->event, &m->cluster_timer, CLOCK_MONOTONIC, USEC_INFINITY, 0,
                                      manager_on_cluster_timer, m);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(m->cluster_timer, "cluster-retry");
        }
        return manager_cluster_attempt(m);
}

static int manager_on_control(const char *command, const cJSON *request, cJSON **ret_reply, char **ret_error,
                              void *userdata) {
        Manager *m = userdata;

        (void) request;
        if (streq(command, "status"))
                return manager_status_json(m, ret_reply);

        if (asprintf(ret_error, "Unknown command '%s'.", command) < 0)
                return -ENOMEM;
        return -EOPNOTSUPP;
}

static int manager_bind_control(Manager *m) {
        ControlServer *s = NULL;
        int r;

        r = control_server_new(m->event, m->config.control_socket, manager_on_control, m, &s);
        if (r == -EADDRINUSE)
                return log_error_errno(r, "Another hwameid is answering on control socket '%s'.",
                                       m->config.control_socket);
        if (r < 0)
                return log_error_errno(r, "Failed to bind control socket '%s': %m",
                                       m->config.control_socket);
        control_server_free(m->control);
        m->control = s;
        return 0;
}

int manager_reload(Manager *m) {
        Config new = {};
        int r;

        manager_set_state(m, MANAGER_RELOADING);
        (void) notify_reloading();
        log_info("Reloading configuration from '%s'.", m->config_path);
        m->n_reloads++;

        r = config_load(&new, m->config_path);
        if (r < 0) {
                free(m->last_reload_error);
                m->last_reload_error = strdup(r == -ENOMEM ? "out of memory"
                                                           : "invalid configuration, see the log");
                log_struct_errno(LOG_ERR, r, HWAMEID_MESSAGE_RELOAD_FAILED,
                                 "Reloading '%s' failed; keeping the running configuration.",
                                 m->config_path);
                goto finish;
        }
        m->last_reload_error = mfree(m->last_reload_error);

        if (!streq(new.node_name, m->config.node_name)) {
                log_warning("[Node] Name= changed from '%s' to '%s'; this takes effect at the next restart.",
                            m->config.node_name, new.node_name);
                SWAP(new.node_name, m->config.node_name);
        }
        if (!streq(new.control_socket, m->config.control_socket)) {
                SWAP(new.control_socket, m->config.control_socket);
                if (manager_bind_control(m) < 0) {
                        log_warning("Keeping control socket '%s'.", new.control_socket);
                        SWAP(new.control_socket, m->config.control_socket);
                }
        }
        bool kubeconfig_changed = !streq(new.kubeconfig, m->config.kubeconfig);

        /* What remains in new after the swaps above is the old value or equal to the running one. */
        SWAP(new.kubeconfig, m->config.kubeconfig);
        m->config.log_level = new.log_level;
        manager_apply_log_level(m);

        if (kubeconfig_changed) {
                log_info("Kubeconfig changed to '%s'.", m->config.kubeconfig);
                r = manager_cluster_start(m);
                if (r < 0)
                        log_warning_errno(r, "Failed to restart the cluster connection, ignoring: %m");
        }

finish:
        config_done(&new);
        manager_set_state(m, MANAGER_RUNNING);
        manager_update_status(m);
        (void) notify_ready(NULL);
        return r < 0 ? r : 0;
}

static int manager_on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        (void) s;
        switch (si->ssi_signo) {
        case SIGHUP:
                (void) manager_reload(m);
                return 0;
        case SIGTERM:
        case SIGINT:
                log_info("Received %s, shutting down.", si->ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
                manager_set_state(m, MANAGER_STOPPING);
                (void) notify_stopping("Shutting down.");
                return sd_event_exit(m->event, 0);
        default:
                return 0;
        }
}

int manager_new(const char *config_path, Config *config, int log_level_override, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        sigset_t mask;
        int r;

        assert(config_path);
        assert(config);
        assert(ret);

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->config_path = strdup(config_path);
        if (!m->config_path)
                return -ENOMEM;
        m->config = *config;
        *config = (Config){};
        m->log_level_override = log_level_override;
        m->start_usec = now(CLOCK_MONOTONIC);
        manager_apply_log_level(m);

        r = sd_event_default(&m->event);
        if (r < 0)
                return r;

        /* Signals are delivered through signalfd, so they must be blocked first. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return -errno;
        r = sd_event_add_signal(m->event, &m->sigterm_source, SIGTERM, manager_on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, &m->sigint_source, SIGINT, manager_on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, &m->sighup_source, SIGHUP, manager_on_signal, m);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        control_server_free(m->control);
        sd_event_source_disable_unref(m->cluster_timer);
        sd_event_source_disable_unref(m->watchdog_source);
        sd_event_source_disable_unref(m->sigterm_source);
        sd_event_source_disable_unref(m->sigint_source);
        sd_event_source_disable_unref(m->sighup_source);
        sd_event_unref(m->event);
        config_done(&m->config);
        free(m->config_path);
        free(m->last_reload_error);
        free(m);
        return NULL;
}

int manager_start(Manager *m) {
        int r;

        log_struct(LOG_INFO, HWAMEID_MESSAGE_STARTED, "hwameid %s starting on node '%s'.", HWAMEID_VERSION,
                   m->config.node_name);

        r = manager_bind_control(m);
        if (r < 0)
                return r;

        r = notify_watchdog_start(m->event, &m->watchdog_source);
        if (r < 0)
                return log_error_errno(r, "Failed to start watchdog pings: %m");

        r = manager_cluster_start(m);
        if (r < 0)
                return log_error_errno(r, "Failed to start the cluster connection: %m");
        return 0;
}

int manager_run(Manager *m) {
        int r;

        manager_set_state(m, MANAGER_RUNNING);
        (void) notify_ready(m->cluster_message);

        r = sd_event_loop(m->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");

        log_struct(LOG_INFO, HWAMEID_MESSAGE_STOPPED, "hwameid stopped.");
        return r;
}

int manager_status_json(Manager *m, cJSON **ret) {
        _cleanup_json_ cJSON *o = NULL, *cluster = NULL;
        bool ok = true;

        o = cJSON_CreateObject();
        cluster = cJSON_CreateObject();
        if (!o || !cluster)
                return -ENOMEM;

        ok = ok && cJSON_AddStringToObject(o, "version", HWAMEID_VERSION);
        ok = ok && cJSON_AddNumberToObject(o, "pid", getpid());
        ok = ok && cJSON_AddStringToObject(o, "node", m->config.node_name);
        ok = ok && cJSON_AddStringToObject(o, "state", manager_state_to_string(m->state));
        ok = ok && cJSON_AddStringToObject(o, "status", notify_get_status());
        ok = ok && cJSON_AddNumberToObject(o, "uptimeSeconds",
                                           (double) ((now(CLOCK_MONOTONIC) - m->start_usec) / USEC_PER_SEC));
        ok = ok && cJSON_AddStringToObject(o, "configFile", m->config_path);
        ok = ok && cJSON_AddNumberToObject(o, "reloads", m->n_reloads);
        ok = ok &&
             (m->last_reload_error ? cJSON_AddStringToObject(o, "lastReloadError", m->last_reload_error)
                                   : cJSON_AddNullToObject(o, "lastReloadError"));
        ok = ok && cJSON_AddStringToObject(o, "logLevel", log_level_to_string(log_get_max_level()));
        ok = ok && cJSON_AddStringToObject(o, "controlSocket", control_server_path(m->control));
        ok = ok && cJSON_AddStringToObject(cluster, "kubeconfig", m->config.kubeconfig);
        ok = ok && cJSON_AddStringToObject(cluster, "message", m->cluster_message);
        if (!ok)
                return -ENOMEM;
        cJSON_AddItemToObject(o, "cluster", TAKE_PTR(cluster));

        *ret = TAKE_PTR(o);
        return 0;
}
