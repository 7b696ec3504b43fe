/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hwamei-nbd copy SRC DST [--verify] [--requests N] [--request-size BYTES] [--connections N]
 *                 [--destination-is-zero] [--psk-file FILE | --cluster-secret FILE] [--resume STATEFILE]
 *                 [--checkpoint-interval SECONDS] [--bwlimit BYTES] [--no-delta]
 *
 * SRC and DST are local files or block devices, or nbd:// URIs; any combination works. Only the
 * source's size is copied: an NBD or existing local destination must be at least that large (a larger
 * one keeps its bytes past the source's size); a local destination that does not exist is created as
 * a sparse file of the source's size (and, being empty, gets no zeroes written). The destination is
 * flushed before the copy counts as done. The last line reads
 *
 *   copied 2.0 GiB (1.8 GiB sent, 205 MiB skipped, 0 B unchanged) in 3.1 s, 660 MB/s, xxh3-128 <32 hex
 * digits>
 *
 * where "sent" is written as data, "skipped" went as zero ranges and "unchanged" was already on an
 * hwameid destination (delta: only blocks whose hashes differ are sent), all by this run; the
 * digest is the XXH3-128 of the source's content (daemon/stream/copy.h). --verify reads the
 * destination back, compares digests and prints "verified".
 *
 * --resume STATEFILE: checkpoints go to STATEFILE (copy-checkpoint.h) every few seconds, each after
 * a flush of the destination; when it exists at the start, the copy continues where it left off
 * ("resumed at …" is printed), provided it names the same SRC, DST and source size. It is removed
 * when the copy succeeded. Exit status 0 on success, 1 on failure, 2 on bad usage.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "basic/macro.h"
#include "basic/string-util.h"
#include "basic/time-util.h"
#include "hwamei-nbd.h"
#include "stream/copy-checkpoint.h"
#include "stream/copy.h"
#include "stream/nbd-client.h"
#include "stream/nbd-protocol.h"
#include "stream/nbd-tls.h"
#include "stream/stream-service.h"
#include "volume/blockio.h"

#define CONNECTIONS_MAX 16U

typedef struct Side {
        const char *arg;
        NbdUri uri;
        bool is_nbd;
        BlockDev *dev;
        NbdTlsContext *tls; /* outlives conns */
        NbdClient *conns[CONNECTIONS_MAX];
        size_t n_conns;
        bool created;
        CopyEndpoint ep;
} Side;

static void side_done(Side *s) {
        for (size_t i = 0; i < s->n_conns; i++)
                s->conns[i] = nbd_client_free(s->conns[i]);
        s->dev = blockdev_close(s->dev);
        nbd_uri_done(&s->uri);
        s->tls = nbd_tls_context_free(s->tls);
}

static void copy_help(void) {
        printf("Usage: hwamei-nbd copy SRC DST [OPTIONS]\n"
               "\n"
               "SRC and DST are local files or block devices, or nbd://HOST[:PORT]/EXPORT URIs.\n"
               "\n"
               "     --verify                Read the destination back and compare digests\n"
               "  -R --requests N             Requests in flight (default %u)\n"
               "     --request-size BYTES    Bytes per request (default %u; K, M suffixes)\n"
               "  -C --connections N          NBD connections per side when the server allows multi-conn\n"
               "                              (default 1)\n"
               "     --destination-is-zero   The destination reads as zeroes: write no zeroes\n"
               "     --psk-file FILE         TLS with pre-shared keys for nbds://[IDENTITY@]HOST... "
               "(identity\n"
               "                             from the URI, else $LOGNAME)\n"
               "     --cluster-secret FILE   TLS with the key derived from the cluster secret for the\n"
               "                             identity in nbds://IDENTITY@HOST... (as the daemon does)\n"
               "     --resume STATEFILE      Keep checkpoints in STATEFILE and continue from it when it\n"
               "                             exists (removed after success)\n"
               "     --checkpoint-interval SECONDS\n"
               "                             Time between checkpoints (default %u)\n"
               "     --bwlimit BYTES         Send at most BYTES of data per second (K, M, G suffixes)\n"
               "     --no-delta              Send every block even to a destination that can compare\n"
               "                             block hashes\n",
               COPY_REQUESTS_DEFAULT, COPY_REQUEST_SIZE_DEFAULT,
               (unsigned) (COPY_CHECKPOINT_INTERVAL_DEFAULT / USEC_PER_SEC));
}

/* A number with an optional K, M, G… suffix (string-util.h), at most max. */
static int parse_bounded(const char *s, uint64_t max, uint64_t *ret) {
        uint64_t v;

        if (parse_size(s, &v) < 0 || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

/* "2.0 GiB": the figures of the final line. */
static char *format_size(char *buf, size_t n, uint64_t v) {
        static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
        double d = (double) v;
        size_t u = 0;

        while (d >= 1024.0 && u + 1 < ELEMENTSOF(units))
                d /= 1024.0, u++;
        if (u == 0)
                snprintf(buf, n, "%" PRIu64 " B", v);
        else
                snprintf(buf, n, d >= 100.0 ? "%.0f %s" : "%.1f %s", d, units[u]);
        return buf;
}

static const char *connect_error(int r) {
        switch (-r) {
        case ECONNREFUSED:
                return "connection refused";
        case ENOENT:
                return "export not found on the server";
        case EACCES:
                return "the server refused the connection (TLS required or not permitted)";
        case ETIMEDOUT:
                return "timed out";
        case EPROTO:
                return "the server broke the NBD protocol";
        case EPROTONOSUPPORT:
                return "nbds:// needs --psk-file";
        case ENOPROTOOPT:
                return "the server does not offer TLS (refused NBD_OPT_STARTTLS)";
        case EKEYREJECTED:
                return "TLS handshake failed (unknown identity or wrong key?)";
        case EHOSTUNREACH:
                return "host not found or unreachable";
        default:
                return strerror(-r);
        }
}

/* The client TLS context for a URI: from a PSK file, or derived from the cluster secret. */
static int make_tls(Side *s, const char *psk_file, const char *secret_file) {
        int r;

        if (secret_file) {
                _cleanup_free_ uint8_t *secret = NULL;
                uint8_t key[NBD_TLS_DERIVED_KEY_SIZE];
                size_t n;

                if (!s->uri.user) {
                        fprintf(stderr,
                                "hwamei-nbd copy: %s: --cluster-secret needs the identity in the URI "
                                "(nbds://IDENTITY@HOST/EXPORT).\n",
                                s->arg);
                        return -EINVAL;
                }
                r = stream_secret_load(secret_file, &secret, &n);
                if (r < 0)
                        return r; /* logged */
                r = nbd_tls_derive_key(secret, n, s->uri.user, key);
                explicit_bzero(secret, n);
                if (r < 0) {
                        fprintf(stderr, "hwamei-nbd copy: %s: invalid identity '%s'.\n", s->arg,
                                s->uri.user);
                        return r;
                }
                r = nbd_tls_context_new_client(s->uri.user, key, sizeof(key), &s->tls);
                explicit_bzero(key, sizeof(key));
                return r;
        }
        if (!psk_file) {
                fprintf(stderr, "hwamei-nbd copy: %s: nbds:// needs --psk-file or --cluster-secret.\n",
                        s->arg);
                return -EPROTONOSUPPORT;
        }
        r = nbd_tls_context_new_client_file(psk_file, s->uri.user, &s->tls);
        if (r == -ENOKEY) {
                fprintf(stderr, "hwamei-nbd copy: %s: identity '%s' was not found in %s.\n", s->arg,
                        s->uri.user ?: getenv("LOGNAME") ?: "(login name)", psk_file);
                return r;
        }
        if (r < 0) {
                fprintf(stderr, "hwamei-nbd copy: --psk-file %s: %s.\n", psk_file,
                        r == -EINVAL ? "malformed (expected IDENTITY:HEXKEY lines)" : strerror(-r));
                return r;
        }
        return 0;
}

static int open_nbd(Side *s, unsigned connections, const char *psk_file, const char *secret_file,
                    uint32_t delta_block_size) {
        NbdConnectOptions o = { .delta_block_size = delta_block_size };
        int r;

        r = nbd_uri_parse(s->arg, &s->uri);
        if (r < 0) {
                fprintf(stderr, "hwamei-nbd copy: invalid NBD URI '%s'.\n", s->arg);
                return r;
        }
        if (s->uri.tls) {
                r = make_tls(s, psk_file, secret_file);
                if (r < 0)
                        return r;
                o.tls = s->tls;
        }
        r = nbd_client_connect(&s->uri, &o, &s->conns[0]);
        if (r < 0) {
                fprintf(stderr, "hwamei-nbd copy: %s: %s.\n", s->arg, connect_error(r));
                return r;
        }
        s->n_conns = 1;
        /* More connections only when the server says they share one cache (multi-conn). */
        if (connections > 1 && nbd_client_has_flag(s->conns[0], NBD_FLAG_CAN_MULTI_CONN))
                for (; s->n_conns < connections; s->n_conns++) {
                        r = nbd_client_connect(&s->uri, &o, &s->conns[s->n_conns]);
                        if (r < 0) {
                                fprintf(stderr, "hwamei-nbd copy: %s: connection %zu: %s.\n", s->arg,
                                        s->n_conns + 1, connect_error(r));
                                return r;
                        }
                }
        s->ep = (CopyEndpoint){ .conns = s->conns, .n_conns = s->n_conns };
        return 0;
}

static int open_local(Side *s, bool dest, uint64_t create_size) {
        int r;

        if (dest && access(s->arg, F_OK) < 0 && errno == ENOENT) {
                _cleanup_close_ int fd = open(s->arg, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
                if (fd < 0 || ftruncate(fd, (off_t) create_size) < 0) {
                        r = -errno;
                        fprintf(stderr, "hwamei-nbd copy: cannot create '%s': %s.\n", s->arg,
                                strerror(errno));
                        if (fd >= 0)
                                (void) unlink(s->arg);
                        return r;
                }
                s->created = true;
        }
        r = blockdev_open(s->arg, dest ? 0 : BLOCKDEV_READ_ONLY, &s->dev);
        if (r < 0) {
                fprintf(stderr, "hwamei-nbd copy: cannot open '%s': %s.\n", s->arg, strerror(-r));
                return r;
        }
        s->ep = (CopyEndpoint){ .dev = s->dev };
        return 0;
}

typedef struct Bar {
        bool enabled;
        bool drawn;
} Bar;

static void on_progress(const CopyProgress *p, void *userdata) {
        Bar *b = userdata;
        char done[32], total[32];
        uint64_t value = p->phase == COPY_PHASE_VERIFY ? p->verified : p->done;
        unsigned pct = p->total ? (unsigned) (value * 100 / p->total) : 100;
        char bar[31];
        double secs = (double) p->elapsed / USEC_PER_SEC;

        if (!b->enabled)
                return;
        for (unsigned i = 0; i < 30; i++)
                bar[i] = i < pct * 30 / 100 ? '#' : ' ';
        bar[30] = 0;
        fprintf(stderr, "\r%-6s [%s] %3u%% %s / %s", copy_phase_to_string(p->phase), bar, pct,
                format_size(done, sizeof(done), value), format_size(total, sizeof(total), p->total));
        if (p->phase == COPY_PHASE_COPY && secs > 0)
                fprintf(stderr, " %.0f MB/s", (double) p->done / 1e6 / secs);
        fprintf(stderr, "\033[K");
        b->drawn = true;
}

typedef struct Checkpointer {
        const char *path;
        const char *source, *destination;
} Checkpointer;

static int save_checkpoint(const CopyCheckpoint *c, void *userdata) {
        Checkpointer *k = userdata;
        int r;

        r = copy_checkpoint_save(k->path, c, k->source, k->destination);
        if (r < 0)
                fprintf(stderr, "\nhwamei-nbd copy: cannot write the checkpoint %s: %s.\n", k->path,
                        strerror(-r));
        return r;
}

typedef struct Reporter {
        Bar bar;
        Checkpointer ck;
} Reporter;

static void on_progress_reporter(const CopyProgress *p, void *userdata) {
        on_progress(p, &((Reporter *) userdata)->bar);
}

static int on_checkpoint_reporter(const CopyCheckpoint *c, void *userdata) {
        return save_checkpoint(c, &((Reporter *) userdata)->ck);
}

/* Loads the resume point, when there is one for this very copy. 0: none, 1: loaded. */
static int load_resume(const char *path, const char *source, const char *destination, uint64_t size,
                       CopyCheckpoint *ret) {
        _cleanup_free_ char *s = NULL, *d = NULL;
        int r;

        r = copy_checkpoint_load(path, ret, &s, &d);
        if (r == -ENOENT)
                return 0;
        if (r < 0) {
                fprintf(stderr, "hwamei-nbd copy: --resume %s: %s.\n", path,
                        r == -EBADMSG           ? "not a valid checkpoint (remove it to start over)"
                        : r == -EPROTONOSUPPORT ? "written by another version (remove it to start over)"
                                                : strerror(-r));
                return r;
        }
        if (!streq(s, source) || !streq(d, destination) || ret->size != size) {
                fprintf(stderr,
                        "hwamei-nbd copy: --resume %s: the checkpoint is of %s -> %s (%" PRIu64
                        " bytes), not of this copy; remove it to start over.\n",
                        path, s, d, ret->size);
                return -ESTALE;
        }
        return 1;
}

int verb_copy(int argc, char *argv[]) {
        enum {
                ARG_VERIFY = 0x100,
                ARG_PSK_FILE,
                ARG_RESUME,
                ARG_REQUEST_SIZE,
                ARG_DEST_ZERO,
                ARG_CHECKPOINT_INTERVAL,
                ARG_BWLIMIT,
                ARG_NO_DELTA,
                ARG_CLUSTER_SECRET,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "verify", no_argument, NULL, ARG_VERIFY },
                { "psk-file", required_argument, NULL, ARG_PSK_FILE },
                { "resume", required_argument, NULL, ARG_RESUME },
                { "requests", required_argument, NULL, 'R' },
                { "request-size", required_argument, NULL, ARG_REQUEST_SIZE },
                { "connections", required_argument, NULL, 'C' },
                { "destination-is-zero", no_argument, NULL, ARG_DEST_ZERO },
                { "checkpoint-interval", required_argument, NULL, ARG_CHECKPOINT_INTERVAL },
                { "bwlimit", required_argument, NULL, ARG_BWLIMIT },
                { "no-delta", no_argument, NULL, ARG_NO_DELTA },
                { "cluster-secret", required_argument, NULL, ARG_CLUSTER_SECRET },
                {}
        };
        _cleanup_(side_done) Side src = {}, dst = {};
        CopyOptions o = {};
        CopyResult res;
        CopyCheckpoint resume;
        uint64_t v, connections = 1;
        Reporter rep = { .bar = { .enabled = isatty(STDERR_FILENO) } };
        Bar *bar = &rep.bar;
        char digest[COPY_DIGEST_STRING_MAX], b1[COPY_DIGEST_STRING_MAX], b2[32], b3[32], b4[32];
        const char *psk_file = NULL, *secret_file = NULL;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hR:C:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        copy_help();
                        return 0;
                case ARG_VERIFY:
                        o.verify = true;
                        break;
                case ARG_PSK_FILE:
                        psk_file = optarg;
                        break;
                case ARG_RESUME:
                        rep.ck.path = optarg;
                        break;
                case ARG_CHECKPOINT_INTERVAL:
                        if (parse_bounded(optarg, 86400, &v) < 0 || v == 0) {
                                fprintf(stderr,
                                        "hwamei-nbd copy: --checkpoint-interval must be 1…86400 seconds.\n");
                                return 2;
                        }
                        o.checkpoint_interval = v * USEC_PER_SEC;
                        break;
                case ARG_BWLIMIT:
                        if (parse_bounded(optarg, UINT64_MAX / 2, &v) < 0 || v < 4096) {
                                fprintf(stderr, "hwamei-nbd copy: --bwlimit must be at least 4096 bytes per "
                                                "second.\n");
                                return 2;
                        }
                        o.bandwidth = v;
                        break;
                case ARG_NO_DELTA:
                        o.no_delta = true;
                        break;
                case ARG_CLUSTER_SECRET:
                        secret_file = optarg;
                        break;
                case 'R':
                        if (parse_bounded(optarg, COPY_REQUESTS_MAX, &v) < 0 || v == 0) {
                                fprintf(stderr, "hwamei-nbd copy: --requests must be 1…%u.\n",
                                        COPY_REQUESTS_MAX);
                                return 2;
                        }
                        o.requests = (unsigned) v;
                        break;
                case ARG_REQUEST_SIZE:
                        if (parse_bounded(optarg, NBD_MAX_PAYLOAD, &v) < 0 || v < 4096 ||
                            (v & (v - 1)) != 0) {
                                fprintf(stderr,
                                        "hwamei-nbd copy: --request-size must be a power of 2 from 4096 to "
                                        "%u.\n",
                                        NBD_MAX_PAYLOAD);
                                return 2;
                        }
                        o.request_size = (size_t) v;
                        break;
                case 'C':
                        if (parse_bounded(optarg, CONNECTIONS_MAX, &connections) < 0 || connections == 0) {
                                fprintf(stderr, "hwamei-nbd copy: --connections must be 1…%u.\n",
                                        CONNECTIONS_MAX);
                                return 2;
                        }
                        break;
                case ARG_DEST_ZERO:
                        o.assume_zeroed_destination = true;
                        break;
                default:
                        return 2;
                }
        if (argc - optind != 2) {
                fprintf(stderr, "hwamei-nbd copy: expected SRC and DST; see 'hwamei-nbd copy --help'.\n");
                return 2;
        }
        if (psk_file && secret_file) {
                fprintf(stderr, "hwamei-nbd copy: --psk-file and --cluster-secret exclude each other.\n");
                return 2;
        }
        src.arg = argv[optind];
        dst.arg = argv[optind + 1];
        src.is_nbd = nbd_uri_is_uri(src.arg);
        dst.is_nbd = nbd_uri_is_uri(dst.arg);

        r = src.is_nbd ? open_nbd(&src, (unsigned) connections, psk_file, secret_file, 0)
                       : open_local(&src, false, 0);
        if (r < 0)
                return 1;
        r = dst.is_nbd ? open_nbd(&dst, (unsigned) connections, psk_file, secret_file,
                                  o.no_delta ? 0 : NBD_HWAMEID_DELTA_BLOCK_DEFAULT)
                       : open_local(&dst, true, copy_endpoint_size(&src.ep));
        if (r < 0)
                return 1;
        if (dst.created)
                o.assume_zeroed_destination = true;
        if (copy_endpoint_size(&dst.ep) < copy_endpoint_size(&src.ep)) {
                fprintf(stderr,
                        "hwamei-nbd copy: the destination (%" PRIu64
                        " bytes) is smaller than the source (%" PRIu64 " bytes).\n",
                        copy_endpoint_size(&dst.ep), copy_endpoint_size(&src.ep));
                return 1;
        }

        if (rep.ck.path) {
                r = load_resume(rep.ck.path, src.arg, dst.arg, copy_endpoint_size(&src.ep), &resume);
                if (r < 0)
                        return 1;
                if (r > 0)
                        o.resume = &resume;
                rep.ck.source = src.arg;
                rep.ck.destination = dst.arg;
                o.checkpoint = on_checkpoint_reporter;
        }
        o.progress = on_progress_reporter;
        o.userdata = &rep;
        r = copy_run(&src.ep, &dst.ep, &o, &res);
        if (bar->drawn)
                fprintf(stderr, "\r\033[K");
        if (r == -EBADMSG) {
                fprintf(stderr,
                        "hwamei-nbd copy: verification failed: the destination's xxh3-128 %s differs from "
                        "the "
                        "source's %s.\n",
                        copy_digest_to_string(res.destination_digest, b1),
                        copy_digest_to_string(res.digest, digest));
                return 1;
        }
        if (r == -EROFS) {
                fprintf(stderr, "hwamei-nbd copy: %s: the destination is read-only.\n", dst.arg);
                return 1;
        }
        if (r < 0) {
                if (res.failed_side)
                        fprintf(stderr, "hwamei-nbd copy: %s %s failed at offset %" PRIu64 ": %s.\n",
                                res.failed_side, res.failed_op, res.failed_offset, strerror(-r));
                else
                        fprintf(stderr, "hwamei-nbd copy: %s.\n", strerror(-r));
                return 1;
        }

        double secs = (double) res.elapsed / USEC_PER_SEC;
        if (res.resumed_from > 0)
                printf("resumed at %" PRIu64 " bytes (%s)\n", res.resumed_from,
                       format_size(b1, sizeof(b1), res.resumed_from));
        printf("copied %s (%s sent, %s skipped, %s unchanged) in %.1f s, %.0f MB/s, xxh3-128 %s\n",
               format_size(b1, sizeof(b1), res.size), format_size(b2, sizeof(b2), res.sent),
               format_size(b3, sizeof(b3), res.skipped), format_size(b4, sizeof(b4), res.unchanged), secs,
               secs > 0 ? (double) (res.size - res.resumed_from) / 1e6 / secs : 0.0,
               copy_digest_to_string(res.digest, digest));
        if (res.verified)
                printf("verified (destination read back in %.1f s)\n",
                       (double) res.verify_elapsed / USEC_PER_SEC);
        if (rep.ck.path && unlink(rep.ck.path) < 0 && errno != ENOENT)
                fprintf(stderr, "hwamei-nbd copy: cannot remove the checkpoint %s: %s.\n", rep.ck.path,
                        strerror(errno));
        return 0;
}
