#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Benchmark of volume eviction: the drain of a node that holds N volumes.

    /usr/bin/python3 tests/bench/bench_evict.py [--volumes N] [--size-mib M] [--stream-runs R]
                                                [--config TEXT] [--keep]

A three-node cluster of the integration harness (tests/integration/harness.py: network
namespaces, loop-device LVM pools over sparse files, the stand-in API server, the real kubectl),
started outside pytest. k8s-node-1 gets N LocalVolumes (default 20) of M MiB (default 256) with one
replica each, made as tests/integration/test_migrate.make_volume makes them; the even-numbered ones
are filled with random data, the odd-numbered ones hold 10 % data (1 MiB of random data every
10 MiB, the rest holes), written through the LV's extents on the node's loop devices. Each
volume's sha256 is recorded.

Then `kubectl drain k8s-node-1 --ignore-daemonsets=true` (no pods use the volumes: the drain
returns once the node is cordoned), and the LocalVolumeReplicas and LocalVolumeMigrates are
polled every 100 ms (--poll) straight from the API server. A volume is done at the first poll
where its only replica is on another node, Ready and synced, and its evictor migration is
Completed or gone (the evictor deletes its migrations once Completed; the migrate controller
marks them Completed only after the source replica is gone). Afterwards every volume's data is
read back through the target's extents and compared with its sha256: a mismatch (or a missing
volume) makes the exit status 1.

Figures ("bench: evict_<name> <value> <unit>" lines for scripts, then a table beside the targets):

  drain_total_seconds     from `kubectl drain` returning to the last volume done.
  copy_seconds            wall-clock time during which at least one push was copying: the union of
                          the lifetimes of the source's push connections. A monitor thread reads
                          /proc/PID/net/tcp of k8s-node-1's network namespace every 20 ms; every
                          ESTABLISHED connection to a peer's block-stream port (10809) is one push
                          attempt (the daemon opens one connection per push attempt, before the
                          TLS handshake, and closes it when the copy is flushed or has failed), so
                          its lifetime covers connect, TLS, delta negotiation, the copy and the
                          final flush, to +-10 ms (the midpoint between two samples). This is
                          more accurate than the alternatives: the push-status annotation reports
                          progress only every 5 s and its rate leaves out connect and flush; the
                          source's "pushed" log line comes from a 500 ms poll timer; the
                          migration's status carries only second-resolution times. The union (not
                          the sum) is what can be subtracted from a wall-clock total: when pushes
                          run at once, the sum over pushes (copy_push_seconds_sum) exceeds it.
  control_plane_seconds   drain_total_seconds - copy_seconds: everything else on the critical
                          path (the evictor and migrate controller's steps and API round trips,
                          creating the target LVs, waiting for a copy slot, the target's local
                          verification of the digest, pruning the source). Per volume: divided
                          by N. target_verify_seconds (the union of the targets' "verifying" ..
                          "verified" log lines, timestamped by a 20 ms tail) shows how much of it
                          is the verification.
  copy_rate               bytes moved (the volumes' logical size, as bench-stream counts MB/s)
                          over copy_seconds.
  stream_rate             the block stream alone, measured in the same run: `hwamei-nbd copy`
                          of one random volume's data (a read-only loop device over its extents
                          on k8s-node-1) to `hwamei-nbd serve` of a fresh sparse loop device on
                          k8s-node-2, over TLS with a key derived from the cluster secret
                          (--cluster-secret/--identity), inside the nodes' namespaces: the
                          daemon's own path without the control plane. The median of
                          --stream-runs runs (default 3), each into a fresh destination (the
                          delta extension would otherwise send nothing); the first run's copy is
                          checked against the volume's sha256. stream_sparse_rate is the same for
                          a 10 % volume.
  copy_over_stream        copy_rate over the stream's rate for the same mix of volumes (the time
                          the stream alone needs for the drain's random and sparse volumes, one
                          after the other, from the two medians); copy_over_stream_random is
                          copy_rate over stream_rate (a random volume) as the issue words it.

Also printed: the [Migration] limits the daemons ran with (from --dump-config), how many pushes
copied at once (the maximum, and the time spent at each count), and a per-volume timeline.
Targets (goals, not assertions): control-plane overhead under 2 s per volume, copy at >= 90 %
of the stream's throughput. The exit status is 0 when everything ran and every volume arrived
intact, 1 otherwise, 130 when interrupted. Everything started is stopped by its PID, every loop
device detached and every namespace removed, also on Ctrl-C or SIGTERM; the work directory
(under --dir, default /var/tmp) is removed unless --keep or a failure (its logs are then kept,
the disk images are always removed). HWAMEID_BUILDDIR selects the build.
"""

import argparse
import hashlib
import json
import mmap
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from harness import HW, MiB, POOL_HDD, STREAM_PORT, Cluster  # noqa: E402
from conftest import BUILDDIR, HWAMEID  # noqa: E402
import test_migrate  # noqa: E402  (how the tests make a volume)

HWAMEI_NBD = BUILDDIR / "hwamei-nbd"
LV = f"{HW}/localvolumes"
LVR = f"{HW}/localvolumereplicas"
LVM = f"{HW}/localvolumemigrates"
SOURCE = "k8s-node-1"
SPARSE_PERIOD = 10 * MiB  # the 10 % volumes: 1 MiB of data at the start of every 10 MiB
SPARSE_DATA = 1 * MiB

TARGET_CONTROL_PER_VOLUME = 2.0
TARGET_COPY_OVER_STREAM = 0.9


class Broken(Exception):
    """Something the benchmark depends on failed: the run has no meaningful figures."""


def log(msg):
    print("bench-evict: " + msg, file=sys.stderr, flush=True)


FIGURES = []  # (name, value, unit, target text, within target: True/False/None)


def figure(name, value, unit, target="", ok=None):
    if isinstance(value, float):
        value = round(value, 3)
    FIGURES.append(("evict_" + name, value, unit, target, ok))
    print("bench: evict_%s %s %s" % (name, value, unit), flush=True)


def run(cmd, timeout=120, check=True):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise Broken("%s failed (%d): %s" % (" ".join(map(str, cmd)), r.returncode, (r.stdout + r.stderr).strip()))
    return r


def union(intervals):
    """Total length covered by [(start, end)]."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def remote_ip(addr):
    """The IPv4 address of a /proc/net/tcp "HEX:PORT" (or "-" for IPv6)."""
    hexip = addr.rsplit(":", 1)[0]
    if len(hexip) != 8:
        return "-"
    return ".".join(str(b) for b in reversed(bytes.fromhex(hexip)))


def concurrency(intervals):
    """(maximum overlap, {k: seconds with exactly k intervals open}) of [(start, end)]."""
    points = sorted([(s, 1) for s, e in intervals] + [(e, -1) for s, e in intervals])
    k, peak, last, at = 0, 0, None, {}
    for t, d in points:
        if last is not None and k > 0:
            at[k] = at.get(k, 0.0) + (t - last)
        k += d
        peak = max(peak, k)
        last = t
    return peak, at


# ------------------------------------------------------------------------------------- volumes


def pieces(extents, logical, length):
    """(device, device offset, length) covering logical bytes [logical, logical + length) of an LV."""
    base = 0
    for dev, off, n in extents:
        if logical < base + n and length > 0:
            start = max(logical, base)
            k = min(base + n, logical + length) - start
            yield dev, off + (start - base), k
            length -= k
            logical += k
        base += n
    if length > 0:
        raise Broken("the extents end before the range")


def write_sparse(extents, size):
    """1 MiB of random data at every 10 MiB of the LV (O_DIRECT, then fsync); the rest stays holes."""
    buf = mmap.mmap(-1, SPARSE_DATA)
    fds = {}
    try:
        for logical in range(0, size, SPARSE_PERIOD):
            n = min(SPARSE_DATA, size - logical)
            data = os.urandom(n)
            pos = 0
            for dev, off, k in pieces(extents, logical, n):
                if dev not in fds:
                    fds[dev] = os.open(dev, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
                buf[:k] = data[pos:pos + k]
                view = memoryview(buf)[:k]
                if os.pwritev(fds[dev], [view], off) != k:
                    raise Broken("short write to %s" % dev)
                view.release()
                pos += k
        for fd in fds.values():
            os.fsync(fd)
    finally:
        for fd in fds.values():
            os.close(fd)
        buf.close()


def make_volume(c, name, size, sparse):
    """A LocalVolume with one replica on the source node, made as test_migrate.make_volume makes it
    (where the daemons have a volume controller, it places the replica: test_migrate's
    volume_replicas waits for that; otherwise the replica is created here and the volume's status
    patched), then filled; returns (replica, sha256)."""
    lv = {"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolume", "metadata": {"name": name},
          "spec": {"requiredCapacityBytes": size, "poolName": POOL_HDD, "replicaNumber": 1,
                   "accessibility": {"nodes": [SOURCE]}, "pvcNamespace": "default", "pvcName": name}}
    c.kubectl("create", "-f", "-", input=json.dumps(lv))
    placed = hasattr(test_migrate, "volume_replicas")
    if placed:
        (replica,) = test_migrate.volume_replicas(c, name, [SOURCE])
    else:
        replica = c.create_replica(SOURCE, size, volume=name)
        c.wait_replica_ready(replica, 60)
    if sparse:
        write_sparse(c.extents(replica), size)
        digest = c.checksum(replica)
    else:
        digest = c.write_random(replica)
    if not placed:
        c.api("PATCH", f"{LV}/{name}/status", {"status": {"replicas": [replica], "state": "Ready"}},
              ctype="application/merge-patch+json", expect=200)
    return replica, digest


# -------------------------------------------------------------------------------------- monitor


class Monitor(threading.Thread):
    """Samples, every interval: the source node's TCP connections to block-stream ports (push
    attempts), and new lines of every node's log, each stamped with time.monotonic()."""

    def __init__(self, c, interval=0.02):
        super().__init__(name="bench-evict-monitor", daemon=True)
        self.interval = interval
        self.netns_pid = c.node(SOURCE).holder.pid
        self.logs = {}
        for n in c.nodes:
            f = open(n.stderr_path, "rb")
            f.seek(0, os.SEEK_END)
            self.logs[n.name] = [f, b""]
        self.lines = []  # (t, node, text)
        self.open = {}  # (local, remote) -> start
        self.conns = []  # (start, end, remote)
        self.stop_event = threading.Event()
        self.error = None
        self.samples = 0

    def established(self):
        out = set()
        for table in ("tcp", "tcp6"):
            try:
                with open(f"/proc/{self.netns_pid}/net/{table}") as f:
                    next(f)
                    for line in f:
                        parts = line.split()
                        if parts[3] == "01" and int(parts[2].rsplit(":", 1)[1], 16) == STREAM_PORT:
                            out.add((parts[1], parts[2]))
            except FileNotFoundError:
                pass
        return out

    def read_logs(self, t):
        for name, slot in self.logs.items():
            data = slot[0].read()
            if not data:
                continue
            data = slot[1] + data
            *complete, slot[1] = data.split(b"\n")
            for line in complete:
                self.lines.append((t, name, line.decode(errors="replace")))

    def run(self):
        prev = time.monotonic()
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                mid = (prev + now) / 2  # the change happened between the two samples
                seen = self.established()
                for key in seen - self.open.keys():
                    self.open[key] = mid
                for key in set(self.open) - seen:
                    self.conns.append((self.open.pop(key), mid, key[1]))
                self.read_logs(now)
                self.samples += 1
                prev = now
                time.sleep(self.interval)
        except BaseException as e:  # reported by the main thread
            self.error = e

    def stop(self):
        self.stop_event.set()
        self.join(10)
        t = time.monotonic()
        for key, start in self.open.items():
            self.conns.append((start, t, key[1]))
        self.open = {}
        self.read_logs(t)
        for f, _ in self.logs.values():
            f.close()


PUSHING = re.compile(r"^Replica (\S+): pushing to (\S+) \(attempt (\d+)\)")
PUSHED = re.compile(r"^Replica (\S+): pushed (\d+) bytes \((\d+) sent\) to (\S+),")
VERIFYING = re.compile(r"^Replica (\S+): the source is done; verifying")
VERIFIED = re.compile(r"^Replica (\S+): (verified|verification failed)")


# --------------------------------------------------------------------------- the stream alone


class StreamReference:
    """hwamei-nbd copy from a read-only loop device over a source volume's extents on the source
    node to hwamei-nbd serve of a fresh sparse loop device on another node."""

    def __init__(self, c, workdir):
        self.c = c
        self.dir = os.path.join(workdir, "stream")
        os.makedirs(self.dir)
        self.loops = []  # attached by us: detached in cleanup()
        self.procs = []  # hwamei-nbd serve processes (by PID)

    def attach(self, path, offset=0, size=None, readonly=False):
        cmd = ["losetup", "--find", "--show"]
        if readonly:
            cmd.append("--read-only")
        if offset or size:
            cmd += ["--offset", str(offset), "--sizelimit", str(size)]
        dev = run(cmd + [path]).stdout.strip()
        self.loops.append(dev)
        return dev

    def detach(self, dev):
        run(["losetup", "-d", dev], check=False)
        if dev in self.loops:
            self.loops.remove(dev)

    def source_loop(self, replica):
        """A read-only loop device over the replica's data (it must be one segment on one disk)."""
        extents = self.c.extents(replica)
        if len(extents) != 1:
            return None
        dev, off, n = extents[0]
        node = self.c.node(SOURCE)
        image = node.images[node.disks.index(dev)]
        return self.attach(str(image), off, n, readonly=True), n

    def copy_once(self, src_dev, size, target, run_no, expect=None):
        source = self.c.node(SOURCE)
        img = os.path.join(self.dir, f"dst-{run_no}.img")
        with open(img, "wb") as f:
            f.truncate(size)
        dst = self.attach(img)
        identity = f"bench-stream-{run_no}"
        serve = None
        try:
            err = open(os.path.join(self.dir, f"serve-{run_no}.log"), "wb")
            serve = target.popen([HWAMEI_NBD, "serve", dst, "--listen", f"{target.ip}:0", "--export", "bench",
                                  "--cluster-secret", self.c.secret, "--identity", identity],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
            err.close()
            self.procs.append(serve)
            ready, _, _ = select.select([serve.stdout], [], [], 15)
            m = re.search(r":(\d+)$", serve.stdout.readline().decode().strip()) if ready else None
            if not m:
                raise Broken("hwamei-nbd serve did not start on %s" % target.name)
            uri = f"nbds://{identity}@{target.ip}:{m.group(1)}/bench"
            t = time.monotonic()
            r = source.run([HWAMEI_NBD, "copy", src_dev, uri, "--cluster-secret", self.c.secret], check=False,
                           timeout=1800)
            secs = time.monotonic() - t
            if r.returncode != 0:
                raise Broken("hwamei-nbd copy failed: %s" % r.stderr.strip())
            if expect:
                h = hashlib.sha256()
                with open(img, "rb") as f:
                    for chunk in iter(lambda: f.read(4 * MiB), b""):
                        h.update(chunk)
                if h.hexdigest() != expect:
                    raise Broken("the stream's copy of the reference volume differs from its data")
            return secs, r.stdout.strip()
        finally:
            if serve is not None:
                serve.terminate()
                try:
                    serve.wait(10)
                except subprocess.TimeoutExpired:
                    serve.kill()
                    serve.wait()
                serve.stdout.close()
                self.procs.remove(serve)
            self.detach(dst)
            os.unlink(img)

    def measure(self, replica, digest, runs, label):
        got = self.source_loop(replica)
        if got is None:
            return None
        src, size = got
        try:
            times = []
            for i in range(runs):
                secs, out = self.copy_once(src, size, self.c.node(2), f"{label}-{i}", digest if i == 0 else None)
                times.append(secs)
                log("stream %s run %d: %.2f s, %.0f MB/s (%s)" % (label, i + 1, secs, size / secs / 1e6, out))
            return size, statistics.median(times), times
        finally:
            self.detach(src)

    def cleanup(self):
        for p in list(self.procs):
            if p.poll() is None:
                p.kill()
            p.wait()
        self.procs = []
        for dev in list(self.loops):
            self.detach(dev)


# ----------------------------------------------------------------------------------------- drain


def poll_done(c, volumes, t_drained, timeout, interval):
    """Polls until every volume is done; returns ({volume: done time}, {volume: {state: first seen}},
    {volume: target node})."""
    done, states, where = {}, {v: {} for v in volumes}, {}
    seen_migration = set()
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 30
    while len(done) < len(volumes):
        t = time.monotonic()
        reps = c.api_request("GET", LVR)
        migs = c.api_request("GET", LVM)
        t_seen = (t + time.monotonic()) / 2
        if reps.status != 200 or migs.status != 200:
            raise Broken("the API server answered %d/%d" % (reps.status, migs.status))
        by_volume = {}
        for r in reps.json["items"]:
            by_volume.setdefault(r["spec"].get("volumeName"), []).append(r)
        mig = {}
        for m in migs.json["items"]:
            v = m["spec"].get("volumeName")
            if v in states:
                mig[v] = m
                st = (m.get("status") or {}).get("state") or "(new)"
                states[v].setdefault(st, t_seen)
                seen_migration.add(v)
                if st == "Aborted":
                    raise Broken("migration %s Aborted: %s" % (m["metadata"]["name"], m["status"].get("message")))
        for v in volumes:
            if v in done:
                continue
            rs = by_volume.get(v, [])
            if len(rs) != 1:
                continue
            r = rs[0]
            st = r.get("status") or {}
            if r["spec"]["nodeName"] == SOURCE or st.get("state") != "Ready" or not st.get("synced"):
                continue
            m = mig.get(v)
            if m is not None and (m.get("status") or {}).get("state") != "Completed":
                continue
            done[v] = t_seen
            where[v] = r["spec"]["nodeName"]
        if time.monotonic() > deadline:
            raise Broken("%d of %d volumes still not moved after %ds: %s" % (
                len(volumes) - len(done), len(volumes), timeout, ", ".join(v for v in volumes if v not in done)))
        if time.monotonic() > next_note:
            log("  %.0f s after the drain: %d of %d volumes moved" % (time.monotonic() - t_drained, len(done),
                                                                      len(volumes)))
            next_note += 30
        time.sleep(max(0.0, interval - (time.monotonic() - t)))
    return done, states, where


def migration_limits(c):
    """The [Migration] section of the source node's effective configuration, or a note."""
    r = run([HWAMEID, "--config", c.node(SOURCE).config, "--dump-config"], check=False)
    out, section = [], None
    for line in r.stdout.splitlines():
        s = line.strip()
        if s.startswith("["):
            section = s
        elif section == "[Migration]" and "=" in s and not s.startswith("#"):
            out.append(s)
    return ", ".join(out) if out else "no [Migration] settings in this build (no concurrency limits)"


# ------------------------------------------------------------------------------------------ main


def print_table():
    print("%-44s %14s %-6s %-10s %s" % ("figure", "value", "unit", "target", ""))
    for name, value, unit, target, ok in FIGURES:
        mark = "" if ok is None else ("ok" if ok else "MISSES TARGET")
        print("%-44s %14s %-6s %-10s %s" % (name, value, unit, target, mark))


def bench(c, args, work):
    size = args.size_mib * MiB
    names = [f"pvc-bench-{i:02d}" for i in range(args.volumes)]
    sparse = {v: i % 2 == 1 for i, v in enumerate(names)}

    limits = migration_limits(c)
    log("migration limits: %s" % limits)
    t = time.monotonic()
    replicas, digests = {}, {}
    for v in names:
        replicas[v], digests[v] = make_volume(c, v, size, sparse[v])
    log("%d volumes of %d MiB on %s (%d random, %d with 10 %% data) in %.1f s" % (
        len(names), args.size_mib, SOURCE, sum(not s for s in sparse.values()), sum(sparse.values()),
        time.monotonic() - t))

    # The stream alone, node-1 -> node-2, for a random and a sparse volume.
    ref = StreamReference(c, work)
    stream = {}
    try:
        for kind, want_sparse in (("random", False), ("sparse10", True)):
            for v in names:
                if sparse[v] == want_sparse:
                    got = ref.measure(replicas[v], digests[v], args.stream_runs, kind)
                    if got:
                        stream[kind] = got
                        break
            if kind not in stream:
                log("no %s volume lies in one piece on one disk: no stream figure for it" % kind)
    finally:
        ref.cleanup()

    # The drain.
    mon = Monitor(c)
    mon.start()
    try:
        t_start = time.monotonic()
        c.kubectl("drain", SOURCE, "--ignore-daemonsets=true", timeout=600)
        t0 = time.monotonic()
        log("kubectl drain returned after %.2f s; waiting for the volumes to move" % (t0 - t_start))
        done, states, where = poll_done(c, names, t0, args.timeout, args.poll)
        t_end = max(done.values())
    finally:
        mon.stop()
    if mon.error:
        raise Broken("the monitor failed: %r" % mon.error)
    log("all %d volumes moved %.2f s after the drain returned (%d monitor samples)" % (
        len(names), t_end - t0, mon.samples))

    # Verification.
    bad = []
    for v in names:
        reps = [r for r in c.api("GET", LVR, expect=200)["items"] if r["spec"]["volumeName"] == v]
        if len(reps) != 1 or reps[0]["spec"]["nodeName"] == SOURCE:
            bad.append(f"{v}: replicas {[r['spec']['nodeName'] for r in reps]}")
            continue
        got = c.checksum(reps[0]["metadata"]["name"])
        if got != digests[v]:
            bad.append(f"{v}: sha256 {got[:16]}… on {reps[0]['spec']['nodeName']}, written {digests[v][:16]}…")
    log("checksums: %d of %d volumes intact" % (len(names) - len(bad), len(names)))

    # Pushes and verifications from the logs; copy time from the connections.
    pushes = {}  # source replica -> dict
    verifying, verified = {}, {}
    for t, node, line in mon.lines:
        m = PUSHING.match(line)
        if m and node == SOURCE:
            p = pushes.setdefault(m.group(1), {"start": t, "attempts": 0})
            p["attempts"] = int(m.group(3))
            p["target_replica"] = m.group(2).rsplit("/", 1)[-1]
            p["uri"] = m.group(2)
            continue
        m = PUSHED.match(line)
        if m and node == SOURCE:
            p = pushes.setdefault(m.group(1), {"start": None, "attempts": 1})
            p.update(end=t, size=int(m.group(2)), sent=int(m.group(3)))
            continue
        m = VERIFYING.match(line)
        if m:
            verifying.setdefault(m.group(1), t)
            continue
        m = VERIFIED.match(line)
        if m:
            verified[m.group(1)] = t
    verify_intervals = [(verifying[r], verified[r]) for r in verifying if r in verified]

    total = t_end - t0
    conns = [(s, e) for s, e, _ in mon.conns]
    early = union([(s, min(e, t0)) for s, e in conns if s < t0])
    late = union([(max(s, t_end), e) for s, e in conns if e > t_end])
    copy = union([(max(s, t0), min(e, t_end)) for s, e in conns if e > t0 and s < t_end])
    copy_sum = sum(e - s for s, e in conns)
    peak, at = concurrency(conns)
    by_replica = {replicas[v]: v for v in names}
    moved = sum(p.get("size", 0) for r, p in pushes.items() if r in by_replica) or len(names) * size
    sent = sum(p.get("sent", 0) for r, p in pushes.items() if r in by_replica)
    control = total - copy
    rate = moved / copy / 1e6 if copy > 0 else 0.0

    # Each push's connection: the first one to its target that opened after its log line.
    free = sorted(mon.conns)
    for r, p in sorted(pushes.items(), key=lambda kv: kv[1].get("start") or 0):
        ip = re.search(r"@([\d.]+):", p.get("uri", ""))
        for i, (s, e, remote) in enumerate(free):
            if ip and remote_ip(remote) == ip.group(1) and p.get("start") is not None and s >= p["start"] - 0.05:
                p["conn"] = (s, e)
                del free[i]
                break

    # Per-volume timeline.
    print("\nPer volume, seconds after `kubectl drain` returned: the migration first seen, and first seen in "
          "AddReplica, SyncReplica, PruneReplica (polls of the API); the push's connection open and its "
          "length; the target's \"verified\" log line; done:")
    cols = ("volume", "data", "to", "seen", "AddRepl", "SyncRepl", "push at", "copy s", "MiB sent", "verified",
            "Prune", "done")
    fmt = "%-14s %-7s %-11s" + " %8s" * (len(cols) - 3)
    print(fmt % cols)
    phases = {k: [] for k in ("queued", "target", "copy", "verify", "prune")}
    for v in names:
        st = states[v]
        p = pushes.get(replicas[v], {})
        conn = p.get("conn")
        verified_at = verified.get(p.get("target_replica"))

        def rel(x):
            return "%.2f" % (x - t0) if x is not None else "-"
        first = min(st.values()) if st else None
        print(fmt % (v, "10 %" if sparse[v] else "random", where.get(v, "-"), rel(first), rel(st.get("AddReplica")),
                     rel(st.get("SyncReplica")), rel(conn[0] if conn else None),
                     "%.2f" % (conn[1] - conn[0]) if conn else "-", "%.1f" % (p.get("sent", 0) / MiB),
                     rel(verified_at), rel(st.get("PruneReplica")), rel(done.get(v))))
        if first is not None and st.get("AddReplica") is not None and conn and verified_at:
            phases["queued"].append(st["AddReplica"] - first)
            phases["target"].append(conn[0] - st["AddReplica"])
            phases["copy"].append(conn[1] - conn[0])
            phases["verify"].append(verified_at - conn[1])
            phases["prune"].append(done[v] - verified_at)
    if phases["copy"]:
        print("Mean per volume: %.2f s from the migration's creation to AddReplica (queued: copy slots, the "
              "controllers' steps), %.2f s to the push's connection (target replica and LV, export, PUSH), "
              "%.2f s copying, %.2f s to \"verified\" on the target, %.2f s to done (prune the source, "
              "Completed)" % tuple(statistics.mean(phases[k]) for k in ("queued", "target", "copy", "verify",
                                                                          "prune")))
    for kind, want_sparse in (("random", False), ("sparse10", True)):
        secs = [pushes[replicas[v]]["conn"][1] - pushes[replicas[v]]["conn"][0] for v in names
                if sparse[v] == want_sparse and "conn" in pushes.get(replicas[v], {})]
        if secs and kind in stream:
            ref_secs = stream[kind][1] * size / stream[kind][0]
            print("%s volumes: a push took %.2f s on average (%.2f-%.2f), the stream alone %.2f s (%.2f x its "
                  "throughput)" % ("Random" if kind == "random" else "10 %", statistics.mean(secs), min(secs),
                                   max(secs), ref_secs, ref_secs / statistics.mean(secs)))
    print("\nPush connections from %s: %d (%d pushes logged, %d attempts); at most %d copying at once; "
          "time with k pushes copying: %s" % (
              SOURCE, len(conns), len(pushes), sum(p.get("attempts", 1) for p in pushes.values()), peak,
              ", ".join("k=%d: %.1f s" % (k, at[k]) for k in sorted(at)) or "-"))
    if early > 0 or late > 0:
        print("Copying outside the measured window: %.2f s before `kubectl drain` returned, %.2f s after the "
              "last volume was done (left out of copy_seconds)" % (early, late))
    print("Daemons' [Migration] limits: %s\n" % limits)

    figure("volumes", len(names), "count")
    figure("bytes_moved", moved, "B")
    figure("data_bytes_sent", sent, "B")
    figure("drain_command_seconds", t0 - t_start, "s")
    figure("drain_total_seconds", total, "s")
    figure("copy_seconds", copy, "s")
    figure("copy_push_seconds_sum", copy_sum, "s")
    figure("push_concurrency_max", peak, "count")
    figure("control_plane_seconds", control, "s")
    figure("control_plane_seconds_per_volume", control / len(names), "s",
           "< %g" % TARGET_CONTROL_PER_VOLUME, control / len(names) < TARGET_CONTROL_PER_VOLUME)
    figure("target_verify_seconds", union(verify_intervals), "s")
    figure("copy_rate", rate, "MB/s")
    if "random" in stream:
        ssize, secs, _ = stream["random"]
        figure("stream_rate", ssize / secs / 1e6, "MB/s")
    if "sparse10" in stream:
        ssize, secs, _ = stream["sparse10"]
        figure("stream_sparse_rate", ssize / secs / 1e6, "MB/s")
    if "random" in stream and "sparse10" in stream and copy > 0:
        # The stream's time for the same volumes, one after the other (scaled to their size).
        per_byte = {k: stream[k][1] / stream[k][0] for k in stream}
        expected = sum(size * per_byte["sparse10" if sparse[v] else "random"] for v in names)
        mix_rate = len(names) * size / expected / 1e6
        figure("stream_mix_rate", mix_rate, "MB/s")
        figure("copy_over_stream", rate / mix_rate, "x", ">= %g" % TARGET_COPY_OVER_STREAM,
               rate / mix_rate >= TARGET_COPY_OVER_STREAM)
    if "random" in stream and copy > 0:
        figure("copy_over_stream_random", rate / (stream["random"][0] / stream["random"][1] / 1e6), "x")
    figure("checksum_failures", len(bad), "count", "0", not bad)
    if bad:
        raise Broken("data differs after the move: " + "; ".join(bad))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--volumes", type=int, default=20)
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--stream-runs", type=int, default=3, help="runs of the stream alone per kind (median)")
    p.add_argument("--poll", type=float, default=0.1, help="seconds between polls of the API server")
    p.add_argument("--timeout", type=int, default=1800, help="seconds the volumes may take to move")
    p.add_argument("--config", default="", help="extra hwameid.conf text for every node, e.g. "
                   "'[Migration]\\nMaxConcurrent=0' (backslash-n for newlines)")
    p.add_argument("--dir", default="/var/tmp", help="where the work directory goes")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs; never the images)")
    args = p.parse_args()
    if args.volumes < 1 or args.size_mib < 16 or args.size_mib % 4:
        p.error("--volumes must be at least 1, --size-mib a multiple of 4 of at least 16")
    if os.geteuid() != 0:
        print("bench-evict: needs root (namespaces, loop devices, LVM)", file=sys.stderr)
        return 1
    for f in (HWAMEID, HWAMEI_NBD):
        if not os.access(f, os.X_OK):
            print("bench-evict: %s is missing: build first (make)" % f, file=sys.stderr)
            return 1

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    # Each node holds every volume, with room to spare (LVM metadata, extents), on two sparse disks.
    per_disk = (args.volumes * args.size_mib * 21 // 20 + 128) // 2
    per_disk = (per_disk + 3) // 4 * 4 * MiB
    work = tempfile.mkdtemp(prefix="bench-evict-", dir=args.dir)
    c = None
    status = 0
    try:
        c = Cluster(os.path.join(work, "cluster"), nodes=3, disks_per_node=2, disk_size=per_disk,
                    config=args.config.replace("\\n", "\n") + ("\n" if args.config else ""))
        t = time.monotonic()
        c.start()
        log("cluster %s up in %.1f s (3 nodes, 2 disks of %d MiB each), work directory %s" % (
            c.prefix, time.monotonic() - t, per_disk // MiB, work))
        bench(c, args, work)
    except (Broken, AssertionError, RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
        log("BROKEN: %s" % e)
        if c is not None and c.started:
            log("node logs are in %s" % c.dir)
        status = 1
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        status = 130
    finally:
        # Nothing interrupts the cleanup.
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            if c is not None:
                problems = c.cleanup() + c.leftovers()
                if problems:
                    log("cleanup: %s" % "; ".join(problems))
                    status = status or 1
            if args.keep or status == 1:
                log("kept %s" % work)
            else:
                shutil.rmtree(work, ignore_errors=True)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    if FIGURES:
        print("\nSummary (targets are goals, not assertions):")
        print_table()
    return status


if __name__ == "__main__":
    sys.exit(main())
