/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The volume controller (leader only): every LocalVolume gets spec.replicaNumber replicas (1, or 2
 * for HA) on Ready nodes that have a pool of its class with room, the nodes of
 * spec.accessibility.nodes first; its status says where they are (status.replicas, the replica
 * objects' names), how big (allocatedCapacityBytes) and whether they are usable (state Creating
 * until every replica is Ready, then Ready; NotReady when one is not). spec.accessibility.nodes is
 * filled in with the chosen nodes when it was empty.
 *
 * A volume that is being migrated is left to the migrate controller. Deleting a LocalVolume (or
 * setting spec.delete) deletes its replicas (each node removes its logical volume first); its
 * state goes ToBeDeleted, then Deleted.
 */

#include "../basic/macro.h"
#include "../kube/kube-client.h"
#include "../kube/kube-events.h"

typedef struct VolumeController VolumeController;

int volume_controller_new(KubeClient *client, EventRecorder *events, VolumeController **ret);
VolumeController *volume_controller_free(VolumeController *vc);
DEFINE_TRIVIAL_CLEANUP_FUNC(VolumeController *, volume_controller_free);

int volume_controller_start(VolumeController *vc);
