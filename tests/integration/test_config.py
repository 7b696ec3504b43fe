# SPDX-License-Identifier: Apache-2.0
"""Configuration files as an operator meets them: each mistake gets a clear message and exit 1."""

import os
import pwd
import subprocess

import pytest

from conftest import HWAMEID, ROOT, run_hwameid

SHIPPED = ROOT / "conf" / "hwameid.conf"


def check(path):
    return run_hwameid("--config", str(path), "--check-config")


def test_shipped_configuration_is_valid():
    r = check(SHIPPED)
    assert r.returncode == 0, r.stderr
    assert "configuration is valid" in r.stdout


def test_dump_config_reads_back_identically(tmp_path):
    first = run_hwameid("--config", str(SHIPPED), "--dump-config")
    assert first.returncode == 0
    (tmp_path / "dumped.conf").write_text(first.stdout)
    second = run_hwameid("--config", str(tmp_path / "dumped.conf"), "--dump-config")
    assert second.returncode == 0
    assert first.stdout == second.stdout
    for section in ("[Node]", "[Kubernetes]", "[Control]", "[Log]"):
        assert section in first.stdout


def test_every_dumped_key_is_documented_in_the_shipped_file():
    dumped = run_hwameid("--config", str(SHIPPED), "--dump-config").stdout
    shipped = SHIPPED.read_text()
    for line in dumped.splitlines():
        if "=" in line:
            key = line.split("=", 1)[0]
            assert f"\n#{key}=" in shipped, f"{key} is not documented in conf/hwameid.conf"


@pytest.mark.parametrize("text,message", [
    ("[Node]\nNmae=x\n", ":2: Unknown key 'Nmae' in section [Node]."),
    ("[Log]\nLevel=loud\n", ":2: Level= expects one of debug, info, notice, warning, err, crit, got 'loud'."),
    ("[Node]\nName=Upper_Case\n", ":2: Name= must be a valid Kubernetes node name"),
    ("[Kubernetes]\nKubeconfig=relative/path\n", ":2: Kubeconfig= must be an absolute path"),
    ("[Nodes]\nName=x\n", ":1: Unknown section [Nodes]."),
    ("Name=x\n", ":1: Assignment to 'Name' outside of any section."),
])
def test_bad_value_or_key_names_file_line_and_key_and_exits_1(tmp_path, text, message):
    path = tmp_path / "bad.conf"
    path.write_text(text)
    for args in (["--check-config"], []):  # the same for a check and for a start
        r = run_hwameid("--config", str(path), *args)
        assert r.returncode == 1
        assert f"{path}{message}" in r.stderr
        assert f"Configuration '{path}' is invalid." in r.stderr


def test_missing_file_exits_1(tmp_path):
    r = check(tmp_path / "absent.conf")
    assert r.returncode == 1
    assert f"{tmp_path}/absent.conf: Failed to open configuration file: No such file or directory" in r.stderr


def test_directory_instead_of_file_exits_1(tmp_path):
    r = check(tmp_path)
    assert r.returncode == 1
    assert "Is a directory, expected a configuration file." in r.stderr


def test_unreadable_file_exits_1(tmp_path):
    path = tmp_path / "secret.conf"
    path.write_text("[Log]\nLevel=info\n")
    path.chmod(0o000)
    tmp_path.chmod(0o755)
    # root reads anything, so run the check as an unprivileged user.
    nobody = pwd.getpwnam("nobody")
    r = subprocess.run(
        [str(HWAMEID), "--config", str(path), "--check-config"],
        capture_output=True, text=True, timeout=30,
        user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
    ) if os.geteuid() == 0 else check(path)
    assert r.returncode == 1
    assert f"{path}: Failed to open configuration file: Permission denied" in r.stderr


def test_bad_dropin_is_named(tmp_path):
    main = tmp_path / "hwameid.conf"
    main.write_text("[Log]\nLevel=info\n")
    (tmp_path / "hwameid.conf.d").mkdir()
    (tmp_path / "hwameid.conf.d" / "10-ok.conf").write_text("[Log]\nLevel=debug\n")
    (tmp_path / "hwameid.conf.d" / "20-bad.conf").write_text("\n[Log]\nLevel=debug\nColour=yes\n")
    r = check(main)
    assert r.returncode == 1
    assert f"{tmp_path}/hwameid.conf.d/20-bad.conf:4: Unknown key 'Colour' in section [Log]." in r.stderr


def test_dropins_override_in_order(tmp_path):
    main = tmp_path / "hwameid.conf"
    main.write_text("[Node]\nName=from-main\n")
    (tmp_path / "hwameid.conf.d").mkdir()
    (tmp_path / "hwameid.conf.d" / "50-name.conf").write_text("[Node]\nName=from-dropin\n")
    r = run_hwameid("--config", str(main), "--dump-config")
    assert r.returncode == 0
    assert "Name=from-dropin\n" in r.stdout


def test_daemon_with_bad_config_exits_1_without_notifying_ready(make_daemon):
    d = make_daemon()
    d.config.write_text("[Log]\nLevel=loud\n")
    d.start(wait_ready=False)
    assert d.proc.wait(10) == 1
    assert not any("READY" in m for _, m in d.notify.messages)
    assert "Level= expects one of" in d.log()
