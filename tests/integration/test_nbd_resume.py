# SPDX-License-Identifier: Apache-2.0
"""hwamei-nbd copy: checkpoints and resume, the bandwidth limit, and delta copies.

A copy that is interrupted — the copier killed, the destination server killed — continues from
its last checkpoint and ends with the same digest and the same bytes as an uninterrupted one. A
re-send to an hwameid server moves only the blocks that changed; to a standard server (nbdkit)
everything goes again.
"""

import re
import signal
import subprocess
import time

import pytest

from test_nbd_copy import HWAMEI_NBD, MiB, Nbdkit, cmp, copy, make_image, result, to_bytes
from test_nbd_server import Server

RESUMED = r"resumed at (\d+) bytes"


@pytest.fixture
def servers():
    started = []

    def start(kind, *args, tmp=None):
        s = Server(*args) if kind == "hwamei" else Nbdkit(tmp, *args)
        started.append(s)
        return s

    yield start
    for s in started:
        if isinstance(s, Server):
            s.kill()
        else:
            s.stop()


def start_copy(*args):
    return subprocess.Popen([str(HWAMEI_NBD), "copy", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(state, proc, min_offset, timeout=60):
    """Until state records at least min_offset bytes; returns that offset."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state.exists():
            fields = dict(line.split("=", 1) for line in state.read_text().splitlines()
                          if "=" in line)
            if int(fields["offset"]) >= min_offset:
                return int(fields["offset"])
        assert proc.poll() is None, f"copy ended before a checkpoint: {proc.communicate()}"
        time.sleep(0.05)
    raise AssertionError("no checkpoint was written")


def digest_of(path):
    """The digest hwamei-nbd computes of path's content (a copy into a fresh file)."""
    out = path.parent / (path.name + ".digest-copy")
    d = result(copy(path, out))["digest"]
    out.unlink()
    return d


def sigkill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)


# ---- Checkpoints and resume ----

def test_copier_killed_mid_copy_resumes_from_its_checkpoint_with_the_full_digest(tmp_path):
    size = 96 * MiB
    src = make_image(tmp_path / "src.img", size, [(0, 40 * MiB), (60 * MiB, 36 * MiB)])
    dst, state = tmp_path / "dst.img", tmp_path / "state"
    proc = start_copy(src, dst, "--resume", state, "--checkpoint-interval", "1", "--bwlimit", "16M")
    at = wait_for_checkpoint(state, proc, 8 * MiB)
    sigkill(proc)
    assert state.stat().st_mode & 0o777 == 0o600

    p = copy(src, dst, "--resume", state, "--verify")
    m = result(p)
    resumed = int(re.search(RESUMED, p.stdout).group(1))
    assert at <= resumed < size
    # Only what lay past the checkpoint went again.
    assert to_bytes(m["sent"]) <= size - resumed + MiB
    assert "verified" in p.stdout
    assert m["digest"] == digest_of(src)
    assert cmp(src, dst)
    assert not state.exists(), "the checkpoint outlived the finished copy"


def test_push_resumes_after_the_destination_server_was_killed(tmp_path, servers):
    size = 64 * MiB
    src = make_image(tmp_path / "src.img", size, [(0, size)], seed=7)
    dst, state = tmp_path / "dst.img", tmp_path / "state"
    with open(dst, "wb") as f:
        f.truncate(size)
    server = servers("hwamei", dst)
    proc = start_copy(src, server.uri(), "--resume", state, "--checkpoint-interval", "1",
                      "--bwlimit", "16M")
    wait_for_checkpoint(state, proc, 8 * MiB)
    server.kill()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "destination" in err, err
    assert state.exists()

    # The same server again (a checkpoint names its destination: same address, same port).
    server = servers("hwamei", dst, "--listen", f"127.0.0.1:{server.port}")
    p = copy(src, server.uri(), "--resume", state, "--verify")
    assert re.search(RESUMED, p.stdout)
    assert result(p)["digest"] == digest_of(src)
    assert cmp(src, dst)


def test_push_into_nbdkit_resumes_too(tmp_path, servers):
    size = 48 * MiB
    src = make_image(tmp_path / "src.img", size, [(0, 20 * MiB), (30 * MiB, 18 * MiB)], seed=3)
    dst, state = tmp_path / "dst.img", tmp_path / "state"
    with open(dst, "wb") as f:
        f.write(b"\x5a" * size)  # old content: zero ranges must really be zeroed after resume too
    server = servers("nbdkit", "file", str(dst), tmp=tmp_path)
    proc = start_copy(src, server.uri(), "--resume", state, "--checkpoint-interval", "1",
                      "--bwlimit", "12M")
    wait_for_checkpoint(state, proc, 4 * MiB)
    sigkill(proc)
    p = copy(src, server.uri(), "--resume", state, "--verify")
    assert re.search(RESUMED, p.stdout)
    assert cmp(src, dst)


def test_a_checkpoint_of_another_copy_is_refused_and_nothing_is_written(tmp_path):
    a = make_image(tmp_path / "a.img", 8 * MiB, [(0, 8 * MiB)], seed=1)
    b = make_image(tmp_path / "b.img", 8 * MiB, [(0, 8 * MiB)], seed=2)
    dst, state = tmp_path / "dst.img", tmp_path / "state"
    proc = start_copy(a, dst, "--resume", state, "--checkpoint-interval", "1", "--bwlimit", "2M")
    wait_for_checkpoint(state, proc, MiB)
    sigkill(proc)
    before = dst.read_bytes()
    kept = state.read_text()

    p = copy(b, dst, "--resume", state, check=False)
    assert p.returncode == 1
    assert "not of this copy" in p.stderr and str(a) in p.stderr, p.stderr
    assert dst.read_bytes() == before
    assert state.read_text() == kept


@pytest.mark.parametrize("damage", [
    lambda t: t.replace("version=1", "version=9"),
    lambda t: t.replace("offset=", "offset=x"),
    lambda t: t + "surprise=1\n",
    lambda t: t[: len(t) // 2],
    lambda t: "\n".join(line for line in t.splitlines() if not line.startswith("size=")) + "\n",
    lambda t: t.replace("hash-state=", "hash-state=zz"),
], ids=["other-version", "bad-number", "unknown-key", "truncated", "missing-key", "bad-hex"])
def test_a_damaged_checkpoint_is_refused_with_a_clear_message(tmp_path, damage):
    src = make_image(tmp_path / "src.img", 8 * MiB, [(0, 8 * MiB)])
    dst, state = tmp_path / "dst.img", tmp_path / "state"
    proc = start_copy(src, dst, "--resume", state, "--checkpoint-interval", "1", "--bwlimit", "2M")
    wait_for_checkpoint(state, proc, MiB)
    sigkill(proc)
    state.write_text(damage(state.read_text()))
    p = copy(src, dst, "--resume", state, check=False)
    assert p.returncode == 1
    assert "--resume" in p.stderr and ("not a valid checkpoint" in p.stderr
                                       or "another version" in p.stderr), p.stderr


def test_resume_without_a_checkpoint_file_is_a_fresh_copy(tmp_path):
    src = make_image(tmp_path / "src.img", 4 * MiB, [(0, 4 * MiB)])
    p = copy(src, tmp_path / "dst.img", "--resume", tmp_path / "state")
    assert "resumed" not in p.stdout
    assert cmp(src, tmp_path / "dst.img")
    assert not (tmp_path / "state").exists()


# ---- Bandwidth ----

def test_bwlimit_holds_the_data_rate(tmp_path):
    # 12 MiB of data at 4 MiB/s: at least ~2.75 s (one request of burst). Only a lower bound is
    # asserted — a slow machine makes it slower, never faster.
    src = make_image(tmp_path / "src.img", 12 * MiB, [(0, 12 * MiB)])
    t = time.monotonic()
    copy(src, tmp_path / "dst.img", "--bwlimit", "4M")
    assert time.monotonic() - t >= 2.5
    assert cmp(src, tmp_path / "dst.img")


def test_bwlimit_does_not_count_holes(tmp_path):
    # 1 MiB of data in 256 MiB: at 1 MiB/s the holes would take minutes if they counted.
    src = make_image(tmp_path / "src.img", 256 * MiB, [(100 * MiB, MiB)])
    p = copy(src, tmp_path / "dst.img", "--bwlimit", "1M", timeout=60)
    assert to_bytes(result(p)["sent"]) == MiB


def test_bad_bwlimit_and_interval_are_usage_errors(tmp_path):
    src = make_image(tmp_path / "src.img", MiB, [(0, MiB)])
    for args in (["--bwlimit", "12"], ["--bwlimit", "fast"], ["--checkpoint-interval", "0"]):
        p = copy(src, tmp_path / "dst.img", *args, check=False)
        assert p.returncode == 2, (args, p.stderr)


# ---- Delta ----

def change_one_percent(path, size, seed=9):
    """Overwrites 1 % of path in 256 KiB pieces spread over it; returns the bytes changed."""
    rnd = __import__("random").Random(seed)
    piece, changed = 256 * 1024, 0
    with open(path, "r+b") as f:
        for off in range(0, size, 100 * piece):
            f.seek(off + 37 * 4096)
            f.write(rnd.randbytes(piece))
            changed += piece
    return changed


def test_resend_to_an_hwameid_server_moves_only_changed_blocks(tmp_path, servers):
    size = 128 * MiB
    src = make_image(tmp_path / "src.img", size, [(i * 10 * MiB, MiB) for i in range(12)], seed=5)
    dst = tmp_path / "dst.img"
    with open(dst, "wb") as f:
        f.truncate(size)
    server = servers("hwamei", dst)
    first = result(copy(src, server.uri(), "--verify"))
    changed = change_one_percent(src, size)
    p = copy(src, server.uri(), "--verify")
    m = result(p)
    assert "verified" in p.stdout
    assert cmp(src, dst)
    # Hash blocks are 64 KiB: each changed piece touches at most one more block than it covers
    # (and the figure is printed to one decimal).
    assert to_bytes(m["sent"]) <= 1.06 * (changed + (changed // (256 * 1024)) * 64 * 1024)
    assert to_bytes(m["sent"]) < 0.05 * to_bytes(first["sent"]) + changed
    assert to_bytes(m["unchanged"]) >= size - 2 * changed


def test_delta_zeroes_blocks_that_became_holes_and_leaves_equal_ones(tmp_path, servers):
    size = 32 * MiB
    dst = make_image(tmp_path / "dst.img", size, [(0, size)], seed=1)  # all data
    src = tmp_path / "src.img"
    subprocess.run(["cp", "--sparse=always", str(dst), str(src)], check=True)
    subprocess.run(["fallocate", "--punch-hole", "--offset", str(8 * MiB), "--length",
                    str(4 * MiB), str(src)], check=True)
    server = servers("hwamei", dst)
    m = result(copy(src, server.uri(), "--verify"))
    assert cmp(src, dst)
    assert to_bytes(m["sent"]) == 0
    assert to_bytes(m["skipped"]) == 4 * MiB
    assert to_bytes(m["unchanged"]) == size - 4 * MiB


def test_no_delta_and_standard_servers_send_everything(tmp_path, servers):
    size = 16 * MiB
    src = make_image(tmp_path / "src.img", size, [(0, size)], seed=4)
    dst = tmp_path / "dst.img"
    subprocess.run(["cp", str(src), str(dst)], check=True)
    ours = servers("hwamei", dst)
    m = result(copy(src, ours.uri(), "--no-delta"))
    assert to_bytes(m["sent"]) == size and to_bytes(m["unchanged"]) == 0
    ours.kill()
    kit = servers("nbdkit", "file", str(dst), tmp=tmp_path)
    m = result(copy(src, kit.uri()))
    assert to_bytes(m["sent"]) == size and to_bytes(m["unchanged"]) == 0
    assert cmp(src, dst)
