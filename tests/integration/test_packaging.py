# SPDX-License-Identifier: Apache-2.0
"""make install, make deb and make rpm: the installed layout, exactly, in each of them.

The packages are built once per run, from a copy of the tree (what git tracks, and new files it
does not ignore), so a build never depends on objects or packages lying around in the checkout.
"""

import gzip
import os
import shutil
import stat
import subprocess
import time

import pytest

from conftest import BUILDDIR, ROOT

VERSION = (ROOT / "VERSION").read_text().strip()
CRDS = sorted(p.name for p in (ROOT / "conf" / "crds").glob("*.yaml"))


def layout(unitdir, man_suffix=""):
    """The files make install puts in place, relative to the root, with their modes."""
    files = {
        "usr/sbin/hwameid": 0o755,
        "usr/bin/hwameictl": 0o755,
        "usr/bin/hwamei-nbd": 0o755,
        f"{unitdir}/hwameid.service": 0o644,
        "usr/lib/tmpfiles.d/hwameid.conf": 0o644,
        "usr/lib/systemd/catalog/hwameid.catalog": 0o644,
        "usr/lib/modules-load.d/hwameid.conf": 0o644,
        "etc/hwameid/hwameid.conf": 0o644,
        "usr/share/bash-completion/completions/hwameictl": 0o644,
        f"usr/share/man/man8/hwameid.8{man_suffix}": 0o644,
        f"usr/share/man/man8/hwameictl.8{man_suffix}": 0o644,
        f"usr/share/man/man5/hwameid.conf.5{man_suffix}": 0o644,
    }
    files.update({f"usr/share/hwameid/crds/{name}": 0o644 for name in CRDS})
    return files


STATE_DIR = "var/lib/hwameid"


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def walk(root):
    """(files with modes, directories with modes) under root, relative paths."""
    files, dirs = {}, {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            dirs[os.path.relpath(p, root)] = stat.S_IMODE(os.lstat(p).st_mode)
        for f in filenames:
            p = os.path.join(dirpath, f)
            files[os.path.relpath(p, root)] = stat.S_IMODE(os.lstat(p).st_mode)
    return files, dirs


def parents(paths):
    out = set()
    for p in paths:
        while "/" in p:
            p = p.rsplit("/", 1)[0]
            out.add(p)
    return out


def test_make_install_puts_exactly_the_layout_in_place(tmp_path):
    dest = tmp_path / "root"
    run(["make", "-C", str(ROOT), "install", f"DESTDIR={dest}", f"BUILDDIR={BUILDDIR}"])
    files, dirs = walk(dest)
    assert files == layout("lib/systemd/system")
    assert dirs[STATE_DIR] == 0o700
    assert set(dirs) == parents(set(files) | {STATE_DIR}) | {STATE_DIR}
    assert (dest / "etc/hwameid/hwameid.conf").read_bytes() == (ROOT / "conf/hwameid.conf").read_bytes()


def test_make_install_follows_the_directory_variables(tmp_path):
    dest = tmp_path / "root"
    run(["make", "-C", str(ROOT), "install", f"DESTDIR={dest}", f"BUILDDIR={BUILDDIR}",
         "unitdir=/usr/lib/systemd/system", "prefix=/opt/h", "sysconfdir=/opt/h/etc"])
    files, _ = walk(dest)
    assert "usr/lib/systemd/system/hwameid.service" in files
    assert "opt/h/sbin/hwameid" in files and "opt/h/etc/hwameid/hwameid.conf" in files
    assert "opt/h/lib/tmpfiles.d/hwameid.conf" in files


def test_tmpfiles_and_modules_load_files_are_accepted(tmp_path):
    tmpfiles = (ROOT / "units/hwameid.tmpfiles").read_text()
    assert "d /run/hwameid 0755 root root -" in tmpfiles
    assert "d /var/lib/hwameid 0700 root root -" in tmpfiles
    # systemd-tmpfiles parses it and creates both directories, with their modes, under a root.
    run(["systemd-tmpfiles", "--root", str(tmp_path), "--create", str(ROOT / "units/hwameid.tmpfiles")])
    assert stat.S_IMODE((tmp_path / "var/lib/hwameid").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "run/hwameid").stat().st_mode) == 0o755
    modules = [l for l in (ROOT / "units/hwameid-modules.conf").read_text().splitlines()
               if l and not l.startswith("#")]
    assert modules == ["dm_mod"]


def complete(line):
    """The words bash completion offers for line (cursor at its end), with bash-completion's
    helpers stubbed so the test needs no bash-completion package."""
    script = f"""
        _init_completion() {{
            words=("${{COMP_WORDS[@]}}"); cword=$COMP_CWORD
            cur=${{COMP_WORDS[COMP_CWORD]}}; prev=${{COMP_WORDS[COMP_CWORD-1]}}; split=false
        }}
        _filedir() {{ COMPREPLY=(FILES); }}
        source {ROOT}/tools/hwameictl/hwameictl.bash-completion
        COMP_LINE='{line}'
        read -ra COMP_WORDS <<<"$COMP_LINE"
        [[ $COMP_LINE == *' ' ]] && COMP_WORDS+=('')
        COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
        _hwameictl
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    return sorted(run(["bash", "-c", script]).stdout.split())


def test_bash_completion_offers_the_verb_and_the_options():
    assert complete("hwameictl ") == ["status"]
    assert complete("hwameictl st") == ["status"]
    assert complete("hwameictl --j") == ["--json"]
    assert set(complete("hwameictl -")) == {"-s", "--socket", "-j", "--json", "-h", "--help", "--version"}
    assert complete("hwameictl --socket ") == ["FILES"]
    assert complete("hwameictl -s /run/x ") == ["status"]
    assert complete("hwameictl status ") == []


# --- the packages ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Builds both packages from a copy of the tree; returns (deb, rpm, make deb's output)."""
    base = tmp_path_factory.mktemp("packages")
    src = base / "src"
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT).stdout
    for rel in filter(None, listed.split("\0")):
        if (ROOT / rel).exists():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    run(["git", "init", "-q"], cwd=src)
    run(["git", "add", "-A"], cwd=src)
    out = base / "out"
    timings = {}
    outputs = {}
    for target in ("deb", "rpm"):
        start = time.monotonic()
        outputs[target] = run(["make", "-C", str(src), target, f"PKGDIR={out}"]).stdout
        timings[target] = time.monotonic() - start
    print(f"\npackaging: make deb {timings['deb']:.0f}s, make rpm {timings['rpm']:.0f}s")
    # Nothing but the packages' own output in the copy: no build tree, nothing left behind.
    status = run(["git", "status", "--porcelain", "--ignored"], cwd=src).stdout.splitlines()
    assert [l for l in status if not l.startswith("A  ")] == []
    debs = sorted(out.glob(f"hwameid_{VERSION}_*.deb"))
    rpms = sorted(out.glob(f"hwameid-{VERSION}-*.rpm"))
    assert len(debs) == 1 and len(rpms) == 1, sorted(os.listdir(out))
    return debs[0], rpms[0], outputs["deb"]


def deb_entries(deb):
    """{path: (type, mode)} from dpkg-deb -c."""
    entries = {}
    for line in run(["dpkg-deb", "-c", str(deb)]).stdout.splitlines():
        perms, _, _, _, _, path = line.split(None, 5)
        path = path.split(" -> ")[0].removeprefix("./").rstrip("/")
        if path:
            entries[path] = (perms[0], perms)
    return entries


def mode_of(perms):
    bits = 0
    for i, c in enumerate(perms[1:10]):
        if c != "-":
            bits |= 1 << (8 - i)
    return bits


def test_deb_contains_exactly_the_layout(packages):
    deb, _, _ = packages
    entries = deb_entries(deb)
    files = {p: mode_of(perms) for p, (t, perms) in entries.items() if t == "-"}
    dirs = {p: mode_of(perms) for p, (t, perms) in entries.items() if t == "d"}
    expected = layout("lib/systemd/system", ".gz")
    expected["usr/share/doc/hwameid/copyright"] = 0o644
    expected["usr/share/doc/hwameid/changelog.gz"] = 0o644
    assert files == expected
    assert set(dirs) == parents(set(files) | {STATE_DIR}) | {STATE_DIR}
    assert dirs.pop(STATE_DIR) == 0o700
    assert set(dirs.values()) == {0o755}
    assert all(t in "-d" for t, _ in entries.values())


def test_deb_marks_the_configuration_as_a_conffile_and_installs(packages, tmp_path):
    deb, _, _ = packages
    info = run(["dpkg-deb", "-I", str(deb), "conffiles"]).stdout
    assert info.split() == ["/etc/hwameid/hwameid.conf"]
    root = tmp_path / "root"
    run(["dpkg", "-x", str(deb), str(root)])
    assert (root / "etc/hwameid/hwameid.conf").read_bytes() == (ROOT / "conf/hwameid.conf").read_bytes()
    assert stat.S_IMODE((root / STATE_DIR).stat().st_mode) == 0o700
    # One version: VERSION, the package, its changelog and the programs.
    assert run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip() == VERSION
    changelog = gzip.decompress((root / "usr/share/doc/hwameid/changelog.gz").read_bytes()).decode()
    assert changelog.startswith(f"hwameid ({VERSION}) ")
    assert run([str(root / "usr/sbin/hwameid"), "--version"]).stdout.split() == ["hwameid", VERSION]
    assert run([str(root / "usr/bin/hwameictl"), "--version"]).stdout.split() == ["hwameictl", VERSION]


def test_deb_depends_on_its_libraries_and_lvm2(packages):
    deb, _, _ = packages
    depends = run(["dpkg-deb", "-f", str(deb), "Depends"]).stdout
    names = {d.strip().split()[0] for d in depends.split(",")}
    assert {"lvm2", "libsystemd0", "liblvm2cmd2.03", "libcurl4"} <= names


def test_deb_maintainer_scripts_enable_start_and_restart_the_unit(packages, tmp_path):
    deb, _, _ = packages
    run(["dpkg-deb", "-e", str(deb), str(tmp_path / "DEBIAN")])
    postinst = (tmp_path / "DEBIAN/postinst").read_text()
    assert "deb-systemd-helper enable 'hwameid.service'" in postinst
    assert "_dh_action=restart" in postinst and "deb-systemd-invoke $_dh_action 'hwameid.service'" in postinst
    assert "systemd-tmpfiles" in postinst and "--create hwameid.conf" in postinst
    assert "deb-systemd-helper purge 'hwameid.service'" in (tmp_path / "DEBIAN/postrm").read_text()


def test_lintian_reports_no_errors(packages):
    _, _, output = packages
    tags = [l for l in output.splitlines() if l[:3] in ("E: ", "W: ", "I: ")]
    print("\nlintian:\n" + "\n".join(tags))
    assert not [t for t in tags if t.startswith("E: ")]


def rpm_query(rpm, fmt):
    return run(["rpm", "-qp", "--qf", fmt, str(rpm)]).stdout


def test_rpm_contains_exactly_the_layout(packages):
    _, rpm, _ = packages
    listed = rpm_query(rpm, "[%{FILEMODES:perms} %{FILENAMES}\n]").splitlines()
    entries = {}
    for line in listed:
        perms, path = line.split(" ", 1)
        path = path.removeprefix("/")
        if not path.startswith("usr/lib/.build-id"):  # rpm's own links from build ids to binaries
            entries[path] = perms
    files = {p: mode_of(perms) for p, perms in entries.items() if perms[0] == "-"}
    dirs = {p: mode_of(perms) for p, perms in entries.items() if perms[0] == "d"}
    assert files == layout("usr/lib/systemd/system", ".gz")
    # The package owns its own directories, not the system's.
    assert dirs == {"etc/hwameid": 0o755, "usr/share/hwameid": 0o755, "usr/share/hwameid/crds": 0o755,
                    STATE_DIR: 0o700}


def test_rpm_version_configuration_and_scriptlets(packages):
    _, rpm, _ = packages
    assert rpm_query(rpm, "%{VERSION}") == VERSION
    flags = dict(line.split(" ", 1) for line in
                 rpm_query(rpm, "[%{FILENAMES} %{FILEFLAGS:fflags}\n]").splitlines())
    assert flags["/etc/hwameid/hwameid.conf"] == "cn"  # %config(noreplace)
    scripts = run(["rpm", "-qp", "--scripts", str(rpm)]).stdout
    assert "systemctl --no-reload preset hwameid.service" in scripts
    assert "systemctl --no-reload disable --now hwameid.service" in scripts
    assert "systemctl try-restart hwameid.service" in scripts
    assert "lvm2" in run(["rpm", "-qpR", str(rpm)]).stdout.split()
