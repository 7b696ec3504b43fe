# SPDX-License-Identifier: Apache-2.0
"""The Kubernetes client layer (kube-client, informer) against the stand-in, through kube-probe:
error mapping, watches that survive drops, server restarts and 410s without losing or repeating
an event, and kubeconfigs that are wrong in every way an operator can get them wrong."""

import json
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import KUBE_PROBE, ROOT

sys.path.insert(0, str(ROOT / "tests" / "standin"))
from objects import HW, lv  # noqa: E402
from standinlib import Standin  # noqa: E402

LVS = f"{HW}/localvolumes"


def probe(kubeconfig, *args):
    r = subprocess.run([str(KUBE_PROBE), str(kubeconfig), *args], capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert lines, r.stderr
    return lines[-1]


def test_status_bodies_map_to_errno_and_reason(standin):
    kc = standin.kubeconfig
    assert probe(kc, "request", "GET", "/api/v1/nodes/absent")["errno"] == "ENOENT"
    created = probe(kc, "request", "POST", LVS, json.dumps(lv("pvc-a")))
    assert created["http"] == 201 and created["error"] == 0
    rv = created["body"]["metadata"]["resourceVersion"]
    dup = probe(kc, "request", "POST", LVS, json.dumps(lv("pvc-a")))
    assert (dup["http"], dup["errno"], dup["reason"]) == (409, "EEXIST", "AlreadyExists")
    # A write based on a stale resourceVersion: 409 too, but a Conflict — told apart by the body.
    obj = dict(lv("pvc-a"), metadata={"name": "pvc-a", "resourceVersion": rv})
    assert probe(kc, "request", "MERGE", f"{LVS}/pvc-a", '{"spec":{"replicaNumber":2}}')["error"] == 0
    stale = probe(kc, "request", "PUT", f"{LVS}/pvc-a", json.dumps(obj))
    assert (stale["http"], stale["errno"], stale["reason"]) == (409, "ESTALE", "Conflict")
    assert "the object has been modified" in stale["message"]
    # Strategic merge is for built-in kinds only.
    smp = probe(kc, "request", "STRATEGIC", f"{LVS}/pvc-a", '{"spec":{"replicaNumber":1}}')
    assert (smp["http"], smp["errno"]) == (415, "EPROTONOSUPPORT")
    bad = probe(kc, "request", "PUT", f"{LVS}/pvc-a", json.dumps(lv("pvc-a")))  # no resourceVersion
    assert (bad["http"], bad["errno"]) == (422, "EINVAL")


def test_retry_after_is_honoured_before_the_caller_hears(standin):
    standin.admin("POST", "/faults", {"type": "error", "code": 429, "count": 2, "retryAfterSeconds": 1,
                                      "path": "/api/v1/namespaces$"})
    t0 = time.monotonic()
    r = probe(standin.kubeconfig, "request", "GET", "/api/v1/namespaces")
    assert r["error"] == 0 and r["http"] == 200
    assert time.monotonic() - t0 >= 2.0  # two answers asked for a second each
    assert [e["code"] for e in standin.requests_log() if e["path"] == "/api/v1/namespaces"] == [429, 429, 200]


class Informer:
    """kube-probe inform, read line by line on a thread."""

    def __init__(self, kubeconfig, path, field="", label=""):
        self.proc = subprocess.Popen([str(KUBE_PROBE), str(kubeconfig), "inform", path, field, label],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.events = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def expect(self, n, timeout=20):
        """The next n handler calls (synced markers are skipped)."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            item = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            assert item is not None, f"probe ended; got {got}"
            if item["event"] != "synced":
                got.append((item["event"], item["name"]))
                self.events.append(item)
        return got

    def wait_synced(self, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            item = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            assert item is not None
            if item["event"] == "synced":
                return
            self.events.append(item)

    def quiet(self, seconds):
        """No handler call arrives for a while (relist markers aside): no duplicate deliveries."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self.lines.get(timeout=left)
            except queue.Empty:
                return
            if item is None or item["event"] != "synced":
                raise AssertionError(f"unexpected handler call {item}")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        out = []
        while (item := self.lines.get(timeout=10)) is not None:
            out.append(item)
        assert self.proc.wait(10) == 0, self.proc.stderr.read()
        return out[-1]


@pytest.fixture
def informers():
    """Starts kube-probe informers; whatever the test's outcome, none outlives it."""
    started = []

    def make(*args, **kwargs):
        inf = Informer(*args, **kwargs)
        started.append(inf)
        return inf

    yield make
    for inf in started:
        if inf.proc.poll() is None:
            inf.proc.kill()
            inf.proc.wait()


def server_state(standin):
    items = standin.api("GET", LVS)["items"]
    return sorted(f"{o['metadata']['name']}@{o['metadata']['resourceVersion']}" for o in items)


def test_watch_survives_drops_restarts_and_410_without_lost_or_repeated_events(standin, tmp_path, informers):
    kc = standin.kubeconfig
    for i in (1, 2, 3):
        standin.api("POST", LVS, lv(f"pvc-{i}"), expect=201)
    inf = informers(kc, LVS)
    assert sorted(inf.expect(3)) == [("added", "pvc-1"), ("added", "pvc-2"), ("added", "pvc-3")]
    standin.wait_watches(1, resource="hwameistor.io/localvolumes")

    # 1. The connection is cut mid-stream: the re-watch resumes from the last resourceVersion.
    standin.admin("POST", "/faults", {"type": "drop-watches", "mode": "reset"})
    standin.api("POST", LVS, lv("pvc-4"), expect=201)
    standin.api("PATCH", f"{LVS}/pvc-1", {"spec": {"replicaNumber": 2}}, ctype="application/merge-patch+json",
                expect=200)
    assert inf.expect(2) == [("added", "pvc-4"), ("updated", "pvc-1")]

    # 2. The API server restarts (same state, same port) while objects change around it.
    port, state = standin.port, standin.state_dir
    standin.stop()
    restarted = Standin(str(tmp_path / "standin"), state_dir=state, port=port).start()
    try:
        check_after_restart(restarted, inf)
    finally:
        restarted.stop()


def check_after_restart(restarted, inf):
    """The rest of the test above, against the restarted server (which the caller stops)."""
    restarted.api("POST", LVS, lv("pvc-5"), expect=201)
    restarted.api("DELETE", f"{LVS}/pvc-2", expect=200)
    assert sorted(inf.expect(2)) == [("added", "pvc-5"), ("deleted", "pvc-2")]

    # 3. A deletion while the watch is down, and the history is gone when it comes back (410).
    restarted.wait_watches(1, resource="hwameistor.io/localvolumes")
    restarted.admin("POST", "/faults", {"type": "latency", "seconds": 1.0, "count": 1, "path": "localvolumes"})
    restarted.admin("POST", "/faults", {"type": "drop-watches", "mode": "reset"})
    restarted.api("DELETE", f"{LVS}/pvc-3", expect=200)
    restarted.admin("POST", "/faults", {"type": "compact"})
    assert inf.expect(1) == [("deleted", "pvc-3")]
    inf.quiet(1.5)

    final = inf.stop()
    assert sorted(final["cache"]) == server_state(restarted)
    assert final["relistsExpired"] >= 1 and final["watches"] >= 3
    # Every (event, object, resourceVersion) was delivered once.
    seen = [(e["event"], e["name"], e["rv"]) for e in inf.events]
    assert len(seen) == len(set(seen)), seen


def test_field_selector_narrows_to_one_object(standin, informers):
    for i in (1, 2):
        standin.api("POST", LVS, lv(f"sel-{i}"), expect=201)
    inf = informers(standin.kubeconfig, LVS, field="metadata.name=sel-2")
    assert inf.expect(1) == [("added", "sel-2")]
    standin.wait_watches(1, resource="hwameistor.io/localvolumes", field="metadata.name=sel-2")
    standin.api("PATCH", f"{LVS}/sel-1", {"spec": {"replicaNumber": 2}}, ctype="application/merge-patch+json")
    standin.api("PATCH", f"{LVS}/sel-2", {"spec": {"replicaNumber": 2}}, ctype="application/merge-patch+json")
    assert inf.expect(1) == [("updated", "sel-2")]
    assert [c.split("@")[0] for c in inf.stop()["cache"]] == ["sel-2"]


# ---- kubeconfigs that are wrong -------------------------------------------------------------

def kubeconfig_text(standin):
    return open(standin.kubeconfig).read()


def test_bad_kubeconfigs_each_give_one_clear_error(standin, tmp_path):
    good = kubeconfig_text(standin)
    cases = {
        "missing": (None, "No such file or directory"),
        "bad-yaml": ("apiVersion: v1\nkind: Config\nclusters: [\n  - {name: a\n", "line "),
        "unknown-context": (good.replace("current-context: ", "current-context: nope-") if "current-context: " in good
                            else good + "\ncurrent-context: nope\n", "context 'nope"),
        "bad-base64": (good.replace("certificate-authority-data: ", "certificate-authority-data: ab%"),
                       "invalid base64"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name}.kubeconfig"
        if text is not None:
            path.write_text(text)
        r = probe(path, "request", "GET", "/version")
        assert r["error"] < 0, name
        assert message in r["message"], (name, r["message"])
        assert str(path) in r["message"], (name, r["message"])


def test_unreachable_server_and_wrong_ca_are_transport_errors(standin, tmp_path):
    good = kubeconfig_text(standin)
    unreachable = tmp_path / "unreachable.kubeconfig"
    unreachable.write_text(good.replace(f"https://127.0.0.1:{standin.port}", "https://127.0.0.1:1"))
    r = probe(unreachable, "request", "GET", "/version")
    assert r["errno"] == "ECONNREFUSED" and "127.0.0.1" in r["message"]

    # A CA that did not sign the server's certificate.
    key, crt = tmp_path / "other.key", tmp_path / "other.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=other-ca"],
                   check=True, capture_output=True)
    import base64
    import re
    other = base64.b64encode(crt.read_bytes()).decode()
    wrong = tmp_path / "wrong-ca.kubeconfig"
    wrong.write_text(re.sub(r"certificate-authority-data: \S+", f"certificate-authority-data: {other}", good))
    r = probe(wrong, "request", "GET", "/version")
    assert r["errno"] == "EPROTO", r
    assert "certificate" in r["message"].lower()


def test_repeated_events_become_one_event_with_a_count(standin):
    r = probe(standin.kubeconfig, "event", "default", "mysql-0", "Volume pvc-1 is being moved", "5")
    assert r["failed"] == 0 and r["dropped"] == 0 and r["created"] == 1
    events = [e for e in standin.api("GET", "/api/v1/namespaces/default/events")["items"]
              if e["reason"] == "ProbeTest"]
    assert len(events) == 1, events
    e = events[0]
    assert e["count"] == 5 and e["type"] == "Warning" and e["message"] == "Volume pvc-1 is being moved"
    assert e["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "name": "mysql-0", "namespace": "default"}
    assert e["source"] == {"component": "hwameid", "host": "probe-node"}
    # Another message is another Event; kubectl shows both.
    probe(standin.kubeconfig, "event", "default", "mysql-0", "Volume pvc-1 moved", "1")
    out = standin.kubectl("get", "events", "-n", "default").stdout
    assert "Volume pvc-1 is being moved" in out and "Volume pvc-1 moved" in out


def test_event_flood_about_one_object_is_rate_limited(standin):
    # Distinct messages defeat deduplication; the per-object bucket (burst 25) stops the flood.
    for i in range(3):
        probe(standin.kubeconfig, "event", "default", f"calm-{i}", "ok", "1")
    r = subprocess.run([str(KUBE_PROBE), standin.kubeconfig, "event", "default", "noisy", "same", "40"],
                       capture_output=True, text=True, timeout=60)
    last = json.loads(r.stdout.splitlines()[-1])
    assert last["dropped"] == 40 - 25 and last["failed"] == 0


def test_stale_update_gets_conflict_and_is_retried_from_a_fresh_read(standin):
    standin.api("POST", LVS, lv("pvc-bump"), expect=201)
    standin.api("PATCH", f"{LVS}/pvc-bump", {"metadata": {"labels": {"n": "10"}}},
                ctype="application/merge-patch+json", expect=200)
    # Hold the probe's first PUT at the server while someone else writes the object.
    standin.admin("POST", "/faults", {"type": "latency", "seconds": 1.5, "count": 1, "method": "PUT",
                                      "path": "pvc-bump"})
    p = subprocess.Popen([str(KUBE_PROBE), standin.kubeconfig, "bump", f"{LVS}/pvc-bump", "n"],
                         stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not any(e["method"] == "GET" and e["path"].endswith("pvc-bump") and e.get("userAgent", "").startswith("hwameid")
                  for e in standin.requests_log()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    standin.api("PATCH", f"{LVS}/pvc-bump", {"metadata": {"labels": {"n": "20"}}},
                ctype="application/merge-patch+json", expect=200)
    out, _ = p.communicate(timeout=30)
    r = json.loads(out.splitlines()[-1])
    assert r == {"attempts": 2, "error": 0}, r
    # The write was computed from the fresh read (20), not from the stale one (10).
    assert standin.api("GET", f"{LVS}/pvc-bump")["metadata"]["labels"]["n"] == "21"
    puts = [e["code"] for e in standin.requests_log() if e["method"] == "PUT" and e["path"].endswith("pvc-bump")]
    assert puts == [409, 200], puts
