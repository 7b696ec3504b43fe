/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The only place that talks to the service manager (sd_notify). It also keeps the current
 * STATUS= text, which `hwameictl status` shows, so people and systemctl see the same words.
 * Without NOTIFY_SOCKET every call is a no-op apart from remembering the status.
 */

#include <systemd/sd-event.h>

#include "basic/macro.h"

/* READY=1 with a status line: local start-up is done. */
int notify_ready(const char *status);

/* STATUS= only; sent when the text changes. */
int notify_status(const char *format, ...) _printf_(1, 2);

/* RELOADING=1 with MONOTONIC_USEC=, before re-reading the configuration; notify_ready() after. */
int notify_reloading(void);

/* STOPPING=1 with a status line. */
int notify_stopping(const char *status);

/* The last STATUS= text (never NULL). */
const char *notify_get_status(void);

/*
 * When the service manager asked for watchdog pings (WATCHDOG_USEC for our PID), adds a timer to
 * e that sends WATCHDOG=1 every half period, so pings stop when the loop stops iterating.
 * Returns 0 when no watchdog was requested, 1 when the timer runs.
 */
int notify_watchdog_start(sd_event *e, sd_event_source **ret);
