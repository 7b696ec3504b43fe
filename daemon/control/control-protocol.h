/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The control socket protocol between hwameid and hwameictl.
 *
 * A client connects to the AF_UNIX stream socket (mode 0600, so root only), writes one request
 * as a JSON object on a single line ending in '\n', and reads one JSON object back, after which
 * the daemon closes the connection:
 *
 *   -> {"command":"status"}
 *   <- {"ok":true,"status":{...}}
 *   <- {"ok":false,"error":"Unknown command 'x'.","errno":95}
 */

#define CONTROL_REQUEST_MAX  4096U
#define CONTROL_REPLY_MAX    (1024U * 1024U)
#define CONTROL_TIMEOUT_USEC (5U * 1000U * 1000U)
