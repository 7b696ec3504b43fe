# SPDX-License-Identifier: Apache-2.0
"""make install, make deb and make rpm: the installed layout, exactly, in each of them; the
packages' maintainer scripts run through install, upgrade, removal and purge; the man pages and the
troubleshooting page against the programs and the unit they describe.

The packages are built once per run, from a copy of the tree (what git tracks, and new files it
does not ignore), so a build never depends on objects or packages lying around in the checkout.
"""

import gzip
import os
import re
import shutil
import stat
import subprocess
import time

import pytest

from conftest import BUILDDIR, ROOT

VERSION = (ROOT / "VERSION").read_text().strip()
CRDS = sorted(p.name for p in (ROOT / "conf" / "crds").glob("*.yaml"))
MAN_PAGES = sorted((ROOT / "packaging" / "man").iterdir())
TROUBLESHOOTING = ROOT / "packaging" / "doc" / "troubleshooting.md"
UNIT = ROOT / "units" / "hwameid.service"


def layout(unitdir, man_suffix="", doc_suffix=""):
    """The files make install puts in place, relative to the root, with their modes. The .deb
    compresses man pages and (dh_compress: over 4 KiB) documentation, the .rpm man pages only."""
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
        f"usr/share/man/man1/hwamei-nbd.1{man_suffix}": 0o644,
        f"usr/share/doc/hwameid/troubleshooting.md{doc_suffix}": 0o644,
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
    assert (dest / "usr/share/doc/hwameid/troubleshooting.md").read_bytes() == TROUBLESHOOTING.read_bytes()


def test_make_install_follows_the_directory_variables(tmp_path):
    dest = tmp_path / "root"
    run(["make", "-C", str(ROOT), "install", f"DESTDIR={dest}", f"BUILDDIR={BUILDDIR}",
         "unitdir=/usr/lib/systemd/system", "prefix=/opt/h", "sysconfdir=/opt/h/etc"])
    files, _ = walk(dest)
    assert "usr/lib/systemd/system/hwameid.service" in files
    assert "opt/h/sbin/hwameid" in files and "opt/h/etc/hwameid/hwameid.conf" in files
    assert "opt/h/lib/tmpfiles.d/hwameid.conf" in files
    assert "opt/h/share/doc/hwameid/troubleshooting.md" in files


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
    assert complete("hwameictl ") == ["migrate", "node", "status", "volume"]
    assert complete("hwameictl st") == ["status"]
    assert complete("hwameictl --j") == ["--json"]
    assert set(complete("hwameictl -")) == {"-s", "--socket", "-c", "--config", "-k", "--kubeconfig", "--context",
                                           "-j", "--json", "-h", "--help", "--version"}
    assert complete("hwameictl --socket ") == ["FILES"]
    assert complete("hwameictl -s /run/x ") == ["migrate", "node", "status", "volume"]
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
    expected = layout("lib/systemd/system", ".gz", ".gz")
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


# --- the .deb's maintainer scripts ---------------------------------------------------------------
#
# PID 1 here need not be systemd, and a test must not act on the machine's own systemd. Two tests
# therefore split the work: dpkg --root runs the whole lifecycle into a scratch root (the real
# deb-systemd-helper and systemd-tmpfiles follow DPKG_ROOT there), and the scripts' start, restart
# and stop decisions, which depend on systemd running, are run against recording stubs.

STUBS = ("systemctl", "deb-systemd-helper", "deb-systemd-invoke", "systemd-tmpfiles")


def stub_dir(base, names=STUBS):
    """Stub commands that append "NAME ARGS..." to base/calls and succeed; returns (dir, calls)."""
    stubs = base / "stubs"
    stubs.mkdir()
    calls = base / "calls"
    calls.write_text("")
    for name in names:
        (stubs / name).write_text(f'#!/bin/sh\necho "{name} $*" >>{calls}\nexit 0\n')
        (stubs / name).chmod(0o755)
    return stubs, calls


def in_private_run(cmd, systemd_running, env=None):
    """Runs cmd in a mount namespace of its own whose /run is an empty tmpfs, with
    /run/systemd/system present or not: what maintainer scripts test to tell whether systemd runs.
    Nothing of it reaches the machine's own /run."""
    setup = "mount -t tmpfs -o mode=0755 tmpfs /run"
    if systemd_running:
        setup += " && mkdir -p /run/systemd/system"
    return run(["unshare", "--mount", "--propagation", "private", "sh", "-c", setup + ' && exec "$@"', "sh",
                *map(str, cmd)], env=env)


def dpkg_root(root, *args):
    # Chrootless: the scripts run from the host with DPKG_ROOT set, as for a bootstrap.
    return in_private_run(["dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends",
                           "--force-confold", "--log=/dev/null", *args], systemd_running=False)


def dpkg_status(root):
    r = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f", "${Status}", "hwameid"],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else "not installed"


@pytest.mark.skipif(os.geteuid() != 0, reason="dpkg --root and unshare need root")
def test_deb_lifecycle_with_dpkg_root_enables_keeps_config_on_remove_and_purges_it(packages, tmp_path):
    deb, _, _ = packages
    root = tmp_path / "root"
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"):
        (root / d).mkdir(parents=True)
    for f in ("var/lib/dpkg/status", "var/lib/dpkg/available"):
        (root / f).write_text("")
    wants = root / "etc/systemd/system/multi-user.target.wants/hwameid.service"
    helper_state = root / "var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/hwameid.service"
    conf = root / "etc/hwameid/hwameid.conf"

    # Install: files, the conffile, tmpfiles' directories, the unit enabled (deb-systemd-helper).
    dpkg_root(root, "-i", deb)
    assert dpkg_status(root) == "install ok installed"
    assert (root / "usr/sbin/hwameid").exists()
    assert conf.read_bytes() == (ROOT / "conf/hwameid.conf").read_bytes()
    assert os.readlink(wants) == "/lib/systemd/system/hwameid.service"
    assert helper_state.exists()
    assert (root / "run/hwameid").is_dir()
    assert stat.S_IMODE((root / STATE_DIR).stat().st_mode) == 0o700

    # What an operator adds: a local change, a drop-in, credentials, and a file-backend volume.
    conf.write_text(conf.read_text() + "\n[Log]\nLevel=debug\n")
    (root / "etc/hwameid/hwameid.conf.d").mkdir()
    (root / "etc/hwameid/hwameid.conf.d/10-storage.conf").write_text("[Storage]\nBackend=lvm\n")
    (root / "etc/hwameid/kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    volume = root / STATE_DIR / "pools/LocalStorage_PoolHDD/pvc-1"
    volume.parent.mkdir(parents=True)
    volume.write_bytes(b"data")

    # Upgrade (the same package again): the local change stays, the unit stays enabled.
    dpkg_root(root, "-i", deb)
    assert "Level=debug" in conf.read_text()
    assert wants.is_symlink()

    # Remove: the programs and the unit go, the configuration stays.
    dpkg_root(root, "-r", "hwameid")
    assert dpkg_status(root) == "deinstall ok config-files"
    assert not (root / "usr/sbin/hwameid").exists() and not (root / "lib/systemd/system/hwameid.service").exists()
    assert "Level=debug" in conf.read_text()
    assert (root / "etc/hwameid/kubeconfig").exists() and (root / "etc/hwameid/hwameid.conf.d/10-storage.conf").exists()

    # Purge: /etc/hwameid goes whole, so does the unit's enablement; volume data stays.
    dpkg_root(root, "-P", "hwameid")
    assert dpkg_status(root) in ("not installed", "unknown ok not-installed")
    assert not (root / "etc/hwameid").exists()
    assert not wants.is_symlink() and not helper_state.exists()
    assert volume.read_bytes() == b"data"


@pytest.mark.skipif(os.geteuid() != 0, reason="unshare needs root")
def test_deb_scripts_start_on_install_restart_on_upgrade_stop_on_remove_as_recorded_by_stubs(packages, tmp_path):
    deb, _, _ = packages
    scripts = tmp_path / "DEBIAN"
    run(["dpkg-deb", "-e", str(deb), str(scripts)])
    stubs, calls = stub_dir(tmp_path)
    env = dict(os.environ, PATH=f"{stubs}:/usr/sbin:/usr/bin:/sbin:/bin")
    env.pop("DPKG_ROOT", None)

    def script(name, *args, systemd_running=True):
        calls.write_text("")
        in_private_run(["sh", "-e", scripts / name, *args], systemd_running, env=env)
        return calls.read_text().splitlines()

    # First installation: dpkg runs "postinst configure" with no previous version.
    log = script("postinst", "configure", "")
    assert "deb-systemd-helper enable hwameid.service" in log
    assert "systemd-tmpfiles --create hwameid.conf" in log
    assert "systemctl --system daemon-reload" in log
    assert "deb-systemd-invoke start hwameid.service" in log
    assert not any("restart" in c for c in log)
    # Upgrade: the old package's "prerm upgrade" leaves the service alone, the new postinst restarts it.
    assert not any("stop" in c for c in script("prerm", "upgrade", VERSION))
    log = script("postinst", "configure", "0.0.1")
    assert "deb-systemd-invoke restart hwameid.service" in log
    assert not any(" start " in f" {c} " for c in log)
    # Removal: stopped first, then systemd reloads its units; enablement is dropped only on purge.
    assert script("prerm", "remove") == ["deb-systemd-invoke stop hwameid.service"]
    assert script("postrm", "remove") == ["systemctl --system daemon-reload"]
    # Without systemd running nothing is started or stopped, but the unit is still enabled.
    log = script("postinst", "configure", "", systemd_running=False)
    assert "deb-systemd-helper enable hwameid.service" in log
    assert not any(c.startswith(("deb-systemd-invoke", "systemctl")) for c in log)
    assert script("prerm", "remove", systemd_running=False) == []


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
                    "usr/share/doc/hwameid": 0o755, STATE_DIR: 0o700}


def test_rpm_version_configuration_and_documentation(packages, tmp_path):
    _, rpm, _ = packages
    # One version: VERSION, the package, the spec's changelog and the programs in the package.
    assert rpm_query(rpm, "%{VERSION}") == VERSION
    assert run(["rpm", "-qp", "--changelog", str(rpm)]).stdout.splitlines()[0].endswith(f" - {VERSION}-1")
    extract = tmp_path / "root"
    extract.mkdir()
    run(["sh", "-c", f"rpm2cpio '{rpm}' | cpio -idm --quiet ./usr/sbin/hwameid"], cwd=extract)
    assert run([str(extract / "usr/sbin/hwameid"), "--version"]).stdout.split() == ["hwameid", VERSION]
    flags = dict(line.split(" ", 1) for line in
                 rpm_query(rpm, "[%{FILENAMES} %{FILEFLAGS:fflags}\n]").splitlines())
    assert flags["/etc/hwameid/hwameid.conf"] == "cn"  # %config(noreplace)
    assert flags["/usr/share/doc/hwameid/troubleshooting.md"] == "d"  # %doc
    assert "lvm2" in run(["rpm", "-qpR", str(rpm)]).stdout.split()


def test_rpm_scriptlets_preset_on_install_restart_on_upgrade_disable_on_erase_as_recorded_by_stubs(packages,
                                                                                                   tmp_path):
    # rpm passes the number of installed instances after the transaction: %post 1 = installation,
    # 2 = upgrade; %preun/%postun 0 = erase, 1 = upgrade. Each scriptlet runs with stubs for systemctl
    # and systemd-tmpfiles (the macros call them only when "command -v" finds them).
    _, rpm, _ = packages
    stubs, calls = stub_dir(tmp_path, ("systemctl", "systemd-tmpfiles"))
    env = dict(os.environ, PATH=f"{stubs}:/usr/sbin:/usr/bin:/sbin:/bin")

    def scriptlet(tag, arg):
        calls.write_text("")
        run(["sh", "-ec", rpm_query(rpm, f"%{{{tag}}}"), tag.lower(), str(arg)], env=env)
        return calls.read_text().splitlines()

    assert scriptlet("POSTIN", 1) == ["systemctl --no-reload preset hwameid.service",
                                      "systemd-tmpfiles --create hwameid.conf"]
    assert scriptlet("POSTIN", 2) == ["systemd-tmpfiles --create hwameid.conf"]
    assert scriptlet("PREUN", 1) == []
    assert scriptlet("POSTUN", 1) == ["systemctl try-restart hwameid.service"]
    assert scriptlet("PREUN", 0) == ["systemctl --no-reload disable --now hwameid.service"]
    assert scriptlet("POSTUN", 0) == []


# --- man pages and the troubleshooting page --------------------------------------------------------


@pytest.mark.parametrize("page", MAN_PAGES, ids=lambda p: p.name)
def test_every_man_page_renders_without_warnings(page):
    env = dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="80")
    r = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "SYNOPSIS" in r.stdout and "DESCRIPTION" in r.stdout


def help_options(*args):
    """The options a program's --help names: --long ones, and single-letter ones like -R."""
    out = run(list(map(str, args))).stdout
    return set(re.findall(r"--[a-z][a-z-]*[a-z]", out)) | set(re.findall(r"(?<![\w-])-[A-Za-z](?![\w-])", out))


@pytest.mark.parametrize("page, commands", [
    ("hwameid.8", [["hwameid", "--help"]]),
    ("hwameictl.8", [["hwameictl", "--help"]]),
    ("hwamei-nbd.1", [["hwamei-nbd", "--help"], ["hwamei-nbd", "serve", "--help"],
                      ["hwamei-nbd", "copy", "--help"]]),
])
def test_man_page_describes_every_option_the_program_offers(page, commands):
    text = (ROOT / "packaging" / "man" / page).read_text().replace("\\-", "-")
    for command in commands:
        for option in sorted(help_options(BUILDDIR / command[0], *command[1:])):
            assert option in text, f"{' '.join(command)} offers {option}, {page} does not describe it"


def test_systemd_analyze_security_items_and_exposure_are_the_documented_ones():
    # The offline mode reads the unit file alone: no systemd needed as PID 1.
    r = run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
            env=dict(os.environ, LC_ALL="C"))
    exposure = re.search(r"Overall exposure level for hwameid\.service: ([0-9.]+)", r.stdout).group(1)
    flagged = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("- ")]
    doc = TROUBLESHOOTING.read_text().replace("\\|", "|")
    assert f"Overall exposure level for hwameid.service: {exposure} " in doc
    missing = [item for item in flagged if f"`{item}`" not in doc]
    assert flagged and not missing, f"items of systemd-analyze security without a reason in the docs: {missing}"
    # And every privilege the unit keeps is in the tables: capabilities, families, writable paths.
    service = re.search(r"^\[Service\]$(.*?)^\[", UNIT.read_text(), re.M | re.S).group(1)
    kept = dict(re.findall(r"^(CapabilityBoundingSet|RestrictAddressFamilies|ReadWritePaths)=(.*)$", service, re.M))
    for word in " ".join(kept.values()).split():
        assert f"`{word.lstrip('-')}`" in doc, f"{word} is not in the troubleshooting page"


def test_troubleshooting_page_lists_every_catalog_event_and_journal_field():
    doc = TROUBLESHOOTING.read_text()
    ids = re.findall(r'"([0-9a-f]{32})"', (ROOT / "daemon/log/catalog-ids.h").read_text())
    assert ids and [i for i in ids if f"`{i}`" not in doc] == []
    catalog = re.findall(r"^-- ([0-9a-f]{32})$", (ROOT / "units/hwameid.catalog").read_text(), re.M)
    assert sorted(catalog) == sorted(ids)
    fields = set()
    for source in (ROOT / "daemon").rglob("*.c"):
        fields |= set(re.findall(r'LOG_CONTEXT_PUSH_FIELD\("([A-Z0-9_]+)"', source.read_text()))
    assert fields and [f for f in fields if f"`{f}`" not in doc] == []
