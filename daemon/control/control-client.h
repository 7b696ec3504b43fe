/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The client end of the control socket (hwameictl). Blocking, with a timeout; not for the loop. */

#include <cjson/cJSON.h>

/*
 * Sends {"command": command} to the daemon at path and returns the reply's payload object.
 * When the daemon answers with an error, returns its negative errno and *ret_error (may be NULL)
 * gets its message. -ENOENT/-ECONNREFUSED mean no daemon listens there.
 */
int control_call(const char *path, const char *command, cJSON **ret_payload, char **ret_error);
