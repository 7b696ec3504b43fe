# SPDX-License-Identifier: Apache-2.0
"""The volume controller: a LocalVolume gets its replicas on Ready nodes with room (HA: two, on
two nodes), its status follows them, and deleting it removes the replicas and their logical
volumes before the object goes."""

import json

from harness import MiB, POOL_HDD, cluster, make_cluster  # noqa: F401
from test_migrate import LV, volume_replicas


def test_an_ha_volume_gets_two_replicas_and_deleting_it_removes_them(cluster):
    c = cluster
    c.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolume", "metadata": {"name": "pvc-ha"},
        "spec": {"requiredCapacityBytes": 24 * MiB, "poolName": POOL_HDD, "replicaNumber": 2,
                 "pvcNamespace": "default", "pvcName": "data"}}))

    def two_ready():
        reps = [r for r in c.kubectl_json("get", "localvolumereplica")["items"] if r["spec"]["volumeName"] == "pvc-ha"]
        return reps if len(reps) == 2 and all(r.get("status", {}).get("state") == "Ready" for r in reps) else None
    reps = c.wait(two_ready, 60, "two replicas")
    nodes = sorted(r["spec"]["nodeName"] for r in reps)
    assert len(set(nodes)) == 2
    assert volume_replicas(c, "pvc-ha", nodes)
    lv = c.get(f"{LV}/pvc-ha")
    assert sorted(lv["spec"]["accessibility"]["nodes"]) == nodes
    assert lv["status"]["state"] == "Ready" and lv["status"]["allocatedCapacityBytes"] == 24 * MiB
    assert sorted(lv["status"]["replicas"]) == sorted(r["metadata"]["name"] for r in reps)
    assert "hwameistor.io/hwameid-volume-protect" in lv["metadata"]["finalizers"]
    out = c.kubectl("get", "localvolume", "pvc-ha").stdout.splitlines()
    assert out[1].split()[:3] == ["pvc-ha", POOL_HDD, "2"], out
    # spec.config is HwameiStor's VolumeConfig, kept from the replicas: ids 1 and 2, each node's
    # storage IP, one primary, no DRBD resource.
    cfg = c.wait(lambda: (lambda x: x if x and x.get("initialized") else None)(
        c.get(f"{LV}/pvc-ha")["spec"].get("config")), 30, "pvc-ha's spec.config")
    assert sorted(e["hostname"] for e in cfg["replicas"]) == nodes, cfg
    assert sorted(e["id"] for e in cfg["replicas"]) == [1, 2], cfg
    assert {e["hostname"]: e["ip"] for e in cfg["replicas"]} == {n: c.node(int(n[-1])).ip for n in nodes}
    assert sum(e["primary"] for e in cfg["replicas"]) == 1, cfg
    assert cfg["volumeName"] == "pvc-ha" and cfg["requiredCapacityBytes"] == 24 * MiB, cfg
    assert cfg["resourceID"] == -1 and cfg["readyToInitialize"] is True and cfg["version"] >= 1, cfg
    out = c.kubectl("get", "localvolume", "pvc-ha", "-o", "wide").stdout.splitlines()
    assert "-1" in out[1].split(), out  # the guide's RESOURCE column

    c.kubectl("delete", "localvolume", "pvc-ha", timeout=120)
    assert c.get(f"{LV}/pvc-ha") is None
    assert not [r for r in c.kubectl_json("get", "localvolumereplica")["items"] if r["spec"]["volumeName"] == "pvc-ha"]
    for n in c.nodes:
        assert not [lv for lv in n.lvm("lvs")["lv"] if lv["lv_name"] == "pvc-ha"]


def test_a_volume_no_node_can_hold_waits_for_room(cluster):
    c = cluster
    c.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolume", "metadata": {"name": "pvc-huge"},
        "spec": {"requiredCapacityBytes": 4096 * MiB, "poolName": POOL_HDD, "replicaNumber": 1}}))
    c.wait(lambda: "pvc-huge" in "".join(n.log() for n in c.nodes if n.leading()), 30, "the leader's warning")
    assert not [r for r in c.kubectl_json("get", "localvolumereplica")["items"] if r["spec"]["volumeName"] == "pvc-huge"]
