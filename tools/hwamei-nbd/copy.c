/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hwamei-nbd copy SRC DST [--verify] [--requests N] [--request-size BYTES] [--connections N]
 *                 [--destination-is-zero] [--psk-file FILE] [--resume STATEFILE]
 *
 * SRC and DST are local files or block devices, or nbd:// URIs; any combination works. Only the
 * source's size is copied: an NBD or existing local destination must be at least that large (a larger
 * one keeps its bytes past the source's size); a local destination that does not exist is created as
 * a sparse file of the source's size (and, being empty, gets no zeroes written). The destination is
 * flushed before the copy counts as done. The last line reads
 *
 *   copied 2.0 GiB (1.8 GiB sent, 205 MiB skipped) in 3.1 s, 660 MB/s, xxh3-128 <32 hex digits>
 *
 * where "sent" is written as data and "skipped" went as zero ranges, and the digest is the XXH3-128
 * of the source's content (daemon/stream/copy.h). --verify reads the destination back, compares
 * digests and prints "verified". Exit status 0 on success, 1 on failure, 2 on bad usage.
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
#include "basic/time-util.h"
#include "hwamei-nbd.h"
#include "stream/copy.h"
#include "stream/nbd-client.h"
#include "stream/nbd-protocol.h"
#include "stream/nbd-tls.h"
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
               "     --resume STATEFILE      Resume an interrupted copy (not available in this build yet)\n",
               COPY_REQUESTS_DEFAULT, COPY_REQUEST_SIZE_DEFAULT);
}

static int parse_size(const char *s, uint64_t max, uint64_t *ret) {
        char *end;
        unsigned long long v;
        uint64_t mult = 1;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || end == s || s[0] == '-')
                return -EINVAL;
        if (*end == 'K' || *end == 'k')
                mult = 1024, end++;
        else if (*end == 'M' || *end == 'm')
                mult = 1024 * 1024, end++;
        if (*end == 'i')
                end++;
        if (*end == 'B')
                end++;
        if (*end != 0 || v > max / mult)
                return -EINVAL;
        *ret = v * mult;
        return 0;
}

static char *format_bytes(char *buf, size_t n, uint64_t v) {
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

static int open_nbd(Side *s, unsigned connections, const char *psk_file) {
        NbdConnectOptions o = {};
        int r;

        r = nbd_uri_parse(s->arg, &s->uri);
        if (r < 0) {
                fprintf(stderr, "hwamei-nbd copy: invalid NBD URI '%s'.\n", s->arg);
                return r;
        }
        if (s->uri.tls) {
                if (!psk_file) {
                        fprintf(stderr, "hwamei-nbd copy: %s: nbds:// needs --psk-file.\n", s->arg);
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
                format_bytes(done, sizeof(done), value), format_bytes(total, sizeof(total), p->total));
        if (p->phase == COPY_PHASE_COPY && secs > 0)
                fprintf(stderr, " %.0f MB/s", (double) p->done / 1e6 / secs);
        fprintf(stderr, "\033[K");
        b->drawn = true;
}

int verb_copy(int argc, char *argv[]) {
        enum {
                ARG_VERIFY = 0x100,
                ARG_PSK_FILE,
                ARG_RESUME,
                ARG_REQUEST_SIZE,
                ARG_DEST_ZERO,
        };
        static const struct option options[] = { { "help", no_argument, NULL, 'h' },
                                                 { "verify", no_argument, NULL, ARG_VERIFY },
                                                 { "psk-file", required_argument, NULL, ARG_PSK_FILE },
                                                 { "resume", required_argument, NULL, ARG_RESUME },
                                                 { "requests", required_argument, NULL, 'R' },
                                                 { "request-size", required_argument, NULL,
                                                   ARG_REQUEST_SIZE },
                                                 { "connections", required_argument, NULL, 'C' },
                                                 { "destination-is-zero", no_argument, NULL, ARG_DEST_ZERO },
                                                 {} };
        _cleanup_(side_done) Side src = {}, dst = {};
        CopyOptions o = {};
        CopyResult res;
        uint64_t v, connections = 1;
        Bar bar = { .enabled = isatty(STDERR_FILENO) };
        char digest[COPY_DIGEST_STRING_MAX], b1[COPY_DIGEST_STRING_MAX], b2[32], b3[32];
        const char *psk_file = NULL;
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
                        fprintf(stderr,
                                "hwamei-nbd copy: --resume: resuming is not available in this build yet.\n");
                        return 1;
                case 'R':
                        if (parse_size(optarg, COPY_REQUESTS_MAX, &v) < 0 || v == 0) {
                                fprintf(stderr, "hwamei-nbd copy: --requests must be 1…%u.\n",
                                        COPY_REQUESTS_MAX);
                                return 2;
                        }
                        o.requests = (unsigned) v;
                        break;
                case ARG_REQUEST_SIZE:
                        if (parse_size(optarg, NBD_MAX_PAYLOAD, &v) < 0 || v < 4096 || (v & (v - 1)) != 0) {
                                fprintf(stderr,
                                        "hwamei-nbd copy: --request-size must be a power of 2 from 4096 to "
                                        "%u.\n",
                                        NBD_MAX_PAYLOAD);
                                return 2;
                        }
                        o.request_size = (size_t) v;
                        break;
                case 'C':
                        if (parse_size(optarg, CONNECTIONS_MAX, &connections) < 0 || connections == 0) {
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
        src.arg = argv[optind];
        dst.arg = argv[optind + 1];
        src.is_nbd = nbd_uri_is_uri(src.arg);
        dst.is_nbd = nbd_uri_is_uri(dst.arg);

        r = src.is_nbd ? open_nbd(&src, (unsigned) connections, psk_file) : open_local(&src, false, 0);
        if (r < 0)
                return 1;
        r = dst.is_nbd ? open_nbd(&dst, (unsigned) connections, psk_file)
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

        o.progress = on_progress;
        o.userdata = &bar;
        r = copy_run(&src.ep, &dst.ep, &o, &res);
        if (bar.drawn)
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
        printf("copied %s (%s sent, %s skipped) in %.1f s, %.0f MB/s, xxh3-128 %s\n",
               format_bytes(b1, sizeof(b1), res.size), format_bytes(b2, sizeof(b2), res.sent),
               format_bytes(b3, sizeof(b3), res.skipped), secs,
               secs > 0 ? (double) res.size / 1e6 / secs : 0.0, copy_digest_to_string(res.digest, digest));
        if (res.verified)
                printf("verified (destination read back in %.1f s)\n",
                       (double) res.verify_elapsed / USEC_PER_SEC);
        return 0;
}
