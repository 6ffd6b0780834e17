"""The Debian packages on this machine: build them (scripts/deb, lintian
without errors), install both, use the installed files (a throwaway cluster
of the system's PostgreSQL 15 creates the extension; wardend --once from
/usr/sbin, as the package's system user), then remove them (nothing left but
the daemon's configuration) and purge them.

This installs into the system PostgreSQL: scripts/test runs it as its own
suite after every other one, and afterwards installs the working tree's build
again. Needs root. WARDEN_DEB_DIR=DIR uses packages built before instead of
building them.
"""
import os
import pathlib
import pwd
import re
import shutil
import subprocess
import tempfile

import pytest

import pgcluster

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SYSTEM_BIN = "/usr/lib/postgresql/15/bin"
EXT = "postgresql-15-pg-warden"
DAEMON = "pg-warden-daemon"
UNIT = "/lib/systemd/system/wardend.service"
CONF = "/etc/pg_warden/wardend.toml"
with open(os.path.join(ROOT, "extension", "pg_warden.control")) as _f:
    NEWEST = re.search(r"^default_version\s*=\s*'([^']+)'", _f.read(), re.M).group(1)

if os.geteuid() != 0:
    pytest.skip("installs Debian packages: needs root", allow_module_level=True)


def sh(*cmd, check=True, **kw):
    res = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    return res


def apt(*args):
    # apt-get waits for the dpkg lock (other jobs on the machine may hold it).
    return sh("apt-get", "-o", "DPkg::Lock::Timeout=300", "-y", "-q", "--no-install-recommends",
              *args, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def status(pkg):
    res = sh("dpkg-query", "-W", "-f=${Status}", pkg, check=False)
    return res.stdout.strip() if res.returncode == 0 else "not-installed"


def listed(pkg):
    return sh("dpkg", "-L", pkg, check=False).stdout.split()


@pytest.fixture(scope="module")
def debs():
    out = os.environ.get("WARDEN_DEB_DIR")
    out = os.path.abspath(out) if out else None
    if not out:
        out = os.path.join(ROOT, "build-deb")
        sh(os.path.join(ROOT, "scripts", "deb"), out)
    found = {}
    for f in os.listdir(out):
        m = re.fullmatch(r"(.+?)_([^_]+)_([^_]+)\.deb", f)
        if m and m.group(1) in (EXT, DAEMON):
            found[m.group(1)] = os.path.join(out, f)
    assert set(found) == {EXT, DAEMON}, f"packages in {out}: {os.listdir(out)}"
    lint = os.path.join(out, "lintian.txt")
    if os.path.exists(lint):
        with open(lint) as f:
            errors = [ln for ln in f if ln.startswith("E: ")]
        assert not errors, "lintian errors:\n" + "".join(errors)
    return found


@pytest.fixture(scope="module")
def installed(debs):
    for pkg in (EXT, DAEMON):
        assert "not-installed" in status(pkg) or "config-files" in status(pkg), \
            f"{pkg} is already installed: {status(pkg)}"
    try:
        apt("install", debs[EXT], debs[DAEMON])
        yield debs
    finally:
        for pkg in (DAEMON, EXT):
            if "not-installed" not in status(pkg):
                sh("dpkg", "--purge", pkg, check=False)


def test_packages_install_use_remove_purge(installed, monkeypatch):
    # -- installed: the files where Debian puts them ---------------------------------
    for pkg in (EXT, DAEMON):
        assert status(pkg) == "install ok installed", status(pkg)
    ext_files = listed(EXT)
    share = "/usr/share/postgresql/15/extension"
    scripts = [f"pg_warden--{NEWEST}.sql"] + sorted(os.listdir(os.path.join(ROOT, "extension",
                                                                            "versions")))
    for f in ["/usr/lib/postgresql/15/lib/pg_warden.so", f"{share}/pg_warden.control"] + \
            [f"{share}/{s}" for s in scripts]:
        assert f in ext_files, f
    daemon_files = listed(DAEMON)
    for f in ("/usr/sbin/wardend", "/usr/sbin/wardenctl", CONF, UNIT,
              "/usr/share/man/man8/wardend.8.gz", "/usr/share/man/man8/wardenctl.8.gz",
              "/usr/share/man/man5/wardend.toml.5.gz"):
        assert f in daemon_files, f
    conffiles = sh("dpkg-query", "-W", "-f=${Conffiles}", DAEMON).stdout
    assert CONF in conffiles, conffiles
    # The system user and its state directory.
    user = pwd.getpwnam("_pg_warden")
    assert user.pw_uid < 1000 and user.pw_dir == "/var/lib/pg_warden"
    st = os.stat("/var/lib/pg_warden")
    assert st.st_uid == user.pw_uid and st.st_mode & 0o777 == 0o700

    # -- the unit: verify is clean, the security score at least "OK" -------------------
    res = sh("systemd-analyze", "verify", UNIT, check=False)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    res = sh("systemd-analyze", "security", "--offline=true", UNIT, check=False)
    m = re.search(r"Overall exposure level for wardend\.service: ([\d.]+) (\w+)", res.stdout)
    assert m, res.stdout[-500:]
    assert float(m.group(1)) < 4.0 and m.group(2) in ("PERFECT", "SAFE", "OK"), m.group(0)

    # -- the default configuration is valid as shipped -------------------------------
    sh("/usr/sbin/wardenctl", "check-config", CONF)

    # -- the installed extension in a throwaway cluster of the system's PostgreSQL ----
    monkeypatch.setattr(pgcluster, "PG_BIN", SYSTEM_BIN)
    with pgcluster.Cluster(name="pkg").init() as c:
        c.start()
        c.psql("CREATE EXTENSION pg_warden")
        assert c.psql("SELECT extversion FROM pg_extension WHERE extname = 'pg_warden'") == NEWEST
        assert c.psql("SELECT count(*) FROM warden.server_usage") == "1"

        # wardend --once from the installed path, as the package's system user,
        # against that cluster (trust authentication).
        # (pytest's tmp_path is under a 0700 directory of root: not reachable.)
        work = pathlib.Path(tempfile.mkdtemp(prefix="pg_warden-pkg-"))
        os.chmod(work, 0o755)
        state_dir = work / "state"
        state_dir.mkdir()
        os.chown(state_dir, user.pw_uid, user.pw_gid)
        conf = work / "wardend.toml"
        conf.write_text(f'[daemon]\ninterval = "200ms"\nstate_file = "{state_dir}/wardend.state"\n'
                        f'http = ""\n[[server]]\nname = "pkg"\n'
                        f'dsn = "{c.dsn(application_name="wardend")}"\n')
        res = sh("setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
                 "/usr/sbin/wardend", "--config", str(conf), "--once", check=False)
        shutil.rmtree(work)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "--once: done" in res.stdout + res.stderr

    # -- dpkg -r: nothing left but the configuration ---------------------------------
    sh("dpkg", "-r", DAEMON, EXT)
    assert "not-installed" in status(EXT), status(EXT)
    assert listed(EXT) == []
    assert status(DAEMON) == "deinstall ok config-files", status(DAEMON)
    left = [f for f in listed(DAEMON) if f not in ("/etc", "/etc/pg_warden")]
    assert left == [CONF], left
    assert os.path.isfile(CONF)
    for f in ext_files + daemon_files:
        if f != CONF and not os.path.isdir(f) and f.startswith(("/usr/", "/lib/")):
            assert not os.path.exists(f), f"{f} is still there after dpkg -r"

    # -- dpkg --purge: the configuration and the state directory go too --------------
    sh("dpkg", "--purge", DAEMON, EXT)
    assert "not-installed" in status(DAEMON), status(DAEMON)
    assert not os.path.exists(CONF)
    assert not os.path.exists("/etc/pg_warden")
    assert not os.path.exists("/var/lib/pg_warden")
