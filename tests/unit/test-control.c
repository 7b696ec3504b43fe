/* SPDX-License-Identifier: Apache-2.0 */
/*
 * control/: the daemon's socket server on a real sd_event loop, driven by the real client from
 * another thread, plus hostile clients that send garbage, too much, or nothing.
 */

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cmocka.h>

#include "basic/json-util.h"
#include "basic/string-util.h"
#include "control/control-client.h"
#include "control/control-protocol.h"
#include "control/control.h"

static char dir[] = "/tmp/test-control-XXXXXX";
static char path[256];

static int handler(const char *command, const cJSON *request, cJSON **ret_reply, char **ret_error,
                   void *userdata) {
        unsigned *calls = userdata;

        (void) request;
        (*calls)++;
        if (streq(command, "status")) {
                cJSON *o = cJSON_CreateObject();
                if (!o || !cJSON_AddStringToObject(o, "state", "running"))
                        return -ENOMEM;
                *ret_reply = o;
                return 0;
        }
        *ret_error = strdup("Unknown command.");
        return -EOPNOTSUPP;
}

typedef struct Client {
        void (*run)(struct Client *c);
        int done_fd;
        int r_status, r_unknown;
        char *status_state, *unknown_error;
        char raw_reply[4096];
} Client;

static void *client_thread(void *p) {
        Client *c = p;
        uint64_t one = 1;

        c->run(c);
        (void) !write(c->done_fd, &one, sizeof(one));
        return NULL;
}

static int on_client_done(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        (void) s, (void) fd, (void) revents;
        return sd_event_exit(userdata, 0);
}

/* Runs the server on this thread's loop while c->run talks to it from another thread. */
static unsigned serve_while(Client *c) {
        sd_event *e = NULL;
        sd_event_source *done = NULL;
        ControlServer *s = NULL;
        unsigned calls = 0;
        pthread_t t;

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(control_server_new(e, path, handler, &calls, &s), 0);
        c->done_fd = eventfd(0, EFD_CLOEXEC);
        assert_true(c->done_fd >= 0);
        assert_int_equal(sd_event_add_io(e, &done, c->done_fd, EPOLLIN, on_client_done, e), 0);
        assert_int_equal(pthread_create(&t, NULL, client_thread, c), 0);
        assert_int_equal(sd_event_loop(e), 0);
        assert_int_equal(pthread_join(t, NULL), 0);

        close(c->done_fd);
        sd_event_source_unref(done);
        control_server_free(s);
        sd_event_unref(e);
        return calls;
}

static void run_status_and_unknown(Client *c) {
        cJSON *reply = NULL;

        c->r_status = control_call(path, "status", &reply, NULL);
        if (reply)
                c->status_state = strdup(json_get_string(reply, "state") ?: "");
        cJSON_Delete(reply);
        c->r_unknown = control_call(path, "frobnicate", NULL, &c->unknown_error);
}

static void status_and_errors_reach_the_client(void **state) {
        Client c = { .run = run_status_and_unknown };
        struct stat st;

        (void) state;
        assert_int_equal(serve_while(&c), 2);
        assert_int_equal(c.r_status, 0);
        assert_string_equal(c.status_state, "running");
        assert_int_equal(c.r_unknown, -EOPNOTSUPP);
        assert_string_equal(c.unknown_error, "Unknown command.");
        free(c.status_state);
        free(c.unknown_error);
        /* The socket file goes away with the server. */
        assert_int_equal(stat(path, &st), -1);
        assert_int_equal(errno, ENOENT);
}

static int raw_connect(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        strcpy(sa.sun_path, path);
        if (fd < 0 || connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -1;
        return fd;
}

/* Sends data, returns what the server answered before closing. */
static void raw_exchange(Client *c, const char *data, size_t len) {
        int fd = raw_connect();
        size_t off = 0;
        ssize_t n;

        assert_true(fd >= 0);
        if (len > 0)
                (void) !send(fd, data, len, MSG_NOSIGNAL);
        shutdown(fd, SHUT_WR);
        while ((n = recv(fd, c->raw_reply + off, sizeof(c->raw_reply) - 1 - off, 0)) > 0)
                off += (size_t) n;
        c->raw_reply[off] = '\0';
        close(fd);
}

static void run_garbage(Client *c) {
        raw_exchange(c, "this is not json\n", 17);
}

static void garbage_gets_an_error_reply_not_a_crash(void **state) {
        Client c = { .run = run_garbage };

        (void) state;
        assert_int_equal(serve_while(&c), 0);
        assert_string_equal(c.raw_reply, "{\"ok\":false,\"error\":\"Request is not a JSON object.\",\"errno\":22}\n");
}

static void run_no_command(Client *c) {
        raw_exchange(c, "{\"cmd\":1}\n", 10);
}

static void request_without_command_is_refused(void **state) {
        Client c = { .run = run_no_command };

        (void) state;
        assert_int_equal(serve_while(&c), 0);
        assert_non_null(strstr(c.raw_reply, "Request has no \\\"command\\\" string."));
}

static void run_oversized(Client *c) {
        size_t n = CONTROL_REQUEST_MAX + 100;
        char *big = malloc(n);

        assert_non_null(big);
        memset(big, 'x', n);
        raw_exchange(c, big, n);
        free(big);
}

static void oversized_request_is_dropped_without_reply(void **state) {
        Client c = { .run = run_oversized };

        (void) state;
        assert_int_equal(serve_while(&c), 0);
        assert_string_equal(c.raw_reply, "");
}

static void run_half_then_status(Client *c) {
        cJSON *reply = NULL;

        /* A client that hangs up mid-request does not disturb the next one. */
        raw_exchange(c, "{\"command\":\"sta", 15);
        c->r_status = control_call(path, "status", &reply, NULL);
        cJSON_Delete(reply);
}

static void truncated_request_then_normal_client(void **state) {
        Client c = { .run = run_half_then_status };

        (void) state;
        assert_int_equal(serve_while(&c), 1);
        assert_string_equal(c.raw_reply, "");
        assert_int_equal(c.r_status, 0);
}

static void second_server_on_a_live_socket_is_refused(void **state) {
        sd_event *e = NULL;
        ControlServer *a = NULL, *b = NULL;
        unsigned calls = 0;

        (void) state;
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(control_server_new(e, path, handler, &calls, &a), 0);
        assert_int_equal(control_server_new(e, path, handler, &calls, &b), -EADDRINUSE);
        assert_null(b);
        control_server_free(a);
        sd_event_unref(e);
}

static void stale_socket_file_is_replaced(void **state) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        sd_event *e = NULL;
        ControlServer *s = NULL;
        unsigned calls = 0;
        int fd;

        (void) state;
        /* What a killed daemon leaves behind: a bound socket file nobody listens on. */
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        close(fd);

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(control_server_new(e, path, handler, &calls, &s), 0);
        control_server_free(s);
        sd_event_unref(e);
}

static void client_reports_missing_daemon(void **state) {
        (void) state;
        assert_int_equal(control_call(path, "status", NULL, NULL), -ENOENT);
}

static int setup(void **state) {
        (void) state;
        if (!mkdtemp(dir))
                return -1;
        /* A directory the server has to create. */
        snprintf(path, sizeof(path), "%s/sub/control.sock", dir);
        return 0;
}

static int teardown(void **state) {
        char sub[300];

        (void) state;
        snprintf(sub, sizeof(sub), "%s/sub", dir);
        unlink(path);
        rmdir(sub);
        return rmdir(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(status_and_errors_reach_the_client),
                cmocka_unit_test(garbage_gets_an_error_reply_not_a_crash),
                cmocka_unit_test(request_without_command_is_refused),
                cmocka_unit_test(oversized_request_is_dropped_without_reply),
                cmocka_unit_test(truncated_request_then_normal_client),
                cmocka_unit_test(second_server_on_a_live_socket_is_refused),
                cmocka_unit_test(stale_socket_file_is_replaced),
                cmocka_unit_test(client_reports_missing_daemon),
        };
        return cmocka_run_group_tests_name("control", tests, setup, teardown);
}
