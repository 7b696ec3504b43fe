/* SPDX-License-Identifier: Apache-2.0 */
/*
 * metrics/: the exposition text (escaping, names, numbers, limits), and the HTTP server on a real
 * sd_event loop driven by raw clients from another thread: routes, methods, HEAD, readiness,
 * a collector that fails, idle clients, the connection limit and the idle timeout, and no fd left
 * behind.
 */

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "basic/string-util.h"
#include "metrics/metrics.h"

/* ---- the text ------------------------------------------------------------------------------ */

static char *text_of(MetricsText *t) {
        char *s = NULL;
        size_t n = 0;

        assert_int_equal(metrics_text_steal(t, &s, &n), 0);
        assert_int_equal(strlen(s), n);
        return s;
}

static void label_values_are_escaped(void **state) {
        MetricsText t = METRICS_TEXT_INIT;
        _cleanup_free_ char *s = NULL;

        (void) state;
        assert_int_equal(metrics_text_family(&t, "hwameid_pool_volumes", METRICS_GAUGE, "Volumes."), 0);
        assert_int_equal(metrics_text_sample(&t, METRICS_LABELS("pool", "a\\b\"c\nd", "class", "HDD"), 3),
                         0);
        assert_int_equal(metrics_text_sample(&t, METRICS_LABELS("pool", ""), 0), 0);
        s = text_of(&t);
        assert_string_equal(s, "# HELP hwameid_pool_volumes Volumes.\n"
                               "# TYPE hwameid_pool_volumes gauge\n"
                               "hwameid_pool_volumes{pool=\"a\\\\b\\\"c\\nd\",class=\"HDD\"} 3\n"
                               "hwameid_pool_volumes{pool=\"\"} 0\n");
}

static void help_is_escaped_but_keeps_quotes(void **state) {
        MetricsText t = METRICS_TEXT_INIT;
        _cleanup_free_ char *s = NULL;

        (void) state;
        assert_int_equal(metrics_text_family(&t, "x_total", METRICS_COUNTER, "a \"b\" c\\d\ne"), 0);
        assert_int_equal(metrics_text_sample(&t, NULL, 7), 0);
        assert_int_equal(metrics_text_family(&t, "y", METRICS_UNTYPED, NULL), 0);
        s = text_of(&t);
        assert_string_equal(s, "# HELP x_total a \"b\" c\\\\d\\ne\n"
                               "# TYPE x_total counter\n"
                               "x_total 7\n"
                               "# HELP y \n"
                               "# TYPE y untyped\n");
}

static const char *value_text(double v, char *buf, size_t size) {
        MetricsText t = METRICS_TEXT_INIT;
        _cleanup_free_ char *s = NULL;
        const char *sp;

        assert_int_equal(metrics_text_family(&t, "v", METRICS_GAUGE, ""), 0);
        assert_int_equal(metrics_text_sample(&t, NULL, v), 0);
        s = text_of(&t);
        sp = strrchr(s, ' ');
        assert_non_null(sp);
        snprintf(buf, size, "%.*s", (int) strcspn(sp + 1, "\n"), sp + 1);
        return buf;
}

static void numbers_read_back_exactly(void **state) {
        char b[64];

        (void) state;
        assert_string_equal(value_text(0, b, sizeof(b)), "0");
        assert_string_equal(value_text(-0.0, b, sizeof(b)), "0");
        assert_string_equal(value_text(1, b, sizeof(b)), "1");
        assert_string_equal(value_text(-42, b, sizeof(b)), "-42");
        assert_string_equal(value_text(10737418240.0, b, sizeof(b)), "10737418240");
        assert_string_equal(value_text(0x1p60, b, sizeof(b)), "1152921504606846976");
        assert_string_equal(value_text(0.5, b, sizeof(b)), "0.5");
        assert_string_equal(value_text(0.1, b, sizeof(b)), "0.1");
        assert_string_equal(value_text(1e-9, b, sizeof(b)), "1e-09");
        assert_string_equal(value_text(1e300, b, sizeof(b)), "1e+300");
        assert_string_equal(value_text(NAN, b, sizeof(b)), "NaN");
        assert_string_equal(value_text(INFINITY, b, sizeof(b)), "+Inf");
        assert_string_equal(value_text(-INFINITY, b, sizeof(b)), "-Inf");
        assert_true(strtod(value_text(1.0 / 3, b, sizeof(b)), NULL) == 1.0 / 3);
}

static void names_are_checked(void **state) {
        (void) state;
        assert_true(metrics_name_is_valid("hwameid_up"));
        assert_true(metrics_name_is_valid(":a:b_1"));
        assert_false(metrics_name_is_valid(""));
        assert_false(metrics_name_is_valid("1x"));
        assert_false(metrics_name_is_valid("a-b"));
        assert_false(metrics_name_is_valid("a b"));
        assert_true(metrics_label_name_is_valid("pool"));
        assert_true(metrics_label_name_is_valid("_x1"));
        assert_false(metrics_label_name_is_valid("__reserved"));
        assert_false(metrics_label_name_is_valid("a:b"));
        assert_false(metrics_label_name_is_valid("9"));
        assert_false(metrics_label_name_is_valid(""));
}

static void errors_stick_and_nothing_half_written_is_handed_out(void **state) {
        MetricsText t = METRICS_TEXT_INIT;
        char *s = NULL;
        size_t n = 0;

        (void) state;
        /* A sample before any family. */
        assert_int_equal(metrics_text_sample(&t, NULL, 1), -EINVAL);
        assert_int_equal(metrics_text_family(&t, "ok", METRICS_GAUGE, "fine"), -EINVAL);
        assert_int_equal(metrics_text_error(&t), -EINVAL);
        assert_int_equal(metrics_text_steal(&t, &s, &n), -EINVAL);
        assert_null(s);
        metrics_text_done(&t);

        assert_int_equal(metrics_text_family(&t, "bad-name", METRICS_GAUGE, ""), -EINVAL);
        metrics_text_done(&t);
        assert_int_equal(metrics_text_family(&t, "ok", _METRICS_TYPE_MAX, ""), -EINVAL);
        metrics_text_done(&t);

        /* A bad label name or a missing value fails the sample and writes none of it. */
        assert_int_equal(metrics_text_family(&t, "ok", METRICS_GAUGE, ""), 0);
        assert_int_equal(metrics_text_sample(&t, METRICS_LABELS("a", "1", "__b", "2"), 1), -EINVAL);
        assert_null(strstr(t.buf, "ok{"));
        metrics_text_done(&t);
        assert_int_equal(metrics_text_family(&t, "ok", METRICS_GAUGE, ""), 0);
        assert_int_equal(metrics_text_sample(&t, (const char *const[]){ "a", NULL }, 1), -EINVAL);
        metrics_text_done(&t);

        /* An empty text is an empty string. */
        assert_int_equal(metrics_text_steal(&t, &s, &n), 0);
        assert_string_equal(s, "");
        assert_int_equal(n, 0);
        free(s);
}

static void runaway_text_is_refused(void **state) {
        MetricsText t = METRICS_TEXT_INIT;
        char *big = malloc(METRICS_TEXT_MAX / 4 + 1);
        int r = 0;

        (void) state;
        assert_non_null(big);
        memset(big, 'x', METRICS_TEXT_MAX / 4);
        big[METRICS_TEXT_MAX / 4] = '\0';
        assert_int_equal(metrics_text_family(&t, "big", METRICS_GAUGE, ""), 0);
        for (unsigned i = 0; i < 8 && r >= 0; i++)
                r = metrics_text_sample(&t, METRICS_LABELS("v", big), i);
        assert_int_equal(r, -E2BIG);
        assert_true(t.len <= METRICS_TEXT_MAX);
        assert_int_equal(metrics_text_sample(&t, NULL, 1), -E2BIG);
        metrics_text_done(&t);
        free(big);
}

/* ---- the server ---------------------------------------------------------------------------- */

typedef struct Exchange {
        char reply[8192];
        size_t len;
        int status;
} Exchange;

typedef struct Client {
        void (*run)(struct Client *c);
        uint16_t port;
        int done_fd;
        Exchange x[8];
        int idle_closed_after_ms;
        bool collect_fails, ready;
        char reason[64];
        unsigned collect_calls;
} Client;

static int raw_connect(uint16_t port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd < 0 || connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        return fd;
}

/* Sends request (closing the connection after it), reads the whole answer. */
static void exchange_on(int fd, Exchange *x, const char *request) {
        ssize_t n;

        x->len = 0;
        x->status = -1;
        if (fd < 0)
                return;
        (void) !send(fd, request, strlen(request), MSG_NOSIGNAL);
        while ((n = recv(fd, x->reply + x->len, sizeof(x->reply) - 1 - x->len, 0)) > 0)
                x->len += (size_t) n;
        x->reply[x->len] = '\0';
        if (sscanf(x->reply, "HTTP/1.%*d %d", &x->status) != 1)
                x->status = -1;
        close(fd);
}

static void exchange(Client *c, Exchange *x, const char *method, const char *path) {
        char req[256];

        snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", method,
                 path);
        exchange_on(raw_connect(c->port), x, req);
}

static const char *body_of(const Exchange *x) {
        const char *b = strstr(x->reply, "\r\n\r\n");
        return b ? b + 4 : "";
}

static bool has_header(const Exchange *x, const char *header) {
        const char *end = strstr(x->reply, "\r\n\r\n");
        const char *h = strstr(x->reply, header);
        return h && end && h < end;
}

static int collect(MetricsText *t, void *userdata) {
        Client *c = userdata;

        c->collect_calls++;
        if (c->collect_fails)
                return -EIO;
        (void) metrics_text_family(t, "test_up", METRICS_GAUGE, "Up.");
        return metrics_text_sample(t, NULL, 1);
}

static bool ready(char *reason, size_t size, void *userdata) {
        Client *c = userdata;

        snprintf(reason, size, "%s", c->reason);
        return c->ready;
}

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

static unsigned count_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        unsigned n = 0;

        assert_non_null(d);
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

/* Runs a server on this thread's loop while c->run talks to it from another thread. */
static uint64_t serve_while(Client *c, const MetricsServerOptions *o) {
        static const MetricsCallbacks cb = { .collect = collect, .ready = ready };
        sd_event *e = NULL;
        sd_event_source *done = NULL;
        MetricsServer *s = NULL;
        unsigned fds = count_fds();
        uint64_t requests;
        pthread_t t;

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(metrics_server_new(e, o, &cb, c, &s), 0);
        c->port = metrics_server_port(s);
        assert_true(c->port > 0);
        c->done_fd = eventfd(0, EFD_CLOEXEC);
        assert_true(c->done_fd >= 0);
        assert_int_equal(sd_event_add_io(e, &done, c->done_fd, EPOLLIN, on_client_done, e), 0);
        assert_int_equal(pthread_create(&t, NULL, client_thread, c), 0);
        assert_int_equal(sd_event_loop(e), 0);
        assert_int_equal(pthread_join(t, NULL), 0);

        requests = metrics_server_requests(s);
        close(c->done_fd);
        sd_event_source_unref(done);
        metrics_server_free(s);
        sd_event_unref(e);
        /* The listener, MHD's epoll fd and every connection are gone. */
        assert_int_equal(count_fds(), fds);
        return requests;
}

static void run_routes(Client *c) {
        exchange(c, &c->x[0], "GET", "/metrics");
        exchange(c, &c->x[1], "HEAD", "/metrics");
        exchange(c, &c->x[2], "GET", "/healthz");
        exchange(c, &c->x[3], "GET", "/nothing");
        exchange(c, &c->x[4], "POST", "/metrics");
        exchange(c, &c->x[5], "DELETE", "/healthz");
        exchange(c, &c->x[6], "GET", "/metrics?x=1");
        exchange(c, &c->x[7], "GET", "/metrics/");
}

static void routes_methods_and_head(void **state) {
        Client c = { .run = run_routes, .ready = true };

        (void) state;
        assert_int_equal(serve_while(&c, &(MetricsServerOptions){ .address = "127.0.0.1" }), 8);
        assert_int_equal(c.x[0].status, 200);
        assert_true(has_header(&c.x[0], "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert_string_equal(body_of(&c.x[0]), "# HELP test_up Up.\n# TYPE test_up gauge\ntest_up 1\n");
        /* HEAD: the same headers, no body. */
        assert_int_equal(c.x[1].status, 200);
        {
                char h[64];
                snprintf(h, sizeof(h), "Content-Length: %zu\r\n", strlen(body_of(&c.x[0])));
                assert_true(has_header(&c.x[1], h));
        }
        assert_string_equal(body_of(&c.x[1]), "");
        assert_int_equal(c.x[2].status, 200);
        assert_string_equal(body_of(&c.x[2]), "ok\n");
        assert_int_equal(c.x[3].status, 404);
        assert_int_equal(c.x[4].status, 405);
        assert_true(has_header(&c.x[4], "Allow: GET, HEAD\r\n"));
        assert_int_equal(c.x[5].status, 405);
        assert_int_equal(c.x[6].status, 200); /* a query string does not change the path */
        assert_int_equal(c.x[7].status, 404);
        assert_int_equal(c.collect_calls, 3);
}

static void run_readyz_and_metrics(Client *c) {
        exchange(c, &c->x[0], "GET", "/readyz");
        exchange(c, &c->x[1], "GET", "/metrics");
        exchange(c, &c->x[2], "GET", "/healthz");
}

static void readiness_with_its_reason_and_a_failing_collector(void **state) {
        Client ok = { .run = run_readyz_and_metrics, .ready = true };
        Client unready = { .run = run_readyz_and_metrics,
                           .reason = "Waiting for\nthe API.",
                           .collect_fails = true };
        Client unsaid = { .run = run_readyz_and_metrics };

        (void) state;
        serve_while(&ok, &(MetricsServerOptions){ .address = "127.0.0.1" });
        assert_int_equal(ok.x[0].status, 200);
        assert_string_equal(body_of(&ok.x[0]), "ok\n");
        assert_int_equal(ok.x[1].status, 200);

        serve_while(&unready, &(MetricsServerOptions){ .address = "127.0.0.1" });
        assert_int_equal(unready.x[0].status, 503);
        assert_string_equal(body_of(&unready.x[0]), "Waiting for the API.\n"); /* one line */
        assert_int_equal(unready.x[1].status, 500);                            /* the collector failed */
        assert_int_equal(unready.x[2].status, 200);                            /* alive all the same */

        serve_while(&unsaid, &(MetricsServerOptions){ .address = "127.0.0.1" });
        assert_int_equal(unsaid.x[0].status, 503);
        assert_string_equal(body_of(&unsaid.x[0]), "not ready\n");
}

static void run_keep_alive(Client *c) {
        const char *two = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: "
                          "x\r\nConnection: close\r\n\r\n";
        exchange_on(raw_connect(c->port), &c->x[0], two);
}

static void two_requests_on_one_connection(void **state) {
        Client c = { .run = run_keep_alive, .ready = true };
        const char *second;

        (void) state;
        assert_int_equal(serve_while(&c, &(MetricsServerOptions){ .address = "127.0.0.1" }), 2);
        assert_int_equal(c.x[0].status, 200);
        second = strstr(c.x[0].reply + 1, "HTTP/1.1 200 OK");
        assert_non_null(second);
}

static void run_idle_clients(Client *c) {
        int idle[2];
        struct pollfd p;
        struct timespec a, b;
        char ch;

        /* Two clients that connect and say nothing hold both slots... */
        idle[0] = raw_connect(c->port);
        idle[1] = raw_connect(c->port);
        /* ...a third is answered once the idle ones time out (1 s), not before. */
        clock_gettime(CLOCK_MONOTONIC, &a);
        exchange(c, &c->x[0], "GET", "/healthz");
        clock_gettime(CLOCK_MONOTONIC, &b);
        c->idle_closed_after_ms = (int) ((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000);
        /* The idle connections were closed by the server. */
        p = (struct pollfd){ .fd = idle[0], .events = POLLIN };
        if (poll(&p, 1, 5000) != 1 || recv(idle[0], &ch, 1, 0) != 0)
                c->idle_closed_after_ms = -1;
        close(idle[0]);
        close(idle[1]);
}

static void idle_clients_time_out_and_the_limit_holds(void **state) {
        Client c = { .run = run_idle_clients, .ready = true };

        (void) state;
        serve_while(&c,
                    &(MetricsServerOptions){ .address = "127.0.0.1", .max_connections = 2, .timeout = 1 });
        assert_int_equal(c.x[0].status, 200);
        assert_true(c.idle_closed_after_ms >= 500);
        assert_true(c.idle_closed_after_ms < 5000);
}

static void run_slow_client(Client *c) {
        int idle = raw_connect(c->port);

        /* One client that says nothing does not hold up others. */
        (void) !send(idle, "GET /metr", 9, MSG_NOSIGNAL);
        for (unsigned i = 0; i < 4; i++)
                exchange(c, &c->x[i], "GET", "/healthz");
        close(idle);
}

static void a_slow_client_does_not_block_others(void **state) {
        Client c = { .run = run_slow_client, .ready = true };

        (void) state;
        serve_while(&c, &(MetricsServerOptions){ .address = "127.0.0.1", .timeout = 30 });
        for (unsigned i = 0; i < 4; i++)
                assert_int_equal(c.x[i].status, 200);
}

static void bad_addresses_and_busy_ports(void **state) {
        sd_event *e = NULL;
        MetricsServer *a = NULL, *b = NULL;
        unsigned fds = count_fds();

        (void) state;
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(
                metrics_server_new(e, &(MetricsServerOptions){ .address = "localhost" }, NULL, NULL, &a),
                -EINVAL);
        assert_int_equal(metrics_server_new(e, &(MetricsServerOptions){ .address = "" }, NULL, NULL, &a),
                         -EINVAL);
        assert_int_equal(
                metrics_server_new(e, &(MetricsServerOptions){ .address = "192.0.2.1" }, NULL, NULL, &a),
                -EADDRNOTAVAIL);
        assert_int_equal(metrics_server_new(e, &(MetricsServerOptions){ .address = "::1" }, NULL, NULL, &a),
                         0);
        assert_true(metrics_server_port(a) > 0);
        assert_int_equal(metrics_server_new(
                                 e,
                                 &(MetricsServerOptions){ .address = "::1", .port = metrics_server_port(a) },
                                 NULL, NULL, &b),
                         -EADDRINUSE);
        assert_null(b);
        metrics_server_free(a);
        sd_event_unref(e);
        assert_int_equal(count_fds(), fds);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(label_values_are_escaped),
                cmocka_unit_test(help_is_escaped_but_keeps_quotes),
                cmocka_unit_test(numbers_read_back_exactly),
                cmocka_unit_test(names_are_checked),
                cmocka_unit_test(errors_stick_and_nothing_half_written_is_handed_out),
                cmocka_unit_test(runaway_text_is_refused),
                cmocka_unit_test(routes_methods_and_head),
                cmocka_unit_test(readiness_with_its_reason_and_a_failing_collector),
                cmocka_unit_test(two_requests_on_one_connection),
                cmocka_unit_test(idle_clients_time_out_and_the_limit_holds),
                cmocka_unit_test(a_slow_client_does_not_block_others),
                cmocka_unit_test(bad_addresses_and_busy_ports),
        };
        return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
