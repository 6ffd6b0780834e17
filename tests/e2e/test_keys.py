"""Keys and the login path: enforcement never depends on the usage table
having room, a login PostgreSQL refuses leaves nothing behind, names are
stored printable, reserved slots of several budgets hold together, and
every refusal says what refused it."""
import psycopg2

from pgcluster import wait_until
from clients import budget_loaded, close_all, refused, try_connect


def fill_keys(cluster, user, n):
    """n distinct application names and n logins to databases that do not exist."""
    for i in range(n):
        c, e = try_connect(cluster, user=user, application_name=f"filler-{i}")
        assert e is None, e
        c.close()
        c, e = try_connect(cluster, user=user, dbname=f"nodb{i}", application_name=f"ghost-{i}")
        assert c is None and "does not exist" in str(e)


def admit(cluster, n, **kw):
    """Opens n logins one by one: (open connections, refusal errors)."""
    ok, errors = [], []
    for _ in range(n):
        c, e = try_connect(cluster, **kw)
        (ok if c is not None else errors).append(c if c is not None else e)
    return ok, errors


def test_budgets_stay_exact_when_the_key_table_is_full(make_cluster):
    cluster = make_cluster(conf={"warden.max_tracked": "8", "max_connections": "60"})
    cluster.psql("CREATE ROLE churn LOGIN; CREATE ROLE capped LOGIN; "
                 "SELECT warden.set_budget(name => 'by-role', max_connections => 5, role => 'capped'); "
                 "SELECT warden.set_budget(name => 'by-app', max_connections => 3, application => 'late-%')")
    budget_loaded(cluster, "by-role", 5)
    budget_loaded(cluster, "by-app", 3)
    fill_keys(cluster, "churn", 150)
    # the table is full: these keys fold into <other> rows, the budgets still count them
    conns, errors = admit(cluster, 9, user="capped", application_name="capped-app")
    try:
        assert len(conns) == 5 and len(errors) == 4
        assert all(refused(e) and 'too many connections for role "capped"' in str(e) for e in errors)
        apps = [admit(cluster, 1, user="churn", application_name=f"late-{i}") for i in range(6)]
        late = [c for ok, _ in apps for c in ok]
        late_errors = [e for _, errs in apps for e in errs]
        conns += late
        assert len(late) == 3 and len(late_errors) == 3
        assert all('too many connections for application "late-' in str(e) for e in late_errors)
        # budget_usage is exact too, folded keys or not
        assert cluster.psql("SELECT connections FROM warden.budget_usage WHERE name = 'by-role'") == "5"
        # no global row with an empty role
        assert cluster.psql("SELECT count(*) FROM warden.app_usage WHERE role = ''") == "0"
    finally:
        close_all(conns)
    # logins to databases that do not exist left no key
    assert cluster.psql("SELECT count(*) FROM warden.app_usage WHERE database::text LIKE 'nodb%'") == "0"


def test_login_refused_by_postgres_leaves_no_key_and_no_opened(make_cluster):
    cluster = make_cluster()
    cluster.psql("CREATE ROLE lim LOGIN CONNECTION LIMIT 1; CREATE ROLE noconn LOGIN; "
                 "CREATE DATABASE closed; REVOKE CONNECT ON DATABASE closed FROM PUBLIC")
    c, e = try_connect(cluster, user="lim", dbname="missing", application_name="ghost")
    assert c is None and "does not exist" in str(e)
    c, e = try_connect(cluster, user="noconn", dbname="closed", application_name="ghost")
    assert c is None and "permission denied" in str(e)
    held, e = try_connect(cluster, user="lim", application_name="limited")
    assert e is None
    try:
        for _ in range(3):
            c, e = try_connect(cluster, user="lim", application_name="limited")
            assert c is None and "too many connections for role \"lim\"" in str(e)
        assert cluster.psql("SELECT count(*) FROM warden.app_usage WHERE application_name = 'ghost'") == "0"
        assert cluster.psql("SELECT connections, opened, peak_connections FROM warden.app_usage "
                            "WHERE application_name = 'limited'") == "1|1|1"
    finally:
        held.close()


def test_names_are_stored_printable_and_budgets_compare_alike(make_cluster):
    cluster = make_cluster()
    cluster.psql("CREATE ROLE \"rôle\" LOGIN; "
                 "SELECT warden.set_budget(name => 'accents', max_connections => 1, role => 'rôle')")
    budget_loaded(cluster, "accents", 1)
    held, e = try_connect(cluster, user="rôle", application_name="a")
    assert e is None, e
    try:
        assert cluster.psql("SELECT role FROM warden.app_usage WHERE application_name = 'a'") == "r??le"
        c, e = try_connect(cluster, user="rôle", application_name="a")
        assert c is None and refused(e) and 'budget "accents"' in str(e)
    finally:
        held.close()


def test_two_reservations_hold_together(make_cluster):
    cluster = make_cluster(conf={"max_connections": "20", "superuser_reserved_connections": "3"})
    # 17 usable slots: wardend-slot keeps 2, ops-headroom 5
    cluster.psql("CREATE ROLE wardend LOGIN; CREATE ROLE ops LOGIN; CREATE ROLE app LOGIN; "
                 "SELECT warden.set_budget(name => 'wardend-slot', max_connections => NULL, role => 'wardend', reserved => 2); "
                 "SELECT warden.set_budget(name => 'ops-headroom', max_connections => NULL, role => 'ops', reserved => 5)")
    budget_loaded(cluster, "wardend-slot", None)
    budget_loaded(cluster, "ops-headroom", None)
    ops, _ = admit(cluster, 5, user="ops")
    assert len(ops) == 5
    apps, errors = admit(cluster, 12, user="app")
    try:
        # 17 - 5 (ops) - 2 (wardend's, unused) = 10 for everyone else
        assert len(apps) == 10 and len(errors) == 2
        assert all("reserved connection slots" in str(e) for e in errors)
        # ops used its 5: it keeps nothing free beyond them, wardend's 2 are still there
        w, e = admit(cluster, 2, user="wardend")
        assert len(w) == 2, e
        close_all(w)
    finally:
        close_all(ops + apps)


def test_refusals_name_what_refused(make_cluster):
    cluster = make_cluster()
    cluster.psql("CREATE ROLE r1 LOGIN; CREATE DATABASE d1; "
                 "SELECT warden.set_budget(name => 'db', max_connections => 0, database => 'd1')")
    budget_loaded(cluster, "db", 0)
    c, e = try_connect(cluster, user="r1", dbname="d1", application_name="x")
    assert c is None and 'too many connections for database "d1"' in str(e)
    cluster.psql("SELECT warden.close_admission(role => 'r1', application => 'x%', max_connections => 0, "
                 "reason => 'incident 42')")
    cluster.psql("ALTER SYSTEM SET warden.enforce = off; SELECT pg_reload_conf()")
    wait_until(lambda: try_connect(cluster, user="r1", application_name="xy")[0] is not None,
               timeout=10, what="enforce off")
    wait_until(lambda: "would refuse" in cluster.log_text(), timeout=5, what="dry-run log")
    line = [l for l in cluster.log_text().splitlines() if "would refuse" in l][-1]
    assert 'override for role "r1", application "x%"' in line and "incident 42" in line, line
    assert 'override "override"' not in line


def test_keys_without_connections_are_reclaimed_and_keep_their_history(make_cluster):
    cluster = make_cluster(conf={"warden.max_tracked": "8", "warden.sample_interval": "100ms"})
    keep, e = try_connect(cluster, application_name="keep-me")
    assert e is None, e
    wait_until(lambda: cluster.psql("SELECT count(*) FROM warden.usage_history "
                                    "WHERE application_name = 'keep-me'") != "0",
               timeout=10, what="keep-me in the history")
    keep.close()
    for i in range(40):
        c, e = try_connect(cluster, application_name=f"pod-{i}")
        assert e is None, e
        c.close()
    # 40 new keys in a table of 8: the ones without connections were reclaimed, nothing folded
    assert cluster.psql("SELECT count(*) FROM warden.app_usage WHERE application_name = '<other>'") == "0"
    assert cluster.psql("SELECT count(*) FROM warden.app_usage") <= "8"
    assert cluster.psql("SELECT count(*) FROM warden.app_usage WHERE application_name = 'pod-39'") == "1"
    assert cluster.psql("SELECT count(*) FROM warden.app_usage WHERE application_name = 'keep-me'") == "0"
    # its history stayed
    assert cluster.psql("SELECT count(*) > 0 FROM warden.usage_history WHERE application_name = 'keep-me'") == "t"
    # a user may not empty it; the superuser may
    cluster.psql("CREATE ROLE nobody LOGIN")
    out = cluster.psql("SELECT warden.reset_history()", user="nobody", check=False)
    assert "permission denied" in out
    cluster.psql("SELECT warden.reset_history()")
    assert cluster.psql("SELECT count(*) FROM warden.usage_history WHERE application_name = 'keep-me'") == "0"


def test_longest_idle_in_transaction_is_shown(make_cluster):
    cluster = make_cluster(conf={"warden.sample_interval": "100ms"})
    c, e = try_connect(cluster, application_name="stuck")
    assert e is None, e
    try:
        c.cursor().execute("SELECT 1")  # psycopg2 opened a transaction: idle in transaction now
        wait_until(lambda: cluster.psql(
            "SELECT longest_idle_in_transaction_seconds > 0.5 AND longest_idle_seconds = 0 "
            "FROM warden.app_usage WHERE application_name = 'stuck'") == "t",
            timeout=10, what="idle in transaction age")
    finally:
        c.close()
