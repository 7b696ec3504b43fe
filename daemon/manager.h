/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cjson/cJSON.h>
#include <systemd/sd-event.h>

#include "basic/macro.h"
#include "config/hwameid-conf.h"

typedef enum ManagerState {
        MANAGER_STARTING,
        MANAGER_RUNNING,
        MANAGER_RELOADING,
        MANAGER_STOPPING,
        _MANAGER_STATE_MAX,
        _MANAGER_STATE_INVALID = -EINVAL,
} ManagerState;

const char *manager_state_to_string(ManagerState s);

typedef struct Manager Manager;

/*
 * Takes over *config (left empty). config_path is re-read on SIGHUP. log_level_override >= 0
 * pins the log level (from the command line) over the file's.
 */
int manager_new(const char *config_path, Config *config, int log_level_override, Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* Binds the control socket and starts every subsystem; nothing here waits for the network. */
int manager_start(Manager *m);

/* Tells the service manager we are ready, runs the loop until SIGTERM/SIGINT. Returns the exit
 * code of the loop (0 on a clean stop) or a negative errno. */
int manager_run(Manager *m);

/* Re-reads the configuration; on failure the running configuration stays. */
int manager_reload(Manager *m);

/* What `hwameictl status` shows. */
int manager_status_json(Manager *m, cJSON **ret);
