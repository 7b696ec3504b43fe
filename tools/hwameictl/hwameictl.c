/* SPDX-License-Identifier: Apache-2.0 */

/*
 * hwameictl: the operator's command line for hwameid.
 *
 *   status                      the local daemon, over its control socket
 *   volume list|show|migrate    the cluster, straight from the Kubernetes API: the kubeconfig is
 *   migrate list|watch|abort    the daemon's ([Kubernetes] Kubeconfig= of its configuration file) or
 *   node status                 --kubeconfig; requests go through the daemon's own client
 *                               (KubeClient) on a private sd-event loop that runs until they are
 *                               answered. migrate watch follows the object with an informer (list,
 *                               then watch), so it sees every state, even one right before a deletion.
 *
 * Tables for people, --json for scripts: lists print {"items": [summary, ...]}, volume show prints the
 * objects themselves, and what follows a migration (migrate watch, --wait) prints one summary per line
 * (JSON Lines) each time the object changes. The summaries' keys are listed in hwameictl(8).
 *
 * Exit codes: 0 success, 1 failure (an API error, or a followed migration that ended the wrong way),
 * 2 bad usage, 3 not found (the daemon is not running; no such volume, migration or node), 128 + the
 * signal's number when SIGINT or SIGTERM ends a command that talks to the API.
 */

#include <curl/curl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>

#include "../../daemon/basic/json-util.h"
#include "../../daemon/basic/random-util.h"
#include "../../daemon/basic/string-util.h"
#include "../../daemon/basic/time-util.h"
#include "../../daemon/config/hwameid-conf.h"
#include "../../daemon/control/control-client.h"
#include "../../daemon/controller/evictor.h"
#include "../../daemon/informer/informer.h"
#include "../../daemon/kube/kube-client.h"
#include "../../daemon/kube/kubeconfig.h"
#include "../../daemon/log/log.h"
#include "../../daemon/node/sync.h"

#define DEFAULT_CONTROL_SOCKET "/run/hwameid/control.sock"

#define HW_API                 "/apis/hwameistor.io/v1alpha1"
#define VOLUMES_PATH           HW_API "/localvolumes"
#define REPLICAS_PATH          HW_API "/localvolumereplicas"
#define MIGRATES_PATH          HW_API "/localvolumemigrates"
#define LSN_PATH               HW_API "/localstoragenodes"
#define NODES_PATH             "/api/v1/nodes"

#define UNSCHEDULABLE_TAINT    "node.kubernetes.io/unschedulable"

/* migrate-VOLUME-xxxxx; a name that exists already is drawn again, a few times. */
#define MIGRATE_SUFFIX_LEN      5
#define MIGRATE_CREATE_ATTEMPTS 5

#define TABLE_COLUMNS_MAX       12

enum {
        EXIT_USAGE = 2,
        EXIT_NOT_FOUND = 3, /* also: the daemon is not running */
        EXIT_SIGNAL_BASE = 128,
};

/* The options that only some verbs take (--json and --help go with every one). */
enum {
        OPT_SOCKET = 1 << 0,
        OPT_CONFIG = 1 << 1,
        OPT_KUBECONFIG = 1 << 2,
        OPT_CONTEXT = 1 << 3,
        OPT_FROM = 1 << 4,
        OPT_TO = 1 << 5,
        OPT_NAME = 1 << 6,
        OPT_WAIT = 1 << 7,
        OPTS_KUBE = OPT_CONFIG | OPT_KUBECONFIG | OPT_CONTEXT,
};

static const char *const option_names[] = {
        "--socket", "--config", "--kubeconfig", "--context", "--from", "--to", "--name", "--wait",
};

static const char *arg_socket = DEFAULT_CONTROL_SOCKET;
static const char *arg_config = HWAMEID_CONFIG_PATH;
static const char *arg_kubeconfig;
static const char *arg_context;
static const char *arg_from;
static char **arg_to;
static const char *arg_name;
static bool arg_json;
static bool arg_wait;
static unsigned arg_given; /* OPT_* */

static void help(void) {
        printf("Usage: hwameictl [OPTIONS] COMMAND [ARGS]\n"
               "\n"
               "The local hwameid, through its control socket:\n"
               "  status                        Show what the local hwameid is doing\n"
               "\n"
               "The cluster, through the Kubernetes API:\n"
               "  volume list                   List the volumes: capacity, nodes, state, migration\n"
               "  volume show VOLUME            Show a volume, its replicas and its migrations\n"
               "  volume migrate VOLUME --from NODE [--to NODE...] [--name NAME] [--wait]\n"
               "                                Move a volume off a node (creates a LocalVolumeMigrate)\n"
               "  migrate list                  List the migrations and their progress\n"
               "  migrate watch NAME            Follow a migration to its end: progress, rate, ETA\n"
               "  migrate abort NAME [--wait]   Ask the leader to abort a migration and roll it back\n"
               "  node status [NODE]            Show the nodes: pools, replicas, cordon, eviction label\n"
               "\n"
               "Options:\n"
               "  -s --socket=PATH        Control socket for status (default %s)\n"
               "  -c --config=PATH        hwameid's configuration, where the kubeconfig is named\n"
               "                          (default %s)\n"
               "  -k --kubeconfig=PATH    Use this kubeconfig instead of the configuration's\n"
               "     --context=NAME       The kubeconfig's context (default: its current-context)\n"
               "     --from=NODE          volume migrate: the node the volume leaves\n"
               "     --to=NODE            volume migrate: a preferred target node; repeat it or give\n"
               "                          a comma-separated list (default: the leader chooses)\n"
               "     --name=NAME          volume migrate: the migration's name\n"
               "                          (default migrate-VOLUME- and 5 random characters)\n"
               "  -w --wait               volume migrate, migrate abort: follow the migration to its end\n"
               "  -j --json               Print JSON for scripts\n"
               "  -h --help               Show this help\n"
               "     --version            Show the version\n"
               "\n"
               "Exit status: 0 success, 1 failure (an API error; a followed migration that was aborted),\n"
               "2 bad usage, 3 not found (hwameid is not running; no such volume, migration or node).\n"
               "See hwameictl(8).\n",
               DEFAULT_CONTROL_SOCKET, HWAMEID_CONFIG_PATH);
}

/* ---- JSON helpers ---------------------------------------------------------------------------- */

/* The member at the end of a NULL-terminated path of keys, or NULL. */
static const cJSON *json_path(const cJSON *o, ...) {
        const char *key;
        va_list ap;

        va_start(ap, o);
        while (o && (key = va_arg(ap, const char *)))
                o = cJSON_GetObjectItemCaseSensitive(o, key);
        va_end(ap);
        return o;
}
#define J(o, ...) json_path((o), __VA_ARGS__, (const char *) NULL)

static const char *jstr(const cJSON *v) {
        return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A non-negative whole number, else 0. */
static uint64_t ju64(const cJSON *v) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740992.0 ||
            v->valuedouble != (double) (uint64_t) v->valuedouble)
                return 0;
        return (uint64_t) v->valuedouble;
}

static bool jbool(const cJSON *v, bool fallback) {
        return cJSON_IsBool(v) ? cJSON_IsTrue(v) : fallback;
}

static const char *name_of(const cJSON *o) {
        return jstr(J(o, "metadata", "name"));
}

/* Each returns false when memory ran out. NULL values become JSON null. */
static bool json_add_string(cJSON *o, const char *key, const char *value) {
        return value ? !!cJSON_AddStringToObject(o, key, value) : !!cJSON_AddNullToObject(o, key);
}

static bool json_add_number(cJSON *o, const char *key, double value) {
        return !!cJSON_AddNumberToObject(o, key, value);
}

static bool json_add_bool(cJSON *o, const char *key, bool value) {
        return !!cJSON_AddBoolToObject(o, key, value);
}

/* A deep copy of value, or null. */
static bool json_add_copy(cJSON *o, const char *key, const cJSON *value) {
        cJSON *c = value ? cJSON_Duplicate(value, true) : cJSON_CreateNull();

        if (!c)
                return false;
        if (!cJSON_AddItemToObject(o, key, c)) {
                cJSON_Delete(c);
                return false;
        }
        return true;
}

static bool json_append_string(cJSON *array, const char *value) {
        cJSON *s = cJSON_CreateString(value);

        if (!s)
                return false;
        if (!cJSON_AddItemToArray(array, s)) {
                cJSON_Delete(s);
                return false;
        }
        return true;
}

static bool json_array_has_string(const cJSON *array, const char *value) {
        const cJSON *i;

        cJSON_ArrayForEach(i, array) {
                if (streq_ptr(jstr(i), value))
                        return true;
        }
        return false;
}

/* The strings of a JSON array joined with sep ("" when there are none); NULL when memory ran out. */
static char *json_join(const cJSON *array, const char *sep) {
        size_t len = 0, off = 0;
        const cJSON *i;
        char *s;

        cJSON_ArrayForEach(i, array) {
                if (jstr(i))
                        len += strlen(jstr(i)) + strlen(sep);
        }
        s = malloc(len + 1);
        if (!s)
                return NULL;
        cJSON_ArrayForEach(i, array) {
                if (!jstr(i))
                        continue;
                off += (size_t) sprintf(s + off, "%s%s", off > 0 ? sep : "", jstr(i));
        }
        s[off] = '\0';
        return s;
}

static int print_json(const cJSON *o) {
        _cleanup_free_ char *s = cJSON_Print(o);

        if (!s)
                return -ENOMEM;
        puts(s);
        return 0;
}

/* One line of JSON (JSON Lines), flushed at once: for output that follows a migration. */
static int print_json_line(const cJSON *o) {
        _cleanup_free_ char *s = cJSON_PrintUnformatted(o);

        if (!s)
                return -ENOMEM;
        puts(s);
        fflush(stdout);
        return 0;
}

/* ---- formatting ------------------------------------------------------------------------------ */

static const char *dash(const char *s) {
        return isempty(s) ? "-" : s;
}

/* An RFC 3339 time ("2026-03-01T10:00:00Z", fractions ignored) in seconds since the epoch; -1 if it
 * is not one. */
static int64_t parse_timestamp(const char *s) {
        struct tm tm = {};
        time_t t;

        if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                         &tm.tm_min, &tm.tm_sec) != 6)
                return -1;
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        t = timegm(&tm);
        return t == (time_t) -1 ? -1 : (int64_t) t;
}

/* How long ago, the way kubectl's AGE column says it: "45s", "3m20s", "17m", "5h3m", "9h", "3d4h",
 * "40d", "2y10d". */
static char *format_age(char *buf, size_t len, const char *timestamp) {
        int64_t then = parse_timestamp(timestamp);
        uint64_t s, m, h, d;

        if (then < 0) {
                snprintf(buf, len, "-");
                return buf;
        }
        s = (uint64_t) MAX((int64_t) (now(CLOCK_REALTIME) / USEC_PER_SEC) - then, (int64_t) 0);
        m = s / 60, h = s / 3600, d = s / 86400;
        if (s < 120)
                snprintf(buf, len, "%llus", (unsigned long long) s);
        else if (m < 10 && s % 60)
                snprintf(buf, len, "%llum%llus", (unsigned long long) m, (unsigned long long) (s % 60));
        else if (m < 180)
                snprintf(buf, len, "%llum", (unsigned long long) m);
        else if (h < 8 && m % 60)
                snprintf(buf, len, "%lluh%llum", (unsigned long long) h, (unsigned long long) (m % 60));
        else if (h < 48)
                snprintf(buf, len, "%lluh", (unsigned long long) h);
        else if (h < 192 && h % 24)
                snprintf(buf, len, "%llud%lluh", (unsigned long long) d, (unsigned long long) (h % 24));
        else if (d < 730)
                snprintf(buf, len, "%llud", (unsigned long long) d);
        else if (d % 365)
                snprintf(buf, len, "%lluy%llud", (unsigned long long) (d / 365),
                         (unsigned long long) (d % 365));
        else
                snprintf(buf, len, "%lluy", (unsigned long long) (d / 365));
        return buf;
}
#define FORMAT_AGE(ts) format_age((char[32]){}, 32, (ts))

/* ---- tables ---------------------------------------------------------------------------------- */

/* Cells in rows, the header first; printed with each column as wide as its widest cell. Empty cells
 * print as "-", so that every row splits into the same number of words. */
typedef struct Table {
        size_t n_columns, n_cells, n_allocated;
        char **cells;
} Table;

static Table *table_free(Table *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_cells; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Table *, table_free);

/* Takes cell (which must not be NULL), also on failure. */
static int table_take(Table *t, char *cell) {
        if (t->n_cells == t->n_allocated) {
                size_t n = MAX(t->n_allocated * 2, (size_t) 32);
                char **p = reallocarray(t->cells, n, sizeof(char *));

                if (!p) {
                        free(cell);
                        return -ENOMEM;
                }
                t->cells = p;
                t->n_allocated = n;
        }
        t->cells[t->n_cells++] = cell;
        return 0;
}

static int table_add(Table *t, const char *cell) {
        char *copy = strdup(dash(cell));

        return copy ? table_take(t, copy) : -ENOMEM;
}

_printf_(2, 3) static int table_addf(Table *t, const char *format, ...) {
        char *s = NULL;
        va_list ap;
        int n;

        va_start(ap, format);
        n = vasprintf(&s, format, ap);
        va_end(ap);
        if (n < 0)
                return -ENOMEM;
        return table_take(t, s);
}

/* The header's cells, NULL-terminated. */
static int table_new(Table **ret, const char *first, ...) {
        _cleanup_(table_freep) Table *t = calloc(1, sizeof(Table));
        const char *h = first;
        va_list ap;
        int r = 0;

        if (!t)
                return -ENOMEM;
        va_start(ap, first);
        for (; h && r >= 0; h = va_arg(ap, const char *)) {
                r = table_add(t, h);
                t->n_columns++;
        }
        va_end(ap);
        if (r < 0)
                return r;
        assert(t->n_columns > 0 && t->n_columns <= TABLE_COLUMNS_MAX);
        *ret = TAKE_PTR(t);
        return 0;
}

static size_t table_rows(const Table *t) {
        return t->n_cells / t->n_columns - 1;
}

static void table_print(const Table *t) {
        size_t widths[TABLE_COLUMNS_MAX] = {};

        assert(t->n_cells % t->n_columns == 0);
        for (size_t i = 0; i < t->n_cells; i++)
                widths[i % t->n_columns] = MAX(widths[i % t->n_columns], strlen(t->cells[i]));
        for (size_t i = 0; i < t->n_cells; i++) {
                size_t col = i % t->n_columns;

                if (col + 1 < t->n_columns)
                        printf("%-*s  ", (int) widths[col], t->cells[i]);
                else
                        printf("%s\n", t->cells[i]);
        }
}

/* ---- the API: one private loop, calls that wait ---------------------------------------------- */

typedef struct Ctl {
        sd_event *event;
        sd_event_source *sigint, *sigterm;
        KubeClient *client;
        unsigned pending; /* calls started and not answered */
        int signal;       /* the signal that interrupted us, or 0 */
} Ctl;

/* One request and its answer. */
typedef struct Call {
        Ctl *ctl;
        KubeRequest *request; /* until it is answered */
        bool done;
        int error;
        long http_code;
        cJSON *body;   /* the object or list; on failure the Status, if any */
        char *message; /* on failure: the Status message or the transport's error (NULL: out of memory) */
} Call;

/* Also drops a call still unanswered: its answer can no longer reach c. */
static void call_done(Call *c) {
        if (c->request) {
                kube_request_cancel(c->request);
                c->ctl->pending--;
        }
        cJSON_Delete(c->body);
        free(c->message);
        *c = (Call){};
}

static Ctl *ctl_free(Ctl *ctl) {
        if (!ctl)
                return NULL;
        kube_client_free(ctl->client); /* cancels what is pending, without handlers */
        sd_event_source_disable_unref(ctl->sigint);
        sd_event_source_disable_unref(ctl->sigterm);
        sd_event_unref(ctl->event);
        free(ctl);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Ctl *, ctl_free);

static int ctl_on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Ctl *ctl = userdata;

        ctl->signal = (int) si->ssi_signo;
        return 0;
}

/* The kubeconfig to use: --kubeconfig, else [Kubernetes] Kubeconfig= of the daemon's configuration.
 * Says what is wrong on stderr. */
static int find_kubeconfig(char **ret) {
        _cleanup_(config_done) Config config = {};
        int r;

        if (arg_kubeconfig) {
                *ret = strdup(arg_kubeconfig);
                if (!*ret) {
                        fprintf(stderr, "Out of memory.\n");
                        return -ENOMEM;
                }
                return 0;
        }
        if (access(arg_config, F_OK) < 0) {
                r = -errno;
                fprintf(stderr,
                        "Cannot find the kubeconfig: no configuration file %s (%s); name one with --config "
                        "or "
                        "the kubeconfig with --kubeconfig.\n",
                        arg_config, strerror(-r));
                return r;
        }
        /* Errors in the file are logged (FILE:LINE: what); warnings are the daemon's business. */
        log_set_max_level(LOG_ERR);
        r = config_load(&config, arg_config);
        log_set_max_level(LOG_CRIT);
        if (r < 0) {
                fprintf(stderr,
                        "Cannot find the kubeconfig: the configuration %s is not valid; name the kubeconfig "
                        "with --kubeconfig.\n",
                        arg_config);
                return r;
        }
        *ret = TAKE_PTR(config.kubeconfig);
        return 0;
}

/* Loads the credentials and makes the client; says what is wrong on stderr. */
static int ctl_new(Ctl **ret) {
        _cleanup_(ctl_freep) Ctl *ctl = NULL;
        _cleanup_(kube_credentials_freep) KubeCredentials *creds = NULL;
        _cleanup_free_ char *path = NULL, *error = NULL;
        const KubeClientOptions options = {
                .qps = 0, /* a handful of requests: no client-side limit */
                .burst = 1,
                .user_agent = "hwameictl/" HWAMEID_VERSION,
        };
        sigset_t mask;
        int r;

        r = find_kubeconfig(&path);
        if (r < 0)
                return r;
        r = kubeconfig_load(path, arg_context, &creds, &error);
        if (r < 0) {
                fprintf(stderr, "Cannot load the kubeconfig: %s.\n", error ?: strerror(-r));
                return r;
        }

        ctl = calloc(1, sizeof(Ctl));
        if (!ctl)
                goto oom;
        r = sd_event_new(&ctl->event);
        if (r < 0)
                goto fail;
        /* SIGINT and SIGTERM end the wait cleanly (a progress line gets its newline). */
        if (sigemptyset(&mask) < 0 || sigaddset(&mask, SIGINT) < 0 || sigaddset(&mask, SIGTERM) < 0 ||
            sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
                r = -errno;
                goto fail;
        }
        r = sd_event_add_signal(ctl->event, &ctl->sigint, SIGINT, ctl_on_signal, ctl);
        if (r >= 0)
                r = sd_event_add_signal(ctl->event, &ctl->sigterm, SIGTERM, ctl_on_signal, ctl);
        if (r < 0)
                goto fail;
        r = kube_client_new(ctl->event, creds, &options, &ctl->client);
        if (r < 0)
                goto fail;
        *ret = TAKE_PTR(ctl);
        return 0;

oom:
        r = -ENOMEM;
fail:
        fprintf(stderr, "Cannot set up the Kubernetes client: %s.\n", strerror(-r));
        return r;
}

static void ctl_on_answer(KubeRequest *req, KubeResponse *resp, void *userdata) {
        Call *c = userdata;

        c->request = NULL;
        c->error = resp->error;
        c->http_code = resp->http_code;
        c->body = TAKE_PTR(resp->body);
        if (resp->error < 0)
                c->message = strdup(resp->message ?: strerror(-resp->error));
        c->done = true;
        c->ctl->pending--;
}

static int ctl_start(Ctl *ctl, Call *c, KubeMethod method, const char *path, const cJSON *body) {
        int r;

        *c = (Call){ .ctl = ctl };
        r = kube_request(ctl->client, method, path, body, ctl_on_answer, c, &c->request);
        if (r < 0)
                return r;
        ctl->pending++;
        return 0;
}

/* Runs the loop until every call started is answered; -EINTR when a signal came first. */
static int ctl_wait(Ctl *ctl) {
        int r;

        while (ctl->pending > 0) {
                if (ctl->signal)
                        return -EINTR;
                r = sd_event_run(ctl->event, UINT64_MAX);
                if (r < 0)
                        return r;
        }
        return ctl->signal ? -EINTR : 0;
}

/* The exit status for a failure of the machinery itself (not of a call), said on stderr. */
static int ctl_exit(Ctl *ctl, int r) {
        if (r == -EINTR && ctl->signal)
                return EXIT_SIGNAL_BASE + ctl->signal;
        fprintf(stderr, "%s.\n", r == -ENOMEM ? "Out of memory" : strerror(-r));
        return EXIT_FAILURE;
}

static int ctl_call(Ctl *ctl, Call *c, KubeMethod method, const char *path, const cJSON *body) {
        int r = ctl_start(ctl, c, method, path, body);

        return r < 0 ? r : ctl_wait(ctl);
}

/* GETs paths[i] into calls[i], all at once, and waits for every answer. */
static int ctl_get_all(Ctl *ctl, Call *const *calls, const char *const *paths, size_t n) {
        int r;

        for (size_t i = 0; i < n; i++) {
                r = ctl_start(ctl, calls[i], KUBE_GET, paths[i], NULL);
                if (r < 0)
                        return r;
        }
        return ctl_wait(ctl);
}

static bool call_not_found(const Call *c) {
        return c->error == -ENOENT && c->http_code == 404;
}

/* One line on stderr about a call that failed; returns EXIT_FAILURE. what: "list LocalVolumes". */
static int call_fail(const Call *c, const char *what) {
        const char *msg = c->message ?: strerror(-c->error);

        if (c->http_code == 0)
                fprintf(stderr, "Cannot reach the API server %s to %s: %s\n",
                        strna(kube_client_server(c->ctl->client)), what, msg);
        else if (call_not_found(c))
                /* A collection that is not there: the CRDs are missing. */
                fprintf(stderr,
                        "Failed to %s: %s (are hwameid's CRDs applied? see /usr/share/hwameid/crds)\n", what,
                        msg);
        else
                fprintf(stderr, "Failed to %s: %s\n", what, msg);
        return EXIT_FAILURE;
}

/* ---- summaries: what the tables show and --json prints --------------------------------------- */

/* The state as people read it: "" (not yet picked up by the leader) is "Pending". */
static const char *state_label(const char *state) {
        return isempty(state) ? "Pending" : state;
}

static bool migrate_state_is_final(const char *state) {
        return streq_ptr(state, "Completed") || streq_ptr(state, "Aborted");
}

/* 0–100, or -1 when nothing says. */
static int migrate_percent(const cJSON *m) {
        const cJSON *p = J(m, "status", "progress");
        uint64_t total = ju64(J(p, "bytesTotal")), done = ju64(J(p, "bytesDone"));

        if (streq_ptr(jstr(J(m, "status", "state")), "Completed"))
                return 100;
        if (total == 0)
                return -1;
        return (int) MIN(done * 100 / total, (uint64_t) 100);
}

/* {name, volume, from, to, targetNodesSuggested, abort, state, message, progress, percent, digest,
 *  startTime, completionTime, creationTimestamp} */
static cJSON *migrate_summary(const cJSON *m) {
        const cJSON *spec = J(m, "spec"), *st = J(m, "status");
        _cleanup_json_ cJSON *o = cJSON_CreateObject();
        int pct = migrate_percent(m);

        if (!o || !json_add_string(o, "name", name_of(m)) ||
            !json_add_string(o, "volume", jstr(J(spec, "volumeName"))) ||
            !json_add_string(o, "from", jstr(J(spec, "sourceNode"))) ||
            !json_add_string(o, "to", jstr(J(st, "targetNode"))) ||
            !json_add_copy(o, "targetNodesSuggested", J(spec, "targetNodesSuggested")) ||
            !json_add_bool(o, "abort", jbool(J(spec, "abort"), false)) ||
            !json_add_string(o, "state", jstr(J(st, "state")) ?: "") ||
            !json_add_string(o, "message", jstr(J(st, "message"))) ||
            !json_add_copy(o, "progress", J(st, "progress")) ||
            !(pct >= 0 ? json_add_number(o, "percent", pct) : !!cJSON_AddNullToObject(o, "percent")) ||
            !json_add_string(o, "digest", jstr(J(st, "digest"))) ||
            !json_add_string(o, "startTime", jstr(J(st, "startTime"))) ||
            !json_add_string(o, "completionTime", jstr(J(st, "completionTime"))) ||
            !json_add_string(o, "creationTimestamp", jstr(J(m, "metadata", "creationTimestamp"))))
                return NULL;
        return TAKE_PTR(o);
}

/* The first migration of the volume that has not ended, or NULL. */
static const cJSON *active_migration(const cJSON *migrations, const char *volume) {
        const cJSON *m;

        cJSON_ArrayForEach(m, J(migrations, "items")) {
                if (streq_ptr(jstr(J(m, "spec", "volumeName")), volume) &&
                    !migrate_state_is_final(jstr(J(m, "status", "state"))))
                        return m;
        }
        return NULL;
}

static bool replica_is_ready(const cJSON *r) {
        return streq_ptr(jstr(J(r, "status", "state")), "Ready") && jbool(J(r, "status", "synced"), true);
}

/* {name, capacityBytes, pool, replicaNumber, state, published, nodes, replicas, readyReplicas,
 *  migration: {name, state, percent} or null} */
static cJSON *volume_summary(const cJSON *lv, const cJSON *replicas, const cJSON *migrations) {
        const cJSON *spec = J(lv, "spec"), *st = J(lv, "status"), *r, *n;
        const char *name = name_of(lv);
        const cJSON *m = active_migration(migrations, name);
        _cleanup_json_ cJSON *o = cJSON_CreateObject();
        cJSON *nodes, *names, *mig;
        unsigned ready = 0;

        if (!o || !json_add_string(o, "name", name) ||
            !json_add_number(o, "capacityBytes", (double) ju64(J(spec, "requiredCapacityBytes"))) ||
            !json_add_string(o, "pool", jstr(J(spec, "poolName"))) ||
            !json_add_number(o, "replicaNumber", (double) ju64(J(spec, "replicaNumber"))) ||
            !json_add_string(o, "state", jstr(J(st, "state"))) ||
            !json_add_string(o, "published", jstr(J(st, "publishedNode"))))
                return NULL;
        nodes = cJSON_AddArrayToObject(o, "nodes");
        names = cJSON_AddArrayToObject(o, "replicas");
        if (!nodes || !names)
                return NULL;
        /* Where it may be used; a volume without accessibility is where its replicas are. */
        cJSON_ArrayForEach(n, J(spec, "accessibility", "nodes")) {
                if (jstr(n) && !json_append_string(nodes, jstr(n)))
                        return NULL;
        }
        cJSON_ArrayForEach(r, J(replicas, "items")) {
                const char *node = jstr(J(r, "spec", "nodeName"));

                if (!streq_ptr(jstr(J(r, "spec", "volumeName")), name))
                        continue;
                if (!json_append_string(names, name_of(r) ?: ""))
                        return NULL;
                if (replica_is_ready(r))
                        ready++;
                if (node && cJSON_GetArraySize(J(spec, "accessibility", "nodes")) == 0 &&
                    !json_array_has_string(nodes, node) && !json_append_string(nodes, node))
                        return NULL;
        }
        if (!json_add_number(o, "readyReplicas", ready))
                return NULL;
        if (!m)
                return cJSON_AddNullToObject(o, "migration") ? TAKE_PTR(o) : NULL;
        mig = cJSON_AddObjectToObject(o, "migration");
        if (!mig || !json_add_string(mig, "name", name_of(m)) ||
            !json_add_string(mig, "state", jstr(J(m, "status", "state")) ?: "") ||
            !(migrate_percent(m) >= 0 ? json_add_number(mig, "percent", migrate_percent(m))
                                      : !!cJSON_AddNullToObject(mig, "percent")))
                return NULL;
        return TAKE_PTR(o);
}

/* {name, node, volume, pool, capacityBytes, state, synced, device, digest} */
static cJSON *replica_summary(const cJSON *r) {
        _cleanup_json_ cJSON *o = cJSON_CreateObject();
        const cJSON *synced = J(r, "status", "synced");

        if (!o || !json_add_string(o, "name", name_of(r)) ||
            !json_add_string(o, "node", jstr(J(r, "spec", "nodeName"))) ||
            !json_add_string(o, "volume", jstr(J(r, "spec", "volumeName"))) ||
            !json_add_string(o, "pool", jstr(J(r, "spec", "poolName"))) ||
            !json_add_number(o, "capacityBytes", (double) ju64(J(r, "spec", "requiredCapacityBytes"))) ||
            !json_add_string(o, "state", jstr(J(r, "status", "state"))) ||
            !(cJSON_IsBool(synced) ? json_add_bool(o, "synced", cJSON_IsTrue(synced))
                                   : !!cJSON_AddNullToObject(o, "synced")) ||
            !json_add_string(o, "device", jstr(J(r, "status", "devPath"))) ||
            !json_add_string(o, "digest", jstr(J(r, "metadata", "annotations", SYNC_DIGEST_ANNOTATION))))
                return NULL;
        return TAKE_PTR(o);
}

static const cJSON *find_by_name(const cJSON *list, const char *name) {
        const cJSON *i;

        cJSON_ArrayForEach(i, J(list, "items")) {
                if (streq_ptr(name_of(i), name))
                        return i;
        }
        return NULL;
}

static bool node_is_cordoned(const cJSON *node) {
        const cJSON *t;

        if (jbool(J(node, "spec", "unschedulable"), false))
                return true;
        cJSON_ArrayForEach(t, J(node, "spec", "taints")) {
                if (streq_ptr(jstr(J(t, "key")), UNSCHEDULABLE_TAINT) &&
                    streq_ptr(jstr(J(t, "effect")), "NoSchedule"))
                        return true;
        }
        return false;
}

/* {name, ip, state, cordoned (null without a Node), evictionDisabled, pools: [{name, class, totalBytes,
 *  usedBytes, freeBytes, totalVolumes, usedVolumes, freeVolumes, disks, volumes}], replicas: [replica
 *  summaries]} */
static cJSON *node_summary(const cJSON *lsn, const cJSON *node, const cJSON *replicas) {
        const char *name = name_of(lsn);
        _cleanup_json_ cJSON *o = cJSON_CreateObject();
        cJSON *pools, *reps;
        const cJSON *p, *r;

        if (!o || !json_add_string(o, "name", name) ||
            !json_add_string(o, "ip", jstr(J(lsn, "spec", "storageIP"))) ||
            !json_add_string(o, "state", jstr(J(lsn, "status", "state"))) ||
            !(node ? json_add_bool(o, "cordoned", node_is_cordoned(node))
                   : !!cJSON_AddNullToObject(o, "cordoned")) ||
            !json_add_bool(o, "evictionDisabled",
                           streq_ptr(jstr(J(node, "metadata", "labels", EVICTION_LABEL)), "disable")))
                return NULL;
        pools = cJSON_AddArrayToObject(o, "pools");
        reps = cJSON_AddArrayToObject(o, "replicas");
        if (!pools || !reps)
                return NULL;
        cJSON_ArrayForEach(p, J(lsn, "status", "pools")) {
                cJSON *x = cJSON_CreateObject();

                if (!x || !cJSON_AddItemToArray(pools, x)) {
                        cJSON_Delete(x);
                        return NULL;
                }
                if (!json_add_string(x, "name", jstr(J(p, "name")) ?: p->string) ||
                    !json_add_string(x, "class", jstr(J(p, "class"))) ||
                    !json_add_number(x, "totalBytes", (double) ju64(J(p, "totalCapacityBytes"))) ||
                    !json_add_number(x, "usedBytes", (double) ju64(J(p, "usedCapacityBytes"))) ||
                    !json_add_number(x, "freeBytes", (double) ju64(J(p, "freeCapacityBytes"))) ||
                    !json_add_number(x, "totalVolumes", (double) ju64(J(p, "totalVolumeCount"))) ||
                    !json_add_number(x, "usedVolumes", (double) ju64(J(p, "usedVolumeCount"))) ||
                    !json_add_number(x, "freeVolumes", (double) ju64(J(p, "freeVolumeCount"))) ||
                    !json_add_number(x, "disks", cJSON_GetArraySize(J(p, "disks"))) ||
                    !json_add_copy(x, "volumes", cJSON_IsArray(J(p, "volumes")) ? J(p, "volumes") : NULL))
                        return NULL;
        }
        cJSON_ArrayForEach(r, J(replicas, "items")) {
                cJSON *x;

                if (!streq_ptr(jstr(J(r, "spec", "nodeName")), name))
                        continue;
                x = replica_summary(r);
                if (!x || !cJSON_AddItemToArray(reps, x)) {
                        cJSON_Delete(x);
                        return NULL;
                }
        }
        return TAKE_PTR(o);
}

/* Wraps summaries as {"items": [...]} and prints them; consumes items. */
static int print_items(cJSON *items) {
        _cleanup_json_ cJSON *o = cJSON_CreateObject();

        if (!o || !cJSON_AddItemToObject(o, "items", items)) {
                cJSON_Delete(items);
                return -ENOMEM;
        }
        return print_json(o);
}

static const char *percent_string(char *buf, size_t len, const cJSON *percent) {
        if (!cJSON_IsNumber(percent))
                return "-";
        snprintf(buf, len, "%d%%", percent->valueint);
        return buf;
}
#define PERCENT(p) percent_string((char[8]){}, 8, (p))

static const char *synced_string(const cJSON *synced) {
        return cJSON_IsBool(synced) ? (cJSON_IsTrue(synced) ? "true" : "false") : "-";
}

/* ---- volume list, volume show ---------------------------------------------------------------- */

static int verb_volume_list(Ctl *ctl, char **args) {
        _cleanup_(call_done) Call volumes = {}, replicas = {}, migrations = {};
        _cleanup_json_ cJSON *items = cJSON_CreateArray();
        _cleanup_(table_freep) Table *t = NULL;
        const cJSON *lv, *s;
        int r;

        if (!items)
                return ctl_exit(ctl, -ENOMEM);
        r = ctl_get_all(ctl, (Call *const[]){ &volumes, &replicas, &migrations },
                        (const char *const[]){ VOLUMES_PATH, REPLICAS_PATH, MIGRATES_PATH }, 3);
        if (r < 0)
                return ctl_exit(ctl, r);
        if (volumes.error < 0)
                return call_fail(&volumes, "list LocalVolumes");
        if (replicas.error < 0)
                return call_fail(&replicas, "list LocalVolumeReplicas");
        if (migrations.error < 0)
                return call_fail(&migrations, "list LocalVolumeMigrates");

        cJSON_ArrayForEach(lv, J(volumes.body, "items")) {
                cJSON *x = volume_summary(lv, replicas.body, migrations.body);

                if (!x || !cJSON_AddItemToArray(items, x)) {
                        cJSON_Delete(x);
                        return ctl_exit(ctl, -ENOMEM);
                }
        }
        if (arg_json)
                return print_items(TAKE_PTR(items)) < 0 ? ctl_exit(ctl, -ENOMEM) : EXIT_SUCCESS;

        r = table_new(&t, "NAME", "CAPACITY", "NODES", "STATE", "REPLICAS", "PUBLISHED", "MIGRATION", NULL);
        cJSON_ArrayForEach(s, items) {
                _cleanup_free_ char *nodes = json_join(J(s, "nodes"), ",");
                const cJSON *m = J(s, "migration");

                if (r < 0 || !nodes)
                        return ctl_exit(ctl, -ENOMEM);
                r = table_add(t, jstr(J(s, "name")));
                if (r >= 0)
                        r = table_add(t, FORMAT_BYTES(ju64(J(s, "capacityBytes"))));
                if (r >= 0)
                        r = table_add(t, nodes);
                if (r >= 0)
                        r = table_add(t, jstr(J(s, "state")));
                if (r >= 0)
                        r = table_addf(t, "%llu/%llu", (unsigned long long) ju64(J(s, "readyReplicas")),
                                       (unsigned long long) ju64(J(s, "replicaNumber")));
                if (r >= 0)
                        r = table_add(t, jstr(J(s, "published")));
                if (r >= 0)
                        r = cJSON_IsObject(m) ? table_addf(t, "%s:%s", strna(jstr(J(m, "name"))),
                                                           state_label(jstr(J(m, "state"))))
                                              : table_add(t, NULL);
        }
        if (r < 0)
                return ctl_exit(ctl, r);
        if (table_rows(t) == 0)
                printf("No volumes.\n");
        else
                table_print(t);
        return EXIT_SUCCESS;
}

static void print_field(const char *label, const char *value) {
        printf("%12s: %s\n", label, strna(value));
}

static int print_volume(const cJSON *lv, const cJSON *replicas, const cJSON *migrations) {
        _cleanup_json_ cJSON *s = volume_summary(lv, replicas, migrations);
        _cleanup_(table_freep) Table *rt = NULL, *mt = NULL;
        _cleanup_free_ char *nodes = NULL;
        const char *ns = jstr(J(lv, "spec", "pvcNamespace")), *pvc = jstr(J(lv, "spec", "pvcName"));
        const cJSON *i;
        char line[256];
        int r;

        nodes = s ? json_join(J(s, "nodes"), ", ") : NULL;
        if (!nodes)
                return -ENOMEM;
        print_field("Volume", jstr(J(s, "name")));
        snprintf(line, sizeof(line), "%s in %s", FORMAT_BYTES(ju64(J(s, "capacityBytes"))),
                 dash(jstr(J(s, "pool"))));
        print_field("Capacity", line);
        print_field("State", dash(jstr(J(s, "state"))));
        snprintf(line, sizeof(line), "%llu of %llu ready", (unsigned long long) ju64(J(s, "readyReplicas")),
                 (unsigned long long) ju64(J(s, "replicaNumber")));
        print_field("Replicas", line);
        print_field("Nodes", dash(nodes));
        print_field("Published", dash(jstr(J(s, "published"))));
        if (pvc) {
                snprintf(line, sizeof(line), "%s/%s", dash(ns), pvc);
                print_field("PVC", line);
        }
        if (jstr(J(lv, "spec", "volumegroup")))
                print_field("Group", jstr(J(lv, "spec", "volumegroup")));

        putchar('\n');
        r = table_new(&rt, "REPLICA", "NODE", "STATE", "SYNCED", "DEVICE", "DIGEST", NULL);
        cJSON_ArrayForEach(i, J(replicas, "items")) {
                if (r < 0)
                        return r;
                if (!streq_ptr(jstr(J(i, "spec", "volumeName")), jstr(J(s, "name"))))
                        continue;
                r = table_add(rt, name_of(i));
                if (r >= 0)
                        r = table_add(rt, jstr(J(i, "spec", "nodeName")));
                if (r >= 0)
                        r = table_add(rt, jstr(J(i, "status", "state")));
                if (r >= 0)
                        r = table_add(rt, synced_string(J(i, "status", "synced")));
                if (r >= 0)
                        r = table_add(rt, jstr(J(i, "status", "devPath")));
                if (r >= 0)
                        r = table_add(rt, jstr(J(i, "metadata", "annotations", SYNC_DIGEST_ANNOTATION)));
        }
        if (r < 0)
                return r;
        if (table_rows(rt) == 0)
                printf("No replicas.\n");
        else
                table_print(rt);

        r = table_new(&mt, "MIGRATION", "FROM", "TO", "STATE", "PROGRESS", "AGE", NULL);
        cJSON_ArrayForEach(i, J(migrations, "items")) {
                int pct = migrate_percent(i);

                if (r < 0)
                        return r;
                if (!streq_ptr(jstr(J(i, "spec", "volumeName")), jstr(J(s, "name"))))
                        continue;
                r = table_add(mt, name_of(i));
                if (r >= 0)
                        r = table_add(mt, jstr(J(i, "spec", "sourceNode")));
                if (r >= 0)
                        r = table_add(mt, jstr(J(i, "status", "targetNode")));
                if (r >= 0)
                        r = table_add(mt, state_label(jstr(J(i, "status", "state"))));
                if (r >= 0)
                        r = pct >= 0 ? table_addf(mt, "%d%%", pct) : table_add(mt, NULL);
                if (r >= 0)
                        r = table_add(mt, FORMAT_AGE(jstr(J(i, "metadata", "creationTimestamp"))));
        }
        if (r < 0)
                return r;
        if (table_rows(mt) > 0) {
                putchar('\n');
                table_print(mt);
        }
        return 0;
}

/* Keeps the items of list that concern volume (spec.volumeName); consumes nothing. */
static cJSON *items_of_volume(const cJSON *list, const char *volume) {
        _cleanup_json_ cJSON *a = cJSON_CreateArray();
        const cJSON *i;

        if (!a)
                return NULL;
        cJSON_ArrayForEach(i, J(list, "items")) {
                cJSON *c;

                if (!streq_ptr(jstr(J(i, "spec", "volumeName")), volume))
                        continue;
                c = cJSON_Duplicate(i, true);
                if (!c || !cJSON_AddItemToArray(a, c)) {
                        cJSON_Delete(c);
                        return NULL;
                }
        }
        return TAKE_PTR(a);
}

static int verb_volume_show(Ctl *ctl, char **args) {
        _cleanup_(call_done) Call volume = {}, replicas = {}, migrations = {};
        _cleanup_free_ char *path = NULL, *escaped = kube_escape(args[0]);
        int r;

        if (!escaped || asprintf(&path, VOLUMES_PATH "/%s", escaped) < 0)
                return ctl_exit(ctl, -ENOMEM);
        r = ctl_get_all(ctl, (Call *const[]){ &volume, &replicas, &migrations },
                        (const char *const[]){ path, REPLICAS_PATH, MIGRATES_PATH }, 3);
        if (r < 0)
                return ctl_exit(ctl, r);
        if (call_not_found(&volume)) {
                fprintf(stderr, "Volume %s not found.\n", args[0]);
                return EXIT_NOT_FOUND;
        }
        if (volume.error < 0)
                return call_fail(&volume, "get the LocalVolume");
        if (replicas.error < 0)
                return call_fail(&replicas, "list LocalVolumeReplicas");
        if (migrations.error < 0)
                return call_fail(&migrations, "list LocalVolumeMigrates");

        if (arg_json) {
                _cleanup_json_ cJSON *o = cJSON_CreateObject();

                if (!o || !cJSON_AddItemToObject(o, "volume", TAKE_PTR(volume.body)) ||
                    !cJSON_AddItemToObject(o, "replicas", items_of_volume(replicas.body, args[0])) ||
                    !cJSON_AddItemToObject(o, "migrations", items_of_volume(migrations.body, args[0])) ||
                    print_json(o) < 0)
                        return ctl_exit(ctl, -ENOMEM);
                return EXIT_SUCCESS;
        }
        r = print_volume(volume.body, replicas.body, migrations.body);
        return r < 0 ? ctl_exit(ctl, r) : EXIT_SUCCESS;
}

/* ---- following a migration ------------------------------------------------------------------- */

typedef struct Watcher {
        Ctl *ctl;
        const char *name;
        bool want_abort; /* migrate abort --wait: Aborted is the good end, Completed the bad one */
        bool tty;        /* a progress bar, redrawn in place */
        bool bar_drawn;  /* a bar is on screen without its newline */
        cJSON *last;     /* the last summary shown */
        Call check;      /* a GET that tells a deletion from a list that was behind */
        bool checking;
        int result; /* the exit status once the migration ended; -1 before */
} Watcher;

static void watcher_done(Watcher *w) {
        cJSON_Delete(w->last);
        call_done(&w->check);
}

static void watcher_end_bar(Watcher *w) {
        if (w->bar_drawn)
                putchar('\n');
        w->bar_drawn = false;
}

static unsigned terminal_columns(void) {
        struct winsize ws;

        if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) < 0 || ws.ws_col == 0)
                return 80;
        return ws.ws_col;
}

/* Copy progress: "[####----]  40%  19M / 48M  4.2 MB/s  ETA 7s" redrawn in place on a terminal, else
 * "NAME: copied 19M of 48M (40%), 4.2 MB/s, ETA 7s". What status.progress leaves out (a total of 0,
 * no rate, no etaSeconds) is left out here too. */
static void watcher_show_progress(Watcher *w, const cJSON *s) {
        const cJSON *p = J(s, "progress");
        uint64_t done = ju64(J(p, "bytesDone")), total = ju64(J(p, "bytesTotal"));
        uint64_t rate = ju64(J(p, "bytesPerSecond"));
        unsigned pct = total ? (unsigned) MIN(done * 100 / total, (uint64_t) 100) : 0;
        char of[FORMAT_BYTES_MAX + 16] = "", rate_s[32] = "", eta_s[FORMAT_TIMESPAN_MAX + 8] = "";
        char ts[FORMAT_TIMESPAN_MAX];

        if (total > 0)
                snprintf(of, sizeof(of), w->tty ? " / %s" : " of %s (%u%%)", FORMAT_BYTES(total), pct);
        if (rate > 0)
                snprintf(rate_s, sizeof(rate_s), "%s%.1f MB/s", w->tty ? "  " : ", ", (double) rate / 1e6);
        if (J(p, "etaSeconds") && done < total)
                snprintf(eta_s, sizeof(eta_s), "%sETA %s", w->tty ? "  " : ", ",
                         format_timespan(ts, sizeof(ts), ju64(J(p, "etaSeconds")) * USEC_PER_SEC));
        if (w->tty) {
                unsigned cols = terminal_columns(), width = cols >= 110 ? 40 : cols >= 90 ? 25 : 12;
                char bar[48] = "";

                if (total > 0) {
                        bar[0] = '[';
                        for (unsigned i = 0; i < width; i++)
                                bar[i + 1] = i < pct * width / 100 ? '#' : '-';
                        snprintf(bar + width + 1, sizeof(bar) - width - 1, "] %3u%%  ", pct);
                } else
                        snprintf(bar, sizeof(bar), "copied ");
                printf("\r%s%s%s%s%s\033[K", bar, FORMAT_BYTES(done), of, rate_s, eta_s);
                w->bar_drawn = true;
        } else
                printf("%s: copied %s%s%s%s\n", w->name, FORMAT_BYTES(done), of, rate_s, eta_s);
}

/* What changed since the last summary, for people: state changes and new messages on lines of their
 * own, copy progress as a bar on a terminal and as lines elsewhere. The end that was not wanted goes
 * to stderr. */
static void watcher_render(Watcher *w, const cJSON *s) {
        const char *state = jstr(J(s, "state")) ?: "", *message = jstr(J(s, "message"));
        const char *old_state = w->last ? jstr(J(w->last, "state")) : NULL;
        bool state_changed = !streq_ptr(state, old_state);
        bool progress_changed = !w->last || !cJSON_Compare(J(s, "progress"), J(w->last, "progress"), true);

        if (!w->last) {
                _cleanup_free_ char *targets = json_join(J(s, "targetNodesSuggested"), ", ");

                const char *to = jstr(J(s, "to"));

                printf("%s: volume %s from %s to %s%s\n", w->name, strna(jstr(J(s, "volume"))),
                       strna(jstr(J(s, "from"))),
                       to
                               ?: isempty(targets) ? "a node the leader chooses"
                                                   : targets,
                       !to && !isempty(targets) ? " (suggested)" : "");
        }
        if (state_changed) {
                bool bad = streq(state, w->want_abort ? "Completed" : "Aborted");
                FILE *f = bad ? stderr : stdout;

                watcher_end_bar(w);
                fflush(stdout);
                fprintf(f, "%s: %s%s%s", w->name, state_label(state), message ? ": " : "",
                        message ?: (isempty(state) ? ": waiting for the leader's migrate controller" : ""));
                if (streq(state, "Completed") && jstr(J(s, "digest")))
                        fprintf(f, " (verified, xxh3-128 %s)", jstr(J(s, "digest")));
                if (bad && w->want_abort)
                        fprintf(f, " (too late to abort)");
                fputc('\n', f);
        } else if (message && !streq_ptr(message, jstr(J(w->last, "message")))) {
                watcher_end_bar(w);
                printf("%s: %s\n", w->name, message);
        }
        if (streq(state, "SyncReplica") && cJSON_IsObject(J(s, "progress")) &&
            (state_changed || progress_changed))
                watcher_show_progress(w, s);
        fflush(stdout);
}

/* A new version of the migration: show what changed, note its end. */
static void watcher_update(Watcher *w, const cJSON *m) {
        _cleanup_json_ cJSON *s = NULL;
        const char *state;

        if (w->result >= 0)
                return;
        s = migrate_summary(m);
        if (!s) {
                w->result = ctl_exit(w->ctl, -ENOMEM);
                return;
        }
        if (w->last && cJSON_Compare(w->last, s, true))
                return;
        if (arg_json) {
                if (print_json_line(s) < 0) {
                        w->result = ctl_exit(w->ctl, -ENOMEM);
                        return;
                }
        } else
                watcher_render(w, s);
        state = jstr(J(s, "state"));
        if (migrate_state_is_final(state))
                w->result = streq(state, w->want_abort ? "Aborted" : "Completed") ? EXIT_SUCCESS
                                                                                  : EXIT_FAILURE;
        cJSON_Delete(w->last);
        w->last = TAKE_PTR(s);
}

static void watcher_deleted(Watcher *w) {
        if (w->result >= 0)
                return;
        watcher_end_bar(w);
        fflush(stdout);
        fprintf(stderr, "Migration %s was deleted before it ended.\n", w->name);
        w->result = EXIT_FAILURE;
}

static void watcher_on_added(Informer *inf, const cJSON *obj, void *userdata) {
        watcher_update(userdata, obj);
}

static void watcher_on_updated(Informer *inf, const cJSON *old, const cJSON *obj, void *userdata) {
        watcher_update(userdata, obj);
}

static void watcher_on_deleted(Informer *inf, const cJSON *obj, void *userdata) {
        watcher_deleted(userdata);
}

/* A list without the object: deleted, or a list served from a cache that is behind (the watch that
 * follows brings it then). A GET asks the source. */
static void watcher_on_synced(Informer *inf, void *userdata) {
        Watcher *w = userdata;
        _cleanup_free_ char *path = NULL, *escaped = NULL;

        if (kube_cache_size(informer_cache(inf)) > 0 || w->checking || w->result >= 0)
                return;
        escaped = kube_escape(w->name);
        if (!escaped || asprintf(&path, MIGRATES_PATH "/%s", escaped) < 0 ||
            ctl_start(w->ctl, &w->check, KUBE_GET, path, NULL) < 0) {
                w->result = ctl_exit(w->ctl, -ENOMEM);
                return;
        }
        w->checking = true;
}

static void watcher_on_health(Informer *inf, int error, void *userdata) {
        Watcher *w = userdata;
        const char *message = NULL;

        watcher_end_bar(w);
        fflush(stdout);
        if (error < 0) {
                (void) informer_last_error(inf, &message);
                fprintf(stderr, "Lost the watch on migration %s (%s); retrying.\n", w->name,
                        message ?: strerror(-error));
        } else
                fprintf(stderr, "Watching migration %s again.\n", w->name);
}

/* Shows the migration m (as read from the API) and follows it until it ends; returns the exit status:
 * 0 when it ended the wanted way (Completed, or Aborted when want_abort), 1 otherwise. */
static int follow_migration(Ctl *ctl, const cJSON *m, bool want_abort) {
        static const InformerHandlers handlers = {
                .added = watcher_on_added,
                .updated = watcher_on_updated,
                .deleted = watcher_on_deleted,
                .synced = watcher_on_synced,
                .health = watcher_on_health,
        };
        const char *term = getenv("TERM");
        _cleanup_(watcher_done) Watcher w = {
                .ctl = ctl,
                .name = name_of(m),
                .want_abort = want_abort,
                .tty = !arg_json && isatty(STDOUT_FILENO) && !streq_ptr(term, "dumb"),
                .result = -1,
        };
        _cleanup_(informer_freep) Informer *inf = NULL;
        _cleanup_free_ char *selector = NULL;
        int r;

        assert(w.name);
        watcher_update(&w, m);
        if (w.result >= 0)
                return w.result;

        if (asprintf(&selector, "metadata.name=%s", w.name) < 0)
                return ctl_exit(ctl, -ENOMEM);
        r = informer_new(ctl->client,
                         &(const InformerConfig){
                                 .name = "localvolumemigrate",
                                 .path = MIGRATES_PATH,
                                 .field_selector = selector,
                         },
                         &handlers, &w, &inf);
        if (r >= 0)
                r = informer_start(inf);
        if (r < 0)
                return ctl_exit(ctl, r);

        while (w.result < 0) {
                if (ctl->signal) {
                        watcher_end_bar(&w);
                        fflush(stdout);
                        return EXIT_SIGNAL_BASE + ctl->signal;
                }
                r = sd_event_run(ctl->event, UINT64_MAX);
                if (r < 0)
                        return ctl_exit(ctl, r);
                if (w.checking && w.check.done) {
                        w.checking = false;
                        if (call_not_found(&w.check))
                                watcher_deleted(&w);
                        else if (w.check.error >= 0)
                                watcher_update(&w, w.check.body);
                        call_done(&w.check);
                }
        }
        return w.result;
}

/* Gets the migration; 404 says so and gives EXIT_NOT_FOUND. */
static int get_migration(Ctl *ctl, const char *name, Call *ret) {
        _cleanup_free_ char *path = NULL, *escaped = kube_escape(name);
        int r;

        if (!escaped || asprintf(&path, MIGRATES_PATH "/%s", escaped) < 0)
                return ctl_exit(ctl, -ENOMEM);
        r = ctl_call(ctl, ret, KUBE_GET, path, NULL);
        if (r < 0)
                return ctl_exit(ctl, r);
        if (call_not_found(ret)) {
                fprintf(stderr, "Migration %s not found.\n", name);
                return EXIT_NOT_FOUND;
        }
        if (ret->error < 0)
                return call_fail(ret, "get the LocalVolumeMigrate");
        return EXIT_SUCCESS;
}

/* ---- volume migrate -------------------------------------------------------------------------- */

static void random_suffix(char buf[static MIGRATE_SUFFIX_LEN + 1]) {
        static const char chars[] = "abcdefghijklmnopqrstuvwxyz0123456789";

        for (size_t i = 0; i < MIGRATE_SUFFIX_LEN; i++)
                buf[i] = chars[random_u64() % (sizeof(chars) - 1)];
        buf[MIGRATE_SUFFIX_LEN] = '\0';
}

static cJSON *migrate_object(const char *name, const char *volume) {
        _cleanup_json_ cJSON *o = cJSON_CreateObject();
        cJSON *meta, *spec, *targets;

        if (!o || !json_add_string(o, "apiVersion", "hwameistor.io/v1alpha1") ||
            !json_add_string(o, "kind", "LocalVolumeMigrate"))
                return NULL;
        meta = cJSON_AddObjectToObject(o, "metadata");
        spec = cJSON_AddObjectToObject(o, "spec");
        if (!meta || !spec || !json_add_string(meta, "name", name) ||
            !json_add_string(spec, "volumeName", volume) || !json_add_string(spec, "sourceNode", arg_from))
                return NULL;
        targets = cJSON_AddArrayToObject(spec, "targetNodesSuggested");
        if (!targets)
                return NULL;
        for (char **t = arg_to; t && *t; t++)
                if (!json_append_string(targets, *t))
                        return NULL;
        if (!json_add_bool(spec, "migrateAllVols", true))
                return NULL;
        return TAKE_PTR(o);
}

/* What can be told before asking the leader: the volume exists (else EXIT_NOT_FOUND), the source
 * holds a replica of it, the suggested targets are hwameid nodes, and no other migration of it runs. */
static int migrate_precheck(Ctl *ctl, const char *volume) {
        _cleanup_(call_done) Call lv = {}, replicas = {}, migrations = {}, nodes = {};
        _cleanup_free_ char *path = NULL, *escaped = kube_escape(volume);
        const cJSON *m, *i;
        bool have = false;
        int r;

        if (!escaped || asprintf(&path, VOLUMES_PATH "/%s", escaped) < 0)
                return ctl_exit(ctl, -ENOMEM);
        r = ctl_get_all(ctl, (Call *const[]){ &lv, &replicas, &migrations, &nodes },
                        (const char *const[]){ path, REPLICAS_PATH, MIGRATES_PATH, LSN_PATH }, 4);
        if (r < 0)
                return ctl_exit(ctl, r);
        if (call_not_found(&lv)) {
                fprintf(stderr, "Volume %s not found.\n", volume);
                return EXIT_NOT_FOUND;
        }
        if (lv.error < 0)
                return call_fail(&lv, "get the LocalVolume");
        if (replicas.error < 0)
                return call_fail(&replicas, "list LocalVolumeReplicas");
        if (migrations.error < 0)
                return call_fail(&migrations, "list LocalVolumeMigrates");
        if (nodes.error < 0)
                return call_fail(&nodes, "list LocalStorageNodes");

        cJSON_ArrayForEach(i, J(replicas.body, "items")) {
                have = have || (streq_ptr(jstr(J(i, "spec", "volumeName")), volume) &&
                                streq_ptr(jstr(J(i, "spec", "nodeName")), arg_from));
        }
        if (!have) {
                fprintf(stderr, "Volume %s has no replica on node %s.\n", volume, arg_from);
                return EXIT_FAILURE;
        }
        for (char **t = arg_to; t && *t; t++)
                if (!find_by_name(nodes.body, *t)) {
                        fprintf(stderr,
                                "Node %s (--to) is not a hwameid node: it has no LocalStorageNode.\n", *t);
                        return EXIT_FAILURE;
                }
        m = active_migration(migrations.body, volume);
        if (m) {
                fprintf(stderr, "Volume %s is already being migrated by %s (%s); abort that one first.\n",
                        volume, strna(name_of(m)), state_label(jstr(J(m, "status", "state"))));
                return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
}

static int verb_volume_migrate(Ctl *ctl, char **args) {
        const char *volume = args[0];
        _cleanup_(call_done) Call created = {};
        int r;

        if (!arg_from) {
                fprintf(stderr,
                        "'hwameictl volume migrate' needs --from NODE: the node the volume leaves.\n");
                return EXIT_USAGE;
        }
        if (strv_contains(arg_to, arg_from)) {
                fprintf(stderr, "--to %s is the node the volume leaves (--from).\n", arg_from);
                return EXIT_USAGE;
        }
        r = migrate_precheck(ctl, volume);
        if (r != EXIT_SUCCESS)
                return r;

        for (unsigned attempt = 0;; attempt++) {
                _cleanup_json_ cJSON *body = NULL;
                _cleanup_free_ char *name = NULL;
                char suffix[MIGRATE_SUFFIX_LEN + 1];

                random_suffix(suffix);
                if (arg_name)
                        name = strdup(arg_name);
                else if (asprintf(&name, "migrate-%s-%s", volume, suffix) < 0)
                        name = NULL;
                body = name ? migrate_object(name, volume) : NULL;
                if (!body)
                        return ctl_exit(ctl, -ENOMEM);
                call_done(&created);
                r = ctl_call(ctl, &created, KUBE_POST, MIGRATES_PATH, body);
                if (r < 0)
                        return ctl_exit(ctl, r);
                if (created.error == -EEXIST && !arg_name && attempt + 1 < MIGRATE_CREATE_ATTEMPTS)
                        continue; /* a name drawn twice: draw again */
                if (created.error == -EEXIST) {
                        fprintf(stderr, "Migration %s already exists.\n", name);
                        return EXIT_FAILURE;
                }
                if (created.error < 0)
                        return call_fail(&created, "create the LocalVolumeMigrate");
                break;
        }

        if (arg_json) {
                if (print_json_line(created.body) < 0)
                        return ctl_exit(ctl, -ENOMEM);
        } else {
                printf("%s\n", strna(name_of(created.body)));
                fflush(stdout);
        }
        if (!arg_wait)
                return EXIT_SUCCESS;
        if (!name_of(created.body)) {
                fprintf(stderr, "The API server's answer to the creation names no migration.\n");
                return EXIT_FAILURE;
        }
        return follow_migration(ctl, created.body, false);
}

/* ---- migrate list, watch, abort -------------------------------------------------------------- */

static int verb_migrate_list(Ctl *ctl, char **args) {
        _cleanup_(call_done) Call migrations = {};
        _cleanup_json_ cJSON *items = cJSON_CreateArray();
        _cleanup_(table_freep) Table *t = NULL;
        const cJSON *m, *s;
        int r;

        if (!items)
                return ctl_exit(ctl, -ENOMEM);
        r = ctl_call(ctl, &migrations, KUBE_GET, MIGRATES_PATH, NULL);
        if (r < 0)
                return ctl_exit(ctl, r);
        if (migrations.error < 0)
                return call_fail(&migrations, "list LocalVolumeMigrates");
        cJSON_ArrayForEach(m, J(migrations.body, "items")) {
                cJSON *x = migrate_summary(m);

                if (!x || !cJSON_AddItemToArray(items, x)) {
                        cJSON_Delete(x);
                        return ctl_exit(ctl, -ENOMEM);
                }
        }
        if (arg_json)
                return print_items(TAKE_PTR(items)) < 0 ? ctl_exit(ctl, -ENOMEM) : EXIT_SUCCESS;

        r = table_new(&t, "NAME", "VOLUME", "FROM", "TO", "STATE", "PROGRESS", "AGE", NULL);
        cJSON_ArrayForEach(s, items) {
                if (r >= 0)
                        r = table_add(t, jstr(J(s, "name")));
                if (r >= 0)
                        r = table_add(t, jstr(J(s, "volume")));
                if (r >= 0)
                        r = table_add(t, jstr(J(s, "from")));
                if (r >= 0)
                        r = table_add(t, jstr(J(s, "to")));
                if (r >= 0)
                        r = table_add(t, state_label(jstr(J(s, "state"))));
                if (r >= 0)
                        r = table_add(t, PERCENT(J(s, "percent")));
                if (r >= 0)
                        r = table_add(t, FORMAT_AGE(jstr(J(s, "creationTimestamp"))));
        }
        if (r < 0)
                return ctl_exit(ctl, r);
        if (table_rows(t) == 0)
                printf("No migrations.\n");
        else
                table_print(t);
        return EXIT_SUCCESS;
}

static int verb_migrate_watch(Ctl *ctl, char **args) {
        _cleanup_(call_done) Call m = {};
        int r;

        r = get_migration(ctl, args[0], &m);
        if (r != EXIT_SUCCESS)
                return r;
        return follow_migration(ctl, m.body, false);
}

static int verb_migrate_abort(Ctl *ctl, char **args) {
        const char *name = args[0];
        _cleanup_(call_done) Call m = {}, patched = {};
        _cleanup_json_ cJSON *patch = NULL;
        _cleanup_free_ char *path = NULL, *escaped = NULL;
        const char *state;
        cJSON *spec;
        int r;

        r = get_migration(ctl, name, &m);
        if (r != EXIT_SUCCESS)
                return r;
        state = jstr(J(m.body, "status", "state")) ?: "";
        if (streq(state, "Aborted")) {
                if (arg_wait || arg_json)
                        return follow_migration(ctl, m.body, true); /* shows it, and it has ended */
                printf("Migration %s is already Aborted: %s\n", name,
                       dash(jstr(J(m.body, "status", "message"))));
                return EXIT_SUCCESS;
        }
        if (streq(state, "Completed")) {
                fprintf(stderr, "Migration %s has already Completed: nothing to abort.\n", name);
                return EXIT_FAILURE;
        }
        if (streq(state, "PruneReplica")) {
                fprintf(stderr,
                        "Migration %s is in PruneReplica: too late to abort, the volume is switching to "
                        "%s.\n",
                        name, strna(jstr(J(m.body, "status", "targetNode"))));
                return EXIT_FAILURE;
        }

        patch = cJSON_CreateObject();
        spec = patch ? cJSON_AddObjectToObject(patch, "spec") : NULL;
        escaped = kube_escape(name);
        if (!spec || !json_add_bool(spec, "abort", true) || !escaped ||
            asprintf(&path, MIGRATES_PATH "/%s", escaped) < 0)
                return ctl_exit(ctl, -ENOMEM);
        r = ctl_call(ctl, &patched, KUBE_PATCH_MERGE, path, patch);
        if (r < 0)
                return ctl_exit(ctl, r);
        if (call_not_found(&patched)) {
                fprintf(stderr, "Migration %s not found.\n", name);
                return EXIT_NOT_FOUND;
        }
        if (patched.error < 0)
                return call_fail(&patched, "set spec.abort on the LocalVolumeMigrate");

        if (arg_json) {
                _cleanup_json_ cJSON *s = NULL;

                if (arg_wait)
                        return follow_migration(ctl, patched.body, true);
                s = migrate_summary(patched.body);
                return !s || print_json_line(s) < 0 ? ctl_exit(ctl, -ENOMEM) : EXIT_SUCCESS;
        }
        printf("Abort requested for migration %s (%s): the leader removes the target replica and leaves the "
               "source untouched.\n",
               name, state_label(state));
        fflush(stdout);
        return arg_wait ? follow_migration(ctl, patched.body, true) : EXIT_SUCCESS;
}

/* ---- node status ----------------------------------------------------------------------------- */

static int print_nodes(const cJSON *items) {
        _cleanup_(table_freep) Table *nt = NULL, *rt = NULL;
        const cJSON *n, *p, *x;
        int r;

        r = table_new(&nt, "NODE", "IP", "STATE", "CORDONED", "EVICTION", "POOL", "CLASS", "FREE", "TOTAL",
                      "VOLUMES", NULL);
        if (r >= 0)
                r = table_new(&rt, "NODE", "REPLICA", "VOLUME", "CAPACITY", "STATE", "SYNCED", "DEVICE",
                              NULL);
        cJSON_ArrayForEach(n, items) {
                const cJSON *cordoned = J(n, "cordoned");
                int pools = cJSON_GetArraySize(J(n, "pools"));

                /* One row per pool; a node without pools gets one row all the same. */
                for (int k = 0; k < MAX(pools, 1) && r >= 0; k++) {
                        p = cJSON_GetArrayItem(J(n, "pools"), k);
                        r = table_add(nt, jstr(J(n, "name")));
                        if (r >= 0)
                                r = table_add(nt, jstr(J(n, "ip")));
                        if (r >= 0)
                                r = table_add(nt, jstr(J(n, "state")));
                        if (r >= 0)
                                r = table_add(nt, cJSON_IsBool(cordoned)
                                                          ? (cJSON_IsTrue(cordoned) ? "yes" : "no")
                                                          : NULL);
                        if (r >= 0)
                                r = table_add(nt, jbool(J(n, "evictionDisabled"), false) ? "disabled"
                                                                                         : "enabled");
                        if (r >= 0)
                                r = table_add(nt, jstr(J(p, "name")));
                        if (r >= 0)
                                r = table_add(nt, jstr(J(p, "class")));
                        if (r >= 0)
                                r = table_add(nt, p ? FORMAT_BYTES(ju64(J(p, "freeBytes"))) : NULL);
                        if (r >= 0)
                                r = table_add(nt, p ? FORMAT_BYTES(ju64(J(p, "totalBytes"))) : NULL);
                        if (r >= 0)
                                r = p ? table_addf(nt, "%llu/%llu",
                                                   (unsigned long long) ju64(J(p, "usedVolumes")),
                                                   (unsigned long long) ju64(J(p, "totalVolumes")))
                                      : table_add(nt, NULL);
                }
                cJSON_ArrayForEach(x, J(n, "replicas")) {
                        if (r >= 0)
                                r = table_add(rt, jstr(J(n, "name")));
                        if (r >= 0)
                                r = table_add(rt, jstr(J(x, "name")));
                        if (r >= 0)
                                r = table_add(rt, jstr(J(x, "volume")));
                        if (r >= 0)
                                r = table_add(rt, FORMAT_BYTES(ju64(J(x, "capacityBytes"))));
                        if (r >= 0)
                                r = table_add(rt, jstr(J(x, "state")));
                        if (r >= 0)
                                r = table_add(rt, synced_string(J(x, "synced")));
                        if (r >= 0)
                                r = table_add(rt, jstr(J(x, "device")));
                }
        }
        if (r < 0)
                return r;
        table_print(nt);
        putchar('\n');
        if (table_rows(rt) == 0)
                printf("No replicas.\n");
        else
                table_print(rt);
        return 0;
}

/* {"items": [*object]}, taking *object; {"items": []} for NULL. */
static cJSON *list_of(cJSON **object) {
        _cleanup_json_ cJSON *o = cJSON_CreateObject();
        cJSON *a = o ? cJSON_AddArrayToObject(o, "items") : NULL;

        if (!a)
                return NULL;
        if (object && *object) {
                if (!cJSON_AddItemToArray(a, *object))
                        return NULL;
                *object = NULL;
        }
        return TAKE_PTR(o);
}

static int verb_node_status(Ctl *ctl, char **args) {
        const char *name = args[0]; /* NULL: every node */
        _cleanup_(call_done) Call lsn = {}, nodes = {}, replicas = {};
        _cleanup_free_ char *lsn_path = NULL, *node_path = NULL, *escaped = NULL;
        _cleanup_json_ cJSON *items = cJSON_CreateArray(), *one_lsn = NULL, *one_node = NULL;
        const cJSON *lsns, *node_list, *l;
        int r;

        if (!items)
                return ctl_exit(ctl, -ENOMEM);
        if (name) {
                escaped = kube_escape(name);
                if (!escaped || asprintf(&lsn_path, LSN_PATH "/%s", escaped) < 0 ||
                    asprintf(&node_path, NODES_PATH "/%s", escaped) < 0)
                        return ctl_exit(ctl, -ENOMEM);
        }
        r = ctl_get_all(
                ctl, (Call *const[]){ &lsn, &nodes, &replicas },
                (const char *const[]){ lsn_path ?: LSN_PATH, node_path ?: NODES_PATH, REPLICAS_PATH }, 3);
        if (r < 0)
                return ctl_exit(ctl, r);
        if (name && call_not_found(&lsn)) {
                if (nodes.error >= 0)
                        fprintf(stderr, "Node %s has no LocalStorageNode: hwameid has not registered it.\n",
                                name);
                else
                        fprintf(stderr, "Node %s not found.\n", name);
                return EXIT_NOT_FOUND;
        }
        if (lsn.error < 0)
                return call_fail(&lsn, name ? "get the LocalStorageNode" : "list LocalStorageNodes");
        /* Without the Node (or the right to read it), cordon and label are unknown, not an error. */
        if (nodes.error < 0 && !(name && call_not_found(&nodes)) && nodes.http_code != 403)
                return call_fail(&nodes, name ? "get the Node" : "list Nodes");
        if (replicas.error < 0)
                return call_fail(&replicas, "list LocalVolumeReplicas");

        if (name) {
                /* Single objects as one-item lists, so that both ways go through the same code. */
                one_lsn = list_of(&lsn.body);
                one_node = list_of(nodes.error >= 0 ? &nodes.body : NULL);
                if (!one_lsn || !one_node)
                        return ctl_exit(ctl, -ENOMEM);
                lsns = one_lsn, node_list = one_node;
        } else
                lsns = lsn.body, node_list = nodes.error >= 0 ? nodes.body : NULL;

        cJSON_ArrayForEach(l, J(lsns, "items")) {
                cJSON *x = node_summary(l, find_by_name(node_list, name_of(l)), replicas.body);

                if (!x || !cJSON_AddItemToArray(items, x)) {
                        cJSON_Delete(x);
                        return ctl_exit(ctl, -ENOMEM);
                }
        }
        if (arg_json)
                return print_items(TAKE_PTR(items)) < 0 ? ctl_exit(ctl, -ENOMEM) : EXIT_SUCCESS;
        if (cJSON_GetArraySize(items) == 0) {
                printf("No hwameid nodes (no LocalStorageNodes).\n");
                return EXIT_SUCCESS;
        }
        r = print_nodes(items);
        return r < 0 ? ctl_exit(ctl, r) : EXIT_SUCCESS;
}

/* ---- status (the control socket) ------------------------------------------------------------- */

static int print_status(const cJSON *st) {
        char buf[FORMAT_TIMESPAN_MAX];
        const cJSON *cluster = cJSON_GetObjectItemCaseSensitive(st, "cluster");
        uint64_t pid = 0, uptime = 0, reloads = 0;
        const char *reload_error = json_get_string(st, "lastReloadError");

        (void) json_get_u64(st, "pid", &pid);
        (void) json_get_u64(st, "uptimeSeconds", &uptime);
        (void) json_get_u64(st, "reloads", &reloads);

        printf("hwameid %s (pid %llu) on node %s\n", strna(json_get_string(st, "version")),
               (unsigned long long) pid, strna(json_get_string(st, "node")));
        print_field("State", json_get_string(st, "state"));
        print_field("Status", json_get_string(st, "status"));
        print_field("Uptime", format_timespan(buf, sizeof(buf), uptime * USEC_PER_SEC));
        printf("%12s: %s (reloaded %llu times%s%s)\n", "Config", strna(json_get_string(st, "configFile")),
               (unsigned long long) reloads, reload_error ? ", last reload failed: " : "",
               strempty(reload_error));
        print_field("Kubeconfig", json_get_string(cluster, "kubeconfig"));
        print_field("API server", json_get_string(cluster, "server"));
        print_field("Connection", json_get_string(cluster, "state"));
        {
                const cJSON *leader = cJSON_GetObjectItemCaseSensitive(cluster, "leader");
                const char *holder = json_get_string(leader, "holder");
                bool leading = false;

                (void) json_get_bool(leader, "leading", &leading);
                if (leading)
                        print_field("Leader", "this node");
                else
                        print_field("Leader", isempty(holder) ? "none" : holder);
        }
        {
                const cJSON *storage = cJSON_GetObjectItemCaseSensitive(st, "storage"), *pool;
                bool first = true;

                uint64_t busy = 0;
                char line[128];

                (void) json_get_u64(storage, "busySeconds", &busy);
                if (busy > 0)
                        snprintf(line, sizeof(line), "%s (busy with one command for %llus)",
                                 strna(json_get_string(storage, "backend")), (unsigned long long) busy);
                else
                        snprintf(line, sizeof(line), "%s", strna(json_get_string(storage, "backend")));
                print_field("Storage", line);
                cJSON_ArrayForEach(pool, cJSON_GetObjectItemCaseSensitive(storage, "pools")) {
                        uint64_t total = 0, free_bytes = 0, volumes = 0;
                        bool offline = false;

                        (void) json_get_u64(pool, "totalBytes", &total);
                        (void) json_get_u64(pool, "freeBytes", &free_bytes);
                        (void) json_get_u64(pool, "volumes", &volumes);
                        (void) json_get_bool(pool, "offline", &offline);
                        printf("%12s  %s: %s, %s free, %llu volumes%s\n", first ? "Pools:" : "",
                               strna(json_get_string(pool, "name")), FORMAT_BYTES(total),
                               FORMAT_BYTES(free_bytes), (unsigned long long) volumes,
                               offline ? " (OFFLINE)" : "");
                        first = false;
                }
                if (first)
                        print_field("Pools", "none yet");
        }
        {
                const cJSON *stream = cJSON_GetObjectItemCaseSensitive(st, "stream");
                const char *problem = json_get_string(stream, "problem");
                uint64_t exposed = 0;
                bool tls = true;
                char line[256];

                (void) json_get_u64(stream, "exposed", &exposed);
                (void) json_get_bool(stream, "tls", &tls);
                if (problem)
                        snprintf(line, sizeof(line), "disabled: %s", problem);
                else
                        snprintf(line, sizeof(line), "%s on %s, %s, %llu exports",
                                 strna(json_get_string(stream, "state")),
                                 strna(json_get_string(stream, "address")), tls ? "TLS-PSK" : "PLAIN TCP",
                                 (unsigned long long) exposed);
                print_field("Stream", line);
        }
        print_field("Log level", json_get_string(st, "logLevel"));
        print_field("Control", json_get_string(st, "controlSocket"));
        return 0;
}

static int verb_status(Ctl *ctl, char **args) {
        _cleanup_json_ cJSON *st = NULL;
        _cleanup_free_ char *error = NULL;
        int r;

        r = control_call(arg_socket, "status", &st, &error);
        if (r == -ENOENT || r == -ECONNREFUSED) {
                fprintf(stderr, "hwameid is not running (no daemon on %s: %s).\n", arg_socket, strerror(-r));
                return EXIT_NOT_FOUND;
        }
        if (r < 0) {
                fprintf(stderr, "Failed to query hwameid on %s: %s\n", arg_socket, error ?: strerror(-r));
                return EXIT_FAILURE;
        }
        r = arg_json ? print_json(st) : print_status(st);
        if (r < 0) {
                fprintf(stderr, "Failed to print status: %s\n", strerror(-r));
                return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
}

/* ---- the command line ------------------------------------------------------------------------ */

typedef struct Verb {
        const char *noun, *verb; /* "volume", "show"; "status", NULL */
        const char *args;        /* for messages: "VOLUME", "[NODE]" */
        unsigned min_args, max_args;
        unsigned options; /* OPT_* it takes */
        bool kube;        /* talks to the Kubernetes API */
        int (*run)(Ctl *ctl, char **args);
} Verb;

static const Verb verbs[] = {
        { "status", NULL, "", 0, 0, OPT_SOCKET, false, verb_status },
        { "volume", "list", "", 0, 0, OPTS_KUBE, true, verb_volume_list },
        { "volume", "show", "VOLUME", 1, 1, OPTS_KUBE, true, verb_volume_show },
        { "volume", "migrate", "VOLUME --from NODE", 1, 1,
          OPTS_KUBE | OPT_FROM | OPT_TO | OPT_NAME | OPT_WAIT, true, verb_volume_migrate },
        { "migrate", "list", "", 0, 0, OPTS_KUBE, true, verb_migrate_list },
        { "migrate", "watch", "NAME", 1, 1, OPTS_KUBE, true, verb_migrate_watch },
        { "migrate", "abort", "NAME", 1, 1, OPTS_KUBE | OPT_WAIT, true, verb_migrate_abort },
        { "node", "status", "[NODE]", 0, 1, OPTS_KUBE, true, verb_node_status },
};

/* Returns 1 to go on, 0 to exit successfully (--help, --version), negative for bad usage. */
static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_VERSION = 0x100,
                ARG_CONTEXT,
                ARG_FROM,
                ARG_TO,
                ARG_NAME,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "socket", required_argument, NULL, 's' },
                { "json", no_argument, NULL, 'j' },
                { "config", required_argument, NULL, 'c' },
                { "kubeconfig", required_argument, NULL, 'k' },
                { "context", required_argument, NULL, ARG_CONTEXT },
                { "from", required_argument, NULL, ARG_FROM },
                { "to", required_argument, NULL, ARG_TO },
                { "name", required_argument, NULL, ARG_NAME },
                { "wait", no_argument, NULL, 'w' },
                {},
        };
        int c, r;

        while ((c = getopt_long(argc, argv, "hs:jc:k:w", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("hwameictl %s\n", HWAMEID_VERSION);
                        return 0;
                case 's':
                        arg_socket = optarg;
                        arg_given |= OPT_SOCKET;
                        break;
                case 'j':
                        arg_json = true;
                        break;
                case 'c':
                        arg_config = optarg;
                        arg_given |= OPT_CONFIG;
                        break;
                case 'k':
                        arg_kubeconfig = optarg;
                        arg_given |= OPT_KUBECONFIG;
                        break;
                case ARG_CONTEXT:
                        arg_context = optarg;
                        arg_given |= OPT_CONTEXT;
                        break;
                case ARG_FROM:
                        if (isempty(optarg)) {
                                fprintf(stderr, "--from needs a node name.\n");
                                return -EINVAL;
                        }
                        arg_from = optarg;
                        arg_given |= OPT_FROM;
                        break;
                case ARG_TO: {
                        _cleanup_strv_free_ char **l = NULL;

                        r = strv_split(optarg, ",", &l);
                        if (r < 0) {
                                fprintf(stderr, "Out of memory.\n");
                                return r;
                        }
                        if (!l || !*l) {
                                fprintf(stderr, "--to needs a node name.\n");
                                return -EINVAL;
                        }
                        for (char **i = l; *i; i++) {
                                if (strv_contains(arg_to, *i))
                                        continue;
                                r = strv_extend(&arg_to, *i);
                                if (r < 0) {
                                        fprintf(stderr, "Out of memory.\n");
                                        return r;
                                }
                        }
                        arg_given |= OPT_TO;
                        break;
                }
                case ARG_NAME:
                        if (isempty(optarg)) {
                                fprintf(stderr, "--name needs a name.\n");
                                return -EINVAL;
                        }
                        arg_name = optarg;
                        arg_given |= OPT_NAME;
                        break;
                case 'w':
                        arg_wait = true;
                        arg_given |= OPT_WAIT;
                        break;
                case '?':
                        return -EINVAL;
                default:
                        abort();
                }
        return 1;
}

/* The verb the words name, or NULL after saying why not. */
static const Verb *find_verb(char **words, size_t n, size_t *ret_used) {
        bool noun_known = false;

        if (n == 0) {
                fprintf(stderr, "No command given; see 'hwameictl --help'.\n");
                return NULL;
        }
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                const Verb *v = &verbs[i];

                if (!streq(v->noun, words[0]))
                        continue;
                noun_known = true;
                if (!v->verb) {
                        *ret_used = 1;
                        return v;
                }
                if (n >= 2 && streq(v->verb, words[1])) {
                        *ret_used = 2;
                        return v;
                }
        }
        if (!noun_known) {
                fprintf(stderr, "Unknown command '%s'; see 'hwameictl --help'.\n", words[0]);
                return NULL;
        }
        fprintf(stderr, "'hwameictl %s' needs one of:", words[0]);
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq(verbs[i].noun, words[0]))
                        fprintf(stderr, " %s", verbs[i].verb);
        if (n >= 2)
                fprintf(stderr, " (not '%s')", words[1]);
        fprintf(stderr, "; see 'hwameictl --help'.\n");
        return NULL;
}

static int run(int argc, char *argv[]) {
        _cleanup_(ctl_freep) Ctl *ctl = NULL;
        char **words, *none[] = { NULL };
        const Verb *v;
        size_t n, used = 0;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_USAGE : EXIT_SUCCESS;

        words = argv + optind;
        n = (size_t) (argc - optind);
        v = find_verb(words, n, &used);
        if (!v)
                return EXIT_USAGE;
        words += used;
        n -= used;
        if (n < v->min_args || n > v->max_args) {
                fprintf(stderr, "%s: 'hwameictl %s%s%s%s%s'; see 'hwameictl --help'.\n",
                        n < v->min_args ? "Missing argument" : "Too many arguments", v->noun,
                        v->verb ? " " : "", strempty(v->verb), v->args[0] ? " " : "", v->args);
                return EXIT_USAGE;
        }
        if (arg_given & ~v->options) {
                unsigned bit = (unsigned) __builtin_ctz(arg_given & ~v->options);

                fprintf(stderr, "%s does not apply to 'hwameictl %s%s%s'; see 'hwameictl --help'.\n",
                        option_names[bit], v->noun, v->verb ? " " : "", strempty(v->verb));
                return EXIT_USAGE;
        }

        if (v->kube) {
                log_set_max_level(LOG_CRIT); /* the client's own retries are not for people */
                r = ctl_new(&ctl);
                if (r < 0)
                        return EXIT_FAILURE;
        }
        return v->run(ctl, n > 0 ? words : none);
}

int main(int argc, char *argv[]) {
        int r;

        log_setup("hwameictl");
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                fprintf(stderr, "Cannot initialise libcurl.\n");
                return EXIT_FAILURE;
        }
        r = run(argc, argv);
        fflush(stdout);
        arg_to = strv_free(arg_to);
        curl_global_cleanup();
        return r;
}
