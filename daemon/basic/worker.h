/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A worker thread for blocking work (LVM commands, disk probes, O_DIRECT I/O set-up), so that the
 * event loop never waits. Jobs run one at a time, in order, on the thread; each job's completion
 * runs afterwards on the loop. Thread and loop share nothing but the job (handed over through a
 * locked queue and an eventfd): the loop does not touch a job while the thread has it.
 *
 * thread_init/thread_done (optional) run on the thread itself, for per-thread state such as an
 * LVM handle; the state is passed to every job. worker_new() waits for thread_init and fails with
 * its error, so thread_init must be quick.
 *
 * The thread is created with every signal blocked (signals stay with the loop's signalfd) and is
 * named after the worker (first 15 bytes).
 */

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "time-util.h"

typedef struct Worker Worker;

/* Runs on the worker thread. The return value is handed to the completion. */
typedef int (*WorkerRunFn)(void *job, void *thread_state);
/* Runs on the loop after the job: result is run's return, or -ECANCELED when the worker was freed
 * before the job ran. It may submit more jobs, but must not free the worker. */
typedef void (*WorkerDoneFn)(void *job, int result, void *userdata);

int worker_new(sd_event *e, const char *name, int (*thread_init)(void **ret_state),
               void (*thread_done)(void *state), Worker **ret);

/* Waits for the running job to finish (jobs are expected to end: put timeouts in them), then
 * calls, from within worker_free() itself and in order, the completions still owed: jobs that ran
 * get their result, jobs that never started get -ECANCELED. Those completions must not use the
 * worker any more. Call it on the loop's thread. */
Worker *worker_free(Worker *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(Worker *, worker_free);

int worker_submit(Worker *w, WorkerRunFn run, WorkerDoneFn done, void *job, void *userdata);

/* Jobs submitted whose completion has not run yet (queued, running, or finished and waiting for
 * the loop), and since when the running one runs (CLOCK_MONOTONIC through now(), 0 when idle): a
 * status page can say "LVM busy for 42 s" while the loop carries on. Call them on the loop. */
size_t worker_pending(const Worker *w);
usec_t worker_busy_since(const Worker *w);
