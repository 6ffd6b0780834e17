"""Throwaway PostgreSQL clusters for pg_warden's tests, benchmarks and demo.

This is the project's one harness for servers: every test, benchmark and the
demo start their clusters through it (Python code imports it; shell scripts
call `scripts/cluster`, a thin CLI over it). Clusters live in a temp dir owned
by the unprivileged `postgres` user (PostgreSQL refuses to run as root), use a
unix socket in that dir and a free port, and are always stopped: by
`Cluster.stop()`, by the context manager, or by the atexit/signal cleanup that
stops every cluster this process started.
"""
from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
RUN_AS = os.environ.get("PG_RUN_AS", "postgres")

_live: list["Cluster"] = []


def _as_server_user(cmd: list[str]) -> list[str]:
    """Prefix cmd so it runs as the unprivileged server user when we are root."""
    if os.geteuid() != 0:
        return cmd
    # setpriv keeps the open-files limit (runuser's PAM session lowers it).
    return ["setpriv", f"--reuid={RUN_AS}", f"--regid={RUN_AS}", "--init-groups"] + cmd


def server_user() -> tuple[int, int]:
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    pw = pwd.getpwnam(RUN_AS)
    return pw.pw_uid, pw.pw_gid


def make_server_dir(prefix: str = "pg_warden-", parent: str | None = None) -> str:
    """A temp dir the server user owns and everyone can traverse."""
    d = tempfile.mkdtemp(prefix=prefix, dir=parent or os.environ.get("PG_WARDEN_TMP", "/tmp"))
    uid, gid = server_user()
    os.chown(d, uid, gid)
    os.chmod(d, 0o755)
    return d


def free_port() -> int:
    """A TCP port nobody listens on now (clusters also listen on loopback)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if 20000 <= port <= 60000 and not os.path.exists(f"/tmp/.s.PGSQL.{port}"):
            return port
    raise RuntimeError("no free port")


def run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


class Cluster:
    """One throwaway server. `conf` is a dict of postgresql.conf settings."""

    def __init__(self, name: str = "primary", conf: dict | None = None,
                 preload: bool = True, base_dir: str | None = None,
                 port: int | None = None, tcp: bool = True):
        self.name = name
        self.own_base = base_dir is None
        self.base_dir = base_dir or make_server_dir()
        self.datadir = os.path.join(self.base_dir, name)
        self.sockdir = self.base_dir
        self.port = port or free_port()
        self.tcp = tcp
        self.conf = dict(conf or {})
        self.preload = preload
        self.running = False
        self.logfile = os.path.join(self.base_dir, f"{name}.log")

    # -- lifecycle -----------------------------------------------------------
    def base_conf(self) -> dict:
        c = {
            "port": str(self.port),
            "unix_socket_directories": f"'{self.sockdir}'",
            "listen_addresses": "'127.0.0.1'" if self.tcp else "''",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "log_line_prefix": "'%m [%p] %a '",
            "log_min_messages": "info",
            "lc_messages": "'C'",
            "timezone": "'UTC'",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "hot_standby": "on",
        }
        if self.preload:
            c["shared_preload_libraries"] = "'pg_warden'"
            c["warden.sample_interval"] = "'100ms'"
        return c

    def write_conf(self, extra: dict) -> None:
        # ALTER SYSTEM rewrites postgresql.auto.conf: keep ours in an include.
        conf = os.path.join(self.datadir, "pg_warden_test.conf")
        with open(conf, "w") as f:
            for k, v in extra.items():
                f.write(f"{k} = {v}\n")
        main = os.path.join(self.datadir, "postgresql.conf")
        with open(main) as f:
            text = f.read()
        if "include_if_exists = 'pg_warden_test.conf'" not in text:
            with open(main, "a") as f:
                f.write("\ninclude_if_exists = 'pg_warden_test.conf'\n")
        uid, gid = server_user()
        os.chown(conf, uid, gid)

    def init(self) -> "Cluster":
        run(_as_server_user([f"{PG_BIN}/initdb", "-D", self.datadir, "-A", "trust",
                             "--no-sync", "-E", "UTF8", "--locale=C", "-U", "postgres"]))
        self.write_conf({**self.base_conf(), **self.conf})
        return self

    def set_conf(self, **settings) -> None:
        """Change settings (takes effect at reload or restart)."""
        self.conf.update({k.replace("__", "."): v for k, v in settings.items()})
        self.write_conf({**self.base_conf(), **self.conf})

    def start(self, wait_for_worker: bool = True) -> "Cluster":
        res = run(_as_server_user([f"{PG_BIN}/pg_ctl", "-D", self.datadir, "-l", self.logfile,
                                   "-w", "-t", "60", "start"]), check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{self.name} did not start:\n{res.stdout}{res.stderr}\n{self.log_tail()}")
        self.running = True
        if self not in _live:
            _live.append(self)
        return self

    def stop(self, mode: str = "fast") -> None:
        if os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            run(_as_server_user([f"{PG_BIN}/pg_ctl", "-D", self.datadir, "-m", mode, "-w", "-t", "60",
                                 "stop"]), check=False)
        self.running = False
        proc = getattr(self, "wrapper_proc", None)  # see start_wrapped()
        if proc is not None:
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.wrapper_proc = None

    def start_wrapped(self, wrapper: list[str], timeout: float = 120.0) -> "Cluster":
        """Starts the postmaster under a wrapper command (e.g. valgrind) instead of
        pg_ctl; stop() stops it as usual and then waits for the wrapper to exit."""
        log = open(self.logfile, "a")
        os.chown(self.logfile, *server_user())
        self.wrapper_proc = subprocess.Popen(
            _as_server_user(wrapper + [f"{PG_BIN}/postgres", "-D", self.datadir]),
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.running = True
        if self not in _live:
            _live.append(self)
        pidfile = os.path.join(self.datadir, "postmaster.pid")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(pidfile) as f:
                    if "ready" in f.read():
                        return self
            except OSError:
                pass
            if self.wrapper_proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop("immediate")
        raise RuntimeError(f"{self.name} did not start under {wrapper[0]}:\n{self.log_tail()}")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def reload(self) -> None:
        run(_as_server_user([f"{PG_BIN}/pg_ctl", "-D", self.datadir, "reload"]))

    def promote(self) -> None:
        run(_as_server_user([f"{PG_BIN}/pg_ctl", "-D", self.datadir, "-w", "promote"]))

    def destroy(self) -> None:
        self.stop("immediate")
        if self in _live:
            _live.remove(self)
        if self.own_base and os.environ.get("PG_WARDEN_KEEP") != "1":
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    def make_standby(self, name: str = "standby", conf: dict | None = None) -> "Cluster":
        """A streaming standby of this (running) cluster, in the same base dir."""
        sb = Cluster(name=name, conf={**self.conf, **(conf or {})}, preload=self.preload,
                     base_dir=self.base_dir, tcp=self.tcp)
        run(_as_server_user([f"{PG_BIN}/pg_basebackup", "-D", sb.datadir, "-R", "-X", "stream",
                             "-h", self.sockdir, "-p", str(self.port), "-U", "postgres",
                             "--no-sync", "--checkpoint=fast"]))
        sb.write_conf({**sb.base_conf(), **sb.conf})
        return sb

    # -- access ----------------------------------------------------------------
    def dsn(self, dbname: str = "postgres", user: str = "postgres", **kw) -> str:
        parts = [f"host={self.sockdir}", f"port={self.port}", f"dbname={dbname}", f"user={user}"]
        parts += [f"{k}={v}" for k, v in kw.items()]
        return " ".join(parts)

    def psql(self, sql: str, dbname: str = "postgres", user: str = "postgres",
             check: bool = True, extra: list[str] | None = None) -> str:
        res = run([f"{PG_BIN}/psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                   "-h", self.sockdir, "-p", str(self.port), "-U", user, "-d", dbname,
                   *(extra or []), "-f", "-"], check=False, input=sql)
        if check and res.returncode != 0:
            raise RuntimeError(f"psql failed: {res.stderr}")
        return res.stdout.strip() if check else (res.stdout + res.stderr).strip()

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def log_text(self) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def env(self) -> dict:
        return {"PGHOST": self.sockdir, "PGPORT": str(self.port), "PGUSER": "postgres",
                "PGDATABASE": "postgres", "PGDATA": self.datadir}


def _cleanup(*_args) -> None:
    for c in list(_live):
        try:
            c.destroy()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_cleanup)


def _on_signal(signum, _frame):
    _cleanup()
    sys.exit(128 + signum)


for _sig in (signal.SIGTERM, signal.SIGHUP):
    try:
        signal.signal(_sig, _on_signal)
    except ValueError:  # not the main thread
        pass


def wait_until(fn, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll fn() until it returns a truthy value; raise after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class PgBouncer:
    """A throwaway pgbouncer in front of a Cluster (same temp dir, run as the
    server user). Admin console: dbname=pgbouncer, user postgres."""

    def __init__(self, cluster: Cluster, pool_mode: str = "session", pool_size: int = 2,
                 db_options: str = "", settings: str = ""):
        """db_options: more key=value for the `postgres` database entry (e.g.
        user=, min_pool_size=); settings: more [pgbouncer] lines."""
        self.cluster = cluster
        self.port = free_port()
        self.dir = cluster.base_dir
        self.ini = os.path.join(self.dir, f"pgbouncer-{self.port}.ini")
        self.logfile = os.path.join(self.dir, f"pgbouncer-{self.port}.log")
        self.userlist = os.path.join(self.dir, f"pgbouncer-{self.port}.users")
        with open(self.userlist, "w") as f:  # trust still needs the user listed
            f.write('"postgres" ""\n')
        with open(self.ini, "w") as f:
            f.write(f"""[databases]
postgres = host={cluster.sockdir} port={cluster.port} dbname=postgres {db_options}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir = {self.dir}
auth_type = trust
auth_file = {self.userlist}
admin_users = postgres
pool_mode = {pool_mode}
default_pool_size = {pool_size}
max_client_conn = 200
logfile = {self.logfile}
log_connections = 0
log_disconnections = 0
{settings}
""")
        uid, gid = server_user()
        os.chown(self.ini, uid, gid)
        os.chown(self.userlist, uid, gid)
        self.proc = None

    def start(self) -> "PgBouncer":
        self.proc = subprocess.Popen(_as_server_user(["pgbouncer", self.ini]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sock = os.path.join(self.dir, f".s.PGSQL.{self.port}")
        wait_until(lambda: os.path.exists(sock) or self.proc.poll() is not None, timeout=10,
                   what="pgbouncer socket")
        if self.proc.poll() is not None:
            raise RuntimeError(f"pgbouncer did not start (exit {self.proc.returncode})")

        # The socket file appears before pgbouncer accepts on it: wait until it
        # answers (or exits), so that a test's first connection is never refused.
        def accepting():
            if self.proc.poll() is not None:
                return True
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(sock)
                    return True
                except OSError:
                    return False

        wait_until(accepting, timeout=10, what="pgbouncer accepting")
        if self.proc.poll() is not None:
            raise RuntimeError(f"pgbouncer exited at start (exit {self.proc.returncode}): "
                               f"{open(self.logfile).read()[-2000:] if os.path.exists(self.logfile) else ''}")
        return self

    def dsn(self, dbname: str = "postgres", user: str = "postgres", **kw) -> str:
        parts = [f"host={self.dir}", f"port={self.port}", f"dbname={dbname}", f"user={user}"]
        parts += [f"{k}={v}" for k, v in kw.items()]
        return " ".join(parts)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def wait_replayed(primary: Cluster, standby: Cluster, timeout: float = 20.0) -> None:
    """Wait until the standby has replayed everything the primary wrote so far."""
    lsn = primary.psql("SELECT pg_current_wal_insert_lsn()")
    wait_until(lambda: standby.psql(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'") == "t",
               timeout=timeout, what="replay on the standby")
