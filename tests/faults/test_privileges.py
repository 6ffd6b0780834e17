"""Privileges: a matrix of roles (superuser, pg_monitor member,
pg_signal_backend member, plain role) over every view and function of the
extension, as DESIGN.md "Privileges" says; and no way for a non-superuser to
get a superuser's session terminated through pg_warden."""
import time

import psycopg2
import pytest

import pgcluster
from clients import config_applied, config_generation, worker_passed
from faultlib import is_broken, wait_until

ROLES = ("su", "mon", "sig", "plain")
VIEWS = ("app_usage", "role_usage", "database_usage", "server_usage", "backends", "usage_history",
         "pool_advice", "pool_advice_summary", "terminations", "budget_usage", "admission_overrides",
         "budgets", "idle_policies")
MONITOR = {"su", "mon"}
SIGNAL = {"su", "sig"}
OWNER = {"su"}
EVERYONE = set(ROLES)

# (id, SQL run as the role, roles allowed). {r} is the role's name (unique objects per role).
FUNCTIONS = [
    ("reset_stats", "SELECT warden.reset_stats()", OWNER),
    ("reset_history", "SELECT warden.reset_history()", OWNER),
    ("assert_preloaded", "SELECT warden.assert_preloaded()", OWNER),
    ("worker_stats", "SELECT * FROM warden.worker_stats()", MONITOR),
    ("config_status", "SELECT * FROM warden.config_status()", MONITOR),
    ("history_stats", "SELECT * FROM warden.history_stats()", MONITOR),
    ("app_usage()", "SELECT count(*) FROM warden.app_usage()", MONITOR),
    ("server_usage()", "SELECT count(*) FROM warden.server_usage()", MONITOR),
    ("backends()", "SELECT count(*) FROM warden.backends()", MONITOR),
    ("budget_usage()", "SELECT count(*) FROM warden.budget_usage()", MONITOR),
    ("admission_overrides()", "SELECT count(*) FROM warden.admission_overrides()", MONITOR),
    ("usage_history()", "SELECT count(*) FROM warden.usage_history()", MONITOR),
    ("pool_advice()", "SELECT count(*) FROM warden.pool_advice()", MONITOR),
    ("terminations()", "SELECT count(*) FROM warden.terminations()", MONITOR),
    ("set_budget", "SELECT warden.set_budget('b-{r}', 500)", OWNER),
    ("drop_budget", "SELECT warden.drop_budget('keep-{r}')", OWNER),
    ("budgets-insert", "INSERT INTO warden.budgets (name, max_connections) VALUES ('i-{r}', 500)", OWNER),
    ("budgets-update", "UPDATE warden.budgets SET max_connections = 501 WHERE name = 'upd'", OWNER),
    ("budgets-delete", "DELETE FROM warden.budgets WHERE name = 'nothing'", OWNER),
    ("close_admission", "SELECT warden.close_admission(role => 'plain', application => 'c-{r}', "
                        "max_connections => 100)", OWNER),
    ("open_admission", "SELECT warden.open_admission(role => 'plain', application => 'o-{r}')", OWNER),
    ("add_idle_policy", "SELECT warden.add_idle_policy('p-{r}', '1 hour', application => 'none')", OWNER),
    ("drop_idle_policy", "SELECT warden.drop_idle_policy('keep-{r}')", OWNER),
    ("idle_policies-insert", "INSERT INTO warden.idle_policies (name, idle_timeout, application) "
                             "VALUES ('i-{r}', '1 hour', 'none')", OWNER),
    ("idle_policies-update", "UPDATE warden.idle_policies SET keep_min = 1 WHERE name = 'nothing'", OWNER),
    ("validate_idle_policy", "SELECT warden.validate_idle_policy('v', '1 min', NULL, NULL, NULL, 'idle', 0, "
                             "NULL, false)", EVERYONE),
    ("validate_budget", "SELECT warden.validate_budget('v', 1, NULL, NULL, NULL, 0)", EVERYONE),
    ("terminate_idle", "SELECT count(*) FROM warden.terminate_idle('1 hour', dry_run => true)", SIGNAL),
    ("record_action", "SELECT warden.record_action(0, 'postgres', 'x', 'a', NULL, 0, 'test-{r}')", OWNER),
    # an FDW handler cannot be shown even when it may be called: 0A000 past the privilege check
    ("usage_fdw_handler", "SELECT warden.usage_fdw_handler()", OWNER),
]
# SQLSTATE of an allowed call that fails after the privilege check (default: none)
ALLOWED_ERROR = {"usage_fdw_handler": "0A000"}


@pytest.fixture(scope="module")
def server():
    c = pgcluster.Cluster(name="privileges").init()
    c.start()
    c.psql("CREATE EXTENSION pg_warden;"
           "CREATE ROLE su LOGIN SUPERUSER; CREATE ROLE mon LOGIN IN ROLE pg_monitor;"
           "CREATE ROLE sig LOGIN IN ROLE pg_signal_backend; CREATE ROLE plain LOGIN;"
           "SELECT warden.set_budget('upd', 500);"
           + "".join(f"SELECT warden.set_budget('keep-{r}', 500);"
                     f"SELECT warden.add_idle_policy('keep-{r}', '1 hour', application => 'none');"
                     f"SELECT warden.close_admission(role => 'plain', application => 'o-{r}', max_connections => 100);"
                     for r in ROLES))
    conns = {}
    for r in ROLES:
        conns[r] = psycopg2.connect(c.dsn(user=r, application_name=f"matrix-{r}"))
        conns[r].autocommit = True
    yield c, conns
    for con in conns.values():
        con.close()
    c.destroy()


def run_as(con, sql):
    """None if allowed, else the SQLSTATE."""
    try:
        with con.cursor() as cur:
            cur.execute(sql)
        return None
    except psycopg2.Error as e:
        return e.pgcode


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("view", VIEWS)
def test_views(server, view, role):
    _, conns = server
    code = run_as(conns[role], f"SELECT * FROM warden.{view} LIMIT 1")
    assert code == (None if role in MONITOR else "42501")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name,sql,allowed", FUNCTIONS, ids=[f[0] for f in FUNCTIONS])
def test_functions(server, name, sql, allowed, role):
    _, conns = server
    code = run_as(conns[role], sql.format(r=role))
    assert code == (ALLOWED_ERROR.get(name) if role in allowed else "42501")


def test_every_function_and_view_is_in_the_matrix(server):
    c, _ = server
    fns = set(c.psql("SELECT DISTINCT proname FROM pg_proc WHERE pronamespace = 'warden'::regnamespace "
                     "AND prorettype NOT IN ('trigger'::regtype, 'fdw_handler'::regtype)").split())
    covered = {f[0].split("-")[0].rstrip("()") for f in FUNCTIONS}
    covered -= {"budgets", "idle_policies"}
    assert fns - covered == set()
    rels = set(c.psql("SELECT relname FROM pg_class WHERE relnamespace = 'warden'::regnamespace "
                      "AND relkind IN ('r', 'v', 'f', 'm', 'p')").split())
    assert rels == set(VIEWS)
    # trigger functions and the foreign data wrapper's handler are never executable by others
    assert c.psql("SELECT count(*) FROM pg_proc WHERE pronamespace = 'warden'::regnamespace "
                  "AND prorettype IN ('trigger'::regtype, 'fdw_handler'::regtype) "
                  "AND has_function_privilege('plain', oid, 'EXECUTE')") == "0"


# -- a superuser's session is only ever terminated by a superuser ---------------

def idle_session(cluster, user, app):
    c = psycopg2.connect(cluster.dsn(user=user, application_name=app))
    c.autocommit = True
    return c


def terminated_pids(cluster):
    out = cluster.psql("SELECT pid FROM warden.terminations WHERE NOT dry_run")
    return {int(x) for x in out.split()} if out else set()


def test_terminate_idle_as_signal_member_spares_superusers(make_cluster):
    cluster = make_cluster()
    cluster.psql("CREATE ROLE sig LOGIN IN ROLE pg_signal_backend; CREATE ROLE plain LOGIN; "
                 "CREATE ROLE su2 LOGIN SUPERUSER")
    su = [idle_session(cluster, u, "victims") for u in ("postgres", "su2")]
    pl = idle_session(cluster, "plain", "victims")
    caller = idle_session(cluster, "sig", "caller")
    time.sleep(0.3)
    with caller.cursor() as cur:
        cur.execute("SELECT pid, role FROM warden.terminate_idle(older_than => '100 ms', application => 'victims')")
        rows = cur.fetchall()
    assert rows == [(pl.get_backend_pid(), "plain")]
    assert is_broken(pl)
    assert not any(is_broken(c) for c in su)
    # a superuser's call may (after the sessions are idle long enough again)
    time.sleep(0.3)
    out = cluster.psql("SELECT count(*) FROM warden.terminate_idle(older_than => '100 ms', application => 'victims')")
    assert out == "2"
    for c in su + [pl, caller]:
        c.close()


def test_policy_of_a_non_superuser_spares_superuser_sessions(make_cluster):
    cluster = make_cluster()
    cluster.psql("CREATE ROLE sig LOGIN IN ROLE pg_signal_backend; CREATE ROLE plain LOGIN; "
                 "CREATE ROLE su2 LOGIN SUPERUSER; CREATE ROLE admin2 LOGIN SUPERUSER;"
                 "GRANT EXECUTE ON FUNCTION warden.add_idle_policy(text, interval, text, text, text, text, int, "
                 "text, bool) TO sig; GRANT SELECT, INSERT, UPDATE ON warden.idle_policies TO sig;")
    sig = psycopg2.connect(cluster.dsn(user="sig", application_name="setup"))
    sig.autocommit = True
    with sig.cursor() as cur:
        cur.execute("SELECT warden.add_idle_policy('by-sig', '500 ms', application => 'idle-%')")
        # the owner cannot be forged to a superuser
        cur.execute("UPDATE warden.idle_policies SET owner = 'postgres' WHERE name = 'by-sig'")
        cur.execute("SELECT owner FROM warden.idle_policies WHERE name = 'by-sig'")
        assert cur.fetchone()[0] == "sig"
    sig.close()
    su = [idle_session(cluster, u, "idle-su") for u in ("postgres", "su2")]
    pl = idle_session(cluster, "plain", "idle-plain")
    wait_until(lambda: pl.get_backend_pid() in terminated_pids(cluster), timeout=15,
               what="the policy to terminate the plain role's session")
    worker_passed(cluster, 1.0)  # twice the timeout again: the superusers' sessions stay
    assert not any(is_broken(c) for c in su)
    assert terminated_pids(cluster) == {pl.get_backend_pid()}
    assert "by-sig" in cluster.log_text()

    # A policy of a superuser terminates superusers' sessions; once its owner
    # stops being one, it stops touching them. Only the role changes: no
    # configuration table is written, the loader reloads on the role change.
    cluster.psql("SELECT warden.drop_idle_policy('by-sig')")
    admin = psycopg2.connect(cluster.dsn(user="admin2", application_name="setup"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT warden.add_idle_policy('by-admin2', '500 ms', application => 'late-%')")
    admin.close()
    config_applied(cluster)
    early_su = idle_session(cluster, "su2", "late-early")
    wait_until(lambda: early_su.get_backend_pid() in terminated_pids(cluster), timeout=15,
               what="the superuser's policy to terminate a superuser's session")
    before = config_generation(cluster)
    cluster.psql("BEGIN; GRANT pg_signal_backend TO admin2; ALTER ROLE admin2 NOSUPERUSER; COMMIT")
    config_applied(cluster, after_generation=before)  # reloads only if the role change did it
    late_su = idle_session(cluster, "su2", "late-su")
    late_pl = idle_session(cluster, "plain", "late-plain")
    wait_until(lambda: late_pl.get_backend_pid() in terminated_pids(cluster), timeout=15,
               what="the demoted owner's policy to terminate the plain session")
    worker_passed(cluster, 1.0)
    assert not is_broken(late_su)
    assert late_su.get_backend_pid() not in terminated_pids(cluster)
    for c in su + [pl, early_su, late_su, late_pl]:
        c.close()
