"""Client pools behind an idle policy (docs/clients.md): real client libraries
against a real pg_warden server. Each case is one pool of 10 under its own
application_name; the policy `cl-%` terminates idle connections after 2 s and
keeps the 3 most recently used of each group (keep_min 3). A case warms its
pool to 10 connections, waits until the policy is done with it, then runs 50
queries one after the other and counts the errors the application sees.

All cases of one run start together, so the suite pays for the 2 s policy once
per run, not per case; the JVM starts once for its cases."""
import json
import os
import shutil
import subprocess
import threading
import time

import psycopg2
import psycopg2.pool
import pytest

import pgcluster
from clients import config_applied

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENTS = os.path.join(HERE, "..", "clients")
JARS = ["HikariCP.jar", "postgresql.jar", "slf4j-api.jar", "slf4j-nop.jar"]
KEEP_MIN = 3


@pytest.fixture(scope="module")
def srv():
    c = pgcluster.Cluster().init()
    c.start()
    c.psql("CREATE EXTENSION pg_warden")
    c.psql("SELECT warden.add_idle_policy('clients', '2 s', application => 'cl-%', "
           f"keep_min => {KEEP_MIN})")
    config_applied(c)
    yield c
    c.destroy()


def connections(srv, app):
    return int(srv.psql(f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"))


def terminated(srv, app):
    return int(srv.psql("SELECT count(*) FROM warden.terminations "
                        f"WHERE application_name = '{app}' AND NOT dry_run"))


def settle(srv, apps, timeout=8.0):
    """Waits until the policy has cut every app down to keep_min (or below)."""
    pgcluster.wait_until(lambda: all(connections(srv, a) <= KEEP_MIN for a in apps),
                         timeout=timeout, what=f"the policy done with {apps}")
    time.sleep(0.2)


def fifty(run_one):
    """50 queries as an application under load runs them: 5 rounds of 10 at once
    (so every pooled connection is handed out, not only the most recent)."""
    counts = {"ok": 0, "errors": 0}
    lock = threading.Lock()

    def worker():
        try:
            run_one()
            key = "ok"
        except Exception:  # noqa: BLE001 - what the application would see
            key = "errors"
        with lock:
            counts[key] += 1

    for _ in range(5):
        threads = [threading.Thread(target=worker) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return counts["ok"], counts["errors"]


# -- Python libraries -------------------------------------------------------

class Psycopg2Pool:
    def __init__(self, dsn, minconn):
        self.pool = psycopg2.pool.ThreadedConnectionPool(minconn, 10, dsn)

    def warm(self):
        held = [self.pool.getconn() for _ in range(10)]
        for c in held:
            c.cursor().execute("SELECT 1")
            c.commit()
        for c in held:
            self.pool.putconn(c)

    def one(self):
        c = self.pool.getconn()
        broken = False
        try:
            with c.cursor() as cur:
                cur.execute("SELECT 1")
            c.commit()
        except psycopg2.Error:
            broken = True
            raise
        finally:
            self.pool.putconn(c, close=broken)

    def close(self):
        self.pool.closeall()


class Psycopg3Pool:
    def __init__(self, dsn, min_size):
        from psycopg_pool import ConnectionPool
        self.pool = ConnectionPool(dsn, min_size=min_size, max_size=10)
        self.pool.wait()

    def warm(self):
        held = [self.pool.getconn() for _ in range(10)]
        for c in held:
            c.execute("SELECT 1")
            c.commit()
        for c in held:
            self.pool.putconn(c)

    def one(self):
        with self.pool.connection() as c:
            c.execute("SELECT 1")

    def close(self):
        self.pool.close()


class SqlAlchemyPool:
    def __init__(self, dsn, pre_ping):
        import sqlalchemy
        self.sa = sqlalchemy
        self.engine = sqlalchemy.create_engine(
            "postgresql+psycopg2://", creator=lambda: psycopg2.connect(dsn),
            poolclass=sqlalchemy.pool.QueuePool, pool_size=10, max_overflow=0,
            pool_pre_ping=pre_ping)

    def warm(self):
        held = [self.engine.connect() for _ in range(10)]
        for c in held:
            c.execute(self.sa.text("SELECT 1"))
        for c in held:
            c.close()

    def one(self):
        with self.engine.connect() as c:
            c.execute(self.sa.text("SELECT 1"))

    def close(self):
        self.engine.dispose()


PY_CASES = {
    # case: (application, factory, what the application sees)
    "psycopg2 ThreadedConnectionPool(10, 10)": ("cl-pg2-default", lambda d: Psycopg2Pool(d, 10)),
    "psycopg2 ThreadedConnectionPool(3, 10)": ("cl-pg2-min3", lambda d: Psycopg2Pool(d, KEEP_MIN)),
    "psycopg_pool ConnectionPool(min_size=10)": ("cl-pg3-default", lambda d: Psycopg3Pool(d, 10)),
    "psycopg_pool ConnectionPool(min_size=3)": ("cl-pg3-min3", lambda d: Psycopg3Pool(d, KEEP_MIN)),
    "SQLAlchemy QueuePool(10)": ("cl-sa-default", lambda d: SqlAlchemyPool(d, False)),
    "SQLAlchemy QueuePool(10, pool_pre_ping)": ("cl-sa-preping", lambda d: SqlAlchemyPool(d, True)),
}


def test_python_pools(srv):
    pools = {}
    for case, (app, make) in PY_CASES.items():
        pools[case] = make(srv.dsn(application_name=app))
        pools[case].warm()
    settle(srv, [app for app, _ in PY_CASES.values()])
    results = {}
    for case, (app, _) in PY_CASES.items():
        ok, errors = fifty(pools[case].one)
        results[case] = {"terminated": terminated(srv, app), "errors": errors}
        pools[case].close()
    print(json.dumps(results, indent=1))
    r = results
    # Library defaults: every pooled connection the policy cut comes back as an error ...
    assert r["psycopg2 ThreadedConnectionPool(10, 10)"]["terminated"] == 7
    assert r["psycopg2 ThreadedConnectionPool(10, 10)"]["errors"] >= 1
    # psycopg_pool 3.1 (Debian 12) keeps connections above min_size until
    # max_idle (10 min) and checks none at getconn: min_size does not help.
    for case in ("psycopg_pool ConnectionPool(min_size=10)", "psycopg_pool ConnectionPool(min_size=3)"):
        assert r[case]["terminated"] == 7 and r[case]["errors"] >= 1
    # SQLAlchemy invalidates the whole pool at the first disconnect: one error.
    assert r["SQLAlchemy QueuePool(10)"]["terminated"] >= 7
    assert r["SQLAlchemy QueuePool(10)"]["errors"] >= 1
    # Recommended: none.
    assert r["SQLAlchemy QueuePool(10, pool_pre_ping)"]["terminated"] >= 7
    assert r["SQLAlchemy QueuePool(10, pool_pre_ping)"]["errors"] == 0
    # psycopg2's pool keeps only minconn idle: minconn <= keep_min, nothing to cut.
    assert r["psycopg2 ThreadedConnectionPool(3, 10)"] == {"terminated": 0, "errors": 0}


# -- node-postgres ------------------------------------------------------------

@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed (scripts/install-deps)")
def test_node_postgres_pool(srv):
    node_dir = os.path.join(CLIENTS, "node")
    if not os.path.isdir(os.path.join(node_dir, "node_modules", "pg")):
        pytest.skip("node-postgres is not installed (scripts/install-deps runs npm ci)")
    procs = {}
    for mode in ("nolistener", "listener"):
        procs[mode] = subprocess.Popen(
            ["node", "pool.js", "127.0.0.1", str(srv.port), f"cl-node-{mode}", mode],
            cwd=node_dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
    for p in procs.values():
        assert p.stdout.readline().strip() == "warm"
    settle(srv, ["cl-node-listener"])
    # Without an 'error' listener the first termination kills the process.
    assert procs["nolistener"].wait(timeout=10) != 0
    assert "terminating connection" in procs["nolistener"].stderr.read()
    assert terminated(srv, "cl-node-nolistener") >= 1
    p = procs["listener"]
    p.stdin.write("go\n")
    p.stdin.flush()
    out = json.loads(p.stdout.readline())
    assert p.wait(timeout=10) == 0
    print(out)
    assert terminated(srv, "cl-node-listener") == 7
    assert out == {"ok": 50, "errors": 0, "idle_errors": 7}


# -- pgjdbc + HikariCP (one JVM for all its cases) -------------------------------

def test_pgjdbc_hikaricp(srv):
    jars = [os.path.join("/usr/share/java", j) for j in JARS]
    if not shutil.which("java") or not all(os.path.exists(j) for j in jars):
        pytest.skip("java or the pgjdbc/HikariCP/slf4j jars are missing (scripts/install-deps)")
    p = subprocess.Popen(["java", "-cp", ":".join(jars), "HikariIdle.java", "127.0.0.1",
                          str(srv.port), "defaults=cl-hikari"],
                         cwd=os.path.join(CLIENTS, "java"), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "warm"
    settle(srv, ["cl-hikari"], timeout=15)
    p.stdin.write("go\n")
    p.stdin.flush()
    case, ok, errors = p.stdout.readline().split()
    assert p.wait(timeout=30) == 0
    print(case, ok, errors)
    assert terminated(srv, "cl-hikari") == 7
    assert (int(ok), int(errors)) == (50, 0)


# -- PgBouncer in front ---------------------------------------------------------

@pytest.mark.skipif(not shutil.which("pgbouncer"), reason="pgbouncer is not installed")
@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_pgbouncer_in_front(srv, mode):
    """pg_warden terminates idle server connections of a pgbouncer pool; the
    application's clients (connected to pgbouncer) see no error."""
    app = f"cl-bouncer-{mode}"
    bouncer = pgcluster.PgBouncer(srv, pool_mode=mode, pool_size=10).start()
    try:
        clients = [psycopg2.connect(bouncer.dsn(application_name=app)) for _ in range(10)]
        for c in clients:
            c.autocommit = True
        # Ten clients at once: ten server connections.
        threads = [threading.Thread(target=lambda c=c: c.cursor().execute("SELECT pg_sleep(1)"))
                   for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        opened = connections(srv, app)
        assert opened > KEEP_MIN
        if mode == "session":
            # Session mode: a server connection belongs to its client until the
            # client leaves; then pgbouncer's server_reset_query (DISCARD ALL)
            # resets application_name to the server connection's own (empty):
            # idle server connections of a session pool no longer match a
            # policy by application, only by role or database.
            for c in clients:
                c.close()
            pgcluster.wait_until(lambda: connections(srv, app) == 0, timeout=5,
                                 what="DISCARD ALL resetting application_name")
            time.sleep(2.5)
            assert terminated(srv, app) == 0
            clients = [psycopg2.connect(bouncer.dsn(application_name=app)) for _ in range(KEEP_MIN)]
            for c in clients:
                c.autocommit = True
        else:
            settle(srv, [app])
            assert terminated(srv, app) == opened - KEEP_MIN
        errors = 0
        for i in range(50):
            try:
                clients[i % len(clients)].cursor().execute("SELECT 1")
            except psycopg2.Error:
                errors += 1
        assert errors == 0
        for c in clients:
            c.close()
    finally:
        bouncer.stop()
