/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The daemon's end of the control socket: accepts connections on the event loop, reads a
 * request, asks the handler for the reply and writes it back, all without blocking.
 */

#include <cjson/cJSON.h>
#include <systemd/sd-event.h>

#include "../basic/macro.h"

typedef struct ControlServer ControlServer;

/*
 * Handles one request. Returns >= 0 with *ret_reply set to the reply's payload (owned by the
 * caller), or a negative errno with *ret_error set to a message (owned by the caller).
 */
typedef int (*ControlHandler)(const char *command, const cJSON *request, cJSON **ret_reply, char **ret_error,
                              void *userdata);

/*
 * Binds path (creating its directory, mode 0755) and starts accepting. Refuses with -EADDRINUSE
 * when another process answers on path; a stale socket file is replaced.
 */
int control_server_new(sd_event *e, const char *path, ControlHandler handler, void *userdata,
                       ControlServer **ret);

/* Closes the listener and every open connection, and removes the socket file. */
ControlServer *control_server_free(ControlServer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(ControlServer *, control_server_free);

const char *control_server_path(const ControlServer *s);
