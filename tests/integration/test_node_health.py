# SPDX-License-Identifier: Apache-2.0
"""Node health: the leader marks a node whose heartbeat Lease went stale Offline, never chooses it
as a migration target, and the node is Ready again once its hwameid is back."""

import pytest

from harness import MiB, cluster, make_cluster  # noqa: F401
from test_migrate import apply_migrate, make_volume, wait_state


def lsn_state(c, node):
    return (c.kubectl_json("get", "localstoragenode", node).get("status") or {}).get("state")


@pytest.mark.parametrize("cluster", [{"config": "[Node]\nHeartbeatInterval=1s\n"}], indirect=True)
def test_a_dead_node_goes_offline_is_not_a_target_and_comes_back(cluster):
    c = cluster
    leader = c.wait_leader()
    victim = next(n for n in c.nodes if n is not leader and n.name != "k8s-node-1")
    make_volume(c, "pvc-health", "k8s-node-1", 16 * MiB)
    victim.kill()
    c.wait(lambda: lsn_state(c, victim.name) == "Offline", 30, f"{victim.name} Offline")
    events = [e for e in c.kubectl_json("get", "events", "-A")["items"] if e["reason"] == "NodeOffline"]
    assert any(victim.name in e["involvedObject"]["name"] for e in events), events

    apply_migrate(c, "m-to-offline", "pvc-health", "k8s-node-1", [victim.name])
    st = wait_state(c, "m-to-offline", "Aborted", 30)
    assert "invalid target node" in st["message"] and "not Ready" in st["message"], st

    victim.start()
    c.wait(lambda: lsn_state(c, victim.name) == "Ready", 30, f"{victim.name} Ready again")
