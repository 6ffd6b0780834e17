"""Helpers shared by the fault, load, bad-input and privilege tests."""
import os
import signal
import time

import psycopg2

from pgcluster import wait_until
from clients import budget_loaded, refused, try_connect  # noqa: F401 (re-exported)


def q(cluster, sql):
    return cluster.psql(sql)


def counts_exact(cluster):
    return q(cluster,
             "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') = "
             "(SELECT connections FROM warden.server_usage)") == "t"


def app_drift(cluster):
    """Keys where warden.app_usage disagrees with pg_stat_activity on connections."""
    return q(cluster, """
      WITH truth AS (SELECT datname AS database, usename AS role, application_name, count(*)::int AS n
                       FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1, 2, 3),
           mine AS (SELECT database, role, application_name, connections AS n
                      FROM warden.app_usage WHERE connections <> 0)
      SELECT string_agg(format('%s/%s/%s: %s vs %s', coalesce(t.database, m.database),
                               coalesce(t.role, m.role), coalesce(t.application_name, m.application_name),
                               t.n, m.n), '; ')
        FROM truth t FULL JOIN mine m USING (database, role, application_name)
       WHERE t.n IS DISTINCT FROM m.n""")


def worker_pid(cluster):
    out = q(cluster, "SELECT worker_pid FROM warden.server_usage")
    return int(out) if out else None


def loader_pid(cluster):
    out = q(cluster, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_warden loader'")
    return int(out) if out else None


def wait_accepting(cluster, timeout=60):
    """The server accepts connections again (after a crash restart)."""
    def ok():
        try:
            c = psycopg2.connect(cluster.dsn(application_name="probe"), connect_timeout=2)
            c.close()
            return True
        except psycopg2.OperationalError:
            return False
    wait_until(ok, timeout=timeout, interval=0.2, what="the server to accept connections")


def wait_new_worker(cluster, old, timeout=30):
    def new():
        try:
            pid = worker_pid(cluster)
        except RuntimeError:
            return False
        return pid is not None and pid != old
    wait_until(new, timeout=timeout, interval=0.2, what="a new pg_warden worker")


def is_broken(conn):
    """Is the session gone? (Asks in autocommit: leaves no transaction open.)"""
    try:
        if not conn.autocommit:
            conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        return False
    except (psycopg2.DatabaseError, psycopg2.InterfaceError):
        return True


def kill(pid, sig):
    os.kill(pid, sig)


def sleep(s):
    time.sleep(s)


__all__ = ["try_connect", "refused", "q", "budget_loaded", "counts_exact", "app_drift", "worker_pid",
           "loader_pid", "wait_accepting", "wait_new_worker", "is_broken", "kill", "sleep", "signal",
           "wait_until"]
