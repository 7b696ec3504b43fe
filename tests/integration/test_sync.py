# SPDX-License-Identifier: Apache-2.0
"""A replica's data moving between two nodes, driven by the annotations the leader writes
(node/sync.h), with the leader's part played by the test: the target exposes its new replica to
one migration identity, the source pushes over TLS-PSK with derived keys, the target verifies the
digest locally and reports synced. Two daemons on the file backend, one stand-in API server."""

import json
import os
import signal
import socket
import sys
import time

import pytest

from conftest import ROOT, wait
from test_nbd_resume import digest_of
from test_nbd_tls import SECRET

sys.path.insert(0, str(ROOT / "tests" / "standin"))
from objects import HW  # noqa: E402

LVR = f"{HW}/localvolumereplicas"
MiB = 1 << 20
A = "hwameistor.io/hwameid-"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(standin, make_daemon, name, extra="", port=None):
    d = make_daemon(name)
    if port:  # a drop-in: the test drop-in's Port=0 would win over the main file
        (d.dir / "hwameid.conf.d" / "50-port.conf").write_text(f"[Stream]\nPort={port}\n")
    d.kubeconfig.write_bytes(open(standin.kubeconfig, "rb").read())
    fd = os.open(d.dir / "cluster-secret", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, SECRET.encode())
    os.close(fd)
    d.write_config("[Storage]\nBackend=file\nFilePoolCapacity=1G\nFilePoolClasses=HDD\nRefreshInterval=1s\n"
                   + extra, node=name)
    d.start()
    return d


@pytest.fixture
def nodes(standin, make_daemon):
    src = start_node(standin, make_daemon, "src-node")
    dst_port = free_port()
    dst = start_node(standin, make_daemon, "dst-node", "[Node]\nStorageIP=127.0.0.1\n", port=dst_port)
    return src, dst


def obj(standin, name):
    r = standin.request("GET", f"{LVR}/{name}")
    return r.json if r.status == 200 else None


def annotations(standin, name):
    return ((obj(standin, name) or {}).get("metadata") or {}).get("annotations") or {}


def annotate(standin, name, **values):
    """Sets (str or dict → JSON) or removes (None) annotations, as the leader does."""
    ann = {A + k.replace("_", "-"): (json.dumps(v) if isinstance(v, dict) else v) for k, v in values.items()}
    standin.api("PATCH", f"{LVR}/{name}", {"metadata": {"annotations": ann}},
                ctype="application/merge-patch+json", expect=200)


def make_replica(standin, name, node, volume, size, pending=None):
    body = {"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolumeReplica",
            "metadata": {"name": name},
            "spec": {"volumeName": volume, "poolName": "LocalStorage_PoolHDD", "nodeName": node,
                     "requiredCapacityBytes": size}}
    if pending:
        body["metadata"]["annotations"] = {A + "sync-pending": pending}
    standin.api("POST", LVR, body, expect=201)
    return wait(lambda: (lambda o: o if o and o.get("status", {}).get("state") == "Ready" else None)(
        obj(standin, name)), what=f"{name} Ready")


def push_status(standin, name):
    s = annotations(standin, name).get(A + "push-status")
    return json.loads(s) if s else None


def fill_random(path, size, seed=1):
    rnd = __import__("random").Random(seed)
    with open(path, "r+b") as f:
        for off in range(0, size, 4 * MiB):
            if (off // (4 * MiB)) % 3 != 2:  # every third piece stays a hole
                f.seek(off)
                f.write(rnd.randbytes(4 * MiB))


def setup_migration(standin, src, dst, size, identity="mig-pvc-m-1", volume="pvc-m"):
    make_replica(standin, f"{volume}-src", "src-node", volume, size)
    data = src.dir / "pools" / "LocalStorage_PoolHDD" / volume
    fill_random(data, size)
    make_replica(standin, f"{volume}-dst1", "dst-node", volume, size, pending=identity)
    endpoint = wait(lambda: annotations(standin, f"{volume}-dst1").get(A + "sync-endpoint"), what="the endpoint")
    return data, endpoint


def test_push_then_verify_moves_the_data_and_reports_synced(standin, nodes):
    src, dst = nodes
    size = 24 * MiB
    data, endpoint = setup_migration(standin, src, dst, size)
    st = obj(standin, "pvc-m-dst1")["status"]
    assert st["synced"] is False
    assert endpoint.startswith("127.0.0.1:")
    exports = dst.status()["cluster"]["sync"]["exports"]
    assert exports == [{"replica": "pvc-m-dst1", "identity": "mig-pvc-m-1", "state": "Receiving"}]

    annotate(standin, "pvc-m-src", push={"identity": "mig-pvc-m-1", "endpoint": endpoint, "export": "pvc-m-dst1"})
    done = wait(lambda: (lambda p: p if p and p["state"] == "Done" else None)(push_status(standin, "pvc-m-src")),
                what="push Done")
    want = digest_of(data)
    assert done["digest"] == want and done["bytesTotal"] == size and done["bytesDone"] == size
    assert done["bytesSent"] <= size * 2 // 3 + 4 * MiB  # holes went as zero ranges

    annotate(standin, "pvc-m-dst1", sync_expect={"digest": done["digest"], "size": size})
    st = wait(lambda: (lambda o: o["status"] if o["status"].get("synced") else None)(obj(standin, "pvc-m-dst1")),
              what="synced")
    ann = annotations(standin, "pvc-m-dst1")
    assert ann[A + "digest"] == want
    assert A + "sync-pending" not in ann and A + "sync-endpoint" not in ann
    assert json.loads(ann[A + "sync-result"])["verified"] is True
    target = dst.dir / "pools" / "LocalStorage_PoolHDD" / "pvc-m"
    assert target.read_bytes()[:size] == data.read_bytes()
    assert dst.status()["cluster"]["sync"]["exports"] == []
    reasons = {e["reason"] for e in standin.api("GET", "/api/v1/events")["items"]}
    assert {"Pushed", "Synced"} <= reasons

    # The leader takes the request back: the node clears its answer.
    annotate(standin, "pvc-m-src", push=None)
    wait(lambda: A + "push-status" not in annotations(standin, "pvc-m-src"), what="push-status cleared")


def test_a_second_round_into_the_same_replica_sends_only_what_changed(standin, nodes):
    """The first push into a new replica is a plain copy; another round (after a failed
    verification, say) asks the target for block hashes and sends only the blocks that differ."""
    src, dst = nodes
    size = 24 * MiB
    data, endpoint = setup_migration(standin, src, dst, size)
    push = {"identity": "mig-pvc-m-1", "endpoint": endpoint, "export": "pvc-m-dst1"}
    annotate(standin, "pvc-m-src", push=dict(push, round=1))
    first = wait(lambda: (lambda p: p if p and p["state"] == "Done" and p.get("round") == 1 else None)(
        push_status(standin, "pvc-m-src")), what="round 1 Done")
    assert first["bytesSent"] >= 16 * MiB, first  # the data, all of it
    with open(data, "r+b") as f:  # 1 MiB changes on the source
        f.seek(5 * MiB)
        f.write(b"\xa5" * MiB)
    annotate(standin, "pvc-m-src", push=dict(push, round=2))
    second = wait(lambda: (lambda p: p if p and p["state"] == "Done" and p.get("round") == 2 else None)(
        push_status(standin, "pvc-m-src")), what="round 2 Done")
    assert second["digest"] == digest_of(data) != first["digest"]
    assert second["bytesSent"] <= MiB + 128 * 1024, second


def test_an_identity_the_target_does_not_expose_fails_and_is_retried(standin, nodes):
    src, dst = nodes
    _, endpoint = setup_migration(standin, src, dst, 8 * MiB)
    annotate(standin, "pvc-m-src", push={"identity": "mig-someone-else", "endpoint": endpoint,
                                         "export": "pvc-m-dst1"})
    failed = wait(lambda: (lambda p: p if p and p["state"] == "Failed" and p["attempts"] >= 2 else None)(
        push_status(standin, "pvc-m-src")), what="two failed attempts")
    assert "does not accept this migration's key" in failed["message"], failed
    assert obj(standin, "pvc-m-dst1")["status"]["synced"] is False


def test_a_digest_mismatch_is_reported_and_the_export_comes_back(standin, nodes):
    src, dst = nodes
    size = 8 * MiB
    _, endpoint = setup_migration(standin, src, dst, size)
    annotate(standin, "pvc-m-dst1", sync_expect={"digest": "0" * 32, "size": size})
    res = wait(lambda: annotations(standin, "pvc-m-dst1").get(A + "sync-result"), what="a result")
    res = json.loads(res)
    assert res["verified"] is False and res["expected"] == "0" * 32
    assert obj(standin, "pvc-m-dst1")["status"]["synced"] is False
    assert dst.status()["cluster"]["sync"]["exports"] == []
    # The leader withdraws its expectation for another push: the export is back.
    annotate(standin, "pvc-m-dst1", sync_expect=None, sync_result=None)
    wait(lambda: dst.status()["cluster"]["sync"]["exports"], what="exposed again")


def slow_push_under_way(standin, src, dst, size):
    """Restarts the source with a bandwidth limit, starts a push of size random bytes and waits
    for its first checkpoint past 0; returns (the source's data file, the checkpoint file)."""
    src.stop()
    src.write_config("[Storage]\nBackend=file\nFilePoolCapacity=1G\nFilePoolClasses=HDD\nRefreshInterval=1s\n"
                     "[Stream]\nBandwidthLimit=12M\n", node="src-node")
    src.start()
    data, endpoint = setup_migration(standin, src, dst, size)
    annotate(standin, "pvc-m-src", push={"identity": "mig-pvc-m-1", "endpoint": endpoint, "export": "pvc-m-dst1"})
    checkpoint = src.dir / "copies" / "mig-pvc-m-1.checkpoint"
    wait(lambda: checkpoint.exists() and "offset=0\n" not in checkpoint.read_text(), what="a checkpoint")
    return data, checkpoint


@pytest.mark.parametrize("victim", ["source", "target"])
def test_a_push_resumes_after_either_node_is_killed(standin, nodes, victim):
    src, dst = nodes
    size = 64 * MiB
    data, checkpoint = slow_push_under_way(standin, src, dst, size)

    node = src if victim == "source" else dst
    node.kill(signal.SIGKILL)
    node.proc.wait()
    time.sleep(0.5)
    node.start()

    done = wait(lambda: (lambda p: p if p and p["state"] == "Done" else None)(push_status(standin, "pvc-m-src")),
                timeout=60, what="push Done")
    assert done.get("resumedFrom", 0) > 0, done
    assert done["digest"] == digest_of(data)
    annotate(standin, "pvc-m-dst1", sync_expect={"digest": done["digest"], "size": size})
    wait(lambda: obj(standin, "pvc-m-dst1")["status"].get("synced"), what="synced")
    assert not checkpoint.exists()


def test_a_stop_during_a_push_ends_promptly_and_the_push_resumes(standin, nodes):
    # What `systemctl stop` does: SIGTERM. The push is cancelled at its next piece, its
    # checkpoint kept, and the daemon exits well within the unit's TimeoutStopSec=.
    src, dst = nodes
    size = 64 * MiB
    data, checkpoint = slow_push_under_way(standin, src, dst, size)
    t = time.monotonic()
    assert src.stop() == 0
    assert time.monotonic() - t < 10
    assert checkpoint.exists()
    src.start()
    done = wait(lambda: (lambda p: p if p and p["state"] == "Done" else None)(push_status(standin, "pvc-m-src")),
                timeout=60, what="push Done")
    assert done.get("resumedFrom", 0) > 0, done
    assert done["digest"] == digest_of(data)
