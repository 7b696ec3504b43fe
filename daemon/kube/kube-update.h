/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Read-modify-write of one object with optimistic concurrency, as client-go's RetryOnConflict:
 * GET the object, let the caller change it, PUT it back with the resourceVersion that was read.
 * When someone else wrote in between (409 Conflict), start again from a fresh GET, up to
 * KUBE_UPDATE_ATTEMPTS times. The caller never writes over a change it has not seen.
 */

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "kube-client.h"

#define KUBE_UPDATE_ATTEMPTS 5

typedef struct KubeUpdate KubeUpdate;

/*
 * Changes obj in place. Returns 0 to write it, 1 when there is nothing to change (no PUT; done
 * gets the object as read), or a negative errno to give up (done gets that error).
 */
typedef int (*KubeMutateFn)(cJSON *obj, void *userdata);

/*
 * path is the object's path; with status true the PUT goes to its /status subresource. done runs
 * once with the final answer: the object as stored, or the error of the last attempt (a Conflict
 * only when every attempt conflicted). kube_update_attempts() tells how many it took, until done
 * returns; ret (optional) is valid until then.
 */
int kube_update(KubeClient *c, const char *path, bool status, KubeMutateFn mutate, KubeResponseHandler done,
                void *userdata, KubeUpdate **ret);
KubeUpdate *kube_update_cancel(KubeUpdate *u);
/* Attempts made so far (1 for a write that did not conflict). */
unsigned kube_update_attempts(const KubeUpdate *u);
