# SPDX-License-Identifier: Apache-2.0
"""The daemon core under the notify protocol: readiness, reload, watchdog, stop, hwameictl."""

import json
import os
import signal
import time

from conftest import HWAMEICTL, run_hwameid


def test_ready_without_a_cluster_says_what_it_waits_for(daemon):
    assert daemon.ready["READY"] == "1"
    assert "Waiting for the Kubernetes API" in daemon.ready["STATUS"]
    assert str(daemon.kubeconfig) in daemon.ready["STATUS"]
    assert daemon.proc.poll() is None


def test_keeps_retrying_and_rereads_the_kubeconfig(daemon):
    assert "No such file or directory" in daemon.ready["STATUS"]
    daemon.kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    # The retry timer backs off from 1 s, so the new file's problem shows within a few seconds.
    status = daemon.notify.wait_for(lambda m: "current-context is not set" in m.get("STATUS", ""),
                                    timeout=15, what="STATUS about the new kubeconfig")
    assert str(daemon.kubeconfig) in status["STATUS"]
    assert "retrying in" in status["STATUS"]


def test_sighup_sends_reloading_then_ready(daemon):
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    daemon.kill(signal.SIGHUP)
    reloading = daemon.notify.wait_key("RELOADING")
    assert reloading["RELOADING"] == "1"
    # MONOTONIC_USEC tells systemd which reload this is; it must be the daemon's monotonic clock.
    assert before <= int(reloading["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    ready = daemon.notify.wait_key("READY")
    assert ready["READY"] == "1"
    st = json.loads(daemon.ctl("--json", "status", check=True).stdout)
    assert st["reloads"] == 1 and st["lastReloadError"] is None


def test_reload_applies_new_log_level(daemon):
    assert json.loads(daemon.ctl("--json", "status").stdout)["logLevel"] == "info"
    daemon.write_config("[Log]\nLevel=debug\n")
    daemon.kill(signal.SIGHUP)
    daemon.notify.wait_key("READY")
    assert json.loads(daemon.ctl("--json", "status").stdout)["logLevel"] == "debug"


def test_reload_with_a_broken_file_keeps_the_running_configuration(daemon):
    daemon.write_config("[Log]\nLevel=debug\nBogus=1\n")
    daemon.kill(signal.SIGHUP)
    daemon.notify.wait_key("RELOADING")
    ready = daemon.notify.wait_key("READY")
    assert "reload failed" in ready.get("STATUS", "") or "reload failed" in daemon.ctl("status").stdout
    st = json.loads(daemon.ctl("--json", "status").stdout)
    assert st["state"] == "running"
    assert st["logLevel"] == "info"  # the broken file's Level=debug was not applied
    assert st["lastReloadError"]
    assert f"{daemon.config}:9: Unknown key 'Bogus' in section [Log]." in daemon.log()
    # A fixed file then reloads cleanly and clears the error.
    daemon.write_config("[Log]\nLevel=debug\n")
    daemon.kill(signal.SIGHUP)
    daemon.notify.wait_key("RELOADING")
    daemon.notify.wait_key("READY")
    st = json.loads(daemon.ctl("--json", "status").stdout)
    assert st["lastReloadError"] is None and st["logLevel"] == "debug"


def test_reload_moves_the_control_socket(daemon):
    new = daemon.dir / "moved.sock"
    daemon.config.write_text(daemon.config.read_text().replace(str(daemon.socket), str(new)))
    daemon.kill(signal.SIGHUP)
    daemon.notify.wait_key("READY")
    assert not daemon.socket.exists()
    old, daemon.socket = daemon.socket, new
    assert daemon.ctl("status").returncode == 0
    daemon.socket = old
    assert daemon.ctl("status").returncode == 3


def test_watchdog_pings_arrive_within_watchdog_usec(make_daemon):
    watchdog_usec = 400_000
    d = make_daemon(env={"WATCHDOG_USEC": str(watchdog_usec)}).start()
    pings = []
    start = time.monotonic()
    while len(pings) < 6:
        d.notify.wait_key("WATCHDOG", timeout=5)
        pings.append(time.monotonic())
    gaps = [b - a for a, b in zip([start] + pings, pings)]
    # systemd kills a service whose pings are further apart than WATCHDOG_USEC.
    assert max(gaps) < watchdog_usec / 1e6, gaps
    assert d.stop() == 0


def test_sigterm_exits_zero_promptly_with_stopping(daemon):
    t0 = time.monotonic()
    assert daemon.stop(signal.SIGTERM, timeout=5) == 0
    assert time.monotonic() - t0 < 5
    stopping = daemon.notify.wait_key("STOPPING", timeout=1)
    assert stopping["STOPPING"] == "1"
    assert not daemon.socket.exists(), "control socket left behind"


def test_sigint_exits_zero(daemon):
    assert daemon.stop(signal.SIGINT) == 0


def test_hwameictl_status_for_people_and_scripts(daemon):
    human = daemon.ctl("status")
    assert human.returncode == 0, human.stderr
    assert f"(pid {daemon.proc.pid}) on node test-node" in human.stdout
    assert "State: running" in human.stdout
    assert "Waiting for the Kubernetes API" in human.stdout
    st = json.loads(daemon.ctl("--json", "status").stdout)
    assert st["pid"] == daemon.proc.pid
    assert st["node"] == "test-node"
    assert st["state"] == "running"
    assert st["status"] == daemon.ready["STATUS"] or "Waiting" in st["status"]
    assert st["configFile"] == str(daemon.config)
    assert st["cluster"]["kubeconfig"] == str(daemon.kubeconfig)


def test_hwameictl_says_when_the_daemon_is_not_running(tmp_path):
    import subprocess
    r = subprocess.run([str(HWAMEICTL), "--socket", str(tmp_path / "none.sock"), "status"],
                       capture_output=True, text=True)
    assert r.returncode == 3
    assert "hwameid is not running" in r.stderr


def test_hwameictl_usage_errors_exit_2(daemon):
    assert daemon.ctl().returncode == 2
    assert daemon.ctl("frobnicate").returncode == 2
    assert daemon.ctl("--bogus-option", "status").returncode == 2


def test_second_instance_on_the_same_socket_fails_cleanly(daemon, make_daemon):
    other = make_daemon("other")
    other.config.write_text(daemon.config.read_text())
    other.start(wait_ready=False)
    assert other.proc.wait(10) == 1
    assert "Another hwameid is answering on control socket" in other.log()
    assert daemon.ctl("status").returncode == 0  # the first one is untouched


def test_killed_daemon_leaves_a_stale_socket_that_the_next_start_replaces(make_daemon):
    d = make_daemon().start()
    d.stop(signal.SIGKILL)
    assert d.socket.exists()
    d.start()
    assert d.ctl("status").returncode == 0
    assert d.stop() == 0


def test_version_and_help():
    version = open(os.path.join(os.path.dirname(__file__), "../../VERSION")).read().strip()
    r = run_hwameid("--version")
    assert r.returncode == 0 and r.stdout == f"hwameid {version}\n"
    r = run_hwameid("--help")
    assert r.returncode == 0 and "--check-config" in r.stdout
    r = run_hwameid("--no-such-option")
    assert r.returncode == 1
    r = run_hwameid("extra-argument")
    assert r.returncode == 1 and "takes no arguments" in r.stderr
