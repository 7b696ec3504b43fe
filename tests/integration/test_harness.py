# SPDX-License-Identifier: Apache-2.0
"""The multi-node harness (harness.py) proves itself: three hwameid nodes, each in its own network
and mount namespace with its own loop-device pools, against the stand-in API server on a private
bridge, driven with the real kubectl; one leader and failover; block streams reachable across the
bridge; replicas on the right node; random data written through the extents and read back
independently; nothing left behind, also when a test fails."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT
from harness import (API_PORT, MiB, POOL_HDD, STREAM_PORT, Cluster, _comm, cluster, lv_extents,  # noqa: F401
                     make_cluster, read_extents, write_extents)


def lsn_of(c, node):
    return c.kubectl_json("get", "localstoragenode", node.name)


def test_three_nodes_register_their_own_address_and_only_their_own_disks(cluster):
    c = cluster
    assert [n.name for n in c.nodes] == ["k8s-node-1", "k8s-node-2", "k8s-node-3"]
    nodes = c.kubectl_json("get", "nodes")["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == ["k8s-node-1", "k8s-node-2", "k8s-node-3"]

    all_disks = [d for n in c.nodes for d in n.disks]
    assert len(set(all_disks)) == 6
    header, *rows = c.kubectl("get", "lsn").stdout.splitlines()
    assert header.split()[:3] == ["NAME", "IP", "STATUS"], header
    table = {r.split()[0]: r.split()[1:3] for r in rows}
    for n in c.nodes:
        # The node's network namespace has its own address and nothing else.
        addrs = n.run(["ip", "-4", "-o", "addr", "show"]).stdout
        assert f"inet {n.ip}/24" in addrs and "inet 127.0.0.1/8" in addrs and addrs.count("inet ") == 2, addrs
        # Its own mount namespace (held across daemon restarts), not ours.
        assert os.readlink(f"/proc/{n.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert os.readlink(f"/proc/{n.pid}/ns/mnt") == os.readlink(f"/proc/{n.holder.pid}/ns/mnt")
        assert os.readlink(f"/proc/{n.pid}/ns/net") == os.readlink(f"/proc/{n.holder.pid}/ns/net")

        lsn = lsn_of(c, n)
        assert lsn["spec"]["storageIP"] == n.ip and lsn["spec"]["hostname"] == n.name
        assert lsn["status"]["state"] == "Ready"
        assert list(lsn["status"]["pools"]) == [POOL_HDD]
        pool = lsn["status"]["pools"][POOL_HDD]
        assert sorted(d["devPath"] for d in pool["disks"]) == sorted(n.disks)
        assert all(d["state"] == "InUse" for d in pool["disks"])
        assert table[n.name] == [n.ip, "Ready"], table

        # LVM as the node sees it: one VG over exactly its two loop devices.
        assert {pv["pv_name"]: pv["vg_name"] for pv in n.lvm("pvs", "-o", "pv_name,vg_name")["pv"]} == \
            {d: POOL_HDD for d in n.disks}
        assert [vg["vg_name"] for vg in n.lvm("vgs", "-o", "vg_name")["vg"]] == [POOL_HDD]
        # Without --devices its LVM configuration shows no device at all (empty devices file), so
        # nothing of another node can leak in.
        env = {"LVM_SYSTEM_DIR": str(n.lvm_dir), "LVM_SUPPRESS_FD_WARNINGS": "1"}
        out = n.run(["lvm", "pvs", "--reportformat", "json", "-o", "pv_name"], env=env).stdout
        assert json.loads(out)["report"][0]["pv"] == []
        # The daemon's own view.
        st = n.status()
        assert st["node"] == n.name and st["cluster"]["state"] == "connected"
        assert st["cluster"]["server"] == f"https://{c.api_ip}:{API_PORT}"
        assert sorted(d["devPath"] for d in st["storage"]["disks"]) == sorted(n.disks)


def test_exactly_one_leader_and_another_takes_over_after_sigkill(cluster):
    c = cluster
    leader = c.wait_leader()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # sampled: never two
        assert c.leader() is leader
    lease = c.kubectl_json("get", "lease", "-n", "hwameid-system", "hwameid-controller")
    assert lease["spec"]["holderIdentity"] == leader.status()["cluster"]["leader"]["identity"]
    assert lease["spec"]["holderIdentity"].startswith(leader.name + "_")
    for n in c.nodes:
        assert n.status()["cluster"]["leader"]["holder"] == lease["spec"]["holderIdentity"]

    killed = time.monotonic()
    leader.kill(signal.SIGKILL)
    assert not leader.running
    new = c.wait_leader(timeout=3 + 0.5 + 5, exclude=(leader,))
    assert time.monotonic() - killed < 3 + 0.5 + 5
    assert new is not leader and c.lease_holder() is new
    assert c.kubectl_json("get", "lease", "-n", "hwameid-system", "hwameid-controller")["spec"][
        "leaseTransitions"] >= 1

    # The killed node comes back in the same namespaces, as a follower of the new leader.
    leader.restart()
    c.wait(lambda: leader.status()["cluster"]["leader"]["holder"].startswith(new.name + "_"), 10,
           "the restarted node to follow the new leader")
    assert c.leader() is new and not leader.leading()


def test_block_streams_listen_on_their_own_address_and_are_reachable_across_the_bridge(cluster):
    c = cluster
    for n in c.nodes:
        st = n.status()["stream"]
        assert st["state"] == "listening" and st["tls"] is True and st["problem"] is None, st
        assert st["address"] == f"{n.ip}:{STREAM_PORT}" and st["port"] == STREAM_PORT
        listening = [line.split()[3] for line in n.run(["ss", "-Hltn"]).stdout.splitlines() if line]
        assert [a for a in listening if a.endswith(f":{STREAM_PORT}")] == [f"{n.ip}:{STREAM_PORT}"], listening
    n1, n2, n3 = c.nodes
    # Across the bridge, node-2's server answers node-1 and demands TLS before anything else.
    r = n1.run(["nbdinfo", f"nbd://{n2.ip}:{STREAM_PORT}"], check=False, env={"LIBNBD_DEBUG": "1"})
    assert r.returncode != 0
    assert re.search(r"server error message: .*TLS", r.stderr), r.stderr[-2000:]
    assert "could not connect" not in r.stderr
    r = n3.run(["nbdinfo", "--list", f"nbd://{n1.ip}:{STREAM_PORT}"], check=False, env={"LIBNBD_DEBUG": "1"})
    assert re.search(r"server error message: .*TLS", r.stderr), r.stderr[-2000:]
    # Compare: a closed port is a connection error, and a node's loopback is its own.
    r = n1.run(["nbdinfo", f"nbd://{n2.ip}:{STREAM_PORT + 1}"], check=False)
    assert r.returncode != 0 and "Connection refused" in r.stderr, r.stderr
    r = n1.run(["nbdinfo", f"nbd://127.0.0.1:{STREAM_PORT}"], check=False)
    assert r.returncode != 0 and "Connection refused" in r.stderr, r.stderr


def test_replica_created_with_kubectl_is_ready_on_its_node_only(cluster):
    c = cluster
    n1, n2, n3 = c.nodes
    name = c.create_replica(2, 40 * MiB, volume="pvc-harness")
    st = c.wait_replica_ready(name)
    assert st["storagePath"] == st["devPath"] == f"/dev/{POOL_HDD}/pvc-harness"
    assert st["allocatedCapacityBytes"] == 40 * MiB
    assert st["disks"] and set(st["disks"]) <= set(n2.disks)
    row = c.kubectl("get", "lvr", name, "--no-headers").stdout.split()
    assert row[:6] == [name, str(40 * MiB), "k8s-node-2", "Ready", "true", f"/dev/{POOL_HDD}/pvc-harness"], row
    # The LV is in node-2's VG, and no other node has any.
    lvs = n2.lvm("lvs", "-o", "lv_name,vg_name,lv_size,devices")["lv"]
    assert [(lv["lv_name"], lv["vg_name"], int(lv["lv_size"])) for lv in lvs] == [("pvc-harness", POOL_HDD, 40 * MiB)]
    assert all(lv["devices"].split("(")[0] in n2.disks for lv in lvs), lvs
    for other in (n1, n3):
        assert other.lvm("lvs", "-o", "lv_name")["lv"] == []
    c.wait(lambda: "pvc-harness" in n2.pools()[POOL_HDD]["volumes"], 15, "the volume in node-2's LocalStorageNode")
    assert all(not n.pools()[POOL_HDD]["volumes"] for n in (n1, n3))

    # Random data on another node's replica reads back through that node's extents.
    other, digest = c.replica_with_data(3, 8 * MiB, seed=3)
    assert c.digests[other] == digest == c.checksum(other)
    assert {dev for dev, _, _ in c.extents(other)} <= set(n3.disks)

    # kubectl delete: the node removes the LV, then the object goes.
    c.kubectl("delete", "lvr", name, "--wait=false")
    c.wait(lambda: c.replica(name) is None, 20, "the replica gone")
    assert n2.lvm("lvs", "-o", "lv_name")["lv"] == []


@pytest.mark.parametrize("cluster", [{"nodes": 1}], indirect=True)
def test_random_data_round_trips_through_the_extents(cluster):
    c = cluster
    (n,) = c.nodes
    # Fillers take most of each disk (LVM allocates from the largest free area), so the replica
    # straddles both disks: two extents.
    fillers = []
    for i in range(2):
        fillers.append(c.create_replica(1, 480 * MiB, volume=f"pvc-filler{i}"))
        c.wait_replica_ready(fillers[-1])
    assert {c.extents(f)[0][0] for f in fillers} == set(n.disks)
    name = c.create_replica(1, 48 * MiB, volume="pvc-data")
    c.wait_replica_ready(name)
    ext = c.extents(name)
    assert len(ext) == 2 and {e[0] for e in ext} == set(n.disks), ext
    assert sum(e[2] for e in ext) == 48 * MiB
    # The last 4 MiB of each filler: right before the replica's pieces on each disk.
    neighbours = [(e[0], e[1] + e[2] - 4 * MiB, 4 * MiB) for f in fillers for e in c.extents(f)[-1:]]
    neighbours_before = [read_extents([x])[0] for x in neighbours]

    digest = c.write_random(name, seed=7)
    assert c.digests[name] == digest
    assert c.checksum(name) == digest
    # The same seed gives the same data; the checksum of part of it is that part's.
    assert write_extents(ext, seed=7) == digest
    half = read_extents(ext, length=24 * MiB, keep=True)
    assert hashlib.sha256(half[1]).hexdigest() == half[0] == c.checksum(name, length=24 * MiB)

    # Independent read: the daemon's own storage layer (storage-probe, inside the node, with the
    # node's configuration) maps the LV itself and reads the same bytes.
    probe_digest, probe_extents = c.storage_probe_read(name)
    assert probe_extents == ext
    assert probe_digest == digest
    # And plain buffered reads of the devices at the mapped offsets, piece by piece.
    h = hashlib.sha256()
    for dev, off, length in ext:
        with open(dev, "rb", buffering=0) as f:
            f.seek(off)
            got = 0
            while got < length:
                chunk = f.read(min(4 * MiB, length - got))
                assert chunk
                h.update(chunk)
                got += len(chunk)
    assert h.hexdigest() == digest

    # The data is where the mapping says: change one byte at the start of the second extent.
    dev, off, _ = ext[1]
    fd = os.open(dev, os.O_RDWR)
    try:
        old = os.pread(fd, 1, off)
        os.pwrite(fd, bytes([old[0] ^ 0xFF]), off)
        os.fsync(fd)
        assert c.checksum(name) != digest
        assert c.storage_probe_read(name)[0] != digest
        os.pwrite(fd, old, off)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert c.checksum(name) == digest
    # Nothing spilled into the neighbouring LV.
    assert [read_extents([x])[0] for x in neighbours] == neighbours_before
    # lv_extents() refuses an LV that is not there.
    with pytest.raises(AssertionError, match="no LV"):
        lv_extents(n, POOL_HDD, "pvc-nope")


def test_teardown_leaves_nothing_behind(make_cluster):
    c = make_cluster(nodes=2, disks_per_node=1, disk_size=64 * MiB)
    namespaces = list(c.namespaces)
    disks = [d for n in c.nodes for d in n.disks]
    pids = [p for n in c.nodes for p in n.pids()] + [c.standin.pid]
    assert len(namespaces) == 4 and len(disks) == 2 and len(pids) == 5
    # A command left running inside a node is found and ended too (and reported).
    stray = c.node(1).popen(["sleep", "600"], stdin=subprocess.DEVNULL)
    c.wait(lambda: _comm(stray.pid) == "sleep", 5, "the stray sleep")
    assert stray.pid in c.our_processes()
    problems = c.cleanup()
    stray.wait(5)
    assert len(problems) == 1 and f"process {stray.pid}" in problems[0], problems
    assert c.leftovers() == []
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in listed for ns in namespaces), listed
    attached = subprocess.run(["losetup", "--list", "--noheadings", "-O", "NAME,BACK-FILE"], capture_output=True,
                              text=True).stdout
    assert str(c.dir) not in attached, attached
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), pid
    assert not any(img.exists() for n in c.nodes for img in n.images)


def test_a_cluster_that_fails_to_start_cleans_up_after_itself(tmp_path):
    c = Cluster(tmp_path / "broken", nodes=2, disks_per_node=1, disk_size=64 * MiB,
                config="[Storage]\nRefreshInterval=forever\n")
    with pytest.raises(AssertionError, match="before READY=1"):
        c.start()
    assert c.leftovers() == []
    assert "forever" in c.node(1).log()


def test_a_failing_test_prints_every_node_log(tmp_path):
    test = tmp_path / "test_fails.py"
    test.write_text(textwrap.dedent("""
        from harness import cluster, make_cluster  # noqa: F401

        import pytest

        @pytest.mark.parametrize("cluster", [{"nodes": 2, "disks_per_node": 1, "disk_size": 64 << 20}],
                                 indirect=True)
        def test_fails(cluster):
            assert cluster.leader() == "nobody"
        """))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests" / "integration"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path}/bt",
                        str(test)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "1 failed" in out, out
    for name in ("k8s-node-1", "k8s-node-2"):
        assert f"===== {name} (" in out and f"starting on node '{name}'" in out, out
    assert "kube-standin log" in out
