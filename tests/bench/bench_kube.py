#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Benchmark of the Kubernetes layer against the stand-in API server.

    /usr/bin/python3 tests/bench/bench_kube.py [--idle-seconds N] [--objects N] [--patches N]

Three measurements, each printed as "bench: <name> <value> <unit>" lines (for scripts that
compare runs) and as a table with the targets beside them:

1. Idle cost: two daemons (node-a, node-b, default timings) connected to the stand-in, one of
   them leading. For the idle period, the API requests of each daemon (told apart by their own
   client certificates, so by the request log's "user") per minute, split into ordinary requests
   and watch (re)connections, and each daemon's VmRSS at the end.
2. Informer memory: N LocalVolumes in the stand-in, listed and cached by kube-probe; the cache's
   own accounting (kube_cache_memory) per object, and the growth of the probe's RSS per object
   over a probe whose cache is empty.
3. Event latency: one LocalVolume patched M times in sequence; the time from the patch's
   response (and from its sending) to the informer's "updated" handler call.

Nothing here asserts on time: the script exits 0 when it ran, 1 when something broke (a process
died, the stand-in failed, an event was lost). HWAMEID_BUILDDIR selects the build (default
build/). Everything started is stopped by its PID and the temporary directory is removed.
"""

import argparse
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "standin"))
from objects import HW, lv, node  # noqa: E402
from standinlib import Standin  # noqa: E402

BUILDDIR = os.environ.get("HWAMEID_BUILDDIR", os.path.join(ROOT, "build"))
HWAMEID = os.path.join(BUILDDIR, "hwameid")
HWAMEICTL = os.path.join(BUILDDIR, "hwameictl")
KUBE_PROBE = os.path.join(BUILDDIR, "tests", "helpers", "kube-probe")
STANDIN_TOOL = os.path.join(ROOT, "tools", "kube-standin")

LVS = HW + "/localvolumes"
EMPTY_RESOURCE = HW + "/localvolumemigrates"  # nothing creates these here: the baseline probe
NS = "hwameid-system"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/%s/leases" % NS

TARGET_FOLLOWER_REQ_PER_MIN = 3.0
TARGET_RSS_KIB = 16 * 1024
TARGET_CACHE_BYTES_PER_OBJECT = 2048


class Broken(Exception):
    """Something the benchmark depends on failed: the run has no meaningful figures."""


def log(msg):
    print("bench-kube: " + msg, file=sys.stderr, flush=True)


FIGURES = []  # (name, value, unit, target text or "", within target: True/False/None)


def figure(name, value, unit, target="", ok=None):
    if isinstance(value, float):
        value = round(value, 3)
    FIGURES.append((name, value, unit, target, ok))
    print("bench: %s %s %s" % (name, value, unit), flush=True)


def proc_status(pid, key):
    """A field of /proc/PID/status in KiB (VmRSS, VmHWM), or None when the process is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def percentile(values, p):
    """Nearest-rank percentile of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


# ------------------------------------------------------------------------------------------ daemon


class Daemon:
    """build/hwameid with a NOTIFY_SOCKET and a control socket of its own, as in the integration
    tests (tests/integration/conftest.py), without pytest."""

    def __init__(self, workdir, node_name, kubeconfig):
        self.dir = workdir
        self.name = node_name
        os.makedirs(workdir, exist_ok=True)
        self.socket = os.path.join(workdir, "control.sock")
        self.config = os.path.join(workdir, "hwameid.conf")
        with open(self.config, "w") as f:
            f.write("[Node]\nName=%s\n[Kubernetes]\nKubeconfig=%s\n[Control]\nSocket=%s\n"
                    % (node_name, kubeconfig, self.socket))
        self.notify_path = os.path.join(workdir, "notify")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify.setblocking(False)
        self.statuses = []
        self.ready = False
        self.proc = None
        self.stderr_path = os.path.join(workdir, "stderr")
        self.stderr = None

    def start(self):
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path)
        for k in ("WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            env.pop(k, None)
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([HWAMEID, "--config", self.config], env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.stderr,
                                     stderr=self.stderr)

    def drain_notify(self):
        while True:
            try:
                data = self.notify.recv(4096).decode(errors="replace")
            except BlockingIOError:
                return
            fields = dict(l.split("=", 1) for l in data.split("\n") if "=" in l)
            if fields.get("READY") == "1":
                self.ready = True
            if "STATUS" in fields:
                self.statuses.append(fields["STATUS"])

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self):
        if not self.alive():
            raise Broken("hwameid %s exited with %s; its log:\n%s"
                         % (self.name, self.proc.returncode if self.proc else "?", self.log_tail()))

    def status(self):
        r = subprocess.run([HWAMEICTL, "--socket", self.socket, "--json", "status"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise Broken("hwameictl status of %s failed: %s" % (self.name, r.stderr.strip()))
        return json.loads(r.stdout)["cluster"]

    def rss_kib(self):
        return proc_status(self.proc.pid, "VmRSS")

    def log_tail(self, n=30):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout=15):
        """SIGTERM by PID; returns the exit status (None if it had to be killed)."""
        if self.proc is None:
            return None
        rc = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        else:
            rc = self.proc.returncode
        self.stderr.close()
        self.proc = None
        return rc

    def cleanup(self):
        if self.proc is not None:
            self.stop(timeout=5)
        self.notify.close()


# ----------------------------------------------------------------------------------------- probe


class Probe:
    """kube-probe KUBECONFIG inform PATH; every line stamped with its arrival time."""

    def __init__(self, kubeconfig, path):
        self.started = time.monotonic()
        self.proc = subprocess.Popen([KUBE_PROBE, kubeconfig, "inform", path],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines = queue.Queue()
        self.stderr = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            t = time.monotonic()
            try:
                self.lines.put((t, json.loads(raw)))
            except ValueError:
                self.lines.put((t, {"event": "garbage", "raw": raw[:200]}))
        self.lines.put((time.monotonic(), None))

    def _read_err(self):
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode(errors="replace"))
            del self.stderr[:-50]

    def next(self, timeout):
        try:
            t, item = self.lines.get(timeout=max(timeout, 0.001))
        except queue.Empty:
            return None, None
        if item is None:
            raise Broken("kube-probe ended (status %s): %s" % (self.proc.wait(), "".join(self.stderr)))
        return t, item

    def wait_synced(self, timeout):
        """Arrival time of the first "synced"; handler calls before it are counted."""
        deadline = time.monotonic() + timeout
        added = 0
        while True:
            t, item = self.next(deadline - time.monotonic())
            if item is None:
                raise Broken("kube-probe did not sync within %ds" % timeout)
            if item["event"] == "synced":
                return t, added
            added += item["event"] == "added"

    def rss_kib(self):
        return proc_status(self.proc.pid, "VmRSS")

    def hwm_kib(self):
        return proc_status(self.proc.pid, "VmHWM")

    def stop(self, timeout=30):
        """SIGTERM; the final line (cache and counters)."""
        self.proc.send_signal(signal.SIGTERM)
        last = None
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, item = self.lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                self.kill()
                raise Broken("kube-probe did not exit within %ds of SIGTERM" % timeout)
            if item is None:
                break
            last = item
        rc = self.proc.wait(timeout)
        if rc != 0:
            raise Broken("kube-probe exited with %d: %s" % (rc, "".join(self.stderr)))
        return last

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------------------- helpers


def mint(standin, user, out):
    r = subprocess.run(["/usr/bin/python3", STANDIN_TOOL, "mint-kubeconfig", "--state-dir",
                        standin.state_dir, "--user", user, "--out", out],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise Broken("mint-kubeconfig %s failed: %s" % (user, r.stderr.strip()))
    return out


def check_standin(standin):
    if standin.proc is None or standin.proc.poll() is not None:
        raise Broken("the stand-in exited; see its log")


def wait_until(what, predicate, timeout, daemons=(), standin=None, step=0.2):
    deadline = time.monotonic() + timeout
    while True:
        for d in daemons:
            d.drain_notify()
            d.check_alive()
        if standin is not None:
            check_standin(standin)
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Broken("timed out after %ds waiting for %s" % (timeout, what))
        time.sleep(step)


def last_seq(standin):
    items = standin.admin("GET", "/requests?since=0")["items"]
    return items[-1]["seq"] if items else 0


def typical_lv(i):
    """objects.lv() with the names a real cluster has (pvc-<uid>, one claim per volume)."""
    uid = "%08x-%04x-4%03x-8%03x-%012x" % (0x6ca4c0d4 + i, i & 0xffff, i & 0xfff, (i * 7) & 0xfff,
                                           0x83b219cbf5c5 + i)
    name = "pvc-" + uid
    o = lv(name)
    o["spec"]["pvcName"] = "data-mysql-%d" % i
    o["spec"]["accessibility"]["nodes"] = ["k8s-node-%d" % (1 + i % 3)]
    return o


def typical_status(name, i):
    return {"status": {"allocatedCapacityBytes": 1073741824, "usedCapacityBytes": 1073741824,
                       "replicas": [name + "-%05d" % i], "state": "Ready",
                       "publishedNode": "k8s-node-%d" % (1 + i % 3), "fsType": "xfs"}}


def exchange(conn, method, path, body, ctype):
    """One request on a keep-alive connection: (status, body bytes).

    The stand-in writes a response's headers and body separately; on a reused connection the
    body then waits for the client's delayed ACK of the headers (Nagle, about 40 ms). The
    benchmark's own client acknowledges at once (TCP_QUICKACK) so that its timings are the
    server's, not that stall."""
    conn.request(method, path, body=body, headers={"Content-Type": ctype})
    if conn.sock is not None:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    resp = conn.getresponse()
    return resp.status, resp.read()


def create_objects(standin, n, workers):
    """POSTs n LocalVolumes and their status over `workers` keep-alive connections."""
    errors = []
    counter = iter(range(n))
    lock = threading.Lock()

    def work():
        conn = standin.connect()
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None or errors:
                    return
                o = typical_lv(i)
                name = o["metadata"]["name"]
                for method, path, body, ctype, want in (
                        ("POST", LVS, o, "application/json", 201),
                        ("PATCH", "%s/%s/status" % (LVS, name), typical_status(name, i),
                         "application/merge-patch+json", 200)):
                    for attempt in range(3):
                        try:
                            code, data = exchange(conn, method, path, json.dumps(body), ctype)
                            break
                        except (OSError, ConnectionError):
                            conn.close()
                            conn = standin.connect()
                    else:
                        errors.append("%s %s: connection failed" % (method, path))
                        return
                    if code != want:
                        errors.append("%s %s: %d %s" % (method, path, code, data[:200]))
                        return
        except Exception as e:  # noqa: BLE001 - reported as a broken run
            errors.append(repr(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise Broken("creating LocalVolumes failed: %s" % errors[0])


# ---------------------------------------------------------------------------------- measurements


def summarize_requests(entries, user):
    mine = [e for e in entries if e["user"] == user]
    ours = [e for e in mine if e.get("userAgent", "").startswith("hwameid/")]
    return {
        "all": mine,
        "foreign_agent": [e for e in mine if e not in ours],
        "requests": [e for e in ours if not e["watch"]],
        "watches": [e for e in ours if e["watch"]],
        "errors": [e for e in ours if not e["watch"] and not 200 <= e["code"] < 300],
    }


def describe(entries):
    counts = {}
    for e in entries:
        q = urllib.parse.parse_qs(e["query"])
        sel = q.get("fieldSelector", [""])[0]
        key = "%s %s%s%s -> %s" % (e["method"], e["path"], " [watch]" if e["watch"] else "",
                                    " fieldSelector=" + sel if sel else "", e["code"])
        counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


def bench_idle(standin, work, idle_seconds):
    for n in ("node-a", "node-b"):
        standin.api("POST", "/api/v1/nodes", node(n), expect=201)
    daemons = []
    users = {}
    for n in ("node-a", "node-b"):
        kc = mint(standin, "hwameid-" + n, os.path.join(work, "kubeconfig-" + n))
        d = Daemon(os.path.join(work, n), n, kc)
        users[n] = "hwameid-" + n
        daemons.append(d)
    try:
        wall_start = time.time()
        for d in daemons:
            d.start()
        wait_until("READY=1 from both daemons", lambda: all(d.ready for d in daemons), 30, daemons,
                   standin)
        wait_until("both daemons connected",
                   lambda: all(d.status()["state"] == "connected" for d in daemons), 60, daemons,
                   standin)

        def one_leader():
            st = [d.status() for d in daemons]
            lead = [d for d, s in zip(daemons, st) if s["leader"]["leading"]]
            if len(lead) > 1:
                raise Broken("two leaders at once")
            holders = {s["leader"]["holder"] for s in st}
            return lead[0] if len(lead) == 1 and len(holders) == 1 and "" not in holders else None

        leader = wait_until("a leader known to both", one_leader, 60, daemons, standin)
        agreed = time.time() - wall_start
        follower = [d for d in daemons if d is not leader][0]
        log("%s leads, %s follows; both agree %.1fs after the start" % (leader.name, follower.name, agreed))
        startup = [e for e in standin.admin("GET", "/requests?since=0")["items"]
                   if e["user"] == users[follower.name] and not e["watch"]]
        figure("kube_startup_leader_agreed_seconds", agreed, "s")
        figure("kube_startup_follower_requests", len(startup), "req")
        print("\nStart-up of the follower %s until both daemons named the same leader (%.1f s):"
              % (follower.name, agreed))
        for what, count in describe(startup):
            print("      %5d  %s" % (count, what))
        print()

        def heartbeats():
            return all(standin.request("GET", "%s/hwameid-node-%s" % (LEASES, d.name)).status == 200
                       for d in daemons)
        wait_until("both heartbeat Leases", heartbeats, 60, daemons, standin)
        time.sleep(2)  # the start-up requests in flight land before the window opens

        seq0 = last_seq(standin)
        sent0 = {d.name: d.status()["requestsSent"] for d in daemons}
        rss0 = {d.name: d.rss_kib() for d in daemons}
        t0, wall0 = time.monotonic(), time.time()
        log("idle for %ds" % idle_seconds)
        next_note = t0 + 60
        while time.monotonic() - t0 < idle_seconds:
            time.sleep(min(1.0, max(0.0, idle_seconds - (time.monotonic() - t0))))
            for d in daemons:
                d.check_alive()
            check_standin(standin)
            if time.monotonic() >= next_note:
                log("  %ds of %ds" % (time.monotonic() - t0, idle_seconds))
                next_note += 60
        t1, wall1 = time.monotonic(), time.time()
        minutes = (t1 - t0) / 60.0
        entries = [e for e in standin.admin("GET", "/requests?since=%d" % seq0)["items"]
                   if wall0 <= e["time"] <= wall1]
        rss1 = {d.name: d.rss_kib() for d in daemons}
        hwm = {d.name: proc_status(d.proc.pid, "VmHWM") for d in daemons}
        st1 = {d.name: d.status() for d in daemons}
        open_watches = standin.admin("GET", "/watches")["items"]
        if not st1[leader.name]["leader"]["leading"] or st1[follower.name]["leader"]["leading"]:
            raise Broken("leadership changed during the idle period: %r"
                         % {n: s["leader"] for n, s in st1.items()})

        res = {d.name: summarize_requests(entries, users[d.name]) for d in daemons}
        f, l = res[follower.name], res[leader.name]
        figure("kube_idle_follower_requests_per_min", len(f["requests"]) / minutes, "req/min",
               "< %g" % TARGET_FOLLOWER_REQ_PER_MIN,
               len(f["requests"]) / minutes < TARGET_FOLLOWER_REQ_PER_MIN)
        figure("kube_idle_follower_watch_reconnects_per_min", len(f["watches"]) / minutes, "req/min")
        figure("kube_idle_leader_requests_per_min", len(l["requests"]) / minutes, "req/min")
        figure("kube_idle_leader_watch_reconnects_per_min", len(l["watches"]) / minutes, "req/min")
        figure("kube_idle_rss_follower", rss1[follower.name], "KiB", "< %d" % TARGET_RSS_KIB,
               rss1[follower.name] < TARGET_RSS_KIB)
        figure("kube_idle_rss_leader", rss1[leader.name], "KiB", "< %d" % TARGET_RSS_KIB,
               rss1[leader.name] < TARGET_RSS_KIB)

        print("\nIdle period: %.1f s (%.2f min); requests by daemon (non-watch; watches are logged "
              "when they end):" % (t1 - t0, minutes))
        for d, role in ((follower, "follower"), (leader, "leader")):
            r = res[d.name]
            sent = st1[d.name]["requestsSent"] - sent0[d.name]
            print("  %s (%s, user %s): %d requests, %d watches ended, %d errors; the daemon's own "
                  "requestsSent counter grew by %d; VmRSS %d -> %d KiB (VmHWM %s KiB)"
                  % (d.name, role, users[d.name], len(r["requests"]), len(r["watches"]),
                     len(r["errors"]), sent, rss0[d.name], rss1[d.name], hwm[d.name]))
            for what, count in describe(r["requests"] + r["watches"]):
                print("      %5d  %s" % (count, what))
            gaps = {}
            for e in r["requests"]:
                gaps.setdefault(e["path"], []).append(e["time"])
            for path, times in sorted(gaps.items()):
                if len(times) > 2:
                    g = [b - a for a, b in zip(times, times[1:])]
                    print("      interval between writes of %s: min %.2f s, mean %.2f s, max %.2f s"
                          % (path.rsplit("/", 1)[-1], min(g), sum(g) / len(g), max(g)))
            if d is follower and r["requests"]:
                print("      at (s into the period): %s" % " ".join(
                    "%.1f" % (e["time"] - wall0) for e in r["requests"]))
            if r["foreign_agent"]:
                print("      %d request(s) with this identity but another User-Agent: %r"
                      % (len(r["foreign_agent"]), describe(r["foreign_agent"])))
        others = [e for e in entries if e["user"] not in users.values()]
        if others:
            print("  other clients: %r" % describe(others))
        print("  watches open at the end: %d" % len(open_watches))
        for w in open_watches:
            print("      %s %s %s" % (w["resource"], w.get("namespace") or "",
                                     w["query"].get("fieldSelector", "")))
        print()
    finally:
        bad = []
        for d in daemons:
            rc = d.stop()
            if rc != 0:
                bad.append(d.name)
                log("%s exited with %s on SIGTERM (None: killed); log tail:\n%s"
                    % (d.name, rc, d.log_tail()))
            d.cleanup()
    if bad:
        raise Broken("daemon(s) %s did not stop cleanly" % ", ".join(bad))


def bench_cache_and_latency(standin, work, n, patches, workers):
    kc = standin.kubeconfig
    # The baseline: the same program with an informer whose cache stays empty.
    base = Probe(kc, EMPTY_RESOURCE)
    try:
        base.wait_synced(60)
        time.sleep(0.5)
        rss_base = base.rss_kib()
        base_final = base.stop()
    finally:
        base.kill()
    log("baseline probe: VmRSS %d KiB, %d objects" % (rss_base, base_final.get("objects", -1)))

    t = time.monotonic()
    create_objects(standin, n, workers)
    dt = time.monotonic() - t
    log("created %d LocalVolumes (with status) in %.1fs (%.0f objects/s)" % (n, dt, n / dt))
    listed = standin.request("GET", LVS)
    if listed.status != 200 or len(listed.json["items"]) != n:
        raise Broken("the stand-in lists %s LocalVolumes, not %d"
                     % (len(listed.json["items"]) if listed.json else "?", n))
    json_bytes = sum(len(json.dumps(o, separators=(",", ":"))) for o in listed.json["items"]) / n
    sample = listed.json["items"][0]
    del listed

    probe = Probe(kc, LVS)
    try:
        t_synced, added = probe.wait_synced(600)
        list_seconds = t_synced - probe.started
        if added != n:
            raise Broken("the probe saw %d objects added before synced, not %d" % (added, n))
        time.sleep(0.5)
        rss = probe.rss_kib()
        hwm = probe.hwm_kib()

        # Latency: one object patched in sequence, each "updated" awaited.
        target = sample["metadata"]["name"]
        conn = standin.connect()
        lat_resp, lat_send, lost = [], [], 0
        try:
            for i in range(patches):
                body = json.dumps({"metadata": {"annotations": {"bench.hwameid.io/seq": str(i)}}})
                t_send = time.monotonic()
                code, data = exchange(conn, "PATCH", "%s/%s" % (LVS, target), body,
                                      "application/merge-patch+json")
                t_resp = time.monotonic()
                if code != 200:
                    raise Broken("PATCH %s: %d %s" % (target, code, data[:200]))
                rv = json.loads(data)["metadata"]["resourceVersion"]
                deadline = t_resp + 10
                while True:
                    t_line, item = probe.next(deadline - time.monotonic())
                    if item is None:
                        lost += 1
                        break
                    if item["event"] == "updated" and item.get("name") == target and item.get("rv") == rv:
                        lat_resp.append((t_line - t_resp) * 1000)
                        lat_send.append((t_line - t_send) * 1000)
                        break
        finally:
            conn.close()
        final = probe.stop()
    finally:
        probe.kill()

    objects = final.get("objects")
    cache_bytes = final.get("cacheBytes")
    if objects != n or cache_bytes is None:
        raise Broken("the probe's final line says objects=%r cacheBytes=%r (expected %d objects)"
                     % (objects, cache_bytes, n))
    figure("kube_cache_bytes_per_object", cache_bytes / n, "B", "< %d" % TARGET_CACHE_BYTES_PER_OBJECT,
           cache_bytes / n < TARGET_CACHE_BYTES_PER_OBJECT)
    figure("kube_informer_rss_per_object", (rss - rss_base) * 1024 / n, "B")
    figure("kube_list_seconds", list_seconds, "s")
    if lat_resp:
        for p, name in ((50, "p50"), (99, "p99"), (100, "max")):
            figure("kube_event_latency_" + name, percentile(lat_resp, p), "ms")
        for p, name in ((50, "p50"), (99, "p99"), (100, "max")):
            figure("kube_event_latency_from_send_" + name, percentile(lat_send, p), "ms")
    print("\nInformer: %d LocalVolumes, %.0f B of JSON each as served; cache %d B in all; probe "
          "VmRSS %d KiB (empty-cache probe %d KiB), VmHWM %d KiB; list+sync %.2f s; "
          "%d watch events awaited, %d lost.\n"
          % (n, json_bytes, cache_bytes, rss, rss_base, hwm, list_seconds, patches, lost))
    if lat_resp:
        slow = sorted(range(len(lat_send)), key=lambda i: -lat_send[i])[:3]
        print("Slowest updates (patch number: ms from sending): %s\n"
              % ", ".join("#%d: %.1f" % (i, lat_send[i]) for i in slow))
    if lost:
        raise Broken("%d of %d updates never reached the handler within 10 s" % (lost, patches))
    return json_bytes


def print_table():
    print("%-46s %14s %-8s %-10s %s" % ("figure", "value", "unit", "target", ""))
    for name, value, unit, target, ok in FIGURES:
        mark = "" if ok is None else ("ok" if ok else "OVER TARGET")
        print("%-46s %14s %-8s %-10s %s" % (name, value, unit, target, mark))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--idle-seconds", type=float, default=300)
    p.add_argument("--objects", type=int, default=10000)
    p.add_argument("--patches", type=int, default=200)
    p.add_argument("--workers", type=int, default=8, help="parallel connections for creating objects")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    for f in (HWAMEID, HWAMEICTL, KUBE_PROBE):
        if not os.access(f, os.X_OK):
            print("bench-kube: %s is missing: build first (make)" % f, file=sys.stderr)
            return 1

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)

    work = tempfile.mkdtemp(prefix="bench-kube-")
    standin = None
    status = 0
    try:
        os.makedirs(os.path.join(work, "standin"))
        standin = Standin(os.path.join(work, "standin"))
        standin.start()
        log("stand-in at %s, work directory %s" % (standin.url, work))
        bench_idle(standin, work, args.idle_seconds)
        check_standin(standin)
        bench_cache_and_latency(standin, work, args.objects, args.patches, args.workers)
        check_standin(standin)
    except (Broken, RuntimeError, AssertionError, OSError, ValueError) as e:
        log("BROKEN: %s" % e)
        status = 1
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    finally:
        if standin is not None:
            rc = standin.stop()
            if rc not in (0, None) and status == 0:
                log("the stand-in exited with %s" % rc)
                status = 1
        if args.keep:
            log("kept %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if FIGURES:
        print("\nSummary (targets are goals, not assertions):")
        print_table()
    return status


if __name__ == "__main__":
    sys.exit(main())
