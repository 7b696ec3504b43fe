# SPDX-License-Identifier: Apache-2.0
"""The VM acceptance suite's fixtures: three Debian guests under qemu with hwameid installed from
its .deb, against the stand-in API server on the host.

  vmcluster (session)  a started VMCluster: guests k8s-node-1..3 (vmcluster.guest(1) ...), each
                       with /dev/vdb and /dev/vdc (2 GiB, free) and eth1 = 10.99.0.N on one hub
                       (the storage network); the stand-in on the host's 127.0.0.1, which guests
                       reach as https://10.0.2.100:6443; Node objects registered; the .deb
                       installed with dpkg -i and hwameid started by its postinst.

Layout (vmcluster.workdir, a pytest temporary directory):
  pkg/                   the .deb, when the fixture built it (HWAMEID_VM_DEB names one instead)
  standin/               the stand-in's state, server.log and the admin kubeconfig
  k8s-node-N/            the node's qemu workdir (serial.log, qemu.log, overlay, disks, sockets),
                         its hwameid.conf and its kubeconfigs (host.kubeconfig: same user, the
                         host's URL); payload/, shared with the guest over 9p (mount_payload())
  diagnostics-*.txt      written when a test failed
  timings.json           what each phase took

Environment: HWAMEID_VM_DEB (a built hwameid_*.deb; otherwise "make deb" runs), HWAMEID_VM_CACHE
(the image cache, tests/vm/build-image), HWAMEID_VM_KEEP_DISKS=1 (keep overlays and disks).

On a failing test the serial log tail, `systemctl status hwameid` and `journalctl -u hwameid`
of each guest, and the stand-in's log tail, are printed (and written to the workdir).
"""

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "standin"))

from vmlib import GiB, Guest, Hub, QEMU  # noqa: E402
from standinlib import Standin  # noqa: E402
from objects import HW, node as node_object  # noqa: E402

BUILD_IMAGE = HERE / "build-image"
STANDIN = ROOT / "tools" / "kube-standin"
CRDS = ROOT / "conf" / "crds"

NODES = 3
STORAGE_NET = "10.99.0"  # eth1 of k8s-node-N is 10.99.0.N/24
API_GUEST_IP = "10.0.2.100"  # the stand-in, as the guests see it (guestfwd)
API_GUEST_PORT = 6443
DISK_SIZE = 2 * GiB
GUEST_MEM = 1024
POOL_HDD = "LocalStorage_PoolHDD"
LSN = f"{HW}/localstoragenodes"
# Leader election keeps the defaults (15 s / 10 s / 2 s): three TCG guests on two cores miss
# the integration harness's 2 s renew deadline while they boot.
BOOT_TIMEOUT = 600  # TCG with three guests on two cores: ~2 min typical, 5x that for a loaded host


def _say(config, text):
    """A progress line on the terminal, past pytest's capture."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman:
        with capman.global_and_fixture_disabled():
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
    else:
        sys.stderr.write(text + "\n")


def wait(fn, timeout=60, what="condition", interval=0.5, describe=None):
    """Polls fn until it returns something true (and returns that); fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() >= deadline:
            extra = f"\n{describe()}" if describe else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {v!r}){extra}")
        time.sleep(interval)


def node_config(name, extra=""):
    """The node's /etc/hwameid/hwameid.conf."""
    return (f"# k8s-node VM test configuration (tests/vm/conftest.py)\n"
            f"[Node]\nName={name}\nStorageInterface=eth1\n"
            f"[Kubernetes]\nKubeconfig=/etc/hwameid/kubeconfig\n"
            f"[Storage]\nBackend=lvm\nDisks=/dev/vdb /dev/vdc\nDiskClasses=/dev/vdb=HDD /dev/vdc=HDD\n"
            f"RefreshInterval=5s\n"
            f"[Stream]\nClusterSecretFile=/etc/hwameid/cluster-secret\n" + extra)


class VMCluster:
    """Three guests running hwameid, the stand-in API server and the storage network's hub."""

    def __init__(self, workdir, config):
        self.workdir = Path(workdir)
        self.config = config
        self.guests = []
        self.standin = None
        self.hub = None
        self.deb = None
        self.image_dir = None
        self.secret = secrets.token_urlsafe(48) + "\n"
        self.timings = {}
        self.install = {}  # node name -> {"dpkg": Result, "started_by_postinst": bool, ...}

    # ---- access

    def guest(self, i):
        """Guest i (1-based, as in k8s-node-i), or by name."""
        if isinstance(i, str):
            return next(g for g in self.guests if g.name == i)
        return self.guests[i - 1]

    def kubectl(self, *args, input=None, check=True, timeout=60):
        """The host's kubectl as the cluster admin (the stand-in's admin kubeconfig)."""
        return self.standin.kubectl(*map(str, args), input=input, check=check, timeout=timeout)

    def kubectl_json(self, *args):
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def get(self, path):
        """The object at an API path (e.g. f"{LSN}/k8s-node-1"), or None when it does not exist."""
        r = self.standin.request("GET", path)
        if r.status == 404:
            return None
        assert r.status == 200, r
        return r.json

    def lsn(self, name):
        return self.get(f"{LSN}/{name}")

    def pools(self, name):
        return ((self.lsn(name) or {}).get("status") or {}).get("pools")

    def status(self, i):
        """hwameictl --json status in guest i."""
        return json.loads(self.guest(i).run(["hwameictl", "--json", "status"], timeout=60).stdout)

    def wait(self, fn, timeout=60, what="condition", interval=0.5):
        return wait(fn, timeout, what, interval, describe=self.describe)

    def wait_pools(self, timeout=180):
        """Waits until every node's LocalStorageNode reports its HDD pool with both disks."""
        for g in self.guests:
            self.wait(lambda: (lambda p: p and POOL_HDD in p and len(p[POOL_HDD].get("disks") or []) == 2)(
                self.pools(g.name)), timeout, f"{g.name}'s LocalStorageNode with its {POOL_HDD} pool")

    # ---- diagnostics

    def describe(self, guests=None):
        out = []
        for g in guests or self.guests:
            out.append(f"===== {g.name} ({g.ip}, qemu pid {g.pid}, {'running' if g.alive else 'exited'}) =====")
            out.append("--- serial log (tail) ---")
            out.append(g.serial_log(4000))
            if g.alive:
                out.append("--- systemctl status hwameid ---")
                try:
                    out.append(g.run("systemctl status hwameid --no-pager -l; systemctl --failed --no-legend",
                                     timeout=60, check=False).stdout)
                except Exception as e:  # diagnostics only
                    out.append(f"(unavailable: {e})")
                out.append("--- journalctl -u hwameid --no-pager (tail) ---")
                out.append(g.journal("-u", "hwameid")[-12000:])
        if self.standin is not None:
            try:
                out.append("===== kube-standin log (tail) =====")
                out.append(Path(self.standin.workdir, "server.log").read_text(errors="replace")[-4000:])
            except OSError:
                pass
        return "\n".join(out)

    def save_diagnostics(self, tag):
        path = self.workdir / f"diagnostics-{tag}.txt"
        text = self.describe()
        path.write_text(text)
        return path, text

    # ---- set-up

    def start(self):
        t0 = time.monotonic()
        self.deb = self._deb()
        self.timings["deb"] = time.monotonic() - t0
        t = time.monotonic()
        build = subprocess.Popen([str(BUILD_IMAGE), str(self.deb)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        self._say(f"vm: image for {self.deb.name} (a cold build takes ~2 min; "
                  f"log in {os.environ.get('HWAMEID_VM_CACHE', '/var/cache/hwameid-vm')})")
        try:
            self._start_standin()
            self.hub = Hub().start()
        finally:
            out, err = build.communicate()
        if build.returncode != 0:
            raise AssertionError(f"tests/vm/build-image failed ({build.returncode}):\n{err}")
        self.image_dir = Path(out.strip().splitlines()[-1])
        self.timings["image"] = time.monotonic() - t
        self.image_built = "built" in err
        self._say(f"vm: {err.strip().splitlines()[-1]} ({self.timings['image']:.0f} s)")

        t = time.monotonic()
        for i in range(1, NODES + 1):
            name = f"k8s-node-{i}"
            payload = self.workdir / name / "payload"
            payload.mkdir(parents=True)
            g = Guest(name, self.image_dir, self.workdir / name, disks=[DISK_SIZE, DISK_SIZE], mem=GUEST_MEM,
                      smp=1, hub=self.hub, storage_ip=f"{STORAGE_NET}.{i}/24",
                      guestfwd={f"{API_GUEST_IP}:{API_GUEST_PORT}": self.standin.port}, payload=payload)
            self.guests.append(g)
        # qemu is started from this (the main) thread, so that it dies with us (PR_SET_PDEATHSIG).
        for g in self.guests:
            g.start()
        with ThreadPoolExecutor(NODES) as pool:
            list(pool.map(self._register_node, self.guests))
            states = list(pool.map(lambda g: g.wait_ready(BOOT_TIMEOUT), self.guests))
            self.timings["boot"] = time.monotonic() - t
            self._say(f"vm: {NODES} guests up in {self.timings['boot']:.0f} s ({', '.join(states)})")
            t = time.monotonic()
            list(pool.map(self._install, self.guests))
        self.timings["install"] = time.monotonic() - t
        self.timings["infrastructure"] = time.monotonic() - t0
        (self.workdir / "timings.json").write_text(json.dumps(dict(self.timings, guests={
            g.name: g.timings for g in self.guests}), indent=1))
        self._say("vm: hwameid installed in %.0f s; infrastructure ready after %.0f s (deb %.0f, image %.0f, "
                  "boot %.0f, install %.0f)" % (self.timings["install"], self.timings["infrastructure"],
                                                self.timings["deb"], self.timings["image"], self.timings["boot"],
                                                self.timings["install"]))
        return self

    def _say(self, text):
        _say(self.config, text)

    def _deb(self):
        env = os.environ.get("HWAMEID_VM_DEB")
        if env:
            deb = Path(env).resolve()
            assert deb.is_file(), f"HWAMEID_VM_DEB={env}: no such file"
            return deb
        pkgdir = self.workdir / "pkg"
        pkgdir.mkdir()
        self._say("vm: make deb (set HWAMEID_VM_DEB to use a built one)")
        r = subprocess.run(["make", "-C", str(ROOT), f"PKGDIR={pkgdir}", "deb"], capture_output=True, text=True,
                           timeout=1200)
        assert r.returncode == 0, f"make deb failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
        debs = [p for p in pkgdir.glob("hwameid_*.deb")]
        assert len(debs) == 1, debs
        return debs[0]

    def _start_standin(self):
        d = self.workdir / "standin"
        d.mkdir()
        # Listens on 127.0.0.1 only; its certificate also names 10.0.2.100, the guests' way to it.
        self.standin = Standin(str(d), extra_args=["--san", API_GUEST_IP, "--crds", str(CRDS)]).start()

    def _mint(self, user, out, server, group=None):
        cmd = ["/usr/bin/python3", str(STANDIN), "mint-kubeconfig", "--state-dir", self.standin.state_dir,
               "--user", user, "--out", str(out), "--server", server]
        if group:
            cmd += ["--group", group]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"mint-kubeconfig: {r.stderr}"

    def _register_node(self, g):
        """Mints the node's credentials (system:node:NAME, as a kubelet's) twice: for the guest
        (the server is https://10.0.2.100:6443) and for the host; registers the Node object with
        them, its InternalIP the storage address."""
        g.kubeconfig = g.workdir / "kubeconfig"
        g.host_kubeconfig = g.workdir / "host.kubeconfig"
        user = f"system:node:{g.name}"
        self._mint(user, g.kubeconfig, f"https://{API_GUEST_IP}:{API_GUEST_PORT}", "system:nodes")
        self._mint(user, g.host_kubeconfig, self.standin.url, "system:nodes")
        self.standin.kubectl("--kubeconfig", str(g.host_kubeconfig), "create", "-f", "-",
                             input=json.dumps(node_object(g.name, ip=g.ip)))

    def _install(self, g):
        """The node's configuration, credentials and cluster secret, then dpkg -i of the .deb (as an
        operator would: the configuration first, so that the postinst starts a configured daemon)."""
        info = self.install[g.name] = {}
        t = time.monotonic()
        config = node_config(g.name)
        (g.workdir / "hwameid.conf").write_text(config)
        g.put("/etc/hwameid/hwameid.conf", config, 0o644)
        g.put("/etc/hwameid/kubeconfig", g.kubeconfig.read_bytes(), 0o600)
        g.put("/etc/hwameid/cluster-secret", self.secret, 0o600)
        g.put(f"/root/{self.deb.name}", self.deb.read_bytes(), 0o644)
        # --force-confold: /etc/hwameid/hwameid.conf is a conffile and already there (ours).
        r = g.run(["dpkg", "-i", "--force-confdef", "--force-confold", f"/root/{self.deb.name}"], timeout=600,
                  check=False, env={"DEBIAN_FRONTEND": "noninteractive"})
        info["dpkg"] = r
        info["dpkg_seconds"] = time.monotonic() - t
        active = g.run(["systemctl", "is-active", "hwameid"], check=False).stdout.strip()
        info["active_after_dpkg"] = active
        info["enabled_after_dpkg"] = g.run(["systemctl", "is-enabled", "hwameid"], check=False).stdout.strip()
        info["started_by_postinst"] = active == "active"
        if active != "active" and r.rc == 0:
            info["enable_now"] = g.run(["systemctl", "enable", "--now", "hwameid"], timeout=300, check=False)
        info["seconds"] = time.monotonic() - t

    # ---- teardown

    def stop(self):
        problems = []
        with ThreadPoolExecutor(max(len(self.guests), 1)) as pool:
            list(pool.map(lambda g: g.stop(), self.guests))
        for g in self.guests:
            if g.alive:
                problems.append(f"{g.name}: qemu {g.pid} still running")
            if not os.environ.get("HWAMEID_VM_KEEP_DISKS"):
                g.remove_disks()
        if self.standin is not None:
            self.standin.stop()
        if self.hub is not None:
            self.hub.stop()
        # Relays end with their qemu; anything with a guest's workdir in its command line is ours.
        deadline = time.monotonic() + 10
        for g in self.guests:
            while g.leftovers() and time.monotonic() < deadline:
                time.sleep(0.2)
            for pid in g.leftovers():
                problems.append(f"{g.name}: process {pid} left behind: {_cmdline(pid)}")
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        return problems


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


_CLUSTER = None


@pytest.fixture(scope="session")
def vmcluster(request, tmp_path_factory):
    """Three guests with hwameid installed (see the module's docstring)."""
    global _CLUSTER
    if os.geteuid() != 0:
        pytest.skip("the VM suite needs root (debootstrap, chroot)")
    for tool in (QEMU, shutil.which("debootstrap") or "/usr/sbin/debootstrap"):
        if not os.access(tool, os.X_OK):
            pytest.skip(f"{tool} is missing: `make check-vm` installs the VM packages (tools/install-deps --vm)")
    c = VMCluster(tmp_path_factory.mktemp("vm"), request.config)
    try:
        c.start()
    except BaseException:
        try:
            path, text = c.save_diagnostics("setup")
            _say(request.config, f"\n##### the VM cluster did not start; diagnostics in {path}\n{text}")
        finally:
            c.stop()
        raise
    _CLUSTER = c
    yield c
    _CLUSTER = None
    problems = c.stop()
    assert not problems, problems


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(autouse=True)
def _vm_diagnostics(request):
    """When a test that used the cluster failed: each guest's serial log tail and hwameid's journal."""
    yield
    rep = getattr(request.node, "rep_call", None)
    if _CLUSTER is None or rep is None or not rep.failed or "vmcluster" not in request.fixturenames:
        return
    tag = request.node.name.replace("/", "_")
    path, text = _CLUSTER.save_diagnostics(tag)
    _say(request.config, f"\n##### {request.node.nodeid} failed; diagnostics in {path}\n{text}")
