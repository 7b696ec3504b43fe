# SPDX-License-Identifier: Apache-2.0
"""Debian guests under qemu (TCG) for hwameid's acceptance tests: the host side.

  Hub    an Ethernet segment between guests ("the storage network"): qemu's stream socket
         netdevs connect to it on 127.0.0.1 and it switches frames between them.
  Guest  one qemu process booting the image tests/vm/build-image made: a fresh qcow2 overlay of
         root.img per run, raw sparse extra disks (/dev/vdb, /dev/vdc, ...), slirp (eth0,
         restrict=on: no way out) with guestfwd relays to ports on the host's 127.0.0.1, a NIC on
         a Hub (eth1, a static address from the kernel command line), and the guest agent
         (tests/vm/guest/agent.py) on a virtio-serial port: run(), put(), get(), reboot().

Inside a guest:  eth0 10.0.2.15/24 (slirp; 10.0.2.100:PORT reaches host ports through guestfwd)
                 eth1 the storage address given (10.99.0.N/24), MAC 52:54:00:99:00:N
                 /dev/vda root (ext4), /dev/vdb... the extra disks (serial numbers disk1, disk2...)

Processes: each qemu runs under `timeout` (its lifetime bound), in a process group of its own,
and gets SIGTERM when the Python thread that started it dies (PR_SET_PDEATHSIG, when started from
the main thread). Nothing is ever killed by name: stop() and kill() use the PID they started.
"""

import base64
import ctypes
import itertools
import json
import os
import selectors
import shlex
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
RELAY = HERE / "relay.py"
QEMU = "/usr/bin/qemu-system-x86_64"
QEMU_IMG = "/usr/bin/qemu-img"
AGENT_PORT = "org.hwameid.agent"
SLIRP_GUEST_IP = "10.0.2.15"
MiB = 1 << 20
GiB = 1 << 30

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


# ---------------------------------------------------------------------------------------- hub

# Why a stream hub: qemu 7.2's `-netdev socket,connect=HOST:PORT` (net/socket.c) sends each frame
# as a 4-byte big-endian length and the frame, over TCP, and reads the same; the tests in
# test_vm_boot.py prove it (ARP, TCP between guests through this hub). The alternatives measured
# or ruled out here:
#   * `-netdev socket,listen=`/`connect=` pairs join only two guests, and the listener must start
#     before the connector; a hub that listens first joins any number, started in any order.
#   * `-netdev socket,mcast=` sends to a real multicast group (not loopback only), `-netdev
#     socket,udp=` drops frames when a receiver is slow (no flow control: a burst of block-stream
#     traffic would be lost and retransmitted by TCP in the guests); a stream hub keeps TCP's flow
#     control up to its per-port queue limit.
#   * `-netdev stream` (new in 7.2) has the same framing as socket,connect=; it buys nothing here.
#   * vde_switch needs the vde2 package and its own process; hubport netdevs only join NICs of
#     one qemu process.
# The hub learns source MACs (as a switch does), so unicast frames go to one port only, which
# matters under TCG: every frame a guest has to look at costs guest CPU.


class _HubPort:
    def __init__(self, sock, n):
        self.sock = sock
        self.n = n
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.macs = set()
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0

    def __repr__(self):
        return "<port %d %s>" % (self.n, sorted(_mac(m) for m in self.macs))


def _mac(b):
    return ":".join("%02x" % x for x in b)


class Hub:
    """An Ethernet segment for qemu `-netdev socket,connect=127.0.0.1:PORT` NICs: every frame
    goes to the port that owns its destination MAC, or to every other port (broadcast, multicast,
    not yet learned). link(mac, False) cuts a guest off the segment (its frames are dropped both
    ways) without it noticing a link change, as a failed switch port or cable would."""

    MAX_FRAME = 1 << 17  # qemu's NET_BUFSIZE is 4096 + 65536
    MAX_QUEUE = 8 * MiB  # per port; frames beyond it are dropped (a switch's buffer)

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.port = None
        self._listener = None
        self._sel = None
        self._ports = {}
        self._fib = {}  # mac bytes -> _HubPort
        self._down = set()  # mac bytes cut off
        self._counter = itertools.count(1)
        self._thread = None
        self._stop_r, self._stop_w = os.pipe()
        self._lock = threading.Lock()

    def start(self):
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self._listener.listen(16)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._stop_r, selectors.EVENT_READ, "stop")
        self._thread = threading.Thread(target=self._loop, name="vm-hub", daemon=True)
        self._thread.start()
        return self

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def link(self, mac, up):
        """Connects (up=True) or cuts off (False) the guest NIC with this MAC ("52:54:00:...")."""
        b = bytes(int(x, 16) for x in mac.split(":"))
        with self._lock:
            (self._down.discard if up else self._down.add)(b)

    def stats(self):
        with self._lock:
            return [{"port": p.n, "macs": sorted(_mac(m) for m in p.macs), "in": p.frames_in,
                     "out": p.frames_out, "dropped": p.dropped} for p in self._ports.values()]

    def stop(self):
        if self._thread is None:
            return
        os.write(self._stop_w, b"x")
        self._thread.join(10)
        self._thread = None
        for p in list(self._ports.values()):
            p.sock.close()
        self._ports.clear()
        self._listener.close()
        self._sel.close()
        os.close(self._stop_r)
        os.close(self._stop_w)

    # ---- the loop

    def _loop(self):
        while True:
            for key, events in self._sel.select():
                if key.data == "stop":
                    return
                if key.data == "accept":
                    self._accept()
                    continue
                port = key.data
                if port.sock.fileno() < 0:
                    continue
                if events & selectors.EVENT_WRITE:
                    self._flush(port)
                if events & selectors.EVENT_READ and port.sock.fileno() >= 0:
                    self._read(port)

    def _accept(self):
        try:
            s, _ = self._listener.accept()
        except BlockingIOError:
            return
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        port = _HubPort(s, next(self._counter))
        with self._lock:
            self._ports[s] = port
        self._sel.register(s, selectors.EVENT_READ, port)

    def _close(self, port):
        with self._lock:
            self._ports.pop(port.sock, None)
            for m in port.macs:
                if self._fib.get(m) is port:
                    del self._fib[m]
        try:
            self._sel.unregister(port.sock)
        except (KeyError, ValueError):
            pass
        port.sock.close()

    def _read(self, port):
        try:
            data = port.sock.recv(1 << 18)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(port)
            return
        port.rbuf += data
        buf = port.rbuf
        off = 0
        while len(buf) - off >= 4:
            (n,) = struct.unpack_from(">I", buf, off)
            if n > self.MAX_FRAME:
                self._close(port)  # not qemu's framing
                return
            if len(buf) - off < 4 + n:
                break
            self._switch(port, bytes(buf[off + 4:off + 4 + n]))
            off += 4 + n
        del buf[:off]

    def _switch(self, src, frame):
        src.frames_in += 1
        if len(frame) < 14:
            return
        dst, smac = frame[0:6], frame[6:12]
        with self._lock:
            if not smac[0] & 1:
                if smac not in src.macs:
                    src.macs.add(smac)
                self._fib[smac] = src
            if smac in self._down or dst in self._down:
                src.dropped += 1
                return
            if not dst[0] & 1 and dst in self._fib:
                outs = [self._fib[dst]] if self._fib[dst] is not src else []
            else:
                outs = [p for p in self._ports.values() if p is not src and not (p.macs & self._down)]
        hdr = struct.pack(">I", len(frame))
        for p in outs:
            if len(p.wbuf) > self.MAX_QUEUE:
                p.dropped += 1
                continue
            was_empty = not p.wbuf
            p.wbuf += hdr
            p.wbuf += frame
            p.frames_out += 1
            if was_empty:
                self._flush(p)

    def _flush(self, port):
        if port.wbuf:
            try:
                n = port.sock.send(port.wbuf)
                del port.wbuf[:n]
            except BlockingIOError:
                pass
            except OSError:
                self._close(port)
                return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if port.wbuf else 0)
        try:
            self._sel.modify(port.sock, want, port)
        except (KeyError, ValueError):
            pass


# -------------------------------------------------------------------------------------- guest


class GuestError(AssertionError):
    pass


@dataclass
class Result:
    cmd: object
    rc: int
    stdout_bytes: bytes
    stderr_bytes: bytes
    timed_out: bool = False

    @property
    def stdout(self):
        return self.stdout_bytes.decode(errors="replace")

    @property
    def stderr(self):
        return self.stderr_bytes.decode(errors="replace")

    @property
    def returncode(self):
        return self.rc

    def __repr__(self):
        return "<Result rc=%s %r stdout=%r stderr=%r>" % (self.rc, self.cmd, self.stdout[-500:], self.stderr[-500:])


class _Agent:
    """The host end of the agent's virtio-serial port (qemu's unix socket, server=on,wait=off)."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = None
        self.buf = b""
        self.ids = itertools.count(1)
        self.lock = threading.Lock()

    def _connect(self):
        if self.sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.path)
            # A newline first ends whatever torn line an earlier connection left in the guest's
            # buffer (the agent skips the garbage), so the first request is read whole.
            s.sendall(b"\n")
            self.sock = s
            self.buf = b""

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def call(self, req, timeout):
        """Sends req, returns the answer with its id; TimeoutError when none comes in time (the
        agent answers it later, and that answer is skipped then)."""
        with self.lock:
            deadline = time.monotonic() + timeout
            req = dict(req, id=next(self.ids))
            self._connect()
            try:
                self.sock.settimeout(max(timeout, 0.1))
                try:
                    self.sock.sendall((json.dumps(req) + "\n").encode())
                except OSError:
                    # Part of a line may have gone: a new connection makes the agent drop it.
                    self.close()
                    raise
                while True:
                    while b"\n" in self.buf:
                        line, self.buf = self.buf.split(b"\n", 1)
                        try:
                            resp = json.loads(line)
                        except ValueError:
                            continue
                        if resp.get("id") == req["id"]:
                            return resp
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("no answer from the agent within %.0fs to %s" % (timeout, req["op"]))
                    self.sock.settimeout(left)
                    try:
                        chunk = self.sock.recv(1 << 20)
                    except socket.timeout:
                        raise TimeoutError("no answer from the agent within %.0fs to %s" % (timeout, req["op"])) from None
                    if not chunk:
                        raise ConnectionError("the agent's socket closed (qemu exited?)")
                    self.buf += chunk
            except (ConnectionError, BrokenPipeError):
                self.close()
                raise


def _qmp(path, command, arguments=None, timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        f = s.makefile("rwb")
        json.loads(f.readline())  # greeting
        for cmd in ({"execute": "qmp_capabilities"}, dict({"execute": command}, **(
                {"arguments": arguments} if arguments else {}))):
            f.write((json.dumps(cmd) + "\n").encode())
            f.flush()
            while True:
                msg = json.loads(f.readline())
                if "return" in msg or "error" in msg:
                    break
            if "error" in msg:
                raise GuestError("QMP %s: %s" % (cmd["execute"], msg["error"]))
        return msg["return"]
    finally:
        s.close()


def _pdeathsig():
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Guest:
    """One qemu guest. name is its host name (systemd.hostname=); image_dir holds root.img, vmlinuz
    and initrd.img; workdir receives the overlay, the disks, the sockets and the logs.

    disks: sizes in bytes of the extra raw disks (/dev/vdb, /dev/vdc, ...). storage_ip
    "10.99.0.N/24" with hub: eth1 on that hub. guestfwd {"10.0.2.100:6443": host_port}: guest
    connections to that address reach 127.0.0.1:host_port. payload: a host directory shared
    over 9p (tag "payload"; mount it with mount_payload()). append: more kernel command line;
    qemu_args: more qemu options."""

    name: str
    image_dir: Path
    workdir: Path
    disks: list = field(default_factory=list)
    mem: int = 1024
    smp: int = 1
    hub: Hub = None
    storage_ip: str = None
    guestfwd: dict = field(default_factory=dict)
    payload: Path = None
    lifetime: int = 3600
    append: str = ""
    qemu_args: list = field(default_factory=list)

    def __post_init__(self):
        self.image_dir = Path(self.image_dir)
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        for p in (self.workdir, HERE):
            # qemu's guestfwd cmd: and -drive strings split on commas, slirp's exec on spaces.
            assert "," not in str(p) and " " not in str(p), f"no commas or spaces in {p}, please"
        self.overlay = self.workdir / "root.qcow2"
        self.disk_paths = [self.workdir / f"disk{i + 1}.img" for i in range(len(self.disks))]
        self.serial_path = self.workdir / "serial.log"
        self.qemu_log_path = self.workdir / "qemu.log"
        self.relay_log = self.workdir / "relay.log"
        # Unix socket paths are limited to 108 bytes: short names in the workdir.
        self.agent_path = self.workdir / "agent.sock"
        self.qmp_path = self.workdir / "qmp.sock"
        assert len(str(self.agent_path)) < 100, self.agent_path
        self.index = int(self.storage_ip.split("/")[0].rsplit(".", 1)[1]) if self.storage_ip else None
        self.proc = None
        self.agent = _Agent(self.agent_path)
        self.boot_id = None
        self.boots = 0
        self.timings = {}
        self._qemu_log = None

    def __repr__(self):
        return f"<Guest {self.name} {self.ip or ''} pid={self.pid}>"

    # ---- addresses

    @property
    def ip(self):
        """The storage address without prefix (10.99.0.N), or None."""
        return self.storage_ip.split("/")[0] if self.storage_ip else None

    @property
    def mac(self):
        """eth1's MAC (on the hub)."""
        return "52:54:00:99:00:%02x" % (self.index or 0)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # ---- start

    def _wrapper(self, guest_addr, host_port):
        path = self.workdir / f"relay-{host_port}.sh"
        path.write_text("#!/bin/sh\n# guestfwd %s -> 127.0.0.1:%d (qemu runs this per connection)\n"
                        "exec /usr/bin/python3 %s 127.0.0.1 %d %s\n"
                        % (guest_addr, host_port, RELAY, host_port, shlex.quote(str(self.relay_log))))
        path.chmod(0o755)
        return path

    def command(self):
        cmdline = ["console=ttyS0", "root=/dev/vda", "rw", "panic=-1", "net.ifnames=0",
                   f"systemd.hostname={self.name}", "systemd.firstboot=off"]
        if self.storage_ip:
            cmdline.append(f"hwameidvm.net=eth1:{self.storage_ip}")
        if self.append:
            cmdline.append(self.append)
        user = "user,id=slirp,restrict=on,net=10.0.2.0/24,host=10.0.2.2"
        for guest_addr, host_port in sorted(self.guestfwd.items()):
            user += f",guestfwd=tcp:{guest_addr}-cmd:{self._wrapper(guest_addr, host_port)}"
        cmd = [QEMU, "-name", self.name, "-nodefaults", "-no-user-config", "-machine", "q35", "-accel", "tcg",
               "-cpu", "max", "-smp", str(self.smp), "-m", str(self.mem), "-display", "none",
               "-serial", f"file:{self.serial_path}",
               "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
               "-kernel", str(self.image_dir / "vmlinuz"), "-initrd", str(self.image_dir / "initrd.img"),
               "-append", " ".join(cmdline),
               # NICs at fixed PCI slots, so that eth0 is slirp and eth1 the storage network.
               "-netdev", user, "-device", f"virtio-net-pci,netdev=slirp,mac=52:54:00:12:34:{self.index or 0:02x},addr=0x3"]
        if self.hub is not None:
            cmd += ["-netdev", f"socket,id=storage,connect={self.hub.address}",
                    "-device", f"virtio-net-pci,netdev=storage,mac={self.mac},addr=0x4"]
        cmd += ["-device", "virtio-serial-pci,addr=0x5",
                "-chardev", f"socket,id=agent,path={self.agent_path},server=on,wait=off",
                "-device", f"virtserialport,chardev=agent,name={AGENT_PORT}",
                "-device", "virtio-rng-pci,addr=0x6",
                # A guest kernel panic ends qemu (instead of rebooting for ever under panic=-1).
                "-device", "pvpanic", "-action", "panic=exit-failure",
                "-drive", f"file={self.overlay},if=none,id=root,format=qcow2,cache=unsafe,discard=unmap",
                "-device", "virtio-blk-pci,drive=root,serial=root,addr=0x8"]
        for i, path in enumerate(self.disk_paths):
            cmd += ["-drive", f"file={path},if=none,id=disk{i + 1},format=raw,cache=unsafe,discard=unmap",
                    "-device", f"virtio-blk-pci,drive=disk{i + 1},serial=disk{i + 1},addr={0x9 + i:#x}"]
        if self.payload:
            cmd += ["-virtfs", f"local,path={self.payload},mount_tag=payload,security_model=none,id=payload"]
        return cmd + [str(a) for a in self.qemu_args]

    def start(self):
        """Creates the overlay and the disks (fresh), starts qemu; returns at once."""
        assert not self.alive, f"{self.name} is running"
        for p in (self.overlay, *self.disk_paths, self.agent_path, self.qmp_path):
            p.unlink(missing_ok=True)
        subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-b", str(self.image_dir / "root.img"), "-F", "raw",
                        str(self.overlay)], check=True, capture_output=True)
        for path, size in zip(self.disk_paths, self.disks):
            with open(path, "wb") as f:
                f.truncate(size)
        self._qemu_log = open(self.qemu_log_path, "ab")
        cmd = ["timeout", "--kill-after=20", str(self.lifetime)] + self.command()
        self._qemu_log.write(("==== %s\n%s\n" % (time.strftime("%F %T"), shlex.join(cmd))).encode())
        self._qemu_log.flush()
        main = threading.current_thread() is threading.main_thread()
        # timeout puts itself in a process group of its own (its PID): stop() signals that.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._qemu_log, stderr=self._qemu_log,
                                     preexec_fn=_pdeathsig if main else None)
        self.timings["start"] = time.monotonic()
        self.boots = 1
        return self

    # ---- the agent

    def _check_alive(self):
        if not self.alive:
            raise GuestError(f"{self.name}: qemu exited ({self.proc.returncode if self.proc else 'not started'})\n"
                             f"{self.qemu_log()[-1500:]}\n--- serial tail:\n{self.serial_log(3000)}")

    def call(self, req, timeout):
        """One agent request; raises GuestError on an error answer."""
        self._check_alive()
        try:
            resp = self.agent.call(req, timeout)
        except (ConnectionError, FileNotFoundError) as e:
            self._check_alive()
            raise GuestError(f"{self.name}: agent: {e}") from e
        if not resp.get("ok"):
            raise GuestError(f"{self.name}: agent {req['op']}: {resp.get('error')}")
        return resp

    def hello(self, timeout=10, state=True):
        """The agent's hello: boot_id, state (systemctl is-system-running), uptime, hostname."""
        return self.call({"op": "hello", "state": state}, timeout)

    def wait_agent(self, timeout=600, new_boot_of=None):
        """Waits until the agent answers (from a boot other than new_boot_of); returns its hello."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            self._check_alive()
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestError(f"{self.name}: no agent within {timeout}s (last: {last})\n"
                                 f"--- serial tail:\n{self.serial_log(3000)}")
            try:
                if not os.path.exists(self.agent_path):
                    time.sleep(0.2)
                    continue
                h = self.hello(timeout=min(10, max(left, 1)), state=False)
                last = h
                if new_boot_of is None or h["boot_id"] != new_boot_of:
                    self.boot_id = h["boot_id"]
                    return h
                time.sleep(0.5)
            except (TimeoutError, GuestError, OSError) as e:
                last = e
                time.sleep(0.2)

    def wait_ready(self, timeout=600):
        """Waits until the agent answers and the boot is over: `systemctl is-system-running --wait`
        says running or degraded (returned). Raises with the serial log otherwise."""
        t0 = time.monotonic()
        self.wait_agent(timeout)
        self.timings["agent"] = time.monotonic() - self.timings.get("start", t0)
        left = max(timeout - (time.monotonic() - t0), 10)
        r = self.run(["systemctl", "is-system-running", "--wait"], timeout=left, check=False)
        state = r.stdout.strip()
        if state not in ("running", "degraded"):
            raise GuestError(f"{self.name}: system state {state!r} (rc {r.rc})\n"
                             f"{self.run('systemctl --failed --no-legend; systemctl list-jobs', check=False).stdout}"
                             f"--- serial tail:\n{self.serial_log(3000)}")
        self.timings["ready"] = time.monotonic() - self.timings.get("start", t0)
        self.state = state
        return state

    def run(self, cmd, timeout=120, check=True, input=None, env=None, cwd=None):
        """Runs cmd in the guest (a list: argv; a string: sh -c) as root; returns a Result (rc,
        stdout, stderr as text, stdout_bytes...). check: fail unless rc is 0. input: bytes or str."""
        req = {"op": "run", "timeout": timeout}
        if isinstance(cmd, str):
            req["sh"] = cmd
        else:
            req["argv"] = [str(c) for c in cmd]
        if input is not None:
            req["stdin"] = base64.b64encode(input.encode() if isinstance(input, str) else input).decode()
        if env:
            req["env"] = {str(k): str(v) for k, v in env.items()}
        if cwd:
            req["cwd"] = str(cwd)
        resp = self.call(req, timeout + 60)  # TCG slack: the agent ends the command at timeout
        r = Result(cmd, resp["rc"], base64.b64decode(resp["stdout"]), base64.b64decode(resp["stderr"]),
                   resp.get("timed_out", False))
        if r.timed_out:
            raise GuestError(f"{self.name}: {cmd!r} timed out after {timeout}s: {r}")
        if check and r.rc != 0:
            raise GuestError(f"{self.name}: {cmd!r} failed ({r.rc}):\n{r.stdout}{r.stderr}")
        return r

    def put(self, path, data, mode=0o644, timeout=120):
        """Writes a file in the guest (atomically; parent directories created)."""
        if isinstance(data, str):
            data = data.encode()
        self.call({"op": "put", "path": str(path), "data": base64.b64encode(data).decode(), "mode": mode},
                  timeout)

    def get(self, path, timeout=120):
        """A file's bytes from the guest."""
        return base64.b64decode(self.call({"op": "get", "path": str(path)}, timeout)["data"])

    def mount_payload(self, where="/mnt/payload"):
        self.run(f"mountpoint -q {where} || mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 payload {where}")
        return where

    # ---- power

    def reboot(self, timeout=600):
        """systemctl reboot in the guest; returns when the agent answers from the new boot and the
        boot is over (the same qemu process: no -no-reboot)."""
        old = self.boot_id or self.hello()["boot_id"]
        self.run(["systemctl", "--no-block", "reboot"], timeout=30)
        t0 = time.monotonic()
        self.wait_agent(timeout, new_boot_of=old)
        self.boots += 1
        state = self.wait_ready(max(timeout - (time.monotonic() - t0), 30))
        self.timings["reboot"] = time.monotonic() - t0
        return state

    def hard_reset(self, wait=True, timeout=600):
        """A power cut and restart: QMP system_reset (no shutdown in the guest); with wait, returns
        when the agent answers from the new boot and the boot is over."""
        self._check_alive()
        old = self.boot_id
        _qmp(self.qmp_path, "system_reset")
        if wait:
            t0 = time.monotonic()
            self.wait_agent(timeout, new_boot_of=old)
            self.boots += 1
            return self.wait_ready(max(timeout - (time.monotonic() - t0), 30))
        return None

    def stop(self, timeout=90):
        """Powers the guest off (systemctl poweroff), then ends qemu if it has not exited within
        timeout; returns qemu's exit status. Safe to call twice."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.run(["systemctl", "--no-block", "poweroff"], timeout=20, check=False)
            except (GuestError, TimeoutError, OSError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._cleanup()
        return self.proc.returncode

    def kill(self):
        """Ends qemu now: SIGTERM to timeout (which passes it on to qemu), then SIGKILL to its
        process group."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def _cleanup(self):
        self.agent.close()
        if self._qemu_log:
            self._qemu_log.close()
            self._qemu_log = None

    def leftovers(self):
        """PIDs of processes this guest left: its qemu, relays (found by the workdir in their
        command line)."""
        found = []
        if self.alive:
            found.append(self.proc.pid)
        mark = str(self.workdir).encode()
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if mark in f.read():
                        found.append(int(pid))
            except OSError:
                pass
        return found

    def remove_disks(self):
        """Deletes the overlay and the extra disks (the big files); the logs stay."""
        assert not self.alive
        for p in (self.overlay, *self.disk_paths):
            p.unlink(missing_ok=True)

    # ---- logs

    def serial_log(self, tail=None):
        try:
            text = self.serial_path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return text[-tail:] if tail else text

    def qemu_log(self):
        try:
            return self.qemu_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def journal(self, *args, timeout=60):
        """journalctl ARGS --no-pager in the guest (text), or why not."""
        try:
            return self.run(["journalctl", "--no-pager", *args], timeout=timeout, check=False).stdout
        except (GuestError, TimeoutError, OSError) as e:
            return f"(no journal: {e})"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
