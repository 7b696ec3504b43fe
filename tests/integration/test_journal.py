# SPDX-License-Identifier: Apache-2.0
"""Logging to journald through its native protocol when stderr is the journal stream.

There is no journald on the build machines, so the test plays journald: in a private mount
namespace, a tmpfs over /run carries /run/systemd/journal/socket bound to the test's own datagram
socket, and JOURNAL_STREAM names the daemon's stderr as systemd would set it.
"""

import os
import select
import signal
import socket
import struct
import subprocess

from conftest import HWAMEID, Daemon


def parse_native(datagram):
    """Decodes one journal native-protocol datagram into a dict of fields."""
    fields, i = {}, 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            fields[k.decode()] = v.decode()
            i = nl + 1
        else:  # KEY\n<le64 length><data>\n
            (n,) = struct.unpack_from("<Q", datagram, nl + 1)
            start = nl + 9
            fields[line.decode()] = datagram[start:start + n].decode()
            i = start + n + 1
    return fields


def test_logs_reach_journald_with_structured_fields(tmp_path):
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(tmp_path / "journal.sock"))
    d = Daemon(tmp_path / "node")
    d.stderr_path.write_bytes(b"")
    st = os.stat(d.stderr_path)
    d.env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    script = (
        "set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/systemd/journal; "
        f"touch /run/systemd/journal/socket; mount --bind {tmp_path}/journal.sock /run/systemd/journal/socket; "
        f'exec {HWAMEID} --config {d.config}'
    )
    with open(d.stderr_path, "ab") as err:
        d.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                  env=d.env, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        d.stderr = open(d.stderr_path, "rb")
        try:
            d.notify.wait_key("READY")
            assert d.stop(signal.SIGTERM) == 0
        finally:
            d.cleanup()

    entries = []
    while select.select([journal], [], [], 0)[0]:
        entries.append(parse_native(journal.recv(65536)))
    journal.close()

    assert d.stderr_path.read_text() == "", "with a journal stream nothing goes to stderr"
    started = [e for e in entries if e.get("MESSAGE_ID") == "961fcae93a9d4a0eb691f6e094e4bed2"]
    assert len(started) == 1, entries
    e = started[0]
    assert e["MESSAGE"].startswith("hwameid ") and "starting on node 'test-node'" in e["MESSAGE"]
    assert e["PRIORITY"] == "6"
    assert e["SYSLOG_IDENTIFIER"] == "hwameid"
    assert e["CODE_FILE"].endswith("manager.c") and e["CODE_FUNC"] == "manager_start"
    assert int(e["CODE_LINE"]) > 0
    # An error carries its errno as a field.
    waiting = [e for e in entries if "Kubernetes API not usable yet" in e.get("MESSAGE", "")]
    assert waiting and waiting[0]["ERRNO"] == "2"
    stopped = [e for e in entries if e.get("MESSAGE_ID") == "2adaf8013aa64dc297946508dd4ac61a"]
    assert len(stopped) == 1
