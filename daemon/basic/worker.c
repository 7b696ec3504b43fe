/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One thread per Worker. The loop appends jobs to a locked FIFO and signals the thread; the thread
 * runs them one after the other, moves each finished job to a second locked FIFO and bumps an
 * eventfd; the loop's handler for that eventfd takes the finished jobs and calls their
 * completions. A job is owned by exactly one side at a time.
 */

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>

#include "worker.h"

typedef struct WorkerJob WorkerJob;
struct WorkerJob {
        WorkerJob *next;
        WorkerRunFn run;
        WorkerDoneFn done;
        void *job, *userdata;
        int result;
};

typedef struct WorkerQueue {
        WorkerJob *head, *tail;
} WorkerQueue;

struct Worker {
        sd_event *event;
        sd_event_source *source;
        int efd;
        char *name;

        int (*thread_init)(void **ret_state);
        void (*thread_done)(void *state);

        pthread_t thread;
        bool thread_started;

        /* Everything below is shared with the thread and protected by lock. */
        pthread_mutex_t lock;
        pthread_cond_t cond;
        WorkerQueue queued;   /* submitted, not yet started */
        WorkerQueue finished; /* run, completion not yet called */
        bool running;
        bool stopping;
        bool init_done;
        int init_result;
        usec_t busy_since;

        /* Loop only. */
        size_t n_pending; /* submitted and not yet completed */
};

static void queue_push(WorkerQueue *q, WorkerJob *j) {
        j->next = NULL;
        if (q->tail)
                q->tail->next = j;
        else
                q->head = j;
        q->tail = j;
}

static WorkerJob *queue_pop(WorkerQueue *q) {
        WorkerJob *j = q->head;

        if (j) {
                q->head = j->next;
                if (!q->head)
                        q->tail = NULL;
                j->next = NULL;
        }
        return j;
}

static WorkerQueue queue_take(WorkerQueue *q) {
        WorkerQueue r = *q;

        *q = (WorkerQueue){};
        return r;
}

static void *worker_thread(void *p) {
        Worker *w = p;
        void *state = NULL;
        uint64_t one = 1;
        int r = 0;

        if (w->thread_init)
                r = w->thread_init(&state);

        pthread_mutex_lock(&w->lock);
        w->init_result = r;
        w->init_done = true;
        pthread_cond_broadcast(&w->cond);
        if (r < 0) {
                pthread_mutex_unlock(&w->lock);
                return NULL;
        }

        for (;;) {
                WorkerJob *j;

                while (!w->queued.head && !w->stopping)
                        pthread_cond_wait(&w->cond, &w->lock);
                if (w->stopping)
                        break; /* what is still queued is cancelled by worker_free() */

                j = queue_pop(&w->queued);
                w->running = true;
                w->busy_since = now(CLOCK_MONOTONIC);
                pthread_mutex_unlock(&w->lock);

                j->result = j->run(j->job, state);

                pthread_mutex_lock(&w->lock);
                w->running = false;
                w->busy_since = 0;
                queue_push(&w->finished, j);
                /* An eventfd write only fails when the counter would overflow, which takes 2^64-1
                 * unread writes; the loop reads it to zero each time it wakes up. */
                (void) !write(w->efd, &one, sizeof(one));
        }
        pthread_mutex_unlock(&w->lock);

        if (w->thread_done)
                w->thread_done(state);
        return NULL;
}

static void worker_complete(Worker *w, WorkerQueue *q, bool cancel) {
        WorkerJob *j;

        while ((j = queue_pop(q))) {
                assert(w->n_pending > 0);
                w->n_pending--;
                if (j->done)
                        j->done(j->job, cancel ? -ECANCELED : j->result, j->userdata);
                free(j);
        }
}

static int worker_on_event(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Worker *w = userdata;
        WorkerQueue done;
        uint64_t n;

        (void) s, (void) revents;

        /* Non-blocking: EAGAIN only means another wake-up already consumed the count. */
        (void) !read(fd, &n, sizeof(n));

        pthread_mutex_lock(&w->lock);
        done = queue_take(&w->finished);
        pthread_mutex_unlock(&w->lock);

        worker_complete(w, &done, false);
        return 0;
}

static int worker_start_thread(Worker *w) {
        sigset_t all, saved;
        char name[16];
        int r;

        /* The thread inherits the creator's signal mask: create it with every signal blocked, so
         * that SIGTERM, SIGHUP... are only ever taken by the loop's signalfd. */
        sigfillset(&all);
        r = pthread_sigmask(SIG_SETMASK, &all, &saved);
        if (r != 0)
                return -r;
        r = pthread_create(&w->thread, NULL, worker_thread, w);
        (void) pthread_sigmask(SIG_SETMASK, &saved, NULL);
        if (r != 0)
                return -r;
        w->thread_started = true;

        /* Thread names are at most 15 bytes. */
        snprintf(name, sizeof(name), "%s", w->name);
        (void) pthread_setname_np(w->thread, name);

        /* Wait for thread_init: its failure is worker_new()'s. */
        pthread_mutex_lock(&w->lock);
        while (!w->init_done)
                pthread_cond_wait(&w->cond, &w->lock);
        r = w->init_result;
        pthread_mutex_unlock(&w->lock);
        if (r < 0) {
                (void) pthread_join(w->thread, NULL);
                w->thread_started = false;
        }
        return r;
}

int worker_new(sd_event *e, const char *name, int (*thread_init)(void **ret_state),
               void (*thread_done)(void *state), Worker **ret) {
        _cleanup_(worker_freep) Worker *w = NULL;
        int r;

        assert(e);
        assert(name);
        assert(ret);

        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->efd = -EBADF;
        w->thread_init = thread_init;
        w->thread_done = thread_done;
        r = pthread_mutex_init(&w->lock, NULL);
        if (r != 0) {
                free(TAKE_PTR(w));
                return -r;
        }
        r = pthread_cond_init(&w->cond, NULL);
        if (r != 0) {
                pthread_mutex_destroy(&w->lock);
                free(TAKE_PTR(w));
                return -r;
        }
        w->event = sd_event_ref(e);

        w->name = strdup(name);
        if (!w->name)
                return -ENOMEM;

        w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (w->efd < 0)
                return -errno;

        r = sd_event_add_io(e, &w->source, w->efd, EPOLLIN, worker_on_event, w);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(w->source, w->name);

        r = worker_start_thread(w);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(w);
        return 0;
}

Worker *worker_free(Worker *w) {
        WorkerQueue finished, cancelled;

        if (!w)
                return NULL;

        if (w->thread_started) {
                pthread_mutex_lock(&w->lock);
                w->stopping = true;
                pthread_cond_broadcast(&w->cond);
                pthread_mutex_unlock(&w->lock);
                (void) pthread_join(w->thread, NULL);
        }

        /* The thread is gone: no locking needed any more. Jobs that ran get their result, in
         * order; jobs that never started get -ECANCELED. */
        finished = queue_take(&w->finished);
        cancelled = queue_take(&w->queued);
        worker_complete(w, &finished, false);
        worker_complete(w, &cancelled, true);

        sd_event_source_disable_unref(w->source);
        safe_close(w->efd);
        sd_event_unref(w->event);
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        free(w->name);
        return mfree(w);
}

int worker_submit(Worker *w, WorkerRunFn run, WorkerDoneFn done, void *job, void *userdata) {
        WorkerJob *j;

        assert(w);
        assert(run);

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        *j = (WorkerJob){ .run = run, .done = done, .job = job, .userdata = userdata };

        pthread_mutex_lock(&w->lock);
        queue_push(&w->queued, j);
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);

        w->n_pending++;
        return 0;
}

size_t worker_pending(const Worker *w) {
        assert(w);
        return w->n_pending;
}

usec_t worker_busy_since(const Worker *w) {
        Worker *m = (Worker *) w; /* the lock is not part of the value */
        usec_t t;

        assert(w);
        pthread_mutex_lock(&m->lock);
        t = m->busy_since;
        pthread_mutex_unlock(&m->lock);
        return t;
}
