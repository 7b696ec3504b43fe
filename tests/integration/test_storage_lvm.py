# SPDX-License-Identifier: Apache-2.0
"""Node storage on real LVM over loop devices (activation off: this machine has no device-mapper).
Pools built from free disks of two classes, capacities as vgs reports them, replicas as LVs, data
through the extent mapping, two nodes with the same pool names, a disk that vanishes, and disks
that must never be touched."""

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import BUILDDIR, ROOT, wait

sys.path.insert(0, str(ROOT / "tests" / "standin"))
from objects import HW, lvr, node  # noqa: E402

LSN = f"{HW}/localstoragenodes"
LVR = f"{HW}/localvolumereplicas"
MiB = 1 << 20
STORAGE_PROBE = BUILDDIR / "tests" / "helpers" / "storage-probe"




class Loops:
    """Loop devices over sparse files, detached and removed at the end whatever happens."""

    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.devices = []

    def add(self, name, size=256 * MiB):
        path = self.dir / f"{name}.img"
        with open(path, "wb") as f:
            f.truncate(size)
        dev = subprocess.run(["losetup", "--find", "--show", str(path)], capture_output=True, text=True,
                             check=True).stdout.strip()
        self.devices.append(dev)
        return dev

    def detach(self, dev):
        subprocess.run(["losetup", "-d", dev], check=True)
        self.devices.remove(dev)

    def cleanup(self):
        for dev in self.devices:
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        self.devices = []


@pytest.fixture
def loops(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    ld = Loops(tmp_path)
    yield ld
    ld.cleanup()


def lvm_cli(d, *args):
    """The lvm2 command line tools with the daemon's own LVM configuration and disks."""
    env = dict(os.environ, LVM_SYSTEM_DIR=str(d.dir / "lvm"), LVM_SUPPRESS_FD_WARNINGS="1")
    r = subprocess.run(["lvm", *args, "--devices", ",".join(d.disks), "--reportformat", "json", "--units", "b",
                        "--nosuffix"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["report"][0]


def lvm_node(standin, make_daemon, name, disks, extra="", env=None):
    d = make_daemon(name, env=env)
    d.kubeconfig.write_bytes(open(standin.kubeconfig, "rb").read())
    d.write_config(f"[Storage]\nBackend=lvm\nDisks={' '.join(disks)}\nLVMActivation=no\nRefreshInterval=1s\n{extra}",
                   node=name)
    standin.api("POST", "/api/v1/nodes", node(name), expect=201)
    d.disks = disks
    return d.start()


def pools_of(standin, name):
    r = standin.request("GET", f"{LSN}/{name}")
    return r.json.get("status", {}).get("pools") if r.status == 200 else None


def test_pools_from_two_disks_of_two_classes_match_vgs(standin, make_daemon, loops):
    hdd, ssd = loops.add("hdd"), loops.add("ssd", 128 * MiB)
    d = lvm_node(standin, make_daemon, "node-a", [hdd, ssd], f"DiskClasses={ssd}=SSD\n")
    pools = wait(lambda: (lambda p: p if p and len(p) == 2 else None)(pools_of(standin, "node-a")), what="two pools")
    vgs = {vg["vg_name"]: vg for vg in lvm_cli(d, "vgs", "-o", "vg_name,vg_size,vg_free")["vg"]}
    assert set(vgs) == {"LocalStorage_PoolHDD", "LocalStorage_PoolSSD"}
    for name, pool in pools.items():
        assert pool["totalCapacityBytes"] == int(vgs[name]["vg_size"])
        assert pool["freeCapacityBytes"] == int(vgs[name]["vg_free"])
    assert pools["LocalStorage_PoolSSD"]["disks"] == [
        {"devPath": ssd, "type": "SSD", "capacityBytes": pools["LocalStorage_PoolSSD"]["disks"][0]["capacityBytes"],
         "state": "InUse"}]
    assert pools["LocalStorage_PoolHDD"]["class"] == "HDD"
    assert d.stop() == 0


def test_replica_lifecycle_shows_in_lvs_and_data_goes_through_the_extents(standin, make_daemon, loops, tmp_path):
    a, b = loops.add("a", 64 * MiB), loops.add("b", 64 * MiB)
    d = lvm_node(standin, make_daemon, "node-a", [a, b])
    wait(lambda: pools_of(standin, "node-a"), what="pools")
    spec = {"volumeName": "pvc-1", "poolName": "LocalStorage_PoolHDD", "nodeName": "node-a",
            "requiredCapacityBytes": 40 * MiB}
    standin.api("POST", LVR, dict(lvr("pvc-1-r1", "pvc-1", "node-a"), spec=spec), expect=201)
    wait(lambda: standin.api("GET", f"{LVR}/pvc-1-r1").get("status", {}).get("state") == "Ready", what="Ready")
    lvs = lvm_cli(d, "lvs", "-o", "lv_name,lv_size")["lv"]
    assert [(lv["lv_name"], int(lv["lv_size"])) for lv in lvs] == [("pvc-1", 40 * MiB)]

    # Grow beyond the first disk: the LV now spans both PVs.
    standin.api("PATCH", f"{LVR}/pvc-1-r1", {"spec": {"requiredCapacityBytes": 80 * MiB}},
                ctype="application/merge-patch+json")
    st = wait(lambda: (lambda s: s if s.get("allocatedCapacityBytes") == 80 * MiB else None)(
        standin.api("GET", f"{LVR}/pvc-1-r1").get("status", {})), what="grown")
    assert sorted(st["disks"]) == sorted([a, b])

    # Data written through the block-I/O layer reads back, and sits where the extents say.
    d.stop()
    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(80 * MiB))
    w = json.loads(subprocess.run([str(STORAGE_PROBE), str(d.config), "write", "LocalStorage_PoolHDD", "pvc-1",
                                   str(payload)], capture_output=True, text=True, check=True).stdout)
    assert w["error"] == 0 and len(w["extents"]) == 2
    back = tmp_path / "back"
    r = json.loads(subprocess.run([str(STORAGE_PROBE), str(d.config), "read", "LocalStorage_PoolHDD", "pvc-1",
                                   str(back), str(80 * MiB)], capture_output=True, text=True, check=True).stdout)
    assert r["error"] == 0
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(payload.read_bytes()).digest()
    data = payload.read_bytes()
    pos = 0
    for e in w["extents"]:
        with open(e["path"], "rb") as f:
            f.seek(e["offset"])
            assert f.read(e["length"]) == data[pos:pos + e["length"]], e
        pos += e["length"]
    assert pos == 80 * MiB

    # Delete: the LV goes, then the object.
    d.start()
    standin.api("DELETE", f"{LVR}/pvc-1-r1", expect=200)
    wait(lambda: standin.request("GET", f"{LVR}/pvc-1-r1").status == 404, what="replica gone")
    assert lvm_cli(d, "lvs", "-o", "lv_name")["lv"] == []


def test_two_nodes_with_the_same_pool_names_do_not_see_each_other(standin, make_daemon, loops):
    a, b = loops.add("a", 128 * MiB), loops.add("b", 64 * MiB)
    na = lvm_node(standin, make_daemon, "node-a", [a])
    nb = lvm_node(standin, make_daemon, "node-b", [b])
    pa = wait(lambda: pools_of(standin, "node-a"), what="node-a pools")
    pb = wait(lambda: pools_of(standin, "node-b"), what="node-b pools")
    assert list(pa) == list(pb) == ["LocalStorage_PoolHDD"]
    assert pa["LocalStorage_PoolHDD"]["disks"][0]["devPath"] == a
    assert pb["LocalStorage_PoolHDD"]["disks"][0]["devPath"] == b
    assert pa["LocalStorage_PoolHDD"]["totalCapacityBytes"] > pb["LocalStorage_PoolHDD"]["totalCapacityBytes"]
    spec = {"volumeName": "pvc-a", "poolName": "LocalStorage_PoolHDD", "nodeName": "node-a",
            "requiredCapacityBytes": 8 * MiB}
    standin.api("POST", LVR, dict(lvr("pvc-a-r1", "pvc-a", "node-a"), spec=spec), expect=201)
    wait(lambda: standin.api("GET", f"{LVR}/pvc-a-r1").get("status", {}).get("state") == "Ready", what="Ready")
    assert [lv["lv_name"] for lv in lvm_cli(na, "lvs", "-o", "lv_name")["lv"]] == ["pvc-a"]
    assert lvm_cli(nb, "lvs", "-o", "lv_name")["lv"] == []
    assert [pv["pv_name"] for pv in lvm_cli(nb, "pvs", "-o", "pv_name")["pv"]] == [b]


def test_disks_with_a_signature_are_never_written(standin, make_daemon, loops):
    used = loops.add("used", 64 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", used], check=True, capture_output=True)
    before = hashlib.sha256(open(used, "rb").read()).hexdigest()
    free = loops.add("free", 64 * MiB)
    d = lvm_node(standin, make_daemon, "node-a", [used, free])
    pools = wait(lambda: pools_of(standin, "node-a"), what="pools")
    assert [x["devPath"] for x in pools["LocalStorage_PoolHDD"]["disks"]] == [free]
    time.sleep(2)  # two more refreshes
    assert hashlib.sha256(open(used, "rb").read()).hexdigest() == before
    assert d.stop() == 0


def test_vanished_disk_takes_its_pool_and_replicas_offline_and_nothing_else(standin, make_daemon, loops):
    a, b = loops.add("a", 64 * MiB), loops.add("b", 64 * MiB)
    d = lvm_node(standin, make_daemon, "node-a", [a, b], f"DiskClasses={b}=SSD\n")
    wait(lambda: (lambda p: p if p and len(p) == 2 else None)(pools_of(standin, "node-a")), what="pools")
    for name, pool in (("on-a", "LocalStorage_PoolHDD"), ("on-b", "LocalStorage_PoolSSD")):
        spec = {"volumeName": f"pvc-{name}", "poolName": pool, "nodeName": "node-a", "requiredCapacityBytes": 8 * MiB}
        standin.api("POST", LVR, dict(lvr(f"{name}-r1", f"pvc-{name}", "node-a"), spec=spec), expect=201)
    for name in ("on-a", "on-b"):
        wait(lambda: standin.api("GET", f"{LVR}/{name}-r1").get("status", {}).get("state") == "Ready",
             what=f"{name} Ready")

    loops.detach(b)
    # Right after the disk goes, LVM may briefly show the pool without the volume (the replica then
    # says VolumeLost); either way nothing is recreated, and the next look says DiskOffline.
    wait(lambda: (lambda s: s if s.get("state") == "NotReady" and s["conditions"][0]["reason"] == "DiskOffline"
                       else None)(standin.api("GET", f"{LVR}/on-b-r1").get("status", {})),
              what="replica on the lost disk NotReady with DiskOffline")
    lsn = wait(lambda: (lambda st: st if [x["state"] for x in st["pools"]["LocalStorage_PoolSSD"]["disks"]]
                        == ["Offline"] else None)(standin.api("GET", f"{LSN}/node-a")["status"]),
               what="the disk Offline in the LocalStorageNode")
    assert lsn["conditions"][0]["type"] == "UnAvailable" and "LocalStorage_PoolSSD" in lsn["conditions"][0]["message"]
    # The other pool and its replica carry on.
    assert standin.api("GET", f"{LVR}/on-a-r1")["status"]["state"] == "Ready"
    assert [x["state"] for x in lsn["pools"]["LocalStorage_PoolHDD"]["disks"]] == ["InUse"]
    assert d.status()["state"] == "running"


def test_hung_lvm_command_never_blocks_the_loop(standin, make_daemon, loops):
    a = loops.add("a", 64 * MiB)
    d = lvm_node(standin, make_daemon, "node-a", [a], env={"WATCHDOG_USEC": "1000000"})
    wait(lambda: pools_of(standin, "node-a"), what="pools")
    # Hold the pool's LVM lock, as another LVM command would: the daemon's lvcreate waits for it.
    lock_dir = d.dir / "lvm" / "lock"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / "V_LocalStorage_PoolHDD", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        spec = {"volumeName": "pvc-h", "poolName": "LocalStorage_PoolHDD", "nodeName": "node-a",
                "requiredCapacityBytes": 8 * MiB}
        standin.api("POST", LVR, dict(lvr("pvc-h-r1", "pvc-h", "node-a"), spec=spec), expect=201)
        wait(lambda: d.status()["storage"]["busySeconds"] >= 3, what="an LVM command stuck for 3 s")
        # Meanwhile the loop answers and keeps the watchdog fed (systemd would kill it otherwise).
        t0 = time.monotonic()
        pings = 0
        while time.monotonic() - t0 < 2:
            d.notify.wait_key("WATCHDOG", timeout=1)
            pings += 1
        assert pings >= 3
        assert "busy with one command" in d.ctl("status").stdout
        assert standin.api("GET", f"{LVR}/pvc-h-r1").get("status", {}).get("state") in (None, "Creating")
        fcntl.flock(lock, fcntl.LOCK_UN)
    wait(lambda: standin.api("GET", f"{LVR}/pvc-h-r1").get("status", {}).get("state") == "Ready", what="Ready")
    assert d.stop() == 0
