"""Usage tracking end to end: real servers, real concurrent libpq connections
(psycopg2 and its connection pool), every view checked against
pg_stat_activity."""
import os
import signal
import threading
import time

import psycopg2
import psycopg2.pool
import pytest

from pgcluster import wait_until

COMPARE = """
WITH truth AS (
  SELECT datname AS database, usename AS role, application_name,
         count(*) AS connections,
         count(*) FILTER (WHERE state = 'active') AS active,
         count(*) FILTER (WHERE state = 'idle') AS idle,
         count(*) FILTER (WHERE state LIKE 'idle in transaction%%') AS idle_in_transaction
    FROM pg_stat_activity WHERE backend_type = 'client backend'
   GROUP BY 1, 2, 3),
mine AS (
  SELECT database, role, application_name, connections, active, idle, idle_in_transaction
    FROM warden.app_usage WHERE connections > 0)
SELECT coalesce(t.database, m.database), coalesce(t.role, m.role),
       coalesce(t.application_name, m.application_name),
       t.connections, m.connections, t.active, m.active, t.idle, m.idle,
       t.idle_in_transaction, m.idle_in_transaction
  FROM truth t FULL JOIN mine m USING (database, role, application_name)
 ORDER BY 1, 2, 3
"""


def connect(cluster, **kw):
    return psycopg2.connect(cluster.dsn(**kw))


def compare(mon, states=True, skip_app="monitor"):
    """Rows where pg_warden and pg_stat_activity disagree (the monitor's own
    state is excluded: it is active while it asks)."""
    with mon.cursor() as cur:
        cur.execute(COMPARE)
        rows = cur.fetchall()
    bad = []
    for db, role, app, tc, mc, ta, ma, ti, mi, tx, mx in rows:
        if tc != mc:
            bad.append(("connections", db, role, app, tc, mc))
        elif states and app != skip_app and (ta, ti, tx) != (ma, mi, mx):
            bad.append(("states", db, role, app, (ta, ti, tx), (ma, mi, mx)))
    return bad


def wait_sample(mon):
    """Wait for a sample taken after now."""
    with mon.cursor() as cur:
        cur.execute("SELECT clock_timestamp()")
        t0 = cur.fetchone()[0]

        def fresh():
            cur.execute("SELECT sampled_at > %s FROM warden.server_usage", (t0,))
            return cur.fetchone()[0]
        wait_until(fresh, timeout=10, what="a fresh sample")


def test_views_agree_with_pg_stat_activity(cluster):
    cluster.psql("CREATE ROLE app_a LOGIN; CREATE ROLE app_b LOGIN; CREATE DATABASE other;")
    pools = []
    active_threads = []
    stop = threading.Event()
    held = []
    for db in ("postgres", "other"):
        for role in ("app_a", "app_b"):
            for app in ("api", "worker", "reports"):
                pool = psycopg2.pool.ThreadedConnectionPool(
                    3, 3, cluster.dsn(dbname=db, user=role, application_name=app))
                pools.append(pool)
                conns = [pool.getconn() for _ in range(3)]
                held.append((pool, conns))
                # one idle in transaction, one active, one idle
                conns[0].cursor().execute("SELECT 1")  # psycopg2 opens a transaction
                if app != "reports":
                    def run(c=conns[1]):
                        c.autocommit = True
                        with c.cursor() as cur:
                            cur.execute("SELECT pg_sleep(6)")
                    t = threading.Thread(target=run)
                    t.start()
                    active_threads.append(t)
                else:
                    conns[1].autocommit = True
                conns[2].autocommit = True
    mon = connect(cluster, application_name="monitor")
    mon.autocommit = True
    try:
        time.sleep(0.5)
        wait_sample(mon)
        assert compare(mon) == []
        with mon.cursor() as cur:
            cur.execute("SELECT count(*) FROM warden.app_usage WHERE connections > 0 AND application_name <> 'monitor'")
            assert cur.fetchone()[0] == 12
            cur.execute("SELECT role, connections, active, idle, idle_in_transaction FROM warden.role_usage "
                        "WHERE role LIKE 'app_%' ORDER BY role")
            assert cur.fetchall() == [("app_a", 18, 4, 8, 6), ("app_b", 18, 4, 8, 6)]
            cur.execute("SELECT database, connections FROM warden.database_usage WHERE database = 'other'")
            assert cur.fetchall() == [("other", 18)]
            cur.execute("SELECT connections, (SELECT count(*) FROM pg_stat_activity "
                        "WHERE backend_type = 'client backend') FROM warden.server_usage")
            mine, truth = cur.fetchone()
            assert mine == truth
            cur.execute("SELECT b.state, a.state FROM warden.backends b JOIN pg_stat_activity a USING (pid) "
                        "WHERE b.application_name <> 'monitor'")
            pairs = cur.fetchall()
            assert len(pairs) == 36
            assert all(b == a for b, a in pairs), pairs
            cur.execute("SELECT max(longest_idle_seconds) > 0 FROM warden.app_usage WHERE idle > 0")
            assert cur.fetchone()[0]
    finally:
        for t in active_threads:
            t.join()
        for pool, conns in held:
            for c in conns:
                pool.putconn(c, close=True)
            pool.closeall()
    wait_until(lambda: compare(mon, states=False) == [], timeout=5, what="counts after close")
    mon.close()


def test_application_name_changed_after_login(cluster):
    mon = connect(cluster, application_name="monitor")
    mon.autocommit = True
    c = connect(cluster, application_name="before")
    c.autocommit = True
    c.cursor().execute("SET application_name = 'after'")
    wait_sample(mon)
    assert compare(mon) == []
    with mon.cursor() as cur:
        cur.execute("SELECT application_name, connections FROM warden.app_usage "
                    "WHERE application_name IN ('before', 'after') ORDER BY 1")
        assert cur.fetchall() == [("after", 1), ("before", 0)]
    c.close()
    wait_until(lambda: compare(mon, states=False) == [], timeout=5, what="counts after close")


def test_max_tracked_folds_into_other(make_cluster):
    cluster = make_cluster(conf={"warden.max_tracked": "8"})
    mon = connect(cluster, application_name="monitor")
    mon.autocommit = True
    conns = [connect(cluster, application_name=f"app{i:02d}") for i in range(20)]
    for c in conns:
        c.autocommit = True
    wait_sample(mon)
    with mon.cursor() as cur:
        cur.execute("SELECT count(*) FILTER (WHERE application_name <> '<other>'), "
                    "sum(connections) FILTER (WHERE application_name = '<other>'), sum(connections) "
                    "FROM warden.app_usage")
        regular, other, total = cur.fetchone()
        assert regular == 8
        # 8 keys: 'monitor' + 7 apps (+ psql of CREATE EXTENSION, gone) ... the rest fold
        assert other >= 12
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
        assert total == cur.fetchone()[0]
    for c in conns:
        c.close()
    wait_until(lambda: compare(mon, states=False) == [], timeout=5, what="counts after close")


def churn(cluster, clients, cycles_per_client, errors):
    def client(i):
        for n in range(cycles_per_client):
            try:
                kind = n % 50
                if kind == 7:  # FATAL after authentication: role cannot log in
                    try:
                        psycopg2.connect(cluster.dsn(user="nologin", application_name=f"churn{i % 4}")).close()
                    except psycopg2.OperationalError:
                        pass
                    continue
                if kind == 13:  # FATAL after authentication: no such database
                    try:
                        psycopg2.connect(cluster.dsn(dbname="nosuchdb", application_name=f"churn{i % 4}")).close()
                    except psycopg2.OperationalError:
                        pass
                    continue
                c = psycopg2.connect(cluster.dsn(application_name=f"churn{i % 4}", user="churner"))
                if kind == 21:
                    c.cursor().execute("SELECT 1")
                c.close()
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    return threads


def test_churn_does_not_drift(make_cluster):
    cluster = make_cluster(conf={"max_connections": "120"})
    cluster.psql("CREATE ROLE churner LOGIN; CREATE ROLE nologin NOLOGIN;")
    mon = connect(cluster, application_name="monitor")
    mon.autocommit = True
    errors = []
    # sessions that get terminated while the churn runs
    victims = [connect(cluster, application_name="victim", user="churner") for _ in range(30)]
    threads = churn(cluster, clients=20, cycles_per_client=250, errors=errors)
    killed = 0
    with mon.cursor() as cur:
        for v in victims:
            cur.execute("SELECT pg_terminate_backend(%s)", (v.get_backend_pid(),))
            killed += cur.fetchone()[0]
            time.sleep(0.05)
    for t in threads:
        t.join()
    assert killed == 30
    assert errors == []
    wait_until(lambda: compare(mon, states=False) == [], timeout=10, what="no drift after churn")
    with mon.cursor() as cur:
        cur.execute("SELECT sum(opened) FROM warden.app_usage WHERE application_name LIKE 'churn%%'")
        # 20 clients x 250 cycles; 2 of every 50 (10 per client) are logins PostgreSQL
        # refuses after authentication: never opened (and counted in and out exactly)
        assert cur.fetchone()[0] == 20 * (250 - 10)
        cur.execute("SELECT connections FROM warden.app_usage WHERE application_name = 'victim'")
        assert cur.fetchone()[0] == 0
    for v in victims:
        v.close()


def test_worker_restarts_after_sigterm(cluster):
    mon = connect(cluster, application_name="monitor")
    mon.autocommit = True
    with mon.cursor() as cur:
        cur.execute("SELECT worker_pid FROM warden.server_usage")
        old = cur.fetchone()[0]
        assert old
        os.kill(old, signal.SIGTERM)

        def restarted():
            cur.execute("SELECT worker_pid FROM warden.server_usage")
            pid = cur.fetchone()[0]
            return pid is not None and pid != old
        wait_until(restarted, timeout=15, what="the worker to come back")
    c = connect(cluster, application_name="after-restart")
    wait_sample(mon)
    assert compare(mon) == []
    c.close()


def test_create_extension_needs_preload(make_cluster):
    cluster = make_cluster(preload=False, extension=False)
    out = cluster.psql("CREATE EXTENSION pg_warden", check=False)
    assert "pg_warden is not loaded" in out
    assert "shared_preload_libraries" in out
    assert cluster.psql("SELECT count(*) FROM pg_extension WHERE extname = 'pg_warden'") == "0"


def test_walsenders_and_workers_are_not_counted(cluster):
    standby = cluster.make_standby()
    standby.start()
    try:
        wait_until(lambda: cluster.psql("SELECT count(*) FROM pg_stat_replication") == "1",
                   timeout=20, what="replication")
        mon = connect(cluster, application_name="monitor")
        mon.autocommit = True
        assert compare(mon, states=False) == []
        with mon.cursor() as cur:
            cur.execute("SELECT count(*) FROM warden.app_usage WHERE application_name IN "
                        "('walreceiver', 'pg_warden worker') AND connections > 0")
            assert cur.fetchone()[0] == 0
    finally:
        standby.destroy()
