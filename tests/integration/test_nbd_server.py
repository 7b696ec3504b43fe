# SPDX-License-Identifier: Apache-2.0
"""The NBD server (hwamei-nbd serve) against the reference clients and against hostile ones.

Interop: nbdinfo, nbdcopy (single and multi-conn), qemu-img and qemu-io from libnbd and qemu.
Hostile clients speak raw NBD over Python sockets: wrong magic, missing flags, unknown options and
commands, out-of-range and oversized requests, clients that stop mid-message or never finish the
handshake, and many idle connections (fd count and RSS of the server must stay flat).

Concurrency: many requests in flight on one connection are all answered (in any order), before the
server closes after NBD_CMD_DISC, and a client pushing far more than the per-connection buffer
limit without reading replies does not make the server hold more than that.

The delta extension (NBD_OPT_HWAMEID_DELTA, NBD_CMD_HWAMEID_HASH; daemon/stream/nbd-protocol.h)
spoken by hand: option negotiation, every rejected request, and digests checked against XXH3-128
computed here, on sparse files with holes and a partial last block.
"""

import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
import xxhash

from conftest import BUILDDIR

HWAMEI_NBD = BUILDDIR / "hwamei-nbd"
MIB = 1024 * 1024

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCTURED_MAGIC = 0x668E33EF

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO = 1, 2, 3, 5, 6, 7
OPT_STRUCTURED_REPLY, OPT_LIST_META, OPT_SET_META = 8, 9, 10
REP_ACK, REP_SERVER, REP_INFO, REP_META = 1, 2, 3, 4
REP_ERR_UNSUP = (1 << 31) | 1
REP_ERR_INVALID = (1 << 31) | 3
REP_ERR_UNKNOWN = (1 << 31) | 6
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE, CMD_ZEROES, CMD_BLOCK_STATUS = range(8)
EPERM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP = 1, 22, 28, 75, 95
REPLY_FLAG_DONE = 1
REPLY_TYPE_ERROR = (1 << 15) | 1
# The delta extension (nbd-protocol.h)
OPT_HWAMEID_DELTA = 0x48574D44
CMD_HWAMEID_HASH = 0x4857
REPLY_TYPE_HWAMEID_HASHES = 0x4848
DELTA_XXH3_128 = 1
HASH_MAX_COUNT = 128 * MIB



def need(tool):
    if not shutil.which(tool):
        pytest.skip(f"{tool} not installed")


def write_test_image(path, size=64 * MIB, seed=1):
    """Deterministic: 1 MiB of random data at the start of every 4 MiB, holes elsewhere, plus a
    short unaligned run near the end."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, 4 * MIB):
            f.seek(off)
            f.write(rng.randbytes(MIB))
        f.seek(size - 3 * 4096 - 77)
        f.write(rng.randbytes(5000))


class Server:
    """hwamei-nbd serve on 127.0.0.1 with a free port; stopped with SIGTERM, which must exit 0."""

    def __init__(self, path, *args):
        self.proc = subprocess.Popen(
            [str(HWAMEI_NBD), "serve", str(path), "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.port = None
        deadline = time.monotonic() + 10
        line = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], deadline - time.monotonic())
            if not ready:
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.match(r"hwamei-nbd: serving .* as '.*' on 127\.0\.0\.1:(\d+)$", line.strip())
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"server did not start: {line!r} {err!r}")

    @property
    def pid(self):
        return self.proc.pid

    def uri(self, export=""):
        return f"nbd://127.0.0.1:{self.port}/{export}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise AssertionError("server did not exit after SIGTERM")
        assert self.proc.returncode == 0, err
        return err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


@pytest.fixture
def image(workdir):
    path = workdir / "export.img"
    write_test_image(path)
    return path


@pytest.fixture
def server_factory():
    servers = []

    def start(path, *args):
        s = Server(path, *args)
        servers.append(s)
        return s

    yield start
    errors = []
    for s in servers:
        try:
            s.stop()
        except AssertionError as e:
            errors.append(str(e))
        finally:
            s.kill()
    assert not errors, errors


@pytest.fixture
def server(image, server_factory):
    return server_factory(image, "--export", "exp", "--description", "test export")


def run(*cmd, timeout=120, check=True):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    if check:
        assert p.returncode == 0, f"{cmd}: rc={p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


# ---- A raw NBD client for the hostile tests ----

class RawClient:
    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def close(self):
        self.sock.close()

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return buf

    def closed_by_server(self, timeout=10):
        """True when the server closes the connection (EOF or reset) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def greeting(self):
        magic, opts, gflags = struct.unpack(">QQH", self.recv_exact(18))
        assert magic == NBDMAGIC and opts == IHAVEOPT
        assert gflags & 1, "fixed newstyle advertised"
        return gflags

    def handshake(self, cflags=3):
        self.greeting()
        self.sock.sendall(struct.pack(">I", cflags))

    def send_option(self, opt, data=b""):
        self.sock.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

    def option_reply(self):
        magic, opt, rtype, length = struct.unpack(">QIII", self.recv_exact(20))
        assert magic == REP_MAGIC
        return opt, rtype, self.recv_exact(length)

    def option_replies(self):
        """Replies up to the final one (ACK or an error)."""
        out = []
        while True:
            opt, rtype, data = self.option_reply()
            out.append((rtype, data))
            if rtype == REP_ACK or rtype & (1 << 31):
                return out

    @staticmethod
    def go_data(name=b"", infos=()):
        return (struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos))
                + b"".join(struct.pack(">H", i) for i in infos))

    def go(self, name=b""):
        self.send_option(OPT_GO, self.go_data(name, (3,)))
        replies = self.option_replies()
        assert replies[-1][0] == REP_ACK, replies
        info = [d for t, d in replies if t == REP_INFO and struct.unpack(">H", d[:2])[0] == 0][0]
        _, size, eflags = struct.unpack(">HQH", info)
        return size, eflags

    def request(self, cmd, offset=0, length=0, flags=0, cookie=0x1234, payload=b""):
        self.sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, cookie, offset, length) + payload)

    def simple_reply(self, data_len=0):
        magic, error, cookie = struct.unpack(">IIQ", self.recv_exact(16))
        assert magic == SIMPLE_MAGIC, hex(magic)
        data = self.recv_exact(data_len) if error == 0 and data_len else b""
        return error, cookie, data

    def reply(self):
        """A simple reply without data, or one structured chunk: (error, cookie, flags, type, payload);
        error is that of a simple reply or an error chunk, else 0."""
        magic = struct.unpack(">I", self.recv_exact(4))[0]
        if magic == SIMPLE_MAGIC:
            error, cookie = struct.unpack(">IQ", self.recv_exact(12))
            return error, cookie, REPLY_FLAG_DONE, None, b""
        assert magic == STRUCTURED_MAGIC, hex(magic)
        flags, rtype, cookie, length = struct.unpack(">HHQI", self.recv_exact(16))
        payload = self.recv_exact(length)
        error = struct.unpack(">I", payload[:4])[0] if rtype & (1 << 15) else 0
        return error, cookie, flags, rtype, payload


def connect_go(port, name=b"exp"):
    c = RawClient(port)
    c.handshake()
    size, eflags = c.go(name)
    return c, size, eflags


# ---- Interop with the reference tools ----

def test_nbdinfo_sees_size_flags_block_sizes_and_base_allocation(server, image):
    need("nbdinfo")
    out = run("nbdinfo", server.uri("exp")).stdout
    assert f"export-size: {image.stat().st_size}" in out
    assert "base:allocation" in out
    assert "description: test export" in out
    for flag in ("can_flush: true", "can_fua: true", "can_multi_conn: true", "can_trim: true",
                 "can_zero: true", "can_fast_zero: true", "can_df: true", "is_read_only: false",
                 "block_size_minimum: 1", "block_size_preferred: 4096", "block_size_maximum: 33554432"):
        assert flag in out, (flag, out)
    for query in (["--can", "multi-conn"], ["--can", "flush"], ["--can", "fua"], ["--can", "trim"],
                  ["--can", "zero"], ["--can", "fast-zero"], ["--can", "df"]):
        assert run("nbdinfo", *query, server.uri("exp"), check=False).returncode == 0, query
    assert run("nbdinfo", "--is", "read-only", server.uri("exp"), check=False).returncode == 2
    assert run("nbdinfo", "--can", "cache", server.uri("exp"), check=False).returncode == 2


def test_nbdinfo_list_shows_the_export(server):
    need("nbdinfo")
    out = run("nbdinfo", "--list", server.uri()).stdout
    assert 'export="exp"' in out


def test_unknown_export_name_is_refused_by_nbdinfo(server):
    need("nbdinfo")
    assert run("nbdinfo", server.uri("nope"), check=False).returncode != 0


def test_nbdinfo_map_shows_holes_like_nbdkit_file(server, image):
    need("nbdinfo")
    need("nbdkit")
    ours = run("nbdinfo", "--map", server.uri("exp")).stdout
    assert "hole,zero" in ours and "data" in ours
    reference = run("nbdinfo", "--map", "--", "[", "nbdkit", "file", str(image), "]").stdout
    assert ours.split() == reference.split()
    totals = run("nbdinfo", "--map", "--totals", server.uri("exp")).stdout
    assert re.search(r"\s0\s+data", totals) and re.search(r"\s3\s+hole,zero", totals), totals


def test_nbdcopy_into_the_export_and_back_is_identical(workdir, image, server_factory):
    need("nbdcopy")
    need("qemu-img")
    dst = workdir / "dst.img"
    with open(dst, "wb") as f:
        f.truncate(image.stat().st_size)
    s = server_factory(dst)
    run("nbdcopy", image, s.uri())
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", image, dst)
    out = workdir / "out.img"
    run("nbdcopy", s.uri(), out)
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", image, out)
    # Zero detection and WRITE_ZEROES (with NO_HOLE via --allocated) over data that was there.
    zeros = workdir / "zeros.img"
    with open(zeros, "wb") as f:
        f.truncate(image.stat().st_size)
    run("nbdcopy", "--allocated", zeros, s.uri())
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", zeros, dst)
    run("nbdcopy", image, s.uri())
    run("nbdcopy", zeros, s.uri())
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", zeros, dst)


def test_nbdcopy_multi_conn_with_flush_and_deep_queues(workdir, image, server_factory):
    need("nbdcopy")
    need("qemu-img")
    dst = workdir / "dst.img"
    with open(dst, "wb") as f:
        f.truncate(image.stat().st_size)
    s = server_factory(dst)
    run("nbdcopy", "--connections=4", "--threads=4", "--flush", image, s.uri())
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", image, dst)
    with open(dst, "wb") as f:
        f.truncate(image.stat().st_size)
    run("nbdcopy", "-C", "1", "-T", "1", "-R", "64", "--request-size=33554432",
        "--queue-size=268435456", image, s.uri())
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", image, dst)
    run("nbdcopy", "--synchronous", s.uri(), workdir / "back.img")
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", image, workdir / "back.img")


def test_qemu_img_compare_and_convert_against_nbd_uri(workdir, image, server_factory):
    need("qemu-img")
    s = server_factory(image, "--readonly")
    out = run("qemu-img", "compare", "-f", "raw", image, s.uri()).stdout
    assert "Images are identical" in out
    dst = workdir / "dst.img"
    with open(dst, "wb") as f:
        f.truncate(image.stat().st_size)
    w = server_factory(dst)
    run("qemu-img", "convert", "-n", "-W", "-m", "16", "-f", "raw", "-O", "raw", image, w.uri())
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", image, dst)


def test_qemu_io_single_commands_including_unaligned(workdir, server_factory):
    need("qemu-io")
    dst = workdir / "dst.img"
    with open(dst, "wb") as f:
        f.truncate(8 * MIB)
    s = server_factory(dst)
    cmds = ["write -P 0xab 0 1M", "read -P 0xab 0 1M", "write -z 1M 1M", "read -P 0 1M 1M",
            "discard 2M 1M", "read -P 0 2M 1M", "flush", "write -P 0xcd 4097 3000",
            "read -P 0xcd 4097 3000", "read -P 0xab 0 4097", "write -f -P 0x11 5M 4096",
            "read -P 0x11 5M 4096"]
    args = []
    for c in cmds:
        args += ["-c", c]
    out = run("qemu-io", "-f", "raw", s.uri(), *args).stdout
    assert "Pattern verification failed" not in out, out
    data = dst.read_bytes()
    assert data[4097:7097] == b"\xcd" * 3000 and data[:4097] == b"\xab" * 4097


# ---- Hostile clients ----

def test_client_with_wrong_option_magic_is_dropped(server):
    c = RawClient(server.port)
    c.handshake()
    c.sock.sendall(struct.pack(">QII", 0x1122334455667788, OPT_GO, 0))
    assert c.closed_by_server()
    c.close()
    run("nbdinfo", server.uri("exp"))


def test_client_without_fixed_newstyle_flag_is_dropped(server):
    c = RawClient(server.port)
    c.handshake(cflags=0)
    assert c.closed_by_server()
    c.close()


def test_client_with_unknown_client_flags_is_dropped(server):
    c = RawClient(server.port)
    c.handshake(cflags=1 | (1 << 7))
    assert c.closed_by_server()
    c.close()


def test_unknown_option_gets_err_unsup_and_a_following_go_works(server, image):
    c = RawClient(server.port)
    c.handshake()
    for opt in (0x7777, 11, OPT_STARTTLS):   # unknown, EXTENDED_HEADERS, STARTTLS (no TLS here)
        c.send_option(opt, b"" if opt != 0x7777 else b"xyz")
        (rtype, _), = c.option_replies()
        assert rtype == REP_ERR_UNSUP, (opt, hex(rtype))
    c.send_option(OPT_GO, RawClient.go_data(b"nope"))
    assert c.option_replies()[-1][0] == REP_ERR_UNKNOWN
    c.send_option(OPT_GO, struct.pack(">I", 1000))   # name length beyond the option
    assert c.option_replies()[-1][0] == REP_ERR_INVALID
    size, eflags = c.go(b"exp")
    assert size == image.stat().st_size
    c.request(CMD_READ, 0, 512)
    err, cookie, data = c.simple_reply(512)
    assert err == 0 and cookie == 0x1234 and data == image.read_bytes()[:512]
    c.request(CMD_DISC)
    assert c.closed_by_server()
    c.close()


def test_list_and_meta_context_options_over_raw_socket(server):
    c = RawClient(server.port)
    c.handshake()
    c.send_option(OPT_LIST)
    replies = c.option_replies()
    servers = [d for t, d in replies if t == REP_SERVER]
    assert len(servers) == 1 and servers[0][4:7] == b"exp"
    meta = struct.pack(">I", 3) + b"exp" + struct.pack(">I", 1) + struct.pack(">I", 5) + b"base:"
    c.send_option(OPT_SET_META, meta)     # before STRUCTURED_REPLY: invalid
    assert c.option_replies()[-1][0] == REP_ERR_INVALID
    c.send_option(OPT_LIST_META, meta)
    replies = c.option_replies()
    assert replies[0][0] == REP_META and replies[0][1][4:] == b"base:allocation"
    c.send_option(OPT_STRUCTURED_REPLY)
    assert c.option_replies()[-1][0] == REP_ACK
    q = b"base:allocation"
    c.send_option(OPT_SET_META, struct.pack(">I", 3) + b"exp" + struct.pack(">II", 1, len(q)) + q)
    replies = c.option_replies()
    assert replies[0][0] == REP_META and replies[-1][0] == REP_ACK
    ctx = struct.unpack(">I", replies[0][1][:4])[0]
    c.go(b"exp")
    c.request(CMD_BLOCK_STATUS, 0, 8 * MIB, flags=1 << 3)   # REQ_ONE
    magic, flags, rtype, cookie, length = struct.unpack(">IHHQI", c.recv_exact(20))
    assert magic == STRUCTURED_MAGIC and rtype == 5 and flags & 1
    body = c.recv_exact(length)
    rctx, ext_len, ext_flags = struct.unpack(">III", body)
    assert rctx == ctx and ext_len == MIB and ext_flags == 0
    c.request(CMD_DISC)
    c.close()


def test_unknown_command_gets_einval_and_the_connection_keeps_working(server, image):
    c, size, _ = connect_go(server.port)
    c.request(42, 0, 512, cookie=7)
    assert c.simple_reply() == (EINVAL, 7, b"")
    c.request(CMD_CACHE, 0, 512, cookie=8)     # not advertised
    assert c.simple_reply()[0] == EINVAL
    c.request(CMD_READ, 0, 512, flags=1 << 9, cookie=9)   # unknown flag
    assert c.simple_reply()[0] == EINVAL
    c.request(CMD_FLUSH, 0, 512, cookie=10)     # FLUSH with a length
    assert c.simple_reply()[0] == EINVAL
    c.request(CMD_BLOCK_STATUS, 0, 512, cookie=11)   # no structured replies
    assert c.simple_reply()[0] == EINVAL
    c.request(CMD_READ, 0, 0, cookie=12)        # zero length: a no-op
    assert c.simple_reply() == (0, 12, b"")
    c.request(CMD_READ, 4 * MIB, 4096, cookie=13)
    err, _, data = c.simple_reply(4096)
    assert err == 0 and data == image.read_bytes()[4 * MIB:4 * MIB + 4096]
    c.close()


def test_oversized_read_gets_einval(server):
    c, _, _ = connect_go(server.port)
    c.request(CMD_READ, 0, 32 * MIB + 1)
    assert c.simple_reply()[0] == EINVAL
    c.request(CMD_READ, 0, 0xFFFFFFFF)
    assert c.simple_reply()[0] == EINVAL
    c.request(CMD_READ, 0, 16)
    assert c.simple_reply(16)[0] == 0
    c.close()


def test_oversized_write_gets_einval_and_the_connection_is_dropped(server):
    c, _, _ = connect_go(server.port)
    c.request(CMD_WRITE, 0, 64 * MIB)
    assert c.simple_reply()[0] == EINVAL
    assert c.closed_by_server()
    c.close()


def test_requests_past_the_end_get_einval_for_reads_and_enospc_for_writes(server):
    c, size, _ = connect_go(server.port)
    c.request(CMD_READ, size - 100, 512)
    assert c.simple_reply()[0] == EINVAL
    c.request(CMD_READ, 1 << 62, 1)
    assert c.simple_reply()[0] == EINVAL
    c.request(CMD_TRIM, size, 4096)
    assert c.simple_reply()[0] == EINVAL
    c.request(CMD_WRITE, size - 2, 4, payload=b"abcd")
    assert c.simple_reply()[0] == ENOSPC
    c.request(CMD_ZEROES, 0xFFFFFFFFFFFFF000, 8192)
    assert c.simple_reply()[0] == ENOSPC
    c.request(CMD_WRITE, size - 4, 4, payload=b"abcd")     # exactly at the end: fine
    assert c.simple_reply()[0] == 0
    c.close()


def test_write_zeroes_fast_zero_and_fua_on_a_file_export(server):
    c, size, eflags = connect_go(server.port)
    assert eflags & (1 << 11), "SEND_FAST_ZERO"
    c.request(CMD_ZEROES, 0, MIB, flags=1 << 4)      # FAST_ZERO
    assert c.simple_reply()[0] == 0
    c.request(CMD_ZEROES, MIB, MIB, flags=(1 << 1) | 1)  # NO_HOLE | FUA
    assert c.simple_reply()[0] == 0
    c.request(CMD_READ, 0, 2 * MIB)
    err, _, data = c.simple_reply(2 * MIB)
    assert err == 0 and data == bytes(2 * MIB)
    c.close()


def test_writes_to_a_readonly_export_get_eperm(image, server_factory):
    s = server_factory(image, "--readonly")
    c, size, eflags = connect_go(s.port, b"")
    assert eflags & 2, "READ_ONLY flag"
    before = image.read_bytes()[:4096]
    c.request(CMD_WRITE, 0, 4, payload=b"evil")
    assert c.simple_reply()[0] == EPERM
    c.request(CMD_TRIM, 0, 4096)
    assert c.simple_reply()[0] == EPERM
    c.request(CMD_ZEROES, 0, 4096)
    assert c.simple_reply()[0] == EPERM
    c.request(CMD_READ, 0, 4096)
    err, _, data = c.simple_reply(4096)
    assert err == 0 and data == before
    c.close()
    assert image.read_bytes()[:4096] == before


def test_clients_stopping_mid_request_do_not_disturb_others(server, image):
    half_header, _, _ = connect_go(server.port)
    half_header.sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, 1, 0, 512)[:13])
    half_payload, _, _ = connect_go(server.port)
    half_payload.request(CMD_WRITE, 0, 4096, payload=b"z" * 1000)
    half_option = RawClient(server.port)
    half_option.handshake()
    half_option.sock.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, 100) + b"\0" * 10)

    run("nbdinfo", server.uri("exp"))
    c, _, _ = connect_go(server.port)
    c.request(CMD_READ, 0, 4096)
    err, _, data = c.simple_reply(4096)
    assert err == 0 and data == image.read_bytes()[:4096]
    for stuck in (half_header, half_payload, half_option):
        stuck.close()
    c.request(CMD_READ, 0, 4096)
    assert c.simple_reply(4096)[0] == 0
    c.close()


def test_client_that_never_finishes_the_handshake_is_dropped_after_the_timeout(image, server_factory):
    s = server_factory(image, "--handshake-timeout", "1")
    silent = RawClient(s.port)
    silent.greeting()                     # and then nothing
    slow = RawClient(s.port)
    slow.handshake()
    slow.send_option(OPT_LIST)            # options keep coming, but GO never does
    slow.option_replies()
    start = time.monotonic()
    assert silent.closed_by_server(timeout=10)
    assert slow.closed_by_server(timeout=10)
    assert time.monotonic() - start < 5
    # Idle connections in transmission are kept beyond the handshake timeout.
    idle, _, _ = connect_go(s.port, b"")
    time.sleep(1.5)
    idle.request(CMD_READ, 0, 512)
    assert idle.simple_reply(512)[0] == 0
    for c in (silent, slow, idle):
        c.close()
    err = s.stop()
    assert "handshake timed out" in err


def test_connections_over_the_limit_are_closed(image, server_factory):
    s = server_factory(image, "--max-connections", "2")
    a, _, _ = connect_go(s.port, b"")
    b, _, _ = connect_go(s.port, b"")
    c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    assert c.recv(100) == b""
    c.close()
    a.close()
    b.close()
    deadline = time.monotonic() + 10
    while True:      # the slots free up once the server has seen the closes
        try:
            d, _, _ = connect_go(s.port, b"")
            break
        except (EOFError, ConnectionResetError):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    d.close()


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_for_fd_count(pid, target, timeout=10):
    deadline = time.monotonic() + timeout
    while fd_count(pid) > target and time.monotonic() < deadline:
        time.sleep(0.05)
    return fd_count(pid)


def test_200_idle_connections_leave_fd_count_and_rss_flat(server):
    # Warm up (thread stacks, allocator arenas) before taking the baseline.
    for _ in range(5):
        c, _, _ = connect_go(server.port)
        c.request(CMD_READ, 0, MIB)
        c.simple_reply(MIB)
        c.close()
    base_fds = wait_for_fd_count(server.pid, 0, timeout=2)
    base_rss = rss_kib(server.pid)

    for round_ in range(2):
        conns = []
        for i in range(100):
            if i % 2:
                c, _, _ = connect_go(server.port)
                c.request(CMD_READ, i * 4096, 4096)
                c.simple_reply(4096)
            else:
                c = RawClient(server.port)
                c.greeting()          # idle in the handshake
            conns.append(c)
        assert fd_count(server.pid) >= base_fds + 100
        for c in conns:
            c.close()
        assert wait_for_fd_count(server.pid, base_fds) == base_fds, f"round {round_}"

    rss = rss_kib(server.pid)
    print(f"server RSS: baseline {base_rss} KiB, after 200 connections {rss} KiB")
    assert rss < base_rss + 64 * 1024


# ---- Many requests in flight on one connection ----

def request_header(cmd, offset=0, length=0, flags=0, cookie=0):
    return struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, cookie, offset, length)


def vm_hwm_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def test_pipelined_requests_are_all_answered_before_the_close_after_disc(workdir, server_factory):
    dst = workdir / "dst.img"
    with open(dst, "wb") as f:
        f.truncate(64 * MIB)
    s = server_factory(dst)
    c, _, _ = connect_go(s.port, b"")
    rng = random.Random(7)
    blocks = [rng.randbytes(MIB) for _ in range(64)]
    # Everything at once, DISC last, replies read only while it goes out: every request received
    # before DISC must be served and answered, and only then the connection closes.
    stream = b"".join(request_header(CMD_WRITE, i * MIB, MIB, cookie=i) + blocks[i] for i in range(64))
    stream += b"".join(request_header(CMD_READ, i * 4096, 4096, cookie=100 + i) for i in range(8))
    stream += request_header(CMD_FLUSH, cookie=1000) + request_header(CMD_DISC, cookie=1001)
    sender = threading.Thread(target=c.sock.sendall, args=(stream,))
    sender.start()
    cookies = []
    for _ in range(64 + 8 + 1):
        err, cookie, _ = c.simple_reply()
        assert err == 0, (err, cookie)
        cookies.append(cookie)
        if 100 <= cookie < 108:
            c.recv_exact(4096)   # reads may see the writes or not: they were in flight together
    sender.join()
    assert sorted(cookies) == list(range(64)) + list(range(100, 108)) + [1000]
    assert c.closed_by_server()
    c.close()
    data = dst.read_bytes()
    for i in range(64):
        assert data[i * MIB:(i + 1) * MIB] == blocks[i], i


def test_a_client_pushing_more_than_the_buffer_limit_is_held_to_it(workdir, server_factory):
    """256 MiB of WRITEs sent as fast as the server takes them, replies read on the side: the
    server stops reading at its per-connection buffer limit (64 MiB), so its peak RSS stays
    within that of its baseline."""
    dst = workdir / "dst.img"
    with open(dst, "wb") as f:
        f.truncate(32 * MIB)
    s = server_factory(dst)
    c, _, _ = connect_go(s.port, b"")
    payload = random.Random(3).randbytes(MIB)
    c.request(CMD_WRITE, 0, MIB, payload=payload)
    assert c.simple_reply()[0] == 0
    base = vm_hwm_kib(s.pid)

    n = 256

    def send():
        for i in range(n):
            c.sock.sendall(request_header(CMD_WRITE, (i % 32) * MIB, MIB, cookie=i) + payload)

    sender = threading.Thread(target=send)
    sender.start()
    for _ in range(n):
        assert c.simple_reply()[0] == 0
    sender.join()
    c.request(CMD_DISC)
    assert c.closed_by_server()
    c.close()
    peak = vm_hwm_kib(s.pid)
    print(f"server peak RSS: baseline {base} KiB, after {n} MiB pushed {peak} KiB")
    assert peak - base < (64 + 32) * 1024


# ---- The delta extension ----

def delta_payload(algorithm=DELTA_XXH3_128, block_size=65536):
    return struct.pack(">II", algorithm, block_size)


def delta_client(port, name=b"", block_size=65536, structured=True):
    """Connected and in transmission, with structured replies and the delta extension on."""
    c = RawClient(port)
    c.handshake()
    if structured:
        c.send_option(OPT_STRUCTURED_REPLY)
        assert c.option_replies()[-1][0] == REP_ACK
    if block_size:
        c.send_option(OPT_HWAMEID_DELTA, delta_payload(block_size=block_size))
        assert c.option_replies() == [(REP_ACK, b"")]
    size, _ = c.go(name)
    return c, size


def hash_request(c, offset, count, cookie=0x77, flags=0):
    """(0, [digest, ...]) or (error, None)."""
    c.request(CMD_HWAMEID_HASH, offset, count, flags=flags, cookie=cookie)
    err, rcookie, rflags, rtype, payload = c.reply()
    assert rcookie == cookie and rflags & REPLY_FLAG_DONE
    if err:
        return err, None
    assert rtype == REPLY_TYPE_HWAMEID_HASHES, rtype
    assert struct.unpack(">Q", payload[:8])[0] == offset
    digests = payload[8:]
    assert len(digests) % 16 == 0
    return 0, [digests[i:i + 16] for i in range(0, len(digests), 16)]


def file_digests(path, offset, count, block_size):
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(count)
    assert len(data) == count
    return [xxhash.xxh3_128_digest(data[i:i + block_size]) for i in range(0, count, block_size)]


def read_works(c, image, offset=0, length=4096):
    """A structured READ on the same connection still gets the file's bytes."""
    c.request(CMD_READ, offset, length, cookie=0x99)
    err, cookie, flags, rtype, payload = c.reply()
    assert err == 0 and cookie == 0x99 and rtype == 1 and flags & REPLY_FLAG_DONE
    assert payload[8:] == Path(image).read_bytes()[offset:offset + length]


def write_sparse(path, size, runs):
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in runs:
            f.seek(offset)
            f.write(data)


def test_delta_option_is_acknowledged_and_a_later_one_replaces_it(server, image):
    c = RawClient(server.port)
    c.handshake()
    c.send_option(OPT_STRUCTURED_REPLY)
    assert c.option_replies()[-1][0] == REP_ACK
    for bs in (4096, 4 * MIB, 65536):
        c.send_option(OPT_HWAMEID_DELTA, delta_payload(block_size=bs))
        assert c.option_replies() == [(REP_ACK, b"")], bs
    # A refused one leaves the setting as it was.
    c.send_option(OPT_HWAMEID_DELTA, delta_payload(block_size=12288))
    assert c.option_replies()[-1][0] == REP_ERR_INVALID
    c.go(b"exp")
    err, digests = hash_request(c, 0, 4 * 65536)
    assert err == 0 and digests == file_digests(image, 0, 4 * 65536, 65536)
    c.request(CMD_DISC)
    c.close()


def test_delta_option_errors_are_err_invalid(server, image):
    c = RawClient(server.port)
    c.handshake()
    c.send_option(OPT_HWAMEID_DELTA, delta_payload())       # before structured replies
    (rtype, msg), = c.option_replies()
    assert rtype == REP_ERR_INVALID and b"structured" in msg
    c.send_option(OPT_STRUCTURED_REPLY)
    assert c.option_replies()[-1][0] == REP_ACK
    bad = [b"", b"\0\0\0\1", delta_payload() + b"\0\0\0\0",                      # lengths
           delta_payload(algorithm=0), delta_payload(algorithm=2),                   # algorithms
           delta_payload(algorithm=0xFFFFFFFF)]
    bad += [delta_payload(block_size=bs) for bs in                                   # block sizes
            (0, 1, 2048, 4095, 4097, 12288, 65535, 8 * MIB, 6 * MIB, 1 << 31, 0xFFFFFFFF)]
    for data in bad:
        c.send_option(OPT_HWAMEID_DELTA, data)
        (rtype, _), = c.option_replies()
        assert rtype == REP_ERR_INVALID, data.hex()
    # The negotiation goes on.
    c.send_option(OPT_HWAMEID_DELTA, delta_payload(block_size=4096))
    assert c.option_replies() == [(REP_ACK, b"")]
    c.go(b"exp")
    err, digests = hash_request(c, 0, 8192)
    assert err == 0 and digests == file_digests(image, 0, 8192, 4096)
    c.close()


def test_hash_without_the_option_is_einval_and_the_connection_keeps_working(server, image):
    c, _ = delta_client(server.port, b"exp", block_size=0)     # structured replies, no delta
    assert hash_request(c, 0, 65536)[0] == EINVAL
    read_works(c, image)
    c.close()
    c, _, _ = connect_go(server.port)                           # no structured replies either
    c.request(CMD_HWAMEID_HASH, 0, 65536, cookie=5)
    assert c.simple_reply() == (EINVAL, 5, b"")
    c.request(CMD_READ, 0, 512)
    assert c.simple_reply(512)[2] == image.read_bytes()[:512]
    c.close()


def test_invalid_hash_requests_get_the_right_errors_and_the_connection_keeps_working(server, image):
    c, size = delta_client(server.port, b"exp", block_size=65536)
    assert size == 64 * MIB
    cases = [
        ((4096, 65536), EINVAL),                    # offset not a multiple of the block size
        ((1, 65536), EINVAL),
        ((0, 65536 + 1), EINVAL),                   # count not a multiple, not at the end
        ((0, 100), EINVAL),
        ((0, 0), EINVAL),                           # zero count
        ((0, HASH_MAX_COUNT + 65536), EINVAL),      # too large
        ((0, 0xFFFFFFFF), EINVAL),
        ((size - 65536, 2 * 65536), EOVERFLOW),     # past the end
        ((size, 65536), EOVERFLOW),
        ((1 << 62, 65536), EOVERFLOW),
        ((0xFFFFFFFFFFFF0000, 65536), EOVERFLOW),
        ((0, HASH_MAX_COUNT), EOVERFLOW),           # allowed count, but past the end here
    ]
    for i, ((offset, count), expected) in enumerate(cases):
        c.request(CMD_HWAMEID_HASH, offset, count, cookie=i)
        err, cookie, flags, rtype, _ = c.reply()
        assert (err, cookie) == (expected, i), (offset, count)
        assert rtype == REPLY_TYPE_ERROR and flags & REPLY_FLAG_DONE
    for flag in (1, 1 << 2, 1 << 3, 1 << 9):        # no command flags
        assert hash_request(c, 0, 65536, flags=flag)[0] == EINVAL, flag
    err, digests = hash_request(c, size - 2 * 65536, 2 * 65536)
    assert err == 0 and digests == file_digests(image, size - 2 * 65536, 2 * 65536, 65536)
    read_works(c, image, 4 * MIB, 8192)
    c.close()


@pytest.mark.parametrize("block_size", [4096, 65536, 4 * MIB])
@pytest.mark.parametrize("readonly", [False, True])
def test_hash_digests_are_xxh3_128_of_the_blocks_with_holes_and_a_partial_last_block(
        workdir, server_factory, block_size, readonly):
    rng = random.Random(block_size)
    path = workdir / "sparse.img"
    size = 3 * MIB + 1234                      # the last block is partial and a hole
    write_sparse(path, size, [
        (0, rng.randbytes(100)),
        (65536 + 100, rng.randbytes(5000)),    # across a 4 KiB boundary, inside a 64 KiB block
        (MIB, rng.randbytes(256 * 1024)),
        (2 * MIB - 10, rng.randbytes(20)),     # across 4 KiB, 64 KiB and 1 MiB boundaries
    ])
    tail = workdir / "tail.img"
    tail_size = MIB + 777                      # the last, partial block holds data
    write_sparse(tail, tail_size, [(MIB + 200, rng.randbytes(500)), (8192, b"\xff" * 4096)])

    s = server_factory(path, "--export", "sparse", *(["--readonly"] if readonly else []))
    c, got_size = delta_client(s.port, b"sparse", block_size=block_size)
    assert got_size == size
    last = size // block_size * block_size
    from_1m = MIB // block_size * block_size
    ranges = [(0, size), (last, size - last), (from_1m, size - from_1m)]
    if 2 * block_size < size:
        ranges.append((block_size, 2 * block_size))
    for offset, count in ranges:
        err, digests = hash_request(c, offset, count)
        assert err == 0, (offset, count)
        assert digests == file_digests(path, offset, count, block_size), (offset, count)
    # A block that is all hole hashes as that many zero bytes.
    hole = 2 * MIB + 4 * 65536 if block_size < MIB else None
    if hole is not None:
        err, digests = hash_request(c, hole, block_size)
        assert err == 0 and digests == [xxhash.xxh3_128_digest(bytes(block_size))]
    c.request(CMD_DISC)
    assert c.closed_by_server()
    c.close()

    s = server_factory(tail, *(["--readonly"] if readonly else []))
    c, got_size = delta_client(s.port, b"", block_size=block_size)
    assert got_size == tail_size
    last = tail_size // block_size * block_size
    for offset, count in [(0, tail_size), (last, tail_size - last)]:
        err, digests = hash_request(c, offset, count)
        assert err == 0 and digests == file_digests(tail, offset, count, block_size), (offset, count)
    c.close()


def test_hash_of_many_blocks_in_one_request(server, image):
    c, size = delta_client(server.port, b"exp", block_size=4096)
    err, digests = hash_request(c, 0, size)
    assert err == 0 and len(digests) == size // 4096
    assert digests == file_digests(image, 0, size, 4096)
    # Requests in flight together are answered each with its own digests.
    for i in range(16):
        c.request(CMD_HWAMEID_HASH, i * 4 * MIB, 4 * MIB, cookie=i)
    for _ in range(16):
        err, cookie, flags, rtype, payload = c.reply()
        assert err == 0 and rtype == REPLY_TYPE_HWAMEID_HASHES
        offset = cookie * 4 * MIB
        assert struct.unpack(">Q", payload[:8])[0] == offset
        assert payload[8:] == b"".join(digests[offset // 4096:(offset + 4 * MIB) // 4096])
    c.close()


def test_malformed_psk_file_is_refused_with_a_clear_message(image, workdir):
    psk = workdir / "keys.psk"
    psk.write_text("alice:" + "0" * 31 + "\n")
    p = run(HWAMEI_NBD, "serve", image, "--listen", "127.0.0.1:0", "--psk-file", psk, check=False)
    assert p.returncode == 1
    assert "malformed" in p.stderr


def test_bad_arguments_are_rejected(image):
    assert run(HWAMEI_NBD, "serve", image, check=False).returncode == 2
    assert run(HWAMEI_NBD, "serve", image, "--listen", "nonsense", check=False).returncode == 1
    assert run(HWAMEI_NBD, "serve", "/nonexistent", "--listen", "127.0.0.1:0", check=False).returncode == 1
