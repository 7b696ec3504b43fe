# SPDX-License-Identifier: Apache-2.0
"""Node storage on the file backend, end to end against the stand-in: the LocalStorageNode in the
HwameiStor guide's shape, replicas created, grown, refused and deleted, and an idle node that writes
nothing."""

import os
import sys
import time

import pytest

from conftest import ROOT, wait

sys.path.insert(0, str(ROOT / "tests" / "standin"))
from objects import HW, lvr, node  # noqa: E402

LSN = f"{HW}/localstoragenodes"
LVR = f"{HW}/localvolumereplicas"
MiB = 1 << 20
GiB = 1 << 30




@pytest.fixture
def storage_node(standin, make_daemon, tmp_path):
    d = make_daemon()
    d.kubeconfig.write_bytes(open(standin.kubeconfig, "rb").read())
    pools = d.dir / "pools"  # the test drop-in puts FileDirectory there
    d.write_config("[Storage]\nBackend=file\nFilePoolCapacity=1G\nFilePoolClasses=HDD SSD\nRefreshInterval=1s\n")
    standin.api("POST", "/api/v1/nodes", node("test-node", labels={"topology.kubernetes.io/zone": "zone-a"}), expect=201)
    d.start()
    d.pools = pools
    return d


def lsn_status(standin):
    r = standin.request("GET", f"{LSN}/test-node")
    return r.json if r.status == 200 else None


def test_localstoragenode_has_the_guides_shape(standin, storage_node):
    obj = wait(lambda: (lambda o: o if o and o.get("status", {}).get("state") == "Ready" else None)(lsn_status(standin)),
               what="LocalStorageNode Ready")
    assert obj["spec"] == {"hostname": "test-node", "storageIP": "127.0.0.1",
                           "topogoly": {"zone": "zone-a", "region": "default"}}
    pools = obj["status"]["pools"]
    assert set(pools) == {"LocalStorage_PoolHDD", "LocalStorage_PoolSSD"}
    hdd = pools["LocalStorage_PoolHDD"]
    assert hdd == {
        "name": "LocalStorage_PoolHDD", "class": "HDD", "type": "REGULAR",
        "totalCapacityBytes": GiB, "usedCapacityBytes": 0, "freeCapacityBytes": GiB,
        "volumeCapacityBytesLimit": GiB, "totalVolumeCount": 1000, "usedVolumeCount": 0, "freeVolumeCount": 1000,
        "disks": [{"devPath": str(storage_node.pools / "LocalStorage_PoolHDD"), "type": "HDD",
                   "capacityBytes": GiB, "state": "InUse"}],
        "volumes": [],
    }
    out = standin.kubectl("get", "localstoragenode", "test-node").stdout.splitlines()
    assert out[0].split() == ["NAME", "IP", "STATUS", "AGE"]
    assert out[1].split()[:3] == ["test-node", "127.0.0.1", "Ready"]


def test_idle_node_does_not_rewrite_its_localstoragenode(standin, storage_node):
    wait(lambda: (lsn_status(standin) or {}).get("status"), what="LocalStorageNode status")
    time.sleep(1)  # let the first writes settle
    standin.admin("DELETE", "/requests")
    time.sleep(3)  # three storage refreshes (RefreshInterval=1s) happen meanwhile
    writes = [e for e in standin.requests_log()
              if e["method"] in ("PUT", "PATCH", "POST") and "localstoragenodes" in e["path"]]
    assert writes == []


def replica_status(standin, name):
    r = standin.request("GET", f"{LVR}/{name}")
    return r.json.get("status", {}) if r.status == 200 else None


def test_replica_is_created_grown_refused_shrink_and_deleted(standin, storage_node):
    wait(lambda: lsn_status(standin), what="LocalStorageNode")
    standin.api("POST", LVR, dict(lvr("pvc-a-x1", "pvc-a", "test-node"),
                                  spec={"volumeName": "pvc-a", "poolName": "LocalStorage_PoolHDD",
                                        "nodeName": "test-node", "requiredCapacityBytes": 64 * MiB}), expect=201)
    st = wait(lambda: (lambda s: s if s and s.get("state") == "Ready" else None)(replica_status(standin, "pvc-a-x1")),
              what="replica Ready")
    assert st["storagePath"] == st["devPath"] == "/dev/LocalStorage_PoolHDD/pvc-a"
    assert st["allocatedCapacityBytes"] == 64 * MiB and st["synced"] is True
    data = storage_node.pools / "LocalStorage_PoolHDD" / "pvc-a"
    assert data.stat().st_size == 64 * MiB
    obj = standin.api("GET", f"{LVR}/pvc-a-x1")
    assert "hwameistor.io/hwameid-volume" in obj["metadata"]["finalizers"]
    wait(lambda: (lsn_status(standin) or {}).get("status", {}).get("pools", {}).get("LocalStorage_PoolHDD", {})
         .get("volumes") == ["pvc-a"], what="the volume in the LocalStorageNode")
    hdd = lsn_status(standin)["status"]["pools"]["LocalStorage_PoolHDD"]
    assert hdd["usedCapacityBytes"] == 64 * MiB and hdd["usedVolumeCount"] == 1

    out = standin.kubectl("get", "localvolumereplica").stdout.splitlines()
    assert out[0].split() == ["NAME", "CAPACITY", "NODE", "STATE", "SYNCED", "DEVICE", "AGE"]
    assert out[1].split()[:6] == ["pvc-a-x1", str(64 * MiB), "test-node", "Ready", "true",
                                  "/dev/LocalStorage_PoolHDD/pvc-a"]

    # Grow.
    standin.api("PATCH", f"{LVR}/pvc-a-x1", {"spec": {"requiredCapacityBytes": 128 * MiB}},
                ctype="application/merge-patch+json", expect=200)
    wait(lambda: replica_status(standin, "pvc-a-x1")["allocatedCapacityBytes"] == 128 * MiB, what="grown")
    assert data.stat().st_size == 128 * MiB

    # Shrink: refused, data untouched, the condition says why.
    standin.api("PATCH", f"{LVR}/pvc-a-x1", {"spec": {"requiredCapacityBytes": 32 * MiB}},
                ctype="application/merge-patch+json", expect=200)
    cond = wait(lambda: next((c for c in replica_status(standin, "pvc-a-x1").get("conditions", [])
                              if c["reason"] == "ShrinkRefused"), None), what="ShrinkRefused")
    assert "shrinking" in cond["message"]
    assert data.stat().st_size == 128 * MiB

    # Delete: the volume goes first, then the object.
    standin.api("DELETE", f"{LVR}/pvc-a-x1", expect=200)
    wait(lambda: standin.request("GET", f"{LVR}/pvc-a-x1").status == 404, what="replica gone")
    assert not data.exists()
    wait(lambda: lsn_status(standin)["status"]["pools"]["LocalStorage_PoolHDD"]["volumes"] == [],
         what="volume gone from the LocalStorageNode")


def test_spec_delete_removes_the_volume_then_the_object(standin, storage_node):
    wait(lambda: lsn_status(standin), what="LocalStorageNode")
    standin.api("POST", LVR, dict(lvr("pvc-d-x1", "pvc-d", "test-node"),
                                  spec={"volumeName": "pvc-d", "poolName": "LocalStorage_PoolSSD",
                                        "nodeName": "test-node", "requiredCapacityBytes": 8 * MiB}), expect=201)
    wait(lambda: (replica_status(standin, "pvc-d-x1") or {}).get("state") == "Ready", what="Ready")
    data = storage_node.pools / "LocalStorage_PoolSSD" / "pvc-d"
    assert data.exists()
    standin.api("PATCH", f"{LVR}/pvc-d-x1", {"spec": {"delete": True}}, ctype="application/merge-patch+json")
    wait(lambda: standin.request("GET", f"{LVR}/pvc-d-x1").status == 404, what="replica gone")
    assert not data.exists()


@pytest.mark.parametrize("spec,reason,message", [
    ({"volumeName": "../../etc/passwd", "poolName": "LocalStorage_PoolHDD"}, "InvalidSpec", "not a valid volume name"),
    ({"volumeName": "pvc-b", "poolName": "LocalStorage_PoolHDD/../x"}, "InvalidSpec", "not a pool name"),
    ({"volumeName": "pvc-c", "poolName": "LocalStorage_PoolNVMe"}, "PoolNotFound", "does not exist on node test-node"),
    ({"volumeName": "pvc-e", "poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 2 * GiB},
     "InsufficientCapacity", "free"),
])
def test_replicas_that_cannot_be_honoured_get_a_condition_and_touch_nothing(standin, storage_node, spec, reason,
                                                                              message):
    wait(lambda: lsn_status(standin), what="LocalStorageNode")
    name = "bad-" + reason.lower()
    full = dict({"nodeName": "test-node", "requiredCapacityBytes": 16 * MiB}, **spec)
    standin.api("POST", LVR, dict(lvr(name, "x", "test-node"), spec=full), expect=201)
    cond = wait(lambda: next((c for c in (replica_status(standin, name) or {}).get("conditions", [])
                              if c["type"] == "Ready"), None), what="a Ready condition")
    st = replica_status(standin, name)
    assert st["state"] == "NotReady" and cond["status"] == "False" and cond["reason"] == reason, st
    assert message in cond["message"]
    for pool in ("LocalStorage_PoolHDD", "LocalStorage_PoolSSD"):
        assert os.listdir(storage_node.pools / pool) == []
    # It can still be deleted.
    standin.api("DELETE", f"{LVR}/{name}", expect=200)
    wait(lambda: standin.request("GET", f"{LVR}/{name}").status == 404, what="deleted")


def test_replicas_of_other_nodes_are_left_alone(standin, storage_node):
    wait(lambda: lsn_status(standin), what="LocalStorageNode")
    standin.api("POST", LVR, dict(lvr("pvc-o-x1", "pvc-o", "other-node"),
                                  spec={"volumeName": "pvc-o", "poolName": "LocalStorage_PoolHDD",
                                        "nodeName": "other-node", "requiredCapacityBytes": 8 * MiB}), expect=201)
    time.sleep(1.5)
    assert replica_status(standin, "pvc-o-x1") == {}
    assert os.listdir(storage_node.pools / "LocalStorage_PoolHDD") == []


def test_replica_below_4mib_is_refused_by_the_api(standin, storage_node):
    # The CRD's schema (minimum 4194304) stops it before any node sees it.
    r = standin.request("POST", LVR, dict(lvr("tiny-r1", "tiny", "test-node"),
                                          spec={"volumeName": "tiny", "poolName": "LocalStorage_PoolHDD",
                                                "nodeName": "test-node", "requiredCapacityBytes": 1 * MiB}))
    assert r.status == 422 and "requiredCapacityBytes" in r.json["message"]


def test_deleted_localstoragenode_is_created_again(standin, storage_node):
    first = wait(lambda: lsn_status(standin), what="LocalStorageNode")
    standin.api("DELETE", f"{LSN}/test-node", expect=200)
    again = wait(lambda: (lambda o: o if o and o["metadata"]["uid"] != first["metadata"]["uid"] and
                          o.get("status", {}).get("pools") else None)(lsn_status(standin)),
                 what="a new LocalStorageNode with its status")
    assert set(again["status"]["pools"]) == {"LocalStorage_PoolHDD", "LocalStorage_PoolSSD"}


def test_a_failed_refresh_says_why(make_daemon):
    # The reason used to come out empty (the message was formatted over itself).
    d = make_daemon()
    (d.dir / "afile").write_text("")
    (d.dir / "hwameid.conf.d" / "50-broken.conf").write_text(
        f"[Storage]\nBackend=file\nFilePoolClasses=HDD\nFileDirectory={d.dir}/afile/pools\n")
    d.start()
    wait(lambda: "Refreshing the pools failed: " in d.log(), what="the warning")
    line = next(l for l in d.log().splitlines() if "Refreshing the pools failed: " in l)
    assert "Not a directory" in line, line
    assert d.stop() == 0
