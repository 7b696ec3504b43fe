"""Fidelity with the real kubectl: the user guide's commands, verbatim where it has them."""

import glob
import json
import os
import time

from standinlib import REPO
from kubestandin import yamlsubset
from objects import (GUIDE_MIGRATE_YAML, HW, LSN_STATUS, RUNNING_READY, lsn, lv, lvr, node,
                     pod)


def header_and_rows(out):
    lines = [ln.split() for ln in out.strip().splitlines()]
    return lines[0], lines[1:]


def test_crd_manifests_read_the_same_by_standin_and_kubectl(standin):
    for path in sorted(glob.glob(os.path.join(REPO, "conf", "crds", "*.yaml"))):
        mine = yamlsubset.load(open(path).read())
        theirs = json.loads(standin.kubectl("create", "--dry-run=client", "-o", "json",
                                            "-f", path).stdout)
        assert mine == theirs, path


def test_project_crds_are_installed_at_start_and_established(standin):
    out = standin.kubectl("get", "crd", "-o", "json").stdout
    crds = {c["metadata"]["name"]: c for c in json.loads(out)["items"]}
    for plural in ("localstoragenodes", "localvolumes", "localvolumereplicas",
                   "localvolumemigrates", "localvolumegroups"):
        crd = crds[plural + ".hwameistor.io"]
        conds = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conds == {"NamesAccepted": "True", "Established": "True"}
        assert crd["spec"]["scope"] == "Cluster"
    res = standin.kubectl("api-resources", "--api-group=hwameistor.io", "-o", "name").stdout
    assert set(res.split()) == {"localstoragenodes.hwameistor.io", "localvolumes.hwameistor.io",
                                "localvolumereplicas.hwameistor.io",
                                "localvolumemigrates.hwameistor.io",
                                "localvolumegroups.hwameistor.io"}


def test_get_localvolumereplica_prints_the_guides_columns(standin):
    name = "pvc-6ca4c0d4-da10-4e2e-83b2-19cbf5c5e3e4-scrxjb"
    standin.api("POST", HW + "/localvolumereplicas",
                lvr(name, "pvc-6ca4c0d4-da10-4e2e-83b2-19cbf5c5e3e4", "k8s-node-2"), expect=201)
    standin.api("PATCH", HW + "/localvolumereplicas/%s/status" % name, {"status": {
        "state": "Ready", "synced": True,
        "devPath": "/dev/LocalStorage_PoolHDD/pvc-6ca4c0d4-da10-4e2e-83b2-19cbf5c5e3e4"}},
        ctype="application/merge-patch+json", expect=200)
    head, rows = header_and_rows(standin.kubectl("get", "localvolumereplica").stdout)
    assert head == ["NAME", "CAPACITY", "NODE", "STATE", "SYNCED", "DEVICE", "AGE"]
    row = next(r for r in rows if r[0] == name)
    assert row[1:6] == ["1073741824", "k8s-node-2", "Ready", "true",
                        "/dev/LocalStorage_PoolHDD/pvc-6ca4c0d4-da10-4e2e-83b2-19cbf5c5e3e4"]
    assert row[6].endswith("s")
    head, _ = header_and_rows(standin.kubectl("get", "lvr", name).stdout)
    assert head[0] == "NAME" and head[-1] == "AGE"


def test_get_localstoragenode_columns_wide_columns_and_yaml(standin):
    standin.api("POST", HW + "/localstoragenodes", lsn("k8s-node-1"), expect=201)
    standin.api("PATCH", HW + "/localstoragenodes/k8s-node-1/status", LSN_STATUS,
                ctype="application/merge-patch+json", expect=200)
    head, rows = header_and_rows(standin.kubectl("get", "lsn", "k8s-node-1").stdout)
    assert head == ["NAME", "IP", "STATUS", "AGE"]
    assert rows[0][:3] == ["k8s-node-1", "10.6.113.22", "Ready"]
    head, rows = header_and_rows(standin.kubectl("get", "lsn", "k8s-node-1", "-o",
                                                 "wide").stdout)
    assert head == ["NAME", "IP", "STATUS", "POOLHDD-FREE", "POOLSSD-FREE", "POOLNVME-FREE",
                    "AGE"]
    assert rows[0][3] == "16101933056"
    out = standin.kubectl("get", "localstoragenode", "k8s-node-1", "-o", "yaml").stdout
    assert "kind: LocalStorageNode" in out and "storageIP: 10.6.113.22" in out
    assert "totalVolumeCount: 1000" in out and "volumes: []" in out
    obj = json.loads(standin.kubectl("get", "lsn", "k8s-node-1", "-o", "json").stdout)
    assert obj["metadata"]["generation"] == 1
    assert obj["status"]["pools"]["LocalStorage_PoolHDD"]["volumes"] == []


def test_get_localvolume_columns(standin):
    standin.api("POST", HW + "/localvolumes", lv("pvc-lv-columns"), expect=201)
    head, rows = header_and_rows(standin.kubectl("get", "lv", "pvc-lv-columns").stdout)
    assert head == ["NAME", "POOL", "REPLICAS", "CAPACITY", "USED", "STATE", "PUBLISHED", "AGE"]
    assert rows[0][:4] == ["pvc-lv-columns", "LocalStorage_PoolHDD", "1", "1073741824"]
    obj = standin.api("GET", HW + "/localvolumes/pvc-lv-columns")
    assert obj["spec"]["convertible"] is False and obj["spec"]["delete"] is False
    assert obj["spec"]["accessibility"]["zones"] == ["default"]


def test_apply_guide_migrate_yaml_from_stdin_then_reapply_is_unchanged(standin):
    out = standin.kubectl("apply", "-f", "-", input=GUIDE_MIGRATE_YAML).stdout
    assert out.strip() == ("localvolumemigrate.hwameistor.io/"
                           "migrate-pvc-6ca4c0d4-da10-4e2e-83b2-19cbf5c5e3e4 created")
    out = standin.kubectl("apply", "-f", "-", input=GUIDE_MIGRATE_YAML).stdout
    assert out.strip().endswith(" unchanged")
    head, rows = header_and_rows(standin.kubectl("get", "lvmigrate").stdout)
    assert head == ["NAME", "VOLUME", "FROM", "TO", "STATE", "AGE"]
    obj = json.loads(standin.kubectl("get", "localvolumemigrate",
                                     "migrate-pvc-6ca4c0d4-da10-4e2e-83b2-19cbf5c5e3e4",
                                     "-o", "json").stdout)
    assert obj["spec"]["migrateAllVols"] is True and obj["spec"]["abort"] is False
    assert obj["spec"]["targetNodesSuggested"] == ["k8s-node-2", "k8s-node-3"]
    # A changed apply is a merge patch (custom resources have no strategic merge).
    changed = GUIDE_MIGRATE_YAML.replace("migrateAllVols: true", "migrateAllVols: false")
    assert standin.kubectl("apply", "-f", "-", input=changed).stdout.strip().endswith(
        " configured")
    patches = [r for r in standin.requests_log() if r["method"] == "PATCH"
               and r["path"].endswith("/migrate-pvc-6ca4c0d4-da10-4e2e-83b2-19cbf5c5e3e4")]
    assert patches and patches[-1]["code"] == 200


def test_apply_rejects_unknown_fields_and_missing_required_fields(standin):
    bad = GUIDE_MIGRATE_YAML.replace("migrate-pvc-6ca4", "bad-migrate-6ca4").replace(
        "  migrateAllVols: true", "  migrateAllVols: true\n  bogus: 1")
    p = standin.kubectl("apply", "-f", "-", input=bad, check=False)
    assert p.returncode != 0 and 'unknown field "spec.bogus"' in p.stderr
    missing = "\n".join(ln for ln in GUIDE_MIGRATE_YAML.replace(
        "migrate-pvc-6ca4", "bad2-migrate-6ca4").splitlines()
        if "targetNodesSuggested" not in ln and "- k8s-node" not in ln) + "\n"
    p = standin.kubectl("apply", "-f", "-", input=missing, check=False)
    assert p.returncode != 0
    assert "spec.targetNodesSuggested: Required value" in p.stderr


def test_strategic_patch_of_custom_resource_is_refused_with_415(standin):
    standin.api("POST", HW + "/localvolumes", lv("pvc-smp-refused"), expect=201)
    p = standin.kubectl("patch", "lv", "pvc-smp-refused", "-p", '{"spec":{"poolName":"x"}}',
                        check=False)
    assert p.returncode != 0
    assert ("the body of the request was in an unknown format - accepted media types include: "
            "application/json-patch+json, application/merge-patch+json, "
            "application/apply-patch+yaml") in p.stderr
    standin.kubectl("patch", "lv", "pvc-smp-refused", "--type=merge", "-p",
                    '{"spec":{"poolName":"LocalStorage_PoolSSD"}}')
    obj = standin.api("GET", HW + "/localvolumes/pvc-smp-refused")
    assert obj["spec"]["poolName"] == "LocalStorage_PoolSSD"
    assert obj["metadata"]["generation"] == 2


def test_label_node_and_pod_as_in_the_guide(standin):
    standin.api("POST", "/api/v1/nodes", node("label-node-1"), expect=201)
    standin.api("POST", "/api/v1/namespaces/default/pods",
                pod("mysql-pod", node_name="label-node-1"), expect=201)
    standin.kubectl("label", "node", "label-node-1", "hwameistor.io/eviction=disable")
    standin.kubectl("label", "pod", "mysql-pod", "hwameistor.io/eviction=start")
    n = standin.api("GET", "/api/v1/nodes/label-node-1")
    assert n["metadata"]["labels"]["hwameistor.io/eviction"] == "disable"
    p = standin.api("GET", "/api/v1/namespaces/default/pods/mysql-pod")
    assert p["metadata"]["labels"]["hwameistor.io/eviction"] == "start"
    out = standin.kubectl("get", "nodes", "-l", "hwameistor.io/eviction=disable",
                          "-o", "name").stdout
    assert out.split() == ["node/label-node-1"]
    standin.kubectl("label", "node", "label-node-1", "hwameistor.io/eviction-")
    n = standin.api("GET", "/api/v1/nodes/label-node-1")
    assert "hwameistor.io/eviction" not in n["metadata"]["labels"]
    p = standin.kubectl("delete", "pod", "mysql-pod")
    assert 'pod "mysql-pod" deleted' in p.stdout
    assert standin.request("GET", "/api/v1/namespaces/default/pods/mysql-pod").status == 404


def test_cordon_uncordon_toggle_unschedulable_and_print_status(standin):
    standin.api("POST", "/api/v1/nodes", node("cordon-node-1"), expect=201)
    assert standin.kubectl("cordon", "cordon-node-1").stdout.strip() == \
        "node/cordon-node-1 cordoned"
    assert standin.kubectl("cordon", "cordon-node-1").stdout.strip() == \
        "node/cordon-node-1 already cordoned"
    assert standin.api("GET", "/api/v1/nodes/cordon-node-1")["spec"]["unschedulable"] is True
    head, rows = header_and_rows(standin.kubectl("get", "node", "cordon-node-1").stdout)
    assert head == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert rows[0][1] == "Ready,SchedulingDisabled"
    standin.kubectl("uncordon", "cordon-node-1")
    assert "unschedulable" not in standin.api("GET", "/api/v1/nodes/cordon-node-1")["spec"]
    sel = standin.api("GET", "/api/v1/nodes?fieldSelector=spec.unschedulable%3Dfalse")
    assert "cordon-node-1" in [i["metadata"]["name"] for i in sel["items"]]


def _drain_fixture(standin, n):
    standin.api("POST", "/api/v1/nodes", node(n), expect=201)
    ds = standin.api("POST", "/apis/apps/v1/namespaces/kube-system/daemonsets", {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "hwameid-" + n, "namespace": "kube-system"},
        "spec": {"selector": {"matchLabels": {"app": "hwameid"}}, "template": {
            "metadata": {"labels": {"app": "hwameid"}},
            "spec": {"containers": [{"name": "hwameid", "image": "hwameid:1"}]}}}},
        expect=201)
    owner = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": ds["metadata"]["name"],
             "uid": ds["metadata"]["uid"]}
    standin.api("POST", "/api/v1/namespaces/kube-system/pods",
                pod("hwameid-" + n, "kube-system", n, {"app": "hwameid"}, owner), expect=201)
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
          "uid": "8a3b7c36-0d3e-4b8c-9a55-" + n[-12:].rjust(12, "0")}
    web = "web-" + n
    standin.api("POST", "/api/v1/namespaces/default/pods",
                pod(web, "default", n, {"app": web}, rs), expect=201)
    standin.api("PATCH", "/api/v1/namespaces/default/pods/%s/status" % web, RUNNING_READY,
                ctype="application/merge-patch+json", expect=200)
    return web


def test_drain_without_ignore_daemonsets_refuses_and_leaves_node_cordoned(standin):
    n = "drain-node-refuse"
    _drain_fixture(standin, n)
    p = standin.kubectl("drain", n, check=False)
    assert p.returncode != 0
    assert "cannot delete DaemonSet-managed Pods" in p.stderr
    assert "kube-system/hwameid-" + n in p.stderr
    assert standin.api("GET", "/api/v1/nodes/" + n)["spec"]["unschedulable"] is True


def test_drain_ignore_daemonsets_retries_on_pdb_429_and_succeeds_when_pdb_allows(standin):
    n = "drain-node-pdb"
    web = _drain_fixture(standin, n)
    standin.api("POST", "/apis/policy/v1/namespaces/default/poddisruptionbudgets", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": web, "namespace": "default"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": web}}}}, expect=201)
    head, rows = header_and_rows(standin.kubectl("get", "pdb", web).stdout)
    assert " ".join(head) == "NAME MIN AVAILABLE MAX UNAVAILABLE ALLOWED DISRUPTIONS AGE"
    assert rows[0][1:4] == ["1", "N/A", "0"]
    drain = standin.kubectl_popen("drain", n, "--ignore-daemonsets=true")
    evict_path = "/api/v1/namespaces/default/pods/%s/eviction" % web
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        codes = [r["code"] for r in standin.requests_log() if r["path"] == evict_path]
        if 429 in codes:
            break
        time.sleep(0.1)
    assert 429 in codes
    assert standin.api("GET", "/api/v1/namespaces/default/pods/" + web)  # still there
    # Let the budget allow one disruption: the next retry (after 5 s) evicts the pod.
    standin.api("PATCH", "/apis/policy/v1/namespaces/default/poddisruptionbudgets/" + web,
                {"spec": {"minAvailable": 0}}, ctype="application/merge-patch+json", expect=200)
    out, _ = drain.communicate(timeout=30)
    assert drain.returncode == 0, out
    assert "Warning: ignoring DaemonSet-managed Pods: kube-system/hwameid-" + n in out
    assert ('error when evicting pods/"%s" -n "default" (will retry after 5s): Cannot evict '
            "pod as it would violate the pod's disruption budget." % web) in out
    assert "pod/%s evicted" % web in out and "node/%s drained" % n in out
    codes = [r["code"] for r in standin.requests_log() if r["path"] == evict_path]
    assert codes[-1] == 201 and codes.count(429) >= 1
    assert standin.request("GET", "/api/v1/namespaces/default/pods/" + web).status == 404
    assert standin.request("GET", "/api/v1/namespaces/kube-system/pods/hwameid-" + n)\
        .status == 200
    pdb = standin.api("GET", "/apis/policy/v1/namespaces/default/poddisruptionbudgets/" + web)
    assert web in pdb["status"]["disruptedPods"]


def test_delete_with_finalizer_waits_until_the_finalizer_is_removed(standin):
    standin.kubectl("apply", "-f", "-", input=GUIDE_MIGRATE_YAML.replace(
        "name: migrate-pvc-6ca4c0d4-da10-4e2e-83b2-19cbf5c5e3e4",
        "name: evictor-pvc-fin\n  finalizers:\n  - hwameistor.io/eviction-protect"))
    delete = standin.kubectl_popen("delete", "lvmigrate", "evictor-pvc-fin")
    deadline = time.monotonic() + 10
    obj = None
    while time.monotonic() < deadline:
        obj = standin.api("GET", HW + "/localvolumemigrates/evictor-pvc-fin")
        if obj["metadata"].get("deletionTimestamp"):
            break
        time.sleep(0.05)
    assert obj["metadata"]["deletionTimestamp"] and obj["metadata"]["generation"] == 2
    time.sleep(0.5)
    assert delete.poll() is None          # kubectl waits for the object to go
    standin.kubectl("patch", "lvmigrate", "evictor-pvc-fin", "--type=json", "-p",
                    '[{"op":"remove","path":"/metadata/finalizers"}]')
    out, _ = delete.communicate(timeout=20)
    assert delete.returncode == 0
    assert 'localvolumemigrate.hwameistor.io "evictor-pvc-fin" deleted' in out
    assert standin.request("GET", HW + "/localvolumemigrates/evictor-pvc-fin").status == 404


def test_get_watch_prints_rows_for_changes(standin):
    standin.api("POST", HW + "/localvolumereplicas", lvr("pvc-watch-kubectl-aaaaaa",
                                                       "pvc-watch-kubectl", "k8s-node-5"),
                expect=201)
    w = standin.kubectl_popen("get", "lvr", "pvc-watch-kubectl-aaaaaa", "-w")
    standin.wait_watches(resource="hwameistor.io/localvolumereplicas",
                         field="metadata.name=pvc-watch-kubectl-aaaaaa")
    standin.api("PATCH", HW + "/localvolumereplicas/pvc-watch-kubectl-aaaaaa/status",
                {"status": {"state": "Ready", "synced": True, "devPath": "/dev/x/y"}},
                ctype="application/merge-patch+json", expect=200)
    time.sleep(0.5)
    w.terminate()
    out, _ = w.communicate(timeout=10)
    lines = [ln.split() for ln in out.strip().splitlines()]
    assert lines[0] == ["NAME", "CAPACITY", "NODE", "STATE", "SYNCED", "DEVICE", "AGE"]
    assert lines[-1][:6] == ["pvc-watch-kubectl-aaaaaa", "1073741824", "k8s-node-5", "Ready",
                             "true", "/dev/x/y"]


def test_minted_node_kubeconfig_authenticates_as_the_node(standin, tmp_path):
    import subprocess
    out = str(tmp_path / "node.kubeconfig")
    subprocess.run(["/usr/bin/python3", os.path.join(REPO, "tools", "kube-standin"),
                    "mint-kubeconfig", "--state-dir", standin.state_dir, "--user",
                    "system:node:k8s-node-7", "--group", "system:nodes", "--out", out],
                   check=True)
    standin.kubectl("get", "lsn", kubeconfig=out)
    tok = str(tmp_path / "token.kubeconfig")
    subprocess.run(["/usr/bin/python3", os.path.join(REPO, "tools", "kube-standin"),
                    "mint-kubeconfig", "--state-dir", standin.state_dir, "--user",
                    "hwameid-token-user", "--token-file", str(tmp_path / "token"), "--out",
                    tok], check=True)
    assert "tokenFile:" in open(tok).read()
    standin.kubectl("get", "lvr", kubeconfig=tok)
    users = {r["user"] for r in standin.requests_log()}
    assert {"system:node:k8s-node-7", "hwameid-token-user"} <= users
