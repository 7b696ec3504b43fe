/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "../basic/json-util.h"
#include "../basic/time-util.h"
#include "control-client.h"
#include "control-protocol.h"

static int wait_fd(int fd, short events, usec_t deadline) {
        for (;;) {
                usec_t n = now(CLOCK_MONOTONIC);
                struct pollfd p = { .fd = fd, .events = events };
                int r;

                if (n >= deadline)
                        return -ETIMEDOUT;
                r = poll(&p, 1, (int) DIV_ROUND_UP(deadline - n, USEC_PER_MSEC));
                if (r < 0 && errno != EINTR)
                        return -errno;
                if (r > 0)
                        return 0;
        }
}

int control_call(const char *path, const char *command, cJSON **ret_payload, char **ret_error) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *req = NULL, *buf = NULL;
        _cleanup_json_ cJSON *reply = NULL;
        usec_t deadline = now(CLOCK_MONOTONIC) + CONTROL_TIMEOUT_USEC;
        size_t len = 0, off = 0;
        const cJSON *payload;
        int r;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -errno;

        {
                _cleanup_json_ cJSON *o = cJSON_CreateObject();
                if (!o || !cJSON_AddStringToObject(o, "command", command))
                        return -ENOMEM;
                char *s = cJSON_PrintUnformatted(o);
                if (!s || asprintf(&req, "%s\n", s) < 0) {
                        free(s);
                        return -ENOMEM;
                }
                free(s);
        }

        len = strlen(req);
        while (off < len) {
                ssize_t n;

                r = wait_fd(fd, POLLOUT, deadline);
                if (r < 0)
                        return r;
                n = send(fd, req + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                continue;
                        return -errno;
                }
                off += (size_t) n;
        }

        buf = malloc(CONTROL_REPLY_MAX + 1);
        if (!buf)
                return -ENOMEM;
        len = 0;
        for (;;) {
                ssize_t n;

                r = wait_fd(fd, POLLIN, deadline);
                if (r < 0)
                        return r;
                n = recv(fd, buf + len, CONTROL_REPLY_MAX - len, MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                len += (size_t) n;
                if (memchr(buf + len - (size_t) n, '\n', (size_t) n) || len >= CONTROL_REPLY_MAX)
                        break;
        }
        buf[len] = '\0';

        reply = cJSON_ParseWithLength(buf, len);
        if (!reply || !cJSON_IsObject(reply))
                return -EBADMSG;

        if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "ok"))) {
                uint64_t e = EIO;
                const char *msg = json_get_string(reply, "error");

                (void) json_get_u64(reply, "errno", &e);
                if (e == 0 || e > 4095)
                        e = EIO;
                if (ret_error)
                        *ret_error = msg ? strdup(msg) : NULL;
                return -(int) e;
        }

        payload = cJSON_GetObjectItemCaseSensitive(reply, command);
        if (!cJSON_IsObject(payload))
                return -EBADMSG;
        if (ret_payload)
                *ret_payload = cJSON_DetachItemViaPointer(reply, (cJSON *) payload);
        return 0;
}
