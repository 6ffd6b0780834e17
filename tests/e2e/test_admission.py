"""Admission at login, end to end: budgets and admission overrides against
real concurrent logins."""
import os
import signal
import subprocess
import threading
import time

import psycopg2
import pytest

from pgcluster import PG_BIN, wait_until
from clients import budget_loaded, refused, try_connect


def budget_gone(cluster, name):
    wait_until(lambda: cluster.psql(f"SELECT count(*) FROM warden.budget_usage WHERE name = '{name}'") == "0",
               timeout=10, what=f"budget {name} gone")


def counts_exact(cluster):
    return cluster.psql(
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') = "
        "(SELECT connections FROM warden.server_usage)") == "t"


def test_simultaneous_logins_admit_exactly_the_budget(make_cluster):
    cluster = make_cluster(conf={"max_connections": "400"})
    cluster.psql("CREATE ROLE storm LOGIN; "
                 "SELECT warden.set_budget(name => 'storm-budget', max_connections => 20, application => 'storm-%')")
    budget_loaded(cluster, "storm-budget", 20)
    n = 300
    barrier = threading.Barrier(n)
    results = [None] * n

    def login(i):
        barrier.wait()
        results[i] = try_connect(cluster, user="storm", application_name=f"storm-{i % 7}")

    threads = [threading.Thread(target=login, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    admitted = [c for c, e in results if c is not None]
    errors = [e for c, e in results if e is not None]
    try:
        assert len(admitted) == 20
        assert len(errors) == 280
        for e in errors:
            assert refused(e), str(e)
            assert 'budget "storm-budget" allows 20 connections' in str(e)
        assert cluster.psql("SELECT sum(refused) FROM warden.app_usage WHERE application_name LIKE 'storm-%'") == "280"
        assert cluster.psql("SELECT connections FROM warden.budget_usage WHERE name = 'storm-budget'") == "20"
    finally:
        for c in admitted:
            c.close()
    wait_until(lambda: counts_exact(cluster), timeout=5, what="exact counts")
    # the budget's room is back
    c, e = try_connect(cluster, user="storm", application_name="storm-x")
    assert e is None
    c.close()


def test_refusal_message_and_sqlstate(make_cluster):
    cluster = make_cluster(conf={"log_line_prefix": "'%m [%p] %e %a '"})
    cluster.psql("CREATE ROLE api LOGIN; "
                 "SELECT warden.set_budget(name => 'api-cap', max_connections => 1, role => 'api')")
    budget_loaded(cluster, "api-cap", 1)
    first, e = try_connect(cluster, user="api", application_name="web")
    assert e is None
    # psql shows the whole message: FATAL, SQLSTATE, DETAIL, HINT
    res = subprocess.run([f"{PG_BIN}/psql", "-X", "-h", cluster.sockdir, "-p", str(cluster.port), "-U", "api",
                          "-d", "postgres", "-v", "VERBOSITY=verbose", "-c", "SELECT 1"],
                         capture_output=True, text=True, env={**os.environ, "PGAPPNAME": "web"})
    assert res.returncode != 0
    assert "FATAL:  too many connections for role \"api\"" in res.stderr
    assert 'DETAIL:  pg_warden budget "api-cap" allows 1 connections, 1 are in use.' in res.stderr
    assert "HINT:  Close idle connections" in res.stderr
    # the SQLSTATE, from the server log (%e)
    wait_until(lambda: any(" 53300 " in line and 'FATAL:  too many connections for role "api"' in line
                           for line in cluster.log_text().splitlines()),
               timeout=5, what="the refusal in the log with SQLSTATE 53300")
    first.close()


def test_reserved_slots_keep_room_for_their_role(make_cluster):
    # usable = 20 - 3 superuser reserved = 17; 5 kept for ops
    cluster = make_cluster(conf={"max_connections": "20", "superuser_reserved_connections": "3"})
    cluster.psql("CREATE ROLE ops LOGIN; CREATE ROLE app LOGIN; "
                 "SELECT warden.set_budget(name => 'ops-headroom', role => 'ops', reserved => 5)")
    budget_loaded(cluster, "ops-headroom", None)
    held = []
    while True:
        c, e = try_connect(cluster, user="app", application_name="leaky")
        if e is not None:
            assert refused(e), str(e)
            assert "reserved" in str(e)
            break
        held.append(c)
        assert len(held) < 20
    assert len(held) == 12
    ops = []
    for _ in range(5):
        c, e = try_connect(cluster, user="ops", application_name="psql")
        assert e is None, str(e)
        ops.append(c)
    # a superuser still gets in (superuser_reserved_connections)
    su, e = try_connect(cluster, user="postgres", application_name="admin")
    assert e is None
    for c in held + ops + [su]:
        c.close()


def test_pattern_role_and_database_budgets(make_cluster):
    cluster = make_cluster()
    cluster.psql("CREATE ROLE r1 LOGIN; CREATE ROLE r2 LOGIN; CREATE DATABASE db2;"
                 "SELECT warden.set_budget(name => 'workers', max_connections => 2, application => 'worker-%');"
                 "SELECT warden.set_budget(name => 'r1', max_connections => 3, role => 'r1');"
                 "SELECT warden.set_budget(name => 'db2', max_connections => 4, database => 'db2');")
    for name, limit in (("workers", 2), ("r1", 3), ("db2", 4)):
        budget_loaded(cluster, name, limit)
    held = []

    def fill(limit, **kw):
        for i in range(limit):
            c, e = try_connect(cluster, **kw)
            assert e is None, str(e)
            held.append(c)
        c, e = try_connect(cluster, **kw)
        assert refused(e), str(e)

    fill(2, user="r2", application_name="worker-a")
    # another application is not in the pattern
    c, e = try_connect(cluster, user="r2", application_name="web")
    assert e is None
    held.append(c)
    fill(3, user="r1", application_name="r1app")
    fill(4, user="r2", dbname="db2", application_name="x")
    # superusers are never refused
    c, e = try_connect(cluster, dbname="db2", application_name="x")
    assert e is None
    held.append(c)
    wait_until(lambda: counts_exact(cluster), timeout=5, what="exact counts")
    for c in held:
        c.close()


def test_exempt_roles_superusers_and_dry_run(make_cluster):
    cluster = make_cluster(conf={"warden.exempt_roles": "'batch, \"Ops Admin\"'"})
    cluster.psql("CREATE ROLE batch LOGIN; CREATE ROLE \"Ops Admin\" LOGIN; CREATE ROLE plain LOGIN;"
                 "SELECT warden.set_budget(name => 'nobody', max_connections => 0, database => 'postgres')")
    budget_loaded(cluster, "nobody", 0)
    for user in ("batch", "'Ops Admin'", "postgres"):
        c, e = try_connect(cluster, user=user)
        assert e is None, f"{user}: {e}"
        c.close()
    c, e = try_connect(cluster, user="plain")
    assert refused(e)
    # warden.enforce = off: evaluated, logged, counted, not refused
    cluster.set_conf(**{"warden.enforce": "off"})
    cluster.reload()
    wait_until(lambda: cluster.psql("SHOW warden.enforce") == "off", what="reload")
    time.sleep(0.3)
    c, e = try_connect(cluster, user="plain", application_name="dry")
    assert e is None, str(e)
    c.close()
    assert cluster.psql("SELECT refused FROM warden.app_usage WHERE application_name = 'dry'") == "1"
    assert "would refuse login of role \"plain\"" in cluster.log_text()


def test_budget_changed_at_run_time(cluster):
    cluster.psql("CREATE ROLE svc LOGIN; SELECT warden.set_budget(name => 'svc', max_connections => 1, role => 'svc')")
    budget_loaded(cluster, "svc", 1)
    a, e = try_connect(cluster, user="svc")
    assert e is None
    _, e = try_connect(cluster, user="svc")
    assert refused(e)
    cluster.psql("SELECT warden.set_budget(name => 'svc', max_connections => 2, role => 'svc')")
    budget_loaded(cluster, "svc", 2)
    b, e = try_connect(cluster, user="svc")
    assert e is None
    cluster.psql("SELECT warden.drop_budget('svc')")
    budget_gone(cluster, "svc")
    c, e = try_connect(cluster, user="svc")
    assert e is None
    for x in (a, b, c):
        x.close()


def test_counted_out_exactly_once_however_sessions_end(cluster):
    cluster.psql("CREATE ROLE w LOGIN; CREATE ROLE nologin_role NOLOGIN;"
                 "SELECT warden.set_budget(name => 'w', max_connections => 3, role => 'w')")
    budget_loaded(cluster, "w", 3)
    # FATAL after authentication (database does not exist) must not leak a slot
    for _ in range(5):
        _, e = try_connect(cluster, user="w", dbname="nosuchdb")
        assert e is not None and "does not exist" in str(e)
    held = [try_connect(cluster, user="w", application_name="w")[0] for _ in range(3)]
    assert all(held)
    # terminated by pg_terminate_backend
    cluster.psql(f"SELECT pg_terminate_backend({held[0].get_backend_pid()})")
    # a client process that crashes (kill -9) while holding a connection
    proc = subprocess.Popen([f"{PG_BIN}/psql", "-X", "-h", cluster.sockdir, "-p", str(cluster.port),
                             "-U", "w", "-d", "postgres", "-c", "SELECT pg_sleep(60)"])
    wait_until(lambda: cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'w' "
                                    "AND query LIKE '%pg_sleep(60)%'") == "1", what="the client's query")
    _, e = try_connect(cluster, user="w")
    assert refused(e)  # 2 held + the crashing client = 3
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the backend notices its client is gone when it next talks to it
    cluster.psql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE usename = 'w' "
                 "AND query LIKE '%pg_sleep(60)%'")
    wait_until(lambda: cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'w'") == "2",
               timeout=10, what="the terminated and the orphaned backends to exit")
    wait_until(lambda: counts_exact(cluster), timeout=10, what="exact counts")
    # held[1], held[2] remain: room for exactly one more
    c, e = try_connect(cluster, user="w")
    assert e is None, str(e)
    held.append(c)
    _, e = try_connect(cluster, user="w")
    assert refused(e)
    assert cluster.psql("SELECT connections FROM warden.budget_usage WHERE name = 'w'") == "3"
    for c in held[1:]:
        c.close()


def test_admission_overrides(cluster):
    cluster.psql("CREATE ROLE app_api LOGIN")
    held = [try_connect(cluster, user="app_api", application_name="api")[0] for _ in range(3)]
    row = cluster.psql("SELECT max_connections, connections FROM warden.close_admission("
                       "role => 'app_api', reason => 'wardend: emergency at 95%')")
    assert row == "3|3"
    _, e = try_connect(cluster, user="app_api", application_name="api")
    assert refused(e)
    assert "admission override" in str(e) and "wardend: emergency at 95%" in str(e)
    held.pop().close()
    wait_until(lambda: counts_exact(cluster), what="counted out")
    c, e = try_connect(cluster, user="app_api", application_name="api")
    assert e is None
    held.append(c)
    # expiry
    cluster.psql("SELECT warden.close_admission(role => 'app_api', max_connections => 0, expires => '1 second')")
    _, e = try_connect(cluster, user="app_api")
    assert refused(e)
    time.sleep(1.2)
    c, e = try_connect(cluster, user="app_api")
    assert e is None
    held.append(c)
    assert cluster.psql("SELECT count(*) FROM warden.admission_overrides") == "0"
    # open
    cluster.psql("SELECT warden.close_admission(role => 'app_api', max_connections => 0)")
    _, e = try_connect(cluster, user="app_api")
    assert refused(e)
    assert cluster.psql("SELECT warden.open_admission(role => 'app_api')") == "t"
    c, e = try_connect(cluster, user="app_api")
    assert e is None
    held.append(c)
    # gone after a restart
    cluster.psql("SELECT warden.close_admission(role => 'app_api', max_connections => 0)")
    for c in held:
        c.close()
    cluster.restart()
    assert cluster.psql("SELECT count(*) FROM warden.admission_overrides") == "0"
    c, e = try_connect(cluster, user="app_api")
    assert e is None
    c.close()
