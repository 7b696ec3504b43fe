# SPDX-License-Identifier: Apache-2.0
"""The monitoring endpoint ([Metrics]): /metrics in Prometheus' text format (checked by a parser of
its own here: every sample `name{labels} value`, every family with HELP and TYPE, samples grouped
under their family), describing what the node has (pools, replicas, leadership, the cluster
connection, migrations on the leader, the bytes a push sent); /healthz and /readyz (503 with the
reason until the API server is reached); 404 and 405; clients that connect and say nothing delay
nobody; no fd is left behind; and the configuration of the endpoint."""

import http.client
import json
import math
import os
import re
import socket
import sys
import time

import pytest

from conftest import ROOT, run_hwameid, wait
from harness import cluster, make_cluster, socket_in_netns  # noqa: F401

sys.path.insert(0, str(ROOT / "tests" / "standin"))
from objects import HW, node  # noqa: E402

MiB = 1 << 20
LVR = f"{HW}/localvolumereplicas"
LVM = f"{HW}/localvolumemigrates"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# ------------------------------------------------------------------------ the format, parsed

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def _unescape(s):
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], s)


def _labels(text):
    out, pos = {}, 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        assert m, f"bad labels at {text[pos:]!r}"
        assert m.group(1) not in out, f"label {m.group(1)} twice"
        out[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
        if pos < len(text):
            assert text[pos] == ",", f"expected ',' in {text!r}"
            pos += 1
    return out


def parse_metrics(text):
    """Prometheus text format 0.0.4 -> {family: {"help", "type", "samples": [(labels, value)]}};
    fails on anything the format does not allow or a scraper would not take."""
    assert text.endswith("\n"), "the text ends with a newline"
    families, current = {}, None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, help_ = line[len("# HELP "):].partition(" ")
            assert _NAME.match(name), line
            assert name not in families, f"family {name} twice"
            families[name] = {"help": _unescape(help_), "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            name, _, type_ = line[len("# TYPE "):].partition(" ")
            assert name == current and families[name]["type"] is None, f"TYPE out of place: {line}"
            assert type_ in ("counter", "gauge", "untyped"), line
            families[name]["type"] = type_
        else:
            assert not line.startswith("#") and line, f"unexpected line {line!r}"
            m = _SAMPLE.match(line)
            assert m, f"not a sample: {line!r}"
            name = m.group(1)
            assert name == current, f"sample {name} outside its family ({current})"
            value = float(m.group(3))  # takes NaN, +Inf, -Inf too
            labels = _labels(m.group(2) or "")
            assert labels not in [s[0] for s in families[name]["samples"]], f"{line!r} twice"
            families[name]["samples"].append((labels, value))
    for name, f in families.items():
        assert f["help"] and f["type"], f"{name} lacks HELP or TYPE"
        if f["type"] == "counter":
            assert name.endswith("_total"), name
            assert all(v >= 0 and not math.isnan(v) for _, v in f["samples"]), name
        assert name.startswith("hwameid_"), name
    return families


def value(families, name, **labels):
    """The value of the sample of name with exactly these labels, or None."""
    for lab, v in families.get(name, {}).get("samples", []):
        if lab == labels:
            return v
    return None


# ------------------------------------------------------------------------ HTTP

class Endpoint:
    def __init__(self, port, host="127.0.0.1"):
        self.host, self.port = host, port

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
        finally:
            conn.close()

    def get(self, path):
        return self.request("GET", path)

    def metrics(self):
        status, headers, body = self.get("/metrics")
        assert status == 200, (status, body)
        assert headers["content-type"] == CONTENT_TYPE
        return parse_metrics(body)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_with_metrics(make_daemon, extra="", kubeconfig=None, name="node"):
    """A daemon (file backend, two pools) with the endpoint on a free port of 127.0.0.1; another
    port if that one was taken in between."""
    for attempt in range(3):
        d = make_daemon(name=f"{name}{attempt}")
        if kubeconfig:
            d.kubeconfig.write_bytes(open(kubeconfig, "rb").read())
        port = free_port()
        d.write_config("[Storage]\nBackend=file\nFilePoolCapacity=1G\nFilePoolClasses=HDD SSD\n"
                       f"[Metrics]\nPort={port}\n" + extra)
        d.start()
        st = d.status()["metrics"]
        if st["state"] == "listening":
            assert st["port"] == port and st["address"] == f"127.0.0.1:{port}" and st["problem"] is None, st
            d.http = Endpoint(port)
            return d
        assert "Address already in use" in st["problem"], st
        assert d.stop() == 0
    raise AssertionError("no free port for the metrics endpoint")


def migrate(name, volume="pvc-none", source="test-node"):
    return {"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolumeMigrate", "metadata": {"name": name},
            "spec": {"sourceNode": source, "targetNodesSuggested": [], "volumeName": volume,
                     "migrateAllVols": False}}


# ------------------------------------------------------------------------ one daemon

def test_readyz_waits_for_the_api_and_metrics_describe_the_node(standin, make_daemon):
    d = start_with_metrics(make_daemon)  # no kubeconfig yet
    status, _, body = d.http.get("/healthz")
    assert (status, body) == (200, "ok\n")
    status, headers, body = d.http.get("/readyz")
    assert status == 503 and headers["content-type"] == "text/plain; charset=utf-8"
    assert body.startswith("Waiting for the Kubernetes API: ") and str(d.kubeconfig) in body, body
    assert body.endswith("\n") and body.count("\n") == 1

    m = d.http.metrics()
    assert value(m, "hwameid_up") == 1
    assert value(m, "hwameid_build_info", version=(ROOT / "VERSION").read_text().strip()) == 1
    assert value(m, "hwameid_cluster_connected") == 0 and value(m, "hwameid_leader") == 0
    assert "hwameid_replicas" not in m and "hwameid_migrations" not in m  # nothing known yet
    assert value(m, "hwameid_push_bytes_total") == 0 and value(m, "hwameid_pushes_running") == 0

    # The API server becomes reachable: ready, connected, and (alone) leading.
    d.kubeconfig.write_bytes(open(standin.kubeconfig, "rb").read())
    standin.api("POST", "/api/v1/nodes", node("test-node"), expect=201)
    wait(lambda: d.http.get("/readyz")[0] == 200, timeout=40, what="/readyz 200")
    assert d.http.get("/readyz")[2] == "ok\n"
    m = wait(lambda: (lambda m: m if value(m, "hwameid_leader") == 1 else None)(d.http.metrics()),
             what="hwameid_leader 1")
    assert value(m, "hwameid_cluster_connected") == 1

    # The pools as the storage reports them (hwameictl status --json).
    pools = d.status()["storage"]["pools"]
    assert {p["class"] for p in pools} == {"HDD", "SSD"}
    for p in pools:
        lab = {"pool": p["name"], "class": p["class"]}
        assert value(m, "hwameid_pool_capacity_bytes", **lab) == p["totalBytes"] == 1 << 30
        assert value(m, "hwameid_pool_free_bytes", **lab) == p["freeBytes"]
        assert value(m, "hwameid_pool_volumes", **lab) == p["volumes"] == 0
        assert value(m, "hwameid_pool_offline", **lab) == 0
    assert len(m["hwameid_pool_capacity_bytes"]["samples"]) == 2

    # A replica on this node: counted by state, and in its pool.
    standin.api("POST", LVR, {"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolumeReplica",
                              "metadata": {"name": "pvc-m-x1"},
                              "spec": {"volumeName": "pvc-m", "poolName": "LocalStorage_PoolHDD",
                                       "nodeName": "test-node", "requiredCapacityBytes": 64 * MiB}}, expect=201)
    hdd = {"pool": "LocalStorage_PoolHDD", "class": "HDD"}
    m = wait(lambda: (lambda m: m if value(m, "hwameid_replicas", state="Ready") == 1
                      and value(m, "hwameid_pool_volumes", **hdd) == 1 else None)(d.http.metrics()),
             what="the replica Ready in the metrics")
    states = {lab["state"]: v for lab, v in m["hwameid_replicas"]["samples"]}
    assert states == {"Pending": 0, "Creating": 0, "Ready": 1, "NotReady": 0, "ToBeDeleted": 0, "Deleted": 0,
                      "Other": 0}, states
    pool = next(p for p in d.status()["storage"]["pools"] if p["class"] == "HDD")
    assert value(m, "hwameid_pool_free_bytes", **hdd) == pool["freeBytes"] == (1 << 30) - 64 * MiB

    # Migrations, on the leader: two that its controller ends (no such volume), the status of one
    # then set by hand (the controller leaves ended ones alone); the label values are a fixed set.
    def migrate_state(name):
        r = standin.request("GET", f"{LVM}/{name}")
        return (r.json.get("status") or {}).get("state") if r.status == 200 else None

    for name in ("m-unknown", "m-done"):
        standin.api("POST", LVM, migrate(name), expect=201)
        wait(lambda: migrate_state(name) == "Aborted", what=f"{name} Aborted")
    standin.api("PATCH", f"{LVM}/m-done/status", {"status": {"state": "Completed", "message": "by hand"}},
                ctype="application/merge-patch+json", expect=200)
    m = wait(lambda: (lambda m: m if value(m, "hwameid_migrations", state="Aborted") == 1
                      and value(m, "hwameid_migrations", state="Completed") == 1 else None)(d.http.metrics()),
             what="the migrations counted by state")
    states = {lab["state"]: v for lab, v in m["hwameid_migrations"]["samples"]}
    assert set(states) == {"Pending", "Submitted", "AddReplica", "SyncReplica", "PruneReplica", "Completed",
                           "ToBeAborted", "Aborted", "Other"}, states
    assert sum(states.values()) == 2
    assert m["hwameid_migrations"]["type"] == "gauge" and m["hwameid_push_bytes_total"]["type"] == "counter"
    assert d.stop() == 0


def test_http_errors_methods_and_head(make_daemon):
    d = start_with_metrics(make_daemon)
    for path in ("/", "/metrics/", "/metric", "/healthz/x", "/../metrics"):
        status, _, body = d.http.get(path)
        assert status == 404, (path, status)
        assert "/metrics" in body
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        status, headers, body = d.http.request(method, "/metrics", body="x" * 100)
        assert status == 405 and headers["allow"] == "GET, HEAD", (method, status, headers)
    status, _, body = d.http.get("/metrics?name[]=hwameid_up")  # a query does not change the path
    assert status == 200 and "hwameid_up 1\n" in body
    status, headers, body = d.http.request("HEAD", "/metrics")
    assert status == 200 and body == "" and int(headers["content-length"]) > 1000
    assert headers["content-type"] == CONTENT_TYPE
    status, headers, body = d.http.request("HEAD", "/healthz")
    assert status == 200 and body == "" and headers["content-length"] == "3"
    # Two requests on one connection (as Prometheus keeps it open).
    conn = http.client.HTTPConnection("127.0.0.1", d.http.port, timeout=10)
    for _ in range(2):
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"ok\n")
    conn.close()
    assert d.stop() == 0


def _fds(pid):
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            flags = next(line.split()[1] for line in open(f"/proc/{pid}/fdinfo/{fd}") if line.startswith("flags:"))
        except (FileNotFoundError, StopIteration):
            continue
        out[int(fd)] = (target, int(flags, 8))
    return out


def _tcp_inodes(pid, port):
    """Socket inodes of TCP sockets whose local port is port (the listener and its connections)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in list(f)[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] != "0":  # 0: TIME_WAIT
                    inodes.add(fields[9])
    return inodes


def test_idle_clients_delay_nobody_and_fds_stay_flat(make_daemon):
    d = start_with_metrics(make_daemon)
    pid = d.proc.pid
    d.http.get("/metrics")  # warm up

    def quiet():  # only the listener left of the endpoint's sockets
        return len(_tcp_inodes(pid, d.http.port)) == 1

    wait(quiet, what="the warm-up connection closed")
    before = _fds(pid)

    # Clients that connect and send nothing, or half a request, hold a slot each and delay nobody.
    idle = [socket.create_connection(("127.0.0.1", d.http.port)) for _ in range(3)]
    idle[0].sendall(b"GET /metr")
    t0 = time.monotonic()
    status, _, _ = d.http.get("/healthz")
    assert status == 200 and time.monotonic() - t0 < 2

    # Every fd behind the endpoint is close-on-exec: the listener, the connections, epoll's.
    inodes = _tcp_inodes(pid, d.http.port)
    fds = _fds(pid)
    ours = {fd: v for fd, v in fds.items()
            if v[0] == "anon_inode:[eventpoll]" or (v[0].startswith("socket:[") and v[0][8:-1] in inodes)}
    assert len([v for v in ours.values() if v[0].startswith("socket:")]) >= 4, (inodes, fds)
    assert all(flags & os.O_CLOEXEC for _, flags in ours.values()), ours

    paths = ["/metrics", "/healthz", "/readyz", "/nothing"]
    for i in range(200):
        status, _, _ = d.http.get(paths[i % 4])
        assert status == {0: 200, 1: 200, 2: 503, 3: 404}[i % 4]
    for s in idle:
        s.close()
    wait(quiet, timeout=10, what="every connection closed")
    wait(lambda: _fds(pid).keys() == before.keys(), timeout=5, what=f"the fds of before: {sorted(before)}")
    assert d.status()["metrics"]["requests"] >= 202
    assert d.stop() == 0


def test_port_0_turns_it_off_and_a_busy_port_is_reported(make_daemon):
    d = make_daemon(name="off")
    d.write_config("[Metrics]\nPort=0\n")
    d.start()
    st = d.status()["metrics"]
    assert st == {"state": "disabled", "address": "", "port": 0, "requests": 0, "problem": None}, st
    assert "No metrics endpoint ([Metrics] Port=0)." in d.log()
    assert d.stop() == 0

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        d = make_daemon(name="busy")
        d.write_config(f"[Metrics]\nPort={port}\n")
        d.start()  # the daemon runs without the endpoint and says why
        st = d.status()["metrics"]
        assert st["state"] == "disabled" and st["address"] == f"127.0.0.1:{port}", st
        assert st["problem"] == f"cannot listen on 127.0.0.1:{port}: Address already in use", st
        assert f"No metrics endpoint: cannot listen on 127.0.0.1:{port}: Address already in use." in d.log()
        assert d.stop() == 0


def test_ipv6_address(make_daemon):
    if not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("no IPv6")
    port = free_port()
    d = make_daemon()
    d.write_config(f"[Metrics]\nListenAddress=::1\nPort={port}\n")
    d.start()
    st = d.status()["metrics"]
    if st["state"] != "listening":
        pytest.skip(f"port taken: {st['problem']}")
    assert st["address"] == f"[::1]:{port}"
    assert Endpoint(port, "::1").get("/healthz")[0] == 200
    assert d.stop() == 0


def test_configuration_defaults_and_errors(tmp_path):
    conf = tmp_path / "hwameid.conf"
    conf.write_text("[Node]\nName=n\n")
    dumped = run_hwameid("--config", str(conf), "--dump-config").stdout
    assert "[Metrics]\nListenAddress=127.0.0.1\nPort=9743\n" in dumped, dumped
    for text, message in [
        ("[Metrics]\nPort=70000\n", "[Metrics] Port= must be 0…65535."),
        ("[Metrics]\nListenAddress=localhost\n", ":2: ListenAddress= expects an IPv4 or IPv6 address, got 'localhost'."),
        ("[Metrics]\nListenAddress=\n", "[Metrics] ListenAddress= must not be empty"),
        ("[Metrics]\nPort=ninety\n", ":2: "),
    ]:
        conf.write_text(text)
        r = run_hwameid("--config", str(conf), "--check-config")
        assert r.returncode == 1 and message in r.stderr, (text, r.stderr)
    conf.write_text("[Metrics]\nListenAddress=::\nPort=0\n")
    assert run_hwameid("--config", str(conf), "--check-config").returncode == 0


# ------------------------------------------------------------------------ a real migration

def _netns_get(node, path, port=9743):
    """GET http://127.0.0.1:port/path inside the node's network namespace."""
    s = socket_in_netns(f"/run/netns/{node.netns}", ("127.0.0.1", port), timeout=10)
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def _node_metrics(node):
    status, body = _netns_get(node, "/metrics")
    assert status == 200, body
    return parse_metrics(body)


def test_a_migration_in_the_metrics_of_the_source_and_the_leader(cluster):
    from test_migrate import apply_migrate, make_volume, wait_state

    c = cluster
    source, target = c.node(1), c.node(2)
    before = value(_node_metrics(source), "hwameid_push_bytes_total")
    replica, _ = make_volume(c, "pvc-metrics", source.name, 48 * MiB)  # 48 MiB of random data
    apply_migrate(c, "migrate-pvc-metrics", "pvc-metrics", source.name, [target.name])
    wait_state(c, "migrate-pvc-metrics", "Completed")

    m = c.wait(lambda: (lambda m: m if value(m, "hwameid_pushes_running") == 0 else None)(_node_metrics(source)),
               what="the push over")
    assert value(m, "hwameid_push_bytes_total") - before >= 48 * MiB, value(m, "hwameid_push_bytes_total")
    assert value(m, "hwameid_pushes_completed_total") >= 1
    assert value(m, "hwameid_push_bytes_per_second") == 0

    leader = c.leader()
    for n in c.nodes:
        m = _node_metrics(n)
        assert value(m, "hwameid_cluster_connected") == 1
        assert value(m, "hwameid_leader") == (1 if n is leader else 0)
        if n is leader:
            m = c.wait(lambda: (lambda m: m if value(m, "hwameid_migrations", state="Completed") == 1 else None)(
                _node_metrics(n)), what="the completed migration on the leader")
            assert sum(v for _, v in m["hwameid_migrations"]["samples"]) == 1
        else:
            assert "hwameid_migrations" not in m  # followers do not watch migrations
    # The replica moved: Ready on the target, none left on the source.
    assert value(_node_metrics(target), "hwameid_replicas", state="Ready") == 1
    assert value(_node_metrics(source), "hwameid_replicas", state="Ready") == 0
    status, body = _netns_get(source, "/readyz")
    assert (status, body) == (200, "ok\n")
