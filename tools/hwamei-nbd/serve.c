/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hwamei-nbd serve PATH --listen ADDR:PORT [--export NAME] [--readonly] [--description TEXT]
 *                  [--psk-file FILE | --cluster-secret FILE --identity ID]
 *                  [--handshake-timeout SECONDS] [--max-connections N] [--verbose]
 *
 * With --cluster-secret, TLS is required and only the identity ID is known, with the key the
 * daemon derives for it (stream-service.h): what a node does as the target of one migration.
 *
 * Exports a file or block device over NBD until SIGTERM or SIGINT (exit 0). Once listening it
 * prints one line, "hwamei-nbd: serving PATH as 'NAME' on ADDR:PORT", with the real port when
 * --listen asked for port 0.
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "basic/string-util.h"
#include "basic/time-util.h"
#include "hwamei-nbd.h"
#include "log/log.h"
#include "stream/nbd-server.h"
#include "stream/nbd-tls.h"
#include "stream/stream-service.h"
#include "volume/blockio.h"

static void serve_help(void) {
        printf("Usage: hwamei-nbd serve PATH --listen ADDR:PORT [OPTIONS]\n"
               "\n"
               "  -l --listen ADDR:PORT        Address to listen on (IPv6 as [ADDR]:PORT; port 0 picks "
               "one)\n"
               "  -e --export NAME             Export name (default: the empty name, the default export)\n"
               "  -r --readonly                Refuse writes\n"
               "     --description TEXT        Description shown to clients that ask\n"
               "     --psk-file FILE           Require TLS with pre-shared keys (IDENTITY:HEXKEY lines, as\n"
               "                               psktool writes them; clients: nbds://IDENTITY@HOST...)\n"
               "     --cluster-secret FILE     Require TLS with the key derived from the cluster secret\n"
               "     --identity ID             ... for this identity only (as a migration's target)\n"
               "     --handshake-timeout SECS  Time a client has to finish the handshake (default 10)\n"
               "     --max-connections N       Connections served at once (default 128)\n"
               "  -v --verbose                 Debug logging\n");
}

static void on_disconnect(void *userdata, const char *peer, const char *export_name, int error,
                          const char *reason) {
        if (error < 0)
                log_info_errno(error, "hwamei-nbd: client %s dropped: %s: %m", peer, reason);
        else
                log_info("hwamei-nbd: client %s disconnected (%s)", peer, reason);
}

typedef struct DerivedKey {
        const char *identity;
        uint8_t *secret;
        size_t secret_len;
} DerivedKey;

static void derived_key_done(DerivedKey *d) {
        if (d->secret) {
                explicit_bzero(d->secret, d->secret_len);
                free(d->secret);
        }
}

static int derived_lookup(void *userdata, const char *identity, uint8_t *key) {
        DerivedKey *d = userdata;
        int r;

        if (!streq(identity, d->identity))
                return -ENOKEY;
        r = nbd_tls_derive_key(d->secret, d->secret_len, identity, key);
        return r < 0 ? r : NBD_TLS_DERIVED_KEY_SIZE;
}

static int parse_unsigned(const char *s, unsigned long max, unsigned long *ret) {
        char *end;
        unsigned long v;

        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno != 0 || end == s || *end != 0 || s[0] == '-' || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

int verb_serve(int argc, char *argv[]) {
        enum {
                ARG_DESCRIPTION = 0x100,
                ARG_PSK_FILE,
                ARG_HANDSHAKE_TIMEOUT,
                ARG_MAX_CONNECTIONS,
                ARG_CLUSTER_SECRET,
                ARG_IDENTITY,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "listen", required_argument, NULL, 'l' },
                { "export", required_argument, NULL, 'e' },
                { "readonly", no_argument, NULL, 'r' },
                { "description", required_argument, NULL, ARG_DESCRIPTION },
                { "psk-file", required_argument, NULL, ARG_PSK_FILE },
                { "cluster-secret", required_argument, NULL, ARG_CLUSTER_SECRET },
                { "identity", required_argument, NULL, ARG_IDENTITY },
                { "handshake-timeout", required_argument, NULL, ARG_HANDSHAKE_TIMEOUT },
                { "max-connections", required_argument, NULL, ARG_MAX_CONNECTIONS },
                { "verbose", no_argument, NULL, 'v' },
                {},
        };
        const char *listen_address = NULL, *export_name = "", *description = NULL, *psk_file = NULL,
                   *secret_file = NULL;
        _cleanup_(derived_key_done) DerivedKey derived = {}; /* outlives tls, declared later */
        bool read_only = false, verbose = false;
        unsigned long handshake_timeout = 10, max_connections = NBD_SERVER_MAX_CONNECTIONS_DEFAULT;
        _cleanup_(nbd_tls_context_freep) NbdTlsContext *tls = NULL;
        _cleanup_(nbd_server_freep) NbdServer *server = NULL;
        _cleanup_(blockdev_closep) BlockDev *dev = NULL;
        const char *path;
        struct stat st;
        sigset_t mask;
        int c, sig, port, r;

        log_setup("hwamei-nbd");
        optind = 0;
        while ((c = getopt_long(argc, argv, "hl:e:rv", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        serve_help();
                        return 0;
                case 'l':
                        listen_address = optarg;
                        break;
                case 'e':
                        export_name = optarg;
                        break;
                case 'r':
                        read_only = true;
                        break;
                case ARG_DESCRIPTION:
                        description = optarg;
                        break;
                case ARG_PSK_FILE:
                        psk_file = optarg;
                        break;
                case ARG_CLUSTER_SECRET:
                        secret_file = optarg;
                        break;
                case ARG_IDENTITY:
                        derived.identity = optarg;
                        break;
                case ARG_HANDSHAKE_TIMEOUT:
                        if (parse_unsigned(optarg, 3600, &handshake_timeout) < 0 || handshake_timeout == 0) {
                                fprintf(stderr, "hwamei-nbd serve: invalid --handshake-timeout '%s'.\n",
                                        optarg);
                                return 2;
                        }
                        break;
                case ARG_MAX_CONNECTIONS:
                        if (parse_unsigned(optarg, 65536, &max_connections) < 0 || max_connections == 0) {
                                fprintf(stderr, "hwamei-nbd serve: invalid --max-connections '%s'.\n",
                                        optarg);
                                return 2;
                        }
                        break;
                case 'v':
                        verbose = true;
                        break;
                default:
                        return 2;
                }
        if (optind != argc - 1 || !listen_address) {
                fprintf(stderr, "hwamei-nbd serve: expected PATH and --listen ADDR:PORT; see --help.\n");
                return 2;
        }
        if ((secret_file != NULL) != (derived.identity != NULL) || (secret_file && psk_file)) {
                fprintf(stderr,
                        "hwamei-nbd serve: --cluster-secret and --identity go together, and not with "
                        "--psk-file.\n");
                return 2;
        }
        path = argv[optind];
        log_set_max_level(verbose ? LOG_DEBUG : LOG_INFO);
        if (secret_file) {
                uint8_t probe[NBD_TLS_DERIVED_KEY_SIZE];

                r = stream_secret_load(secret_file, &derived.secret, &derived.secret_len);
                if (r < 0)
                        return 1; /* logged */
                if (nbd_tls_derive_key(derived.secret, derived.secret_len, derived.identity, probe) < 0) {
                        fprintf(stderr,
                                "hwamei-nbd serve: invalid --identity '%s' (1…255 printable bytes).\n",
                                derived.identity);
                        return 2;
                }
                r = nbd_tls_context_new_server(derived_lookup, &derived, &tls);
                if (r < 0) {
                        log_error_errno(r, "hwamei-nbd serve: %m");
                        return 1;
                }
                nbd_tls_context_set_handshake_timeout(tls, (uint64_t) handshake_timeout * USEC_PER_SEC);
        }
        if (psk_file) {
                struct stat pst;

                r = nbd_tls_context_new_server_file(psk_file, &tls);
                if (r < 0) {
                        if (r == -EINVAL)
                                fprintf(stderr,
                                        "hwamei-nbd serve: --psk-file %s: malformed (expected "
                                        "IDENTITY:HEXKEY "
                                        "lines with keys of %u…%u bytes; -v tells which line).\n",
                                        psk_file, NBD_TLS_PSK_MIN_KEY, NBD_TLS_PSK_MAX_KEY);
                        else
                                fprintf(stderr, "hwamei-nbd serve: --psk-file %s: %s.\n", psk_file,
                                        strerror(-r));
                        return 1;
                }
                nbd_tls_context_set_handshake_timeout(tls, (uint64_t) handshake_timeout * USEC_PER_SEC);
                if (stat(psk_file, &pst) >= 0 && (pst.st_mode & (S_IRWXG | S_IRWXO)))
                        log_warning("hwamei-nbd serve: %s is readable by group or others; keep PSK files "
                                    "0600.",
                                    psk_file);
        }

        r = blockdev_open(path, read_only ? BLOCKDEV_READ_ONLY : 0, &dev);
        if (r < 0) {
                log_error_errno(r, "hwamei-nbd serve: cannot open '%s': %m", path);
                return 1;
        }

        /* Every thread the server starts inherits this mask; the main thread waits for the signals. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        r = -pthread_sigmask(SIG_BLOCK, &mask, NULL);
        if (r < 0) {
                log_error_errno(r, "hwamei-nbd serve: cannot block signals: %m");
                return 1;
        }

        r = nbd_server_new(&server);
        if (r < 0) {
                log_error_errno(r, "hwamei-nbd serve: %m");
                return 1;
        }
        nbd_server_set_handshake_timeout(server, (uint64_t) handshake_timeout * USEC_PER_SEC);
        nbd_server_set_max_connections(server, (unsigned) max_connections);
        nbd_server_set_disconnect_callback(server, on_disconnect, NULL);
        if (tls)
                nbd_server_set_tls(server, nbd_tls_server_start, tls, true);

        r = nbd_server_add_export(server, export_name, dev, read_only, description);
        if (r < 0) {
                log_error_errno(r, "hwamei-nbd serve: cannot export '%s' as '%s': %m", path, export_name);
                return 1;
        }
        if (stat(path, &st) >= 0 && S_ISBLK(st.st_mode))
                (void) nbd_server_set_export_fast_zero(server, export_name, false);

        r = nbd_server_listen(server, listen_address);
        if (r < 0) {
                log_error_errno(r, "hwamei-nbd serve: cannot listen on '%s': %m", listen_address);
                return 1;
        }
        port = nbd_server_get_port(server);
        r = nbd_server_start(server);
        if (r < 0 || port < 0) {
                log_error_errno(r < 0 ? r : port, "hwamei-nbd serve: cannot start the server: %m");
                return 1;
        }

        {
                /* The address as given, with the port actually bound. */
                const char *colon = strrchr(listen_address, ':');
                int hostlen = (int) (colon - listen_address);

                printf("hwamei-nbd: serving %s as '%s' on %.*s:%d\n", path, export_name, hostlen,
                       listen_address, port);
                fflush(stdout);
        }

        for (;;) {
                r = sigwait(&mask, &sig);
                if (r == 0)
                        break;
                if (r != EINTR) {
                        log_error_errno(r, "hwamei-nbd serve: sigwait() failed: %m");
                        return 1;
                }
        }
        log_info("hwamei-nbd: %s received, stopping.", strsignal(sig));
        server = nbd_server_free(server); /* before the TLS context it uses */
        return 0;
}
