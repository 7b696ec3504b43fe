"""Realistic fixture objects (python3-kubernetes models need every required field)."""

import copy

HW = "/apis/hwameistor.io/v1alpha1"


def node(name, labels=None, ip="10.6.113.22"):
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": dict({"kubernetes.io/hostname": name},
                                                  **(labels or {}))},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status"}],
            "addresses": [{"type": "InternalIP", "address": ip},
                          {"type": "Hostname", "address": name}],
            "nodeInfo": {"architecture": "amd64", "bootID": "boot-" + name,
                         "containerRuntimeVersion": "containerd://1.7.24",
                         "kernelVersion": "6.1.0-28-amd64", "kubeProxyVersion": "v1.32.4",
                         "kubeletVersion": "v1.32.4", "machineID": "m-" + name,
                         "operatingSystem": "linux",
                         "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "systemUUID": "u-" + name}}}


def pod(name, namespace="default", node_name=None, labels=None, owner=None):
    md = {"name": name, "namespace": namespace, "labels": labels or {}}
    if owner:
        md["ownerReferences"] = [dict(owner, controller=True, blockOwnerDeletion=True)]
    spec = {"containers": [{"name": "app", "image": "registry.local/app:1"}]}
    if node_name:
        spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec}


RUNNING_READY = {"status": {"phase": "Running", "podIP": "10.244.1.5",
                            "conditions": [{"type": "Ready", "status": "True"}],
                            "containerStatuses": [{"name": "app", "ready": True,
                                                   "restartCount": 0, "image": "app:1",
                                                   "imageID": "", "state": {"running": {}}}]}}


def lsn(name, ip="10.6.113.22"):
    return {"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalStorageNode",
            "metadata": {"name": name},
            "spec": {"hostname": name, "storageIP": ip,
                     "topogoly": {"zone": "default", "region": "default"}}}


LSN_STATUS = {"status": {"state": "Ready", "pools": {"LocalStorage_PoolHDD": {
    "class": "HDD", "type": "REGULAR", "name": "LocalStorage_PoolHDD",
    "disks": [{"capacityBytes": 17175674880, "devPath": "/dev/sdb", "state": "InUse",
               "type": "HDD"}],
    "freeCapacityBytes": 16101933056, "freeVolumeCount": 999, "totalCapacityBytes": 17175674880,
    "totalVolumeCount": 1000, "usedCapacityBytes": 1073741824, "usedVolumeCount": 1,
    "volumeCapacityBytesLimit": 17175674880, "volumes": []}}}}


def lv(name, replicas=1):
    return {"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolume",
            "metadata": {"name": name},
            "spec": {"requiredCapacityBytes": 1073741824, "poolName": "LocalStorage_PoolHDD",
                     "replicaNumber": replicas, "accessibility": {"nodes": ["k8s-node-1"]},
                     "pvcNamespace": "default", "pvcName": "data-mysql-0",
                     "volumegroup": "c0ffee00-1111-2222-3333-444455556666"}}


def lvr(name, volume, node_name):
    return {"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolumeReplica",
            "metadata": {"name": name},
            "spec": {"volumeName": volume, "poolName": "LocalStorage_PoolHDD",
                     "nodeName": node_name, "requiredCapacityBytes": 1073741824}}


def lease(name, namespace="hwameid-system", holder="node-1_abc"):
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "acquireTime": "2026-11-27T05:54:06.592546Z",
                     "renewTime": "2026-11-27T05:54:06.592546Z", "leaseTransitions": 0}}


def with_(obj, extra):
    o = copy.deepcopy(obj)
    o.update(copy.deepcopy(extra))
    return o


# The guide's migrate.yaml, verbatim.
GUIDE_MIGRATE_YAML = """apiVersion: hwameistor.io/v1alpha1
kind: LocalVolumeMigrate
metadata:
  name: migrate-pvc-6ca4c0d4-da10-4e2e-83b2-19cbf5c5e3e4
spec:
  sourceNode: k8s-node-1
  targetNodesSuggested:
  - k8s-node-2
  - k8s-node-3
  volumeName: pvc-6ca4c0d4-da10-4e2e-83b2-19cbf5c5e3e4
  migrateAllVols: true
"""
