#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Benchmark of the block stream against the reference tools, on loopback TCP.

    /usr/bin/python3 tests/bench/bench_stream.py [--size-mib N] [--dir DIR]

Three cases of the same size (default 2 GiB): a fully random volume, a sparse volume that is 10 %
random data, and that sparse volume re-sent after 1 % of it changed (the destination holds the
old version). For each, plain and over TLS-PSK, one run of:

  hwameid          hwamei-nbd copy SRC nbd://…  into hwamei-nbd serve DEST (the nodes' own path;
                   the re-send uses the delta extension)
  hwameid>nbdkit   hwamei-nbd copy SRC nbd://…  into nbdkit file DEST (our client alone)
  nbdcopy          nbdcopy --flush SRC nbd://…  into nbdkit file DEST

printing MB/s, CPU seconds per GiB (user+sys of the copying process) and its peak RSS, as
"bench: <name> <value> <unit>" lines and a table, the ratio hwameid/nbdcopy (the plain random case
is the line named "ratio"), TLS over plain for hwameid, and for the re-send the share of the size
that hwameid sent as data. Every copy is flushed before it counts. Nothing is asserted about time:
the exit status is 0 when everything ran, 1 when a copy failed. Sources live in DIR (default
/dev/shm, so that reading them costs nothing); destinations in a temporary directory on disk.
HWAMEID_BUILDDIR selects the build.
"""

import argparse
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILDDIR = os.environ.get("HWAMEID_BUILDDIR", os.path.join(ROOT, "build"))
HWAMEI_NBD = os.path.join(BUILDDIR, "hwamei-nbd")
MiB = 1 << 20
GiB = 1 << 30


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_sources(d, size):
    """random, sparse (10 % data in 1 MiB pieces), sparse with 1 % of it changed."""
    random_path = os.path.join(d, "random.img")
    with open(random_path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 64 * MiB)
            f.write(os.urandom(n))
            left -= n
    sparse_path = os.path.join(d, "sparse.img")
    with open(sparse_path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, 10 * MiB):
            f.seek(off)
            f.write(os.urandom(MiB))
    changed_path = os.path.join(d, "sparse-changed.img")
    subprocess.run(["cp", "--sparse=always", sparse_path, changed_path], check=True)
    with open(changed_path, "r+b") as f:
        # 1 % of the size, in 64 KiB pieces spread over the data regions.
        pieces, regions = size // 100 // (64 * 1024), size // (10 * MiB)
        for i in range(pieces):
            f.seek((i % regions) * 10 * MiB + (i // regions) * 64 * 1024 % MiB)
            f.write(os.urandom(64 * 1024))
    return {"random": random_path, "sparse10": sparse_path, "sparse10-changed": changed_path}


def prepare_dest(dest, size, old=None):
    """The destination file: empty, or holding old (a previous version of the volume)."""
    if old:
        subprocess.run(["cp", "--sparse=always", old, dest], check=True)
    else:
        with open(dest, "wb") as f:
            f.truncate(size)


class Nbdkit:
    def __init__(self, workdir, dest, psk=None):
        self.port = free_port()
        self.pidfile = os.path.join(workdir, f"nbdkit-{self.port}.pid")
        args = ["nbdkit", "-f", "-i", "127.0.0.1", "-p", str(self.port), "-P", self.pidfile]
        if psk:
            args += ["--tls=require", f"--tls-psk={psk}"]
        args += ["file", dest]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.pidfile):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nbdkit did not start")
            time.sleep(0.02)

    def uri(self, psk=None):
        if psk:
            return f"nbds://alice@127.0.0.1:{self.port}/?tls-psk-file={psk}"
        return f"nbd://127.0.0.1:{self.port}/"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


class HwameiServe:
    """hwamei-nbd serve DEST on a free loopback port."""

    def __init__(self, workdir, dest, psk=None):
        args = [HWAMEI_NBD, "serve", dest, "--listen", "127.0.0.1:0"]
        if psk:
            args += ["--psk-file", psk]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        m = re.search(r":(\d+)$", self.proc.stdout.readline().strip()) if ready else None
        if not m:
            self.proc.kill()
            raise RuntimeError("hwamei-nbd serve did not start")
        self.port = int(m.group(1))

    def uri(self, psk=None):
        return f"nbds://alice@127.0.0.1:{self.port}/" if psk else f"nbd://127.0.0.1:{self.port}/"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def run_measured(cmd):
    """Runs cmd; returns (seconds, cpu seconds, peak RSS KiB) of that process alone (wait4)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # ru_maxrss would count the parent's memory at fork; the process's own high-water mark is in
    # /proc while it runs.
    hwm = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = proc.stdout.read().decode(errors="replace")
    err = proc.stderr.read().decode(errors="replace")
    proc.stdout.close()
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err.strip()}")
    return elapsed, usage.ru_utime + usage.ru_stime, hwm, out


UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def bytes_sent(out):
    """The data bytes hwamei-nbd copy reports having sent."""
    m = re.search(r"\(([\d.]+) (\w+) sent,", out)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--dir", default="/dev/shm")
    args = ap.parse_args()
    size = args.size_mib * MiB

    for tool in ("nbdkit", "nbdcopy"):
        if not shutil.which(tool):
            print(f"bench-stream: {tool} is missing (make deps installs it)", file=sys.stderr)
            return 1
    if not os.path.exists(HWAMEI_NBD):
        print(f"bench-stream: {HWAMEI_NBD} is not built", file=sys.stderr)
        return 1

    srcdir = tempfile.mkdtemp(prefix="bench-stream-", dir=args.dir)
    dstdir = tempfile.mkdtemp(prefix="bench-stream-dst-", dir="/var/tmp")
    psk = os.path.join(dstdir, "keys.psk")
    with open(psk, "w") as f:
        f.write("alice:" + os.urandom(32).hex() + "\n")
    os.chmod(psk, 0o600)
    results, sent = {}, {}
    failed = False
    tools = ("hwameid", "hwameid>nbdkit", "nbdcopy")
    try:
        print(f"bench-stream: making {args.size_mib} MiB sources in {srcdir}")
        sources = make_sources(srcdir, size)
        cases = {"random": (sources["random"], None),
                 "sparse10": (sources["sparse10"], None),
                 "resend1": (sources["sparse10-changed"], sources["sparse10"])}
        for case, (src, old) in cases.items():
            for tls in (False, True):
                for tool in tools:
                    key = psk if tls else None
                    dest = os.path.join(dstdir, "dest.img")
                    prepare_dest(dest, size, old)
                    server = (HwameiServe if tool == "hwameid" else Nbdkit)(dstdir, dest, key)
                    try:
                        if tool == "nbdcopy":
                            cmd = ["nbdcopy", "--flush", src, server.uri(key)]
                        else:
                            cmd = [HWAMEI_NBD, "copy", src, server.uri(key)]
                            if tls:
                                cmd += ["--psk-file", psk]
                        secs, cpu, rss, out = run_measured(cmd)
                        results[(case, tls, tool)] = (size / secs / 1e6, cpu / (size / GiB), rss)
                        if tool != "nbdcopy":
                            sent[(case, tls, tool)] = bytes_sent(out)
                    except RuntimeError as e:
                        print(f"bench-stream: {case} {'tls' if tls else 'plain'} {tool}: {e}", file=sys.stderr)
                        failed = True
                    finally:
                        server.stop()
                        os.unlink(dest)
    finally:
        shutil.rmtree(srcdir, ignore_errors=True)
        shutil.rmtree(dstdir, ignore_errors=True)

    def slug(*parts):
        return "_".join(p.replace("-", "_").replace(">", "_to_") for p in parts)

    print(f"\n{'case':<12}{'transport':<10}{'tool':<16}{'MB/s':>9}{'CPU s/GiB':>11}{'peak RSS':>12}{'sent':>9}")
    for case in cases:
        for tls in (False, True):
            t = "tls" if tls else "plain"
            for tool in tools:
                if (case, tls, tool) not in results:
                    continue
                rate, cpu, rss = results[(case, tls, tool)]
                moved = sent.get((case, tls, tool))
                share = f"{100 * moved / size:7.1f}%" if moved is not None else "      -"
                print(f"{case:<12}{t:<10}{tool:<16}{rate:>9.0f}{cpu:>11.2f}{rss / 1024:>8.1f} MiB{share:>9}")
                name = slug("stream", case, t, tool)
                print(f"bench: {name}_rate {rate:.1f} MB/s")
                print(f"bench: {name}_cpu {cpu:.3f} s/GiB")
                print(f"bench: {name}_rss {rss} KiB")
                if moved is not None:
                    print(f"bench: {name}_sent {100 * moved / size:.2f} %")
    for case in cases:
        for tls in (False, True):
            a, b = results.get((case, tls, "hwameid")), results.get((case, tls, "nbdcopy"))
            if a and b:
                name = "ratio" if (case == "random" and not tls) else slug("ratio", case, "tls" if tls else "plain")
                print(f"bench: {name} {a[0] / b[0]:.2f} x")
    a, b = results.get(("random", True, "hwameid")), results.get(("random", False, "hwameid"))
    if a and b:
        print(f"bench: tls_over_plain {a[0] / b[0]:.2f} x")
    print("(targets: plain ratio >= 1.0; hwameid TLS >= 0.8 x hwameid plain; sparse time proportional "
          "to the data; the 1 %-changed re-send moves under 5 % of the bytes)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
