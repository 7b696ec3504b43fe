/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A level-triggered controller, the shape of the evictor and the volume controller: informers over
 * the kinds it reads; after every change they see (and every resync interval) its pass function
 * looks at everything and starts at most one write; when that write is answered the pass runs
 * again, so each pass sees the result of the last. A failed write is retried after a short pause.
 * Passes wait until every informer has listed once.
 */

#include <cjson/cJSON.h>

#include "../basic/macro.h"
#include "../informer/informer.h"
#include "../kube/kube-client.h"

#define PASS_RESYNC_INTERVAL (10 * USEC_PER_SEC)
#define PASS_RETRY_DELAY     (2 * USEC_PER_SEC)
#define PASS_INFORMERS_MAX   8

typedef struct PassController PassController;

/* Returns 1 when it started a write (pass_controller_send()), 0 when all is as it should be. */
typedef int (*PassFn)(PassController *pc, void *userdata);

int pass_controller_new(KubeClient *client, const char *name, const InformerConfig *configs, size_t n,
                        PassFn fn, void *userdata, PassController **ret);
PassController *pass_controller_free(PassController *pc);
DEFINE_TRIVIAL_CLEANUP_FUNC(PassController *, pass_controller_free);

int pass_controller_start(PassController *pc);

/* A parsed copy of informer i's objects, as a JSON array (NULL on -ENOMEM). */
cJSON *pass_controller_snapshot(PassController *pc, size_t i);
/* Starts the pass's write; returns 1, or a negative errno. */
int pass_controller_send(PassController *pc, KubeMethod method, const char *path, const cJSON *body);
