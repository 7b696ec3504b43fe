/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "../basic/json-util.h"
#include "../basic/list.h"
#include "../basic/string-util.h"
#include "../basic/time-util.h"
#include "../log/log.h"
#include "control-protocol.h"
#include "control.h"

typedef struct ControlConn ControlConn;

struct ControlServer {
        sd_event *event;
        char *path;
        int fd;
        sd_event_source *listen_source;
        ControlHandler handler;
        void *userdata;
        LIST_HEAD(ControlConn, conns);
};

struct ControlConn {
        ControlServer *server;
        int fd;
        sd_event_source *io_source, *timer_source;
        char in[CONTROL_REQUEST_MAX + 1];
        size_t in_len;
        char *out;
        size_t out_len, out_off;
        LIST_FIELDS(ControlConn, conns);
};

static ControlConn *control_conn_free(ControlConn *c) {
        if (!c)
                return NULL;
        if (c->server)
                LIST_REMOVE(conns, c->server->conns, c);
        sd_event_source_disable_unref(c->io_source);
        sd_event_source_disable_unref(c->timer_source);
        safe_close(c->fd);
        free(c->out);
        free(c);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(ControlConn *, control_conn_free);

static int control_conn_on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        ControlConn *c = userdata;

        (void) s, (void) usec;
        log_debug("Control connection timed out, closing.");
        control_conn_free(c);
        return 0;
}

/* Builds the reply for one complete request line; never fails short of OOM. */
static int control_conn_dispatch(ControlConn *c) {
        _cleanup_json_ cJSON *request = NULL, *reply = NULL, *payload = NULL;
        _cleanup_free_ char *error = NULL;
        const char *command;
        int r = -EINVAL;

        request = cJSON_ParseWithLength(c->in, c->in_len);
        command = request ? json_get_string(request, "command") : NULL;
        if (!request || !cJSON_IsObject(request))
                error = strdup("Request is not a JSON object.");
        else if (!command)
                error = strdup("Request has no \"command\" string.");
        else {
                r = c->server->handler(command, request, &payload, &error, c->server->userdata);
                if (r >= 0 && !payload)
                        payload = cJSON_CreateObject();
        }

        reply = cJSON_CreateObject();
        if (!reply)
                return -ENOMEM;
        if (r >= 0) {
                if (!payload || !cJSON_AddTrueToObject(reply, "ok"))
                        return -ENOMEM;
                cJSON_AddItemToObject(reply, command, TAKE_PTR(payload));
        } else {
                if (!cJSON_AddFalseToObject(reply, "ok") ||
                    !cJSON_AddStringToObject(reply, "error", error ?: strerror(-r)) ||
                    !cJSON_AddNumberToObject(reply, "errno", -r))
                        return -ENOMEM;
        }

        c->out = cJSON_PrintUnformatted(reply);
        if (!c->out)
                return -ENOMEM;
        c->out_len = strlen(c->out);
        if (c->out_len + 1 > CONTROL_REPLY_MAX)
                return -E2BIG;
        c->out[c->out_len++] = '\n'; /* replaces the terminating NUL; out_len counts bytes to send */
        return 0;
}

/* Reads what is there. Returns 0 while the request line is incomplete, 1 once the reply is
 * ready to send, negative to close the connection. */
static int control_conn_read(ControlConn *c) {
        char *nl;
        ssize_t n;
        int r;

        n = read(c->fd, c->in + c->in_len, CONTROL_REQUEST_MAX - c->in_len);
        if (n < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        if (n == 0)
                return log_debug_errno(SYNTHETIC_ERRNO(ECONNRESET),
                                       "Control connection closed before a full request.");
        c->in_len += (size_t) n;
        c->in[c->in_len] = '\0';

        nl = memchr(c->in, '\n', c->in_len);
        if (!nl)
                return c->in_len >= CONTROL_REQUEST_MAX
                               ? log_debug_errno(SYNTHETIC_ERRNO(E2BIG),
                                                 "Control request too long, closing.")
                               : 0;
        c->in_len = (size_t) (nl - c->in);
        *nl = '\0';

        r = control_conn_dispatch(c);
        if (r < 0)
                return log_warning_errno(r, "Failed to answer a control request: %m");
        r = sd_event_source_set_io_events(c->io_source, EPOLLOUT);
        if (r < 0)
                return r;
        return 1;
}

/* Returns 0 while part of the reply is unsent, 1 when all is sent, negative on failure. */
static int control_conn_write(ControlConn *c) {
        ssize_t n;

        n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        c->out_off += (size_t) n;
        return c->out_off >= c->out_len;
}

static int control_conn_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ControlConn *c = userdata;
        int r;

        (void) s, (void) fd, (void) revents;

        if (!c->out) {
                r = control_conn_read(c);
                if (r == 0)
                        return 0;
                if (r < 0)
                        goto close;
        }
        r = control_conn_write(c);
        if (r == 0)
                return 0;
        if (r < 0)
                log_debug_errno(r, "Failed to write control reply: %m");
close:
        control_conn_free(c);
        return 0;
}

static int control_server_on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ControlServer *server = userdata;
        _cleanup_(control_conn_freep) ControlConn *c = NULL;
        _cleanup_close_ int cfd = -EBADF;
        struct ucred cred;
        socklen_t len = sizeof(cred);
        int r;

        (void) s, (void) revents;

        cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
                if (errno != EAGAIN && errno != EINTR)
                        log_ratelimit_errno(LOG_WARNING, errno, 10 * USEC_PER_SEC, 5,
                                            "Failed to accept a control connection, ignoring: %m");
                return 0;
        }

        /* The socket's mode already keeps others out; this also holds if it gets chmod'ed. */
        if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
            (cred.uid != 0 && cred.uid != geteuid())) {
                log_ratelimit(LOG_NOTICE, 10 * USEC_PER_SEC, 5,
                              "Refused a control connection from an unprivileged user.");
                return 0;
        }

        c = calloc(1, sizeof(*c));
        if (!c) {
                log_oom();
                return 0;
        }
        c->fd = TAKE_FD(cfd);

        r = sd_event_add_io(server->event, &c->io_source, c->fd, EPOLLIN, control_conn_on_io, c);
        if (r >= 0)
                r = sd_event_add_time_relative(server->event, &c->timer_source, CLOCK_MONOTONIC,
                                               CONTROL_TIMEOUT_USEC, 0, control_conn_on_timeout, c);
        if (r < 0) {
                log_warning_errno(r, "Failed to watch a control connection, ignoring: %m");
                return 0;
        }
        (void) sd_event_source_set_description(c->io_source, "control-conn");
        (void) sd_event_source_set_description(c->timer_source, "control-conn-timeout");

        c->server = server;
        LIST_PREPEND(conns, server->conns, c);
        TAKE_PTR(c);
        return 0;
}

static int mkdir_parent(const char *path) {
        _cleanup_free_ char *dir = strdup(path);
        char *slash;

        if (!dir)
                return -ENOMEM;
        slash = strrchr(dir, '/');
        if (!slash || slash == dir)
                return 0;
        *slash = '\0';
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

/* Someone answers on path: another hwameid is running. */
static bool socket_is_live(const struct sockaddr_un *sa) {
        _cleanup_close_ int fd = -EBADF;

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return false;
        return connect(fd, (const struct sockaddr *) sa, sizeof(*sa)) >= 0;
}

int control_server_new(sd_event *e, const char *path, ControlHandler handler, void *userdata,
                       ControlServer **ret) {
        _cleanup_(control_server_freep) ControlServer *s = NULL;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        mode_t old_umask;
        int r;

        assert(e);
        assert(path);
        assert(handler);
        assert(ret);

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->fd = -EBADF;
        s->event = sd_event_ref(e);
        s->handler = handler;
        s->userdata = userdata;

        r = mkdir_parent(path);
        if (r < 0)
                return r;
        if (socket_is_live(&sa))
                return -EADDRINUSE;
        if (unlink(path) < 0 && errno != ENOENT)
                return -errno;

        s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->fd < 0)
                return -errno;
        old_umask = umask(0077);
        r = RET_NERRNO(bind(s->fd, (struct sockaddr *) &sa, sizeof(sa)));
        umask(old_umask);
        if (r < 0)
                return r;
        s->path = strdup(path); /* only now is the file ours to remove */
        if (!s->path)
                return -ENOMEM;
        if (listen(s->fd, 16) < 0)
                return -errno;

        r = sd_event_add_io(e, &s->listen_source, s->fd, EPOLLIN, control_server_on_accept, s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(s->listen_source, "control-listen");

        *ret = TAKE_PTR(s);
        return 0;
}

ControlServer *control_server_free(ControlServer *s) {
        if (!s)
                return NULL;
        while (s->conns)
                control_conn_free(s->conns);
        sd_event_source_disable_unref(s->listen_source);
        safe_close(s->fd);
        if (s->path)
                (void) unlink(s->path);
        free(s->path);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

const char *control_server_path(const ControlServer *s) {
        return s->path;
}
