"""Throwaway Patroni-managed clusters for pg_warden's tests and for trying
pg_warden on a fleet by hand.

A `PatroniCluster` is one etcd 3.4 (Patroni's store) and N Patroni 3.0
members, each running PostgreSQL 15 from $PG_BIN (else the private install
of $PG_WARDEN_PREFIX, else the system's) with pg_warden preloaded,
all on loopback with free ports, in one temp dir owned by the unprivileged
server user. It reuses the one server harness (tests/harness/pgcluster.py):
its server user, temp dirs, free ports and its atexit/signal cleanup, which
stops every Patroni cluster this process started too. Each member's
PostgreSQL is reached through a `pgcluster.Cluster` handle (dsn, psql, log),
never started or stopped by it: Patroni owns the servers.

Layout of the temp dir: `etcd/` and `etcd.log`; per member `NAME/` (data
directory), `NAME.yml` (Patroni's config), `NAME-patroni.log`, `NAME.log`
(PostgreSQL's log) and the member's unix socket `.s.PGSQL.PORT`.

    with PatroniCluster(members=3) as pc:
        pc.start()
        pc.psql(pc.leader(), "CREATE EXTENSION pg_warden")
        pc.switchover("pg2")
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import yaml

import pgcluster
from pgcluster import _as_server_user, free_port, make_server_dir, run, server_user, wait_until

PATRONI = os.environ.get("PATRONI", "patroni")
PATRONICTL = os.environ.get("PATRONICTL", "patronictl")
ETCD = os.environ.get("ETCD", "etcd")

# Roles Patroni creates at bootstrap and uses for its own connections.
SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
REWIND_USER = "rewind_user"


def pg_bin() -> str:
    """The PostgreSQL 15 that members run: $PG_BIN, else the private install
    under $PG_WARDEN_PREFIX (scripts/lib.sh) when there is one, else the
    system's."""
    if os.environ.get("PG_BIN"):
        return os.environ["PG_BIN"]
    prefix = os.environ.get("PG_WARDEN_PREFIX")
    if prefix and os.path.exists(f"{prefix}/usr/lib/postgresql/15/bin/postgres"):
        return f"{prefix}/usr/lib/postgresql/15/bin"
    return pgcluster.PG_BIN


def default_parent() -> str:
    """$PG_WARDEN_PATRONI_TMP, else /dev/shm where it is a writable dir, else
    the server harness's default ($PG_WARDEN_TMP or /tmp)."""
    parent = os.environ.get("PG_WARDEN_PATRONI_TMP")
    if parent:
        return parent
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return os.environ.get("PG_WARDEN_TMP", "/tmp")


def http_json(url: str, timeout: float = 2.0) -> tuple[int, object]:
    """(status, parsed JSON body) of a GET; Patroni answers 503 with a body too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body or b"null")
        except ValueError:
            return e.code, body.decode(errors="replace")


class Member:
    """One Patroni member: its ports, files, process, and a pgcluster.Cluster
    handle for its PostgreSQL (dsn, psql, log)."""

    def __init__(self, pc: "PatroniCluster", name: str):
        self.name = name
        self.pg_port = free_port()
        self.api_port = free_port()
        while self.api_port == self.pg_port:
            self.api_port = free_port()
        self.config = os.path.join(pc.base_dir, f"{name}.yml")
        self.patroni_log = os.path.join(pc.base_dir, f"{name}-patroni.log")
        self.pg = pgcluster.Cluster(name=name, base_dir=pc.base_dir, port=self.pg_port)
        self.datadir = self.pg.datadir
        self.proc: subprocess.Popen | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def postmaster_pid(self) -> int | None:
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class PatroniCluster:
    """etcd + N Patroni members on loopback. `parameters` go to
    bootstrap.dcs.postgresql.parameters (cluster-wide, what `patronictl
    edit-config` changes later), `local_parameters` to every member's own
    postgresql.parameters. pg_warden is preloaded unless preload=False."""

    def __init__(self, members: int = 3, scope: str = "warden", parameters: dict | None = None,
                 local_parameters: dict | None = None, preload: bool = True,
                 loop_wait: int = 1, ttl: int = 10, retry_timeout: int = 5,
                 primary_start_timeout: int = 0, base_dir: str | None = None):
        self.scope = scope
        self.own_base = base_dir is None
        # On tmpfs by default: removing a few members' freshly written data
        # directories from this disk takes seconds each.
        self.base_dir = base_dir or make_server_dir("pg_warden-patroni-", parent=default_parent())
        self.n_initial = members
        self.loop_wait = loop_wait
        self.ttl = ttl
        self.retry_timeout = retry_timeout
        # 0: a crashed leader's postmaster is not restarted in place while it
        # keeps the leader key (Patroni's default waits 300 s): a replica takes over.
        self.primary_start_timeout = primary_start_timeout
        self.parameters = {
            "max_connections": 100,
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "wal_level": "replica",
            "hot_standby": "on",
            "wal_log_hints": "on",
            # 1 MB WAL segments (initdb below): a few MB per member to write and remove
            "min_wal_size": "4MB",
            "max_wal_size": "64MB",
        }
        if preload:
            self.parameters["shared_preload_libraries"] = "pg_warden"
            self.parameters["warden.sample_interval"] = "100ms"
        self.parameters.update(parameters or {})
        self.local_parameters = dict(local_parameters or {})
        self.bin_dir = pg_bin()
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.etcd_dir = os.path.join(self.base_dir, "etcd")
        self.etcd_log = os.path.join(self.base_dir, "etcd.log")
        self.etcd_proc: subprocess.Popen | None = None
        self.members_by_name: dict[str, Member] = {}
        self._next = 1
        self.start_seconds: float | None = None

    # -- configuration -------------------------------------------------------
    def _member_config(self, m: Member) -> dict:
        trust = [
            "local all all trust",
            "local replication all trust",
            "host all all 127.0.0.1/32 trust",
            "host replication all 127.0.0.1/32 trust",
        ]
        return {
            "scope": self.scope,
            "name": m.name,
            "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s"},
            "restapi": {"listen": f"127.0.0.1:{m.api_port}", "connect_address": f"127.0.0.1:{m.api_port}"},
            "etcd3": {"hosts": f"127.0.0.1:{self.etcd_port}"},
            "bootstrap": {
                "dcs": {
                    "ttl": self.ttl,
                    "loop_wait": self.loop_wait,
                    "retry_timeout": self.retry_timeout,
                    "maximum_lag_on_failover": 16 * 1024 * 1024,
                    "primary_start_timeout": self.primary_start_timeout,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "parameters": self.parameters,
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, {"wal-segsize": "1"}, "no-sync"],
                "pg_hba": trust,
            },
            "postgresql": {
                "listen": f"127.0.0.1:{m.pg_port}",
                "connect_address": f"127.0.0.1:{m.pg_port}",
                "data_dir": m.datadir,
                "bin_dir": self.bin_dir,
                "pgpass": os.path.join(self.base_dir, f"{m.name}.pgpass"),
                "use_unix_socket": True,
                "authentication": {
                    "superuser": {"username": SUPERUSER},
                    "replication": {"username": REPLICATION_USER},
                    "rewind": {"username": REWIND_USER},
                },
                "pg_hba": trust,
                "basebackup": [{"checkpoint": "fast"}],
                "parameters": {
                    "unix_socket_directories": self.base_dir,
                    "fsync": "off",
                    "synchronous_commit": "off",
                    "logging_collector": "on",
                    "log_directory": self.base_dir,
                    "log_filename": f"{m.name}.log",
                    "log_file_mode": "0644",
                    "log_line_prefix": "%m [%p] %a ",
                    "lc_messages": "C",
                    "timezone": "UTC",
                    **self.local_parameters,
                },
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }

    def _write_config(self, m: Member) -> None:
        with open(m.config, "w") as f:
            yaml.safe_dump(self._member_config(m), f, sort_keys=False)
        os.chown(m.config, *server_user())

    # -- etcd ----------------------------------------------------------------
    def _start_etcd(self) -> None:
        os.makedirs(self.etcd_dir, mode=0o700, exist_ok=True)
        os.chown(self.etcd_dir, *server_user())
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        log = open(self.etcd_log, "a")
        self.etcd_proc = subprocess.Popen(
            _as_server_user([ETCD, "--name", "e0", "--data-dir", self.etcd_dir,
                             "--listen-client-urls", client, "--advertise-client-urls", client,
                             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                             "--initial-cluster", f"e0={peer}", "--initial-cluster-state", "new",
                             "--unsafe-no-fsync", "--log-level", "warn"]),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

        def healthy():
            if self.etcd_proc.poll() is not None:
                raise RuntimeError(f"etcd exited ({self.etcd_proc.returncode}):\n{self._tail(self.etcd_log)}")
            try:
                return http_json(f"{client}/health")[1] == {"health": "true"}
            except (OSError, ValueError):
                return False

        wait_until(healthy, timeout=20, interval=0.05, what="etcd healthy")

    # -- members -------------------------------------------------------------
    def _new_member(self, name: str | None = None) -> Member:
        if name is None:
            while f"pg{self._next}" in self.members_by_name:
                self._next += 1
            name = f"pg{self._next}"
        if name in self.members_by_name:
            raise ValueError(f"member {name} exists")
        m = Member(self, name)
        self.members_by_name[name] = m
        self._write_config(m)
        return m

    def _start_patroni(self, m: Member) -> None:
        log = open(m.patroni_log, "a")
        m.proc = subprocess.Popen(_as_server_user([PATRONI, m.config]), stdout=log,
                                  stderr=subprocess.STDOUT, cwd=self.base_dir, start_new_session=True)
        log.close()

    def start(self, timeout: float = 90.0) -> "PatroniCluster":
        """etcd, then every member at once (one of them takes the initialize
        key and runs initdb, the others wait for it and clone it); returns
        once all run, the replicas stream and the leader accepts writes."""
        t0 = time.monotonic()
        if self not in pgcluster._live:
            pgcluster._live.append(self)
        self._start_etcd()
        for _ in range(self.n_initial):
            self._start_patroni(self._new_member())
        self.wait_ready(timeout=max(5.0, timeout - (time.monotonic() - t0)))
        self.start_seconds = time.monotonic() - t0
        return self

    def add_member(self, name: str | None = None, timeout: float = 60.0) -> str:
        """A new member, made by Patroni from the leader (pg_basebackup);
        returns its name once it streams."""
        m = self._new_member(name)
        self._start_patroni(m)
        self.wait_ready(timeout=timeout)
        return m.name

    def remove_member(self, name: str, timeout: float = 30.0) -> None:
        """Decommissions a member: stops its Patroni (and so its PostgreSQL),
        deletes its member key from etcd (as `etcdctl del` would; left alone,
        the key would live until its ttl), removes its data directory, and
        waits until GET /cluster no longer lists it."""
        m = self.members_by_name[name]
        self._stop_member(m)
        del self.members_by_name[name]
        self.etcd_delete(f"/service/{self.scope}/members/{name}")
        wait_until(lambda: name not in [x["name"] for x in self.members()], timeout=timeout,
                   interval=0.1, what=f"{name} gone from GET /cluster")
        shutil.rmtree(m.datadir, ignore_errors=True)

    def etcd_delete(self, key: str) -> int:
        """Deletes a key through etcd's v3 JSON gateway; returns how many went."""
        body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.etcd_port}/v3/kv/deleterange", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(json.loads(r.read()).get("deleted", 0))

    # -- state ---------------------------------------------------------------
    def cluster_json(self) -> dict:
        """GET /cluster from the first member whose REST API answers."""
        last = None
        for m in self.members_by_name.values():
            if not m.alive():
                continue
            try:
                code, body = http_json(f"{m.api}/cluster")
                if code == 200 and isinstance(body, dict):
                    return body
                last = (code, body)
            except OSError as e:
                last = e
        raise RuntimeError(f"no member's REST API answers GET /cluster (last: {last!r})")

    def members(self) -> list[dict]:
        try:
            return self.cluster_json().get("members", [])
        except RuntimeError:
            return []

    def leader(self) -> str | None:
        for x in self.members():
            if x.get("role") == "leader" and x.get("state") == "running":
                return x["name"]
        return None

    def replicas(self) -> list[str]:
        return [x["name"] for x in self.members() if x.get("role") == "replica"]

    def member(self, name: str) -> Member:
        return self.members_by_name[name]

    def wait_leader(self, timeout: float = 60.0, not_: str | None = None) -> str:
        """The leader's name once it accepts writes (and is not `not_`)."""
        def ready():
            name = self.leader()
            if name is None or name == not_ or name not in self.members_by_name:
                return None
            res = self.psql(name, "SELECT NOT pg_is_in_recovery() AND txid_current() > 0", check=False)
            return name if res == "t" else None

        return wait_until(ready, timeout=timeout, interval=0.1, what="a leader that accepts writes")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Every started member running with its role, and every replica
        streaming from the leader."""
        live = {n for n, m in self.members_by_name.items() if m.alive()}

        def ready():
            for m in self.members_by_name.values():
                if m.proc is not None and m.proc.poll() is not None:
                    raise RuntimeError(f"patroni {m.name} exited ({m.proc.returncode}):\n"
                                       f"{self._tail(m.patroni_log)}")
            ms = {x["name"]: x for x in self.members()}
            if set(ms) != live:
                return False
            leaders = [x for x in ms.values() if x.get("role") == "leader"]
            if len(leaders) != 1 or leaders[0].get("state") != "running":
                return False
            if any(x.get("role") != "replica" or x.get("state") not in ("running", "streaming")
                   for x in ms.values() if x is not leaders[0]):
                return False
            leader = leaders[0]["name"]
            streaming = self.psql(leader, "SELECT count(*) FROM pg_stat_replication "
                                          "WHERE state = 'streaming'", check=False)
            return streaming == str(len(live) - 1) and \
                self.psql(leader, "SELECT txid_current() > 0", check=False) == "t"

        wait_until(ready, timeout=timeout, interval=0.1, what="all members running and streaming")

    # -- access --------------------------------------------------------------
    def dsn(self, member: str, dbname: str = "postgres", user: str = "postgres", **kw) -> str:
        return self.members_by_name[member].pg.dsn(dbname=dbname, user=user, **kw)

    def psql(self, member: str, sql: str, dbname: str = "postgres", user: str = "postgres",
             check: bool = True) -> str:
        return self.members_by_name[member].pg.psql(sql, dbname=dbname, user=user, check=check)

    def wait_replayed(self, timeout: float = 20.0) -> None:
        """Every running replica has replayed what the leader wrote so far."""
        leader = self.leader()
        lsn = self.psql(leader, "SELECT pg_current_wal_insert_lsn()")
        for name in self.replicas():
            wait_until(lambda: self.psql(name, f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'",
                                         check=False) == "t",
                       timeout=timeout, what=f"replay on {name}")

    def patronictl(self, *args: str, check: bool = True) -> str:
        """patronictl with the configuration of a live member (any member's
        file names the same etcd and scope)."""
        m = next(m for m in self.members_by_name.values() if m.alive())
        res = run([PATRONICTL, "-c", m.config, *args], check=False)
        if check and res.returncode != 0:
            raise RuntimeError(f"patronictl {' '.join(args)} failed:\n{res.stdout}{res.stderr}")
        return res.stdout

    # -- moving the leader ---------------------------------------------------
    def switchover(self, candidate: str, timeout: float = 60.0) -> float:
        """`patronictl switchover` to candidate; returns the seconds until the
        candidate is the leader and accepts writes."""
        old = self.leader()
        t0 = time.monotonic()
        self.patronictl("switchover", "--force", "--leader", old, "--candidate", candidate, self.scope)
        wait_until(lambda: self.wait_leader(timeout=timeout) == candidate, timeout=timeout,
                   what=f"{candidate} leading")
        return time.monotonic() - t0

    def failover(self, timeout: float = 60.0) -> tuple[str, str, float]:
        """Kills the leader's postmaster with SIGKILL; returns (old leader, new
        leader, seconds until the new one accepts writes)."""
        old = self.leader()
        pid = self.members_by_name[old].postmaster_pid()
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        new = self.wait_leader(timeout=timeout, not_=old)
        return old, new, time.monotonic() - t0

    # -- lifecycle -----------------------------------------------------------
    def _stop_member(self, m: Member, timeout: float = 60.0) -> None:
        if m.alive():
            m.proc.send_signal(signal.SIGTERM)
            try:
                m.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait()
        # Patroni stops its PostgreSQL; if Patroni itself was killed, do it here.
        if m.postmaster_pid() is not None and os.path.exists(m.datadir):
            run(_as_server_user([f"{self.bin_dir}/pg_ctl", "-D", m.datadir, "-m", "immediate",
                                 "-w", "-t", "30", "stop"]), check=False)

    def stop(self) -> None:
        """SIGTERM to every Patroni at once, the leader's last (each stops
        its PostgreSQL and its loop, so no replica takes over meanwhile),
        then etcd. Members whose Patroni is gone get their postmaster
        stopped (immediate)."""
        leader = None
        try:
            if self.etcd_proc is not None and self.etcd_proc.poll() is None:
                leader = self.leader()
        except Exception:  # noqa: BLE001 - stopping anyway
            pass
        order = sorted(self.members_by_name.values(), key=lambda m: m.name == leader)
        for m in order:
            if m.alive():
                m.proc.send_signal(signal.SIGTERM)
        for m in order:
            self._stop_member(m)
        if self.etcd_proc is not None and self.etcd_proc.poll() is None:
            # Nothing is left to serve: a graceful stop waits for idle client
            # streams, and the store is thrown away.
            self.etcd_proc.terminate()
            try:
                self.etcd_proc.wait(2)
            except subprocess.TimeoutExpired:
                self.etcd_proc.kill()
                self.etcd_proc.wait()

    def destroy(self) -> None:
        """stop(), then remove the temp dir (unless PG_WARDEN_KEEP=1)."""
        try:
            self.stop()
        finally:
            if self in pgcluster._live:
                pgcluster._live.remove(self)
            if self.own_base and os.environ.get("PG_WARDEN_KEEP") != "1":
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> "PatroniCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    # -- diagnostics ---------------------------------------------------------
    @staticmethod
    def _tail(path: str, n: int = 30) -> str:
        try:
            with open(path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def logs(self, n: int = 30) -> str:
        """The tails of every log, for a failing test's message."""
        parts = [f"--- etcd\n{self._tail(self.etcd_log, n)}"]
        for m in self.members_by_name.values():
            parts.append(f"--- {m.name} patroni\n{self._tail(m.patroni_log, n)}")
            parts.append(f"--- {m.name} postgresql\n{m.pg.log_tail(n)}")
        return "\n".join(parts)
