/* SPDX-License-Identifier: Apache-2.0 */
/* notify.c: what reaches the service manager's socket, and watchdog pings driven by the loop. */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cmocka.h>

#include "basic/macro.h"
#include "basic/time-util.h"
#include "basic/string-util.h"
#include "notify.h"

static char sockdir[] = "/tmp/test-notify-XXXXXX";
static int notify_fd = -EBADF;

static int setup(void **state) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        (void) state;
        if (!mkdtemp(sockdir))
                return -1;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify", sockdir);
        notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (notify_fd < 0 || bind(notify_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -1;
        setenv("NOTIFY_SOCKET", sa.sun_path, 1);
        return 0;
}

static int teardown(void **state) {
        char path[128];

        (void) state;
        notify_fd = safe_close(notify_fd);
        snprintf(path, sizeof(path), "%s/notify", sockdir);
        unlink(path);
        rmdir(sockdir);
        unsetenv("NOTIFY_SOCKET");
        return 0;
}

/* The next datagram, or "" when none is queued. */
static const char *next_message(void) {
        static char buf[1024];
        ssize_t n = recv(notify_fd, buf, sizeof(buf) - 1, 0);

        buf[n < 0 ? 0 : n] = '\0';
        return buf;
}

static void ready_carries_status(void **state) {
        (void) state;
        assert_int_equal(notify_ready("Waiting for the Kubernetes API."), 0);
        assert_string_equal(next_message(), "READY=1\nSTATUS=Waiting for the Kubernetes API.");
        assert_string_equal(notify_get_status(), "Waiting for the Kubernetes API.");
}

static void status_is_sent_only_when_it_changes(void **state) {
        (void) state;
        notify_status("Leading %d controllers.", 3);
        assert_string_equal(next_message(), "STATUS=Leading 3 controllers.");
        notify_status("Leading %d controllers.", 3);
        assert_string_equal(next_message(), "");
        notify_status("Following.");
        assert_string_equal(next_message(), "STATUS=Following.");
}

static void reload_sends_reloading_with_monotonic_usec(void **state) {
        unsigned long long usec;
        usec_t before = now(CLOCK_MONOTONIC);
        const char *m;

        (void) state;
        notify_reloading();
        m = next_message();
        assert_true(strncmp(m, "RELOADING=1\nMONOTONIC_USEC=", 27) == 0);
        assert_int_equal(sscanf(m + 27, "%llu", &usec), 1);
        assert_true(usec >= before && usec <= now(CLOCK_MONOTONIC));
        notify_ready(NULL);
        assert_true(strncmp(next_message(), "READY=1\n", 8) == 0);
}

static void stopping_is_announced(void **state) {
        (void) state;
        notify_stopping("Shutting down.");
        assert_string_equal(next_message(), "STOPPING=1\nSTATUS=Shutting down.");
}

static int on_stop(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s, (void) usec;
        return sd_event_exit(userdata, 0);
}

/* Drains the socket as the service manager would; a full queue would block sd_notify(). */
static int on_notify_message(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        unsigned *pings = userdata;
        const char *m;

        (void) s, (void) fd, (void) revents;
        while (*(m = next_message()))
                if (streq(m, "WATCHDOG=1"))
                        (*pings)++;
        return 0;
}

static void watchdog_pings_follow_the_loop(void **state) {
        sd_event *e = NULL;
        sd_event_source *wd = NULL, *stop = NULL, *reader = NULL;
        unsigned pings = 0;

        (void) state;
        assert_int_equal(sd_event_new(&e), 0);

        /* No watchdog requested: no timer. */
        unsetenv("WATCHDOG_USEC");
        assert_int_equal(notify_watchdog_start(e, &wd), 0);
        assert_null(wd);

        setenv("WATCHDOG_USEC", "40000", 1); /* 40 ms → a ping every 20 ms */
        assert_int_equal(notify_watchdog_start(e, &wd), 1);
        assert_non_null(wd);
        assert_int_equal(sd_event_add_time_relative(e, &stop, CLOCK_MONOTONIC, 300 * USEC_PER_MSEC, 0, on_stop, e),
                         0);
        assert_int_equal(sd_event_add_io(e, &reader, notify_fd, EPOLLIN, on_notify_message, &pings), 0);
        assert_int_equal(sd_event_loop(e), 0);
        on_notify_message(NULL, notify_fd, EPOLLIN, &pings); /* a ping from the last iteration */
        /* 300 ms of loop at one ping per 20 ms; a generous lower bound for a loaded machine. */
        assert_true(pings >= 5);

        unsetenv("WATCHDOG_USEC");
        sd_event_source_unref(wd);
        sd_event_source_unref(stop);
        sd_event_source_unref(reader);
        sd_event_unref(e);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(ready_carries_status),
                cmocka_unit_test(status_is_sent_only_when_it_changes),
                cmocka_unit_test(reload_sends_reloading_with_monotonic_usec),
                cmocka_unit_test(stopping_is_announced),
                cmocka_unit_test(watchdog_pings_follow_the_loop),
        };
        return cmocka_run_group_tests_name("notify", tests, setup, teardown);
}
