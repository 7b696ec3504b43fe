# SPDX-License-Identifier: Apache-2.0
"""hwamei-nbd copy and the NBD client against the reference server, nbdkit (1.32).

Every server listens on 127.0.0.1 on a free port and is stopped by its PID at the end of the test.
Content is checked with cmp, qemu-img compare or nbdcopy (libnbd), never with our own client alone.
"""

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUILDDIR

HWAMEI_NBD = BUILDDIR / "hwamei-nbd"
MiB = 1024 * 1024
GiB = 1024 * MiB

LINE = re.compile(
    r"^copied (?P<total>[\d.]+ \w+) \((?P<sent>[\d.]+ \w+) sent, (?P<skipped>[\d.]+ \w+) skipped, "
    r"(?P<unchanged>[\d.]+ \w+) unchanged\) "
    r"in (?P<secs>[\d.]+) s, (?P<rate>\d+) MB/s, xxh3-128 (?P<digest>[0-9a-f]{32})$",
    re.M,
)
UNITS = {"B": 1, "KiB": 1024, "MiB": MiB, "GiB": GiB, "TiB": 1024 * GiB}


def to_bytes(s):
    value, unit = s.split()
    return float(value) * UNITS[unit]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nbdkit:
    """nbdkit in the foreground on 127.0.0.1; ready once it has written its PID file."""

    def __init__(self, tmp, *args):
        self.port = free_port()
        self.pidfile = Path(tmp) / f"nbdkit-{self.port}.pid"
        self.log = open(Path(tmp) / f"nbdkit-{self.port}.log", "w")
        self.proc = subprocess.Popen(
            ["nbdkit", "-f", "-i", "127.0.0.1", "-p", str(self.port), "-P", str(self.pidfile), *args],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not (self.pidfile.exists() and self.pidfile.read_text().strip()):
            if self.proc.poll() is not None:
                raise AssertionError(f"nbdkit {args} exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("nbdkit did not start")
            time.sleep(0.02)

    def uri(self, export=""):
        return f"nbd://127.0.0.1:{self.port}/{export}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def nbdkit(tmp_path):
    servers = []

    def start(*args):
        server = Nbdkit(tmp_path, *args)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


def copy(*args, check=True, timeout=120):
    p = subprocess.run([str(HWAMEI_NBD), "copy", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"hwamei-nbd copy {args} failed ({p.returncode}): {p.stderr}")
    return p


def result(p):
    m = LINE.search(p.stdout)
    assert m, f"no result line in {p.stdout!r}"
    return m


def make_image(path, size, data_ranges, seed=1):
    """A sparse file of size bytes with random data in data_ranges [(offset, length), ...]."""
    rnd = __import__("random").Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for off, length in data_ranges:
            f.seek(off)
            f.write(rnd.randbytes(length))
    return path


def mixed_image(path, seed=1):
    # Random data, holes, an explicit block of written zeroes, unaligned data, data at the end.
    size = 48 * MiB
    make_image(path, size, [(0, 3 * MiB + 5), (8 * MiB + 4096, 700 * 1024), (20 * MiB, 4 * MiB),
                            (size - MiB, MiB)], seed)
    with open(path, "r+b") as f:
        f.seek(30 * MiB)
        f.write(bytes(2 * MiB))
    return path


def cmp(a, b, n=None):
    args = ["cmp"] + (["-n", str(n)] if n is not None else []) + [str(a), str(b)]
    return subprocess.run(args, capture_output=True).returncode == 0


# ---- Pushing into nbdkit ----

def test_push_into_nbdkit_file_gives_identical_content_and_verifies(tmp_path, nbdkit):
    src = mixed_image(tmp_path / "src.img")
    dst = tmp_path / "dst.img"
    with open(dst, "wb") as f:  # old content everywhere: zero ranges must really be zeroed
        f.write(b"\xa5" * os.path.getsize(src))
    server = nbdkit("file", str(dst))
    p = copy(src, server.uri(), "--verify")
    assert "verified" in p.stdout
    assert cmp(src, dst)
    q = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(src), server.uri()],
                       capture_output=True, text=True)
    assert q.returncode == 0, q.stdout + q.stderr


def test_push_into_nbdkit_memory_reads_back_identical_with_nbdcopy(tmp_path, nbdkit):
    src = mixed_image(tmp_path / "src.img", seed=2)
    server = nbdkit("memory", f"size={os.path.getsize(src)}")
    copy(src, server.uri(), "--requests", "64", "--request-size", "256K")
    back = tmp_path / "back.img"
    subprocess.run(["nbdcopy", server.uri(), str(back)], check=True)
    assert cmp(src, back)


def test_larger_destination_keeps_its_bytes_past_the_source_size(tmp_path, nbdkit):
    src = make_image(tmp_path / "src.img", 4 * MiB, [(0, 4 * MiB)])
    dst = tmp_path / "dst.img"
    dst.write_bytes(b"\x5a" * (6 * MiB))
    server = nbdkit("file", str(dst))
    copy(src, server.uri(), "--verify")
    assert cmp(src, dst, 4 * MiB)
    assert dst.read_bytes()[4 * MiB:] == b"\x5a" * (2 * MiB)


def test_destination_smaller_than_source_is_an_error(tmp_path, nbdkit):
    src = make_image(tmp_path / "src.img", 4 * MiB, [(0, MiB)])
    server = nbdkit("memory", "size=2M")
    p = copy(src, server.uri(), check=False)
    assert p.returncode == 1
    assert "smaller than the source" in p.stderr


# ---- Pulling from nbdkit ----

def test_pull_from_nbdkit_into_a_new_local_file_is_identical_and_sparse(tmp_path, nbdkit):
    src = make_image(tmp_path / "src.img", 64 * MiB, [(0, MiB), (40 * MiB, 2 * MiB)], seed=3)
    server = nbdkit("-r", "file", str(src))
    out = tmp_path / "out.img"
    p = copy(server.uri(), out, "--verify")
    assert cmp(src, out)
    m = result(p)
    assert to_bytes(m["skipped"]) >= 60 * MiB  # block status found the holes
    assert os.stat(out).st_blocks * 512 <= 8 * MiB


def test_pull_from_server_without_structured_replies_or_fixed_newstyle(tmp_path, nbdkit):
    src = mixed_image(tmp_path / "src.img", seed=4)
    for flags in (["--no-sr"], ["--mask-handshake=0"]):
        server = nbdkit("-r", *flags, "file", str(src))
        out = tmp_path / f"out{flags[0]}.img"
        copy(server.uri(), out, "--verify")
        assert cmp(src, out), flags


# ---- Sparseness ----

def sparse10(path):
    # 1 GiB, 1 MiB of random data at the start of every 10 MiB: ~10 % data.
    return make_image(path, GiB, [(off, MiB) for off in range(0, GiB, 10 * MiB)], seed=5)


def test_sparse_source_skips_the_holes_and_destination_stays_sparse(tmp_path, nbdkit):
    src = sparse10(tmp_path / "src.img")
    dst = tmp_path / "dst.img"
    dst.touch()
    os.truncate(dst, GiB)
    server = nbdkit("file", str(dst))
    p = copy(src, server.uri(), "--verify")
    m = result(p)
    skipped = to_bytes(m["skipped"])
    assert 0.85 * GiB <= skipped <= 0.92 * GiB, m["skipped"]
    assert to_bytes(m["sent"]) <= 0.12 * GiB
    assert os.stat(dst).st_blocks * 512 <= 0.15 * GiB  # WRITE_ZEROES punched, nothing written
    assert cmp(src, dst)


def test_destination_is_zero_sends_no_zeroes(tmp_path, nbdkit):
    src = make_image(tmp_path / "src.img", 64 * MiB, [(0, MiB), (32 * MiB, MiB)], seed=6)
    server = nbdkit("--filter=stats", "memory", "size=64M", f"statsfile={tmp_path / 'stats.txt'}")
    copy(src, server.uri(), "--destination-is-zero")
    server.stop()
    stats = (tmp_path / "stats.txt").read_text()
    assert not re.search(r"^zero:", stats, re.M), stats
    assert re.search(r"^write: \d+ ops, [\d.]+ s, 2\.00 MiB", stats, re.M), stats


def test_zero_blocks_inside_data_are_detected_and_not_sent(tmp_path, nbdkit):
    # A fully allocated file whose middle is written zeroes: SEEK_DATA sees data everywhere.
    src = tmp_path / "src.img"
    rnd = __import__("random").Random(7)
    src.write_bytes(rnd.randbytes(MiB) + bytes(6 * MiB) + rnd.randbytes(MiB))
    dst = tmp_path / "dst.img"
    dst.write_bytes(b"\xff" * (8 * MiB))
    server = nbdkit("file", str(dst))
    m = result(copy(src, server.uri()))
    assert to_bytes(m["skipped"]) == 6 * MiB
    assert cmp(src, dst)


# ---- Digest ----

def test_digest_depends_only_on_content(tmp_path, nbdkit):
    src = mixed_image(tmp_path / "src.img", seed=8)
    dense = tmp_path / "dense.img"  # same content, holes written out as zeroes
    dense.write_bytes(src.read_bytes())
    server = nbdkit("memory", f"size={os.path.getsize(src)}")
    d1 = result(copy(src, server.uri()))["digest"]
    d2 = result(copy(src, tmp_path / "a.img", "--request-size", "64K", "--requests", "3"))["digest"]
    d3 = result(copy(dense, tmp_path / "b.img", "--request-size", "4M"))["digest"]
    d4 = result(copy(server.uri(), tmp_path / "c.img"))["digest"]
    assert d1 == d2 == d3 == d4

    with open(dense, "r+b") as f:  # one byte changed, in what was a hole
        f.seek(10 * MiB + 123)
        f.write(b"\x01")
    d5 = result(copy(dense, tmp_path / "d.img"))["digest"]
    assert d5 != d1


def test_verify_detects_a_destination_that_drops_writes(tmp_path, nbdkit):
    src = mixed_image(tmp_path / "src.img", seed=9)
    server = nbdkit("null", f"size={os.path.getsize(src)}")
    p = copy(src, server.uri(), "--verify", check=False)
    assert p.returncode == 1
    assert "verification failed" in p.stderr
    p = copy(src, server.uri(), check=False)  # without --verify the loss goes unnoticed
    assert p.returncode == 0


# ---- Server features and constraints ----

def test_server_block_size_constraints_are_honoured(tmp_path, nbdkit):
    src = mixed_image(tmp_path / "src.img", seed=10)
    dst = tmp_path / "dst.img"
    dst.write_bytes(b"\x11" * os.path.getsize(src))
    server = nbdkit("--filter=blocksize-policy", "file", str(dst), "blocksize-minimum=4096",
                    "blocksize-preferred=65536", "blocksize-maximum=1M", "blocksize-error-policy=error")
    copy(src, server.uri(), "--request-size", "4M", "--verify")
    assert cmp(src, dst)


def test_destination_without_write_zeroes_gets_zero_buffers(tmp_path, nbdkit):
    src = mixed_image(tmp_path / "src.img", seed=11)
    dst = tmp_path / "dst.img"
    dst.write_bytes(b"\x22" * os.path.getsize(src))
    server = nbdkit("--filter=nozero", "--filter=noextents", "file", str(dst))
    copy(src, server.uri(), "--verify")
    assert cmp(src, dst)


def test_multi_conn_copies_over_several_connections(tmp_path, nbdkit):
    src = mixed_image(tmp_path / "src.img", seed=12)
    dst = tmp_path / "dst.img"
    dst.write_bytes(b"\x33" * os.path.getsize(src))
    log = tmp_path / "nbd.log"
    server = nbdkit("--filter=log", "file", str(dst), f"logfile={log}")
    copy(src, server.uri(), "--connections", "3", "--verify")
    server.stop()
    assert cmp(src, dst)
    text = log.read_text()
    # Writes spread over 3 connections, and each was flushed before the copy counted as done.
    assert set(re.findall(r"connection=(\d+) Write ", text)) == {"1", "2", "3"}, text
    assert set(re.findall(r"connection=(\d+) Flush ", text)) == {"1", "2", "3"}, text


def test_requests_are_pipelined_against_a_slow_server(tmp_path, nbdkit):
    src = make_image(tmp_path / "src.img", 8 * MiB, [(0, 8 * MiB)], seed=13)
    server = nbdkit("--filter=delay", "memory", "size=8M", "delay-write=100ms")
    t = time.monotonic()
    copy(src, server.uri(), "--request-size", "256K", "--requests", "32")
    elapsed = time.monotonic() - t
    assert elapsed < 32 * 0.1 / 4, elapsed  # one at a time would take 3.2 s


# ---- Failures ----

def test_connection_refused_is_reported(tmp_path):
    src = make_image(tmp_path / "src.img", MiB, [(0, MiB)])
    p = copy(src, f"nbd://127.0.0.1:{free_port()}/", check=False)
    assert p.returncode == 1
    assert "connection refused" in p.stderr


def test_unknown_export_name_is_reported(tmp_path, nbdkit):
    src = make_image(tmp_path / "src.img", MiB, [(0, MiB)])
    server = nbdkit("--filter=exportname", "memory", "size=1M", "exportname-strict=true", "exportname=disk")
    p = copy(src, server.uri("nosuch"), check=False)
    assert p.returncode == 1
    assert "export not found" in p.stderr
    copy(src, server.uri("disk"))


def test_write_errors_from_the_server_fail_the_copy(tmp_path, nbdkit):
    src = make_image(tmp_path / "src.img", 16 * MiB, [(0, 16 * MiB)])
    # 16 requests of 1 MiB: at 50 % the chance that none fails is 1.5e-5 (at 20 % it was 3 %).
    server = nbdkit("--filter=error", "memory", "size=16M", "error=EIO", "error-pwrite-rate=50%")
    p = copy(src, server.uri(), check=False)
    assert p.returncode == 1
    assert re.search(r"destination write failed at offset \d+: Input/output error", p.stderr), p.stderr


def test_read_errors_from_the_server_fail_the_copy(tmp_path, nbdkit):
    src = make_image(tmp_path / "src.img", 16 * MiB, [(0, 16 * MiB)])
    server = nbdkit("-r", "--filter=error", "file", str(src), "error=EIO", "error-pread-rate=50%")
    p = copy(server.uri(), tmp_path / "out.img", check=False)
    assert p.returncode == 1
    assert "source read failed" in p.stderr, p.stderr


def test_server_that_disappears_mid_copy_fails_the_copy_promptly(tmp_path, nbdkit):
    src = make_image(tmp_path / "src.img", 64 * MiB, [(0, 64 * MiB)])
    server = nbdkit("--filter=delay", "memory", "size=64M", "delay-write=500ms")  # ~2 s in all
    proc = subprocess.Popen([str(HWAMEI_NBD), "copy", str(src), server.uri()], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    server.proc.kill()
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert "destination" in err and "failed" in err, err


def test_nbds_needs_psk(tmp_path):
    src = make_image(tmp_path / "src.img", MiB, [(0, MiB)])
    p = copy(src, "nbds://127.0.0.1:1/x", check=False)
    assert p.returncode == 1
    assert "needs --psk-file" in p.stderr


# ---- Measurement (prints, asserts nothing about speed) ----
