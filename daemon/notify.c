/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <systemd/sd-daemon.h>

#include "basic/string-util.h"
#include "basic/time-util.h"
#include "log/log.h"
#include "notify.h"

static char notify_status_text[256] = "Starting.";

/* Keeps the text on one line: a newline in a message from the API would add assignments. */
static void remember_status(const char *status) {
        if (!status)
                return;
        (void) snprintf(notify_status_text, sizeof(notify_status_text), "%s", status);
        for (char *p = notify_status_text; *p; p++)
                if ((unsigned char) *p < ' ' || *p == 0x7f)
                        *p = ' ';
}

static int notify_send(const char *fmt, ...) _printf_(1, 2);
static int notify_send(const char *fmt, ...) {
        char msg[512];
        va_list ap;
        int r;

        va_start(ap, fmt);
        (void) vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);

        r = sd_notify(false, msg);
        if (r < 0)
                return log_debug_errno(r, "Failed to notify the service manager, ignoring: %m");
        return 0;
}

int notify_ready(const char *status) {
        remember_status(status);
        return notify_send("READY=1\nSTATUS=%s", notify_status_text);
}

int notify_status(const char *format, ...) {
        char buf[sizeof(notify_status_text)];
        va_list ap;

        va_start(ap, format);
        (void) vsnprintf(buf, sizeof(buf), format, ap);
        va_end(ap);
        for (char *p = buf; *p; p++)
                if ((unsigned char) *p < ' ' || *p == 0x7f)
                        *p = ' ';

        if (streq(buf, notify_status_text))
                return 0;
        remember_status(buf);
        return notify_send("STATUS=%s", notify_status_text);
}

int notify_reloading(void) {
        remember_status("Reloading configuration.");
        return notify_send("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=%s",
                           (unsigned long long) now(CLOCK_MONOTONIC), notify_status_text);
}

int notify_stopping(const char *status) {
        remember_status(status);
        return notify_send("STOPPING=1\nSTATUS=%s", notify_status_text);
}

const char *notify_get_status(void) {
        return notify_status_text;
}

static int notify_on_watchdog(sd_event_source *s, uint64_t usec, void *userdata) {
        usec_t period = *(usec_t *) userdata;

        (void) notify_send("WATCHDOG=1");
        return sd_event_source_set_time(s, usec + period);
}

int notify_watchdog_start(sd_event *e, sd_event_source **ret) {
        static usec_t period;
        uint64_t watchdog_usec;
        int r;

        r = sd_watchdog_enabled(false, &watchdog_usec);
        if (r < 0) {
                log_warning_errno(r, "Failed to read the watchdog settings, ignoring: %m");
                return 0;
        }
        if (r == 0 || watchdog_usec == 0)
                return 0;

        /* Ping twice per period: a missed ping has a whole half period of slack. */
        period = MAX(watchdog_usec / 2, USEC_PER_MSEC);
        r = sd_event_add_time_relative(e, ret, CLOCK_MONOTONIC, 0, USEC_PER_MSEC, notify_on_watchdog,
                                       &period);
        if (r < 0)
                return r;
        /* Timer sources are one-shot by default; this one re-arms itself in the callback. */
        r = sd_event_source_set_enabled(*ret, SD_EVENT_ON);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(*ret, "watchdog");
        log_debug("Watchdog pings every %llu us.", (unsigned long long) period);
        return 1;
}
