/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The daemon's HTTP endpoint for monitoring (libmicrohttpd):
 *
 *   GET /metrics   Prometheus text exposition format 0.0.4, built by the owner's collect callback
 *   GET /healthz   200 "ok": the event loop answered
 *   GET /readyz    200 "ok" when the owner's ready callback says so, else 503 with its reason
 *
 * HEAD works wherever GET does; any other method is 405 (with Allow:), any other path 404.
 *
 * Threads: none. libmicrohttpd runs in its "external polling" mode with epoll: its one epoll fd is
 * an I/O source on the caller's sd_event loop, and a timer follows MHD_get_timeout() for idle
 * connections, so every request is served on the loop and the callbacks read loop-owned state
 * directly, without locks or snapshots. An answer from /healthz therefore proves that the loop
 * iterates; when the loop is stuck nothing answers (a probe times out) and the systemd watchdog
 * ends the process. Requests are small and answered at once, so serving them does not hold the
 * loop up: at most max_connections connections at a time (further ones wait in the listen
 * backlog), each closed after timeout seconds without progress, so a client that connects and
 * sends nothing holds one slot for a while and delays nobody. Every fd is close-on-exec.
 *
 * The text builder (MetricsText) is usable on its own: it writes HELP and TYPE lines, escapes
 * label values and help text as the format requires, and checks metric and label names.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "../basic/macro.h"

/* ---- the exposition text ------------------------------------------------------------------- */

typedef enum MetricsType {
        METRICS_COUNTER,
        METRICS_GAUGE,
        METRICS_UNTYPED,
        _METRICS_TYPE_MAX,
        _METRICS_TYPE_INVALID = -EINVAL,
} MetricsType;

const char *metrics_type_to_string(MetricsType t);

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
/* The most text one scrape may produce: a runaway collector fails with -E2BIG, not the daemon. */
#define METRICS_TEXT_MAX (16U << 20)

typedef struct MetricsText {
        char *buf;
        size_t len, allocated;
        char family[128]; /* the metric family samples go to; "" before the first */
        int error;        /* the first error; every later call returns it and writes nothing */
} MetricsText;

#define METRICS_TEXT_INIT ((MetricsText){})

/* Label pairs for metrics_text_sample(): METRICS_LABELS("pool", name, "class", "HDD"). */
#define METRICS_LABELS(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* Starts a family: "# HELP name help" (help escaped) and "# TYPE name type". Every family once;
 * -EINVAL for a name that is not [a-zA-Z_:][a-zA-Z0-9_:]*. */
int metrics_text_family(MetricsText *t, const char *name, MetricsType type, const char *help);
/* One sample of the current family: "name{k="v",...} value". labels is NULL or a NULL-terminated
 * list of name, value pairs; values are escaped (backslash, double quote, newline), names must be
 * [a-zA-Z_][a-zA-Z0-9_]* and not start with "__" (-EINVAL). NaN and infinities are written as
 * NaN, +Inf, -Inf; other values as the shortest decimal that reads back exactly. */
int metrics_text_sample(MetricsText *t, const char *const *labels, double value);
/* The first error, or 0. */
int metrics_text_error(const MetricsText *t);
/* Hands the text over (NUL-terminated, caller frees) and resets t; fails with the first error. */
int metrics_text_steal(MetricsText *t, char **ret, size_t *ret_len);
void metrics_text_done(MetricsText *t);

bool metrics_name_is_valid(const char *name);
bool metrics_label_name_is_valid(const char *name);

/* ---- the server ---------------------------------------------------------------------------- */

typedef struct MetricsServer MetricsServer;

typedef struct MetricsCallbacks {
        /* Appends the samples to t (on the loop, for every GET /metrics). A negative errno, or
         * one left in t, answers 500. */
        int (*collect)(MetricsText *t, void *userdata);
        /* Whether the daemon is ready; when not, reason (for people, one line) says why. NULL:
         * always ready. */
        bool (*ready)(char *reason, size_t size, void *userdata);
} MetricsCallbacks;

typedef struct MetricsServerOptions {
        const char *address;      /* an IPv4 or IPv6 literal to bind */
        uint16_t port;            /* 0: any free port (metrics_server_port() tells which) */
        unsigned max_connections; /* 0: METRICS_MAX_CONNECTIONS */
        unsigned timeout;         /* seconds a connection may idle; 0: METRICS_TIMEOUT */
} MetricsServerOptions;

#define METRICS_MAX_CONNECTIONS 16U
#define METRICS_TIMEOUT         10U

/* Binds and listens at once: -EADDRINUSE, -EACCES, -EADDRNOTAVAIL (no such local address),
 * -EINVAL (not an address), -ENOMEM, or what libmicrohttpd's start gives. */
int metrics_server_new(sd_event *e, const MetricsServerOptions *options, const MetricsCallbacks *cb,
                       void *userdata, MetricsServer **ret);
/* Closes the listener and every connection. */
MetricsServer *metrics_server_free(MetricsServer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(MetricsServer *, metrics_server_free);

/* The port bound (useful with port 0). */
uint16_t metrics_server_port(const MetricsServer *s);
/* Requests answered so far (any status). */
uint64_t metrics_server_requests(const MetricsServer *s);
