#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""hwameid-vm-agent: the host's hands inside a test guest (tests/vm).

Serves JSON-lines requests on the virtio-serial port org.hwameid.agent, one at a time. Every
request has an "id" that its answer repeats, so the host can skip answers to requests it gave up
on (after a reconnect, or sent before a reboot). Binary data is base64 both ways.

  {"id": 1, "op": "hello", "state": true}
      -> {"id": 1, "ok": true, "boot_id": "...", "state": "running", "uptime": 12.3, "hostname": "..."}
      (state: `systemctl is-system-running`; null when the request says "state": false)
  {"id": 2, "op": "run", "argv": ["lvs"] | "sh": "lvs | wc -l", "stdin": B64, "timeout": 60,
   "env": {"K": "V"}, "cwd": "/"}
      -> {"id": 2, "ok": true, "rc": 0, "stdout": B64, "stderr": B64, "timed_out": false}
  {"id": 3, "op": "put", "path": "/etc/x", "data": B64, "mode": 420}   (parents created, atomic)
      -> {"id": 3, "ok": true}
  {"id": 4, "op": "get", "path": "/etc/x"}  -> {"id": 4, "ok": true, "data": B64, "mode": 420}
  errors -> {"id": N, "ok": false, "error": "..."}

When the host end is not connected, reads on the port return EOF (and writes block until it
connects again): the agent keeps the port open and waits. It runs from sysinit.target, so the
host can talk to the guest long before multi-user.target (and see why a boot hangs).
"""

import base64
import glob
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

PORT_NAME = "org.hwameid.agent"
MAX_LINE = 256 << 20


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def find_port():
    path = "/dev/virtio-ports/" + PORT_NAME
    if os.path.exists(path):
        return path
    # udev makes the symlink; before it runs, the name is in sysfs already.
    for d in glob.glob("/sys/class/virtio-ports/vport*"):
        try:
            with open(os.path.join(d, "name")) as f:
                if f.read().strip() == PORT_NAME:
                    dev = "/dev/" + os.path.basename(d)
                    if os.path.exists(dev):
                        return dev
        except OSError:
            pass
    return None


def b64(data):
    return base64.b64encode(data).decode()


def op_hello(req):
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot_id = f.read().strip()
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    state = None
    if req.get("state", True):  # the host's polls during boot skip it (cheap answers)
        try:
            state = subprocess.run(["systemctl", "is-system-running"], capture_output=True, text=True,
                                   timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            state = "unknown (%s)" % e
    return {"boot_id": boot_id, "state": state, "uptime": uptime, "hostname": socket.gethostname(),
            "pid": os.getpid()}


def op_run(req):
    if "argv" in req:
        argv = [str(a) for a in req["argv"]]
    else:
        argv = ["/bin/sh", "-c", req["sh"]]
    env = dict(os.environ)
    env.update({"LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "PAGER": "cat", "SYSTEMD_COLORS": "0",
                "TERM": "dumb", "HOME": "/root"})
    env.update(req.get("env") or {})
    stdin = base64.b64decode(req["stdin"]) if req.get("stdin") is not None else None
    timeout = req.get("timeout")
    try:
        p = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                             cwd=req.get("cwd") or "/", start_new_session=True)
    except OSError as e:
        return {"rc": 127, "stdout": "", "stderr": b64(("%s: %s\n" % (argv[0], e)).encode()), "timed_out": False}
    timed_out = False
    try:
        out, err = p.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            out, err = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # something outside the group holds the pipes
            p.kill()
            out, err = b"", b"(output lost: pipes held open after the timeout)\n"
            p.wait()
    return {"rc": p.returncode, "stdout": b64(out), "stderr": b64(err), "timed_out": timed_out}


def op_put(req):
    path = req["path"]
    data = base64.b64decode(req["data"])
    mode = int(req.get("mode", 0o644))
    d = os.path.dirname(path) or "/"
    os.makedirs(d, exist_ok=True)
    tmp = "%s/.%s.agent-tmp" % (d, os.path.basename(path))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    return {}


def op_get(req):
    with open(req["path"], "rb") as f:
        data = f.read()
        mode = os.fstat(f.fileno()).st_mode & 0o7777
    return {"data": b64(data), "mode": mode}


OPS = {"hello": op_hello, "run": op_run, "put": op_put, "get": op_get}


def handle(line):
    try:
        req = json.loads(line)
    except ValueError:
        return None  # a torn line (from before a reboot or reconnect): nobody waits for it
    rid = req.get("id")
    try:
        fn = OPS[req.get("op")]
        resp = fn(req)
        resp.update(ok=True)
    except Exception as e:  # the host gets the error, the agent goes on
        resp = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
    resp["id"] = rid
    return (json.dumps(resp) + "\n").encode()


def write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def serve(path):
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    log("serving on %s" % path)
    buf = b""
    connected = None
    try:
        while True:
            r, _, _ = select.select([fd], [], [], 1.0)
            if not r:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                # The host end is not connected: a line it was sending is lost.
                if connected is not False:
                    log("host not connected")
                connected = False
                buf = b""
                time.sleep(0.2)
                continue
            if connected is not True:
                log("host connected")
            connected = True
            buf += chunk
            if len(buf) > MAX_LINE:
                log("request longer than %d bytes: dropped" % MAX_LINE)
                buf = b""
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                out = handle(line)
                if out is not None:
                    write_all(fd, out)
    finally:
        os.close(fd)


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    while True:
        path = find_port()
        if path is None:
            time.sleep(0.2)
            continue
        try:
            serve(path)
        except OSError as e:
            log("port %s: %s; reopening" % (path, e))
            time.sleep(0.5)


if __name__ == "__main__":
    main()
