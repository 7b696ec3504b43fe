/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The transfer engine of the block stream: copies the logical content of a source to a
 * destination, each a local BlockDev or one or more NBD connections to the same export.
 *
 * What moves:
 *   - Only data. The source says where data is (SEEK_DATA/SEEK_HOLE through blockdev_next_data()
 *     for local sources; NBD_CMD_BLOCK_STATUS base:allocation for NBD sources, where only
 *     NBD_STATE_ZERO means "reads as zeroes", as nbdcopy does), and blocks of data that turn out to
 *     be all zero (checked in COPY_ZERO_BLOCK units) are treated like holes.
 *   - Zero ranges become NBD_CMD_WRITE_ZEROES (without NO_HOLE, so the server may punch holes),
 *     a hole punched in a local destination (blockdev_discard()), written zero buffers when an NBD
 *     destination cannot zero, or nothing at all with assume_zeroed_destination.
 *   - The copy covers the source's size. A destination smaller than the source is an error
 *     (-ENOSPC); a larger one is allowed and the bytes past the source's size are left alone.
 *
 * Pipelining: `requests` buffers of `request_size` bytes are allocated once and reused; each carries
 * one piece through read → zero scan → write. NBD operations are asynchronous (completions come from
 * the connections' reader threads), local I/O runs on the calling thread, so a local source feeds an
 * NBD destination while earlier writes are in flight, and an NBD source keeps `requests` reads in
 * flight while the calling thread writes locally. With several connections, pieces go round-robin.
 *
 * Durability: nothing counts as copied until the destination is flushed: after the last write was
 * acknowledged, NBD_CMD_FLUSH goes to every connection that offers it, or blockdev_flush().
 *
 * Digest: the XXH3-128 (XXH3_128bits, seed 0, streaming) of the source's logical content: every
 * byte from offset 0 to the source's size, in order, holes and zero ranges included as zero bytes.
 * It is written as the 16-byte canonical form (XXH128_canonicalFromHash: the high 64 bits first,
 * big-endian) or 32 lowercase hex digits of it. Both ends can compute it independently; the same
 * content gives the same digest whatever the request size or the holes. With verify, the destination's
 * first `size` bytes are read back after the flush (NBD: every byte is read, block status is not
 * trusted; local: holes come from the kernel) and their digest must match (-EBADMSG otherwise).
 *
 * Delta: when the NBD destination negotiated the delta extension (nbd-protocol.h) and may hold
 * older content (not assume_zeroed_destination), every piece's block hashes are asked of the
 * destination while the piece is read, and only blocks whose XXH3-128 differ from the source's are
 * written (or zeroed). Pieces are then aligned to the hash block size. Standard servers refuse the
 * option and get a full copy.
 *
 * Checkpoints and resume: the digest is computed in the source's order over pieces that the
 * destination acknowledged, so its position is a point below which everything was written. With
 * a checkpoint callback, every checkpoint_interval the destination is flushed and the callback gets
 * that point and the digest's running state (CopyCheckpoint): a copy started again with it as
 * `resume` continues there and ends with the digest of the whole content. The caller must make
 * sure the source did not change in between (a migration's source is not in use); the checkpoint
 * records the source's size, and copy_run() refuses a resume point for another size.
 *
 * Bandwidth: with a limit, data written to the destination (not zero ranges, not unchanged
 * blocks) is held to that many bytes per second, averaged from the start with a burst of one
 * request.
 *
 * copy_run() runs on the calling thread (plus the NBD reader threads) until the copy ends; the
 * progress and checkpoint callbacks are called on the calling thread.
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "basic/time-util.h"
#include "stream/nbd-client.h"
#include "volume/blockio.h"

#define COPY_REQUESTS_DEFAULT     16U
#define COPY_REQUEST_SIZE_DEFAULT (1024U * 1024U)
#define COPY_REQUESTS_MAX         1024U
#define COPY_ZERO_BLOCK           4096U
/* Largest zero range sent as one NBD_CMD_WRITE_ZEROES. */
#define COPY_ZERO_MAX                    (128U * 1024U * 1024U)
#define COPY_DIGEST_SIZE                 16
#define COPY_DIGEST_STRING_MAX           (2 * COPY_DIGEST_SIZE + 1)
#define COPY_HASH_STATE_MAX              1024
#define COPY_CHECKPOINT_INTERVAL_DEFAULT (5 * USEC_PER_SEC)

/* One side: a local device or file (dev), or n_conns connections to one NBD export. */
typedef struct CopyEndpoint {
        BlockDev *dev;
        NbdClient *const *conns;
        size_t n_conns;
} CopyEndpoint;

typedef enum CopyPhase {
        COPY_PHASE_COPY,
        COPY_PHASE_FLUSH,
        COPY_PHASE_VERIFY,
        COPY_PHASE_DONE,
        _COPY_PHASE_MAX,
        _COPY_PHASE_INVALID = -EINVAL,
} CopyPhase;

const char *copy_phase_to_string(CopyPhase p);

typedef struct CopyProgress {
        CopyPhase phase;
        uint64_t total;        /* the source's size */
        uint64_t done;         /* bytes written, zeroed or skipped, and acknowledged */
        uint64_t sent;         /* of done: written as data */
        uint64_t skipped;      /* of done: zero ranges (not sent as data) */
        uint64_t unchanged;    /* of done: blocks the destination already held (delta) */
        uint64_t acknowledged; /* every byte below this offset is done */
        uint64_t verified;     /* COPY_PHASE_VERIFY: bytes of the destination hashed */
        uint64_t resumed_from; /* the resume point this run started at (done counts from there) */
        usec_t elapsed;        /* since copy_run() started */
} CopyProgress;

typedef void (*CopyProgressFn)(const CopyProgress *p, void *userdata);

/* Where an interrupted copy resumes. Plain data: callers store it (copy-checkpoint.h writes it to
 * a file). */
typedef struct CopyCheckpoint {
        uint64_t size;                     /* the source's size */
        uint64_t offset;                   /* every byte below was copied, acknowledged and flushed */
        uint64_t sent, skipped, unchanged; /* of [0, offset), over all runs */
        /* The digest's running state at offset: an XXH3 state of libxxhash hash_version, opaque.
         * hash_state_size 0: not known (another libxxhash wrote it); the source's first offset
         * bytes are then hashed again on resume, locally, without copying them. */
        uint32_t hash_version;
        uint32_t hash_state_size;
        uint8_t hash_state[COPY_HASH_STATE_MAX];
} CopyCheckpoint;

/* Called with the destination flushed up to c->offset; a negative return fails the copy with it. */
typedef int (*CopyCheckpointFn)(const CopyCheckpoint *c, void *userdata);

typedef struct CopyOptions {
        unsigned requests;              /* pieces in flight; 0 = COPY_REQUESTS_DEFAULT */
        size_t request_size;            /* bytes per READ/WRITE; 0 = COPY_REQUEST_SIZE_DEFAULT; capped by the
                                         * servers' maximum payload, raised to their preferred block size */
        bool assume_zeroed_destination; /* the destination reads as zeroes: zero ranges are skipped */
        bool no_zero_detection;         /* send data blocks of zeroes as data */
        bool verify;
        CopyProgressFn progress;
        void *userdata;
        usec_t progress_interval;  /* 0 = 200 ms */
        const atomic_bool *cancel; /* set by another thread: the copy stops with -ECANCELED */
        uint64_t bandwidth;        /* bytes per second written as data; 0 = unlimited */
        bool no_delta;             /* a full copy even when the destination offers block hashes */
        CopyCheckpointFn checkpoint;
        usec_t checkpoint_interval;   /* 0 = COPY_CHECKPOINT_INTERVAL_DEFAULT */
        const CopyCheckpoint *resume; /* continue an interrupted copy from here */
} CopyOptions;

typedef struct CopyResult {
        uint64_t size;
        uint64_t sent, skipped, unchanged; /* by this run */
        uint64_t resumed_from;             /* the resume point's offset; 0 for a fresh copy */
        bool delta;                        /* block hashes were compared */
        uint8_t digest[COPY_DIGEST_SIZE];  /* of the source's content */
        bool verified;
        uint8_t destination_digest[COPY_DIGEST_SIZE]; /* with verify */
        usec_t elapsed;                               /* copy and flush */
        usec_t verify_elapsed;
        /* On failure: where it happened ("source", "destination"), what ("read", "write", "zero",
         * "block status", "flush", "verify") and the offset of the piece. */
        const char *failed_side, *failed_op;
        uint64_t failed_offset;
} CopyResult;

uint64_t copy_endpoint_size(const CopyEndpoint *e);

/*
 * Copies src to dst. Returns 0 (ret filled) or a negative errno with ret->failed_* set where it
 * applies: -ENOSPC (destination smaller than source), -EROFS (read-only destination), -ECANCELED,
 * -EBADMSG (verification found different content), -ESTALE (a resume point for a source of another
 * size, or past its end, or not aligned to the pieces), or the failing I/O's error.
 */
int copy_run(const CopyEndpoint *src, const CopyEndpoint *dst, const CopyOptions *opts, CopyResult *ret);

/* The digest of the first size bytes of e (as verify computes it; NBD: every byte is read). */
int copy_digest(const CopyEndpoint *e, uint64_t size, const CopyOptions *opts,
                uint8_t ret[COPY_DIGEST_SIZE]);

char *copy_digest_to_string(const uint8_t d[COPY_DIGEST_SIZE], char buf[COPY_DIGEST_STRING_MAX]);
