"""Command line: serve, or mint a kubeconfig for another user.

  kube-standin --port PORT --kubeconfig-out FILE [--state-dir DIR] [--host 127.0.0.1]
               [--san IP_OR_NAME]... [--crds DIR] [--history-size N]
               [--bookmark-interval S] [--pod-deletion-delay S] [--kube-version vX.Y.Z]
  kube-standin mint-kubeconfig --state-dir DIR --user NAME [--group G]... --out FILE
               [--token | --token-file PATH] [--server URL]
"""

import argparse
import glob
import os
import shutil
import signal
import sys
import tempfile
import threading

from . import certs, yamlsubset
from .server import KUBE_VERSION, App, StandinServer, make_ssl_context


def default_crd_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    for d in (os.path.join(here, "..", "..", "..", "conf", "crds"), "/usr/share/hwameid/crds"):
        if os.path.isdir(d):
            return os.path.normpath(d)
    return None


def load_crds(d):
    crds = []
    for path in sorted(glob.glob(os.path.join(d, "*.yaml"))):
        with open(path) as f:
            for doc in yamlsubset.load_all(f.read()):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    crds.append(doc)
    return crds


def serve(args):
    tmp = None
    state_dir = args.state_dir
    if state_dir is None:
        tmp = tempfile.mkdtemp(prefix="kube-standin-")
        state_dir = tmp
    pki = os.path.join(state_dir, "pki")
    os.makedirs(pki, exist_ok=True)
    certs.ensure_ca(pki)
    server_crt, server_key = certs.ensure_server_cert(pki, args.san or [])
    admin_crt, admin_key = certs.ensure_admin(pki)
    app = App(os.path.join(state_dir, "store") if args.state_dir else None, pki,
              history_size=args.history_size, kube_version=args.kube_version,
              verbose=args.verbose)
    app.settings.bookmark_interval = args.bookmark_interval
    app.settings.pod_deletion_delay = args.pod_deletion_delay
    crd_dir = args.crds or default_crd_dir()
    if crd_dir and not args.no_crds:
        app.api.install_crds(load_crds(crd_dir))
    srv = StandinServer((args.host, args.port), make_ssl_context(pki, server_crt, server_key),
                        app)
    port = srv.server_address[1]
    app.server_address = "%s:%d" % (args.host, port)
    url = "https://%s:%d" % (args.host, port)
    with open(os.path.join(state_dir, "server-url"), "w") as f:
        f.write(url + "\n")
    if args.kubeconfig_out:
        certs.write_kubeconfig(args.kubeconfig_out, url, os.path.join(pki, "ca.crt"),
                               "kubernetes-admin", admin_crt, admin_key)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                         name="accept", daemon=True)
    t.start()
    print("kube-standin: serving on %s" % url, flush=True)
    while not stop.wait(1.0):
        pass
    # Shutdown: end watches (clean final chunk), stop accepting, close
    # connections, write the snapshot.
    app.store.stop()
    app.api.cancel_timers()
    srv.shutdown()
    srv.server_close()
    srv.close_connections()
    app.store.close()
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    print("kube-standin: stopped", flush=True)
    return 0


def mint(args):
    pki = os.path.join(args.state_dir, "pki")
    if not os.path.exists(os.path.join(pki, "ca.key")):
        sys.exit("kube-standin: no CA in %s (start the server with --state-dir first)" % pki)
    server = args.server
    if not server:
        with open(os.path.join(args.state_dir, "server-url")) as f:
            server = f.read().strip()
    ca = os.path.join(pki, "ca.crt")
    if args.token or args.token_file:
        token = certs.add_token(os.path.join(pki, "tokens.csv"), args.user, args.group or [])
        if args.token_file:
            with open(args.token_file, "w") as f:
                f.write(token + "\n")
            os.chmod(args.token_file, 0o600)
            certs.write_kubeconfig(args.out, server, ca, args.user,
                                   token_file=os.path.abspath(args.token_file))
        else:
            certs.write_kubeconfig(args.out, server, ca, args.user, token=token)
    else:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in args.user)
        crt, key = certs.issue_client_cert(pki, "user-" + safe, args.user, args.group or [])
        certs.write_kubeconfig(args.out, server, ca, args.user, crt, key)
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["mint-kubeconfig"]:
        p = argparse.ArgumentParser(prog="kube-standin mint-kubeconfig")
        p.add_argument("--state-dir", required=True)
        p.add_argument("--user", required=True)
        p.add_argument("--group", action="append")
        p.add_argument("--out", required=True)
        p.add_argument("--server")
        p.add_argument("--token", action="store_true", help="bearer token instead of a cert")
        p.add_argument("--token-file", help="write the token here and use tokenFile")
        return mint(p.parse_args(argv[1:]))
    p = argparse.ArgumentParser(prog="kube-standin",
                                description="A stand-in Kubernetes API server for tests.")
    p.add_argument("--port", type=int, required=True, help="0 picks a free port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--kubeconfig-out")
    p.add_argument("--state-dir", help="keep state (objects, RV, certificates) here")
    p.add_argument("--san", action="append", help="extra server certificate SAN (repeatable)")
    p.add_argument("--crds", help="directory of CRD manifests to install at start")
    p.add_argument("--no-crds", action="store_true", help="install no CRDs at start")
    p.add_argument("--history-size", type=int, default=10000,
                   help="watch history length in events")
    p.add_argument("--bookmark-interval", type=float, default=60.0)
    p.add_argument("--pod-deletion-delay", type=float, default=1.0,
                   help="seconds the simulated kubelet takes to finish a graceful pod "
                        "deletion (negative: never)")
    p.add_argument("--kube-version", default=KUBE_VERSION)
    p.add_argument("--verbose", action="store_true")
    return serve(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
