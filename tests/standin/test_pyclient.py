"""Fidelity with python3-kubernetes (Debian's package): typed models, watch framing,
query booleans (it sends watch=True), selectors, 410 handling, Leases, status."""

import threading
import time

import pytest

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client, config, watch  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

from objects import HW, lease, lvr, node  # noqa: E402


@pytest.fixture
def k8s(standin):
    api_client = config.new_client_from_config(config_file=standin.kubeconfig)
    yield api_client
    api_client.close()


def test_list_nodes_with_label_selector_into_typed_models(standin, k8s):
    standin.api("POST", "/api/v1/nodes", node("py-node-1", {"py": "yes"}), expect=201)
    standin.api("POST", "/api/v1/nodes", node("py-node-2"), expect=201)
    v1 = client.CoreV1Api(k8s)
    nodes = v1.list_node(label_selector="py=yes")
    assert [n.metadata.name for n in nodes.items] == ["py-node-1"]
    assert nodes.items[0].status.node_info.kubelet_version == "v1.32.4"
    assert nodes.metadata.resource_version


def test_watch_node_by_field_selector_sees_label_changes_and_move_out(standin, k8s):
    standin.api("POST", "/api/v1/nodes", node("py-watch-node"), expect=201)
    v1 = client.CoreV1Api(k8s)
    rv = v1.list_node(field_selector="metadata.name=py-watch-node").metadata.resource_version
    got = []

    def run():
        w = watch.Watch()
        for ev in w.stream(v1.list_node, label_selector="py=patched",
                           resource_version=rv, timeout_seconds=5,
                           allow_watch_bookmarks=True):
            got.append((ev["type"], ev["object"].metadata.name))
            if len(got) == 2:
                w.stop()
    t = threading.Thread(target=run)
    t.start()
    standin.wait_watches(resource="/nodes")
    v1.patch_node("py-watch-node", {"metadata": {"labels": {"py": "patched"}}})
    v1.patch_node("py-watch-node", {"metadata": {"labels": {"py": None}}})
    t.join(10)
    assert got == [("ADDED", "py-watch-node"), ("DELETED", "py-watch-node")]


def test_watch_custom_objects_by_selectable_field(standin, k8s):
    co = client.CustomObjectsApi(k8s)
    rv = co.list_cluster_custom_object("hwameistor.io", "v1alpha1",
                                       "localvolumereplicas")["metadata"]["resourceVersion"]
    events = []

    def run():
        w = watch.Watch()
        for ev in w.stream(co.list_cluster_custom_object, "hwameistor.io", "v1alpha1",
                           "localvolumereplicas", field_selector="spec.nodeName=py-node-9",
                           resource_version=rv, timeout_seconds=5):
            events.append((ev["type"], ev["object"]["metadata"]["name"]))
            if len(events) == 1:
                w.stop()
    t = threading.Thread(target=run)
    t.start()
    standin.wait_watches(resource="hwameistor.io/localvolumereplicas",
                         field="spec.nodeName=py-node-9")
    co.create_cluster_custom_object("hwameistor.io", "v1alpha1", "localvolumereplicas",
                                    lvr("pvc-py-other-aaaaaa", "pvc-py", "py-node-8"))
    co.create_cluster_custom_object("hwameistor.io", "v1alpha1", "localvolumereplicas",
                                    lvr("pvc-py-mine-aaaaaa", "pvc-py", "py-node-9"))
    t.join(10)
    assert events == [("ADDED", "pvc-py-mine-aaaaaa")]


def test_watch_with_timeout_raises_410_after_compaction(fresh_standin):
    api_client = config.new_client_from_config(config_file=fresh_standin.kubeconfig)
    v1 = client.CoreV1Api(api_client)
    rv = v1.list_namespace().metadata.resource_version
    fresh_standin.api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                     "metadata": {"name": "py-ns"}}, expect=201)
    fresh_standin.admin("POST", "/compact")
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(v1.list_namespace, resource_version=rv,
                                      timeout_seconds=2):
            pass
    assert e.value.status == 410 and "too old resource version" in str(e.value)
    api_client.close()


def test_lease_conflict_invalid_and_not_found_as_api_exceptions(standin, k8s):
    co = client.CoordinationV1Api(k8s)
    ns = "hwameid-system"
    with pytest.raises(ApiException) as e:
        co.read_namespaced_lease("py-lease", ns)
    assert e.value.status == 404
    created = co.create_namespaced_lease(ns, lease("py-lease"))
    with pytest.raises(ApiException) as e:
        co.create_namespaced_lease(ns, lease("py-lease"))
    assert e.value.status == 409 and '"reason":"AlreadyExists"' in e.value.body
    created.spec.holder_identity = "node-2_b"
    co.replace_namespaced_lease("py-lease", ns, created)
    created.spec.holder_identity = "node-3_c"
    with pytest.raises(ApiException) as e:
        co.replace_namespaced_lease("py-lease", ns, created)
    assert e.value.status == 409 and '"reason":"Conflict"' in e.value.body
    created.metadata.resource_version = None
    with pytest.raises(ApiException) as e:
        co.replace_namespaced_lease("py-lease", ns, created)
    assert e.value.status == 422


def test_status_patch_and_finalizer_delete_of_custom_objects(standin, k8s):
    co = client.CustomObjectsApi(k8s)
    body = lvr("pvc-py-status-aaaaaa", "pvc-py-status", "py-node-1")
    body["metadata"]["finalizers"] = ["hwameistor.io/replica"]
    co.create_cluster_custom_object("hwameistor.io", "v1alpha1", "localvolumereplicas", body)
    obj = co.patch_cluster_custom_object_status(
        "hwameistor.io", "v1alpha1", "localvolumereplicas", "pvc-py-status-aaaaaa",
        {"status": {"state": "Ready", "synced": True}})
    assert obj["status"] == {"state": "Ready", "synced": True, "inuse": False}
    assert obj["metadata"]["generation"] == 1
    obj = co.delete_cluster_custom_object("hwameistor.io", "v1alpha1", "localvolumereplicas",
                                          "pvc-py-status-aaaaaa")
    assert obj["metadata"]["deletionTimestamp"]
    co.patch_cluster_custom_object("hwameistor.io", "v1alpha1", "localvolumereplicas",
                                   "pvc-py-status-aaaaaa", {"metadata": {"finalizers": None}})
    deadline = time.monotonic() + 2
    while standin.request("GET", HW + "/localvolumereplicas/pvc-py-status-aaaaaa").status \
            != 404:
        assert time.monotonic() < deadline
        time.sleep(0.05)
