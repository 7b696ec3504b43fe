/* SPDX-License-Identifier: Apache-2.0 */
/*
 * basic/worker: jobs run in order on one other thread, completions come back on the loop's
 * thread, a freed worker cancels what never ran.
 */

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "basic/worker.h"

#define N_MANY 2000

typedef struct Ctx {
        sd_event *event;
        Worker *worker;
        pthread_t loop_thread;
        unsigned ran[N_MANY];
        unsigned n_ran;     /* written by the worker thread only */
        unsigned completed; /* loop only */
        unsigned expected;
        int results[N_MANY];
        bool wrong_thread;
        bool signals_blocked;
        pthread_mutex_t gate; /* held by the test to keep a job running */
} Ctx;

typedef struct Job {
        Ctx *ctx;
        unsigned index;
        bool wait_gate;
} Job;

static int job_run(void *p, void *state) {
        Job *j = p;
        Ctx *c = j->ctx;
        sigset_t mask;

        if (pthread_equal(pthread_self(), c->loop_thread))
                c->wrong_thread = true;
        if (pthread_sigmask(SIG_SETMASK, NULL, &mask) == 0)
                c->signals_blocked = sigismember(&mask, SIGTERM) && sigismember(&mask, SIGINT);
        if (j->wait_gate) {
                pthread_mutex_lock(&c->gate);
                pthread_mutex_unlock(&c->gate);
        }
        c->ran[c->n_ran++] = j->index;
        return (int) j->index * 2 + (state ? 1 : 0);
}

static void job_done(void *p, int result, void *userdata) {
        Job *j = p;
        Ctx *c = userdata;

        if (!pthread_equal(pthread_self(), c->loop_thread))
                c->wrong_thread = true;
        c->results[j->index] = result;
        c->completed++;
        if (c->completed == c->expected)
                (void) sd_event_exit(c->event, 0);
}

static int state_value = 1;
static bool thread_done_called;

static int thread_init_ok(void **ret_state) {
        *ret_state = &state_value;
        return 0;
}

static void thread_done(void *state) {
        thread_done_called = state == &state_value;
}

static int thread_init_fail(void **ret_state) {
        (void) ret_state;
        return -ENODEV;
}

static void ctx_init(Ctx *c) {
        memset(c, 0, sizeof(*c));
        c->loop_thread = pthread_self();
        assert_int_equal(pthread_mutex_init(&c->gate, NULL), 0);
        assert_int_equal(sd_event_new(&c->event), 0);
}

static void ctx_done(Ctx *c) {
        c->worker = worker_free(c->worker);
        c->event = sd_event_unref(c->event);
        pthread_mutex_destroy(&c->gate);
}

static void order_results_and_threads(void **state) {
        Ctx c;
        Job jobs[N_MANY];

        (void) state;
        ctx_init(&c);
        thread_done_called = false;
        assert_int_equal(
                worker_new(c.event, "test-worker-with-a-long-name", thread_init_ok, thread_done, &c.worker),
                0);
        assert_int_equal(worker_pending(c.worker), 0);
        assert_int_equal(worker_busy_since(c.worker), 0);

        c.expected = N_MANY;
        for (unsigned i = 0; i < N_MANY; i++) {
                jobs[i] = (Job){ .ctx = &c, .index = i };
                assert_int_equal(worker_submit(c.worker, job_run, job_done, &jobs[i], &c), 0);
        }
        assert_int_equal(sd_event_loop(c.event), 0);

        assert_int_equal(c.completed, N_MANY);
        assert_int_equal(c.n_ran, N_MANY);
        for (unsigned i = 0; i < N_MANY; i++) {
                assert_int_equal(c.ran[i], i);                   /* in order */
                assert_int_equal(c.results[i], (int) i * 2 + 1); /* with the thread's state */
        }
        assert_false(c.wrong_thread);
        assert_true(c.signals_blocked);
        assert_int_equal(worker_pending(c.worker), 0);
        ctx_done(&c);
        assert_true(thread_done_called);
}

static int on_check_busy(sd_event_source *s, uint64_t usec, void *userdata) {
        Ctx *c = userdata;

        (void) s, (void) usec;
        /* The first job holds the thread until the gate opens. */
        if (worker_busy_since(c->worker) == 0)
                return sd_event_source_set_time_relative(s, 1000) < 0
                               ? -EIO
                               : sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        assert_true(worker_busy_since(c->worker) <= now(CLOCK_MONOTONIC));
        assert_int_equal(worker_pending(c->worker), 3);
        pthread_mutex_unlock(&c->gate);
        return 0;
}

static void busy_since_and_pending(void **state) {
        Ctx c;
        Job jobs[3];
        sd_event_source *timer = NULL;

        (void) state;
        ctx_init(&c);
        assert_int_equal(worker_new(c.event, "busy", NULL, NULL, &c.worker), 0);
        pthread_mutex_lock(&c.gate);
        c.expected = 3;
        for (unsigned i = 0; i < 3; i++) {
                jobs[i] = (Job){ .ctx = &c, .index = i, .wait_gate = i == 0 };
                assert_int_equal(worker_submit(c.worker, job_run, job_done, &jobs[i], &c), 0);
        }
        assert_int_equal(worker_pending(c.worker), 3);
        assert_int_equal(
                sd_event_add_time_relative(c.event, &timer, CLOCK_MONOTONIC, 0, 0, on_check_busy, &c), 0);
        assert_int_equal(sd_event_loop(c.event), 0);
        assert_int_equal(c.completed, 3);
        assert_int_equal(c.results[0], 0); /* no thread state */
        assert_int_equal(worker_pending(c.worker), 0);
        assert_int_equal(worker_busy_since(c.worker), 0);
        sd_event_source_unref(timer);
        ctx_done(&c);
}

typedef struct Freer {
        Ctx *ctx;
        _Atomic pid_t tid;
} Freer;

/* Plays the loop: frees the worker (and so receives the completions). */
static void *freer_thread(void *p) {
        Freer *f = p;

        f->ctx->loop_thread = pthread_self();
        f->tid = gettid();
        f->ctx->worker = worker_free(f->ctx->worker);
        return NULL;
}

static char thread_state(pid_t tid) {
        char path[64], buf[512], *e, st = '?';
        FILE *f;

        snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int) tid);
        f = fopen(path, "re");
        if (!f)
                return st;
        if (fgets(buf, sizeof(buf), f) && (e = strrchr(buf, ')')) && e[1] == ' ')
                st = e[2];
        fclose(f);
        return st;
}

static void free_cancels_queued_jobs(void **state) {
        Ctx c;
        Job jobs[5];
        Freer f = { .ctx = &c };
        pthread_t t;

        (void) state;
        ctx_init(&c);
        assert_int_equal(worker_new(c.event, "cancel", NULL, NULL, &c.worker), 0);
        pthread_mutex_lock(&c.gate);
        c.expected = 1000; /* the loop is not run: completions come from worker_free() */
        for (unsigned i = 0; i < 5; i++) {
                jobs[i] = (Job){ .ctx = &c, .index = i, .wait_gate = i == 0 };
                c.results[i] = 12345;
                assert_int_equal(worker_submit(c.worker, job_run, job_done, &jobs[i], &c), 0);
        }
        /* The first job runs and waits for the gate. */
        while (worker_busy_since(c.worker) == 0)
                sched_yield();

        /* Another thread calls worker_free(); once it sleeps, it sleeps in pthread_join() (nothing
         * else holds the worker's lock), so the worker is stopping: open the gate. */
        assert_int_equal(pthread_create(&t, NULL, freer_thread, &f), 0);
        while (f.tid == 0 || thread_state(f.tid) != 'S')
                sched_yield();
        pthread_mutex_unlock(&c.gate);
        assert_int_equal(pthread_join(t, NULL), 0);

        /* Every job completed exactly once, from worker_free() on the freeing thread: the one that
         * ran with its result, the others with -ECANCELED, in order. */
        assert_null(c.worker);
        assert_int_equal(c.completed, 5);
        assert_false(c.wrong_thread);
        assert_int_equal(c.n_ran, 1);
        assert_int_equal(c.results[0], 0);
        for (unsigned i = 1; i < 5; i++)
                assert_int_equal(c.results[i], -ECANCELED);
        ctx_done(&c);
}

static void failing_thread_init(void **state) {
        sd_event *e = NULL;
        Worker *w = NULL;

        (void) state;
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(worker_new(e, "fail", thread_init_fail, NULL, &w), -ENODEV);
        assert_null(w);
        sd_event_unref(e);
}

static void free_null_and_idle(void **state) {
        sd_event *e = NULL;
        Worker *w = NULL;

        (void) state;
        assert_null(worker_free(NULL));
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(worker_new(e, "idle", NULL, NULL, &w), 0);
        assert_null(worker_free(w));
        sd_event_unref(e);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(order_results_and_threads), cmocka_unit_test(busy_since_and_pending),
                cmocka_unit_test(free_cancels_queued_jobs),  cmocka_unit_test(failing_thread_init),
                cmocka_unit_test(free_null_and_idle),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
