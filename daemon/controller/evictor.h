/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The evictor (leader only): turns drains and evictions into LocalVolumeMigrates, and keeps each
 * LocalVolume's status.publishedNode (where it is in use).
 *
 * In use: a volume is in use on a node while a pod on that node that has not terminated references
 * it: pod → PersistentVolumeClaim → PersistentVolume whose CSI driver is lvm.hwameistor.io →
 * the LocalVolume named like the PV; or while the node reports the volume's device open by
 * someone other than hwameid (a replica's status.inuse: mounted, or used by a process). The
 * migrate controller waits while the source is that node.
 *
 * Node path: a node that is unschedulable (spec.unschedulable, or the taint
 * node.kubernetes.io/unschedulable:NoSchedule that cordon and drain set) and not labelled
 * hwameistor.io/eviction=disable gets a LocalVolumeMigrate evictor-<volume> for every volume with
 * a replica there, with the finalizer hwameistor.io/eviction-protect. Uncordoning before a copy
 * starts (state "", Submitted or AddReplica) aborts them, which rolls them back.
 *
 * Groups: the hwameid volumes of one pod (two or more, none in a group yet) get a
 * LocalVolumeGroup lvg-<pod UID> and their spec.volumegroup names it, so that a migration with
 * migrateAllVols moves them together.
 *
 * Pod path: a pod that failed with reason Evicted, or that is labelled
 * hwameistor.io/eviction=start, gets its hwameid volumes moved off its node the same way, unless
 * the node is labelled hwameistor.io/eviction=disable.
 *
 * The evictor's migrations lose their finalizer once Completed or Aborted; completed ones and
 * those aborted by an uncordon are deleted, others stay to show why they failed (delete one to let
 * the evictor try again). Everything is read from the API objects: a new leader carries on.
 */

#include "../basic/macro.h"
#include "../kube/kube-client.h"
#include "../kube/kube-events.h"

#define EVICTOR_FINALIZER      "hwameistor.io/eviction-protect"
#define EVICTION_LABEL         "hwameistor.io/eviction"
#define HWAMEID_CSI_DRIVER     "lvm.hwameistor.io"
#define EVICTOR_MIGRATE_PREFIX "evictor-"

typedef struct Evictor Evictor;

int evictor_new(KubeClient *client, EventRecorder *events, Evictor **ret);
Evictor *evictor_free(Evictor *ev);
DEFINE_TRIVIAL_CLEANUP_FUNC(Evictor *, evictor_free);

int evictor_start(Evictor *ev);
