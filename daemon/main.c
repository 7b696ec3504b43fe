/* SPDX-License-Identifier: Apache-2.0 */
#include <curl/curl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "config/hwameid-conf.h"
#include "log/log.h"
#include "manager.h"

typedef enum Action {
        ACTION_RUN,
        ACTION_CHECK_CONFIG,
        ACTION_DUMP_CONFIG,
} Action;

static const char *arg_config = HWAMEID_CONFIG_PATH;
static Action arg_action = ACTION_RUN;
static int arg_log_level = -1;

static void help(void) {
        printf("Usage: hwameid [OPTIONS]\n"
               "\n"
               "Node storage service: local pools and volumes, and volume eviction for Kubernetes.\n"
               "\n"
               "  -c --config=PATH       Configuration file (default %s)\n"
               "                         Drop-ins are read from PATH.d/*.conf\n"
               "     --check-config      Check the configuration and exit (0 valid, 1 invalid)\n"
               "     --dump-config       Print the effective configuration and exit\n"
               "     --log-level=LEVEL   Override [Log] Level= (debug, info, notice, warning, err)\n"
               "  -h --help              Show this help\n"
               "     --version           Show the version\n"
               "\n"
               "Signals: SIGTERM/SIGINT stop, SIGHUP reloads the configuration.\n"
               "See hwameid(8) and hwameid.conf(5).\n",
               HWAMEID_CONFIG_PATH);
}

/* Returns 1 to go on, 0 to exit successfully, negative to fail. */
static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_VERSION = 0x100,
                ARG_CHECK_CONFIG,
                ARG_DUMP_CONFIG,
                ARG_LOG_LEVEL,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "config", required_argument, NULL, 'c' },
                { "check-config", no_argument, NULL, ARG_CHECK_CONFIG },
                { "dump-config", no_argument, NULL, ARG_DUMP_CONFIG },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "hc:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("hwameid %s\n", HWAMEID_VERSION);
                        return 0;
                case 'c':
                        arg_config = optarg;
                        break;
                case ARG_CHECK_CONFIG:
                        arg_action = ACTION_CHECK_CONFIG;
                        break;
                case ARG_DUMP_CONFIG:
                        arg_action = ACTION_DUMP_CONFIG;
                        break;
                case ARG_LOG_LEVEL:
                        arg_log_level = log_level_from_string(optarg);
                        if (arg_log_level < 0)
                                return log_error_errno(arg_log_level, "Invalid log level '%s'.", optarg);
                        break;
                case '?':
                        return -EINVAL;
                default:
                        abort();
                }

        if (optind < argc)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "This program takes no arguments.");
        return 1;
}

static int run(int argc, char *argv[]) {
        _cleanup_(manager_freep) Manager *m = NULL;
        Config config = {};
        int r;

        log_setup("hwameid");
        /* Writes to closed sockets and pipes are errors to handle, not a reason to die. */
        (void) signal(SIGPIPE, SIG_IGN);

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        if (arg_log_level >= 0)
                log_set_max_level(arg_log_level);

        r = config_load(&config, arg_config);
        if (r < 0)
                return log_error_errno(r, "Configuration '%s' is invalid.", arg_config);

        switch (arg_action) {
        case ACTION_CHECK_CONFIG:
                printf("%s: configuration is valid.\n", arg_config);
                config_done(&config);
                return 0;
        case ACTION_DUMP_CONFIG:
                r = config_dump_all(stdout, &config);
                config_done(&config);
                return r;
        case ACTION_RUN:
                break;
        }

        /* Before any thread exists, as libcurl asks. */
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                config_done(&config);
                return log_error_errno(SYNTHETIC_ERRNO(EIO), "Failed to initialise libcurl.");
        }

        r = manager_new(arg_config, &config, arg_log_level, &m);
        config_done(&config);
        if (r < 0)
                return log_error_errno(r, "Failed to set up: %m");

        r = manager_start(m);
        if (r < 0)
                return r;

        return manager_run(m);
}

int main(int argc, char *argv[]) {
        int r = run(argc, argv);

        return r < 0 ? EXIT_FAILURE : r;
}
