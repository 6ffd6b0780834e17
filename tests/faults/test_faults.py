"""Fault matrix of the extension: its workers killed (SIGTERM, SIGKILL = crash
restart of the server), the server stopped in immediate mode, the loader down
while the configuration changes. After each fault: tracking is exact again,
budgets are back in shared memory and enforced, admission overrides are gone
(shared memory only), idle policies are enforced again.

The daemon's faults (wardend kill -9, state file unwritable, a server
unreachable, pgbouncer down) are tested with the daemon, in tests/e2e of
daemon/."""
import signal

import psycopg2
import pytest

from faultlib import (app_drift, budget_loaded, counts_exact, is_broken, kill, loader_pid, q,
                      refused, try_connect, wait_accepting, wait_new_worker, wait_until, worker_pid)

SETUP = """
CREATE ROLE capped LOGIN; CREATE ROLE closed LOGIN; CREATE ROLE holder LOGIN; CREATE ROLE idler LOGIN;
SELECT warden.set_budget(name => 'cap3', max_connections => 3, role => 'capped');
SELECT warden.add_idle_policy(name => 'idlers', idle_timeout => '1 s', role => 'idler');
"""


@pytest.fixture
def cluster(make_cluster):
    # A crash loses commits still in the WAL buffers with synchronous_commit = off
    # (the harness's default): these tests check the extension, not that.
    return make_cluster(conf={"synchronous_commit": "on"})


def prepare(cluster):
    """Budgets and a policy in force, an override, connections held."""
    q(cluster, SETUP)
    budget_loaded(cluster, "cap3", 3)
    wait_until(lambda: q(cluster, "SELECT count(*) FROM warden.backends") != "", what="a sample")
    held = [try_connect(cluster, user="holder", application_name=f"pool-{i % 3}")[0] for i in range(12)]
    assert all(held)
    capped = [try_connect(cluster, user="capped")[0] for _ in range(3)]
    assert all(capped)
    assert refused(try_connect(cluster, user="capped")[1])
    q(cluster, "SELECT warden.close_admission(role => 'closed', max_connections => 0, reason => 'incident')")
    assert refused(try_connect(cluster, user="closed")[1])
    assert app_drift(cluster) == ""
    return held + capped


def policy_enforced(cluster, since_count):
    """An idle session of role idler is terminated by the policy within a few seconds."""
    c, e = try_connect(cluster, user="idler", application_name="idle-app")
    assert e is None, str(e)
    c.autocommit = True
    wait_until(lambda: int(q(cluster, "SELECT count(*) FROM warden.terminations WHERE policy = 'idlers' "
                                      "AND application_name = 'idle-app'")) > since_count,
               timeout=15, what="the idle policy to terminate the idle session")
    wait_until(lambda: is_broken(c), timeout=5, what="the session to be gone")
    c.close()


def assert_recovered(cluster, terminations_before=0, overrides_gone=True):
    # tracking: exact against pg_stat_activity, whatever was held before the fault
    held = []
    for i in range(6):
        c, e = try_connect(cluster, user="holder", application_name=f"after-{i % 2}")
        assert e is None, str(e)
        held.append(c)
    wait_until(lambda: app_drift(cluster) == "", timeout=10, what="exact tracking after the fault")
    assert counts_exact(cluster)
    # budgets: back in shared memory and enforced
    budget_loaded(cluster, "cap3", 3, timeout=20)
    capped = []
    for _ in range(3):
        c, e = try_connect(cluster, user="capped")
        assert e is None, str(e)
        capped.append(c)
    _, e = try_connect(cluster, user="capped")
    assert refused(e), str(e)
    # overrides live in shared memory only
    if overrides_gone:
        assert q(cluster, "SELECT count(*) FROM warden.admission_overrides") == "0"
        c, e = try_connect(cluster, user="closed")
        assert e is None, str(e)
        c.close()
    else:
        assert refused(try_connect(cluster, user="closed")[1])
    # policies: enforced again
    policy_enforced(cluster, terminations_before)
    for c in held + capped:
        c.close()
    wait_until(lambda: app_drift(cluster) == "", timeout=10, what="exact tracking after closing")


def test_worker_sigterm_comes_back_without_losing_anything(cluster):
    held = prepare(cluster)
    policy_enforced(cluster, 0)
    old = worker_pid(cluster)
    kill(old, signal.SIGTERM)
    wait_new_worker(cluster, old)
    # a clean worker exit is no crash: sessions survive, overrides stay
    assert not any(is_broken(c) for c in held)
    assert app_drift(cluster) == ""
    # the budget still holds its 3 sessions; give them back
    assert refused(try_connect(cluster, user="capped")[1])
    for c in held[-3:]:
        c.close()
    held = held[:-3]
    wait_until(lambda: app_drift(cluster) == "", timeout=10, what="counted out")
    n = int(q(cluster, "SELECT count(*) FROM warden.terminations WHERE policy = 'idlers'"))
    assert_recovered(cluster, terminations_before=n, overrides_gone=False)
    for c in held:
        c.close()


@pytest.mark.parametrize("victim", ["worker", "loader", "client backend"])
def test_sigkill_crash_restart(cluster, victim):
    """SIGKILL of any process attached to shared memory makes the postmaster
    reset every backend and restart: the extension must come back whole."""
    held = prepare(cluster)
    old = worker_pid(cluster)
    if victim == "worker":
        kill(old, signal.SIGKILL)
    elif victim == "loader":
        kill(loader_pid(cluster), signal.SIGKILL)
    else:
        kill(held[0].get_backend_pid(), signal.SIGKILL)
    # the postmaster treats it as a crash: every backend is reset, the server restarts
    wait_until(lambda: "terminating any other active server processes" in cluster.log_text(),
               timeout=15, what="the crash restart")
    wait_accepting(cluster)
    wait_new_worker(cluster, old)
    assert all(is_broken(c) for c in held)
    for c in held:
        c.close()
    assert_recovered(cluster)


def test_immediate_stop_and_start(cluster):
    held = prepare(cluster)
    cluster.stop("immediate")
    for c in held:
        c.close()
    cluster.start()
    wait_accepting(cluster)
    wait_until(lambda: worker_pid(cluster) is not None, timeout=30, what="the worker")
    assert q(cluster, "SELECT sum(connections) FROM warden.app_usage WHERE role = 'holder'") in ("", "0")
    assert_recovered(cluster)


def test_budget_set_while_loader_is_down_applies_when_it_is_back(cluster):
    q(cluster, "CREATE ROLE late LOGIN; CREATE ROLE early LOGIN;"
               "SELECT warden.set_budget(name => 'early', max_connections => 0, role => 'early')")
    budget_loaded(cluster, "early", 0)
    wait_until(lambda: loader_pid(cluster), timeout=20, what="the loader")
    for _ in range(3):  # the sampler restarts it ~2 s after it exits
        pid = loader_pid(cluster)
        if pid is None:
            break
        kill(pid, signal.SIGTERM)
        wait_until(lambda: loader_pid(cluster) != pid, timeout=10, what="the loader to exit")
    # what was loaded stays in force while no loader runs
    assert refused(try_connect(cluster, user="early")[1])
    # the change commits while no loader watches (or before the new one reads it)
    q(cluster, "SELECT warden.set_budget(name => 'late', max_connections => 1, role => 'late')")
    q(cluster, "SELECT warden.add_idle_policy(name => 'late-idle', idle_timeout => '1 s', "
               "application => 'late-idle')")
    budget_loaded(cluster, "late", 1, timeout=20)
    wait_until(lambda: loader_pid(cluster), timeout=20, what="the loader to be back")
    a, e = try_connect(cluster, user="late")
    assert e is None, str(e)
    assert refused(try_connect(cluster, user="late")[1])
    c, e = try_connect(cluster, application_name="late-idle")
    assert e is None
    wait_until(lambda: q(cluster, "SELECT count(*) FROM warden.terminations WHERE policy = 'late-idle'") == "1",
               timeout=15, what="the new policy to terminate the idle session")
    assert is_broken(c)
    a.close()
    c.close()
    assert "pg_warden loader started" in cluster.log_text()
