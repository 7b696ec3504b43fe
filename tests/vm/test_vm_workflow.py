# SPDX-License-Identifier: Apache-2.0
"""The eviction workflow on real nodes: three Debian guests with hwameid installed from its .deb
under systemd, pools on virtual disks, replicas as active LVs under /dev/<pool>/<volume>, the block
stream between the guests over their own network. What only a real kernel allows is proven here:
LV activation, an LV that is open (mounted) counting as in use, a reboot, systemctl stop and start
during a copy, and a package upgrade.

The tests share one cluster (tests/vm/conftest.py) and run in file order; each leaves every node
uncordoned and schedulable. Data is written and checksummed inside the guests, on the LV devices."""

import json
import re
import subprocess
import time

from conftest import POOL_HDD
from objects import HW

MiB = 1 << 20
LV = f"{HW}/localvolumes"
LVM = f"{HW}/localvolumemigrates"
LVR = f"{HW}/localvolumereplicas"
PUSH_STATUS = "hwameistor.io/hwameid-push-status"


def dev(volume):
    return f"/dev/{POOL_HDD}/{volume}"


def replicas_of(vc, volume):
    return [r for r in vc.kubectl_json("get", "localvolumereplica")["items"] if r["spec"]["volumeName"] == volume]


def make_volume(vc, name, node, size_mib):
    """A LocalVolume placed on node (its accessibility); waits until its replica is Ready there and
    its LV is active with a device node. Returns the replica's name."""
    vc.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolume", "metadata": {"name": name},
        "spec": {"requiredCapacityBytes": size_mib * MiB, "poolName": POOL_HDD, "replicaNumber": 1,
                 "accessibility": {"nodes": [node]}, "pvcNamespace": "default", "pvcName": name}}))

    def ready():
        reps = replicas_of(vc, name)
        return reps if len(reps) == 1 and reps[0]["spec"]["nodeName"] == node and \
            (reps[0].get("status") or {}).get("state") == "Ready" else None
    (rep,) = vc.wait(ready, 120, f"{name}'s replica Ready on {node}")
    vc.guest(node).run(["test", "-b", dev(name)])
    return rep["metadata"]["name"]


def fill(g, volume, mib, skip_mib=0):
    """Random data into the volume's device inside the guest (mib MiB at skip_mib MiB, the rest
    untouched); returns the device's sha256 as the guest computes it."""
    g.run(f"dd if=/dev/urandom of={dev(volume)} bs=1M count={mib} seek={skip_mib} oflag=direct "
          f"conv=fsync status=none", timeout=300)
    return sha256(g, volume)


def sha256(g, volume):
    return g.run(["sha256sum", dev(volume)], timeout=300).stdout.split()[0]


def lv_attr(g, volume):
    """lvs' view in the guest: (active, device open) of the volume's LV, or None."""
    out = g.run(["lvs", "--reportformat", "json", "-o", "lv_name,lv_active,lv_device_open", POOL_HDD],
                check=False).stdout
    for lv in (json.loads(out or "{}").get("report") or [{}])[0].get("lv", []):
        if lv["lv_name"] == volume:
            return lv["lv_active"], lv["lv_device_open"]
    return None


def migrate_state(vc, name):
    return ((vc.get(f"{LVM}/{name}") or {}).get("status") or {})


def moved(vc, volume, away_from, timeout=600):
    """Waits until the volume's only replica is Ready and synced on another node; returns it."""
    def done():
        reps = replicas_of(vc, volume)
        if len(reps) != 1 or reps[0]["spec"]["nodeName"] == away_from:
            return None
        st = reps[0].get("status") or {}
        return reps[0] if st.get("state") == "Ready" and st.get("synced") is True else None
    return vc.wait(done, timeout, f"{volume} moved off {away_from}", interval=2)


def repack_deb(deb, workdir):
    """The same package with a higher version (VERSION+vmtest1), as the next release would be:
    {"path": the .deb, "version": its version}."""
    tree = workdir / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    text = control.read_text()
    version = re.search(r"^Version: (\S+)$", text, re.M).group(1) + "+vmtest1"
    control.write_text(re.sub(r"^Version: \S+$", f"Version: {version}", text, flags=re.M))
    out = workdir / f"hwameid_{version}_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(out)], check=True,
                   capture_output=True)
    return {"path": out, "version": version}


def test_replicas_are_active_lvs_with_device_nodes(vmcluster):
    vc = vmcluster
    vc.wait_pools()
    make_volume(vc, "pvc-vm-lv", "k8s-node-2", 16)
    g = vc.guest(2)
    assert lv_attr(g, "pvc-vm-lv")[0] == "active"
    # udev made the node and the /dev/mapper name: a real device-mapper device.
    out = g.run(f"readlink -f {dev('pvc-vm-lv')}; ls -l /dev/mapper/ | grep -c pvc--vm--lv").stdout.split()
    assert re.fullmatch(r"/dev/dm-\d+", out[0]) and out[1] == "1", out
    # The pool is a volume group over the two virtual disks.
    pvs = json.loads(g.run(["pvs", "--reportformat", "json", "-o", "pv_name,vg_name"]).stdout)
    assert {p["pv_name"]: p["vg_name"] for p in pvs["report"][0]["pv"]} == {"/dev/vdb": POOL_HDD,
                                                                           "/dev/vdc": POOL_HDD}
    vc.kubectl("delete", "localvolume", "pvc-vm-lv", timeout=180)
    vc.wait(lambda: lv_attr(g, "pvc-vm-lv") is None, 120, "the LV removed")
    g.run(f"! test -e {dev('pvc-vm-lv')}")


def test_a_mounted_volume_is_in_use_and_moves_only_once_unmounted(vmcluster):
    """The node reports an LV that is open (here: mounted) as in use; the leader records the node in
    publishedNode, and a migration waits until it is unmounted, then moves the filesystem intact."""
    vc = vmcluster
    src, dst = vc.guest(1), vc.guest(3)
    make_volume(vc, "pvc-vm-fs", "k8s-node-1", 64)
    src.run(f"mkfs.ext4 -q {dev('pvc-vm-fs')} && mkdir -p /mnt/fs && mount {dev('pvc-vm-fs')} /mnt/fs && "
            f"head -c 8M /dev/urandom >/mnt/fs/data && sync", timeout=300)
    want = src.run("sha256sum /mnt/fs/data").stdout.split()[0]
    vc.wait(lambda: (vc.get(f"{LV}/pvc-vm-fs").get("status") or {}).get("publishedNode") == "k8s-node-1", 120,
            "pvc-vm-fs in use on k8s-node-1 (its LV is open)")
    assert lv_attr(src, "pvc-vm-fs")[1] == "open"
    vc.kubectl("apply", "-f", "-", input=(
        "apiVersion: hwameistor.io/v1alpha1\nkind: LocalVolumeMigrate\nmetadata:\n  name: m-vm-fs\n"
        "spec:\n  sourceNode: k8s-node-1\n  targetNodesSuggested: [k8s-node-3]\n  volumeName: pvc-vm-fs\n"
        "  migrateAllVols: true\n"))
    st = vc.wait(lambda: (lambda s: s if "in use" in (s.get("message") or "") else None)(
        migrate_state(vc, "m-vm-fs")), 120, "the migration waiting for the volume")
    assert st["message"] == "Volume is still in use on k8s-node-1", st
    time.sleep(10)
    assert migrate_state(vc, "m-vm-fs").get("state") == "Submitted"
    assert [r["spec"]["nodeName"] for r in replicas_of(vc, "pvc-vm-fs")] == ["k8s-node-1"]

    src.run("umount /mnt/fs")
    vc.wait(lambda: migrate_state(vc, "m-vm-fs").get("state") == "Completed", 600, "m-vm-fs Completed",
            interval=2)
    rep = moved(vc, "pvc-vm-fs", "k8s-node-1")
    assert rep["spec"]["nodeName"] == "k8s-node-3"
    dst.run(f"mkdir -p /mnt/fs && mount -o ro {dev('pvc-vm-fs')} /mnt/fs")
    try:
        assert dst.run("sha256sum /mnt/fs/data").stdout.split()[0] == want
    finally:
        dst.run("umount /mnt/fs")
    vc.wait(lambda: lv_attr(src, "pvc-vm-fs") is None, 120, "the source LV removed")
    vc.kubectl("delete", "localvolumemigrate", "m-vm-fs")


def test_drain_moves_the_volumes_verified_inside_the_receiving_guests(vmcluster):
    vc = vmcluster
    g1 = vc.guest(1)
    make_volume(vc, "pvc-vm-a", "k8s-node-1", 64)
    make_volume(vc, "pvc-vm-b", "k8s-node-1", 64)
    want = {"pvc-vm-a": fill(g1, "pvc-vm-a", 64),
            "pvc-vm-b": fill(g1, "pvc-vm-b", 8, skip_mib=40)}  # mostly as created
    try:
        vc.kubectl("drain", "k8s-node-1", "--ignore-daemonsets=true", timeout=120)
        for volume, digest in want.items():
            rep = moved(vc, volume, "k8s-node-1")
            g = vc.guest(rep["spec"]["nodeName"])
            assert lv_attr(g, volume)[0] == "active"
            assert sha256(g, volume) == digest, f"{volume} differs on {g.name}"
            vc.wait(lambda: lv_attr(g1, volume) is None, 120, f"{volume}'s source LV removed")
        pools = vc.pools("k8s-node-1")[POOL_HDD]
        assert not pools.get("volumes"), pools
    finally:
        vc.kubectl("uncordon", "k8s-node-1")


def test_systemctl_stop_during_a_copy_ends_in_time_and_the_copy_resumes_after_start(vmcluster):
    vc = vmcluster
    src, dst = vc.guest(2), vc.guest(1)
    conf = src.get("/etc/hwameid/hwameid.conf").decode()
    src.put("/etc/hwameid/hwameid.conf", conf + "[Stream]\nBandwidthLimit=3M\n", 0o644)
    src.run(["systemctl", "restart", "hwameid"], timeout=180)
    try:
        make_volume(vc, "pvc-vm-slow", "k8s-node-2", 96)
        digest = fill(src, "pvc-vm-slow", 96)
        vc.kubectl("apply", "-f", "-", input=(
            "apiVersion: hwameistor.io/v1alpha1\nkind: LocalVolumeMigrate\nmetadata:\n  name: m-vm-slow\n"
            "spec:\n  sourceNode: k8s-node-2\n  targetNodesSuggested: [k8s-node-1]\n  volumeName: pvc-vm-slow\n"
            "  migrateAllVols: true\n"))
        vc.wait(lambda: ((migrate_state(vc, "m-vm-slow").get("progress") or {}).get("bytesDone") or 0) >= 16 * MiB,
                300, "16 MiB copied", interval=1)
        out = src.run("t0=$(date +%s.%N); systemctl stop hwameid; t1=$(date +%s.%N); "
                      "echo \"$t0 $t1\"; systemctl show hwameid -p Result -p ExecMainStatus", timeout=120).stdout
        t0, t1 = map(float, out.split()[:2])
        stop_timeout = src.run(["systemctl", "show", "hwameid", "-p", "TimeoutStopUSec", "--value"]).stdout.strip()
        print(f"systemctl stop during a copy: {t1 - t0:.1f} s (TimeoutStopSec={stop_timeout})")
        assert t1 - t0 < 45, out  # TimeoutStopSec=45s in the unit
        assert "Result=success" in out, out  # ended by itself, not killed at the timeout
        src.run(["systemctl", "start", "hwameid"], timeout=180)

        def resumed():
            reps = [r for r in replicas_of(vc, "pvc-vm-slow") if r["spec"]["nodeName"] == "k8s-node-2"]
            s = reps and (reps[0]["metadata"].get("annotations") or {}).get(PUSH_STATUS)
            return s and json.loads(s).get("resumedFrom", 0) > 0 and json.loads(s)
        ps = vc.wait(resumed, 180, "the push resumed from its checkpoint", interval=1)
        assert ps["resumedFrom"] >= 8 * MiB, ps
        vc.wait(lambda: migrate_state(vc, "m-vm-slow").get("state") == "Completed", 600, "m-vm-slow Completed",
                interval=2)
        rep = moved(vc, "pvc-vm-slow", "k8s-node-2")
        assert rep["spec"]["nodeName"] == "k8s-node-1"
        assert sha256(dst, "pvc-vm-slow") == digest
        vc.kubectl("delete", "localvolumemigrate", "m-vm-slow")
    finally:
        src.put("/etc/hwameid/hwameid.conf", conf, 0o644)
        src.run(["systemctl", "restart", "hwameid"], timeout=180)


def test_eviction_disable_keeps_the_volumes_across_drain_and_reboot(vmcluster):
    vc = vmcluster
    g = vc.guest(3)
    make_volume(vc, "pvc-vm-stay", "k8s-node-3", 32)
    digest = fill(g, "pvc-vm-stay", 32)
    before = {r["metadata"]["name"] for r in vc.kubectl_json("get", "localvolumereplica")["items"]
              if r["spec"]["nodeName"] == "k8s-node-3"}
    vc.kubectl("label", "node", "k8s-node-3", "hwameistor.io/eviction=disable")
    try:
        vc.kubectl("drain", "k8s-node-3", "--ignore-daemonsets=true", timeout=120)
        time.sleep(15)  # the evictor's passes run every few seconds: nothing may start
        assert not [m for m in vc.kubectl_json("get", "localvolumemigrate")["items"]
                    if m["spec"]["sourceNode"] == "k8s-node-3"]
        boot = g.hello()["boot_id"]
        vg_uuid = g.run(["vgs", "--noheadings", "-o", "vg_uuid", POOL_HDD]).stdout.strip()
        g.reboot()
        assert g.hello()["boot_id"] != boot
        assert g.run(["vgs", "--noheadings", "-o", "vg_uuid", POOL_HDD]).stdout.strip() == vg_uuid
        # The previous boot's journal (persistent) has hwameid's "stopped" event.
        assert g.run(["journalctl", "-b", "-1", "-u", "hwameid", "-o", "json", "--no-pager",
                      "MESSAGE_ID=2adaf8013aa64dc297946508dd4ac61a"]).stdout.strip(), "no stop event before the reboot"
        vc.wait(lambda: g.run(["systemctl", "is-active", "hwameid"], check=False).stdout.strip() == "active", 180,
                "hwameid active after the reboot")
        assert g.run(["systemctl", "is-enabled", "hwameid"]).stdout.strip() == "enabled"
        vc.kubectl("uncordon", "k8s-node-3")
        after = {r["metadata"]["name"] for r in vc.kubectl_json("get", "localvolumereplica")["items"]
                 if r["spec"]["nodeName"] == "k8s-node-3"}
        assert after == before
        # The LVs are active again (device nodes back) with the data as it was.
        vc.wait(lambda: (lv_attr(g, "pvc-vm-stay") or ("",))[0] == "active", 120, "the LV active after reboot")
        assert sha256(g, "pvc-vm-stay") == digest
        vc.wait(lambda: all((r.get("status") or {}).get("state") == "Ready"
                            for r in vc.kubectl_json("get", "localvolumereplica")["items"]
                            if r["spec"]["nodeName"] == "k8s-node-3"), 120, "k8s-node-3's replicas Ready")
        vc.wait(lambda: (vc.lsn("k8s-node-3").get("status") or {}).get("state") == "Ready", 120,
                "k8s-node-3 Ready")
    finally:
        vc.kubectl("label", "node", "k8s-node-3", "hwameistor.io/eviction-")
        vc.kubectl("uncordon", "k8s-node-3")


def test_upgrade_to_a_newer_package_keeps_the_configuration(vmcluster, tmp_path):
    vc = vmcluster
    g = vc.guest(2)
    newer = repack_deb(vc.deb, tmp_path)
    conf = g.get("/etc/hwameid/hwameid.conf")
    pid = g.run(["systemctl", "show", "hwameid", "-p", "MainPID", "--value"]).stdout.strip()
    g.put(f"/root/{newer['path'].name}", newer["path"].read_bytes(), 0o644)
    g.run(["dpkg", "-i", f"/root/{newer['path'].name}"], timeout=600, env={"DEBIAN_FRONTEND": "noninteractive"})
    assert g.run(["dpkg-query", "-W", "-f", "${Version}", "hwameid"]).stdout == newer["version"]
    assert g.get("/etc/hwameid/hwameid.conf") == conf
    vc.wait(lambda: g.run(["systemctl", "is-active", "hwameid"], check=False).stdout.strip() == "active", 120,
            "hwameid active after the upgrade")
    assert g.run(["systemctl", "show", "hwameid", "-p", "MainPID", "--value"]).stdout.strip() != pid, \
        "the upgrade did not restart the daemon"
    vc.wait(lambda: (vc.lsn("k8s-node-2").get("status") or {}).get("state") == "Ready", 120, "k8s-node-2 Ready")
