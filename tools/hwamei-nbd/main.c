/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hwamei-nbd: the daemon's block stream as a command line tool, for operators, tests and
 * benchmarks.
 *
 *   hwamei-nbd serve PATH --listen ADDR:PORT [--export NAME] [--readonly] [--psk-file FILE]
 *   hwamei-nbd copy SRC DST [--verify] [-R N] [--request-size BYTES] [-C N] [--destination-is-zero]
 *                           [--psk-file FILE]
 */

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "hwamei-nbd.h"

static void help(void) {
        printf("Usage: hwamei-nbd serve PATH --listen ADDR:PORT [--export NAME] [--readonly] [--psk-file "
               "FILE]\n"
               "       hwamei-nbd copy SRC DST [--verify] [-R|--requests N] [--request-size BYTES]\n"
               "                       [-C|--connections N] [--destination-is-zero] [--psk-file FILE]\n"
               "\n"
               "SRC and DST are local paths (files or block devices) or nbd://HOST[:PORT]/EXPORT URIs;\n"
               "nbds://IDENTITY@HOST[:PORT]/EXPORT uses TLS with the key of IDENTITY from --psk-file.\n"
               "Resumable copies (--resume) are not in this build yet.\n");
}

int main(int argc, char *argv[]) {
        if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                help();
                return argc < 2 ? 2 : 0;
        }
        if (strcmp(argv[1], "--version") == 0) {
                printf("hwamei-nbd %s\n", HWAMEID_VERSION);
                return 0;
        }
        /* TLS writes through OpenSSL's socket BIO (write(), not send(MSG_NOSIGNAL)): a peer that went
         * away must give EPIPE, not kill us. */
        (void) signal(SIGPIPE, SIG_IGN);
        if (strcmp(argv[1], "serve") == 0)
                return verb_serve(argc - 1, argv + 1);
        if (strcmp(argv[1], "copy") == 0)
                return verb_copy(argc - 1, argv + 1);
        fprintf(stderr, "Unknown verb '%s'; see 'hwamei-nbd --help'.\n", argv[1]);
        return 2;
}
