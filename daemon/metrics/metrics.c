/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../basic/string-util.h"
#include "../basic/time-util.h"
#include "../log/log.h"
#include "metrics.h"

/* ---- the exposition text ------------------------------------------------------------------- */

static const char *const metrics_type_table[_METRICS_TYPE_MAX] = {
        [METRICS_COUNTER] = "counter",
        [METRICS_GAUGE] = "gauge",
        [METRICS_UNTYPED] = "untyped",
};

DEFINE_STRING_TABLE_TO_STRING(metrics_type, MetricsType, metrics_type_table)

static bool is_alpha_(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c) {
        return c >= '0' && c <= '9';
}

bool metrics_name_is_valid(const char *name) {
        if (isempty(name) || !(is_alpha_(name[0]) || name[0] == ':'))
                return false;
        for (const char *p = name + 1; *p; p++)
                if (!is_alpha_(*p) && !is_digit(*p) && *p != ':')
                        return false;
        return true;
}

bool metrics_label_name_is_valid(const char *name) {
        if (isempty(name) || !is_alpha_(name[0]) || startswith(name, "__"))
                return false;
        for (const char *p = name + 1; *p; p++)
                if (!is_alpha_(*p) && !is_digit(*p))
                        return false;
        return true;
}

static int text_fail(MetricsText *t, int error) {
        if (t->error == 0)
                t->error = error;
        return t->error;
}

/* Room for n more bytes and the terminating NUL. */
static int text_reserve(MetricsText *t, size_t n) {
        size_t want, a;
        char *p;

        if (t->error < 0)
                return t->error;
        if (n > METRICS_TEXT_MAX || t->len + n > METRICS_TEXT_MAX)
                return text_fail(t, -E2BIG);
        want = t->len + n + 1;
        if (want <= t->allocated)
                return 0;
        a = MAX(want, MAX(t->allocated * 2, (size_t) 4096));
        p = realloc(t->buf, a);
        if (!p)
                return text_fail(t, -ENOMEM);
        t->buf = p;
        t->allocated = a;
        t->buf[t->len] = '\0';
        return 0;
}

static int text_append(MetricsText *t, const char *s, size_t n) {
        int r = text_reserve(t, n);
        if (r < 0)
                return r;
        memcpy(t->buf + t->len, s, n);
        t->len += n;
        t->buf[t->len] = '\0';
        return 0;
}

static int text_puts(MetricsText *t, const char *s) {
        return text_append(t, s, strlen(s));
}

/* s with backslash and newline escaped, and the double quote too when quote is set (label values;
 * HELP text keeps its quotes). */
static int text_escaped(MetricsText *t, const char *s, bool quote) {
        for (const char *p = s; *p; p++) {
                const char *esc = *p == '\\'           ? "\\\\"
                                  : *p == '\n'         ? "\\n"
                                  : *p == '"' && quote ? "\\\""
                                                       : NULL;
                int r = esc ? text_puts(t, esc) : text_append(t, p, 1);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Integral values as integers; others as the shortest %g that reads back to the same double. */
static void format_value(double v, char buf[static 32]) {
        if (isnan(v)) {
                strcpy(buf, "NaN");
                return;
        }
        if (isinf(v)) {
                strcpy(buf, v > 0 ? "+Inf" : "-Inf");
                return;
        }
        if (fabs(v) < 0x1p63 && v == (double) (long long) v) {
                (void) snprintf(buf, 32, "%lld", (long long) v);
                return;
        }
        for (int prec = 1; prec <= 17; prec++) {
                (void) snprintf(buf, 32, "%.*g", prec, v);
                if (strtod(buf, NULL) == v)
                        return;
        }
}

int metrics_text_family(MetricsText *t, const char *name, MetricsType type, const char *help) {
        const char *type_name = metrics_type_to_string(type);
        int r;

        if (t->error < 0)
                return t->error;
        if (!metrics_name_is_valid(name) || strlen(name) >= sizeof(t->family) || !type_name)
                return text_fail(t, -EINVAL);
        strcpy(t->family, name);
        r = text_puts(t, "# HELP ");
        if (r >= 0)
                r = text_puts(t, name);
        if (r >= 0)
                r = text_puts(t, " ");
        if (r >= 0)
                r = text_escaped(t, strempty(help), false);
        if (r >= 0)
                r = text_puts(t, "\n# TYPE ");
        if (r >= 0)
                r = text_puts(t, name);
        if (r >= 0)
                r = text_puts(t, " ");
        if (r >= 0)
                r = text_puts(t, type_name);
        if (r >= 0)
                r = text_puts(t, "\n");
        return r;
}

int metrics_text_sample(MetricsText *t, const char *const *labels, double value) {
        char num[32];
        size_t mark;
        int r;

        if (t->error < 0)
                return t->error;
        if (isempty(t->family))
                return text_fail(t, -EINVAL); /* a sample before any family */
        for (size_t i = 0; labels && labels[i]; i += 2)
                if (!metrics_label_name_is_valid(labels[i]) || !labels[i + 1])
                        return text_fail(t, -EINVAL);
        mark = t->len;
        r = text_puts(t, t->family);
        for (size_t i = 0; r >= 0 && labels && labels[i]; i += 2) {
                r = text_puts(t, i == 0 ? "{" : ",");
                if (r >= 0)
                        r = text_puts(t, labels[i]);
                if (r >= 0)
                        r = text_puts(t, "=\"");
                if (r >= 0)
                        r = text_escaped(t, labels[i + 1], true);
                if (r >= 0)
                        r = text_puts(t, "\"");
        }
        if (r >= 0 && labels && labels[0])
                r = text_puts(t, "}");
        format_value(value, num);
        if (r >= 0)
                r = text_puts(t, " ");
        if (r >= 0)
                r = text_puts(t, num);
        if (r >= 0)
                r = text_puts(t, "\n");
        if (r < 0 && t->buf) {
                t->len = mark; /* no half line */
                t->buf[mark] = '\0';
        }
        return r;
}

int metrics_text_error(const MetricsText *t) {
        return t->error;
}

int metrics_text_steal(MetricsText *t, char **ret, size_t *ret_len) {
        int r;

        if (t->error < 0)
                return t->error;
        r = text_reserve(t, 0); /* an empty text still is a string */
        if (r < 0)
                return r;
        *ret = TAKE_PTR(t->buf);
        *ret_len = t->len;
        *t = METRICS_TEXT_INIT;
        return 0;
}

void metrics_text_done(MetricsText *t) {
        free(t->buf);
        *t = METRICS_TEXT_INIT;
}

/* ---- the server ---------------------------------------------------------------------------- */

struct MetricsServer {
        sd_event *event;
        sd_event_source *io, *timer;
        struct MHD_Daemon *daemon;
        MetricsCallbacks cb;
        void *userdata;
        uint16_t port;
        unsigned max_connections;
        uint64_t requests;
};

static void metrics_on_mhd_log(void *cls, const char *format, va_list ap) _printf_(2, 0);
static void metrics_on_mhd_log(void *cls, const char *format, va_list ap) {
        char buf[256];

        (void) cls;
        (void) vsnprintf(buf, sizeof(buf), format, ap);
        log_debug("metrics: libmicrohttpd: %s", strstrip(buf));
}

static unsigned metrics_connections(MetricsServer *s) {
        const union MHD_DaemonInfo *i = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        return i ? i->num_connections : 0;
}

/* Runs what is due (new connections, requests, idle timeouts) and arms the timer for what is
 * next: MHD_get_timeout() says 0 when work is pending (data already read, edge-triggered). */
static void metrics_run(MetricsServer *s) {
        MHD_UNSIGNED_LONG_LONG ms = 0;
        bool at_limit = metrics_connections(s) >= s->max_connections;

        (void) MHD_run(s->daemon);
        /* At the limit libmicrohttpd takes the listening socket out of its epoll set, and puts it
         * back at the start of a run once below: that run must come now, since nothing else
         * would wake the loop for the clients waiting in the backlog. */
        if (at_limit && metrics_connections(s) < s->max_connections)
                (void) MHD_run(s->daemon);
        if (MHD_get_timeout(s->daemon, &ms) == MHD_YES) {
                (void) sd_event_source_set_time_relative(
                        s->timer, (usec_t) MIN(ms, (MHD_UNSIGNED_LONG_LONG) 3600000) * USEC_PER_MSEC);
                (void) sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT);
        } else
                (void) sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
}

static int metrics_on_io(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        (void) es, (void) fd, (void) revents;
        metrics_run(userdata);
        return 0;
}

static int metrics_on_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        (void) es, (void) usec;
        metrics_run(userdata);
        return 0;
}

/* Queues a response whose body is body (len bytes, taken over when take is set). */
static enum MHD_Result metrics_respond(struct MHD_Connection *c, unsigned status, const char *content_type,
                                       char *body, size_t len, bool take, const char *allow) {
        struct MHD_Response *resp;
        enum MHD_Result ret;

        resp = MHD_create_response_from_buffer(len, body,
                                               take ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
        if (!resp) {
                if (take)
                        free(body);
                return MHD_NO; /* out of memory: the connection is closed */
        }
        if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES ||
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
            (allow && MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow) != MHD_YES)) {
                MHD_destroy_response(resp);
                return MHD_NO;
        }
        ret = MHD_queue_response(c, status, resp);
        MHD_destroy_response(resp);
        return ret;
}

static enum MHD_Result metrics_respond_text(struct MHD_Connection *c, unsigned status, const char *text) {
        return metrics_respond(c, status, "text/plain; charset=utf-8", (char *) text, strlen(text), false,
                               NULL);
}

static enum MHD_Result metrics_serve_metrics(MetricsServer *s, struct MHD_Connection *c) {
        _cleanup_(metrics_text_done) MetricsText t = METRICS_TEXT_INIT;
        char *body = NULL;
        size_t len = 0;
        int r = 0;

        if (s->cb.collect)
                r = s->cb.collect(&t, s->userdata);
        if (r >= 0)
                r = metrics_text_steal(&t, &body, &len);
        if (r < 0) {
                log_debug_errno(r, "metrics: collecting failed: %m");
                return metrics_respond_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                            "collecting the metrics failed\n");
        }
        return metrics_respond(c, MHD_HTTP_OK, METRICS_CONTENT_TYPE, body, len, true, NULL);
}

static enum MHD_Result metrics_serve_ready(MetricsServer *s, struct MHD_Connection *c) {
        char reason[512] = "";
        _cleanup_free_ char *body = NULL;
        size_t len;

        if (!s->cb.ready || s->cb.ready(reason, sizeof(reason), s->userdata))
                return metrics_respond_text(c, MHD_HTTP_OK, "ok\n");
        /* One line: a reason with newlines would read as several. */
        for (char *p = reason; *p; p++)
                if (*p == '\n' || *p == '\r')
                        *p = ' ';
        if (asprintf(&body, "%s\n", isempty(reason) ? "not ready" : reason) < 0)
                return MHD_NO;
        len = strlen(body);
        return metrics_respond(c, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", TAKE_PTR(body),
                               len, true, NULL);
}

static enum MHD_Result metrics_on_request(void *cls, struct MHD_Connection *c, const char *url,
                                          const char *method, const char *version, const char *upload_data,
                                          size_t *upload_data_size, void **con_cls) {
        static int seen; /* *con_cls once the headers have been looked at */
        MetricsServer *s = cls;

        (void) version, (void) upload_data;
        /* Other methods are refused on the first call, with the headers: a body, if any, is
         * discarded and the connection closed after the answer (libmicrohttpd does that). */
        if (!streq(method, MHD_HTTP_METHOD_GET) && !streq(method, MHD_HTTP_METHOD_HEAD)) {
                s->requests++;
                return metrics_respond(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8",
                                       (char *) "method not allowed\n", strlen("method not allowed\n"),
                                       false, "GET, HEAD");
        }
        /* GET and HEAD are answered once the request is complete, so that the connection can stay
         * open for the next one (Prometheus keeps it). A body is ignored. */
        if (!*con_cls) {
                *con_cls = &seen;
                return MHD_YES;
        }
        if (*upload_data_size > 0) {
                *upload_data_size = 0;
                return MHD_YES;
        }
        s->requests++;
        if (streq(url, "/metrics"))
                return metrics_serve_metrics(s, c);
        if (streq(url, "/healthz"))
                return metrics_respond_text(c, MHD_HTTP_OK, "ok\n");
        if (streq(url, "/readyz"))
                return metrics_serve_ready(s, c);
        return metrics_respond_text(c, MHD_HTTP_NOT_FOUND, "not found: try /metrics, /healthz or /readyz\n");
}

static int metrics_listen(const char *address, uint16_t port, unsigned backlog, int *ret_fd) {
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
                struct sockaddr_storage storage;
        } sa = {};
        socklen_t salen;
        _cleanup_close_ int fd = -EBADF;
        int one = 1;

        if (inet_pton(AF_INET, strempty(address), &sa.in.sin_addr) == 1) {
                sa.in.sin_family = AF_INET;
                sa.in.sin_port = htons(port);
                salen = sizeof(sa.in);
        } else if (inet_pton(AF_INET6, strempty(address), &sa.in6.sin6_addr) == 1) {
                sa.in6.sin6_family = AF_INET6;
                sa.in6.sin6_port = htons(port);
                salen = sizeof(sa.in6);
        } else
                return -EINVAL;

        fd = socket(sa.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_TCP);
        if (fd < 0)
                return -errno;
        /* A restart may bind while the last run's connections linger in TIME_WAIT. */
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                return -errno;
        if (bind(fd, &sa.sa, salen) < 0 || listen(fd, (int) backlog) < 0)
                return -errno;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static uint16_t socket_port(int fd) {
        struct sockaddr_storage ss = {};
        socklen_t len = sizeof(ss);

        if (getsockname(fd, (struct sockaddr *) &ss, &len) < 0)
                return 0;
        return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *) &ss)->sin6_port
                                              : ((struct sockaddr_in *) &ss)->sin_port);
}

int metrics_server_new(sd_event *e, const MetricsServerOptions *o, const MetricsCallbacks *cb,
                       void *userdata, MetricsServer **ret) {
        _cleanup_(metrics_server_freep) MetricsServer *s = NULL;
        _cleanup_close_ int fd = -EBADF;
        const union MHD_DaemonInfo *info;
        unsigned max = o->max_connections ?: METRICS_MAX_CONNECTIONS;
        int r;

        assert(e && o && ret);

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(e);
        if (cb)
                s->cb = *cb;
        s->userdata = userdata;
        s->max_connections = max;

        r = metrics_listen(o->address, o->port, max, &fd);
        if (r < 0)
                return r;
        s->port = socket_port(fd);

        /* No polling thread: the loop polls MHD's epoll fd. MHD takes the listening socket (and
         * closes it when stopped); its epoll fd and accepted sockets are close-on-exec. */
        errno = 0;
        s->daemon = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL, metrics_on_request, s,
                                     MHD_OPTION_EXTERNAL_LOGGER, metrics_on_mhd_log, s,
                                     MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, max,
                                     MHD_OPTION_CONNECTION_TIMEOUT, o->timeout ?: METRICS_TIMEOUT,
                                     MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) 32768, MHD_OPTION_END);
        if (!s->daemon)
                return errno > 0 ? -errno : -EIO;
        TAKE_FD(fd);

        info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info || info->epoll_fd < 0)
                return -EIO;
        r = sd_event_add_io(e, &s->io, info->epoll_fd, EPOLLIN, metrics_on_io, s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(s->io, "metrics-http");
        r = sd_event_add_time(e, &s->timer, CLOCK_MONOTONIC, USEC_INFINITY, USEC_PER_MSEC, metrics_on_timer,
                              s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(s->timer, "metrics-http-timeout");

        *ret = TAKE_PTR(s);
        return 0;
}

MetricsServer *metrics_server_free(MetricsServer *s) {
        if (!s)
                return NULL;
        /* The sources first: they refer to MHD's epoll fd, which stopping closes. */
        sd_event_source_disable_unref(s->io);
        sd_event_source_disable_unref(s->timer);
        if (s->daemon)
                MHD_stop_daemon(s->daemon);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

uint16_t metrics_server_port(const MetricsServer *s) {
        return s->port;
}

uint64_t metrics_server_requests(const MetricsServer *s) {
        return s->requests;
}
