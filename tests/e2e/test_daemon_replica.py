"""wardend watching a primary and its streaming standby: an emergency on the
standby closes admission there only (an override in the standby's shared
memory, never a replicated budget), it is undone after kill -9 of the
daemon, and /health shows each server's role and the standby's replay lag."""
import time

import psycopg2
import pytest

from clients import close_all, connect
from pgcluster import wait_replayed, wait_until


def overrides(cluster, role):
    return cluster.psql(f"SELECT count(*) FROM warden.admission_overrides WHERE role = '{role}'")


def test_emergency_on_the_standby_closes_admission_there_only(replica_pair, wardend):
    primary, standby = replica_pair
    primary.psql("CREATE ROLE app_ro LOGIN; CREATE ROLE app_rw LOGIN")
    wait_replayed(primary, standby)
    body = ('[[role]]\nname = "app_ro"\npriority = "low"\n'
            '[[emergency]]\nat_percent = 20\naction = "close_admission"\n')
    w = wardend([("primary", primary), ("replica", standby)], body,
                daemon_extra="hysteresis_percent = 5")
    w.start()
    w.wait_log(r"\[replica\] polled")
    w.wait_log(r"\[primary\] polled")

    # /health: each server's role, and the standby's replay lag
    code, health = w.health()
    assert code == 200
    checks = {c["name"]: c for c in health["checks"]}
    assert checks["primary"]["data"]["role"] == "primary"
    assert checks["replica"]["data"]["role"] == "standby"
    assert "replay_lag_seconds" in checks["replica"]["data"]

    # 24 of 97 usable on the standby: over 20 %; the primary stays low
    ro = connect(standby, "app_ro", "reports", 14)
    other = connect(standby, "postgres", "dash", 10)
    rw = connect(primary, "app_rw", "api", 3)
    wait_until(lambda: overrides(standby, "app_ro") == "1", timeout=15, what="app_ro closed on the standby")
    assert standby.psql("SELECT max_connections FROM warden.admission_overrides WHERE role = 'app_ro'") == "14"
    with pytest.raises(psycopg2.OperationalError, match="too many connections"):
        connect(standby, "app_ro", "reports")
    # nothing on the primary, and no table budget that would replicate
    assert overrides(primary, "app_ro") == "0"
    assert primary.psql("SELECT count(*) FROM warden.budgets") == "0"
    connect(primary, "app_ro", "reports")[0].close()

    # kill -9 of the daemon while the override is in force, then the reason goes away
    w.kill9()
    assert overrides(standby, "app_ro") == "1"
    close_all(other + ro[:6])
    time.sleep(0.5)
    w.start()
    wait_until(lambda: overrides(standby, "app_ro") == "0", timeout=15,
               what="the override undone after the restart")
    c = connect(standby, "app_ro", "reports")
    close_all(c + ro[6:] + rw)
    assert w.stop() == 0
    assert overrides(standby, "app_ro") == "0"


def test_override_already_gone_after_a_standby_restart(replica_pair, wardend):
    """The standby restarts while wardend has an override in force: the
    override is gone with the restart, and wardend's undo copes with that."""
    primary, standby = replica_pair
    primary.psql("CREATE ROLE batch_ro LOGIN")
    wait_replayed(primary, standby)
    body = ('[[role]]\nname = "batch_ro"\npriority = "low"\n'
            '[[emergency]]\nat_percent = 20\naction = "close_admission"\n')
    w = wardend([("replica", standby)], body, daemon_extra="hysteresis_percent = 5").start()
    w.wait_log(r"\[replica\] polled")
    held = connect(standby, "batch_ro", "etl", 12) + connect(standby, "postgres", "x", 10)
    wait_until(lambda: overrides(standby, "batch_ro") == "1", timeout=15, what="batch_ro closed")
    close_all(held)
    standby.restart()
    assert overrides(standby, "batch_ro") == "0"
    w.wait_log(r"\[replica\] (connected|polled)", timeout=20)
    # no cap comes back once usage is low, and the daemon stops cleanly
    time.sleep(1.5)
    assert overrides(standby, "batch_ro") == "0"
    connect(standby, "batch_ro", "etl")[0].close()
    assert w.stop() == 0
