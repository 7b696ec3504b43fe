"""Fault switches, history expiry, bookmarks, stream framing and restarts.
Each test runs its own server, since these change server-wide state."""

import signal
import socket
import ssl
import time

from objects import HW, lv

MERGE = "application/merge-patch+json"


def rv_of(obj):
    return obj["metadata"]["resourceVersion"]


def test_bookmarks_only_when_requested_and_carry_the_current_rv(fresh_standin):
    s = fresh_standin
    s.admin("POST", "/settings", {"bookmarkIntervalSeconds": 0.3})
    obj = s.api("POST", HW + "/localvolumes", lv("pvc-bm"), expect=201)
    w = s.watch(HW + "/localvolumes", resourceVersion=rv_of(obj), allowWatchBookmarks="true",
                fieldSelector="metadata.name=other")
    s.api("PATCH", HW + "/localvolumes/pvc-bm", {"metadata": {"labels": {"a": "1"}}},
          ctype=MERGE, expect=200)
    ev = w.next(3)
    assert ev["type"] == "BOOKMARK"
    assert ev["object"] == {"kind": "LocalVolume", "apiVersion": "hwameistor.io/v1alpha1",
                            "metadata": {"resourceVersion": str(int(rv_of(obj)) + 1)}}
    w.close()
    w = s.watch("/api/v1/nodes", resourceVersion=rv_of(obj), timeoutSeconds=1)
    assert w.next(3) is None            # no bookmark without allowWatchBookmarks
    w.close()
    w = s.watch("/api/v1/nodes", resourceVersion=rv_of(obj), allowWatchBookmarks="True",
                timeoutSeconds=2)
    ev = w.next(3)
    assert ev["type"] == "BOOKMARK" and ev["object"]["kind"] == "Node"
    assert ev["object"]["metadata"]["creationTimestamp"] is None
    w.close()


def test_watch_from_compacted_rv_gets_410_error_event_then_close(fresh_standin):
    s = fresh_standin
    s.admin("POST", "/settings", {"historySize": 3})
    first = s.api("POST", HW + "/localvolumes", lv("pvc-old"), expect=201)
    for i in range(4):
        s.api("PATCH", HW + "/localvolumes/pvc-old", {"metadata": {"labels": {"i": str(i)}}},
              ctype=MERGE, expect=200)
    w = s.watch(HW + "/localvolumes", resourceVersion=rv_of(first))
    assert w.status == 200
    ev = w.next()
    assert ev["type"] == "ERROR"
    assert ev["object"]["code"] == 410 and ev["object"]["reason"] == "Expired"
    assert ev["object"]["message"].startswith("too old resource version: %s (" % rv_of(first))
    assert w.next() is None
    w.close()
    # The newest RVs still resume; compaction through the admin API expires them too.
    cur = s.api("GET", HW + "/localvolumes")["metadata"]["resourceVersion"]
    w = s.watch(HW + "/localvolumes", resourceVersion=cur, timeoutSeconds=1)
    assert w.next(3) is None
    w.close()
    s.api("PATCH", HW + "/localvolumes/pvc-old", {"metadata": {"labels": {"i": "x"}}},
          ctype=MERGE, expect=200)
    s.admin("POST", "/compact")
    w = s.watch(HW + "/localvolumes", resourceVersion=cur)
    assert w.next()["type"] == "ERROR"
    w.close()


def test_fault_expire_gives_410_event_on_watch_and_410_on_list(fresh_standin):
    s = fresh_standin
    obj = s.api("POST", HW + "/localvolumes", lv("pvc-exp"), expect=201)
    s.admin("POST", "/faults", {"type": "expire", "count": 2})
    w = s.watch(HW + "/localvolumes", resourceVersion=rv_of(obj))
    assert w.next()["object"]["code"] == 410
    w.close()
    r = s.request("GET", HW + "/localvolumes?resourceVersion=" + rv_of(obj))
    assert r.status == 410 and r.json["reason"] == "Expired"
    assert s.request("GET", HW + "/localvolumes?resourceVersion=" + rv_of(obj)).status == 200


def test_fault_error_answers_code_with_retry_after_n_times_on_matching_paths(fresh_standin):
    s = fresh_standin
    s.admin("POST", "/faults", {"type": "error", "code": 429, "count": 2,
                                "retryAfterSeconds": 3, "path": "/leases", "method": "GET"})
    s.admin("POST", "/faults", {"type": "error", "code": 503, "count": 1, "path": "/nodes"})
    path = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
    assert s.request("GET", "/api/v1/namespaces").status == 200
    for _ in range(2):
        r = s.request("GET", path)
        assert r.status == 429 and r.headers["Retry-After"] == "3"
        assert r.json["reason"] == "TooManyRequests"
        assert r.json["details"]["retryAfterSeconds"] == 3
    assert s.request("GET", path).status == 200
    r = s.request("GET", "/api/v1/nodes")
    assert r.status == 503 and r.json["kind"] == "Status"
    assert s.request("GET", "/api/v1/nodes").status == 200
    assert s.admin("GET", "/faults")["faults"] == []


def test_fault_latency_delays_matching_requests(fresh_standin):
    s = fresh_standin
    s.admin("POST", "/faults", {"type": "latency", "seconds": 0.5, "count": 1,
                                "path": "/api/v1/nodes"})
    t = time.monotonic()
    assert s.request("GET", "/api/v1/nodes").status == 200
    assert time.monotonic() - t >= 0.5
    t = time.monotonic()
    s.request("GET", "/api/v1/nodes")
    assert time.monotonic() - t < 0.5


def _read_to_eof(sock, timeout=5):
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            got = sock.recv(65536)
        except (ConnectionError, ssl.SSLError):
            break
        if not got:
            break
        data += got
    return data


def test_fault_drop_watches_reset_cuts_and_close_ends_cleanly(fresh_standin):
    s = fresh_standin
    for mode, clean in (("reset", False), ("close", True)):
        sock = _raw_watch(s, "/api/v1/nodes?watch=1&resourceVersion=1")
        s.wait_watches(1)
        s.admin("POST", "/faults", {"type": "drop-watches", "mode": mode})
        data = _read_to_eof(sock)
        sock.close()
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert data.endswith(b"\r\n0\r\n\r\n") == clean, (mode, data[-40:])
        deadline = time.monotonic() + 3
        while s.admin("GET", "/watches")["items"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s.admin("GET", "/watches")["items"] == []


def test_request_log_records_method_path_query_user_and_resets(fresh_standin):
    s = fresh_standin
    s.admin("DELETE", "/requests")
    s.request("GET", "/api/v1/nodes?labelSelector=a%3Db")
    s.request("GET", "/api/v1/nodes/none")
    log = s.requests_log()
    assert [(r["method"], r["path"], r["query"], r["user"], r["code"]) for r in log] == [
        ("GET", "/api/v1/nodes", "labelSelector=a%3Db", "kubernetes-admin", 200),
        ("GET", "/api/v1/nodes/none", "", "kubernetes-admin", 404)]
    s.admin("DELETE", "/requests")
    assert s.requests_log() == []


def _raw_watch(s, path):
    """Open a watch over a bare TLS socket; return (socket, bytes reader)."""
    ctx = s.ssl_context()
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", s.port)),
                           server_hostname="127.0.0.1")
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    return sock


def _read_chunks(sock, until, timeout=5):
    """Raw chunk payloads until `until` bytes of payload arrived."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    body = data.split(b"\r\n\r\n", 1)[1]
    chunks, payload = [], b""
    while len(payload) < until:
        while b"\r\n" not in body:
            body += sock.recv(65536)
        size_line, body = body.split(b"\r\n", 1)
        size = int(size_line, 16)
        while len(body) < size + 2:
            body += sock.recv(65536)
        chunks.append(body[:size])
        payload += body[:size]
        body = body[size + 2:]
    return chunks, payload


def test_watch_events_can_be_split_across_chunks_for_framer_tests(fresh_standin):
    s = fresh_standin
    s.admin("POST", "/settings", {"watchChunkBytes": 7})
    sock = _raw_watch(s, HW + "/localvolumes?watch=1&resourceVersion=1&fieldSelector="
                         "metadata.name%3Dpvc-split")
    s.wait_watches(1)
    obj = s.api("POST", HW + "/localvolumes", lv("pvc-split"), expect=201)
    import json
    want = len(json.dumps({"type": "ADDED", "object": obj}, separators=(",", ":"))) + 1
    chunks, payload = _read_chunks(sock, want)
    assert len(chunks) > 10 and max(len(c) for c in chunks) <= 7
    assert payload.endswith(b"\n") and json.loads(payload)["type"] == "ADDED"
    sock.close()


def test_several_queued_events_are_packed_into_one_chunk(fresh_standin):
    s = fresh_standin
    obj = s.api("POST", HW + "/localvolumes", lv("pvc-pack"), expect=201)
    for i in range(3):
        s.api("PATCH", HW + "/localvolumes/pvc-pack", {"metadata": {"labels": {"i": str(i)}}},
              ctype=MERGE, expect=200)
    sock = _raw_watch(s, HW + "/localvolumes?watch=1&resourceVersion=" + rv_of(obj))
    chunks, payload = _read_chunks(sock, 10)
    assert chunks[0].count(b"\n") == 3        # three events, one chunk, newline-framed
    sock.close()


def test_restart_keeps_state_and_expires_watches_from_before(standin_factory, tmp_path):
    state = str(tmp_path / "state")
    s = standin_factory(state_dir=state, workdir=str(tmp_path))
    obj = s.api("POST", HW + "/localvolumes", lv("pvc-persist"), expect=201)
    obj = s.api("PATCH", HW + "/localvolumes/pvc-persist/status", {"status": {"state": "Ready"}},
                ctype=MERGE, expect=200)
    w = s.watch(HW + "/localvolumes", resourceVersion=rv_of(obj))
    s.wait_watches(1)
    port = s.port
    assert s.stop() == 0                     # SIGTERM: clean exit
    assert w.next(3) is None                 # the open watch ended with the final chunk
    w.close()
    s2 = standin_factory(state_dir=state, port=port, workdir=str(tmp_path))
    again = s2.api("GET", HW + "/localvolumes/pvc-persist", expect=200)
    assert again == obj
    nxt = s2.api("PATCH", HW + "/localvolumes/pvc-persist", {"metadata": {"labels": {"a": "b"}}},
                 ctype=MERGE, expect=200)
    assert int(rv_of(nxt)) == int(rv_of(obj)) + 1
    w = s2.watch(HW + "/localvolumes", resourceVersion=str(int(rv_of(obj)) - 1))
    assert w.next()["object"]["code"] == 410
    w.close()
    s2.kubectl("get", "lv", "pvc-persist")   # the same kubeconfig and CA still work


def test_killed_server_restarts_from_its_journal(standin_factory, tmp_path):
    state = str(tmp_path / "state")
    s = standin_factory(state_dir=state, workdir=str(tmp_path))
    s.api("POST", HW + "/localvolumes", lv("pvc-journal"), expect=201)
    s.stop(sig=signal.SIGKILL)
    s2 = standin_factory(state_dir=state, workdir=str(tmp_path))
    assert s2.api("GET", HW + "/localvolumes/pvc-journal", expect=200)["metadata"]["name"]


def test_sigterm_with_an_idle_keepalive_connection_exits_promptly(fresh_standin):
    s = fresh_standin
    conn = s.connect()
    conn.request("GET", "/api/v1/nodes")
    conn.getresponse().read()
    t = time.monotonic()
    assert s.stop() == 0
    assert time.monotonic() - t < 5
    conn.close()


def test_tls_client_certificate_from_another_ca_is_not_trusted(fresh_standin, tmp_path):
    import subprocess
    key, crt = str(tmp_path / "k.pem"), str(tmp_path / "c.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "1", "-subj", "/O=system:masters/CN=intruder"], check=True,
                   capture_output=True)
    ctx = ssl.create_default_context(cafile=fresh_standin.ca)
    ctx.load_cert_chain(crt, key)
    import http.client
    conn = http.client.HTTPSConnection("127.0.0.1", fresh_standin.port, context=ctx, timeout=5)
    try:
        conn.request("GET", "/api/v1/nodes")
        status = conn.getresponse().status
    except (ssl.SSLError, ConnectionError):
        status = "refused"
    assert status in (401, "refused")
