# SPDX-License-Identifier: Apache-2.0
"""The VM infrastructure's own acceptance checks: real systemd in three guests, hwameid installed
from its .deb and running under it, its journal fields, its pools on the guests' disks, the
storage network between the guests, and a reboot. The reboot test changes the cluster (a node
restarts), so it runs last."""

import json
import time

import pytest

from conftest import API_GUEST_IP, NODES, POOL_HDD


def test_systemd_is_pid1_in_every_guest(vmcluster):
    machine_ids, boot_ids = set(), set()
    for g in vmcluster.guests:
        r = g.run("cat /proc/1/comm; readlink /proc/1/exe; hostname; cat /etc/machine-id; "
                  "cat /proc/sys/kernel/random/boot_id; systemctl is-system-running")
        comm, exe, hostname, machine_id, boot_id, state = r.stdout.split()
        assert comm == "systemd" and exe.endswith("/lib/systemd/systemd"), r.stdout
        assert hostname == g.name
        assert state in ("running", "degraded"), g.run("systemctl --failed --no-legend").stdout
        machine_ids.add(machine_id)
        boot_ids.add(boot_id)
        # The disks and NICs the suite relies on, in the order it relies on.
        assert g.run("readlink -f /dev/disk/by-id/virtio-disk1 /dev/disk/by-id/virtio-disk2").stdout.split() == \
            ["/dev/vdb", "/dev/vdc"]
        addrs = json.loads(g.run(["ip", "-j", "-4", "addr", "show"]).stdout)
        by_name = {a["ifname"]: [i["local"] for i in a["addr_info"]] for a in addrs}
        assert by_name.get("eth0") == ["10.0.2.15"] and by_name.get("eth1") == [g.ip], by_name
    assert len(machine_ids) == NODES and len(boot_ids) == NODES, (machine_ids, boot_ids)


def test_agent_survives_a_host_reconnect_and_shares_files(vmcluster):
    g = vmcluster.guest(2)
    # A request the host gives up on: its late answer must not be taken for the next one's.
    with pytest.raises(TimeoutError):
        g.agent.call({"op": "run", "argv": ["sleep", "3"], "timeout": 30}, timeout=0.5)
    g.agent.close()  # as after a host-side restart
    assert g.run(["echo", "again"]).stdout == "again\n"
    assert g.run("echo out; echo err >&2; exit 7", check=False).rc == 7
    # Files both ways, binary-safe, with their mode.
    data = bytes(range(256)) * 1000
    g.put("/var/tmp/vmtest/blob", data, 0o640)
    assert g.get("/var/tmp/vmtest/blob") == data
    assert g.run(["stat", "-c", "%a %s", "/var/tmp/vmtest/blob"]).stdout.split() == ["640", str(len(data))]
    # The 9p payload share.
    (g.payload / "from-host").write_bytes(b"payload!")
    where = g.mount_payload()
    assert g.run(["cat", f"{where}/from-host"]).stdout == "payload!"
    g.run(f"echo from-guest > {where}/from-guest")
    assert (g.payload / "from-guest").read_text() == "from-guest\n"


def test_deb_installs_and_hwameid_runs(vmcluster):
    for g in vmcluster.guests:
        info = vmcluster.install[g.name]
        r = info["dpkg"]
        assert r.rc == 0, f"{g.name}: dpkg -i failed ({r.rc}):\n{r.stdout}{r.stderr}"
        assert g.run(["dpkg-query", "-W", "-f", "${Status}", "hwameid"]).stdout == "install ok installed"
        # The packaging says dh_installsystemd enables and starts the unit.
        assert info["started_by_postinst"], (f"{g.name}: hwameid not active after dpkg -i "
                                             f"({info['active_after_dpkg']}, {info['enabled_after_dpkg']})")
        assert g.run(["systemctl", "is-enabled", "hwameid"], check=False).stdout.strip() == "enabled"
        assert g.run(["systemctl", "is-active", "hwameid"], check=False).stdout.strip() == "active"
        show = dict(line.split("=", 1) for line in g.run(
            ["systemctl", "show", "hwameid", "-p", "Type,NRestarts,MainPID,Result,StatusText"]).stdout.splitlines())
        assert show["Type"] == "notify" and show["Result"] == "success" and show["MainPID"] != "0", show
        assert show["NRestarts"] == "0", f"{g.name}: hwameid restarted: {show}"
        # Nothing failed in the guest (e.g. a unit of the package, the tmpfiles, the modules).
        assert g.run("systemctl --failed --no-legend --plain").stdout.strip() == ""


def test_journal_has_hwameid_fields(vmcluster):
    for g in vmcluster.guests:
        r = g.run(["journalctl", "-u", "hwameid", "-o", "json", "--no-pager"])
        entries = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        # What the daemon logs through sd_journal_send (daemon/log/log.c), not what it (or
        # ExecStartPre=hwameid --check-config) writes to stdout.
        own = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "hwameid" and e.get("_TRANSPORT") == "journal"]
        assert len(own) >= 5, f"{g.name}: {len(own)} structured entries from hwameid of {len(entries)}"
        assert all(e.get("_SYSTEMD_UNIT") == "hwameid.service" for e in own)
        # The source location on every entry.
        with_code = [e for e in own if e.get("CODE_FILE", "").startswith("daemon/") and e.get("CODE_LINE")
                     and e.get("CODE_FUNC")]
        assert len(with_code) == len(own), [e for e in own if e not in with_code][:3]
        # The start is an event with a MESSAGE_ID (daemon/log/catalog-ids.h) and a catalog entry.
        started = [e for e in own if e.get("MESSAGE_ID") == "961fcae93a9d4a0eb691f6e094e4bed2"]
        assert started, f"{g.name}: no 'started' event"
        x = g.run(["journalctl", "-u", "hwameid", "-x", "--no-pager", "MESSAGE_ID=961fcae93a9d4a0eb691f6e094e4bed2"])
        assert "Subject: hwameid started" in x.stdout, x.stdout[-2000:]


def test_pools_are_volume_groups_on_the_disks(vmcluster):
    vmcluster.wait_pools(timeout=240)
    for g in vmcluster.guests:
        lsn = vmcluster.kubectl_json("get", "localstoragenode", g.name)
        assert lsn["spec"].get("storageIP") == g.ip, lsn["spec"]
        pool = lsn["status"]["pools"][POOL_HDD]
        vg = pool.get("name") or POOL_HDD
        yaml = vmcluster.kubectl("get", "localstoragenode", g.name, "-o", "yaml").stdout
        assert POOL_HDD in yaml
        # The system's own LVM tools see the daemon's VG on exactly /dev/vdb and /dev/vdc.
        r = g.run(["pvs", "--reportformat", "json", "-o", "pv_name,vg_name"])
        pvs = json.loads(r.stdout)["report"][0]["pv"]
        assert sorted(p["pv_name"] for p in pvs if p["vg_name"] == vg) == ["/dev/vdb", "/dev/vdc"], pvs
        vgs = json.loads(g.run(["vgs", "--reportformat", "json", "-o", "vg_name,pv_count", vg]).stdout)
        assert vgs["report"][0]["vg"][0]["pv_count"] == "2", vgs


def test_storage_network_between_guests(vmcluster):
    g1, g2, g3 = vmcluster.guest(1), vmcluster.guest(2), vmcluster.guest(3)
    token = f"hello-from-{g2.name}-{time.monotonic_ns()}"
    listener = ("import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                f"s.bind(('{g1.ip}', 7999)); s.listen(); c, a = s.accept(); "
                "data = c.recv(4096); c.sendall(b'ack:' + data); "
                "open('/run/vmtest-received', 'w').write(a[0] + ' ' + data.decode())")
    g1.run("rm -f /run/vmtest-received; systemctl reset-failed vmtest-listen 2>/dev/null; "
           f"systemd-run --unit vmtest-listen --collect python3 -c \"{listener}\"")
    try:
        g1.run("for i in $(seq 100); do ss -Hltn 'sport = :7999' | grep -q . && exit 0; sleep 0.2; done; exit 1")
        # Over eth1, not slirp: the route says so.
        assert " dev eth1 " in g2.run(["ip", "route", "get", g1.ip]).stdout
        r = g2.run(["python3", "-c", "import socket, sys; c = socket.create_connection((sys.argv[1], 7999), 10); "
                    "c.sendall(sys.argv[2].encode()); print(c.recv(4096).decode())", g1.ip, token], timeout=60)
        assert r.stdout.strip() == f"ack:{token}"
        assert g1.run("cat /run/vmtest-received").stdout == f"{g2.ip} {token}"
    finally:
        g1.run("systemctl stop vmtest-listen 2>/dev/null || true")
    # The third guest sees both at layer 2 too (ARP through the hub) and hwameid's stream port of
    # each node (TCP connect, no TLS handshake needed to prove reachability).
    port = vmcluster.status(1)["stream"]["port"]
    for other in (g1, g2):
        g3.run(["python3", "-c", "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 10)",
                other.ip, port], timeout=60)
    neigh = g3.run(["ip", "-j", "neigh", "show", "dev", "eth1"]).stdout
    macs = {n.get("dst"): n.get("lladdr") for n in json.loads(neigh)}
    assert macs.get(g1.ip) == g1.mac and macs.get(g2.ip) == g2.mac, macs
    # The hub can cut a guest off (a failed switch port) and connect it again.
    connect = ["python3", "-c", "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)",
               g3.ip, port]
    vmcluster.hub.link(g3.mac, False)
    try:
        assert g1.run(connect, timeout=60, check=False).rc != 0
    finally:
        vmcluster.hub.link(g3.mac, True)
    g1.run(connect, timeout=60)
    # Nothing leaves through slirp: restrict=on (a guest reaching the host's other ports fails).
    r = g3.run(["python3", "-c", "import socket; socket.create_connection(('10.0.2.2', 22), 5)"], check=False)
    assert r.rc != 0


def test_cluster_has_one_leader_and_every_node_talks_to_the_api(vmcluster):
    def leaders():
        st = [vmcluster.status(i) for i in range(1, NODES + 1)]
        return st if sum(bool(s["cluster"]["leader"]["leading"]) for s in st) == 1 else None
    st = vmcluster.wait(leaders, 120, "exactly one leader")
    for g, s in zip(vmcluster.guests, st):
        assert s["node"] == g.name
        assert s["cluster"]["server"] == f"https://{API_GUEST_IP}:6443", s["cluster"]
        assert s["cluster"]["node"]["registered"], s["cluster"]
    lease = vmcluster.get("/apis/coordination.k8s.io/v1/namespaces/hwameid-system/leases/hwameid-controller")
    holder = lease["spec"]["holderIdentity"].rsplit("_", 1)[0]
    assert holder == next(g.name for g, s in zip(vmcluster.guests, st) if s["cluster"]["leader"]["leading"])
