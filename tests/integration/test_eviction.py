# SPDX-License-Identifier: Apache-2.0
"""Volume eviction as the HwameiStor user guide drives it, on the three-node harness with the
real kubectl: a drained node's volumes move to the other nodes with their data intact; a node
labelled hwameistor.io/eviction=disable keeps them; a pod that is evicted, or labelled
hwameistor.io/eviction=start and deleted, takes its volumes off its node; uncordoning before the
copy starts calls the move off. Volumes are in use while a pod that has not terminated uses them,
and do not move until it is gone."""

import json
import time

from harness import MiB, POOL_HDD, cluster, make_cluster  # noqa: F401
from test_migrate import HW, LV, make_volume, volume_replicas, with_pod

LVM = f"{HW}/localvolumemigrates"


def replicas_of(c, volume):
    return [r for r in c.kubectl_json("get", "localvolumereplica")["items"] if r["spec"]["volumeName"] == volume]


def moved_off(c, volume, node, digest, timeout=120):
    """Waits until volume's only replica is Ready and synced on another node, then checks its data."""
    def done():
        reps = replicas_of(c, volume)
        return reps if (len(reps) == 1 and reps[0]["spec"]["nodeName"] != node and
                        reps[0].get("status", {}).get("state") == "Ready" and reps[0]["status"].get("synced")) else None
    reps = c.wait(done, timeout, f"{volume} moved off {node}")
    assert c.checksum(reps[0]["metadata"]["name"]) == digest
    return reps[0]


def make_ha_volume(c, name, nodes, capacity):
    """An HA volume (replicaNumber 2) with a replica on each of nodes, the same data in both."""
    lv = {"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolume", "metadata": {"name": name},
          "spec": {"requiredCapacityBytes": capacity, "poolName": POOL_HDD, "replicaNumber": 2,
                   "accessibility": {"nodes": list(nodes)}, "pvcNamespace": "default", "pvcName": name}}
    c.kubectl("create", "-f", "-", input=json.dumps(lv))
    names = volume_replicas(c, name, list(nodes))
    for n in names:
        c.write_random(n, seed=42)
    return names, c.checksum(names[0])


def test_the_guide_drain_moves_every_volume_off_the_node(cluster):
    c = cluster
    _, d1 = make_volume(c, "pvc-drain-a", "k8s-node-1", 32 * MiB)
    _, d2 = make_volume(c, "pvc-drain-b", "k8s-node-1", 16 * MiB)
    (ha1, ha2), dha = make_ha_volume(c, "pvc-drain-ha", ["k8s-node-1", "k8s-node-2"], 16 * MiB)
    with_pod(c, "pvc-drain-a", "k8s-node-1")
    # The guide, verbatim.
    c.kubectl("drain", "k8s-node-1", "--ignore-daemonsets=true", timeout=120)
    a = moved_off(c, "pvc-drain-a", "k8s-node-1", d1)
    b = moved_off(c, "pvc-drain-b", "k8s-node-1", d2)
    assert {a["spec"]["nodeName"], b["spec"]["nodeName"]} <= {"k8s-node-2", "k8s-node-3"}
    # The HA volume: the replica on the drained node moved to the one node without a replica; the
    # other replica kept serving, untouched.
    def ha_moved():
        reps = replicas_of(c, "pvc-drain-ha")
        nodes = sorted(r["spec"]["nodeName"] for r in reps)
        return reps if nodes == ["k8s-node-2", "k8s-node-3"] and all(
            r.get("status", {}).get("state") == "Ready" and r["status"].get("synced") for r in reps) else None
    reps = c.wait(ha_moved, 120, "the HA volume's replica moved to node-3")
    assert ha2 in [r["metadata"]["name"] for r in reps]
    for r in reps:
        assert c.checksum(r["metadata"]["name"]) == dha
    assert sorted(c.get(f"{LV}/pvc-drain-ha")["spec"]["accessibility"]["nodes"]) == ["k8s-node-2", "k8s-node-3"]

    lsn = c.wait(lambda: (lambda o: o if all(not p.get("volumes") for p in o["status"]["pools"].values()) else None)(
        c.kubectl_json("get", "localstoragenode", "k8s-node-1")), 30, "node-1's pools empty")
    assert lsn["status"]["pools"][POOL_HDD]["volumes"] in ([], None)
    out = c.kubectl("get", "localvolumereplica").stdout.splitlines()
    assert out[0].split() == ["NAME", "CAPACITY", "NODE", "STATE", "SYNCED", "DEVICE", "AGE"]
    rows = [line.split() for line in out[1:]]
    assert all(r[2] != "k8s-node-1" and r[3] == "Ready" and r[4] == "true" for r in rows), out
    assert not [lv for lv in c.node(1).lvm("lvs")["lv"] if lv["lv_name"].startswith("pvc-drain")]
    # The evictor's migrations are gone once completed, and their finalizer with them.
    c.wait(lambda: not [m for m in c.kubectl_json("get", "localvolumemigrate")["items"]
                        if m["metadata"]["name"].startswith("evictor-")], 30, "evictor migrations removed")


def test_eviction_disable_label_keeps_the_volumes_across_a_drain(cluster):
    c = cluster
    source, digest = make_volume(c, "pvc-stay", "k8s-node-1", 16 * MiB)
    c.kubectl("label", "node", "k8s-node-1", "hwameistor.io/eviction=disable")
    c.kubectl("drain", "k8s-node-1", "--ignore-daemonsets=true", timeout=120)
    time.sleep(5)  # several evictor passes (it looks at every change and every 10 s)
    assert c.kubectl_json("get", "localvolumemigrate")["items"] == []
    assert [r["metadata"]["name"] for r in replicas_of(c, "pvc-stay")] == [source]
    assert c.checksum(source) == digest


def test_an_evicted_pod_takes_its_volume_off_its_node(cluster):
    c = cluster
    _, digest = make_volume(c, "pvc-evicted", "k8s-node-2", 16 * MiB)
    pod = with_pod(c, "pvc-evicted", "k8s-node-2")
    # What the kubelet writes when it evicts a pod under node pressure.
    c.api("PATCH", f"/api/v1/namespaces/default/pods/{pod}/status",
          {"status": {"phase": "Failed", "reason": "Evicted",
                      "message": "The node was low on resource: ephemeral-storage."}},
          ctype="application/merge-patch+json", expect=200)
    moved_off(c, "pvc-evicted", "k8s-node-2", digest)


def test_a_pod_labelled_eviction_start_and_deleted_takes_its_volume_along(cluster):
    c = cluster
    _, digest = make_volume(c, "pvc-mysql", "k8s-node-3", 16 * MiB)
    with_pod(c, "pvc-mysql", "k8s-node-3", pod="mysql-pod")
    c.kubectl("label", "pod", "mysql-pod", "hwameistor.io/eviction=start")
    c.wait(lambda: c.get(f"{LVM}/evictor-pvc-mysql"), 30, "the evictor's migration")
    # In use until the pod is gone.
    c.wait(lambda: (c.get(f"{LVM}/evictor-pvc-mysql") or {}).get("status", {}).get("message") ==
           "Volume is still in use on k8s-node-3", 30, "the in-use message")
    c.kubectl("delete", "pod", "mysql-pod")
    moved_off(c, "pvc-mysql", "k8s-node-3", digest)


def test_uncordon_before_the_copy_starts_calls_the_move_off(cluster):
    c = cluster
    source, digest = make_volume(c, "pvc-cordon", "k8s-node-1", 16 * MiB)
    with_pod(c, "pvc-cordon", "k8s-node-1")  # in use: the migration waits in Submitted
    c.kubectl("cordon", "k8s-node-1")
    c.wait(lambda: (c.get(f"{LVM}/evictor-pvc-cordon") or {}).get("status", {}).get("state") == "Submitted", 30,
           "the evictor's migration waiting")
    c.kubectl("uncordon", "k8s-node-1")
    c.wait(lambda: c.get(f"{LVM}/evictor-pvc-cordon") is None, 30, "the migration called off and removed")
    assert [r["metadata"]["name"] for r in replicas_of(c, "pvc-cordon")] == [source]
    assert c.checksum(source) == digest
    events = [e for e in c.kubectl_json("get", "events", "-A")["items"]
              if e["involvedObject"].get("name") == "evictor-pvc-cordon"]
    assert any(e["reason"] == "Aborted" for e in events), json.dumps(events)[:2000]


def test_a_pods_volumes_become_a_group_and_a_drain_moves_them_together(cluster):
    c = cluster
    _, d1 = make_volume(c, "pvc-pair-data", "k8s-node-1", 16 * MiB)
    _, d2 = make_volume(c, "pvc-pair-log", "k8s-node-1", 16 * MiB)
    for v in ("pvc-pair-data", "pvc-pair-log"):
        c.api("POST", "/api/v1/persistentvolumes", {
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": v},
            "spec": {"capacity": {"storage": "16Mi"}, "accessModes": ["ReadWriteOnce"],
                     "csi": {"driver": "lvm.hwameistor.io", "volumeHandle": v}}}, expect=201)
        c.api("POST", "/api/v1/namespaces/default/persistentvolumeclaims", {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": f"c-{v}", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}},
                     "volumeName": v}}, expect=201)
    pod = c.api("POST", "/api/v1/namespaces/default/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db-0", "namespace": "default",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
                                          "uid": "5d8c2f0e-6a1b-4c3d-9e7f-0000000000db", "controller": True}]},
        "spec": {"nodeName": "k8s-node-1", "containers": [{"name": "db", "image": "db:1"}],
                 "volumes": [{"name": v, "persistentVolumeClaim": {"claimName": f"c-{v}"}}
                             for v in ("pvc-pair-data", "pvc-pair-log")]}}, expect=201)
    group = f"lvg-{pod['metadata']['uid']}"
    lvg = c.wait(lambda: c.get(f"{HW}/localvolumegroups/{group}"), 30, "the pod's group")
    assert sorted(v["localvolume"] for v in lvg["spec"]["volumes"]) == ["pvc-pair-data", "pvc-pair-log"]
    assert lvg["spec"]["pods"] == ["db-0"]
    c.wait(lambda: all((c.get(f"{LV}/{v}") or {}).get("spec", {}).get("volumegroup") == group
                       for v in ("pvc-pair-data", "pvc-pair-log")), 30, "both volumes in the group")
    c.kubectl("drain", "k8s-node-1", "--ignore-daemonsets=true", "--force", timeout=120)
    a = moved_off(c, "pvc-pair-data", "k8s-node-1", d1)
    b = moved_off(c, "pvc-pair-log", "k8s-node-1", d2)
    assert a["spec"]["nodeName"] == b["spec"]["nodeName"]
