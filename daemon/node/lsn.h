/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The node's LocalStorageNode: created when missing, its spec (hostname, storageIP, topology)
 * and status (pools, disks, capacities, volumes, state) kept equal to what this node has, in the
 * shape of the HwameiStor API. Written only when it differs, so an idle node writes nothing.
 */

#include <cjson/cJSON.h>

#include "../basic/macro.h"
#include "../kube/kube-client.h"
#include "../pool/storage.h"

typedef struct LsnWriter LsnWriter;

typedef struct LsnConfig {
        const char *node_name;
        const char *storage_ip; /* "" until known */
} LsnConfig;

int lsn_writer_new(KubeClient *client, Storage *storage, const LsnConfig *config, LsnWriter **ret);
LsnWriter *lsn_writer_free(LsnWriter *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(LsnWriter *, lsn_writer_free);

int lsn_writer_start(LsnWriter *w);

/* Something changed (storage snapshot, the Node's labels): write what differs. */
void lsn_writer_sync(LsnWriter *w);

/* The Node's topology labels (topology.kubernetes.io/zone and region); NULL node: "default". */
void lsn_writer_set_node(LsnWriter *w, const cJSON *node);
void lsn_writer_set_storage_ip(LsnWriter *w, const char *ip);

/* The status this node should have, from a snapshot (exposed for tests). */
int lsn_status_build(const StorageSnapshot *snap, const cJSON *current_conditions, cJSON **ret);

/* Writes so far (for tests and the idle benchmark). */
unsigned lsn_writer_writes(const LsnWriter *w);
