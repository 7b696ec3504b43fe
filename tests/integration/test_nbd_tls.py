# SPDX-License-Identifier: Apache-2.0
"""TLS-PSK (NBD_OPT_STARTTLS) in hwamei-nbd serve and copy, against libnbd (nbdinfo, nbdcopy) and
nbdkit --tls=require --tls-psk, which use GnuTLS.

PSK files are written here in psktool's format (IDENTITY:HEXKEY, mode 0600). Every server listens
on 127.0.0.1 and is stopped by its PID.
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUILDDIR
from test_nbd_copy import Nbdkit, free_port

HWAMEI_NBD = BUILDDIR / "hwamei-nbd"
MiB = 1024 * 1024
SERVING = re.compile(r"on 127\.0\.0\.1:(\d+)$")

pytestmark = pytest.mark.skipif(not shutil.which("nbdinfo") or not shutil.which("nbdkit"),
                                reason="libnbd tools and nbdkit are needed")


def write_psk(path, identity="alice", key=None):
    key = key if key is not None else os.urandom(32).hex()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{identity}:{key}\n")
    return path


class Server:
    """hwamei-nbd serve on 127.0.0.1 port 0; the port comes from its first line."""

    def __init__(self, tmp, path, *args):
        self.log = open(Path(tmp) / f"serve-{time.monotonic_ns()}.log", "w")
        self.proc = subprocess.Popen([HWAMEI_NBD, "serve", path, "--listen", "127.0.0.1:0", *args],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline().strip()
        m = SERVING.search(line)
        if not m:
            self.stop()
            raise AssertionError(f"hwamei-nbd serve did not start: {line!r}")
        self.port = int(m.group(1))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def servers():
    started = []
    yield started
    for s in started:
        s.stop()


def run(*args, timeout=120):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)


def make_image(path, size=64 * MiB, data=8 * MiB):
    with open(path, "wb") as f:
        f.write(os.urandom(data))
        f.seek(size // 2)
        f.write(os.urandom(data))
        f.truncate(size)
    return path


def compare(a, b):
    r = run("qemu-img", "compare", "-f", "raw", "-F", "raw", a, b)
    assert r.returncode == 0, r.stdout + r.stderr


def tls_uri(port, psk, user="alice"):
    return f"nbds://{user}@127.0.0.1:{port}/?tls-psk-file={psk}"


def test_serve_with_libnbd(tmp_path, servers):
    psk = write_psk(tmp_path / "keys.psk")
    bad = write_psk(tmp_path / "bad.psk", key="0" * 64)
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"")
    os.truncate(disk, 64 * MiB)
    src = make_image(tmp_path / "src.img")
    s = Server(tmp_path, disk, "--psk-file", psk)
    servers.append(s)

    r = run("nbdinfo", tls_uri(s.port, psk))
    assert r.returncode == 0, r.stderr
    assert "with TLS" in r.stdout and "67108864" in r.stdout

    r = run("nbdcopy", src, tls_uri(s.port, psk))
    assert r.returncode == 0, r.stderr
    compare(src, disk)
    out = tmp_path / "out.img"
    r = run("nbdcopy", tls_uri(s.port, psk), out)
    assert r.returncode == 0, r.stderr
    compare(src, out)

    # Plaintext: every option is answered NBD_REP_ERR_TLS_REQD.
    r = run("nbdinfo", f"nbd://127.0.0.1:{s.port}/")
    assert r.returncode != 0
    # An identity that is not in the file (libnbd refuses it itself), and one the server does not
    # know.
    r = run("nbdinfo", tls_uri(s.port, psk, user="mallory"))
    assert r.returncode != 0
    write_psk(tmp_path / "mallory.psk", identity="mallory")
    r = run("nbdinfo", tls_uri(s.port, tmp_path / "mallory.psk", user="mallory"))
    assert r.returncode != 0
    # Wrong key: the handshake fails.
    r = run("nbdinfo", tls_uri(s.port, bad))
    assert r.returncode != 0
    assert "handshake" in r.stderr or "alert" in r.stderr

    # Still serving.
    r = run("nbdinfo", tls_uri(s.port, psk))
    assert r.returncode == 0, r.stderr
    assert s.stop() == 0


def test_serve_refuses_bad_psk_file(tmp_path):
    bad = tmp_path / "bad.psk"
    for content in ["alice\n", "alice:abc\n", "alice:zz" + "0" * 62 + "\n", ":" + "0" * 64 + "\n",
                    "alice:" + "00" * 8 + "\n"]:
        bad.write_text(content)
        r = run(HWAMEI_NBD, "serve", tmp_path / "x", "--listen", "127.0.0.1:0", "--psk-file", bad)
        assert r.returncode == 1, content
        assert "malformed" in r.stderr, r.stderr
    r = run(HWAMEI_NBD, "serve", tmp_path / "x", "--listen", "127.0.0.1:0", "--psk-file",
            tmp_path / "missing.psk")
    assert r.returncode == 1 and "missing.psk" in r.stderr


def test_copy_into_nbdkit(tmp_path):
    psk = write_psk(tmp_path / "keys.psk")
    bad = write_psk(tmp_path / "bad.psk", key="0" * 64)
    src = make_image(tmp_path / "src.img")
    dst = tmp_path / "dst.img"
    dst.write_bytes(b"")
    os.truncate(dst, 64 * MiB)
    kit = Nbdkit(tmp_path, "--tls=require", f"--tls-psk={psk}", "file", str(dst))
    try:
        uri = f"nbds://alice@127.0.0.1:{kit.port}/"
        r = run(HWAMEI_NBD, "copy", src, uri, "--psk-file", psk, "--verify")
        assert r.returncode == 0, r.stderr
        compare(src, dst)
        out = tmp_path / "back.img"
        r = run(HWAMEI_NBD, "copy", uri, out, "--psk-file", psk)
        assert r.returncode == 0, r.stderr
        compare(src, out)

        r = run(HWAMEI_NBD, "copy", src, uri, "--psk-file", bad)
        assert r.returncode == 1
        assert "TLS handshake failed" in r.stderr, r.stderr
        r = run(HWAMEI_NBD, "copy", src, f"nbd://127.0.0.1:{kit.port}/")
        assert r.returncode == 1
        assert "TLS required" in r.stderr, r.stderr
        r = run(HWAMEI_NBD, "copy", src, f"nbds://bob@127.0.0.1:{kit.port}/", "--psk-file", psk)
        assert r.returncode == 1
        assert "identity 'bob' was not found" in r.stderr, r.stderr
        r = run(HWAMEI_NBD, "copy", src, uri)
        assert r.returncode == 1 and "--psk-file" in r.stderr
    finally:
        kit.stop()


def test_copy_tls_refused_by_plain_server(tmp_path):
    psk = write_psk(tmp_path / "keys.psk")
    src = make_image(tmp_path / "src.img", data=MiB)
    dst = tmp_path / "dst.img"
    dst.write_bytes(b"")
    os.truncate(dst, 64 * MiB)
    kit = Nbdkit(tmp_path, "file", str(dst))
    try:
        r = run(HWAMEI_NBD, "copy", src, f"nbds://alice@127.0.0.1:{kit.port}/", "--psk-file", psk)
        assert r.returncode == 1
        assert "does not offer TLS" in r.stderr, r.stderr
    finally:
        kit.stop()


def test_copy_into_our_server(tmp_path, servers):
    psk = write_psk(tmp_path / "keys.psk")
    src = make_image(tmp_path / "src.img")
    dst = tmp_path / "dst.img"
    dst.write_bytes(b"")
    os.truncate(dst, 64 * MiB)
    s = Server(tmp_path, dst, "--psk-file", psk)
    servers.append(s)
    r = run(HWAMEI_NBD, "copy", src, f"nbds://alice@127.0.0.1:{s.port}/", "--psk-file", psk, "--verify",
            "-C", "4")
    assert r.returncode == 0, r.stderr
    assert "verified" in r.stdout
    compare(src, dst)
    # $LOGNAME is the identity when the URI has none.
    r = subprocess.run([HWAMEI_NBD, "copy", f"nbds://127.0.0.1:{s.port}/", tmp_path / "back.img",
                        "--psk-file", psk], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "LOGNAME": "alice"})
    assert r.returncode == 0, r.stderr
    compare(src, tmp_path / "back.img")
    assert s.stop() == 0


# ---- Keys derived from the cluster secret (one identity per migration) ----

SECRET = "Zm9yIHRlc3RzIG9ubHk6IGEgY2x1c3RlciBzZWNyZXQgb2YgZW5vdWdo\n"


def write_secret(path, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(SECRET)
    os.chmod(path, mode)
    return path


def derived_key(identity):
    """HMAC-SHA256(secret without its trailing newline, label + identity), as documented."""
    import hashlib
    import hmac
    return hmac.new(SECRET.rstrip().encode(), b"hwameid-nbd-psk:" + identity.encode(),
                    hashlib.sha256).hexdigest()


def test_derived_keys_open_only_the_named_identity(tmp_path, servers):
    secret = write_secret(tmp_path / "cluster-secret")
    src = make_image(tmp_path / "src.img")
    dst = tmp_path / "dst.img"
    dst.write_bytes(b"")
    os.truncate(dst, 64 * MiB)
    s = Server(tmp_path, dst, "--cluster-secret", secret, "--identity", "mig-1")
    servers.append(s)
    r = run(HWAMEI_NBD, "copy", src, f"nbds://mig-1@127.0.0.1:{s.port}/", "--cluster-secret", secret,
            "--verify")
    assert r.returncode == 0, r.stderr
    compare(src, dst)
    # Another migration's identity, with its own correctly derived key, is not known here.
    r = run(HWAMEI_NBD, "copy", src, f"nbds://mig-2@127.0.0.1:{s.port}/", "--cluster-secret", secret)
    assert r.returncode == 1 and "TLS handshake failed" in r.stderr, r.stderr
    # The same identity with a key from another secret.
    other = tmp_path / "other-secret"
    fd = os.open(other, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"a-different-cluster-secret-of-enough-bytes\n")
    os.close(fd)
    r = run(HWAMEI_NBD, "copy", src, f"nbds://mig-1@127.0.0.1:{s.port}/", "--cluster-secret", other)
    assert r.returncode == 1 and "TLS handshake failed" in r.stderr, r.stderr
    # libnbd with the key computed independently (Python's hmac) gets in: the derivation is the
    # documented one, and GnuTLS agrees with OpenSSL on it.
    psk = write_psk(tmp_path / "derived.psk", "mig-1", derived_key("mig-1"))
    r = run("nbdinfo", "--size", tls_uri(s.port, psk, "mig-1"))
    assert r.returncode == 0 and int(r.stdout) == 64 * MiB, r.stderr


def test_copy_with_derived_key_into_nbdkit(tmp_path):
    secret = write_secret(tmp_path / "cluster-secret")
    psk = write_psk(tmp_path / "derived.psk", "evictor-pvc-1", derived_key("evictor-pvc-1"))
    src = make_image(tmp_path / "src.img", data=4 * MiB)
    dst = tmp_path / "dst.img"
    dst.write_bytes(b"")
    os.truncate(dst, 64 * MiB)
    kit = Nbdkit(tmp_path, "--tls=require", f"--tls-psk={psk}", "file", str(dst))
    try:
        r = run(HWAMEI_NBD, "copy", src, f"nbds://evictor-pvc-1@127.0.0.1:{kit.port}/", "--cluster-secret",
                secret, "--verify")
        assert r.returncode == 0, r.stderr
        compare(src, dst)
    finally:
        kit.stop()


def test_cluster_secret_must_be_root_only_long_enough_and_named_with_an_identity(tmp_path):
    src = make_image(tmp_path / "src.img", data=MiB)
    loose = write_secret(tmp_path / "loose", 0o644)
    r = run(HWAMEI_NBD, "serve", src, "--listen", "127.0.0.1:0", "--cluster-secret", loose, "--identity", "m")
    assert r.returncode == 1 and "chmod 0600" in r.stderr, r.stderr
    r = run(HWAMEI_NBD, "copy", src, "nbds://m@127.0.0.1:1/", "--cluster-secret", loose)
    assert r.returncode == 1 and "chmod 0600" in r.stderr, r.stderr
    short = tmp_path / "short"
    fd = os.open(short, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"tiny\n")
    os.close(fd)
    r = run(HWAMEI_NBD, "copy", src, "nbds://m@127.0.0.1:1/", "--cluster-secret", short)
    assert r.returncode == 1 and "needs 32 to 4096" in r.stderr, r.stderr
    good = write_secret(tmp_path / "good")
    r = run(HWAMEI_NBD, "copy", src, "nbds://127.0.0.1:1/", "--cluster-secret", good)
    assert r.returncode == 1 and "needs the identity in the URI" in r.stderr, r.stderr
    r = run(HWAMEI_NBD, "serve", src, "--listen", "127.0.0.1:0", "--cluster-secret", good)
    assert r.returncode == 2
    r = run(HWAMEI_NBD, "copy", src, "nbds://m@127.0.0.1:1/", "--cluster-secret", good, "--psk-file", good)
    assert r.returncode == 2


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs /dev/shm")
def test_throughput_tls_vs_plain(tmp_path, servers):
    """Orientation only: 1 GiB from /dev/shm into our server, TLS and plain. No assertion on time."""
    shm = Path("/dev/shm") / f"hwamei-tls-{os.getpid()}"
    shm.mkdir()
    try:
        psk = write_psk(shm / "keys.psk")
        src = shm / "src.img"
        with open(src, "wb") as f:
            chunk = os.urandom(16 * MiB)
            for _ in range(64):
                f.write(chunk)
        rates = {}
        for name, extra, uri in [("plain", [], "nbd://127.0.0.1:{}/"),
                                 ("tls", ["--psk-file", str(psk)], "nbds://alice@127.0.0.1:{}/")]:
            dst = shm / f"dst-{name}.img"
            dst.write_bytes(b"")
            os.truncate(dst, 1024 * MiB)
            s = Server(tmp_path, dst, *extra)
            servers.append(s)
            r = run(HWAMEI_NBD, "copy", src, uri.format(s.port), *extra, "--destination-is-zero",
                    timeout=300)
            assert r.returncode == 0, r.stderr
            rates[name] = re.search(r"(\d+) MB/s", r.stdout).group(1)
            s.stop()
            dst.unlink()
        print(f"\n1 GiB /dev/shm -> hwamei-nbd serve: plain {rates['plain']} MB/s, "
              f"TLS-PSK {rates['tls']} MB/s")
    finally:
        shutil.rmtree(shm)
