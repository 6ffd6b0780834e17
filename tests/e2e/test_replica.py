"""pg_warden on a real streaming standby: its own usage, admission and
overrides; writes refused with PostgreSQL's read-only error."""
import threading

import psycopg2
import pytest

from pgcluster import wait_replayed as replayed, wait_until


def exact(c):
    return c.psql("""
        SELECT count(*) FROM (
          SELECT datname, usename, application_name, count(*) FROM pg_stat_activity
           WHERE backend_type = 'client backend' GROUP BY 1, 2, 3
          EXCEPT
          SELECT database, role, application_name, connections FROM warden.app_usage WHERE connections > 0
        ) d""") == "0" and c.psql(
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') "
        "= (SELECT connections FROM warden.server_usage)") == "t"


def test_usage_on_the_standby_is_its_own(replica_pair):
    primary, standby = replica_pair
    on_primary = [psycopg2.connect(primary.dsn(application_name=f"p-{i % 2}")) for i in range(4)]
    on_standby = [psycopg2.connect(standby.dsn(application_name=f"s-{i % 3}")) for i in range(9)]
    try:
        assert standby.psql("SELECT in_recovery FROM warden.server_usage") == "t"
        assert primary.psql("SELECT in_recovery FROM warden.server_usage") == "f"
        wait_until(lambda: exact(standby), timeout=5, what="standby counts")
        assert exact(primary)
        assert standby.psql("SELECT string_agg(application_name || '=' || connections, ',' ORDER BY 1) "
                            "FROM warden.app_usage WHERE application_name LIKE 's-%'") == "s-0=3,s-1=3,s-2=3"
        assert standby.psql("SELECT count(*) FROM warden.app_usage WHERE application_name LIKE 'p-%'") == "0"
        wait_until(lambda: standby.psql("SELECT count(*) FROM warden.backends WHERE application_name LIKE 's-%'")
                   == "9", timeout=5, what="sampled on the standby")
    finally:
        for c in on_primary + on_standby:
            c.close()


def test_writes_on_the_standby_fail_read_only(replica_pair):
    primary, standby = replica_pair
    for sql in ("SELECT warden.set_budget(name => 'x', max_connections => 1)",
                "SELECT warden.drop_budget('x')",
                "INSERT INTO warden.budgets (name, max_connections) VALUES ('x', 1)"):
        try:
            with psycopg2.connect(standby.dsn()) as c, c.cursor() as cur:
                cur.execute(sql)
            raise AssertionError(f"{sql} succeeded on a standby")
        except psycopg2.Error as e:
            assert e.pgcode == "25006", (sql, e.pgcode, str(e))
    assert standby.psql("SELECT count(*) FROM warden.budgets") == "0"


def test_budget_from_the_primary_applies_on_the_standby(replica_pair):
    primary, standby = replica_pair
    primary.psql("CREATE ROLE reader LOGIN; "
                 "SELECT warden.set_budget(name => 'readers', max_connections => 5, role => 'reader')")
    replayed(primary, standby)
    wait_until(lambda: standby.psql("SELECT count(*) FROM warden.budget_usage WHERE name = 'readers'") == "1",
               timeout=10, what="the budget loaded on the standby")
    n = 20
    barrier = threading.Barrier(n)
    results = [None] * n

    def login(i):
        barrier.wait()
        try:
            results[i] = psycopg2.connect(standby.dsn(user="reader", application_name="ro"))
        except psycopg2.OperationalError as e:
            results[i] = e

    threads = [threading.Thread(target=login, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    admitted = [r for r in results if not isinstance(r, Exception)]
    refusedl = [r for r in results if isinstance(r, Exception)]
    try:
        assert len(admitted) == 5
        assert all("too many connections" in str(e) and '"readers"' in str(e) for e in refusedl)
        # the primary's count is independent
        on_primary = [psycopg2.connect(primary.dsn(user="reader")) for _ in range(5)]
        for c in on_primary:
            c.close()
    finally:
        for c in admitted:
            c.close()


def test_overrides_on_the_standby(replica_pair):
    primary, standby = replica_pair
    primary.psql("CREATE ROLE app_ro LOGIN")
    replayed(primary, standby)
    standby.psql("SELECT warden.close_admission(role => 'app_ro', max_connections => 0, reason => 'replica lag')")
    with pytest.raises(psycopg2.OperationalError, match="replica lag"):
        psycopg2.connect(standby.dsn(user="app_ro"))
    # not on the primary: overrides are per server
    psycopg2.connect(primary.dsn(user="app_ro")).close()
    assert primary.psql("SELECT count(*) FROM warden.admission_overrides") == "0"
    assert standby.psql("SELECT warden.open_admission(role => 'app_ro')") == "t"
    psycopg2.connect(standby.dsn(user="app_ro")).close()


def test_promotion(replica_pair):
    primary, standby = replica_pair
    held = [psycopg2.connect(standby.dsn(application_name="survivor")) for _ in range(2)]
    standby.promote()
    wait_until(lambda: standby.psql("SELECT in_recovery FROM warden.server_usage") == "f", timeout=20,
               what="promotion")
    assert standby.psql("SELECT connections FROM warden.app_usage WHERE application_name = 'survivor'") == "2"
    standby.psql("SELECT warden.set_budget(name => 'after-promotion', max_connections => 1, application => 'solo')")
    wait_until(lambda: standby.psql("SELECT count(*) FROM warden.budget_usage WHERE name = 'after-promotion'")
               == "1", timeout=10, what="budget on the promoted server")
    for c in held:
        c.close()


def test_policy_from_the_primary_terminates_on_the_standby(replica_pair):
    """A policy defined on the primary acts on the standby's own idle sessions,
    on time and never early, keeping keep_min; the records stay on the standby
    and survive its promotion, and new ones keep coming after it."""
    import time as _time
    primary, standby = replica_pair
    offenders = [psycopg2.connect(standby.dsn(application_name="ro-pool")) for _ in range(4)]
    for c in offenders:
        c.autocommit = True
        c.cursor().execute("SELECT 1")
    started = _time.time()
    on_primary = [psycopg2.connect(primary.dsn(application_name="ro-pool")) for _ in range(2)]
    primary.psql("SELECT warden.add_idle_policy(name => 'ro-idle', idle_timeout => '2 s', "
                 "application => 'ro-pool', keep_min => 1)")
    replayed(primary, standby)
    wait_until(lambda: standby.psql("SELECT count(*) FROM warden.terminations WHERE policy = 'ro-idle'") == "3",
               timeout=15, what="three terminations on the standby")
    rows = standby.psql("SELECT idle_seconds FROM warden.terminations WHERE policy = 'ro-idle'").split()
    assert all(float(x) >= 2.0 for x in rows), rows
    assert all(float(x) < 2.0 + 1.0 for x in rows), rows   # on time (wide margin for a loaded box)
    assert _time.time() - started >= 2.0
    alive = []
    for c in offenders:
        try:
            c.cursor().execute("SELECT 1")
            alive.append(c)
        except psycopg2.Error:
            pass
    assert len(alive) == 1  # keep_min
    # the primary's own idle sessions are terminated by the primary's worker, and
    # recorded there, not on the standby
    wait_until(lambda: primary.psql("SELECT count(*) FROM warden.terminations WHERE policy = 'ro-idle'") == "1",
               timeout=10, what="the primary's own termination")
    assert standby.psql("SELECT count(*) FROM warden.terminations") == "3"
    # history is recorded on the standby too
    wait_until(lambda: standby.psql("SELECT count(*) FROM warden.usage_history "
                                    "WHERE application_name = 'ro-pool'") != "0",
               timeout=10, what="history on the standby")
    # promotion: the records are still there, and new ones keep coming
    standby.promote()
    wait_until(lambda: standby.psql("SELECT in_recovery FROM warden.server_usage") == "f", timeout=20,
               what="promotion")
    assert standby.psql("SELECT count(*) FROM warden.terminations WHERE policy = 'ro-idle'") == "3"
    more = [psycopg2.connect(standby.dsn(application_name="ro-pool")) for _ in range(2)]
    wait_until(lambda: standby.psql("SELECT count(*) FROM warden.terminations WHERE policy = 'ro-idle'") == "5",
               timeout=15, what="new terminations after promotion")
    for c in alive + more + on_primary:
        c.close()
