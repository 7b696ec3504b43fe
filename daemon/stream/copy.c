/* SPDX-License-Identifier: Apache-2.0 */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t's layout, for checkpoints */
#include <xxhash.h>

#include "basic/macro.h"
#include "log/log.h"
#include "stream/copy.h"
#include "stream/nbd-protocol.h"

#define PROGRESS_INTERVAL_DEFAULT (200 * USEC_PER_MSEC)
/* Largest range one BLOCK_STATUS asks about. */
#define STATUS_WINDOW  (1024U * 1024U * 1024U)
#define STATUS_EXTENTS 4096U
#define BUF_ALIGN      4096U

typedef enum OpStage {
        STAGE_READ,
        STAGE_WRITE,
} OpStage;

typedef struct Engine Engine;

typedef struct Op {
        Engine *e;
        uint8_t *buf;
        uint64_t offset, length;
        bool in_use;
        bool zero;        /* a zero range from the source's map: nothing to read */
        uint8_t *hashes;  /* delta: the destination's block digests of the piece */
        bool read_done;   /* content available for hashing */
        bool writes_done; /* every destination operation acknowledged */
        bool hashed;
        OpStage stage;
        uint64_t sent, skipped, unchanged;
        /* Under e->lock: */
        unsigned pending;
        int error;
        int hash_error; /* delta: asking the destination for digests failed */
        bool queued;
} Op;

struct Engine {
        const CopyEndpoint *src, *dst; /* dst NULL: hash only */
        const CopyOptions *o;
        uint64_t size;
        size_t request_size;
        uint64_t align;
        uint64_t zero_max;
        bool trust_map;                        /* use the source's allocation map */
        bool dst_can_zero;                     /* NBD destination supports WRITE_ZEROES */
        bool zeroed;                           /* assume_zeroed_destination */
        uint32_t delta;                        /* the destination's hash block size; 0: no delta */
        uint8_t zero_digest[COPY_DIGEST_SIZE]; /* of a block of delta zero bytes */
        CopyPhase phase;
        uint64_t start_pos; /* resumed from */

        Op *ops;
        unsigned n_ops;
        uint8_t *buffers;
        uint8_t *hash_buffers; /* delta */
        size_t hashes_size;    /* per op */
        uint8_t *zero_buf;
        size_t zero_buf_size;
        unsigned rr; /* round-robin connection index */

        /* FIFO of ops in issue order, for hashing in order */
        unsigned *fifo;
        unsigned fifo_head, fifo_len;
        /* free op indices */
        unsigned *free_ops;
        unsigned n_free;

        pthread_mutex_t lock;
        pthread_cond_t cond;
        unsigned *ready; /* ring of ops whose pending count reached zero */
        unsigned ready_head, ready_len;

        XXH3_state_t *hash;
        /* The digest covers [0, hashed_pos): every piece below was written and acknowledged. The
         * counters are of those pieces, over all runs (a resume point's plus this run's). */
        uint64_t hashed_pos, hashed_sent, hashed_skipped, hashed_unchanged;
        uint64_t checkpoint_pos;
        usec_t last_checkpoint;
        /* bandwidth limit */
        uint64_t bw_bytes;

        /* local source map cache */
        uint64_t data_start, data_end;
        bool map_valid;
        /* NBD source map cache */
        NbdExtent *extents;
        size_t n_extents;
        uint64_t ext_start, ext_end;
        size_t ext_index;

        bool failed;
        int error;
        const char *failed_side, *failed_op;
        uint64_t failed_offset;

        CopyProgress progress;
        usec_t start, last_progress;
};

const char *copy_phase_to_string(CopyPhase p) {
        static const char *const table[_COPY_PHASE_MAX] = {
                [COPY_PHASE_COPY] = "copy",
                [COPY_PHASE_FLUSH] = "flush",
                [COPY_PHASE_VERIFY] = "verify",
                [COPY_PHASE_DONE] = "done",
        };
        return p >= 0 && p < _COPY_PHASE_MAX ? table[p] : NULL;
}

uint64_t copy_endpoint_size(const CopyEndpoint *e) {
        if (e->dev)
                return blockdev_size(e->dev);
        return nbd_client_info(e->conns[0])->size;
}

char *copy_digest_to_string(const uint8_t d[COPY_DIGEST_SIZE], char buf[COPY_DIGEST_STRING_MAX]) {
        for (size_t i = 0; i < COPY_DIGEST_SIZE; i++)
                sprintf(buf + 2 * i, "%02x", d[i]);
        return buf;
}

static bool is_zero(const uint8_t *p, size_t n) {
        static const uint8_t z[16];

        if (n <= 16)
                return memcmp(p, z, n) == 0;
        return memcmp(p, z, 16) == 0 && memcmp(p, p + 16, n - 16) == 0;
}

static void engine_fail(Engine *e, int error, const char *side, const char *op, uint64_t offset) {
        if (e->failed)
                return;
        e->failed = true;
        e->error = error;
        e->failed_side = side;
        e->failed_op = op;
        e->failed_offset = offset;
        log_debug_errno(error, "copy: %s %s at offset %" PRIu64 " failed: %m", side, op, offset);
}

/* ---- Op reference counting: the issuer holds one reference while it submits ---- */

static void op_get(Op *op) {
        Engine *e = op->e;

        pthread_mutex_lock(&e->lock);
        op->pending++;
        pthread_mutex_unlock(&e->lock);
}

static void op_put(Op *op, int error) {
        Engine *e = op->e;

        pthread_mutex_lock(&e->lock);
        if (error < 0 && op->error == 0)
                op->error = error;
        assert(op->pending > 0);
        if (--op->pending == 0 && !op->queued) {
                op->queued = true;
                e->ready[(e->ready_head + e->ready_len++) % e->n_ops] = (unsigned) (op - e->ops);
                pthread_cond_signal(&e->cond);
        }
        pthread_mutex_unlock(&e->lock);
}

static void op_completed(void *userdata, int error) {
        op_put(userdata, error);
}

static void hash_completed(void *userdata, int error) {
        Op *op = userdata;

        if (error < 0) {
                pthread_mutex_lock(&op->e->lock);
                if (op->hash_error == 0)
                        op->hash_error = error;
                pthread_mutex_unlock(&op->e->lock);
        }
        op_put(op, 0);
}

static NbdClient *next_conn(Engine *e, const CopyEndpoint *ep) {
        return ep->conns[e->rr++ % ep->n_conns];
}

static int submit(Engine *e, Op *op, const CopyEndpoint *ep, const NbdCommand *cmd) {
        int r;

        op_get(op);
        r = nbd_client_submit(next_conn(e, ep), cmd,
                              cmd->type == NBD_CMD_HWAMEID_HASH ? hash_completed : op_completed, op);
        if (r < 0)
                op_put(op, r);
        return r;
}

static bool cancelled(const Engine *e) {
        return e->o->cancel && atomic_load(e->o->cancel);
}

/* Holds data writes to the bandwidth limit: the average since the start, with a burst of one
 * request. Sleeps on the engine's thread (completions queue up meanwhile). */
static void throttle(Engine *e, uint64_t len) {
        uint64_t rate = e->o->bandwidth;

        if (rate == 0)
                return;
        for (;;) {
                usec_t t = now(CLOCK_MONOTONIC) - e->start;
                uint64_t allowed = e->request_size + (uint64_t) ((double) rate * (double) t / USEC_PER_SEC);
                usec_t wait;

                if (e->bw_bytes + len <= allowed || cancelled(e))
                        break;
                wait = (usec_t) ((double) (e->bw_bytes + len - allowed) * USEC_PER_SEC / (double) rate) + 1;
                (void) nanosleep(&(struct timespec){ .tv_nsec = (long) (MIN(wait, 100 * USEC_PER_MSEC) *
                                                                        NSEC_PER_USEC) },
                                 NULL);
        }
        e->bw_bytes += len;
}

/* ---- Source map ---- */

static int status_query(Engine *e, uint64_t pos) {
        uint64_t len = MIN(e->size - pos, (uint64_t) STATUS_WINDOW);
        size_t n = 0;
        NbdCommand cmd = {
                .type = NBD_CMD_BLOCK_STATUS,
                .offset = pos,
                .length = (uint32_t) len,
                .extents = e->extents,
                .max_extents = STATUS_EXTENTS,
                .n_extents = &n,
        };
        int r;

        r = nbd_client_run(e->src->conns[0], &cmd);
        if (r < 0)
                return r;
        if (n == 0 || e->extents[0].offset != pos)
                return -EPROTO;
        e->n_extents = n;
        e->ext_index = 0;
        e->ext_start = pos;
        e->ext_end = e->extents[n - 1].offset + e->extents[n - 1].length;
        return 0;
}

/* From pos: how long the run is and whether it reads as zeroes, before alignment. */
static int map_lookup(Engine *e, uint64_t pos, uint64_t *ret_len, bool *ret_zero) {
        int r;

        if (!e->trust_map) {
                *ret_len = e->size - pos, *ret_zero = false;
                return 0;
        }
        if (e->src->dev) {
                if (!e->map_valid || pos >= e->data_end) {
                        r = blockdev_next_data(e->src->dev, pos, &e->data_start, &e->data_end);
                        if (r == -ENXIO)
                                e->data_start = e->data_end = e->size;
                        else if (r < 0)
                                return r;
                        e->data_start = MIN(MAX(e->data_start, pos), e->size);
                        e->data_end = MIN(MAX(e->data_end, e->data_start), e->size);
                        e->map_valid = true;
                }
                if (pos < e->data_start)
                        *ret_len = e->data_start - pos, *ret_zero = true;
                else
                        *ret_len = e->data_end - pos, *ret_zero = false;
                if (*ret_len == 0) /* data_start == data_end == size but pos < size */
                        *ret_len = e->size - pos, *ret_zero = true;
                return 0;
        }

        if (pos < e->ext_start || pos >= e->ext_end || e->n_extents == 0) {
                r = status_query(e, pos);
                if (r < 0)
                        return r;
        }
        while (e->ext_index < e->n_extents &&
               e->extents[e->ext_index].offset + e->extents[e->ext_index].length <= pos)
                e->ext_index++;
        if (e->ext_index >= e->n_extents || e->extents[e->ext_index].offset > pos)
                return -EPROTO;
        {
                size_t i = e->ext_index;
                bool zero = e->extents[i].flags & NBD_STATE_ZERO;
                uint64_t end = e->extents[i].offset + e->extents[i].length;

                while (++i < e->n_extents && !!(e->extents[i].flags & NBD_STATE_ZERO) == zero)
                        end = e->extents[i].offset + e->extents[i].length;
                *ret_len = end - pos;
                *ret_zero = zero;
        }
        return 0;
}

/* The next piece at pos (aligned): its length and whether it is a zero range. */
static int plan_piece(Engine *e, uint64_t pos, uint64_t *ret_len, bool *ret_zero) {
        uint64_t len, end;
        bool zero;
        int r;

        r = map_lookup(e, pos, &len, &zero);
        if (r < 0)
                return r;
        end = pos + len;
        if (zero) {
                if (end < e->size)
                        end -= end % e->align;
                if (end <= pos) { /* a partial block of zeroes: copy it as data */
                        zero = false;
                        end = MIN(pos + e->align, e->size);
                }
                end = MIN(end, pos + e->zero_max);
        } else {
                if (end % e->align)
                        end = MIN(end + (e->align - end % e->align), e->size);
                /* Data pieces end on request_size boundaries. */
                end = MIN(end, pos - pos % e->request_size + e->request_size);
        }
        *ret_len = end - pos;
        *ret_zero = zero;
        return 0;
}

/* ---- Destination operations ---- */

static int dst_zero(Engine *e, Op *op, uint64_t offset, uint64_t len) {
        const CopyEndpoint *d = e->dst;
        int r;

        op->skipped += len;
        if (e->zeroed)
                return 0;
        if (d->dev) {
                r = blockdev_discard(d->dev, offset, len);
                if (r < 0)
                        engine_fail(e, r, "destination", "zero", offset);
                return r;
        }
        while (len > 0) {
                uint64_t n;
                NbdCommand cmd = { .offset = offset };

                if (e->dst_can_zero) {
                        n = MIN(len, (uint64_t) COPY_ZERO_MAX);
                        cmd.type = NBD_CMD_WRITE_ZEROES;
                } else {
                        n = MIN(len, (uint64_t) e->zero_buf_size);
                        cmd.type = NBD_CMD_WRITE;
                        cmd.buf = e->zero_buf;
                        throttle(e, n);
                }
                cmd.length = (uint32_t) n;
                r = submit(e, op, d, &cmd);
                if (r < 0) {
                        engine_fail(e, r, "destination", cmd.type == NBD_CMD_WRITE ? "write" : "zero",
                                    offset);
                        return r;
                }
                offset += n;
                len -= n;
        }
        return 0;
}

static int dst_write(Engine *e, Op *op, const uint8_t *p, uint64_t offset, uint64_t len) {
        int r;

        op->sent += len;
        throttle(e, len);
        if (e->dst->dev)
                r = blockdev_pwrite(e->dst->dev, p, len, offset);
        else
                r = submit(e, op, e->dst,
                           &(NbdCommand){ .type = NBD_CMD_WRITE,
                                          .offset = offset,
                                          .length = (uint32_t) len,
                                          .buf = (void *) p });
        if (r < 0)
                engine_fail(e, r, "destination", "write", offset);
        return r;
}

typedef enum BlockAction {
        BLOCK_DATA,
        BLOCK_ZERO,
        BLOCK_UNCHANGED,
} BlockAction;

static bool same_digest(Engine *e, const Op *op, uint64_t at, const uint8_t *p, uint64_t n) {
        const uint8_t *remote = op->hashes + at / e->delta * COPY_DIGEST_SIZE;
        XXH128_canonical_t c;

        if (!p && n == e->delta)
                return memcmp(remote, e->zero_digest, COPY_DIGEST_SIZE) == 0;
        XXH128_canonicalFromHash(&c, XXH3_128bits(p ?: e->zero_buf, (size_t) n));
        return memcmp(remote, c.digest, COPY_DIGEST_SIZE) == 0;
}

static BlockAction classify(Engine *e, const Op *op, uint64_t at, uint64_t n) {
        const uint8_t *p = op->zero ? NULL : op->buf + at;

        if (e->delta && same_digest(e, op, at, p, n))
                return BLOCK_UNCHANGED;
        if (!p)
                return BLOCK_ZERO;
        if (!e->o->no_zero_detection && is_zero(p, (size_t) n))
                return BLOCK_ZERO;
        return BLOCK_DATA;
}

static void emit(Engine *e, Op *op, BlockAction a, uint64_t at, uint64_t n) {
        switch (a) {
        case BLOCK_DATA:
                (void) dst_write(e, op, op->buf + at, op->offset + at, n);
                break;
        case BLOCK_ZERO:
                (void) dst_zero(e, op, op->offset + at, n);
                break;
        case BLOCK_UNCHANGED:
                op->unchanged += n;
                break;
        }
}

/* Sends the piece: in runs of blocks that are data, zeroes, or (delta) already there. */
static void start_writes(Engine *e, Op *op) {
        op->stage = STAGE_WRITE;
        op_get(op);
        if (!e->dst) {
                /* hashing only */
        } else if (!e->delta && op->zero)
                (void) dst_zero(e, op, op->offset, op->length);
        else if (!e->delta && e->o->no_zero_detection)
                (void) dst_write(e, op, op->buf, op->offset, op->length);
        else {
                uint64_t block = e->delta ?: MAX((uint64_t) COPY_ZERO_BLOCK, e->align), run = 0;
                BlockAction run_action = BLOCK_DATA;

                for (uint64_t at = 0; at < op->length && !e->failed;) {
                        uint64_t n = MIN(block, op->length - at);
                        BlockAction a = classify(e, op, at, n);

                        if (run > 0 && a != run_action) {
                                emit(e, op, run_action, at - run, run);
                                run = 0;
                        }
                        run_action = a;
                        run += n;
                        at += n;
                }
                if (!e->failed && run > 0)
                        emit(e, op, run_action, op->length - run, run);
        }
        op_put(op, 0);
}

static void start_read(Engine *e, Op *op) {
        int r;

        op->stage = STAGE_READ;
        op_get(op);
        if (e->delta) {
                r = submit(e, op, e->dst,
                           &(NbdCommand){ .type = NBD_CMD_HWAMEID_HASH,
                                          .offset = op->offset,
                                          .length = (uint32_t) op->length,
                                          .buf = op->hashes });
                if (r < 0)
                        engine_fail(e, r, "destination", "hash", op->offset);
        }
        if (op->zero) {
                op_put(op, 0);
                return;
        }
        if (e->src->dev) {
                r = blockdev_pread(e->src->dev, op->buf, op->length, op->offset);
                op_put(op, r);
                return;
        }
        (void) submit(e, op, e->src,
                      &(NbdCommand){ .type = NBD_CMD_READ,
                                     .offset = op->offset,
                                     .length = (uint32_t) op->length,
                                     .buf = op->buf });
        op_put(op, 0);
}

/* ---- Hashing and bookkeeping ---- */

static void hash_zeroes(Engine *e, uint64_t len) {
        while (len > 0) {
                size_t n = (size_t) MIN(len, (uint64_t) e->zero_buf_size);
                (void) XXH3_128bits_update(e->hash, e->zero_buf, n);
                len -= n;
        }
}

static void op_release(Engine *e, Op *op) {
        op->in_use = false;
        e->free_ops[e->n_free++] = (unsigned) (op - e->ops);
}

static void maybe_release(Engine *e, Op *op) {
        if (op->in_use && op->hashed && op->writes_done)
                op_release(e, op);
}

static void advance_hash(Engine *e) {
        while (e->fifo_len > 0 && !e->failed) {
                Op *op = &e->ops[e->fifo[e->fifo_head]];

                if (!op->read_done || !op->writes_done)
                        break;
                if (op->zero)
                        hash_zeroes(e, op->length);
                else
                        (void) XXH3_128bits_update(e->hash, op->buf, op->length);
                op->hashed = true;
                e->hashed_pos = op->offset + op->length;
                e->hashed_sent += op->sent;
                e->hashed_skipped += op->skipped;
                e->hashed_unchanged += op->unchanged;
                e->fifo_head = (e->fifo_head + 1) % e->n_ops;
                e->fifo_len--;
                maybe_release(e, op);
        }
}

static void handle_ready(Engine *e, Op *op) {
        int error, hash_error;

        pthread_mutex_lock(&e->lock);
        error = op->error;
        op->error = 0;
        hash_error = op->hash_error;
        op->hash_error = 0;
        pthread_mutex_unlock(&e->lock);

        if (hash_error < 0)
                engine_fail(e, hash_error, "destination", "hash", op->offset);
        if (error < 0)
                engine_fail(e, error, op->stage == STAGE_READ ? "source" : "destination",
                            op->stage == STAGE_READ ? "read" : (op->zero ? "zero" : "write"), op->offset);
        if (e->failed) {
                /* Nothing more happens to this piece; it stays out of the FIFO's way. */
                op->read_done = op->hashed = op->writes_done = true;
                if (op->in_use)
                        op_release(e, op);
                return;
        }
        if (op->stage == STAGE_READ) {
                op->read_done = true;
                start_writes(e, op);
                return;
        }
        op->writes_done = true;
        e->progress.done += op->length;
        e->progress.sent += op->sent;
        e->progress.skipped += op->skipped;
        e->progress.unchanged += op->unchanged;
        advance_hash(e);
}

/* Takes every op off the ready ring; waits up to timeout for the first when wait is set. */
static void process_ready(Engine *e, bool wait, usec_t timeout) {
        for (;;) {
                Op *op;

                pthread_mutex_lock(&e->lock);
                if (e->ready_len == 0 && wait) {
                        struct timespec ts;
                        usec_t until;
                        clock_gettime(CLOCK_REALTIME, &ts);
                        until = timespec_load(&ts) + timeout;
                        ts.tv_sec = (time_t) (until / USEC_PER_SEC);
                        ts.tv_nsec = (long) ((until % USEC_PER_SEC) * NSEC_PER_USEC);
                        (void) pthread_cond_timedwait(&e->cond, &e->lock, &ts);
                }
                wait = false;
                if (e->ready_len == 0) {
                        pthread_mutex_unlock(&e->lock);
                        return;
                }
                op = &e->ops[e->ready[e->ready_head]];
                e->ready_head = (e->ready_head + 1) % e->n_ops;
                e->ready_len--;
                op->queued = false;
                pthread_mutex_unlock(&e->lock);

                handle_ready(e, op);
        }
}

static void report(Engine *e, bool force) {
        usec_t t = now(CLOCK_MONOTONIC);

        if (!e->o->progress)
                return;
        if (!force && t - e->last_progress < (e->o->progress_interval ?: PROGRESS_INTERVAL_DEFAULT))
                return;
        e->last_progress = t;
        e->progress.elapsed = t - e->start;
        e->progress.phase = e->phase;
        if (e->phase == COPY_PHASE_VERIFY)
                e->progress.verified = e->progress.done;
        else
                e->progress.acknowledged = e->hashed_pos;
        e->o->progress(&e->progress, e->o->userdata);
}

static unsigned ops_in_use(const Engine *e) {
        return e->n_ops - e->n_free;
}

static int flush_destination(const CopyEndpoint *d);

static int hash_state_save(const XXH3_state_t *h, CopyCheckpoint *c) {
        _Static_assert(sizeof(XXH3_state_t) <= COPY_HASH_STATE_MAX, "XXH3 state does not fit");
        /* The state points at the library's default secret: stored as NULL, the address of this
         * process's copy put back on load. */
        memcpy(c->hash_state, h, sizeof(*h));
        memset(c->hash_state + offsetof(XXH3_state_t, extSecret), 0, sizeof(h->extSecret));
        c->hash_state_size = sizeof(*h);
        c->hash_version = XXH_versionNumber();
        return 0;
}

static bool hash_state_load(XXH3_state_t *h, const CopyCheckpoint *c) {
        const unsigned char *secret;

        if (c->hash_state_size != sizeof(*h) || c->hash_version != XXH_versionNumber())
                return false;
        (void) XXH3_128bits_reset(h);
        secret = h->extSecret;
        memcpy(h, c->hash_state, sizeof(*h));
        if (h->extSecret != NULL)
                return false;
        h->extSecret = secret;
        return true;
}

/* The point below which everything is durable: flushes the destination, then hands it over. */
static int checkpoint(Engine *e) {
        CopyCheckpoint c = {
                .size = e->size,
                .offset = e->hashed_pos,
                .sent = e->hashed_sent,
                .skipped = e->hashed_skipped,
                .unchanged = e->hashed_unchanged,
        };
        int r;

        (void) hash_state_save(e->hash, &c);
        r = flush_destination(e->dst);
        if (r < 0) {
                engine_fail(e, r, "destination", "flush", c.offset);
                return r;
        }
        r = e->o->checkpoint(&c, e->o->userdata);
        if (r < 0) {
                engine_fail(e, r, "checkpoint", "save", c.offset);
                return r;
        }
        e->checkpoint_pos = c.offset;
        e->last_checkpoint = now(CLOCK_MONOTONIC);
        return 0;
}

static void maybe_checkpoint(Engine *e) {
        usec_t interval = e->o->checkpoint_interval ?: COPY_CHECKPOINT_INTERVAL_DEFAULT;

        if (!e->o->checkpoint || !e->dst || e->failed || e->hashed_pos <= e->checkpoint_pos ||
            now(CLOCK_MONOTONIC) - e->last_checkpoint < interval)
                return;
        (void) checkpoint(e);
}

/* The pipeline: issue pieces while buffers are free, handle completions, hash in order. */
static int engine_loop(Engine *e) {
        uint64_t pos = e->start_pos;
        int r;

        while (pos < e->size || ops_in_use(e) > 0) {
                if (!e->failed && cancelled(e))
                        engine_fail(e, -ECANCELED, "copy", "cancel", pos);
                if (e->failed && ops_in_use(e) == 0)
                        break;

                while (!e->failed && !cancelled(e) && pos < e->size && e->n_free > 0) {
                        uint64_t len;
                        bool zero;
                        Op *op;

                        r = plan_piece(e, pos, &len, &zero);
                        if (r < 0) {
                                engine_fail(e, r, "source", "block status", pos);
                                break;
                        }
                        op = &e->ops[e->free_ops[--e->n_free]];
                        *op = (Op){ .e = e,
                                    .buf = op->buf,
                                    .hashes = op->hashes,
                                    .offset = pos,
                                    .length = len,
                                    .zero = zero,
                                    .in_use = true };
                        e->fifo[(e->fifo_head + e->fifo_len++) % e->n_ops] = (unsigned) (op - e->ops);
                        pos += len;

                        if (zero && !e->delta) {
                                op->read_done = true;
                                start_writes(e, op);
                        } else
                                start_read(e, op);
                        process_ready(e, false, 0);
                        /* Local I/O completes at once: the loop may never leave while buffers stay free. */
                        report(e, false);
                        maybe_checkpoint(e);
                }
                if (e->failed) {
                        /* Pieces waiting only for the hash will never get it. */
                        for (unsigned i = 0; i < e->n_ops; i++) {
                                Op *op = &e->ops[i];
                                bool idle;
                                pthread_mutex_lock(&e->lock);
                                idle = op->pending == 0 && !op->queued;
                                pthread_mutex_unlock(&e->lock);
                                if (op->in_use && idle)
                                        op_release(e, op);
                        }
                        e->fifo_len = 0;
                }
                report(e, false);
                maybe_checkpoint(e);
                if (ops_in_use(e) == 0)
                        continue;
                process_ready(e, true, 100 * USEC_PER_MSEC);
        }
        report(e, true);
        return e->failed ? e->error : 0;
}

static uint64_t endpoint_align(const CopyEndpoint *ep) {
        if (!ep || ep->dev)
                return 1;
        return nbd_client_info(ep->conns[0])->block_min;
}

/* The destination's hash block size when every connection negotiated the delta extension and the
 * destination may hold content worth comparing. */
static uint32_t delta_block_size(const CopyEndpoint *dst, const CopyOptions *o) {
        uint32_t bs;

        if (!dst || dst->dev || o->no_delta || o->assume_zeroed_destination)
                return 0;
        bs = nbd_client_info(dst->conns[0])->delta_block_size;
        for (size_t i = 1; i < dst->n_conns; i++)
                if (nbd_client_info(dst->conns[i])->delta_block_size != bs)
                        return 0;
        return bs;
}

static void engine_done(Engine *e) {
        free(e->ops);
        free(e->buffers);
        free(e->hash_buffers);
        free(e->zero_buf);
        free(e->fifo);
        free(e->free_ops);
        free(e->ready);
        free(e->extents);
        if (e->hash)
                XXH3_freeState(e->hash);
        pthread_mutex_destroy(&e->lock);
        pthread_cond_destroy(&e->cond);
}

static int engine_init(Engine *e, const CopyEndpoint *src, const CopyEndpoint *dst, uint64_t size,
                       bool trust_map, const CopyOptions *o) {
        size_t rs = o->request_size ?: COPY_REQUEST_SIZE_DEFAULT;
        uint64_t max = NBD_MAX_PAYLOAD;

        *e = (Engine){
                .src = src,
                .dst = dst,
                .o = o,
                .size = size,
                .trust_map = trust_map,
                .zeroed = o->assume_zeroed_destination,
                .n_ops = CLAMP(o->requests ?: COPY_REQUESTS_DEFAULT, 1U, COPY_REQUESTS_MAX),
                .start = now(CLOCK_MONOTONIC),
                .progress = { .total = size },
        };
        pthread_mutex_init(&e->lock, NULL);
        pthread_cond_init(&e->cond, NULL);

        e->delta = delta_block_size(dst, o);
        e->align = MAX(MAX(endpoint_align(src), endpoint_align(dst)), (uint64_t) e->delta);
        for (const CopyEndpoint *ep = src; ep; ep = ep == src ? dst : NULL)
                if (!ep->dev) {
                        const NbdExportInfo *i = nbd_client_info(ep->conns[0]);
                        max = MIN(max, (uint64_t) i->block_max);
                        rs = MAX(rs, (size_t) i->block_preferred);
                }
        rs = (size_t) MIN((uint64_t) MAX((uint64_t) rs, e->align), max);
        rs -= rs % e->align;
        if (rs == 0)
                return -EINVAL;
        e->request_size = rs;
        if (src->dev == NULL && trust_map && !nbd_client_info(src->conns[0])->base_allocation)
                e->trust_map = false;
        e->dst_can_zero = dst && !dst->dev && nbd_client_has_flag(dst->conns[0], NBD_FLAG_SEND_WRITE_ZEROES);
        e->zero_max = (!dst || dst->dev || e->zeroed || e->dst_can_zero) ? COPY_ZERO_MAX : rs;
        if (e->delta)
                e->zero_max = MIN(e->zero_max, (uint64_t) NBD_HWAMEID_HASH_MAX_COUNT);
        e->zero_max -= e->zero_max % e->align;
        if (e->zero_max == 0)
                e->zero_max = e->align;

        e->ops = calloc(e->n_ops, sizeof(Op));
        e->fifo = calloc(e->n_ops, sizeof(unsigned));
        e->free_ops = calloc(e->n_ops, sizeof(unsigned));
        e->ready = calloc(e->n_ops, sizeof(unsigned));
        e->zero_buf_size = MAX(rs, (size_t) (1024 * 1024));
        e->zero_buf = calloc(1, e->zero_buf_size);
        e->hash = XXH3_createState();
        if (!src->dev)
                e->extents = calloc(STATUS_EXTENTS, sizeof(NbdExtent));
        if (!e->ops || !e->fifo || !e->free_ops || !e->ready || !e->zero_buf || !e->hash ||
            (!src->dev && !e->extents))
                return -ENOMEM;
        if (posix_memalign((void **) &e->buffers, BUF_ALIGN, (size_t) e->n_ops * rs) != 0)
                return -ENOMEM;
        if (e->delta) {
                e->hashes_size = nbd_hash_reply_size(e->delta, MAX((uint64_t) rs, e->zero_max));
                e->hash_buffers = calloc(e->n_ops, e->hashes_size);
                if (!e->hash_buffers)
                        return -ENOMEM;
                XXH128_canonicalFromHash((XXH128_canonical_t *) (void *) e->zero_digest,
                                         XXH3_128bits(e->zero_buf, e->delta));
        }
        for (unsigned i = 0; i < e->n_ops; i++) {
                e->ops[i].buf = e->buffers + (size_t) i * rs;
                if (e->delta)
                        e->ops[i].hashes = e->hash_buffers + (size_t) i * e->hashes_size;
                e->free_ops[e->n_free++] = e->n_ops - 1 - i;
        }
        if (XXH3_128bits_reset(e->hash) != XXH_OK)
                return -EIO;
        e->last_checkpoint = e->start;
        return 0;
}

static void digest_out(Engine *e, uint8_t ret[COPY_DIGEST_SIZE]) {
        XXH128_canonical_t c;

        XXH128_canonicalFromHash(&c, XXH3_128bits_digest(e->hash));
        memcpy(ret, c.digest, COPY_DIGEST_SIZE);
}

static int endpoint_check(const CopyEndpoint *e) {
        if (!e || (!e->dev && (!e->conns || e->n_conns == 0)) || (e->dev && e->conns))
                return -EINVAL;
        for (size_t i = 1; i < e->n_conns; i++)
                if (nbd_client_info(e->conns[i])->size != nbd_client_info(e->conns[0])->size)
                        return -EINVAL;
        return 0;
}

static int flush_destination(const CopyEndpoint *d) {
        int r;

        if (d->dev)
                return blockdev_flush(d->dev);
        /* Every write was acknowledged before this: each FLUSH covers them all (and with multi-conn
         * one would do; nbdcopy flushes every connection, and so do we). */
        for (size_t i = 0; i < d->n_conns; i++) {
                if (!nbd_client_has_flag(d->conns[i], NBD_FLAG_SEND_FLUSH))
                        continue;
                r = nbd_client_run(d->conns[i], &(NbdCommand){ .type = NBD_CMD_FLUSH });
                if (r < 0)
                        return r;
        }
        return 0;
}

static int hash_pass(Engine *e, const CopyEndpoint *ep, uint64_t size, const CopyOptions *o, CopyPhase phase,
                     uint8_t ret[COPY_DIGEST_SIZE]) {
        int r;

        r = engine_init(e, ep, NULL, size, ep->dev != NULL, o);
        if (r < 0)
                return r;
        e->phase = phase;
        r = engine_loop(e);
        if (r < 0)
                return r;
        digest_out(e, ret);
        return 0;
}

/* Starts e at a resume point: the digest's state restored, or rebuilt from the source's prefix. */
static int resume_at(Engine *e, const CopyCheckpoint *c) {
        if (c->size != e->size || c->offset > e->size || (c->offset % e->align != 0 && c->offset != e->size))
                return -ESTALE;
        if (!hash_state_load(e->hash, c)) {
                _cleanup_(engine_done) Engine h = {};
                CopyOptions o = *e->o;
                int r;

                log_debug(
                        "copy: the checkpoint's digest state is not usable here; hashing the first %" PRIu64
                        " bytes of the source again.",
                        c->offset);
                o.progress = NULL;
                r = engine_init(&h, e->src, NULL, c->offset, true, &o);
                if (r < 0)
                        return r;
                h.phase = COPY_PHASE_VERIFY;
                r = engine_loop(&h);
                if (r < 0)
                        return r;
                XXH3_copyState(e->hash, h.hash);
        }
        e->start_pos = e->hashed_pos = e->checkpoint_pos = c->offset;
        e->hashed_sent = c->sent;
        e->hashed_skipped = c->skipped;
        e->hashed_unchanged = c->unchanged;
        e->progress.done = e->progress.resumed_from = c->offset;
        return 0;
}

int copy_digest(const CopyEndpoint *ep, uint64_t size, const CopyOptions *o, uint8_t ret[COPY_DIGEST_SIZE]) {
        _cleanup_(engine_done) Engine e = {};
        CopyOptions def = {};
        int r;

        r = endpoint_check(ep);
        if (r < 0)
                return r;
        if (size > copy_endpoint_size(ep))
                return -EINVAL;
        return hash_pass(&e, ep, size, o ?: &def, COPY_PHASE_VERIFY, ret);
}

int copy_run(const CopyEndpoint *src, const CopyEndpoint *dst, const CopyOptions *o, CopyResult *ret) {
        _cleanup_(engine_done) Engine e = {};
        CopyOptions no_delta;
        uint64_t size;
        int r;

        assert(ret);
        assert(o);

        *ret = (CopyResult){};
        r = endpoint_check(src);
        if (r < 0)
                return r;
        r = endpoint_check(dst);
        if (r < 0)
                return r;
        size = copy_endpoint_size(src);
        ret->size = size;
        if (copy_endpoint_size(dst) < size) {
                ret->failed_side = "destination";
                ret->failed_op = "size";
                return -ENOSPC;
        }
        if (!dst->dev && nbd_client_has_flag(dst->conns[0], NBD_FLAG_READ_ONLY)) {
                ret->failed_side = "destination";
                ret->failed_op = "write";
                return -EROFS;
        }

        r = engine_init(&e, src, dst, size, true, o);
        if (r < 0)
                return r;
        if (o->resume && e.delta && o->resume->offset % e.align != 0 && o->resume->offset != size) {
                /* Stopped between two hash blocks (an earlier run without delta): go on without. */
                no_delta = *o;
                no_delta.no_delta = true;
                o = &no_delta;
                engine_done(&e);
                r = engine_init(&e, src, dst, size, true, o);
                if (r < 0)
                        return r;
        }
        ret->delta = e.delta > 0;
        if (o->resume) {
                r = resume_at(&e, o->resume);
                if (r < 0) {
                        ret->failed_side = "source";
                        ret->failed_op = r == -ESTALE ? "resume" : "hash";
                        ret->failed_offset = o->resume->offset;
                        return r;
                }
                ret->resumed_from = e.start_pos;
        }
        e.phase = COPY_PHASE_COPY;
        r = engine_loop(&e);
        ret->sent = e.progress.sent;
        ret->skipped = e.progress.skipped;
        ret->unchanged = e.progress.unchanged;
        if (r < 0) {
                ret->failed_side = e.failed_side;
                ret->failed_op = e.failed_op;
                ret->failed_offset = e.failed_offset;
                return r;
        }
        digest_out(&e, ret->digest);

        e.phase = COPY_PHASE_FLUSH;
        report(&e, true);
        if (o->checkpoint && e.checkpoint_pos < size)
                r = checkpoint(&e); /* flushes; a resume then goes straight to the verification */
        else
                r = flush_destination(dst);
        if (r < 0) {
                ret->failed_side = e.failed_side ?: "destination";
                ret->failed_op = e.failed_op ?: "flush";
                return r;
        }
        ret->elapsed = now(CLOCK_MONOTONIC) - e.start;

        if (o->verify) {
                _cleanup_(engine_done) Engine v = {};
                usec_t t = now(CLOCK_MONOTONIC);

                r = hash_pass(&v, dst, size, o, COPY_PHASE_VERIFY, ret->destination_digest);
                ret->verify_elapsed = now(CLOCK_MONOTONIC) - t;
                if (r < 0) {
                        ret->failed_side = "destination";
                        ret->failed_op = "verify";
                        ret->failed_offset = v.failed_offset;
                        return r;
                }
                if (memcmp(ret->digest, ret->destination_digest, COPY_DIGEST_SIZE) != 0) {
                        ret->failed_side = "destination";
                        ret->failed_op = "verify";
                        return -EBADMSG;
                }
                ret->verified = true;
        }
        e.phase = COPY_PHASE_DONE;
        report(&e, true);
        return 0;
}
