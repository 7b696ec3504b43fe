"""Certificates (made with the openssl command) and kubeconfig files.

Layout of the PKI directory:
  ca.crt ca.key               the cluster CA (EC P-256, 10 years)
  server.crt server.key       the API server's certificate; SANs in server.sans
  admin.crt admin.key         CN=kubernetes-admin, O=system:masters
  tokens.csv                  bearer tokens: token,user,uid,"group1,group2"
"""

import base64
import os
import secrets
import subprocess
import tempfile


def _openssl(*args, cwd=None):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _subject(user, groups):
    esc = [("O", g) for g in groups] + [("CN", user)]
    return "".join("/%s=%s" % (k, v.replace("/", "\\/")) for k, v in esc)


def ensure_ca(d):
    crt, key = os.path.join(d, "ca.crt"), os.path.join(d, "ca.key")
    if not (os.path.exists(crt) and os.path.exists(key)):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", key, "-out", crt, "-days", "3650",
                 "-subj", "/CN=kube-standin-ca",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
        os.chmod(key, 0o600)
    return crt, key


def _issue(d, name, subject, ext_lines):
    crt, key = os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")
    with tempfile.TemporaryDirectory() as tmp:
        csr = os.path.join(tmp, "req.csr")
        ext = os.path.join(tmp, "ext.cnf")
        with open(ext, "w") as f:
            f.write("\n".join(ext_lines) + "\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", key, "-out", csr, "-subj", subject)
        _openssl("x509", "-req", "-in", csr, "-CA", os.path.join(d, "ca.crt"),
                 "-CAkey", os.path.join(d, "ca.key"), "-set_serial",
                 str(secrets.randbits(63)), "-days", "3650", "-out", crt, "-extfile", ext)
    os.chmod(key, 0o600)
    return crt, key


def ensure_server_cert(d, sans):
    """Server certificate for 127.0.0.1, localhost and sans; reissued when sans change."""
    want = ["IP:127.0.0.1", "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default"]
    for s in sans:
        entry = ("IP:" + s) if all(c.isdigit() or c in ".:" for c in s) else ("DNS:" + s)
        if entry not in want:
            want.append(entry)
    sans_file = os.path.join(d, "server.sans")
    have = open(sans_file).read().split() if os.path.exists(sans_file) else None
    crt = os.path.join(d, "server.crt")
    if have != want or not os.path.exists(crt):
        _issue(d, "server", "/CN=kube-apiserver",
               ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                "extendedKeyUsage=serverAuth", "subjectAltName=" + ",".join(want)])
        with open(sans_file, "w") as f:
            f.write("\n".join(want) + "\n")
    return crt, os.path.join(d, "server.key")


def issue_client_cert(d, name, user, groups):
    return _issue(d, name, _subject(user, groups),
                  ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature",
                   "extendedKeyUsage=clientAuth"])


def ensure_admin(d):
    crt = os.path.join(d, "admin.crt")
    if not os.path.exists(crt):
        issue_client_cert(d, "admin", "kubernetes-admin", ["system:masters"])
    return crt, os.path.join(d, "admin.key")


# -------------------------------------------------------------- bearer tokens

def load_tokens(path):
    """{token: (user, [groups])} from a kube-apiserver style static token file."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = _csv_split(line)
            if len(parts) < 2:
                continue
            groups = parts[3].split(",") if len(parts) > 3 and parts[3] else []
            out[parts[0]] = (parts[1], groups)
    return out


def _csv_split(line):
    import csv
    return next(csv.reader([line]))


def add_token(path, user, groups=(), token=None):
    token = token or secrets.token_hex(16)
    with open(path, "a") as f:
        f.write('%s,%s,%s,"%s"\n' % (token, user, user, ",".join(groups)))
    os.chmod(path, 0o600)
    return token


# ----------------------------------------------------------------- kubeconfig

def _b64(path):
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode()


def write_kubeconfig(out, server, ca_crt, user_name, cert=None, key=None, token=None,
                     token_file=None, cluster="kube-standin"):
    """Write an admin-style kubeconfig (block YAML) atomically."""
    lines = [
        "apiVersion: v1",
        "kind: Config",
        "clusters:",
        "- name: %s" % cluster,
        "  cluster:",
        "    server: %s" % server,
        "    certificate-authority-data: %s" % _b64(ca_crt),
        "users:",
        "- name: %s" % _yaml_str(user_name),
        "  user:",
    ]
    if cert:
        lines += ["    client-certificate-data: %s" % _b64(cert),
                  "    client-key-data: %s" % _b64(key)]
    if token:
        lines.append("    token: %s" % token)
    if token_file:
        lines.append("    tokenFile: %s" % token_file)
    lines += [
        "contexts:",
        "- name: %s" % cluster,
        "  context:",
        "    cluster: %s" % cluster,
        "    user: %s" % _yaml_str(user_name),
        "current-context: %s" % cluster,
        "preferences: {}",
    ]
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o600)
    os.rename(tmp, out)


def _yaml_str(s):
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')
