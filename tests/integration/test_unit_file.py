# SPDX-License-Identifier: Apache-2.0
"""units/hwameid.service: systemd accepts it, and it asks for what the daemon implements."""

import configparser
import os
import re
import subprocess

import pytest

from conftest import BUILDDIR, ROOT

UNIT = ROOT / "units" / "hwameid.service"


def unit_directives():
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str
    parser.read_string(UNIT.read_text())
    return parser


def test_systemd_analyze_verify_passes(tmp_path):
    # Verify the unit as shipped, with ExecStart= pointing at the binary just built (the packaged
    # path does not exist on a build machine) and its Documentation= man pages found in the tree.
    unit = tmp_path / "hwameid.service"
    unit.write_text(UNIT.read_text().replace("/usr/sbin/hwameid", str(BUILDDIR / "hwameid")))
    for page in (ROOT / "packaging" / "man").iterdir():
        section = tmp_path / "man" / f"man{page.suffix[1:]}"
        section.mkdir(parents=True, exist_ok=True)
        (section / page.name).write_bytes(page.read_bytes())
    env = dict(os.environ, MANPATH=str(tmp_path / "man"))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr


def test_lifecycle_matches_the_notify_protocol_the_daemon_speaks():
    s = unit_directives()["Service"]
    assert s["Type"] == "notify"  # systemd 252 has no notify-reload; SIGHUP + RELOADING=1 instead
    assert s["NotifyAccess"] == "main"
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert s["WatchdogSec"] == "30s"
    assert s["Restart"] == "on-failure"
    assert s["ExecStartPre"] == "/usr/sbin/hwameid --check-config"
    assert s["RuntimeDirectory"] == "hwameid"  # holds the control socket


def test_hardening_of_the_style_guide_is_present():
    s = unit_directives()["Service"]
    expected = {
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
        "ProtectHostname": "yes", "NoNewPrivileges": "yes", "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes", "RestrictRealtime": "yes",
        "RestrictNamespaces": "yes", "SystemCallArchitectures": "native",
        "SystemCallFilter": "@system-service", "SystemCallErrorNumber": "EPERM",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    }
    for key, value in expected.items():
        assert s.get(key) == value, key
    # ProtectClock= would turn device access into an allow-list and hide the pool disks.
    assert "ProtectClock" not in s and "PrivateDevices" not in s


@pytest.mark.parametrize("page", ["hwameid.8", "hwameictl.8", "hwameid.conf.5"])
def test_man_page_renders_without_warnings(page):
    env = dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="80")
    r = subprocess.run(["man", "--warnings", "-l", str(ROOT / "packaging" / "man" / page)], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "SYNOPSIS" in r.stdout


def test_every_configuration_key_is_in_the_man_page():
    dumped = subprocess.run([str(BUILDDIR / "hwameid"), "--config", str(ROOT / "conf" / "hwameid.conf"),
                             "--dump-config"], capture_output=True, text=True, check=True).stdout
    page = (ROOT / "packaging" / "man" / "hwameid.conf.5").read_text()
    for line in dumped.splitlines():
        if "=" in line:
            key = line.split("=", 1)[0]
            assert re.search(rf"\b{key} ?=", page), f"{key} is not described in hwameid.conf(5)"
