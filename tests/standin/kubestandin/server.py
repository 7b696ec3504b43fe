"""The HTTPS front end: routing, authentication, content negotiation, list,
watch streaming, discovery, and the /_standin admin API.

Threads: one per connection (ThreadingHTTPServer); the TLS handshake runs in
the connection's thread.  A watch holds its connection's thread and waits on
the store's condition variable; it ends at timeoutSeconds, when a fault
drops it, when the client goes away, or when the server stops.
"""

import base64
import ipaddress
import json
import os
import random
import select
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import certs, errors, selectors, tables
from .api import Api, Settings
from .errors import ApiError
from .faults import Faults, RequestLog
from .resources import Registry
from .store import Store, TooOld

KUBE_VERSION = "v1.32.4"
OPENAPI_V2_PROTO = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
PUBLIC_PATHS = ("/healthz", "/readyz", "/livez", "/version")
TABLE_MARK = "as=Table"


def qbool(v):
    """apimachinery Convert_Slice_string_To_bool: false only for absent, "0", "false"."""
    if v is None:
        return False
    return v not in ("0",) and v.lower() != "false"


def _json_bytes(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


class StandinServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, ctx, app):
        self.ctx = ctx
        self.app = app
        self.connections = set()
        self.conn_lock = threading.Lock()
        super().__init__(addr, Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        # Headers and body go out in separate writes; without this Nagle holds the body back
        # until the client acknowledges the headers (40 ms on a reused connection).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def close_connections(self):
        with self.conn_lock:
            conns = list(self.connections)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class App:
    """Everything the handler needs: the api, faults, log, auth and settings."""

    def __init__(self, state_dir, pki_dir, history_size=10000, kube_version=KUBE_VERSION,
                 verbose=False):
        self.store = Store(state_dir, history_size)
        self.registry = Registry()
        self.settings = Settings()
        self.api = Api(self.store, self.registry, self.settings)
        self.api.restore_crds()
        self.api.ensure_namespaces()
        self.faults = Faults()
        self.log = RequestLog()
        self.pki_dir = pki_dir
        self.tokens_path = os.path.join(pki_dir, "tokens.csv")
        self.tokens = {}
        self.tokens_mtime = None
        self.kube_version = kube_version
        self.verbose = verbose
        self.server_address = "127.0.0.1:0"
        self.watches = {}                 # id -> info, for /_standin/watches
        self.watches_lock = threading.Lock()

    def token_user(self, token):
        try:
            mtime = os.stat(self.tokens_path).st_mtime_ns
        except OSError:
            mtime = None
        if mtime != self.tokens_mtime:
            self.tokens = certs.load_tokens(self.tokens_path)
            self.tokens_mtime = mtime
        return self.tokens.get(token)


class _Done(Exception):
    """Raised to abandon a connection (client gone, or a reset fault)."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-standin"
    sys_version = ""
    timeout = 3600

    # --------------------------------------------------------- connection

    def setup(self):
        self.request.settimeout(30)
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):
            self.tls_ok = False
            self.request.close()
            self.rfile = self.wfile = None
            return
        self.tls_ok = True
        self.request.settimeout(None)
        with self.server.conn_lock:
            self.server.connections.add(self.request)
        super().setup()

    def handle(self):
        if self.tls_ok:
            try:
                super().handle()
            except (ConnectionError, ssl.SSLError, _Done, OSError):
                self.close_connection = True

    def finish(self):
        if not self.tls_ok:
            return
        with self.server.conn_lock:
            self.server.connections.discard(self.request)
        try:
            super().finish()
        except (ConnectionError, ssl.SSLError, OSError):
            pass

    def log_message(self, fmt, *args):
        if self.server.app.verbose:
            sys.stderr.write("kube-standin: %s %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    # ------------------------------------------------------------ plumbing

    @property
    def app(self):
        return self.server.app

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send_bytes(self, code, body, ctype="application/json", headers=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.code = code

    def send_json(self, code, obj, headers=None):
        self.send_bytes(code, _json_bytes(obj), headers=headers)

    def send_error_status(self, e):
        headers = {}
        if e.retry_after:
            headers["Retry-After"] = str(e.retry_after)
        self.send_json(e.code, e.status(), headers)

    def authenticate(self):
        """(user, groups) from the client certificate or bearer token, else None."""
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            found = self.app.token_user(auth[7:].strip())
            if found:
                return found[0], list(found[1]) + ["system:authenticated"]
            return "invalid-token", None
        try:
            cert = self.request.getpeercert()
        except (ValueError, OSError):
            cert = None
        if cert:
            user, groups = None, []
            for rdn in cert.get("subject", ()):
                for k, v in rdn:
                    if k == "commonName":
                        user = v
                    elif k == "organizationName":
                        groups.append(v)
            if user:
                return user, groups + ["system:authenticated"]
        return None

    def peer_is_loopback(self):
        try:
            return ipaddress.ip_address(self.client_address[0]).is_loopback
        except ValueError:
            return False

    # ------------------------------------------------------------ dispatch

    def dispatch(self, method):
        self.code = 0
        self.is_watch = False
        url = urllib.parse.urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query,
                                                            keep_blank_values=True).items()}
        target = path + ("?" + url.query if url.query else "")
        body = self.read_body()
        who = self.authenticate()
        user = who[0] if who else None
        try:
            if path.startswith("/_standin"):
                self.handle_admin(method, path, query, body, who)
                return
            if who is None and path not in PUBLIC_PATHS:
                raise errors.unauthorized()
            if who is not None and who[1] is None:
                raise errors.unauthorized()
            delay = self.app.faults.latency_for(method, target)
            if delay > 0:
                time.sleep(delay)
            rule = self.app.faults.error_for(method, target)
            if rule is not None:
                raise errors.generic(int(rule.spec.get("code", 500)), rule.spec.get("message"),
                                     rule.spec.get("retryAfterSeconds"))
            self.route(method, path, query, body, target)
        except ApiError as e:
            if self.code == 0:
                self.send_error_status(e)
        except _Done:
            self.close_connection = True
            raise
        except (ConnectionError, ssl.SSLError, BrokenPipeError):
            self.close_connection = True
        except Exception as e:  # an unexpected failure: answer 500, keep serving
            import traceback
            traceback.print_exc()
            if self.code == 0:
                self.send_error_status(ApiError(500, "InternalError",
                                                "Internal error occurred: %s" % e))
            else:
                # The answer had started: the connection cannot be reused.
                self.close_connection = True
        finally:
            if not path.startswith("/_standin"):
                self.app.log.add(method, path, url.query, user, self.code,
                                 self.headers.get("User-Agent", ""), self.is_watch)

    def route(self, method, path, query, body, target):
        if path in ("/healthz", "/readyz", "/livez"):
            self.send_bytes(200, b"ok", "text/plain; charset=utf-8")
            return
        if path == "/version":
            self.send_json(200, self.version_info())
            return
        if path == "/openapi/v2":
            accept = self.headers.get("Accept", "")
            if "protobuf" in accept or "json" not in accept:
                self.send_bytes(200, b"", OPENAPI_V2_PROTO)
            else:
                self.send_json(200, {"swagger": "2.0", "info": {
                    "title": "Kubernetes", "version": self.app.kube_version},
                    "paths": {}, "definitions": {}})
            return
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"]:
            if len(parts) == 1:
                self.send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                     "serverAddressByClientCIDRs": [{
                                         "clientCIDR": "0.0.0.0/0",
                                         "serverAddress": self.app.server_address}]})
                return
            if parts[1] != "v1":
                raise errors.not_found_path()
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"]:
            if len(parts) == 1:
                self.send_json(200, self.group_list())
                return
            groups = self.app.registry.groups()
            if parts[1] not in groups:
                raise errors.not_found_path()
            if len(parts) == 2:
                self.send_json(200, self.group_info(parts[1], groups[parts[1]]))
                return
            if parts[2] not in groups[parts[1]]:
                raise errors.not_found_path()
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise errors.not_found_path()
        if not rest:
            if method != "GET":
                raise errors.method_not_allowed()
            self.send_json(200, self.resource_list(group, version))
            return
        self.resource_request(method, group, version, rest, query, body, target)

    # ------------------------------------------------------------ discovery

    def version_info(self):
        v = self.app.kube_version
        major, minor = v.lstrip("v").split(".")[:2]
        return {"major": major, "minor": minor, "gitVersion": v,
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2025-04-22T16:00:00Z",
                "goVersion": "go1.23.6", "compiler": "gc", "platform": "linux/amd64"}

    def group_info(self, name, versions):
        vs = [{"groupVersion": "%s/%s" % (name, v), "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": vs,
                "preferredVersion": vs[0]}

    def group_list(self):
        groups = [self.group_info(n, vs) for n, vs in sorted(self.app.registry.groups().items())]
        for g in groups:
            del g["kind"], g["apiVersion"]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def resource_list(self, group, version):
        out = []
        for rd in sorted(self.app.registry.all(), key=lambda r: r.plural):
            if rd.group != group or version not in rd.versions:
                continue
            e = {"name": rd.plural, "singularName": rd.singular, "namespaced": rd.namespaced,
                 "kind": rd.kind, "verbs": rd.verbs}
            if rd.short_names:
                e["shortNames"] = rd.short_names
            if rd.categories:
                e["categories"] = rd.categories
            out.append(e)
            if rd.status:
                out.append({"name": rd.plural + "/status", "singularName": "",
                            "namespaced": rd.namespaced, "kind": rd.kind,
                            "verbs": ["get", "patch", "update"]})
            out.extend(rd.extra_subresources)
        gv = "%s/%s" % (group, version) if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                "resources": out}

    # ------------------------------------------------------------ resources

    def resource_request(self, method, group, version, rest, query, body, target):
        reg = self.app.registry
        if rest[0] == "watch":
            query["watch"] = "true"
            rest = rest[1:]
            if not rest:
                raise errors.not_found_path()
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            rd = reg.lookup(group, version, rest[2])
            if rd is not None and rd.namespaced:
                ns, rest = rest[1], rest[2:]
        rd = reg.lookup(group, version, rest[0])
        if rd is None or (ns is not None and not rd.namespaced):
            raise errors.not_found_path()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if len(rest) > 3:
            raise errors.not_found_path()
        if rd.namespaced and name is not None and ns is None:
            raise errors.not_found_path()
        if sub is not None and not (sub == "status" and rd.status) and not (
                sub == "eviction" and rd.plural == "pods"):
            raise errors.not_found_path()
        api = self.app.api
        data = None
        if body and method in ("POST", "PUT", "DELETE") and not (method == "DELETE" and
                                                                   not body.strip()):
            try:
                data = json.loads(body)
            except ValueError as e:
                raise errors.bad_request("error decoding the request body: %s" % e) from e
        if name is None:
            if method == "GET":
                if qbool(query.get("watch")):
                    self.watch(rd, version, ns, query, target)
                else:
                    self.list(rd, version, ns, query, target)
            elif method == "POST":
                self.send_obj(rd, version, 201, api.create(rd, ns, data, query))
            elif method == "DELETE":
                self.delete_collection(rd, version, ns, query, data)
            else:
                raise errors.method_not_allowed()
            return
        if sub == "eviction":
            if method != "POST":
                raise errors.method_not_allowed()
            api.evict(ns, name, data, query)
            self.send_json(201, errors.status_body(201, None, None, None, success=True))
            return
        if method == "GET":
            self.send_obj(rd, version, 200, api.get(rd, ns, name), table=True)
        elif method == "PUT":
            obj, code = api.update(rd, ns, name, data, query, sub)
            self.send_obj(rd, version, code, obj)
        elif method == "PATCH":
            obj, code = api.patch(rd, ns, name, self.headers.get("Content-Type", ""), body,
                                  query, sub)
            self.send_obj(rd, version, code, obj)
        elif method == "DELETE":
            res, code = api.delete(rd, ns, name, data, query)
            if res.get("kind") == "Status":
                self.send_json(code, res)
            else:
                self.send_obj(rd, version, code, res)
        else:
            raise errors.method_not_allowed()

    def wants_table(self):
        return TABLE_MARK in self.headers.get("Accept", "")

    def send_obj(self, rd, version, code, obj, table=False):
        out = self.app.api._out(rd, obj, version)
        if table and self.wants_table():
            include = self.query_include()
            out = tables.build(rd, version, [out], include,
                               list_meta={"resourceVersion": obj["metadata"]["resourceVersion"]})
        self.send_json(code, out)

    def query_include(self):
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        return (q.get("includeObject") or ["Metadata"])[-1]

    def selectors(self, rd, query):
        ls = selectors.parse_label_selector(query.get("labelSelector"))
        fs = selectors.parse_field_selector(query.get("fieldSelector"), rd.selectable_fields())
        return ls, fs

    def matcher(self, rd, query):
        ls, fs = self.selectors(rd, query)

        def match(obj):
            if obj is None:
                return False
            return ls.matches((obj.get("metadata") or {}).get("labels")) and \
                fs.matches(rd.fieldset(obj))
        return match

    def _wait_rv(self, rv):
        store = self.app.store
        if rv > store.rv and not store.wait_for_rv(rv, 3.0):
            raise ApiError(504, "Timeout", "Timeout: Too large resource version: %d, "
                           "current: %d" % (rv, store.rv),
                           {"causes": [{"reason": "ResourceVersionTooLarge",
                                        "message": "Too large resource version"}],
                            "retryAfterSeconds": 1}, 1)

    @staticmethod
    def _parse_rv(s):
        try:
            v = int(s)
            if v < 0:
                raise ValueError
            return v
        except ValueError:
            raise errors.bad_request('invalid resource version "%s"' % s) from None

    def list(self, rd, version, ns, query, target):
        match = self.matcher(rd, query)
        rv_param = query.get("resourceVersion", "")
        if rv_param not in ("", "0"):
            rv = self._parse_rv(rv_param)
            if self.app.faults.expire_for("GET", target) or rv < self.app.store.compacted_rv and \
                    query.get("resourceVersionMatch") == "Exact":
                raise errors.expired("too old resource version: %d (%d)"
                                     % (rv, self.app.store.compacted_rv))
            self._wait_rv(rv)
        items, list_rv = self.app.store.list(rd.key, ns)
        items = [o for o in items if match(o)]
        limit = int(query.get("limit") or 0) if rv_param != "0" else 0
        cont = query.get("continue")
        meta = {}
        if cont:
            try:
                tok = json.loads(base64.urlsafe_b64decode(cont.encode()))
                start, list_rv = tok["start"], tok["rv"]
            except (ValueError, KeyError, TypeError):
                raise errors.bad_request("continue key is not valid") from None
            if list_rv < self.app.store.compacted_rv:
                raise errors.expired("The provided continue parameter is too old to display a "
                                     "consistent list result. You can start a new list without "
                                     "the continue parameter.")
            items = [o for o in items if _ident(o) > start]
        if limit > 0 and len(items) > limit:
            rest = len(items) - limit
            items = items[:limit]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"rv": list_rv, "start": _ident(items[-1])}).encode()).decode()
            meta["remainingItemCount"] = rest
        meta = dict({"resourceVersion": str(list_rv)}, **meta)
        out_items = [self.app.api._out(rd, o, version) for o in items]
        if self.wants_table():
            self.send_json(200, tables.build(rd, version, out_items, self.query_include(),
                                             list_meta=meta))
            return
        if not rd.custom:
            out_items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
                         for o in out_items]
        gv = "%s/%s" % (rd.group, version) if rd.group else version
        self.send_json(200, {"kind": rd.list_kind, "apiVersion": gv, "metadata": meta,
                             "items": out_items})

    def delete_collection(self, rd, version, ns, query, data):
        match = self.matcher(rd, query)
        items, rv = self.app.store.list(rd.key, ns)
        for o in items:
            if match(o):
                try:
                    self.app.api.delete(rd, ns, o["metadata"]["name"], data, query)
                except ApiError as e:
                    if e.code != 404:
                        raise
        gv = "%s/%s" % (rd.group, version) if rd.group else version
        self.send_json(200, {"kind": rd.list_kind, "apiVersion": gv,
                             "metadata": {"resourceVersion": str(self.app.store.rv)},
                             "items": []})

    # ---------------------------------------------------------------- watch

    def write_chunk(self, data):
        if not data:
            return
        split = self.app.settings.watch_chunk_bytes
        if split > 0:
            for i in range(0, len(data), split):
                piece = data[i:i + split]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                time.sleep(0.005)
        else:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_chunks(self):
        self.wfile.write(b"0\r\n\r\n")

    def client_gone(self):
        """True when the client closed its end (checked while a watch is idle)."""
        sock = self.request
        try:
            r, _, _ = select.select([sock], [], [], 0)
        except (ValueError, OSError):
            return True
        if not r:
            return False
        try:
            sock.setblocking(False)
            data = sock.recv(1)
            return data == b""
        except ssl.SSLWantReadError:
            return False
        except (ssl.SSLError, OSError):
            return True
        finally:
            try:
                sock.setblocking(True)
            except OSError:
                pass

    def watch(self, rd, version, ns, query, target):
        self.is_watch = True
        app = self.app
        store = app.store
        match = self.matcher(rd, query)
        rv_param = query.get("resourceVersion", "")
        bookmarks = qbool(query.get("allowWatchBookmarks"))
        send_initial = query.get("sendInitialEvents")
        since = None
        if rv_param not in ("", "0"):
            since = self._parse_rv(rv_param)
            self._wait_rv(since)
        if send_initial is not None and qbool(send_initial):
            since = None
        expire = since is not None and app.faults.expire_for("GET", target)
        table = self.wants_table()
        include = self.query_include()
        gv = "%s/%s" % (rd.group, version) if rd.group else version
        too_old = None
        w = None
        initial = []
        if not expire:
            try:
                w, initial, _ = store.watch(rd.key, ns, since)
            except TooOld as e:
                too_old = str(e)
        else:
            too_old = "too old resource version: %d (%d)" % (since, store.rv)
        timeout = query.get("timeoutSeconds")
        start = time.monotonic()
        deadline = start + (float(timeout) if timeout else random.uniform(1800, 3600))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.code = 200
        if too_old is not None:
            self.write_chunk(_json_bytes({"type": "ERROR", "object": errors.status_body(
                410, "Expired", too_old)}) + b"\n")
            self.end_chunks()
            return
        wid = id(w)
        with app.watches_lock:
            app.watches[wid] = {"resource": rd.key, "namespace": ns, "query": query,
                                "since": time.time()}
        first_table = [True]

        def encode(type_, obj):
            out = app.api._out(rd, obj, version)
            if table:
                out = tables.build(rd, version, [out], include, with_defs=first_table[0],
                                   list_meta={"resourceVersion": obj["metadata"]["resourceVersion"]})
                first_table[0] = False
            return _json_bytes({"type": type_, "object": out}) + b"\n"

        def bookmark(rv, initial_end=False):
            md = {"resourceVersion": str(rv)}
            if not rd.custom:
                md["creationTimestamp"] = None
            if initial_end:
                md["annotations"] = {"k8s.io/initial-events-end": "true"}
            obj = {"kind": rd.kind, "apiVersion": gv, "metadata": md}
            if table:
                obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": md,
                       "rows": []}
            return _json_bytes({"type": "BOOKMARK", "object": obj}) + b"\n"

        try:
            buf = b"".join(encode("ADDED", o) for o in initial or () if match(o))
            if send_initial is not None and qbool(send_initial) and bookmarks:
                buf += bookmark(store.rv, initial_end=True)
            if buf:
                self.write_chunk(buf)
            interval = app.settings.bookmark_interval
            next_bm = time.monotonic() + interval
            if timeout and deadline - 2 > start and deadline - 2 < next_bm:
                next_bm = deadline - 2
            last_check = time.monotonic()
            while True:
                with store.cond:
                    while not w.queue and w.closed is None:
                        now = time.monotonic()
                        wake = min(deadline, next_bm if bookmarks else deadline,
                                   last_check + 1.0)
                        if wake <= now:
                            break
                        store.cond.wait(wake - now)
                    events = list(w.queue)
                    w.queue.clear()
                    closed = w.closed
                    cur_rv = store.rv
                out = []
                for ev in events:
                    was, now_ = match(ev.old), match(ev.obj)
                    if ev.type == "ADDED" and now_:
                        out.append(encode("ADDED", ev.obj))
                    elif ev.type == "DELETED" and now_:
                        out.append(encode("DELETED", ev.obj))
                    elif ev.type == "MODIFIED":
                        if was and now_:
                            out.append(encode("MODIFIED", ev.obj))
                        elif now_:
                            out.append(encode("ADDED", ev.obj))
                        elif was:
                            gone = dict(ev.old)
                            gone["metadata"] = dict(ev.old["metadata"],
                                                    resourceVersion=str(ev.rv))
                            out.append(encode("DELETED", gone))
                if out:
                    if app.settings.pack_events:
                        self.write_chunk(b"".join(out))
                    else:
                        for o in out:
                            self.write_chunk(o)
                if closed == "reset":
                    self.close_connection = True
                    try:
                        self.request.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    raise _Done()
                if closed is not None:
                    self.end_chunks()
                    self.close_connection = True
                    return
                now = time.monotonic()
                if now >= deadline:
                    self.end_chunks()
                    return
                if bookmarks and now >= next_bm and not events:
                    self.write_chunk(bookmark(cur_rv))
                    next_bm = now + app.settings.bookmark_interval
                if now - last_check >= 1.0:
                    last_check = now
                    if self.client_gone():
                        raise _Done()
        finally:
            store.unwatch(w)
            with app.watches_lock:
                app.watches.pop(wid, None)

    # ---------------------------------------------------------------- admin

    def handle_admin(self, method, path, query, body, who):
        app = self.app
        admin = who is not None and who[1] is not None and "system:masters" in who[1]
        if not admin and not self.peer_is_loopback():
            raise ApiError(403, "Forbidden", "the stand-in admin API needs system:masters "
                           "or a loopback client")
        data = json.loads(body) if body.strip() else {}
        p = path[len("/_standin"):]
        if p == "/requests":
            if method == "DELETE":
                app.log.clear()
            self.send_json(200, {"items": app.log.list(int(query.get("since") or 0))})
        elif p == "/faults":
            if method == "DELETE":
                app.faults.clear()
            elif method == "POST":
                specs = data.get("faults", [data]) if isinstance(data, dict) else data
                for spec in specs:
                    self.admin_fault(spec)
            self.send_json(200, {"faults": app.faults.list()})
        elif p == "/settings":
            if method in ("POST", "PUT", "PATCH"):
                app.settings.update(data)
                if "historySize" in data:
                    app.store.set_history_size(data["historySize"])
            d = app.settings.as_dict()
            d["historySize"] = app.store.history_size
            self.send_json(200, d)
        elif p == "/compact":
            app.store.compact()
            self.send_json(200, {"resourceVersion": str(app.store.rv)})
        elif p == "/watches":
            with app.watches_lock:
                items = list(app.watches.values())
            self.send_json(200, {"items": items})
        elif p == "/tokens" and method == "POST":
            token = certs.add_token(app.tokens_path, data["user"], data.get("groups") or [],
                                    data.get("token"))
            self.send_json(200, {"token": token})
        elif p == "/state":
            self.send_json(200, {"resourceVersion": str(app.store.rv),
                                 "compactedResourceVersion": str(app.store.compacted_rv)})
        else:
            raise errors.not_found_path()

    def admin_fault(self, spec):
        app = self.app
        kind = spec.get("type")
        if kind == "drop-watches":
            app.store.close_watchers("reset" if spec.get("mode", "reset") == "reset"
                                     else "drop")
        elif kind == "compact":
            app.store.compact()
        else:
            try:
                app.faults.add(spec)
            except (ValueError, KeyError) as e:
                raise errors.bad_request(str(e)) from e


def _ident(o):
    md = o["metadata"]
    return "%s/%s" % (md.get("namespace") or "", md["name"])


def make_ssl_context(pki_dir, server_crt, server_key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(server_crt, server_key)
    ctx.load_verify_locations(os.path.join(pki_dir, "ca.crt"))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
