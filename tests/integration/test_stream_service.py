# SPDX-License-Identifier: Apache-2.0
"""The daemon's block-stream endpoint: it listens with TLS-PSK when the cluster secret is in place,
says why not when it is missing or not root-only (and keeps running), and takes plain TCP only
with [Stream] Insecure=yes."""

import os
import subprocess

from test_nbd_tls import SECRET


def install_secret(d, mode=0o600):
    path = d.dir / "cluster-secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(SECRET)
    os.chmod(path, mode)


def nbdinfo_list(port):
    return subprocess.run(["nbdinfo", "--list", f"nbd://127.0.0.1:{port}"], capture_output=True, text=True,
                          timeout=30)


def test_with_the_secret_the_stream_listens_and_requires_tls(make_daemon):
    d = make_daemon()
    install_secret(d)
    d.start()
    st = d.status()["stream"]
    assert st["state"] == "listening" and st["tls"] is True and st["problem"] is None, st
    assert st["port"] > 0 and st["exposed"] == 0
    r = nbdinfo_list(st["port"])
    assert r.returncode != 0  # plain clients are turned away
    assert f"Block stream listening on 127.0.0.1:{st['port']} (TLS-PSK" in d.log()
    assert st["address"] == f"127.0.0.1:{st['port']}"
    human = d.ctl("status").stdout
    assert f"Stream: listening on 127.0.0.1:{st['port']}, TLS-PSK, 0 exports" in human, human
    assert d.stop() == 0


def test_without_the_secret_the_daemon_runs_and_says_why_volumes_cannot_move(make_daemon):
    d = make_daemon().start()
    st = d.status()["stream"]
    assert st["state"] == "disabled" and "missing" in st["problem"], st
    assert "Volumes cannot move to or from this node" in d.log()
    assert "Stream: disabled: the cluster secret" in d.ctl("status").stdout
    assert d.stop() == 0


def test_a_secret_readable_by_others_is_refused_with_the_fix(make_daemon):
    d = make_daemon()
    install_secret(d, 0o644)
    d.start()
    st = d.status()["stream"]
    assert st["state"] == "disabled" and "chmod 0600" in st["problem"], st
    assert "chmod 0600" in d.log()
    assert d.stop() == 0


def test_insecure_mode_takes_plain_clients_but_exposes_nothing_by_itself(make_daemon):
    d = make_daemon(extra_config="[Stream]\nInsecure=yes\n")
    d.start()
    st = d.status()["stream"]
    assert st["state"] == "listening" and st["tls"] is False, st
    r = nbdinfo_list(st["port"])
    assert r.returncode == 0, r.stderr
    assert "export=" not in r.stdout  # no migration, no export
    assert "for isolated test networks only" in d.log()
    assert d.stop() == 0
