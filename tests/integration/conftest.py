# SPDX-License-Identifier: Apache-2.0
"""Fixtures that run the real hwameid binary the way systemd would.

Each daemon gets its own directory with a configuration file, a control socket and a
NOTIFY_SOCKET that the test owns, so readiness, reloads, watchdog pings and stops are observed
exactly as the service manager would observe them. Tests wait for notify messages, never sleep.
"""

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "standin"))
from standinlib import Standin  # noqa: E402
BUILDDIR = Path(os.environ.get("HWAMEID_BUILDDIR", ROOT / "build"))
HWAMEID = BUILDDIR / "hwameid"
HWAMEICTL = BUILDDIR / "hwameictl"


class NotifySocket:
    """The service manager's end of sd_notify: a datagram socket that collects messages."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def _read(self, timeout):
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if not ready:
            return False
        data = self.sock.recv(4096).decode()
        fields = dict(line.split("=", 1) for line in data.split("\n") if "=" in line)
        self.messages.append((time.monotonic(), fields))
        return True

    def wait_for(self, predicate, timeout=10.0, what="message"):
        """Returns the first message not yet seen that satisfies predicate."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for i in range(seen, len(self.messages)):
                if predicate(self.messages[i][1]):
                    msg = self.messages.pop(i)
                    del self.messages[:i]
                    return msg[1]
            seen = len(self.messages)
            if not self._read(deadline - time.monotonic()):
                raise AssertionError(f"no {what} within {timeout}s; got {[m[1] for m in self.messages]}")

    def wait_key(self, key, timeout=10.0):
        return self.wait_for(lambda m: key in m, timeout, what=key)

    def close(self):
        self.sock.close()


class Daemon:
    def __init__(self, workdir, extra_config="", env=None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "control.sock"
        self.kubeconfig = self.dir / "kubeconfig"
        self.config = self.dir / "hwameid.conf"
        self.write_config(extra_config)
        self.notify = NotifySocket(self.dir / "notify")
        self.env = dict(os.environ, NOTIFY_SOCKET=self.notify.path)
        self.env.pop("WATCHDOG_USEC", None)
        self.env.pop("WATCHDOG_PID", None)
        self.env.pop("JOURNAL_STREAM", None)
        self.env.update(env or {})
        self.proc = None
        self.stderr_path = self.dir / "stderr"

    def write_config(self, extra="", node="test-node", kubernetes=""):
        # Everything the daemon writes stays in the test's directory (drop-ins may override).
        dropins = self.dir / "hwameid.conf.d"
        dropins.mkdir(exist_ok=True)
        (dropins / "00-test-dirs.conf").write_text(
            f"[Storage]\nFileDirectory={self.dir}/pools\nLVMDirectory={self.dir}/lvm\n"
            f"[Stream]\nClusterSecretFile={self.dir}/cluster-secret\nListenAddress=127.0.0.1\nPort=0\n"
            f"CheckpointDirectory={self.dir}/copies\n")
        self.config.write_text(
            f"[Node]\nName={node}\n"
            f"[Kubernetes]\nKubeconfig={self.kubeconfig}\n{kubernetes}"
            f"[Control]\nSocket={self.socket}\n" + extra
        )

    def status(self):
        import json
        r = self.ctl("--json", "status")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def start(self, *args, wait_ready=True):
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [str(HWAMEID), "--config", str(self.config), *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.stderr,
            stderr=self.stderr,
        )
        if wait_ready:
            self.ready = self.notify.wait_key("READY")
        return self

    def log(self):
        return self.stderr_path.read_text(errors="replace")

    def kill(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Stops the daemon and returns its exit status; a daemon that hangs fails the test."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"hwameid did not exit within {timeout}s of {sig!r}")

    def ctl(self, *args, check=False):
        return subprocess.run(
            [str(HWAMEICTL), "--socket", str(self.socket), *args],
            capture_output=True, text=True, timeout=30, check=check,
        )

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc:
            self.stderr.close()
        self.notify.close()


@pytest.fixture
def make_daemon(tmp_path):
    daemons = []

    def make(name="node", **kwargs):
        d = Daemon(tmp_path / name, **kwargs)
        daemons.append(d)
        return d

    yield make
    for d in daemons:
        d.cleanup()


@pytest.fixture
def daemon(make_daemon):
    """A running daemon; the test fails if it does not stop cleanly with SIGTERM."""
    d = make_daemon().start()
    yield d
    if d.proc.poll() is None:
        assert d.stop() == 0, d.log()


@pytest.fixture
def standin(tmp_path):
    """A stand-in API server of the test's own (faults and restarts stay local)."""
    (tmp_path / "standin").mkdir()
    s = Standin(str(tmp_path / "standin")).start()
    yield s
    s.stop()


KUBE_PROBE = BUILDDIR / "tests" / "helpers" / "kube-probe"


def wait(fn, timeout=30, what="condition"):
    """Polls fn (an API read, a status) until it returns something true; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def run_hwameid(*args, **kwargs):
    return subprocess.run([str(HWAMEID), *args], capture_output=True, text=True, timeout=30, **kwargs)
