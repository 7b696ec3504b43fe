# SPDX-License-Identifier: Apache-2.0
"""LocalVolumeMigrate end to end on the three-node harness: the leader's migrate controller moves
a volume's replica between nodes over the block stream, verified byte for byte, and prunes the
source; bad requests end Aborted with a reason and delete nothing; an abort during the copy rolls
back and leaves the source untouched."""

import json
import re
import time

import pytest

from harness import MiB, POOL_HDD, cluster, make_cluster  # noqa: F401

HW = "/apis/hwameistor.io/v1alpha1"

LV = f"{HW}/localvolumes"
LVM = f"{HW}/localvolumemigrates"


def volume_replicas(c, name, nodes, timeout=60):
    """Waits until the volume controller placed the volume's replicas on nodes (all Ready) and the
    volume says so; returns the replicas' names in the order of nodes."""
    def placed():
        reps = {r["spec"]["nodeName"]: r for r in c.kubectl_json("get", "localvolumereplica")["items"]
                if r["spec"]["volumeName"] == name}
        lv = c.get(f"{LV}/{name}") or {}
        if sorted(reps) != sorted(nodes) or any(r.get("status", {}).get("state") != "Ready" for r in reps.values()):
            return None
        if (lv.get("status") or {}).get("state") != "Ready":
            return None
        return [reps[n]["metadata"]["name"] for n in nodes]
    return c.wait(placed, timeout, f"{name}'s replicas on {nodes}")


def make_volume(c, name, node, capacity=48 * MiB):
    """A LocalVolume whose replica the volume controller places on node (its accessibility), filled
    with random data; returns (replica, sha256)."""
    lv = {"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolume", "metadata": {"name": name},
          "spec": {"requiredCapacityBytes": capacity, "poolName": POOL_HDD, "replicaNumber": 1,
                   "accessibility": {"nodes": [node]}, "pvcNamespace": "default", "pvcName": name}}
    c.kubectl("create", "-f", "-", input=json.dumps(lv))
    (replica,) = volume_replicas(c, name, [node])
    return replica, c.write_random(replica)


RS = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "app",
      "uid": "8a3b7c36-0d3e-4b8c-9a55-0000000000aa"}


def with_pod(c, volume, node, pod=None, labels=None):
    """A PV (CSI driver lvm.hwameistor.io, named like the volume), its bound PVC, and a running pod
    on node that uses it, as the provisioner and the scheduler would leave them."""
    pod = pod or f"app-{volume}"
    c.api("POST", "/api/v1/persistentvolumes", {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "48Mi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "hwameistor-storage-lvm-hdd",
                 "csi": {"driver": "lvm.hwameistor.io", "volumeHandle": volume},
                 "claimRef": {"namespace": "default", "name": f"data-{volume}"}}}, expect=201)
    c.api("POST", "/api/v1/namespaces/default/persistentvolumeclaims", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": f"data-{volume}", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "48Mi"}},
                 "storageClassName": "hwameistor-storage-lvm-hdd", "volumeName": volume}}, expect=201)
    c.api("POST", "/api/v1/namespaces/default/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod, "namespace": "default", "labels": labels or {"app": pod},
                     "ownerReferences": [dict(RS, controller=True, blockOwnerDeletion=True)]},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.local/app:1"}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": f"data-{volume}"}}]}},
        expect=201)
    c.api("PATCH", f"/api/v1/namespaces/default/pods/{pod}/status",
          {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
          ctype="application/merge-patch+json", expect=200)
    c.wait(lambda: (c.get(f"{LV}/{volume}") or {}).get("status", {}).get("publishedNode") == node,
           what=f"{volume} in use on {node}")
    return pod


def apply_migrate(c, name, volume, source, targets=()):
    """The guide's LocalVolumeMigrate, applied with kubectl."""
    yaml = (f"apiVersion: hwameistor.io/v1alpha1\nkind: LocalVolumeMigrate\nmetadata:\n  name: {name}\n"
            f"spec:\n  sourceNode: {source}\n  targetNodesSuggested: [{', '.join(targets)}]\n"
            f"  volumeName: {volume}\n  migrateAllVols: true\n")
    c.kubectl("apply", "-f", "-", input=yaml)


def migrate_status(c, name):
    return (c.get(f"{LVM}/{name}") or {}).get("status") or {}


def wait_state(c, name, state, timeout=90):
    return c.wait(lambda: (lambda s: s if s.get("state") == state else None)(migrate_status(c, name)), timeout,
                  f"migration {name} {state}")


def replicas_of(c, volume):
    return [r for r in c.kubectl_json("get", "localvolumereplica")["items"] if r["spec"]["volumeName"] == volume]


def test_localvolumemigrate_moves_the_data_verified_and_prunes_the_source(cluster):
    c = cluster
    source, digest = make_volume(c, "pvc-move", "k8s-node-1")
    apply_migrate(c, "migrate-pvc-move", "pvc-move", "k8s-node-1", ["k8s-node-2"])
    st = wait_state(c, "migrate-pvc-move", "Completed")
    assert st["targetNode"] == "k8s-node-2" and len(st["digest"]) == 32, st
    assert st["volumes"] == ["pvc-move"] and st["originalReplicaNumber"] == 1

    reps = replicas_of(c, "pvc-move")
    assert [r["spec"]["nodeName"] for r in reps] == ["k8s-node-2"], reps
    target = reps[0]["metadata"]["name"]
    assert reps[0]["status"]["state"] == "Ready" and reps[0]["status"]["synced"] is True
    assert reps[0]["metadata"]["annotations"]["hwameistor.io/hwameid-digest"] == st["digest"]
    assert c.checksum(target) == digest  # byte for byte, read through the target's extents
    assert c.get(f"{HW}/localvolumereplicas/{source}") is None
    assert not any(lv["lv_name"] == "pvc-move" for lv in c.node(1).lvm("lvs")["lv"])

    lv = c.get(f"{LV}/pvc-move")
    assert lv["spec"]["accessibility"]["nodes"] == ["k8s-node-2"]
    assert lv["status"]["replicas"] == [target]
    out = c.kubectl("get", "localvolumemigrate").stdout.splitlines()
    assert out[0].split()[:5] == ["NAME", "VOLUME", "FROM", "TO", "STATE"], out
    assert out[1].split()[:5] == ["migrate-pvc-move", "pvc-move", "k8s-node-1", "k8s-node-2", "Completed"]
    events = c.kubectl_json("get", "events", "-A")["items"]
    reasons = {e["reason"] for e in events if e["involvedObject"].get("name") == "migrate-pvc-move"}
    assert {"Submitted", "TargetChosen", "Copying", "Synced", "Completed"} <= reasons, reasons
    # The volume tells the same story (kubectl describe localvolume).
    on_volume = [e for e in events if e["involvedObject"].get("kind") == "LocalVolume" and
                 e["involvedObject"].get("name") == "pvc-move"]
    assert {"Copying", "Synced", "Completed"} <= {e["reason"] for e in on_volume}, on_volume
    assert all("migrate-pvc-move" in e["message"] for e in on_volume if e["reason"] != "ReplicaPlaced"), on_volume
    cfg = lv["spec"]["config"]
    assert [(e["hostname"], e["ip"]) for e in cfg["replicas"]] == [("k8s-node-2", c.node(2).ip)], cfg


def test_bad_requests_end_with_a_reason_and_delete_nothing(cluster):
    c = cluster
    source, digest = make_volume(c, "pvc-bad", "k8s-node-1", 16 * MiB)
    apply_migrate(c, "m-unknown", "pvc-nope", "k8s-node-1")
    apply_migrate(c, "m-noreplica", "pvc-bad", "k8s-node-3")
    apply_migrate(c, "m-badtarget", "pvc-bad", "k8s-node-1", ["k8s-node-9"])
    assert "does not exist" in wait_state(c, "m-unknown", "Aborted")["message"]
    assert "holds no replica" in wait_state(c, "m-noreplica", "Aborted")["message"]
    assert "invalid target node" in wait_state(c, "m-badtarget", "Aborted")["message"]

    # In use on the source (a pod there uses it): it waits, saying so.
    with_pod(c, "pvc-bad", "k8s-node-1")
    apply_migrate(c, "m-inuse", "pvc-bad", "k8s-node-1")
    c.wait(lambda: migrate_status(c, "m-inuse").get("message") == "Volume is still in use on k8s-node-1",
           what="the in-use message")
    assert migrate_status(c, "m-inuse")["state"] == "Submitted"

    reps = replicas_of(c, "pvc-bad")
    assert [r["metadata"]["name"] for r in reps] == [source]
    assert c.checksum(source) == digest


def test_no_node_with_room_waits_with_the_reason_and_deletes_nothing(cluster):
    c = cluster
    source, digest = make_volume(c, "pvc-big", "k8s-node-1", 400 * MiB)
    for node in ("k8s-node-2", "k8s-node-3"):  # fill the others
        c.wait_replica_ready(c.create_replica(node, 800 * MiB))
    c.wait(lambda: all(c.kubectl_json("get", "localstoragenode", n)["status"]["pools"][POOL_HDD]["freeCapacityBytes"]
                       < 400 * MiB for n in ("k8s-node-2", "k8s-node-3")), 30, "the other pools full")
    apply_migrate(c, "m-big", "pvc-big", "k8s-node-1")
    st = c.wait(lambda: (lambda s: s if "no node can take volume pvc-big" in (s.get("message") or "") else None)(
        migrate_status(c, "m-big")), 30, "the no-room message")
    assert st["state"] == "Submitted" and "has no room" in st["message"], st
    assert [r["metadata"]["name"] for r in replicas_of(c, "pvc-big")] == [source]
    assert c.checksum(source) == digest


@pytest.mark.parametrize("cluster", [{"config": "[Stream]\nBandwidthLimit=4M\n"}], indirect=True)
def test_abort_during_the_copy_rolls_back_and_leaves_the_source_untouched(cluster):
    c = cluster
    source, digest = make_volume(c, "pvc-abort", "k8s-node-1", 64 * MiB)
    apply_migrate(c, "m-abort", "pvc-abort", "k8s-node-1", ["k8s-node-3"])
    c.wait(lambda: (migrate_status(c, "m-abort").get("progress") or {}).get("bytesDone", 0) > 0, 60,
           "copy progress")
    assert migrate_status(c, "m-abort")["state"] == "SyncReplica"
    c.kubectl("patch", "localvolumemigrate", "m-abort", "--type=merge", "-p", '{"spec":{"abort":true}}')
    st = wait_state(c, "m-abort", "Aborted", 60)
    assert "aborted by request" in st["message"]
    c.wait(lambda: [r["metadata"]["name"] for r in replicas_of(c, "pvc-abort")] == [source], 30,
           "the target replica gone")
    assert c.replica_status(source)["state"] == "Ready"
    assert c.checksum(source) == digest
    assert "hwameistor.io/hwameid-push" not in (c.replica(source)["metadata"].get("annotations") or {})
    assert c.get(f"{LV}/pvc-abort")["spec"]["accessibility"]["nodes"] == ["k8s-node-1"]
    c.wait(lambda: not any(lv["lv_name"] == "pvc-abort" for lv in c.node(3).lvm("lvs")["lv"]), 30,
           "the target's LV removed")


@pytest.mark.parametrize("cluster", [{"config": "[Stream]\nBandwidthLimit=6M\n"}], indirect=True)
@pytest.mark.parametrize("victim", ["source", "target", "leader"])
def test_sigkill_during_the_copy_resumes_and_completes(cluster, victim):
    c = cluster
    size = 64 * MiB
    source, digest = make_volume(c, "pvc-kill", "k8s-node-1", size)
    apply_migrate(c, "m-kill", "pvc-kill", "k8s-node-1", ["k8s-node-2"])
    c.wait(lambda: (migrate_status(c, "m-kill").get("progress") or {}).get("bytesDone", 0) >= 8 * MiB, 60,
           "copy progress")
    node = {"source": c.node(1), "target": c.node(2), "leader": c.leader()}[victim]
    node.kill()
    time.sleep(1)
    node.start()
    if victim in ("source", "target"):
        # The push carries on from its checkpoint, not from the start.
        def resumed():
            s = (c.replica(source) or {}).get("metadata", {}).get("annotations", {}).get(
                "hwameistor.io/hwameid-push-status")
            return s and json.loads(s).get("resumedFrom", 0) > 0
        c.wait(resumed, 60, "a resumed push")
    st = wait_state(c, "m-kill", "Completed", 120)
    target = [r for r in replicas_of(c, "pvc-kill")]
    assert [r["spec"]["nodeName"] for r in target] == ["k8s-node-2"]
    assert c.checksum(target[0]["metadata"]["name"]) == digest
    assert st["digest"] == target[0]["metadata"]["annotations"]["hwameistor.io/hwameid-digest"]
    # Milestones of the slow copy, on the migration and on its volume.
    progress = [e["message"] for e in c.kubectl_json("get", "events", "-A")["items"]
                if e["reason"] == "Progress" and e["involvedObject"].get("name") in ("m-kill", "pvc-kill")]
    # (the source reports every 5 s: which quarters show depends on when the reports fall)
    assert any(re.fullmatch(r"(25|50|75)% copied \(\d+ of 64 MiB\) at \d+ MB/s", m) for m in progress), progress
    assert any(re.fullmatch(r"Migration m-kill: (25|50|75)% copied .*", m) for m in progress), progress


def test_migrate_all_vols_moves_the_whole_group_to_the_suggested_node(cluster):
    c = cluster
    _, d1 = make_volume(c, "pvc-grp-data", "k8s-node-1", 24 * MiB)
    _, d2 = make_volume(c, "pvc-grp-log", "k8s-node-1", 16 * MiB)
    c.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolumeGroup", "metadata": {"name": "lvg-mysql"},
        "spec": {"namespace": "default", "pods": ["mysql-0"], "accessibility": {"nodes": ["k8s-node-1"]},
                 "volumes": [{"localvolume": "pvc-grp-data", "pvc": "data-mysql-0"},
                             {"localvolume": "pvc-grp-log", "pvc": "log-mysql-0"}]}}))
    for v in ("pvc-grp-data", "pvc-grp-log"):
        c.api("PATCH", f"{LV}/{v}", {"spec": {"volumegroup": "lvg-mysql"}}, ctype="application/merge-patch+json",
              expect=200)
    apply_migrate(c, "migrate-group", "pvc-grp-data", "k8s-node-1", ["k8s-node-3"])
    st = wait_state(c, "migrate-group", "Completed", 120)
    assert st["volumes"] == ["pvc-grp-data", "pvc-grp-log"] and st["targetNode"] == "k8s-node-3", st
    for v, digest in (("pvc-grp-data", d1), ("pvc-grp-log", d2)):
        reps = replicas_of(c, v)
        assert [r["spec"]["nodeName"] for r in reps] == ["k8s-node-3"], (v, reps)
        assert c.checksum(reps[0]["metadata"]["name"]) == digest
        assert c.get(f"{LV}/{v}")["spec"]["accessibility"]["nodes"] == ["k8s-node-3"]
        c.wait(lambda: [e["hostname"] for e in c.get(f"{LV}/{v}")["spec"]["config"]["replicas"]] == ["k8s-node-3"],
               30, f"{v}'s spec.config on k8s-node-3")
    # The group follows its volumes, and its per-volume parts go once it has finished.
    c.wait(lambda: c.get(f"{HW}/localvolumegroups/lvg-mysql")["spec"]["accessibility"]["nodes"] == ["k8s-node-3"],
           30, "lvg-mysql accessible from k8s-node-3")
    c.wait(lambda: [m["metadata"]["name"] for m in c.kubectl_json("get", "localvolumemigrate")["items"]]
           == ["migrate-group"], 30, "only the group's own migration left")
    parts = {e["involvedObject"]["name"] for e in c.kubectl_json("get", "events", "-A")["items"]
             if e["reason"] == "Completed" and e["involvedObject"].get("kind") == "LocalVolumeMigrate"}
    assert {"migrate-group-0", "migrate-group-1"} <= parts, parts  # they did exist, and finished


@pytest.mark.parametrize("cluster", [{"config": "[Stream]\nBandwidthLimit=8M\n[Migration]\nMaxConcurrentPerNode=1\n"}],
                         indirect=True)
def test_copies_leaving_one_node_wait_for_a_free_slot(cluster):
    c = cluster
    _, d1 = make_volume(c, "pvc-slot-a", "k8s-node-1", 32 * MiB)
    _, d2 = make_volume(c, "pvc-slot-b", "k8s-node-1", 32 * MiB)
    apply_migrate(c, "m-slot-a", "pvc-slot-a", "k8s-node-1")
    c.wait(lambda: migrate_status(c, "m-slot-a").get("state") == "SyncReplica", 60, "the first copying")
    apply_migrate(c, "m-slot-b", "pvc-slot-b", "k8s-node-1")
    st = c.wait(lambda: (lambda s: s if "free copy slot" in (s.get("message") or "") else None)(
        migrate_status(c, "m-slot-b")), 30, "the second waiting")
    assert st["state"] == "Submitted" and "1 from k8s-node-1" in st["message"], st
    wait_state(c, "m-slot-a", "Completed", 90)
    wait_state(c, "m-slot-b", "Completed", 90)
    for v, d in (("pvc-slot-a", d1), ("pvc-slot-b", d2)):
        r = replicas_of(c, v)
        assert len(r) == 1 and r[0]["spec"]["nodeName"] != "k8s-node-1"
        assert c.checksum(r[0]["metadata"]["name"]) == d


@pytest.mark.parametrize("cluster", [{"config": "[Node]\nStorageIP=\nStorageInterface=lo\n"}], indirect=True)
def test_storage_interface_gives_the_address_the_node_advertises(cluster):
    """StorageInterface= alone (no StorageIP=): each LocalStorageNode carries that interface's
    address (here lo's, unlike the address the node reaches the API server from)."""
    c = cluster
    for n in c.nodes:
        c.wait(lambda: c.kubectl_json("get", "localstoragenode", n.name)["spec"].get("storageIP") == "127.0.0.1",
               30, f"{n.name}'s storageIP from lo")
