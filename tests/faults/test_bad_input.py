"""Bad input, table-driven: every SQL function of the extension called with
wrong types, NULLs, negatives, overlong names, unicode, quotes and
semicolons. Each bad call fails with a clear ERROR and the expected SQLSTATE
and changes nothing (tables, shared memory, overrides, terminations). Then
hostile names that are valid (quotes, semicolons, unicode, LIKE characters)
go through the whole path and are matched literally at login. And every
setting of the extension with bad values."""
import psycopg2
import psycopg2.sql
import pytest

import pgcluster
from faultlib import budget_loaded, refused, wait_until

EVIL_ROLE = 'x"; DROP TABLE warden.budgets; --'
EVIL_APP = "it's \"quoted\"; DROP TABLE warden.idle_policies; --"
LONG = "x" * 64          # one byte over NAMEDATALEN - 1
LONG_U = "é" * 32        # 64 bytes in UTF-8

# (id, SQL, SQLSTATE). Arguments are literals on purpose: the text is what a
# user types. Every function in the schema appears here (checked below).
CASES = [
    # set_budget(name, max_connections, application, role, database, reserved)
    ("budget-null-name", "SELECT warden.set_budget(NULL, 1)", "22023"),
    ("budget-empty-name", "SELECT warden.set_budget('', 1)", "22023"),
    ("budget-blank-name", "SELECT warden.set_budget('   ', 1)", "22023"),
    ("budget-long-name", f"SELECT warden.set_budget('{LONG}', 1)", "22023"),
    ("budget-long-unicode-name", f"SELECT warden.set_budget('{LONG_U}', 1)", "22023"),
    ("budget-negative", "SELECT warden.set_budget('b', -1)", "22023"),
    ("budget-int-overflow", "SELECT warden.set_budget('b', 2147483648)", "42883"),
    ("budget-wrong-type", "SELECT warden.set_budget('b', 'many')", "22P02"),
    ("budget-numeric", "SELECT warden.set_budget('b', 1.5)", "42883"),
    ("budget-no-limit", "SELECT warden.set_budget('b', NULL)", "22023"),
    ("budget-negative-reserved", "SELECT warden.set_budget('b', 1, reserved => -1)", "22023"),
    ("budget-reserved-over-max", "SELECT warden.set_budget('b', 1, reserved => 5)", "22023"),
    ("budget-reserved-over-server", "SELECT warden.set_budget('b', NULL, reserved => 100000)", "22023"),
    ("budget-long-application", f"SELECT warden.set_budget('b', 1, application => '{LONG}')", "22023"),
    ("budget-long-role", f"SELECT warden.set_budget('b', 1, role => '{LONG_U}')", "22023"),
    ("budget-long-database", f"SELECT warden.set_budget('b', 1, database => '{LONG}')", "22023"),
    ("budget-unicode-application", "SELECT warden.set_budget('b', 1, application => '应用-%')", "22023"),
    ("budget-control-char-application", "SELECT warden.set_budget('b', 1, application => E'a\\tb')", "22023"),
    ("budget-unknown-arg", "SELECT warden.set_budget('b', 1, roles => 'r')", "42883"),
    ("budget-injection-in-name", "SELECT warden.set_budget('b''; DROP TABLE warden.budgets; --', -1)", "22023"),
    ("budget-table-insert", "INSERT INTO warden.budgets (name, max_connections) VALUES ('t', -5)", "22023"),
    ("budget-table-update", "UPDATE warden.budgets SET reserved = -1", "22023"),
    ("budget-table-null-name", "INSERT INTO warden.budgets (name, max_connections) VALUES (NULL, 1)", "22023"),
    ("budget-duplicate-insert", "INSERT INTO warden.budgets (name, max_connections) VALUES ('keep', 1)", "23505"),
    # drop_budget(name)
    ("drop-budget-null", "SELECT warden.drop_budget(NULL)", "22023"),
    ("drop-budget-missing", "SELECT warden.drop_budget('nope')", "42704"),
    ("drop-budget-injection", "SELECT warden.drop_budget('keep''; --')", "42704"),
    # add_idle_policy / validate_idle_policy
    ("policy-null-name", "SELECT warden.add_idle_policy(NULL, '1 min')", "22023"),
    ("policy-empty-name", "SELECT warden.add_idle_policy('', '1 min')", "22023"),
    ("policy-long-name", f"SELECT warden.add_idle_policy('{LONG_U}', '1 min')", "22023"),
    ("policy-null-timeout", "SELECT warden.add_idle_policy('p', NULL)", "22023"),
    ("policy-negative-timeout", "SELECT warden.add_idle_policy('p', '-1 min')", "22023"),
    ("policy-zero-timeout", "SELECT warden.add_idle_policy('p', '0')", "22023"),
    ("policy-bad-interval", "SELECT warden.add_idle_policy('p', 'ten minutes')", "22007"),
    ("policy-bad-state", "SELECT warden.add_idle_policy('p', '1 min', state => 'active')", "22023"),
    ("policy-null-state", "SELECT warden.add_idle_policy('p', '1 min', state => NULL)", "22023"),
    ("policy-negative-keep", "SELECT warden.add_idle_policy('p', '1 min', keep_min => -1)", "22023"),
    ("policy-null-keep", "SELECT warden.add_idle_policy('p', '1 min', keep_min => NULL)", "22023"),
    ("policy-null-dry-run", "SELECT warden.add_idle_policy('p', '1 min', dry_run => NULL)", "22023"),
    ("policy-cron-3-fields", "SELECT warden.add_idle_policy('p', '1 min', schedule => '* * *')", "22023"),
    ("policy-cron-range", "SELECT warden.add_idle_policy('p', '1 min', schedule => '61 * * * *')", "22023"),
    ("policy-cron-empty", "SELECT warden.add_idle_policy('p', '1 min', schedule => '')", "22023"),
    ("policy-cron-step-0", "SELECT warden.add_idle_policy('p', '1 min', schedule => '*/0 * * * *')", "22023"),
    ("policy-cron-backwards", "SELECT warden.add_idle_policy('p', '1 min', schedule => '5-1 * * * *')", "22023"),
    ("policy-cron-injection",
     "SELECT warden.add_idle_policy('p', '1 min', schedule => '* * * * *; DROP TABLE warden.budgets')", "22023"),
    ("policy-cron-unicode", "SELECT warden.add_idle_policy('p', '1 min', schedule => '٣ * * * *')", "22023"),
    ("policy-long-application",
     f"SELECT warden.add_idle_policy('p', '1 min', application => repeat('a', 256))", "22023"),
    ("policy-unicode-application", "SELECT warden.add_idle_policy('p', '1 min', application => 'café%')", "22023"),
    ("policy-long-role", f"SELECT warden.add_idle_policy('p', '1 min', role => '{LONG}')", "22023"),
    ("policy-long-database", f"SELECT warden.add_idle_policy('p', '1 min', database => '{LONG_U}')", "22023"),
    ("policy-duplicate", "SELECT warden.add_idle_policy('keep', '1 min')", "23505"),
    ("policy-table-insert", "INSERT INTO warden.idle_policies (name, idle_timeout) VALUES ('t', '-1 s')", "22023"),
    ("policy-table-update", "UPDATE warden.idle_policies SET keep_min = -3", "22023"),
    ("policy-table-enabled-null", "UPDATE warden.idle_policies SET enabled = NULL", "22023"),
    ("validate-all-null",
     "SELECT warden.validate_idle_policy(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)", "22023"),
    ("validate-wrong-type",
     "SELECT warden.validate_idle_policy('p', 5, NULL, NULL, NULL, 'idle', 0, NULL, false)", "42883"),
    # validate_budget(name, max_connections, application, role, database, reserved)
    ("validate-budget-all-null",
     "SELECT warden.validate_budget(NULL, NULL, NULL, NULL, NULL, NULL)", "22023"),
    ("validate-budget-null-reserved", "SELECT warden.validate_budget('b', 1, NULL, NULL, NULL, NULL)", "22023"),
    ("validate-budget-negative", "SELECT warden.validate_budget('b', -1, NULL, NULL, NULL, 0)", "22023"),
    ("validate-budget-neither", "SELECT warden.validate_budget('b', NULL, NULL, NULL, NULL, 0)", "22023"),
    ("validate-budget-unicode-app", "SELECT warden.validate_budget('b', 1, 'ü%', NULL, NULL, 0)", "22023"),
    ("validate-budget-long-role", f"SELECT warden.validate_budget('b', 1, NULL, '{LONG}', NULL, 0)", "22023"),
    ("validate-budget-wrong-type", "SELECT warden.validate_budget('b', 'x', NULL, NULL, NULL, 0)", "22P02"),
    # drop_idle_policy(name)
    ("drop-policy-null", "SELECT warden.drop_idle_policy(NULL)", "22023"),
    ("drop-policy-missing", "SELECT warden.drop_idle_policy('nope')", "42704"),
    # terminate_idle(older_than, application, role, database, state, keep_min, dry_run)
    ("terminate-null", "SELECT * FROM warden.terminate_idle(NULL)", "22023"),
    ("terminate-negative", "SELECT * FROM warden.terminate_idle('-1 s')", "22023"),
    ("terminate-zero", "SELECT * FROM warden.terminate_idle('0')", "22023"),
    ("terminate-bad-state", "SELECT * FROM warden.terminate_idle('1 s', state => 'idle; --')", "22023"),
    ("terminate-null-state", "SELECT * FROM warden.terminate_idle('1 s', state => NULL)", "22023"),
    ("terminate-negative-keep", "SELECT * FROM warden.terminate_idle('1 s', keep_min => -1)", "22023"),
    ("terminate-null-keep", "SELECT * FROM warden.terminate_idle('1 s', keep_min => NULL)", "22023"),
    ("terminate-null-dry-run", "SELECT * FROM warden.terminate_idle('1 s', dry_run => NULL)", "22023"),
    ("terminate-long-role", f"SELECT * FROM warden.terminate_idle('1 s', role => '{LONG}')", "22023"),
    ("terminate-long-app", "SELECT * FROM warden.terminate_idle('1 s', application => repeat('é', 128))", "22023"),
    ("terminate-unicode-app", "SELECT * FROM warden.terminate_idle('1 s', application => 'ü%')", "22023"),
    ("terminate-wrong-type", "SELECT * FROM warden.terminate_idle(30)", "42883"),
    ("terminate-missing-role", "SELECT * FROM warden.terminate_idle('1 s', role => 'no_such_role')", "42704"),
    ("terminate-missing-db", "SELECT * FROM warden.terminate_idle('1 s', database => 'no_such_db')", "3D000"),
    # record_action(pid, database, role, application, state, idle_seconds, action, dry_run, client_addr)
    ("record-null-pid", "SELECT warden.record_action(NULL, 'd', 'r', 'a', 'idle', 1, 'act')", "22023"),
    ("record-negative-pid", "SELECT warden.record_action(-5, 'd', 'r', 'a', 'idle', 1, 'act')", "22023"),
    ("record-null-action", "SELECT warden.record_action(1, 'd', 'r', 'a', 'idle', 1, NULL)", "22023"),
    ("record-negative-seconds", "SELECT warden.record_action(1, 'd', 'r', 'a', 'idle', -1, 'act')", "22023"),
    ("record-nan-seconds", "SELECT warden.record_action(1, 'd', 'r', 'a', 'idle', 'NaN', 'act')", "22023"),
    ("record-infinite-seconds",
     "SELECT warden.record_action(1, 'd', 'r', 'a', 'idle', 'Infinity', 'act')", "22023"),
    ("record-null-dry-run", "SELECT warden.record_action(1, 'd', 'r', 'a', 'idle', 1, 'act', NULL)", "22023"),
    ("record-long-app", "SELECT warden.record_action(1, 'd', 'r', repeat('é', 40), 'idle', 1, 'act')", "22023"),
    ("record-long-action", f"SELECT warden.record_action(1, 'd', 'r', 'a', 'idle', 1, '{LONG}')", "22023"),
    ("record-long-state", "SELECT warden.record_action(1, 'd', 'r', 'a', repeat('s', 40), 1, 'act')", "22023"),
    ("record-bad-inet", "SELECT warden.record_action(1, 'd', 'r', 'a', 'idle', 1, 'act', false, 'nowhere')",
     "22P02"),
    # close_admission(role, application, max_connections, reason, expires) / open_admission
    ("close-nothing", "SELECT warden.close_admission(NULL)", "22023"),
    ("close-missing-role", "SELECT warden.close_admission('no_such_role')", "42704"),
    ("close-negative", "SELECT warden.close_admission('plain', max_connections => -1)", "22023"),
    ("close-negative-expiry", "SELECT warden.close_admission('plain', expires => '-1 min')", "22023"),
    ("close-zero-expiry", "SELECT warden.close_admission('plain', expires => '0')", "22023"),
    ("close-long-role", f"SELECT warden.close_admission('{LONG_U}')", "22023"),
    ("close-long-app", "SELECT warden.close_admission('plain', application => repeat('a', 300))", "22023"),
    ("close-long-reason", "SELECT warden.close_admission('plain', reason => repeat('é', 1000))", "22023"),
    ("close-unicode-app", "SELECT warden.close_admission(NULL, application => '应用')", "22023"),
    ("close-wrong-type", "SELECT warden.close_admission('plain', max_connections => 'x')", "22P02"),
    ("open-nothing", "SELECT warden.open_admission(NULL, NULL)", "22023"),
    ("open-long-role", f"SELECT warden.open_admission('{LONG}')", "22023"),
    # functions without arguments, called with some; trigger functions called directly
    ("reset-stats-arg", "SELECT warden.reset_stats(1)", "42883"),
    ("reset-history-arg", "SELECT warden.reset_history(1)", "42883"),
    ("assert-preloaded-arg", "SELECT warden.assert_preloaded('x')", "42883"),
    ("app-usage-arg", "SELECT * FROM warden.app_usage('x')", "42883"),
    ("server-usage-arg", "SELECT * FROM warden.server_usage(1)", "42883"),
    ("backends-arg", "SELECT * FROM warden.backends(1)", "42883"),
    ("worker-stats-arg", "SELECT * FROM warden.worker_stats(1)", "42883"),
    ("config-status-arg", "SELECT * FROM warden.config_status(1)", "42883"),
    ("terminations-arg", "SELECT * FROM warden.terminations(1)", "42883"),
    ("budget-usage-arg", "SELECT * FROM warden.budget_usage(1)", "42883"),
    ("overrides-arg", "SELECT * FROM warden.admission_overrides(1)", "42883"),
    ("history-arg", "SELECT * FROM warden.usage_history(1)", "42883"),
    ("pool-advice-arg", "SELECT * FROM warden.pool_advice(1)", "42883"),
    ("history-stats-arg", "SELECT * FROM warden.history_stats(1)", "42883"),
    ("fdw-handler-arg", "SELECT warden.usage_fdw_handler(1)", "42883"),
    ("fdw-handler-direct", "SELECT warden.usage_fdw_handler()", "0A000"),
    ("app-usage-insert", "INSERT INTO warden.app_usage (database, connections) VALUES ('x', 5)", "0A000"),
    ("app-usage-update", "UPDATE warden.app_usage SET connections = 0", "0A000"),
    ("app-usage-delete", "DELETE FROM warden.app_usage", "0A000"),
    ("config-changed-direct", "SELECT warden.config_changed()", "39P01"),
    ("budgets-validate-direct", "SELECT warden.budgets_validate()", "0A000"),
    ("policies-check-direct", "SELECT warden.idle_policies_check()", "0A000"),
    # the foreign data wrapper's handler (behind warden.app_usage) is no SQL function
    ("fdw-handler-direct", "SELECT warden.usage_fdw_handler()", "0A000"),
    ("fdw-handler-arg", "SELECT warden.usage_fdw_handler(1)", "42883"),
]

# Functions whose bad input is only "arguments they do not take" (covered above
# by calling them with one) or that are trigger functions.
FUNCTION_OF_CASE = {
    "set_budget": "budget-", "drop_budget": "drop-budget-", "add_idle_policy": "policy-",
    "validate_idle_policy": "validate-", "validate_budget": "validate-budget-",
    "drop_idle_policy": "drop-policy-",
    "terminate_idle": "terminate-", "record_action": "record-", "close_admission": "close-",
    "open_admission": "open-", "reset_stats": "reset-stats-",
    "reset_history": "reset-history-", "assert_preloaded": "assert-preloaded-",
    "app_usage": "app-usage-", "server_usage": "server-usage-", "backends": "backends-",
    "worker_stats": "worker-stats-", "config_status": "config-status-",
    "terminations": "terminations-", "budget_usage": "budget-usage-",
    "admission_overrides": "overrides-", "usage_history": "history-", "pool_advice": "pool-advice-",
    "history_stats": "history-stats-", "config_changed": "config-changed-",
    "usage_fdw_handler": "fdw-handler-",
    "budgets_validate": "budgets-validate-", "idle_policies_check": "policies-check-",
    "usage_fdw_handler": "fdw-handler-",
}

FINGERPRINT = """
SELECT md5(concat_ws('|',
  (SELECT string_agg(format('%s,%s,%s,%s,%s,%s', name, max_connections, application, role, database, reserved),
                     ';' ORDER BY name) FROM warden.budgets),
  (SELECT string_agg(format('%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s', name, idle_timeout, application, role,
                            database, state, keep_min, schedule, dry_run, enabled, owner), ';' ORDER BY name)
     FROM warden.idle_policies),
  (SELECT string_agg(format('%s,%s,%s,%s,%s', role, application, max_connections, reason, expires), ';'
                     ORDER BY role, application) FROM warden.admission_overrides),
  (SELECT count(*) FROM warden.terminations),
  (SELECT string_agg(name, ',' ORDER BY name) FROM warden.budget_usage)))
"""


@pytest.fixture(scope="module")
def server():
    c = pgcluster.Cluster(name="badinput").init()
    c.start()
    c.psql("CREATE EXTENSION pg_warden; CREATE ROLE plain LOGIN;"
           "SELECT warden.set_budget('keep', 50);"
           "SELECT warden.add_idle_policy('keep', '1 hour', application => 'nobody-uses-this');"
           "SELECT warden.close_admission('plain', max_connections => 40, reason => 'kept');")
    budget_loaded(c, "keep", 50)
    con = psycopg2.connect(c.dsn(application_name="bad-input"))
    con.autocommit = True
    yield c, con
    con.close()
    c.destroy()


def fingerprint(con):
    with con.cursor() as cur:
        cur.execute(FINGERPRINT)
        return cur.fetchone()[0]


def test_every_function_has_bad_input_cases(server):
    _, con = server
    with con.cursor() as cur:
        cur.execute("SELECT DISTINCT proname FROM pg_proc WHERE pronamespace = 'warden'::regnamespace")
        functions = {r[0] for r in cur.fetchall()}
    assert functions == set(FUNCTION_OF_CASE), functions ^ set(FUNCTION_OF_CASE)
    ids = [c[0] for c in CASES]
    for fn, prefix in FUNCTION_OF_CASE.items():
        assert any(i.startswith(prefix) for i in ids), fn


@pytest.mark.parametrize("sql,sqlstate", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(server, sql, sqlstate):
    _, con = server
    before = fingerprint(con)
    with pytest.raises(psycopg2.Error) as err:
        with con.cursor() as cur:
            cur.execute(sql)
    e = err.value
    assert e.pgcode == sqlstate, f"{e.pgcode}: {e.pgerror}"
    assert e.pgerror.startswith("ERROR:"), e.pgerror
    assert fingerprint(con) == before


def test_bad_input_leaves_the_server_healthy(server):
    c, con = server
    with con.cursor() as cur:
        cur.execute("SELECT count(*) FROM warden.budgets WHERE name = 'keep'")
        assert cur.fetchone()[0] == 1
        cur.execute("SELECT status, worker_pid IS NOT NULL FROM warden.server_usage")
        assert cur.fetchone() == ("healthy", True)
    assert "server process" not in c.log_text()  # no backend crashed


def test_limits_on_the_number_of_policies_and_budgets(make_cluster):
    c = make_cluster()
    c.psql("SELECT warden.add_idle_policy('p' || g, '1 hour') FROM generate_series(1, 64) g;"
           "SELECT warden.set_budget('b' || g, 1000) FROM generate_series(1, 128) g;")
    out = c.psql("SELECT warden.add_idle_policy('one-more', '1 hour')", check=False)
    assert "too many idle policies" in out
    out = c.psql("SELECT warden.set_budget('one-more', 5)", check=False)
    assert "too many budgets" in out
    assert c.psql("SELECT (SELECT count(*) FROM warden.idle_policies), (SELECT count(*) FROM warden.budgets)") \
        == "64|128"


# -- hostile but valid names, end to end ---------------------------------------

def connect(cluster, user, application_name=""):
    try:
        return psycopg2.connect(host=cluster.sockdir, port=cluster.port, dbname="postgres", user=user,
                                application_name=application_name), None
    except psycopg2.OperationalError as e:
        return None, e


def test_quotes_semicolons_unicode_are_matched_literally(make_cluster):
    cluster = make_cluster()
    con = psycopg2.connect(cluster.dsn(application_name="setup"))
    con.autocommit = True
    cur = con.cursor()
    for role in (EVIL_ROLE, "x", "rôle-ü", "plain"):
        cur.execute(psycopg2.sql.SQL("CREATE ROLE {} LOGIN").format(psycopg2.sql.Identifier(role)))
    # values go in as bound parameters and as they would be typed, quoted by the server's rules
    cur.execute("SELECT warden.set_budget(name => %s, max_connections => 1, role => %s)",
                ("evil'; DROP TABLE warden.budgets; --", EVIL_ROLE))
    cur.execute("SELECT warden.set_budget(name => 'quoted-app', max_connections => 1, application => %s)",
                (EVIL_APP,))
    # application_name is printable ASCII only (PostgreSQL shows other bytes as '?'):
    # unicode goes in role names, applications use ASCII
    cur.execute("SELECT warden.set_budget(name => 'unicode', max_connections => 1, role => 'rôle-ü', "
                "application => 'app-%')")
    cur.execute(r"SELECT warden.set_budget(name => 'like-escape', max_connections => 0, application => 'a\_b')")
    for name, n in (("evil'; DROP TABLE warden.budgets; --", 1), ("quoted-app", 1), ("unicode", 1),
                    ("like-escape", 0)):
        budget_loaded(cluster, name.replace("'", "''"), n)
    held = []

    def admitted(user, app=""):
        c, e = connect(cluster, user, app)
        assert e is None, f"{user}/{app}: {e}"
        held.append(c)

    def refused_(user, app=""):
        c, e = connect(cluster, user, app)
        assert refused(e), f"{user}/{app}: {e}"

    admitted(EVIL_ROLE)
    refused_(EVIL_ROLE)
    admitted("x")
    admitted("x")                      # 'x' is not the evil role
    admitted("plain", EVIL_APP)
    refused_("plain", EVIL_APP)
    admitted("plain", "its \"quoted\"")  # not the same name
    admitted("rôle-ü", "app-1")
    refused_("rôle-ü", "app-2")
    admitted("rôle-ü", "app")          # the pattern needs the dash
    admitted("plain", "app-3")         # another role
    refused_("plain", "a_b")
    admitted("plain", "axb")           # \_ is a literal underscore
    # the tables are all still there
    cur.execute("SELECT count(*) FROM warden.budgets")
    assert cur.fetchone()[0] == 4
    cur.execute("SELECT to_regclass('warden.idle_policies') IS NOT NULL")
    assert cur.fetchone()[0]

    # admission override on the evil role, then opened
    cur.execute("SELECT max_connections FROM warden.close_admission(role => %s, max_connections => 0, "
                "reason => %s)", (EVIL_ROLE, "reason with 'quotes'; --"))
    assert cur.fetchone()[0] == 0
    cur.execute("SELECT role, reason FROM warden.admission_overrides")
    assert cur.fetchall() == [(EVIL_ROLE, "reason with 'quotes'; --")]
    cur.execute("SELECT warden.drop_budget(%s)", ("evil'; DROP TABLE warden.budgets; --",))
    wait_until(lambda: cluster.psql("SELECT count(*) FROM warden.budget_usage WHERE name LIKE 'evil%'") == "0",
               what="the evil budget gone")
    c, e = connect(cluster, EVIL_ROLE)
    assert refused(e) and "reason with 'quotes'; --" in str(e), str(e)
    cur.execute("SELECT warden.open_admission(role => %s)", (EVIL_ROLE,))
    assert cur.fetchone()[0] is True
    admitted(EVIL_ROLE)

    # an idle policy whose name and application carry quotes terminates exactly that application
    cur.execute("SELECT warden.drop_budget('quoted-app')")
    wait_until(lambda: cluster.psql("SELECT count(*) FROM warden.budget_usage WHERE name = 'quoted-app'") == "0",
               what="the budget of the quoted application gone")
    policy = "p'; DROP TABLE warden.idle_policies; --"
    cur.execute("SELECT warden.add_idle_policy(name => %s, idle_timeout => '1 s', application => %s)",
                (policy, EVIL_APP))
    victim, e = connect(cluster, "x", EVIL_APP)
    assert e is None
    bystander, e = connect(cluster, "x", "it's")
    assert e is None
    wait_until(lambda: cluster.psql("SELECT count(*) FROM warden.terminations WHERE policy = "
                                    "'p''; DROP TABLE warden.idle_policies; --'") == "2",
               timeout=15, what="the policy with quotes to act")
    # the two sessions of that application (plain's, held since above, and x's), no other
    cur.execute("SELECT application_name, role FROM warden.terminations WHERE policy = %s ORDER BY role",
                (policy,))
    assert cur.fetchall() == [(EVIL_APP, "plain"), (EVIL_APP, "x")]
    bystander.autocommit = True
    bystander.cursor().execute("SELECT 1")  # still alive
    cur.execute("SELECT count(*) FROM warden.idle_policies")
    assert cur.fetchone()[0] == 1
    for c in held + [victim, bystander]:
        c.close()
    con.close()


# -- settings ------------------------------------------------------------------

SETTINGS = [
    ("sample-interval-low", "ALTER SYSTEM SET warden.sample_interval = '5ms'", "22023"),
    ("sample-interval-high", "ALTER SYSTEM SET warden.sample_interval = '2min'", "22023"),
    ("sample-interval-word", "ALTER SYSTEM SET warden.sample_interval = 'often'", "22023"),
    ("sample-interval-negative", "ALTER SYSTEM SET warden.sample_interval = -1", "22023"),
    ("max-tracked-zero", "ALTER SYSTEM SET warden.max_tracked = 0", "22023"),
    ("max-tracked-overflow", "ALTER SYSTEM SET warden.max_tracked = 99999999999", "22023"),
    ("degraded-over-100", "ALTER SYSTEM SET warden.degraded_percent = 101", "22023"),
    ("unhealthy-zero", "ALTER SYSTEM SET warden.unhealthy_percent = 0", "22023"),
    ("enforce-not-bool", "ALTER SYSTEM SET warden.enforce = 'maybe'", "22023"),
    ("history-keys-negative", "ALTER SYSTEM SET warden.history_keys = -1", "22023"),
    ("history-save-too-long", "ALTER SYSTEM SET warden.history_save_interval = '2 days'", "22023"),
    ("unknown-setting", "ALTER SYSTEM SET warden.no_such_setting = 1", "42704"),
    ("session-enforce", "SET warden.enforce = off", "55P02"),
    ("session-exempt-roles", "SET warden.exempt_roles = 'me'", "55P02"),
    ("session-database", "SET warden.database = 'x'", "55P02"),
]


@pytest.mark.parametrize("sql,sqlstate", [c[1:] for c in SETTINGS], ids=[c[0] for c in SETTINGS])
def test_bad_settings_are_refused(server, sql, sqlstate):
    c, con = server
    with pytest.raises(psycopg2.Error) as err:
        with con.cursor() as cur:
            cur.execute(sql)
    assert err.value.pgcode == sqlstate, err.value.pgerror
    assert c.psql("SELECT count(*) FROM pg_file_settings WHERE name LIKE 'warden.%' "
                  "AND sourcefile LIKE '%postgresql.auto.conf'") == "0"
    assert c.psql("SHOW warden.enforce") == "on"
