# SPDX-License-Identifier: Apache-2.0
"""A cluster of hwameid nodes on one machine, for end-to-end tests (eviction, migration).

Layout of one Cluster (every name carries a per-run suffix, so parallel or leftover runs never
collide; nothing is added to the machine's own network namespace):

    netns <p>-sw    bridge br0, one veth port per member ("api", "n1", "n2", ...)
    netns <p>-api   eth0 10.77.X.254/24: the stand-in API server (tools/kube-standin) on :6443
    netns <p>-n<i>  eth0 10.77.X.<i>/24: node k8s-node-<i>'s hwameid, its block stream on :10809

Each node also has a mount namespace of its own (private propagation), held by a small holder
process so that it outlives daemon restarts; the daemon and node.run() commands enter the node's
network and mount namespaces with nsenter. Each node has its own loop devices (sparse backing
files) as the disks of its LVM pools; LVM runs with activation off (no device-mapper here) and
its own LVM configuration, so a node only ever sees its own PVs.

The Kubernetes side is driven the way an operator would: the real /usr/bin/kubectl with an admin
kubeconfig, run inside the API server's namespace (cluster.kubectl). Node objects are registered
with each node's own credentials (system:node:<name>, as a kubelet would). For cheap polling,
cluster.api() talks HTTPS to the stand-in directly, over a socket opened inside its namespace.

Volume data: without device-mapper a replica's LV has no device of its own; its data lives in
its physical extents on the node's loop devices. Cluster.extents() maps it from the node's own
LVM report (lvs seg_pe_ranges, pvs pe_start, vgs extent size, with the daemon's LVM_SYSTEM_DIR and
--devices), write_random() fills a replica with random data and checksum() reads it back
(O_DIRECT, sha256). storage_probe_read() reads it independently through the daemon's own block-I/O
layer (tests/helpers/storage-probe).

Use it through the `cluster` fixture (3 nodes; indirect parametrization with a dict of Cluster
options changes that) or `make_cluster` for several or custom clusters.
"""

import ctypes
import hashlib
import http.client
import json
import mmap
import os
import random
import secrets
import select
import signal
import socket
import ssl
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import BUILDDIR, HWAMEICTL, HWAMEID, ROOT, NotifySocket

sys.path.insert(0, str(ROOT / "tests" / "standin"))
from objects import HW, node as node_object  # noqa: E402

KUBECTL = "/usr/bin/kubectl"
STANDIN = ROOT / "tools" / "kube-standin"
STORAGE_PROBE = BUILDDIR / "tests" / "helpers" / "storage-probe"
CRDS = ROOT / "conf" / "crds"

MiB = 1 << 20
STREAM_PORT = 10809
API_PORT = 6443
POOL_HDD = "LocalStorage_PoolHDD"
LEASE_NAMESPACE = "hwameid-system"
LEADER_LEASE = "hwameid-controller"
LVR = f"{HW}/localvolumereplicas"
LSN = f"{HW}/localstoragenodes"

# Short leader-election timings, so that failovers take seconds (client-go's rules all the same).
FAST_ELECTION = "[LeaderElection]\nLeaseDuration=3s\nRenewDeadline=2s\nRetryPeriod=500ms\n"

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _run(cmd, check=True, timeout=60, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r


def wait(fn, timeout=30, what="condition", interval=0.1, describe=None):
    """Polls fn until it returns something true (and returns that); fails after timeout, saying
    what it waited for, the last value and describe() when given."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() >= deadline:
            extra = f"\n{describe()}" if describe else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {v!r}){extra}")
        time.sleep(interval)


def socket_in_netns(netns_path, address, timeout=30):
    """A TCP connection made from inside a network namespace (the socket stays in it): setns() on
    a short-lived thread, since a network namespace is a per-thread attribute."""
    out = {}

    def connect():
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns({netns_path}): {os.strerror(e)}")
            finally:
                os.close(fd)
            out["sock"] = socket.create_connection(address, timeout=timeout)
        except BaseException as e:  # handed to the caller
            out["error"] = e

    t = threading.Thread(target=connect, name="netns-connect")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["sock"]


class _NetnsHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, netns_path, host, port, context, timeout):
        super().__init__(host, port, context=context, timeout=timeout)
        self._netns_path = netns_path
        self._ctx = context

    def connect(self):
        sock = socket_in_netns(self._netns_path, (self.host, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


# --------------------------------------------------------------------------------------- node


class Node:
    """One hwameid node: its namespaces, disks, configuration and daemon."""

    def __init__(self, cluster, index):
        self.cluster = cluster
        self.index = index
        self.name = f"k8s-node-{index}"
        self.ip = cluster.address(index)
        self.netns = f"{cluster.prefix}-n{index}"
        self.dir = cluster.dir / self.name
        self.dir.mkdir(parents=True)
        self.config = self.dir / "hwameid.conf"
        # Unix sockets in a short directory of their own (sun_path holds 108 bytes; tmp paths can
        # be longer).
        self.sockets = cluster.sockets / f"n{index}"
        self.sockets.mkdir()
        self.socket = self.sockets / "control.sock"
        self.kubeconfig = self.dir / "kubeconfig"
        self.lvm_dir = self.dir / "lvm"
        self.stderr_path = self.dir / "stderr"
        self.disks = []  # loop devices, in order
        self.images = []  # their backing files
        self.holder = None  # the process holding the node's mount namespace
        self.proc = None
        self.notify = None
        self._stderr = None
        self.starts = 0

    def __repr__(self):
        return f"<Node {self.name} {self.ip}>"

    # ---- set-up

    def add_disk(self, size):
        path = self.dir / f"disk{len(self.images)}.img"
        with open(path, "wb") as f:
            f.truncate(size)
        self.images.append(path)
        dev = _run(["losetup", "--find", "--show", str(path)]).stdout.strip()
        self.disks.append(dev)
        return dev

    def write_config(self, extra=""):
        c = self.cluster
        disks = " ".join(self.disks)
        classes = " ".join(f"{d}=HDD" for d in self.disks)
        self.config.write_text(
            f"[Node]\nName={self.name}\nStorageIP={self.ip}\n"
            f"[Kubernetes]\nKubeconfig={self.kubeconfig}\n"
            f"{c.election}"
            f"[Storage]\nBackend=lvm\nDisks={disks}\nDiskClasses={classes}\nLVMActivation=no\n"
            f"LVMDirectory={self.lvm_dir}\nFileDirectory={self.dir}/pools\nRefreshInterval=5s\n"
            f"[Stream]\nClusterSecretFile={c.secret}\nListenAddress={self.ip}\nPort={STREAM_PORT}\n"
            f"CheckpointDirectory={self.dir}/copies\n"
            f"[Control]\nSocket={self.socket}\n"
            f"[Log]\nLevel={c.log_level}\n" + c.extra_config + extra)

    def start_holder(self):
        # ip netns exec gives the node's view of /sys; unshare its own mount namespace. Both exec,
        # so the PID is sleep's.
        self.holder = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation", "private", "--",
             "sleep", "infinity"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        mine = os.readlink("/proc/self/ns/mnt")
        # Wait until the holder is sleep inside its new mount namespace.
        wait(lambda: self.holder.poll() is not None or (
            _readlink(f"/proc/{self.holder.pid}/ns/mnt") not in (None, mine)
            and _comm(self.holder.pid) == "sleep"),
            timeout=10, interval=0.01, what=f"{self.name}'s namespace holder")
        assert self.holder.poll() is None, self.holder.stderr.read()

    def nsenter(self):
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "--"]

    # ---- the daemon

    def start(self, wait_ready=True, timeout=20):
        """Starts hwameid inside the node's namespaces (as systemd would: our NOTIFY_SOCKET)."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        self._close_io()
        self.notify = NotifySocket(self.sockets / f"notify.{self.starts}")
        self.starts += 1
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path)
        for k in ("WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "LVM_SYSTEM_DIR"):
            env.pop(k, None)
        self._stderr = open(self.stderr_path, "ab")
        self._stderr.write(f"==== start {self.starts} at {time.strftime('%H:%M:%S')}\n".encode())
        self._stderr.flush()
        # nsenter without --fork execs the daemon: the PID is hwameid's.
        self.proc = subprocess.Popen(self.nsenter() + [str(HWAMEID), "--config", str(self.config)], env=env,
                                     stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=20):
        """Waits for READY=1; fails at once (with the log) when the daemon exits first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.notify.wait_key("READY", timeout=0.2)
            except AssertionError:
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.name}: hwameid exited ({self.proc.returncode}) before READY=1\n"
                                         f"{self.log()[-3000:]}") from None
                if time.monotonic() >= deadline:
                    raise AssertionError(f"{self.name}: no READY=1 within {timeout}s\n{self.log()[-3000:]}") from None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def kill(self, sig=signal.SIGKILL):
        """Sends sig to the daemon; SIGKILL (the default) also reaps it."""
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Stops the daemon and returns its exit status (SIGKILL after timeout, then fails)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name}: hwameid did not exit within {timeout}s of {sig!r}")

    def restart(self, sig=signal.SIGTERM, wait_ready=True):
        if self.running:
            self.stop(sig)
        return self.start(wait_ready=wait_ready)

    def log(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def ctl(self, *args, check=False, timeout=30):
        return _run([str(HWAMEICTL), "--socket", str(self.socket), *args], check=check, timeout=timeout)

    def status(self):
        r = self.ctl("--json", "status")
        assert r.returncode == 0, f"{self.name}: hwameictl status: {r.stderr}"
        return json.loads(r.stdout)

    def leading(self):
        return self.running and self.status()["cluster"]["leader"]["leading"]

    # ---- inside the node

    def run(self, cmd, check=True, timeout=60, input=None, env=None):
        """Runs cmd (a list, or a string for sh -c) in the node's network and mount namespaces."""
        if isinstance(cmd, str):
            cmd = ["sh", "-c", cmd]
        return _run(self.nsenter() + [str(c) for c in cmd], check=check, timeout=timeout, input=input,
                    env=dict(os.environ, **(env or {})))

    def popen(self, cmd, **kw):
        """A long-running command inside the node; the caller owns (and ends) the process."""
        return subprocess.Popen(self.nsenter() + [str(c) for c in cmd], **kw)

    def lvm(self, *args):
        """An lvm2 report as this node's daemon sees it: its LVM_SYSTEM_DIR, only its disks."""
        env = {"LVM_SYSTEM_DIR": str(self.lvm_dir), "LVM_SUPPRESS_FD_WARNINGS": "1"}
        r = self.run(["lvm", *args, "--devices", ",".join(self.disks), "--reportformat", "json", "--units", "b",
                      "--nosuffix"], env=env)
        return json.loads(r.stdout)["report"][0]

    def lsn(self):
        """This node's LocalStorageNode, or None."""
        return self.cluster.get(f"{LSN}/{self.name}")

    def pools(self):
        return ((self.lsn() or {}).get("status") or {}).get("pools")

    # ---- teardown

    def _close_io(self):
        if self.notify:
            self.notify.close()
            self.notify = None
        if self._stderr:
            self._stderr.close()
            self._stderr = None

    def pids(self):
        return [p.pid for p in (self.proc, self.holder) if p is not None and p.poll() is None]


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return None


# ------------------------------------------------------------------------------------ cluster


class Cluster:
    """N hwameid nodes (k8s-node-1..N) on a private bridge, against the stand-in API server."""

    def __init__(self, workdir, nodes=3, disks_per_node=2, disk_size=512 * MiB, config="",
                 election=FAST_ELECTION, log_level="info", subnet=None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=6))
        self.prefix = f"hwh-{suffix}"
        self.subnet = subnet if subnet is not None else random.randint(1, 254)
        self.api_ip = self.address(254)
        self.api_netns = f"{self.prefix}-api"
        self.switch_netns = f"{self.prefix}-sw"
        self.n = nodes
        self.disks_per_node = disks_per_node
        self.disk_size = disk_size
        self.extra_config = config
        self.election = election
        self.log_level = log_level
        self.secret = self.dir / "cluster-secret"
        self.sockets = Path(tempfile.mkdtemp(prefix=f"{self.prefix}.", dir="/tmp"))
        self.home = self.dir / "kubectl-home"
        self.standin_dir = self.dir / "standin"
        self.admin_kubeconfig = self.dir / "admin.kubeconfig"
        self.nodes = []
        self.namespaces = []  # created, in order
        self.standin = None
        self._standin_log = None
        self._netns_inodes = {}
        self.digests = {}  # replica name -> sha256 written by write_random()
        self.started = False
        self._cleaned = False

    def address(self, host):
        return f"10.77.{self.subnet}.{host}"

    # ---- start

    def start(self):
        t0 = time.monotonic()
        try:
            self._make_network()
            self._start_standin()
            with ThreadPoolExecutor(max_workers=max(self.n, 2)) as pool:
                # Disks and holders while the API server generates its keys.
                list(pool.map(self._prepare_node, self.nodes))
                self._wait_standin()
                self.kubectl("apply", "-f", str(CRDS))
                self.wait(lambda: self.api_request("GET", f"{HW}/localvolumereplicas").status == 200,
                          10, "the CRDs served")
                list(pool.map(self._register_node, self.nodes))
            for n in self.nodes:
                n.start(wait_ready=False)
            for n in self.nodes:
                n.wait_ready()
            for n in self.nodes:
                self.wait(lambda: (lambda p: p and POOL_HDD in p and len(p[POOL_HDD]["disks"]) == len(n.disks))(
                    n.pools()), 30, f"{n.name}'s LocalStorageNode with its pool")
            self.started = True
            self.start_seconds = time.monotonic() - t0
            return self
        except BaseException:
            self.cleanup()
            raise

    def _ip(self, *args, netns=None):
        return _run(["ip"] + (["-n", netns] if netns else []) + list(args))

    def _add_netns(self, name):
        self._ip("netns", "add", name)
        self.namespaces.append(name)
        self._netns_inodes[name] = os.stat(f"/run/netns/{name}").st_ino
        self._ip("link", "set", "lo", "up", netns=name)

    def _make_network(self):
        self._add_netns(self.switch_netns)
        self._ip("link", "add", "br0", "type", "bridge", netns=self.switch_netns)
        self._ip("link", "set", "br0", "up", netns=self.switch_netns)
        members = [("api", self.api_netns, self.api_ip)]
        for i in range(1, self.n + 1):
            node = Node(self, i)
            self.nodes.append(node)
            members.append((f"n{i}", node.netns, node.ip))
        for port, ns, ip in members:
            self._add_netns(ns)
            self._ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
                     netns=self.switch_netns)
            self._ip("link", "set", port, "master", "br0", "up", netns=self.switch_netns)
            self._ip("addr", "add", f"{ip}/24", "dev", "eth0", netns=ns)
            self._ip("link", "set", "eth0", "up", netns=ns)
        fd = os.open(self.secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48) + "\n")

    def _start_standin(self):
        self.standin_dir.mkdir()
        self.home.mkdir()
        self._standin_log = open(self.standin_dir / "server.log", "ab")
        # ip netns exec execs the server: the PID is the server's. The CRDs are applied with kubectl.
        self.standin = subprocess.Popen(
            ["ip", "netns", "exec", self.api_netns, "/usr/bin/python3", str(STANDIN), "--host", self.api_ip,
             "--port", str(API_PORT), "--san", self.api_ip, "--no-crds", "--kubeconfig-out",
             str(self.admin_kubeconfig), "--state-dir", str(self.standin_dir / "state")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._standin_log)

    def _wait_standin(self, timeout=30):
        # The server prints one line when it serves.
        ready, _, _ = select.select([self.standin.stdout], [], [], timeout)
        line = self.standin.stdout.readline() if ready else b"(nothing within %ds)" % timeout
        if b"serving on" not in line:
            raise AssertionError(f"kube-standin did not start: {line!r}\n"
                                 f"{(self.standin_dir / 'server.log').read_text(errors='replace')}")
        self.api_url = line.decode().split("serving on", 1)[1].strip()
        assert self.api_url == f"https://{self.api_ip}:{API_PORT}", self.api_url
        pki = self.standin_dir / "state" / "pki"
        self._ssl = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self._ssl.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    def _prepare_node(self, node):
        for _ in range(self.disks_per_node):
            node.add_disk(self.disk_size)
        node.write_config()
        node.start_holder()

    def _register_node(self, node):
        # The node's own credentials, as the kubelet's: system:node:<name> in system:nodes.
        _run([str(STANDIN), "mint-kubeconfig", "--state-dir", str(self.standin_dir / "state"), "--user",
              f"system:node:{node.name}", "--group", "system:nodes", "--out", str(node.kubeconfig)])
        home = node.dir / "kubectl-home"
        home.mkdir(exist_ok=True)
        node.run([KUBECTL, "--kubeconfig", node.kubeconfig, "create", "-f", "-"],
                 input=json.dumps(node_object(node.name, ip=node.ip)), env={"HOME": str(home)})

    # ---- talking to the API

    def kubectl(self, *args, input=None, check=True, timeout=60, kubeconfig=None):
        """The real kubectl, inside the API server's namespace, as the cluster admin."""
        env = dict(os.environ, HOME=str(self.home), KUBECONFIG=str(kubeconfig or self.admin_kubeconfig))
        cmd = ["nsenter", f"--net=/run/netns/{self.api_netns}", "--", KUBECTL, *map(str, args)]
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, env=env, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(map(str, args))} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r

    def kubectl_json(self, *args):
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def api_request(self, method, path, body=None, ctype="application/json", timeout=30):
        """HTTPS straight to the stand-in (admin credentials), from inside its namespace."""
        from standinlib import Response
        conn = _NetnsHTTPSConnection(f"/run/netns/{self.api_netns}", self.api_ip, API_PORT, self._ssl, timeout)
        try:
            headers = {}
            data = None
            if body is not None:
                data = body if isinstance(body, (bytes, str)) else json.dumps(body)
                headers["Content-Type"] = ctype
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return Response(resp.status, dict(resp.getheaders()), resp.read())
        finally:
            conn.close()

    def api(self, method, path, body=None, expect=None, **kw):
        r = self.api_request(method, path, body, **kw)
        if expect is not None:
            assert r.status == expect, r
        return r.json

    def get(self, path):
        """The object at path, or None when it does not exist."""
        r = self.api_request("GET", path)
        if r.status == 404:
            return None
        assert r.status == 200, r
        return r.json

    def standin_admin(self, method, path, body=None):
        return self.api(method, "/_standin" + path, body, expect=200)

    # ---- nodes and leadership

    def node(self, i):
        """Node i, 1-based as in k8s-node-i; a name works too."""
        if isinstance(i, str):
            return next(n for n in self.nodes if n.name == i)
        return self.nodes[i - 1]

    def wait(self, fn, timeout=30, what="condition", interval=0.1):
        return wait(fn, timeout, what, interval, describe=self.describe)

    def lease_holder(self):
        """The node named by the leader Lease's holderIdentity (NAME_suffix), or None."""
        lease = self.get(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{LEADER_LEASE}")
        holder = ((lease or {}).get("spec") or {}).get("holderIdentity") or ""
        name = holder.rsplit("_", 1)[0]
        return next((n for n in self.nodes if n.name == name), None)

    def leaders(self):
        return [n for n in self.nodes if n.leading()]

    def leader(self):
        """The node that leads: the one whose daemon says it leads, which the Lease names too.
        None when nobody leads (yet); fails when two nodes believe they lead."""
        now = self.leaders()
        assert len(now) <= 1, f"two leaders at once: {now}"
        if not now:
            return None
        holder = self.lease_holder()
        return now[0] if holder is now[0] else None

    def wait_leader(self, timeout=15, exclude=()):
        return self.wait(lambda: (lambda l: l if l and l not in exclude else None)(self.leader()), timeout,
                         "a leader" + (f" other than {list(exclude)}" if exclude else ""), interval=0.05)

    # ---- replicas and their data

    def create_replica(self, node, capacity=64 * MiB, volume=None, name=None, pool=POOL_HDD):
        """A LocalVolumeReplica on node, created with kubectl; returns its name."""
        node = node if isinstance(node, Node) else self.node(node)
        volume = volume or "pvc-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=8))
        name = name or f"{volume}-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=6))
        obj = {"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolumeReplica", "metadata": {"name": name},
               "spec": {"volumeName": volume, "poolName": pool, "nodeName": node.name,
                        "requiredCapacityBytes": capacity}}
        self.kubectl("create", "-f", "-", input=json.dumps(obj))
        return name

    def replica_with_data(self, node, capacity=64 * MiB, volume=None, seed=None, timeout=30):
        """A replica on node, Ready, filled with random data: returns (name, sha256 hex)."""
        name = self.create_replica(node, capacity, volume=volume)
        self.wait_replica_ready(name, timeout)
        return name, self.write_random(name, seed=seed)

    def replica(self, name):
        """The replica object (through the API), or None."""
        return self.get(f"{LVR}/{name}")

    def replica_status(self, name):
        return ((self.replica(name) or {}).get("status")) or {}

    def wait_replica_ready(self, name, timeout=30):
        return self.wait(lambda: (lambda s: s if s.get("state") == "Ready" else None)(self.replica_status(name)),
                         timeout, f"replica {name} Ready")

    def _replica_location(self, name):
        r = self.replica(name)
        assert r, f"no replica {name}"
        spec = r["spec"]
        return self.node(spec["nodeName"]), spec["poolName"], spec["volumeName"]

    def extents(self, replica):
        """Where the replica's data lives: [(device, offset, length)] in logical order, from its
        node's LVM report (the mapping the daemon's block-I/O layer uses without device-mapper)."""
        node, vg, lv = self._replica_location(replica)
        return lv_extents(node, vg, lv)

    def write_random(self, replica, seed=None, length=None):
        """Fills the replica's LV (or its first length bytes) with random data; returns and records
        its sha256 (hex)."""
        digest = write_extents(self.extents(replica), seed=seed, length=length)
        self.digests[replica] = digest
        return digest

    def checksum(self, replica, length=None):
        """sha256 (hex) of the replica's LV (or its first length bytes), read through its extents."""
        return read_extents(self.extents(replica), length=length)[0]

    def storage_probe_read(self, replica, length=None):
        """Reads the replica's data through the daemon's own storage layer (storage-probe, inside the
        node, with the node's configuration); returns (sha256 hex, the extents it used)."""
        node, vg, lv = self._replica_location(replica)
        length = length or sum(e[2] for e in lv_extents(node, vg, lv))
        out = node.dir / f"probe-{lv}.bin"
        try:
            r = node.run([STORAGE_PROBE, node.config, "read", vg, lv, out, length])
            res = json.loads(r.stdout.strip().splitlines()[-1])
            assert res["error"] == 0, res
            h = hashlib.sha256()
            with open(out, "rb") as f:
                for chunk in iter(lambda: f.read(4 * MiB), b""):
                    h.update(chunk)
            return h.hexdigest(), [(e["path"], int(e["offset"]), int(e["length"])) for e in res["extents"]]
        finally:
            out.unlink(missing_ok=True)

    # ---- diagnostics

    def describe(self):
        lines = []
        for n in self.nodes:
            state = "running" if n.running else f"exited {n.proc.returncode}" if n.proc else "not started"
            lines.append(f"--- {n.name} ({n.ip}, pid {n.pid}, {state}); log tail:")
            lines.append(n.log()[-1500:])
        return "\n".join(lines)

    def logs(self):
        out = []
        for n in self.nodes:
            out.append(f"===== {n.name} ({n.ip}) hwameid log =====\n{n.log()}")
        try:
            text = (self.standin_dir / "server.log").read_text(errors="replace")
            out.append("===== kube-standin log (tail) =====\n" + (text[-5000:] or "(empty)"))
        except OSError:
            pass
        if self.standin is not None and self.standin.poll() is None and getattr(self, "_ssl", None):
            try:
                reqs = self.standin_admin("GET", "/requests")["items"][-60:]
                out.append("===== the API server's last requests =====")
                out += [f"{r['method']:6} {r['code']} {r['path']}{'?' + r['query'] if r.get('query') else ''} "
                        f"({r.get('user')}{', watch' if r.get('watch') else ''})" for r in reqs]
            except Exception as e:  # diagnostics only
                out.append(f"(no request log: {e})")
        return "\n".join(out)

    # ---- teardown

    def our_processes(self):
        """PIDs of every process in one of this cluster's network namespaces (started by us, one way
        or another)."""
        inodes = set(self._netns_inodes.values())
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                st = os.stat(f"/proc/{pid}/ns/net")
            except OSError:
                continue
            if st.st_ino in inodes:
                found.append(int(pid))
        return found

    def cleanup(self):
        """Ends everything this cluster started and removes everything it made; returns what had to
        be forced (processes that had to be killed, after the daemons and the API server)."""
        if self._cleaned:
            return []
        self._cleaned = True
        problems = []
        # Daemons first (SIGTERM all at once, so leaders hand over, then wait), then the server.
        for n in self.nodes:
            if n.running:
                n.proc.send_signal(signal.SIGTERM)
                n.proc.send_signal(signal.SIGCONT)  # in case a test stopped it
        for n in self.nodes:
            if n.proc is not None:
                try:
                    n.proc.wait(10)
                except subprocess.TimeoutExpired:
                    problems.append(f"{n.name}: hwameid ignored SIGTERM")
                    n.proc.kill()
                    n.proc.wait()
        if self.standin is not None:
            if self.standin.poll() is None:
                self.standin.send_signal(signal.SIGTERM)
                self.standin.send_signal(signal.SIGCONT)
            try:
                self.standin.wait(15)
            except subprocess.TimeoutExpired:
                problems.append("kube-standin ignored SIGTERM")
                self.standin.kill()
                self.standin.wait()
            self.standin.stdout.close()
        for n in self.nodes:
            if n.holder is not None:
                if n.holder.poll() is None:
                    n.holder.kill()
                n.holder.wait()
                n.holder.stderr.close()
            n._close_io()
        if self._standin_log:
            self._standin_log.close()
        # Anything else still in our namespaces was started by a test through us (node.popen...).
        for pid in self.our_processes():
            problems.append(f"process {pid} ({_comm(pid)}) left in the cluster's namespaces")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Namespaces: the switch last (its veth ends take their peers with them anyway).
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces = []
        self._netns_inodes = {}  # their numbers may now be reused by anybody's namespaces
        for n in self.nodes:
            for dev in n.disks:
                subprocess.run(["losetup", "-d", dev], capture_output=True)
            n.disks = []
            for img in n.images:
                img.unlink(missing_ok=True)
        shutil.rmtree(self.sockets, ignore_errors=True)
        return problems

    def leftovers(self):
        """What of this cluster still exists: namespaces, loop devices over its files, processes."""
        left = []
        names = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
        left += [f"netns {ns}" for ns in names if ns.startswith(self.prefix)]
        ours = str(self.dir)
        for blk in Path("/sys/block").glob("loop*"):
            try:
                backing = (blk / "loop" / "backing_file").read_text().strip()
            except OSError:
                continue
            if backing.startswith(ours):
                left.append(f"/dev/{blk.name} over {backing}")
        for n in self.nodes:
            left += [f"{n.name} process {pid}" for pid in n.pids()]
        if self.sockets.exists():
            left.append(f"directory {self.sockets}")
        if self.standin is not None and self.standin.poll() is None:
            left.append(f"kube-standin {self.standin.pid}")
        return left


# ------------------------------------------------------------------------- volume data mapping


def lv_extents(node, vg, lv):
    """[(device, offset, length)] of LV vg/lv in logical order, from node's LVM report: each segment's
    PE range (seg_pe_ranges "PV:first-last"), at pe_start + first * extent_size on the PV."""
    lvs = [r for r in node.lvm("lvs", "-o", "lv_name,vg_name,lv_size,seg_start_pe,seg_pe_ranges", vg)["lv"]
           if r["lv_name"] == lv]
    assert lvs, f"{node.name}: no LV {vg}/{lv}"
    extent_size = int(node.lvm("vgs", "-o", "vg_name,vg_extent_size", vg)["vg"][0]["vg_extent_size"])
    pe_start = {p["pv_name"]: int(p["pe_start"]) for p in node.lvm("pvs", "-o", "pv_name,vg_name,pe_start")["pv"]
                if p["vg_name"] == vg}
    out = []
    expect = 0
    for seg in sorted(lvs, key=lambda r: int(r["seg_start_pe"])):
        assert int(seg["seg_start_pe"]) == expect, lvs
        pv, rng = seg["seg_pe_ranges"].rsplit(":", 1)
        first, last = (int(x) for x in rng.split("-"))
        assert pv in node.disks, f"{vg}/{lv} on {pv}, not a disk of {node.name} ({node.disks})"
        out.append((pv, pe_start[pv] + first * extent_size, (last - first + 1) * extent_size))
        expect += last - first + 1
    assert sum(e[2] for e in out) == int(lvs[0]["lv_size"]), (out, lvs)
    return out


CHUNK = 4 * MiB


def _pieces(extents, length):
    """(device, device offset, length) pieces of at most CHUNK covering the first length bytes."""
    left = length
    for dev, off, n in extents:
        n = min(n, left)
        pos = 0
        while pos < n:
            k = min(CHUNK, n - pos)
            yield dev, off + pos, k
            pos += k
        left -= n
        if left == 0:
            return
    assert left == 0, f"{length} bytes asked, the extents hold {length - left}"


def _total(extents, length):
    total = sum(e[2] for e in extents)
    length = total if length is None else length
    assert 0 <= length <= total and length % 4096 == 0, (length, total)
    return length


def write_extents(extents, seed=None, length=None, data=None):
    """Writes random bytes (reproducible with seed; or data(offset, n) -> bytes) over the first length
    bytes of the extents, with O_DIRECT and fsync; returns their sha256 (hex)."""
    length = _total(extents, length)
    rng = random.Random(seed) if seed is not None else None
    h = hashlib.sha256()
    buf = mmap.mmap(-1, CHUNK)  # page-aligned, as O_DIRECT wants
    fds = {}
    try:
        logical = 0
        for dev, off, n in _pieces(extents, length):
            if dev not in fds:
                fds[dev] = os.open(dev, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
            chunk = data(logical, n) if data else rng.randbytes(n) if rng else os.urandom(n)
            assert len(chunk) == n
            h.update(chunk)
            buf[:n] = chunk
            view = memoryview(buf)[:n]
            assert os.pwritev(fds[dev], [view], off) == n
            view.release()
            logical += n
        for fd in fds.values():
            os.fsync(fd)
    finally:
        for fd in fds.values():
            os.close(fd)
        buf.close()
    return h.hexdigest()


def read_extents(extents, length=None, keep=False):
    """sha256 (hex) of the first length bytes of the extents, read with O_DIRECT (never a stale
    page cache); with keep, also the bytes."""
    length = _total(extents, length)
    h = hashlib.sha256()
    kept = bytearray() if keep else None
    buf = mmap.mmap(-1, CHUNK)
    fds = {}
    try:
        for dev, off, n in _pieces(extents, length):
            if dev not in fds:
                fds[dev] = os.open(dev, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
            view = memoryview(buf)[:n]
            assert os.preadv(fds[dev], [view], off) == n
            h.update(view)
            if keep:
                kept += view
            view.release()
    finally:
        for fd in fds.values():
            os.close(fd)
        buf.close()
    return h.hexdigest(), kept


# ------------------------------------------------------------------------------------ fixtures


def _print_logs_on_failure(request, cluster, failed_before):
    if request.session.testsfailed == failed_before:
        return
    text = f"\n##### {request.node.nodeid}: cluster {cluster.prefix} in {cluster.dir}\n{cluster.logs()}\n"
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman:
        with capman.global_and_fixture_disabled():
            sys.stderr.write(text)
    else:
        sys.stderr.write(text)


@pytest.fixture
def make_cluster(request, tmp_path):
    """make_cluster(nodes=3, **Cluster options) -> a started Cluster; all are torn down at the end
    of the test (their logs printed when it failed), and whatever they leave behind fails it."""
    if os.geteuid() != 0:
        pytest.skip("the cluster harness needs root (namespaces, loop devices, LVM)")
    clusters = []
    failed_before = request.session.testsfailed

    def make(nodes=3, **kw):
        c = Cluster(tmp_path / f"cluster{len(clusters)}", nodes=nodes, **kw)
        clusters.append(c)
        return c.start()

    yield make
    problems = []
    for c in clusters:
        _print_logs_on_failure(request, c, failed_before)
        problems += c.cleanup()
        problems += c.leftovers()
    assert not problems, problems


@pytest.fixture
def cluster(request, make_cluster):
    """A started cluster of 3 nodes; a test that wants another one says so with indirect
    parametrization, whose dict goes to Cluster:
    `@pytest.mark.parametrize("cluster", [{"nodes": 2, "config": "..."}], indirect=True)`."""
    return make_cluster(**dict(getattr(request, "param", None) or {}))
