# SPDX-License-Identifier: Apache-2.0
"""The daemon against the stand-in API server: connection, its own Node, the heartbeat Lease,
leader election among several daemons, credentials that rotate, API outages."""

import os
import signal
import subprocess
import time
from urllib.parse import parse_qs

import pytest

from conftest import ROOT

sys_path = str(ROOT / "tests" / "standin")
import sys  # noqa: E402
sys.path.insert(0, sys_path)
from objects import node  # noqa: E402

NS = "hwameid-system"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
# Short timings so that failover tests take seconds; the rules are the same as the defaults'.
FAST = "[LeaderElection]\nLeaseDuration=3s\nRenewDeadline=2s\nRetryPeriod=500ms\n"


def connect(d, standin, node_name="test-node", extra="", kubeconfig=None):
    d.kubeconfig.write_bytes(open(kubeconfig or standin.kubeconfig, "rb").read())
    d.write_config(extra, node=node_name)
    return d


def wait_status(d, text, timeout=20):
    return d.notify.wait_for(lambda m: text in m.get("STATUS", ""), timeout=timeout, what=f"STATUS with {text!r}")


def test_connects_and_follows_its_own_node(standin, make_daemon):
    d = connect(make_daemon(), standin).start()
    st = wait_status(d, "Connected to")["STATUS"]
    assert f"https://127.0.0.1:{standin.port}" in st and "not registered (yet)" in st
    standin.api("POST", "/api/v1/nodes", node("test-node"), expect=201)
    wait_status(d, "node 'test-node' is registered")
    standin.api("POST", "/api/v1/nodes", node("other-node"), expect=201)
    standin.api("DELETE", "/api/v1/nodes/test-node", expect=200)
    wait_status(d, "is not registered")
    # The node watches only its own Node, by name, as the API server's index wants.
    ours = [r for r in standin.requests_log() if r.get("userAgent", "").startswith("hwameid/")]
    node_requests = [r for r in ours if r["path"] == "/api/v1/nodes"]
    assert node_requests and all(parse_qs(r["query"]).get("fieldSelector") == ["metadata.name=test-node"]
                                 for r in node_requests), node_requests
    assert d.status()["cluster"]["state"] == "connected"
    assert d.stop() == 0


def test_heartbeat_lease_is_renewed(standin, make_daemon):
    d = connect(make_daemon(), standin, extra="").start()
    d.write_config("", node="test-node")
    cfg = d.config.read_text().replace("[Node]\nName=test-node\n", "[Node]\nName=test-node\nHeartbeatInterval=1s\n")
    d.config.write_text(cfg)
    d.kill(signal.SIGHUP)
    d.notify.wait_key("RELOADING")
    deadline = time.monotonic() + 15
    renewals = set()
    while time.monotonic() < deadline and len(renewals) < 3:
        r = standin.request("GET", f"{LEASES}/hwameid-node-test-node")
        if r.status == 200:
            spec = r.json["spec"]
            assert spec["holderIdentity"] == "test-node"
            assert spec["leaseDurationSeconds"] == 3
            renewals.add(spec["renewTime"])
        time.sleep(0.2)
    assert len(renewals) >= 3, renewals
    for t in renewals:  # MicroTime: exactly six fractional digits, UTC
        assert len(t) == 27 and t[19] == "." and t.endswith("Z"), t
    assert d.stop() == 0


def leaders(daemons):
    return [d for d in daemons if d.proc.poll() is None and d.status()["cluster"]["leader"]["leading"]]


def wait_for_leader(daemons, timeout, exclude=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = leaders(daemons)
        assert len(now) <= 1, f"two leaders at once: {[d.dir.name for d in now]}"
        now = [d for d in now if d not in exclude]
        if now:
            return now[0], time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"no leader within {timeout}s")


def sample_single_leader(daemons, seconds):
    """At every sampled instant at most one daemon believes it leads."""
    deadline = time.monotonic() + seconds
    samples = 0
    while time.monotonic() < deadline:
        assert len(leaders(daemons)) <= 1
        samples += 1
    return samples


@pytest.fixture
def trio(standin, make_daemon):
    ds = [connect(make_daemon(f"n{i}"), standin, node_name=f"node-{i}", extra=FAST).start() for i in range(3)]
    return ds


def test_one_leader_among_three_and_failover_after_sigkill(standin, trio):
    leader, _ = wait_for_leader(trio, 15)
    assert sample_single_leader(trio, 2) > 20
    holder = standin.api("GET", f"{LEASES}/hwameid-controller")["spec"]["holderIdentity"]
    assert holder == leader.status()["cluster"]["leader"]["identity"]
    followers = [d for d in trio if d is not leader]
    assert all(f.status()["cluster"]["leader"]["holder"] == holder for f in followers)

    killed_at = time.monotonic()
    leader.stop(signal.SIGKILL)
    new, at = wait_for_leader(followers, 3 + 0.5 + 3)  # lease duration + retry period (+ slack)
    assert at - killed_at < 3 + 0.5 + 3
    assert sample_single_leader(followers, 1) > 10
    lease = standin.api("GET", f"{LEASES}/hwameid-controller")["spec"]
    assert lease["leaseTransitions"] >= 1
    # Each new leader says so in an Event on the Lease, as client-go's elector does.
    deadline = time.monotonic() + 5
    while True:
        events = [e for e in standin.api("GET", f"/api/v1/namespaces/{NS}/events")["items"]
                  if e["reason"] == "LeaderElection"]
        messages = {e["message"] for e in events}
        if f"{new.status()['cluster']['leader']['identity']} became leader" in messages:
            break
        assert time.monotonic() < deadline, messages
        time.sleep(0.1)
    assert f"{holder} became leader" in messages
    assert all(e["involvedObject"]["kind"] == "Lease" and e["involvedObject"]["name"] == "hwameid-controller"
               for e in events)


def test_sigterm_of_the_leader_hands_over_at_once(standin, trio):
    leader, _ = wait_for_leader(trio, 15)
    t0 = time.monotonic()
    assert leader.stop(signal.SIGTERM) == 0
    others = [d for d in trio if d is not leader]
    new, at = wait_for_leader(others, 3)
    # A released lease (empty holder) is taken without waiting out the lease duration.
    assert at - t0 < 2.5, at - t0
    assert new.status()["cluster"]["leader"]["leading"]


def test_stopped_leader_wakes_up_as_follower(standin, trio):
    leader, _ = wait_for_leader(trio, 15)
    leader.kill(signal.SIGSTOP)
    try:
        others = [d for d in trio if d is not leader]
        new, _ = wait_for_leader(others, 3 + 0.5 + 3)
    finally:
        leader.kill(signal.SIGCONT)
    # The first thing the old leader answers after waking is that it does not lead: its last
    # renewal is older than the renew deadline.
    assert leader.status()["cluster"]["leader"]["leading"] is False
    assert sample_single_leader(trio, 2) > 10
    assert leaders(trio) == [new]


def test_api_outage_longer_than_renew_deadline_makes_the_leader_step_down(standin, trio):
    leader, _ = wait_for_leader(trio, 15)
    standin.admin("POST", "/faults", {"type": "error", "code": 503, "count": 100000, "path": "leases"})
    t0 = time.monotonic()
    while leader.status()["cluster"]["leader"]["leading"]:
        assert time.monotonic() - t0 < 2 + 1.5, "leader kept leading past its renew deadline"
        time.sleep(0.05)
    assert time.monotonic() - t0 >= 0.5  # it did not give up at the first failure
    assert leaders(trio) == []
    standin.admin("DELETE", "/faults")
    wait_for_leader(trio, 3 + 0.5 + 5)


def test_sighup_does_not_disturb_an_unchanged_connection(standin, make_daemon):
    d = connect(make_daemon(), standin).start()
    wait_status(d, "Connected to")
    # Let start-up writes (LocalStorageNode, Leases) settle: one second without a request.
    before = -1
    while before != d.status()["cluster"]["requestsSent"]:
        before = d.status()["cluster"]["requestsSent"]
        time.sleep(1)
    d.kill(signal.SIGHUP)
    d.notify.wait_key("RELOADING")
    d.notify.wait_key("READY")
    st = d.status()["cluster"]
    assert st["state"] == "connected" and st["requestsSent"] - before <= 2


def test_rotated_token_is_picked_up_after_401(standin, make_daemon, tmp_path):
    kc, token_file = tmp_path / "token.kubeconfig", tmp_path / "token"
    r = subprocess.run([str(ROOT / "tools" / "kube-standin"), "mint-kubeconfig", "--state-dir", standin.state_dir,
                        "--user", "hwameid", "--token-file", str(token_file), "--out", str(kc)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = connect(make_daemon(), standin, kubeconfig=kc).start()
    wait_status(d, "Connected to")
    # Rotate: a new token on the server and in the file, the old one revoked.
    tokens = os.path.join(standin.state_dir, "pki", "tokens.csv")
    new = standin.admin("POST", "/tokens", {"user": "hwameid", "groups": []})["token"]
    old = token_file.read_text().strip()
    token_file.write_text(new + "\n")
    lines = [l for l in open(tokens).read().splitlines() if not l.startswith(old + ",")]
    open(tokens, "w").write("\n".join(lines) + "\n")
    # The next request with the old token is refused; the daemon re-reads and carries on.
    standin.admin("POST", "/faults", {"type": "drop-watches", "mode": "close"})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        log = standin.requests_log()
        if "changed; new requests use them" in d.log() and any(e["code"] == 401 for e in log) and any(
                e["code"] == 200 and e["user"] == "hwameid" and e["seq"] > max(x["seq"] for x in log if x["code"] == 401)
                for e in log):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("no successful request after the 401")
    assert "Credentials in" in d.log() and "changed; new requests use them" in d.log()
    deadline = time.monotonic() + 20
    while d.status()["cluster"]["state"] != "connected":
        assert time.monotonic() < deadline, d.status()["cluster"]
        time.sleep(0.1)
    assert d.stop() == 0


def test_candidate_that_loses_the_create_race_learns_the_holder_at_once(standin, make_daemon):
    # Both candidates find no Lease and create it at the same moment; the loser's 409 must make it
    # follow the winner, not create again and again.
    standin.admin("POST", "/faults", {"type": "latency", "seconds": 0.5, "count": 2, "method": "POST",
                                      "path": "leases$"})
    ds = [connect(make_daemon(f"r{i}"), standin, node_name=f"race-{i}", extra=FAST).start() for i in range(2)]
    leader, _ = wait_for_leader(ds, 10)
    loser = next(d for d in ds if d is not leader)
    identity = leader.status()["cluster"]["leader"]["identity"]
    deadline = time.monotonic() + 2
    while loser.status()["cluster"]["leader"]["holder"] != identity:
        assert time.monotonic() < deadline, loser.status()["cluster"]["leader"]
        time.sleep(0.05)
    time.sleep(1.5)  # three retry periods: a confused loser would POST again in that time
    posts = [e for e in standin.requests_log() if e["method"] == "POST" and e["path"].endswith("/leases")
             and e["code"] == 409]
    assert len(posts) <= 2, posts  # the create race itself, and at most a heartbeat-free retry
