"""Runs tools/kube-standin and talks to it; shared by every test suite that needs an API server.

A Standin offers: .url .port .kubeconfig .state_dir, .request() for raw HTTPS
as admin, .api() for JSON, .admin() for /_standin, .watch() for an event
stream, .kubectl() with a private HOME (so no discovery cache is shared).
"""

import http.client
import json
import os
import select
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LAUNCHER = os.path.join(REPO, "tools", "kube-standin")
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"

sys.path.insert(0, HERE)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.raw = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return "<Response %d %s>" % (self.status, self.raw[:300])


class WatchStream:
    """Reads a watch response event by event (the server frames with '\\n')."""

    def __init__(self, conn, resp):
        self.conn = conn
        self.resp = resp
        self.status = resp.status

    def next(self, timeout=5.0):
        """The next event as a dict, or None when the stream ended."""
        sock = self.conn.sock
        sock.settimeout(timeout)
        try:
            line = self.resp.readline()
        except TimeoutError:
            raise AssertionError("no watch event within %.1fs" % timeout) from None
        if not line:
            return None
        return json.loads(line)

    def events(self, n, timeout=5.0):
        out = []
        for _ in range(n):
            ev = self.next(timeout)
            assert ev is not None, "stream ended after %d events: %r" % (len(out), out)
            out.append(ev)
        return out

    def close(self):
        try:
            self.conn.close()
        except OSError:
            pass


class Standin:
    def __init__(self, workdir, state_dir=None, port=0, extra_args=()):
        self.workdir = workdir
        self.state_dir = state_dir or os.path.join(workdir, "state")
        self.kubeconfig = os.path.join(workdir, "kubeconfig")
        self.home = os.path.join(workdir, "home")
        os.makedirs(self.home, exist_ok=True)
        self.port = port
        self.extra_args = list(extra_args)
        self.proc = None
        self.url = None

    def start(self, timeout=20):
        cmd = ["/usr/bin/python3", LAUNCHER, "--port", str(self.port), "--kubeconfig-out",
               self.kubeconfig, "--state-dir", self.state_dir] + self.extra_args
        self.log = open(os.path.join(self.workdir, "server.log"), "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log)
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], deadline - time.monotonic())
            if not r:
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            if b"serving on" in line:
                self.url = line.decode().split("serving on", 1)[1].strip()
                self.port = int(self.url.rsplit(":", 1)[1])
                pki = os.path.join(self.state_dir, "pki")
                self.ca = os.path.join(pki, "ca.crt")
                self.cert = os.path.join(pki, "admin.crt")
                self.key = os.path.join(pki, "admin.key")
                return self
        self.stop()
        raise RuntimeError("kube-standin did not start: %r" % line)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Stop the server (by its PID) and return its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc.stdout.close()
        self.log.close()
        self.proc = None
        return rc

    # ----------------------------------------------------------- clients

    def ssl_context(self, cert=True):
        ctx = ssl.create_default_context(cafile=self.ca)
        if cert:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def connect(self, cert=True, timeout=30):
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                           context=self.ssl_context(cert))

    def request(self, method, path, body=None, headers=None, ctype="application/json",
                cert=True):
        conn = self.connect(cert)
        try:
            h = dict(headers or {})
            data = None
            if body is not None:
                data = body if isinstance(body, (bytes, str)) else json.dumps(body)
                h.setdefault("Content-Type", ctype)
            conn.request(method, path, body=data, headers=h)
            resp = conn.getresponse()
            return Response(resp.status, dict(resp.getheaders()), resp.read())
        finally:
            conn.close()

    def api(self, method, path, body=None, expect=None, **kw):
        r = self.request(method, path, body, **kw)
        if expect is not None:
            assert r.status == expect, r
        return r.json

    def admin(self, method, path, body=None):
        r = self.request(method, "/_standin" + path, body)
        assert r.status == 200, r
        return r.json

    def requests_log(self):
        return self.admin("GET", "/requests")["items"]

    def watch(self, path, headers=None, **query):
        q = dict(query)
        q.setdefault("watch", "true")
        conn = self.connect()
        conn.request("GET", path + "?" + urllib.parse.urlencode(q), headers=headers or {})
        resp = conn.getresponse()
        return WatchStream(conn, resp)

    def wait_watches(self, n=1, resource=None, field=None, timeout=5.0):
        """Wait until n watches are open on resource ("group/plural"), optionally
        with this fieldSelector, so that writes made afterwards are seen live."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = [w for w in self.admin("GET", "/watches")["items"]
                     if (resource is None or w["resource"] == resource)
                     and (field is None or w["query"].get("fieldSelector") == field)]
            if len(items) >= n:
                return
            time.sleep(0.02)
        raise AssertionError("fewer than %d watches open" % n)

    def kubectl(self, *args, input=None, check=True, timeout=60, kubeconfig=None):
        env = dict(os.environ, KUBECONFIG=kubeconfig or self.kubeconfig, HOME=self.home)
        p = subprocess.run([KUBECTL] + list(args), input=input, capture_output=True,
                           text=True, env=env, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError("kubectl %s failed (%d): %s%s" % (" ".join(args), p.returncode,
                                                                   p.stdout, p.stderr))
        return p

    def kubectl_popen(self, *args):
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, HOME=self.home)
        return subprocess.Popen([KUBECTL] + list(args), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
