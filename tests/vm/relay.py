#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""relay.py HOST PORT [LOG]: copies between stdin/stdout and a TCP connection to HOST:PORT.

qemu's slirp runs one per guest connection for `guestfwd=tcp:IP:PORT-cmd:WRAPPER` (vmlib writes the
wrapper script: the cmd: string must hold no spaces or commas). stdin, stdout and stderr are all
the guest's connection, so this never prints anything: failures end the connection, and are
appended to the file LOG when it is given (vmlib passes one in the guest's workdir, which also
lets it find leftover relays by their command line).

A relay also ends when qemu does, even if the server keeps its side open (a watch): glib
double-forks it, so qemu is not its parent; but qemu's end of the socketpair closing shows as
POLLHUP on stdin, which a mere half-close (the guest's FIN) never does.
"""

import os
import select
import selectors
import socket
import sys
import time


def note(msg):
    path = sys.argv[3] if len(sys.argv) > 3 else None
    if path:
        try:
            with open(path, "a") as f:
                f.write("%s relay %s: %s\n" % (time.strftime("%H:%M:%S"), " ".join(sys.argv[1:]), msg))
        except OSError:
            pass


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    try:
        up = socket.create_connection((host, port), timeout=10)
    except OSError as e:
        note("connect: %s" % e)
        return 1
    up.settimeout(None)
    guest = socket.socket(fileno=os.dup(0))
    guest.setblocking(True)
    sel = selectors.DefaultSelector()
    sel.register(guest, selectors.EVENT_READ, up)
    sel.register(up, selectors.EVENT_READ, guest)
    open_ends = 2
    hup = select.poll()
    hup.register(guest.fileno(), select.POLLHUP)
    try:
        while open_ends:
            if guest not in [k.fileobj for k in sel.get_map().values()] and hup.poll(0):
                break  # qemu's end is closed, not just half-closed
            for key, _ in sel.select(timeout=1.0):
                src, dst = key.fileobj, key.data
                try:
                    data = src.recv(1 << 16)
                except ConnectionError:
                    data = b""
                if data:
                    dst.sendall(data)
                    continue
                # EOF from one side: pass it on (half-close), stop reading that side.
                sel.unregister(src)
                open_ends -= 1
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
    except OSError as e:
        note("copy: %s" % e)
    finally:
        up.close()
        guest.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
