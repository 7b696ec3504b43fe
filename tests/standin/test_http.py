"""API semantics checked over raw HTTPS (KUBE-API-NOTES.md §1–§3, §7)."""

import time
import urllib.parse

import pytest

from kubestandin import selectors
from kubestandin.errors import ApiError
from objects import HW, RUNNING_READY, lease, lv, lvr, node, pod

LEASES = "/apis/coordination.k8s.io/v1/namespaces/hwameid-system/leases"
MERGE = "application/merge-patch+json"


def rv_of(obj):
    return obj["metadata"]["resourceVersion"]


# ------------------------------------------------------------------ discovery

def test_discovery_lists_policy_group_eviction_and_status_subresources(standin):
    apis = standin.api("GET", "/apis", expect=200)
    names = {g["name"]: g for g in apis["groups"]}
    assert names["policy"]["preferredVersion"]["groupVersion"] == "policy/v1"
    assert "hwameistor.io" in names and "coordination.k8s.io" in names
    core = standin.api("GET", "/api/v1", expect=200)
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["pods/eviction"] == {"name": "pods/eviction", "singularName": "",
                                        "namespaced": True, "group": "policy",
                                        "version": "v1", "kind": "Eviction",
                                        "verbs": ["create"]}
    assert "nodes/status" in by_name and "pods/status" in by_name
    hw = standin.api("GET", "/apis/hwameistor.io/v1alpha1", expect=200)
    lvr_res = next(r for r in hw["resources"] if r["name"] == "localvolumereplicas")
    assert lvr_res["shortNames"] == ["lvr"] and lvr_res["namespaced"] is False
    assert any(r["name"] == "localvolumereplicas/status" for r in hw["resources"])
    assert standin.api("GET", "/api")["versions"] == ["v1"]


def test_openapi_v2_is_an_empty_protobuf_document_and_version_is_1_32(standin):
    r = standin.request("GET", "/openapi/v2",
                        headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0"
                                           "+protobuf"})
    assert r.status == 200 and r.raw == b""
    assert r.headers["Content-Type"] == \
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    v = standin.api("GET", "/version", expect=200)
    assert (v["major"], v["minor"]) == ("1", "32")
    assert standin.request("GET", "/healthz", cert=False).raw == b"ok"


def test_unknown_path_is_404_with_the_generic_status(standin):
    r = standin.request("GET", "/apis/nonexistent.io/v1/things")
    assert r.status == 404
    assert r.json == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                      "status": "Failure", "message":
                      "the server could not find the requested resource",
                      "reason": "NotFound", "details": {}, "code": 404}


def test_request_without_credentials_is_401(standin):
    r = standin.request("GET", "/api/v1/nodes", cert=False)
    assert r.status == 401 and r.json["reason"] == "Unauthorized"


def test_bearer_token_added_through_admin_api_authenticates(standin):
    tok = standin.admin("POST", "/tokens", {"user": "token-user", "groups": ["g1"]})["token"]
    r = standin.request("GET", "/api/v1/namespaces", cert=False,
                        headers={"Authorization": "Bearer " + tok})
    assert r.status == 200
    r = standin.request("GET", "/api/v1/namespaces", cert=False,
                        headers={"Authorization": "Bearer wrong"})
    assert r.status == 401


# ------------------------------------------------------------- create/update

def test_duplicate_create_is_409_already_exists_and_stale_put_is_409_conflict(standin):
    a = standin.api("POST", LEASES, lease("dup-lease"), expect=201)
    r = standin.request("POST", LEASES, lease("dup-lease"))
    assert r.status == 409
    assert r.json == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                      "status": "Failure",
                      "message": 'leases.coordination.k8s.io "dup-lease" already exists',
                      "reason": "AlreadyExists",
                      "details": {"name": "dup-lease", "group": "coordination.k8s.io",
                                  "kind": "leases"}, "code": 409}
    a["spec"]["holderIdentity"] = "node-2_x"
    b = standin.api("PUT", LEASES + "/dup-lease", a, expect=200)
    assert int(rv_of(b)) > int(rv_of(a))
    a["spec"]["holderIdentity"] = "node-3_x"
    r = standin.request("PUT", LEASES + "/dup-lease", a)
    assert r.status == 409 and r.json["reason"] == "Conflict"
    assert r.json["message"] == (
        'Operation cannot be fulfilled on leases.coordination.k8s.io "dup-lease": the object '
        'has been modified; please apply your changes to the latest version and try again')
    assert r.json["details"] == {"name": "dup-lease", "group": "coordination.k8s.io",
                                 "kind": "leases"}


def test_lease_put_without_rv_is_422_and_put_of_missing_lease_creates_it(standin):
    r = standin.request("PUT", LEASES + "/put-created", lease("put-created"))
    assert r.status == 201 and r.json["metadata"]["uid"]
    body = lease("put-created")
    r = standin.request("PUT", LEASES + "/put-created", body)
    assert r.status == 422 and r.json["reason"] == "Invalid"
    assert r.json["message"] == ('Lease.coordination.k8s.io "put-created" is invalid: '
                                 'metadata.resourceVersion: Invalid value: 0x0: must be '
                                 'specified for an update')
    assert r.json["details"]["causes"] == [{"reason": "FieldValueInvalid", "message":
                                            "Invalid value: 0x0: must be specified for an "
                                            "update", "field": "metadata.resourceVersion"}]


def test_lease_microtime_must_have_exactly_six_fraction_digits(standin):
    for bad in ("2026-11-27T05:54:06.592Z", "2026-11-27T05:54:06Z",
                "2026-11-27T05:54:06.592546400Z"):
        body = lease("micro-bad")
        body["spec"]["renewTime"] = bad
        r = standin.request("POST", LEASES, body)
        assert r.status == 400 and r.json["reason"] == "BadRequest", bad
        assert 'as "2006-01-02T15:04:05.000000Z07:00"' in r.json["message"]
    body = lease("micro-ok")
    body["spec"]["renewTime"] = "2026-11-27T05:54:06.592546+00:00"
    got = standin.api("POST", LEASES, body, expect=201)
    assert got["spec"]["renewTime"] == "2026-11-27T05:54:06.592546Z"
    body = lease("lease-neg")
    body["spec"]["leaseDurationSeconds"] = 0
    assert standin.request("POST", LEASES, body).status == 422


def test_custom_resource_put_without_rv_is_422_and_missing_is_404(standin):
    obj = standin.api("POST", HW + "/localvolumes", lv("pvc-put-rv"), expect=201)
    del obj["metadata"]["resourceVersion"]
    r = standin.request("PUT", HW + "/localvolumes/pvc-put-rv", obj)
    assert r.status == 422 and r.json["details"]["kind"] == "LocalVolume"
    r = standin.request("PUT", HW + "/localvolumes/pvc-missing", lv("pvc-missing"))
    assert r.status == 404
    assert r.json["message"] == 'localvolumes.hwameistor.io "pvc-missing" not found'


def test_noop_put_keeps_rv_and_emits_no_watch_event(standin):
    obj = standin.api("POST", HW + "/localvolumes", lv("pvc-noop"), expect=201)
    w = standin.watch(HW + "/localvolumes", fieldSelector="metadata.name=pvc-noop",
                      resourceVersion=rv_of(obj))
    same = standin.api("PUT", HW + "/localvolumes/pvc-noop", obj, expect=200)
    assert rv_of(same) == rv_of(obj)
    standin.api("PATCH", HW + "/localvolumes/pvc-noop", {"metadata": {"labels": {"x": "1"}}},
                ctype=MERGE, expect=200)
    ev = w.next()
    assert ev["type"] == "MODIFIED" and ev["object"]["metadata"]["labels"] == {"x": "1"}
    w.close()


def test_create_in_missing_namespace_is_404_and_bad_name_is_422(standin):
    r = standin.request("POST", "/api/v1/namespaces/nope/pods", pod("p", "nope"))
    assert r.status == 404 and r.json["message"] == 'namespaces "nope" not found'
    r = standin.request("POST", "/api/v1/nodes", node("Bad_Name"))
    assert r.status == 422 and r.json["reason"] == "Invalid"


def test_generate_name_gets_a_five_character_suffix(standin):
    body = lv("x")
    body["metadata"] = {"generateName": "pvc-gen-"}
    obj = standin.api("POST", HW + "/localvolumes", body, expect=201)
    assert obj["metadata"]["name"].startswith("pvc-gen-")
    assert len(obj["metadata"]["name"]) == len("pvc-gen-") + 5


# ----------------------------------------------------- status and generation

def test_status_subresource_rules_and_generation(standin):
    body = lv("pvc-status")
    body["status"] = {"state": "Ready"}
    obj = standin.api("POST", HW + "/localvolumes", body, expect=201)
    assert "status" not in obj and obj["metadata"]["generation"] == 1
    obj = standin.api("PATCH", HW + "/localvolumes/pvc-status/status",
                      {"status": {"state": "Creating"}}, ctype=MERGE, expect=200)
    assert obj["status"]["state"] == "Creating" and obj["metadata"]["generation"] == 1
    # The main resource ignores status changes and bumps generation for spec changes.
    obj["status"]["state"] = "Ready"
    obj["spec"]["replicaNumber"] = 2
    obj = standin.api("PUT", HW + "/localvolumes/pvc-status", obj, expect=200)
    assert obj["status"]["state"] == "Creating" and obj["metadata"]["generation"] == 2
    # /status takes only status: spec and labels are left alone.
    obj["spec"]["replicaNumber"] = 1
    obj["metadata"]["labels"] = {"ignored": "yes"}
    obj["status"]["state"] = "Ready"
    obj = standin.api("PUT", HW + "/localvolumes/pvc-status/status", obj, expect=200)
    assert obj["spec"]["replicaNumber"] == 2 and "labels" not in obj["metadata"]
    assert obj["status"]["state"] == "Ready" and obj["metadata"]["generation"] == 2
    # Labels alone do not bump generation.
    obj = standin.api("PATCH", HW + "/localvolumes/pvc-status",
                      {"metadata": {"labels": {"a": "b"}}}, ctype=MERGE, expect=200)
    assert obj["metadata"]["generation"] == 2


def test_pod_status_is_reset_on_create_and_set_through_status(standin):
    p = pod("status-pod", node_name="n1")
    p["status"] = {"phase": "Failed", "reason": "Evicted"}
    obj = standin.api("POST", "/api/v1/namespaces/default/pods", p, expect=201)
    assert obj["status"]["phase"] == "Pending"
    obj = standin.api("PATCH", "/api/v1/namespaces/default/pods/status-pod/status",
                      {"status": {"phase": "Failed", "reason": "Evicted",
                                  "message": "The node was low on resource: memory. "}},
                      ctype=MERGE, expect=200)
    assert obj["status"]["reason"] == "Evicted"
    table = standin.api("GET", "/api/v1/namespaces/default/pods/status-pod", headers={
        "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
    assert table["rows"][0]["cells"][2] == "Evicted"


def test_custom_resource_schema_rejects_bad_values_with_422(standin):
    body = lv("pvc-schema")
    body["spec"]["requiredCapacityBytes"] = 1024
    body["spec"]["replicaNumber"] = "two"
    r = standin.request("POST", HW + "/localvolumes", body)
    assert r.status == 422
    fields = {c["field"] for c in r.json["details"]["causes"]}
    assert fields == {"spec.requiredCapacityBytes", "spec.replicaNumber"}


# ------------------------------------------------------------------- patches

def test_merge_json_and_strategic_patches(standin):
    standin.api("POST", "/api/v1/nodes", node("patch-node"), expect=201)
    obj = standin.api("PATCH", "/api/v1/nodes/patch-node",
                      {"metadata": {"finalizers": ["a"]}, "spec": {"unschedulable": True}},
                      ctype="application/strategic-merge-patch+json", expect=200)
    obj = standin.api("PATCH", "/api/v1/nodes/patch-node",
                      {"metadata": {"finalizers": ["b"]}, "spec": {"unschedulable": None}},
                      ctype="application/strategic-merge-patch+json", expect=200)
    assert obj["metadata"]["finalizers"] == ["a", "b"]      # merged as a set
    assert "unschedulable" not in obj["spec"]                # null deletes
    obj = standin.api("PATCH", "/api/v1/nodes/patch-node/status", {"status": {"conditions": [
        {"type": "DiskPressure", "status": "True"}]}},
        ctype="application/strategic-merge-patch+json", expect=200)
    assert [c["type"] for c in obj["status"]["conditions"]] == ["Ready", "DiskPressure"]
    obj = standin.api("PATCH", "/api/v1/nodes/patch-node", {"metadata": {"finalizers": ["c"]}},
                      ctype=MERGE, expect=200)
    assert obj["metadata"]["finalizers"] == ["c"]            # merge patch replaces lists
    r = standin.request("PATCH", "/api/v1/nodes/patch-node", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "add", "path": "/metadata/labels/x", "value": "y"}],
        ctype="application/json-patch+json")
    assert r.status == 422 and r.json["reason"] == "Invalid"
    obj = standin.api("PATCH", "/api/v1/nodes/patch-node", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv_of(obj)},
        {"op": "add", "path": "/metadata/labels/x", "value": "y"},
        {"op": "remove", "path": "/metadata/finalizers"}],
        ctype="application/json-patch+json", expect=200)
    assert obj["metadata"]["labels"]["x"] == "y" and "finalizers" not in obj["metadata"]
    r = standin.request("PATCH", "/api/v1/nodes/patch-node",
                        {"metadata": {"resourceVersion": "1", "labels": {"z": "1"}}},
                        ctype=MERGE)
    assert r.status == 409 and r.json["reason"] == "Conflict"
    r = standin.request("PATCH", "/api/v1/nodes/patch-node", {}, ctype="text/plain")
    assert r.status == 415 and r.json["reason"] == "UnsupportedMediaType"


# ---------------------------------------------------------------- finalizers

def test_finalizers_delay_deletion_forbid_new_ones_and_last_removal_deletes(standin):
    body = lv("pvc-fin")
    body["metadata"]["finalizers"] = ["hwameistor.io/a", "hwameistor.io/b"]
    obj = standin.api("POST", HW + "/localvolumes", body, expect=201)
    w = standin.watch(HW + "/localvolumes", fieldSelector="metadata.name=pvc-fin",
                      resourceVersion=rv_of(obj))
    r = standin.request("DELETE", HW + "/localvolumes/pvc-fin")
    assert r.status == 200 and r.json["kind"] == "LocalVolume"
    md = r.json["metadata"]
    assert md["deletionTimestamp"] and md["deletionGracePeriodSeconds"] == 0
    assert md["generation"] == 2
    again = standin.request("DELETE", HW + "/localvolumes/pvc-fin")
    assert again.status == 200 and rv_of(again.json) == md["resourceVersion"]
    r = standin.request("PATCH", HW + "/localvolumes/pvc-fin",
                        {"metadata": {"finalizers": ["hwameistor.io/a", "hwameistor.io/b",
                                                     "new"]}}, ctype=MERGE)
    assert r.status == 422
    assert "no new finalizers can be added if the object is being deleted" in r.json["message"]
    standin.api("PATCH", HW + "/localvolumes/pvc-fin",
                {"metadata": {"finalizers": ["hwameistor.io/b"]}}, ctype=MERGE, expect=200)
    r = standin.request("PATCH", HW + "/localvolumes/pvc-fin",
                        {"metadata": {"finalizers": None}}, ctype=MERGE)
    assert r.status == 200
    assert standin.request("GET", HW + "/localvolumes/pvc-fin").status == 404
    types = [e["type"] for e in w.events(3)]
    assert types == ["MODIFIED", "MODIFIED", "DELETED"]
    w.close()


def test_delete_without_finalizers_answers_status_and_preconditions_conflict(standin):
    obj = standin.api("POST", HW + "/localvolumes", lv("pvc-del"), expect=201)
    r = standin.request("DELETE", HW + "/localvolumes/pvc-del",
                        {"preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}})
    assert r.status == 409 and "Precondition failed: UID in precondition" in r.json["message"]
    r = standin.request("DELETE", HW + "/localvolumes/pvc-del",
                        {"preconditions": {"resourceVersion": "1"}})
    assert r.status == 409
    r = standin.request("DELETE", HW + "/localvolumes/pvc-del",
                        {"preconditions": {"uid": obj["metadata"]["uid"]}})
    assert r.status == 200
    assert r.json == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                      "status": "Success", "details": {
                          "name": "pvc-del", "group": "hwameistor.io", "kind": "localvolumes",
                          "uid": obj["metadata"]["uid"]}, "code": 200} or \
        r.json["status"] == "Success"
    assert standin.request("DELETE", HW + "/localvolumes/pvc-del").status == 404


def test_pod_delete_is_graceful_until_the_simulated_kubelet_confirms(standin):
    standin.api("POST", "/api/v1/namespaces/default/pods", pod("grace-pod", node_name="n1"),
                expect=201)
    r = standin.request("DELETE", "/api/v1/namespaces/default/pods/grace-pod")
    assert r.status == 200 and r.json["kind"] == "Pod"
    assert r.json["metadata"]["deletionGracePeriodSeconds"] == 30
    assert standin.request("GET", "/api/v1/namespaces/default/pods/grace-pod").status == 200
    deadline = time.monotonic() + 5
    while standin.request("GET", "/api/v1/namespaces/default/pods/grace-pod").status == 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # Unscheduled pods go at once.
    standin.api("POST", "/api/v1/namespaces/default/pods", pod("grace-pod-2"), expect=201)
    standin.request("DELETE", "/api/v1/namespaces/default/pods/grace-pod-2")
    assert standin.request("GET", "/api/v1/namespaces/default/pods/grace-pod-2").status == 404


def test_eviction_201_without_pdb_and_429_when_the_pdb_forbids(standin):
    ns = "/api/v1/namespaces/default/pods"
    for name in ("evict-a", "evict-b"):
        standin.api("POST", ns, pod(name, node_name="n1", labels={"app": "evict"}), expect=201)
        standin.api("PATCH", ns + "/%s/status" % name, RUNNING_READY, ctype=MERGE, expect=200)
    standin.api("POST", "/apis/policy/v1/namespaces/default/poddisruptionbudgets", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "evict", "namespace": "default"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "evict"}}}},
        expect=201)
    ev = {"apiVersion": "policy/v1", "kind": "Eviction",
          "metadata": {"name": "evict-a", "namespace": "default"}}
    r = standin.request("POST", ns + "/evict-a/eviction", ev)
    assert r.status == 201
    assert r.json == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                      "status": "Success", "code": 201}
    ev["metadata"]["name"] = "evict-b"
    ev["apiVersion"] = "policy/v1beta1"
    r = standin.request("POST", ns + "/evict-b/eviction", ev)
    assert r.status == 429 and r.json["reason"] == "TooManyRequests"
    assert r.json["message"] == ("Cannot evict pod as it would violate the pod's disruption "
                                 "budget.")
    assert r.json["details"]["causes"][0]["reason"] == "DisruptionBudget"
    r = standin.request("POST", ns + "/nope/eviction", dict(ev, metadata={"name": "nope"}))
    assert r.status == 404


# --------------------------------------------------------------------- lists

def test_list_limit_and_continue_page_through_everything(standin):
    for i in range(5):
        standin.api("POST", HW + "/localvolumegroups", {
            "apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolumeGroup",
            "metadata": {"name": "lvg-page-%d" % i, "labels": {"page": "yes"}},
            "spec": {"namespace": "default", "pods": ["p%d" % i]}}, expect=201)
    seen, cont, rvs = [], None, set()
    while True:
        q = {"limit": 2, "labelSelector": "page=yes"}
        if cont:
            q["continue"] = cont
        page = standin.api("GET", HW + "/localvolumegroups?" + urllib.parse.urlencode(q),
                           expect=200)
        assert page["kind"] == "LocalVolumeGroupList"
        assert all(i["kind"] == "LocalVolumeGroup" for i in page["items"])
        seen += [i["metadata"]["name"] for i in page["items"]]
        rvs.add(page["metadata"]["resourceVersion"])
        cont = page["metadata"].get("continue")
        if not cont:
            break
        assert page["metadata"]["remainingItemCount"] == 5 - len(seen)
    assert seen == ["lvg-page-%d" % i for i in range(5)] and len(rvs) == 1
    # Built-in list items carry no kind/apiVersion; RV=0 ignores limit.
    nodes = standin.api("GET", "/api/v1/nodes?limit=1&resourceVersion=0")
    assert nodes["kind"] == "NodeList" and "continue" not in nodes["metadata"]


def test_field_selectors_pods_by_node_and_unknown_field_is_400(standin):
    ns = "/api/v1/namespaces/default/pods"
    standin.api("POST", ns, pod("fs-a", node_name="fs-node-1"), expect=201)
    standin.api("POST", ns, pod("fs-b", node_name="fs-node-2"), expect=201)
    got = standin.api("GET", "/api/v1/pods?fieldSelector=" + urllib.parse.quote(
        "spec.nodeName=fs-node-1,status.phase!=Failed,status.phase!=Succeeded"))
    assert [i["metadata"]["name"] for i in got["items"]] == ["fs-a"]
    r = standin.request("GET", "/api/v1/pods?fieldSelector=spec.bogus%3Dx")
    assert r.status == 400 and r.json["reason"] == "BadRequest"
    r = standin.request("GET", HW + "/localvolumes?fieldSelector=spec.poolName%3Dx")
    assert r.status == 400
    standin.api("POST", HW + "/localvolumereplicas", lvr("pvc-fs-aaaaaa", "pvc-fs", "fs-node-1"),
                expect=201)
    got = standin.api("GET", HW + "/localvolumereplicas?fieldSelector=spec.nodeName%3Dfs-node-1")
    assert [i["metadata"]["name"] for i in got["items"]] == ["pvc-fs-aaaaaa"]


def test_label_selector_grammar():
    sel = selectors.parse_label_selector(
        "a=1,b!=2,c in (x, y),d notin (z),e,!f,node-role.kubernetes.io/worker")
    base = {"a": "1", "c": "x", "e": "", "node-role.kubernetes.io/worker": ""}
    assert sel.matches(base)
    assert sel.matches(dict(base, b="3", d="q"))
    assert not sel.matches(dict(base, b="2"))
    assert not sel.matches(dict(base, f="1"))
    assert not sel.matches(dict(base, c="w"))
    assert selectors.parse_label_selector("k==v").matches({"k": "v"})
    with pytest.raises(ApiError):
        selectors.parse_label_selector("a b")


def test_table_output_has_crd_printer_columns_and_partial_metadata_rows(standin):
    standin.api("POST", HW + "/localvolumereplicas", lvr("pvc-table-aaaaaa", "pvc-table",
                                                       "table-node"), expect=201)
    t = standin.api("GET", HW + "/localvolumereplicas?fieldSelector=metadata.name%3D"
                    "pvc-table-aaaaaa", headers={"Accept": "application/json;as=Table;v=v1;"
                                                 "g=meta.k8s.io,application/json"})
    assert t["kind"] == "Table"
    assert [c["name"] for c in t["columnDefinitions"]] == [
        "Name", "capacity", "node", "state", "synced", "device", "age"]
    row = t["rows"][0]
    assert row["cells"][:6] == ["pvc-table-aaaaaa", 1073741824, "table-node", None, None, None]
    assert row["object"]["kind"] == "PartialObjectMetadata"


# --------------------------------------------------------------------- watch

def test_watch_without_rv_starts_with_synthetic_added_events(standin):
    for i in range(2):
        standin.api("POST", HW + "/localvolumes", dict(lv("pvc-syn-%d" % i), metadata={
            "name": "pvc-syn-%d" % i, "labels": {"syn": "yes"}}), expect=201)
    for rv in (None, "0"):
        q = {"labelSelector": "syn=yes", "timeoutSeconds": 1}
        if rv:
            q["resourceVersion"] = rv
        w = standin.watch(HW + "/localvolumes", **q)
        evs = w.events(2)
        assert [e["type"] for e in evs] == ["ADDED", "ADDED"]
        assert evs[0]["object"]["kind"] == "LocalVolume"
        assert w.next(3) is None          # timeoutSeconds ends the stream cleanly
        w.close()


def test_watch_resumes_from_rv_with_only_later_events(standin):
    a = standin.api("POST", HW + "/localvolumes", lv("pvc-resume"), expect=201)
    b = standin.api("PATCH", HW + "/localvolumes/pvc-resume",
                    {"metadata": {"labels": {"step": "1"}}}, ctype=MERGE, expect=200)
    c = standin.api("PATCH", HW + "/localvolumes/pvc-resume",
                    {"metadata": {"labels": {"step": "2"}}}, ctype=MERGE, expect=200)
    w = standin.watch(HW + "/localvolumes", resourceVersion=rv_of(a),
                      fieldSelector="metadata.name=pvc-resume")
    evs = w.events(2)
    assert [rv_of(e["object"]) for e in evs] == [rv_of(b), rv_of(c)]
    assert all(e["type"] == "MODIFIED" for e in evs)
    w.close()


def test_watch_selector_transitions_are_added_and_deleted(standin):
    obj = standin.api("POST", "/api/v1/nodes", node("move-node"), expect=201)
    w = standin.watch("/api/v1/nodes", resourceVersion=rv_of(obj),
                      labelSelector="hwameistor.io/eviction=disable")
    fw = standin.watch("/api/v1/nodes", resourceVersion=rv_of(obj),
                       fieldSelector="spec.unschedulable=true")
    path = "/api/v1/nodes/move-node"
    standin.api("PATCH", path, {"metadata": {"labels": {"hwameistor.io/eviction": "disable"}}},
                ctype=MERGE, expect=200)
    standin.api("PATCH", path, {"metadata": {"annotations": {"a": "1"}}}, ctype=MERGE,
                expect=200)
    gone = standin.api("PATCH", path, {"metadata": {"labels": {"hwameistor.io/eviction": None}}},
                       ctype=MERGE, expect=200)
    evs = w.events(3)
    assert [e["type"] for e in evs] == ["ADDED", "MODIFIED", "DELETED"]
    # DELETED carries the previous object (still labelled) at the new RV.
    assert evs[2]["object"]["metadata"]["labels"]["hwameistor.io/eviction"] == "disable"
    assert rv_of(evs[2]["object"]) == rv_of(gone)
    standin.api("PATCH", path, {"spec": {"unschedulable": True}},
                ctype="application/strategic-merge-patch+json", expect=200)
    standin.api("PATCH", path, {"spec": {"unschedulable": None}},
                ctype="application/strategic-merge-patch+json", expect=200)
    assert [e["type"] for e in fw.events(2)] == ["ADDED", "DELETED"]
    w.close()
    fw.close()


@pytest.mark.parametrize("value,is_watch", [("true", True), ("True", True), ("1", True),
                                            ("", True), ("false", False), ("0", False)])
def test_query_booleans_follow_apimachinery(standin, value, is_watch):
    w = standin.watch("/api/v1/namespaces", watch=value, timeoutSeconds=1)
    first = w.next(3)
    if is_watch:
        assert first["type"] == "ADDED"
    else:
        assert first["kind"] == "NamespaceList"
    w.close()


def test_watch_rv_far_in_the_future_is_504_too_large(standin):
    r = standin.request("GET", "/api/v1/nodes?watch=1&resourceVersion=99999999")
    assert r.status == 504 and r.json["reason"] == "Timeout"
    assert r.json["message"].startswith("Timeout: Too large resource version: 99999999")
    assert r.json["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"


def test_watch_with_table_accept_sends_column_definitions_once(standin):
    obj = standin.api("POST", HW + "/localvolumes", lv("pvc-table-watch"), expect=201)
    w = standin.watch(HW + "/localvolumes", resourceVersion=rv_of(obj),
                      fieldSelector="metadata.name=pvc-table-watch",
                      headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    for i in range(2):
        standin.api("PATCH", HW + "/localvolumes/pvc-table-watch",
                    {"metadata": {"labels": {"i": str(i)}}}, ctype=MERGE, expect=200)
    a, b = w.events(2)
    assert a["object"]["kind"] == "Table" and "columnDefinitions" in a["object"]
    assert "columnDefinitions" not in b["object"] and len(b["object"]["rows"]) == 1
    w.close()
