/* SPDX-License-Identifier: Apache-2.0 */

/*
 * hwameictl: the operator's command line for hwameid.
 *
 * Exit codes: 0 success, 1 failure, 2 bad usage, 3 the daemon is not running.
 */

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/basic/json-util.h"
#include "../../daemon/basic/string-util.h"
#include "../../daemon/basic/time-util.h"
#include "../../daemon/control/control-client.h"

#define DEFAULT_CONTROL_SOCKET "/run/hwameid/control.sock"

enum {
        EXIT_USAGE = 2,
        EXIT_NOT_RUNNING = 3,
};

static const char *arg_socket = DEFAULT_CONTROL_SOCKET;
static bool arg_json;

static void help(void) {
        printf("Usage: hwameictl [OPTIONS] COMMAND\n"
               "\n"
               "Commands:\n"
               "  status              Show what the local hwameid is doing\n"
               "\n"
               "Options:\n"
               "  -s --socket=PATH    Control socket (default %s)\n"
               "  -j --json           Print JSON for scripts\n"
               "  -h --help           Show this help\n"
               "     --version        Show the version\n"
               "\n"
               "Exit status: 0 success, 1 failure, 2 bad usage, 3 hwameid is not running.\n",
               DEFAULT_CONTROL_SOCKET);
}

static int print_json(const cJSON *o) {
        _cleanup_free_ char *s = cJSON_Print(o);

        if (!s)
                return -ENOMEM;
        puts(s);
        return 0;
}

static void print_field(const char *label, const char *value) {
        printf("%12s: %s\n", label, strna(value));
}

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

static int verb_status(void) {
        _cleanup_json_ cJSON *st = NULL;
        _cleanup_free_ char *error = NULL;
        int r;

        r = control_call(arg_socket, "status", &st, &error);
        if (r == -ENOENT || r == -ECONNREFUSED) {
                fprintf(stderr, "hwameid is not running (no daemon on %s: %s).\n", arg_socket, strerror(-r));
                return EXIT_NOT_RUNNING;
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

int main(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100 };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "socket", required_argument, NULL, 's' },
                { "json", no_argument, NULL, 'j' },
                {},
        };
        const char *verb;
        int c;

        while ((c = getopt_long(argc, argv, "hs:j", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                case ARG_VERSION:
                        printf("hwameictl %s\n", HWAMEID_VERSION);
                        return EXIT_SUCCESS;
                case 's':
                        arg_socket = optarg;
                        break;
                case 'j':
                        arg_json = true;
                        break;
                default:
                        return EXIT_USAGE;
                }

        if (optind >= argc) {
                fprintf(stderr, "No command given; see 'hwameictl --help'.\n");
                return EXIT_USAGE;
        }
        verb = argv[optind];
        if (streq(verb, "status") && optind + 1 == argc)
                return verb_status();

        fprintf(stderr, "Unknown command or extra arguments: '%s'; see 'hwameictl --help'.\n", verb);
        return EXIT_USAGE;
}
