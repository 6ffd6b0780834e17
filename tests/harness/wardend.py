"""wardend for tests: one daemon process with its own configuration, state
file and log (the binaries from $WARDEN_BIN_DIR, which scripts/test sets after
building them), and what a test asks a server about wardend's changes."""
import json
import os
import re
import signal
import socket
import subprocess
import urllib.error
import urllib.request

from pgcluster import wait_until

BIN_DIR = os.environ.get("WARDEN_BIN_DIR", "")
WARDEND = os.path.join(BIN_DIR, "wardend")
WARDENCTL = os.path.join(BIN_DIR, "wardenctl")


def http_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Wardend:
    """One wardend process with its own configuration, state file and log."""

    def __init__(self, tmp_path, servers, body="", daemon_extra="", name="wardend"):
        self.dir = tmp_path
        self.port = http_port()
        self.state_file = str(tmp_path / f"{name}.state")
        self.config = str(tmp_path / f"{name}.toml")
        self.logfile = str(tmp_path / f"{name}.log")
        text = (f'[daemon]\ninterval = "200ms"\nstate_file = "{self.state_file}"\n'
                f'http = "127.0.0.1:{self.port}"\ncooldown = "1s"\nreconnect_min = "50ms"\n'
                f'reconnect_max = "500ms"\nmin_idle_age = "0s"\n{daemon_extra}\n')
        for sname, cluster in servers:
            text += f'[[server]]\nname = "{sname}"\ndsn = "{cluster.dsn()}"\n'
        text += body
        self.write(text)
        self.proc = None

    def write(self, text):
        with open(self.config, "w") as f:
            f.write(text)

    def start(self, *args):
        self.log_fh = open(self.logfile, "a")
        self.proc = subprocess.Popen([WARDEND, "--config", self.config, *args],
                                     stdout=self.log_fh, stderr=subprocess.STDOUT)
        return self

    def run_once(self, *args, timeout=30):
        return subprocess.run([WARDEND, "--config", self.config, "--once", *args],
                              capture_output=True, text=True, timeout=timeout)

    def log(self):
        with open(self.logfile, errors="replace") as f:
            return f.read()

    def wait_log(self, pattern, timeout=15):
        return wait_until(lambda: re.search(pattern, self.log()), timeout=timeout,
                          what=f"log line /{pattern}/ in wardend's log:\n{self.log()[-3000:]}")

    def get(self, path, token=None, timeout=5):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except (urllib.error.URLError, ConnectionError, OSError):
            return None, ""

    def health(self):
        code, body = self.get("/health")
        return code, (json.loads(body) if code else None)

    def wait_http(self, timeout=15):
        return wait_until(lambda: self.get("/health")[0] is not None, timeout=timeout,
                          what="wardend's HTTP endpoint")

    def stop(self, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        return rc

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def journal(self):
        try:
            with open(self.state_file) as f:
                return json.load(f)["entries"]
        except FileNotFoundError:
            return []


def run_as_postgres(argv):
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *argv]


class WardendAsPostgres(Wardend):
    """wardend run as the `postgres` OS user, so that directory permissions
    bind it (they do not bind root)."""

    def start(self, *args):
        self.log_fh = open(self.logfile, "a")
        self.proc = subprocess.Popen(run_as_postgres([WARDEND, "--config", self.config, *args]),
                                     stdout=self.log_fh, stderr=subprocess.STDOUT)
        return self


def connlimit(cluster, role):
    return int(cluster.psql(f"SELECT rolconnlimit FROM pg_roles WHERE rolname = '{role}'"))


def has_override_api(cluster):
    return cluster.psql("SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = pronamespace "
                        "WHERE nspname = 'warden' AND proname = 'close_admission'") != "0"


def admission_cap(cluster, role):
    """The cap wardend has put on the role: the extension's override where it
    exists, else the role's CONNECTION LIMIT (None when neither is set)."""
    if has_override_api(cluster):
        v = cluster.psql(f"SELECT max_connections FROM warden.admission_overrides WHERE role = '{role}'")
        return int(v) if v else None
    v = connlimit(cluster, role)
    return None if v == -1 else v


def restored(cluster, role, original):
    """No cap of wardend's left on the role, and its CONNECTION LIMIT is the original."""
    if has_override_api(cluster) and cluster.psql(
            f"SELECT count(*) FROM warden.admission_overrides WHERE role = '{role}'") != "0":
        return False
    return connlimit(cluster, role) == original
