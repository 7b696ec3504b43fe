# SPDX-License-Identifier: Apache-2.0
"""hwameictl's cluster verbs (volume, migrate, node) against the three-node harness: the tables
show the API objects' state, `volume migrate --wait` drives a migration to its end, `migrate watch`
follows one with a rate and an ETA (as lines, as JSON Lines and as a bar on a terminal), `migrate
abort` rolls one back, `node status` shows pools, replicas, cordons and the eviction label, and the
exit codes are the documented ones (0 success, 1 failure, 2 bad usage, 3 not found).

hwameictl runs where kubectl does: in the API server's network namespace, with the admin
kubeconfig (--kubeconfig), or with a hwameid configuration that names it (--config)."""

import json
import os
import pty
import re
import select
import signal
import subprocess
import time

import pytest

from conftest import HWAMEICTL, ROOT
from harness import MiB, POOL_HDD, cluster, make_cluster  # noqa: F401
from test_migrate import make_volume, migrate_status, replicas_of, wait_state

SLOW = {"config": "[Stream]\nBandwidthLimit=4M\n"}

# The documented keys of the --json summaries (hwameictl(8), JSON OUTPUT).
VOLUME_KEYS = {"name", "capacityBytes", "pool", "replicaNumber", "state", "published", "nodes", "replicas",
               "readyReplicas", "migration"}
MIGRATE_KEYS = {"name", "volume", "from", "to", "targetNodesSuggested", "abort", "state", "message", "progress",
                "percent", "digest", "startTime", "completionTime", "creationTimestamp"}
NODE_KEYS = {"name", "ip", "state", "cordoned", "evictionDisabled", "pools", "replicas"}
POOL_KEYS = {"name", "class", "totalBytes", "usedBytes", "freeBytes", "totalVolumes", "usedVolumes", "freeVolumes",
             "disks", "volumes"}
REPLICA_KEYS = {"name", "node", "volume", "pool", "capacityBytes", "state", "synced", "device", "digest"}


def ctl_cmd(c, *args, kubeconfig=True):
    return (["nsenter", f"--net=/run/netns/{c.api_netns}", "--", str(HWAMEICTL)]
            + (["--kubeconfig", str(c.admin_kubeconfig)] if kubeconfig else []) + [str(a) for a in args])


def ctl(c, *args, kubeconfig=True, timeout=120):
    """hwameictl in the API server's namespace, as the cluster admin."""
    return subprocess.run(ctl_cmd(c, *args, kubeconfig=kubeconfig), capture_output=True, text=True,
                          timeout=timeout)


def ok(c, *args, **kw):
    r = ctl(c, *args, **kw)
    assert r.returncode == 0, f"hwameictl {' '.join(map(str, args))}: {r.returncode}\n{r.stdout}{r.stderr}"
    return r.stdout


def table(text):
    """The first table of the output: [{HEADER: cell}] (cells never contain spaces)."""
    lines = text.split("\n\n")[0].strip().splitlines()
    head = lines[0].split()
    rows = [line.split() for line in lines[1:]]
    assert all(len(r) == len(head) for r in rows), text
    return [dict(zip(head, r)) for r in rows]


def tables(text, skip=0):
    """Every table of the output, after skip blocks that are not tables."""
    return [table(block) for block in text.strip().split("\n\n")[skip:] if block.strip()]


def one_error_line(r, code, *words):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def test_volume_list_and_show_and_the_exit_codes(cluster):
    c = cluster
    replica, _ = make_volume(c, "pvc-list", "k8s-node-1", 16 * MiB)

    out = ok(c, "volume", "list")
    assert out.splitlines()[0].split() == ["NAME", "CAPACITY", "NODES", "STATE", "REPLICAS", "PUBLISHED",
                                           "MIGRATION"]
    assert table(out) == [{"NAME": "pvc-list", "CAPACITY": "16M", "NODES": "k8s-node-1", "STATE": "Ready",
                           "REPLICAS": "1/1", "PUBLISHED": "-", "MIGRATION": "-"}]

    out = ok(c, "volume", "show", "pvc-list")
    fields = dict(re.findall(r"^\s*([A-Za-z]+): (.*)$", out, re.M))
    assert fields["Volume"] == "pvc-list" and fields["Capacity"] == f"16M in {POOL_HDD}"
    assert fields["Nodes"] == "k8s-node-1" and fields["Replicas"] == "1 of 1 ready" and fields["State"] == "Ready"
    assert fields["PVC"] == "default/pvc-list"
    reps = tables(out, skip=1)[0]
    assert reps == [{"REPLICA": replica, "NODE": "k8s-node-1", "STATE": "Ready", "SYNCED": "true",
                     "DEVICE": f"/dev/{POOL_HDD}/pvc-list", "DIGEST": "-"}]

    summary = json.loads(ok(c, "--json", "volume", "list"))["items"]
    assert len(summary) == 1 and set(summary[0]) == VOLUME_KEYS, summary
    assert summary[0]["nodes"] == ["k8s-node-1"] and summary[0]["replicas"] == [replica]
    assert summary[0]["capacityBytes"] == 16 * MiB and summary[0]["migration"] is None
    shown = json.loads(ok(c, "volume", "show", "pvc-list", "--json"))
    assert set(shown) == {"volume", "replicas", "migrations"}
    assert shown["volume"]["metadata"]["name"] == "pvc-list" and shown["migrations"] == []
    assert [r["metadata"]["name"] for r in shown["replicas"]] == [replica]

    # Not found: 3, one line naming the object.
    one_error_line(ctl(c, "volume", "show", "pvc-nope"), 3, "pvc-nope", "not found")
    one_error_line(ctl(c, "volume", "migrate", "pvc-nope", "--from", "k8s-node-1"), 3, "pvc-nope", "not found")
    one_error_line(ctl(c, "migrate", "watch", "m-nope"), 3, "m-nope", "not found")
    one_error_line(ctl(c, "migrate", "abort", "m-nope"), 3, "m-nope", "not found")
    one_error_line(ctl(c, "node", "status", "k8s-node-9"), 3, "k8s-node-9", "not found")
    # Requests that cannot work: 1, saying why.
    one_error_line(ctl(c, "volume", "migrate", "pvc-list", "--from", "k8s-node-2"), 1, "pvc-list", "k8s-node-2",
                   "no replica")
    one_error_line(ctl(c, "volume", "migrate", "pvc-list", "--from", "k8s-node-1", "--to", "k8s-node-9"), 1,
                   "k8s-node-9")
    one_error_line(ctl(c, "volume", "list", "--kubeconfig", c.dir / "nope.kubeconfig", kubeconfig=False), 1,
                   "nope.kubeconfig")
    one_error_line(ctl(c, "volume", "list", "--config", c.dir / "nope.conf", kubeconfig=False), 1, "nope.conf",
                   "--kubeconfig")
    # What the API server refuses: its own Status message comes through (422 for a bad name).
    one_error_line(ctl(c, "volume", "migrate", "pvc-list", "--from", "k8s-node-1", "--name", "Not_A_Name"), 1,
                   "Not_A_Name")
    assert c.kubectl_json("get", "localvolumemigrate")["items"] == []

    # The daemon's configuration names the kubeconfig: a node's own works as well as --kubeconfig.
    n1 = c.node(1)
    r = subprocess.run(["nsenter", f"--net=/run/netns/{n1.netns}", "--", str(HWAMEICTL), "--config",
                        str(n1.config), "volume", "list"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and table(r.stdout)[0]["NAME"] == "pvc-list", r

    # Bad usage: 2, before anything is asked of the API server.
    for args in (["volume"], ["volume", "frob"], ["volume", "show"], ["volume", "list", "extra"],
                 ["volume", "migrate", "pvc-list"], ["volume", "migrate", "pvc-list", "--to", "k8s-node-2"],
                 ["volume", "migrate", "pvc-list", "--from", "k8s-node-1", "--to", "k8s-node-1"],
                 ["migrate", "watch"], ["migrate", "list", "--wait"], ["node", "status", "a", "b"],
                 ["node", "status", "--from", "k8s-node-1"], ["status", "--kubeconfig", "x"], ["frobnicate"],
                 ["--bogus", "volume", "list"]):
        r = ctl(c, *args)
        assert r.returncode == 2 and r.stderr.strip() and not r.stdout, (args, r)


def test_volume_migrate_wait_completes_and_the_tables_follow(cluster):
    c = cluster
    source, digest = make_volume(c, "pvc-mig", "k8s-node-1", 32 * MiB)

    r = ctl(c, "volume", "migrate", "pvc-mig", "--from", "k8s-node-1", "--to", "k8s-node-2", "--wait")
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    name = lines[0]
    assert re.fullmatch(r"migrate-pvc-mig-[a-z0-9]{5}", name), lines
    assert lines[1] == f"{name}: volume pvc-mig from k8s-node-1 to k8s-node-2 (suggested)", lines
    assert any(line.startswith(f"{name}: SyncReplica") for line in lines), lines
    st = migrate_status(c, name)
    assert lines[-1] == (f"{name}: Completed: Volume pvc-mig moved from k8s-node-1 to k8s-node-2 "
                         f"(verified, xxh3-128 {st['digest']})"), lines
    spec = c.get(f"/apis/hwameistor.io/v1alpha1/localvolumemigrates/{name}")["spec"]
    assert spec == {"volumeName": "pvc-mig", "sourceNode": "k8s-node-1", "targetNodesSuggested": ["k8s-node-2"],
                    "migrateAllVols": True, "abort": False}, spec

    target = [x["metadata"]["name"] for x in replicas_of(c, "pvc-mig")]
    assert len(target) == 1 and target[0] != source
    assert c.checksum(target[0]) == digest
    assert table(ok(c, "volume", "list")) == [{"NAME": "pvc-mig", "CAPACITY": "32M", "NODES": "k8s-node-2",
                                               "STATE": "Ready", "REPLICAS": "1/1", "PUBLISHED": "-",
                                               "MIGRATION": "-"}]
    shown = tables(ok(c, "volume", "show", "pvc-mig"), skip=1)
    assert [(x["REPLICA"], x["NODE"], x["SYNCED"], x["DIGEST"]) for x in shown[0]] == [
        (target[0], "k8s-node-2", "true", st["digest"])]
    assert [(m["MIGRATION"], m["FROM"], m["TO"], m["STATE"], m["PROGRESS"]) for m in shown[1]] == [
        (name, "k8s-node-1", "k8s-node-2", "Completed", "100%")]

    out = ok(c, "migrate", "list")
    assert out.splitlines()[0].split() == ["NAME", "VOLUME", "FROM", "TO", "STATE", "PROGRESS", "AGE"]
    rows = table(out)
    assert len(rows) == 1 and re.fullmatch(r"\d+s|\d+m\d*s?", rows[0].pop("AGE")), rows
    assert rows == [{"NAME": name, "VOLUME": "pvc-mig", "FROM": "k8s-node-1", "TO": "k8s-node-2",
                     "STATE": "Completed", "PROGRESS": "100%"}]
    items = json.loads(ok(c, "migrate", "list", "--json"))["items"]
    assert len(items) == 1 and set(items[0]) == MIGRATE_KEYS, items
    assert items[0]["state"] == "Completed" and items[0]["percent"] == 100 and items[0]["digest"] == st["digest"]
    assert items[0]["to"] == "k8s-node-2" and items[0]["progress"]["bytesTotal"] == 32 * MiB

    # A migration that has ended: watch says so at once; it cannot be aborted; its name is taken.
    r = ctl(c, "migrate", "watch", name)
    assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith(f"{name}: Completed"), r
    one_error_line(ctl(c, "migrate", "abort", name), 1, name, "Completed")
    one_error_line(ctl(c, "volume", "migrate", "pvc-mig", "--from", "k8s-node-2", "--name", name), 1, name,
                   "already exists")


def _pty_run(cmd, timeout=120):
    """Runs cmd with its stdout on a terminal; returns (exit status, what it wrote there, stderr)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(cmd, stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         env=dict(os.environ, TERM="xterm"))
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the other end is closed
                break
            if not data:
                break
            out += data
        rc = p.wait(10)
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
            p.wait()
    return rc, out.decode(errors="replace"), p.stderr.read().decode()


@pytest.mark.parametrize("cluster", [SLOW], indirect=True)
def test_migrate_watch_shows_progress_rate_and_eta(cluster):
    c = cluster
    make_volume(c, "pvc-slow", "k8s-node-1", 48 * MiB)
    assert ok(c, "volume", "migrate", "pvc-slow", "--from", "k8s-node-1", "--to", "k8s-node-3", "--name",
              "m-slow") == "m-slow\n"
    assert table(ok(c, "volume", "list"))[0]["MIGRATION"].startswith("m-slow:")

    plain = subprocess.Popen(ctl_cmd(c, "migrate", "watch", "m-slow"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lines = subprocess.Popen(ctl_cmd(c, "--json", "migrate", "watch", "m-slow"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        rc, screen, err = _pty_run(ctl_cmd(c, "migrate", "watch", "m-slow"))
        out, perr = plain.communicate(timeout=120)
        jout, jerr = lines.communicate(timeout=120)
    finally:
        for p in (plain, lines):
            if p.poll() is None:
                p.kill()
                p.wait()

    # JSON Lines: one summary per change, the last one Completed.
    events = [json.loads(x) for x in jout.splitlines()]
    assert lines.returncode == 0 and events, (jout, jerr)
    assert all(set(e) == MIGRATE_KEYS for e in events)
    assert events[-1]["state"] == "Completed" and events[-1]["percent"] == 100
    assert any((e["progress"] or {}).get("bytesPerSecond", 0) > 0 for e in events), events
    # The ETA is shown when status.progress has one (the total and etaSeconds during the copy).
    with_eta = any((e["progress"] or {}).get("etaSeconds") is not None and e["state"] == "SyncReplica"
                   and e["progress"]["bytesDone"] < e["progress"]["bytesTotal"] for e in events)

    # Plain lines: each state once, progress with a rate (and an ETA), the end.
    assert plain.returncode == 0, (out, perr)
    progress = [line for line in out.splitlines() if line.startswith("m-slow: copied ")]
    assert all(re.fullmatch(r"m-slow: copied [0-9.]+[KMG]?B?( of 48M \(\d+%\))?(, [0-9.]+ MB/s)?(, ETA .+)?", x)
               for x in progress), progress
    rates = [float(m.group(1)) for m in (re.search(r", ([0-9.]+) MB/s", x) for x in progress) if m]
    assert rates and all(0 < x < 10 for x in rates), out  # about 4.2 MB/s (4 MiB/s)
    assert any("ETA" in x for x in progress) == with_eta, (out, events)
    states = [line.split(": ")[1] for line in out.splitlines() if line not in progress][1:]
    assert states[-1] == "Completed" and "SyncReplica" in states, out
    assert len(states) == len(set(states)), out

    # A terminal: the progress redrawn in place (a bar when the total is known).
    assert rc == 0, (screen, err)
    assert re.search(r"\r(\[[#-]+\] +\d+%  [0-9.]+[KMG]?B? / 48M|copied [0-9.]+[KMG]?B?)  [0-9.]+ MB/s", screen), \
        repr(screen)
    assert "\x1b[K" in screen and "m-slow: Completed" in screen, repr(screen)

    assert table(ok(c, "volume", "list"))[0]["NODES"] == "k8s-node-3"


@pytest.mark.parametrize("cluster", [SLOW], indirect=True)
def test_migrate_abort_during_the_copy(cluster):
    c = cluster
    source, digest = make_volume(c, "pvc-abort", "k8s-node-1", 48 * MiB)
    ok(c, "volume", "migrate", "pvc-abort", "--from", "k8s-node-1", "--to", "k8s-node-3", "--name", "m-abort")
    c.wait(lambda: (migrate_status(c, "m-abort").get("progress") or {}).get("bytesDone", 0) > 0, 60,
           "copy progress")
    assert table(ok(c, "migrate", "list"))[0]["STATE"] == "SyncReplica"
    # Ctrl-C ends a watch with 128 + SIGINT, the line it was on finished.
    watch = subprocess.Popen(ctl_cmd(c, "migrate", "watch", "m-abort"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert watch.stdout.readline().startswith("m-abort: volume pvc-abort from k8s-node-1 to k8s-node-3")
        watch.send_signal(signal.SIGINT)
        rest, err = watch.communicate(timeout=10)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 128 + signal.SIGINT and not err, (watch.returncode, rest, err)
    assert rest == "" or rest.endswith("\n"), rest
    # Another migration of the same volume is refused while this one runs.
    one_error_line(ctl(c, "volume", "migrate", "pvc-abort", "--from", "k8s-node-1"), 1, "pvc-abort", "m-abort")

    r = ctl(c, "migrate", "abort", "m-abort", "--wait")
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = r.stdout.splitlines()
    assert out[0].startswith("Abort requested for migration m-abort (SyncReplica)"), out
    assert out[-1] == "m-abort: Aborted: aborted by request", out
    assert c.get("/apis/hwameistor.io/v1alpha1/localvolumemigrates/m-abort")["spec"]["abort"] is True
    wait_state(c, "m-abort", "Aborted", 5)
    c.wait(lambda: [x["metadata"]["name"] for x in replicas_of(c, "pvc-abort")] == [source], 30,
           "the target replica gone")
    assert c.checksum(source) == digest

    # Watching an aborted migration: exit 1 and the reason; aborting it again is no error.
    r = ctl(c, "migrate", "watch", "m-abort")
    assert one_error_line(r, 1, "m-abort") == "m-abort: Aborted: aborted by request"
    r = ctl(c, "migrate", "abort", "m-abort")
    assert r.returncode == 0 and "already Aborted" in r.stdout, r
    r = ctl(c, "--json", "migrate", "watch", "m-abort")
    assert r.returncode == 1 and json.loads(r.stdout)["state"] == "Aborted", r
    row = table(ok(c, "volume", "list"))[0]
    assert (row["NODES"], row["REPLICAS"], row["MIGRATION"]) == ("k8s-node-1", "1/1", "-"), row
    assert table(ok(c, "migrate", "list"))[0]["STATE"] == "Aborted"


def test_node_status_shows_pools_replicas_cordon_and_the_eviction_label(cluster):
    c = cluster
    replica, _ = make_volume(c, "pvc-node", "k8s-node-1", 16 * MiB)

    def status(*args):
        nodes, replicas = tables(ok(c, "node", "status", *args))
        return {n["NODE"]: n for n in nodes}, replicas

    nodes, replicas = status()
    assert sorted(nodes) == ["k8s-node-1", "k8s-node-2", "k8s-node-3"]
    for n in c.nodes:
        row = nodes[n.name]
        assert (row["IP"], row["STATE"], row["CORDONED"], row["EVICTION"], row["POOL"], row["CLASS"]) == (
            n.ip, "Ready", "no", "enabled", POOL_HDD, "HDD"), row
        pool = n.pools()[POOL_HDD]
        assert row["VOLUMES"] == f"{pool['usedVolumeCount']}/{pool['totalVolumeCount']}"
        assert re.fullmatch(r"[0-9.]+[KMG]", row["FREE"]) and re.fullmatch(r"[0-9.]+[KMG]", row["TOTAL"]), row
    assert nodes["k8s-node-1"]["VOLUMES"].startswith("1/")
    assert replicas == [{"NODE": "k8s-node-1", "REPLICA": replica, "VOLUME": "pvc-node", "CAPACITY": "16M",
                         "STATE": "Ready", "SYNCED": "true", "DEVICE": f"/dev/{POOL_HDD}/pvc-node"}]

    # Node k8s-node-3 holds no volume: cordoning it moves nothing.
    c.kubectl("cordon", "k8s-node-3")
    c.kubectl("label", "node", "k8s-node-2", "hwameistor.io/eviction=disable")
    nodes, _ = status()
    assert [(nodes[n]["CORDONED"], nodes[n]["EVICTION"]) for n in sorted(nodes)] == [
        ("no", "enabled"), ("no", "disabled"), ("yes", "enabled")]

    one, reps = status("k8s-node-3")
    assert list(one) == ["k8s-node-3"] and reps == []  # "No replicas."
    items = json.loads(ok(c, "--json", "node", "status", "k8s-node-1"))["items"]
    assert len(items) == 1 and set(items[0]) == NODE_KEYS, items
    n1 = items[0]
    assert (n1["name"], n1["ip"], n1["cordoned"], n1["evictionDisabled"]) == ("k8s-node-1", c.node(1).ip, False,
                                                                              False)
    assert [set(p) for p in n1["pools"]] == [POOL_KEYS] and n1["pools"][0]["volumes"] == ["pvc-node"]
    assert [set(x) for x in n1["replicas"]] == [REPLICA_KEYS] and n1["replicas"][0]["name"] == replica
    every = {n["name"]: n for n in json.loads(ok(c, "node", "status", "--json"))["items"]}
    assert every["k8s-node-3"]["cordoned"] is True and every["k8s-node-2"]["evictionDisabled"] is True

    c.kubectl("uncordon", "k8s-node-3")
    assert status()[0]["k8s-node-3"]["CORDONED"] == "no"


def complete(line):
    """The words bash completion offers for line (cursor at its end), with bash-completion's helpers
    stubbed (as in test_packaging.py) and hwameictl replaced by a stub that prints a table."""
    script = f"""
        _init_completion() {{
            words=("${{COMP_WORDS[@]}}"); cword=$COMP_CWORD
            cur=${{COMP_WORDS[COMP_CWORD]}}; prev=${{COMP_WORDS[COMP_CWORD-1]}}; split=false
        }}
        _filedir() {{ COMPREPLY=(FILES); }}
        hwameictl() {{ printf 'NAME X\\nobj-%s-%s x\\n\\nOTHER Y\\nnot-this y\\n' "${{@: -2:1}}" "${{@: -1}}"; }}
        source {ROOT}/tools/hwameictl/hwameictl.bash-completion
        COMP_LINE='{line}'
        read -ra COMP_WORDS <<<"$COMP_LINE"
        [[ $COMP_LINE == *' ' ]] && COMP_WORDS+=('')
        COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
        _hwameictl
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return sorted(r.stdout.split())


def test_bash_completion_knows_the_verbs_their_options_and_the_objects():
    assert complete("hwameictl ") == ["migrate", "node", "status", "volume"]
    assert complete("hwameictl volume ") == ["list", "migrate", "show"]
    assert complete("hwameictl migrate ") == ["abort", "list", "watch"]
    assert complete("hwameictl node ") == ["status"]
    assert complete("hwameictl volume migrate --f") == ["--from"]
    assert "--wait" in complete("hwameictl volume migrate pvc-x -")
    assert "--wait" not in complete("hwameictl volume list -")
    assert "--socket" in complete("hwameictl status -") and "--kubeconfig" not in complete("hwameictl status -")
    assert complete("hwameictl --kubeconfig ") == ["FILES"]
    assert complete("hwameictl -k /x volume ") == ["list", "migrate", "show"]
    # Object names come from hwameictl's own tables (the first column of the first one).
    assert complete("hwameictl volume show ") == ["obj-volume-list"]
    assert complete("hwameictl migrate watch ") == ["obj-migrate-list"]
    assert complete("hwameictl node status ") == ["obj-node-status"]
    assert complete("hwameictl volume migrate pvc-x --from ") == ["obj-node-status"]
    assert complete("hwameictl volume show pvc-x ") == []
