"""monitoring/postgres_exporter/queries.yaml with the real exporter (Debian's
prometheus-postgres-exporter): a server with pg_warden, connections of two
applications in known states, a refused login and a terminated session; the
exporter's /metrics series equal the rows of warden.app_usage and
warden.server_usage."""
import os
import shutil
import subprocess
import threading
import time
import urllib.request

import psycopg2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from clients import budget_loaded, close_all, connect, refused, try_connect
from pgcluster import free_port, wait_until

EXPORTER = shutil.which("prometheus-postgres-exporter")
QUERIES = os.path.join(os.path.dirname(__file__), "..", "..", "monitoring", "postgres_exporter",
                       "queries.yaml")
if not EXPORTER:
    pytest.skip("prometheus-postgres-exporter is not installed (scripts/install-deps)",
                allow_module_level=True)

APP_COLUMNS = {  # series suffix -> warden.app_usage expression
    "connections": "connections",
    "active_connections": "active",
    "idle_connections": "idle",
    "idle_in_transaction_connections": "idle_in_transaction",
    "longest_idle_seconds": "coalesce(longest_idle_seconds, 0)",
    "longest_idle_in_transaction_seconds": "coalesce(longest_idle_in_transaction_seconds, 0)",
    "peak_connections": "peak_connections",
    "opened_connections_total": "opened",
    "refused_logins_total": "refused",
    "terminated_sessions_total": "terminated",
}
STATUS_CODES = {"healthy": 0, "degraded": 1, "unhealthy": 2}


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    series = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            series.setdefault(s.name, []).append((s.labels, s.value))
    return series


def app_series(series, suffix):
    """{(datname, usename, application_name): value} of pg_warden_app_usage_<suffix>."""
    return {(lb["datname"], lb["usename"], lb["application_name"]): v
            for lb, v in series.get(f"pg_warden_app_usage_{suffix}", [])}


def only(series, name):
    values = series.get(name, [])
    assert len(values) == 1, (name, values)
    return values[0][1]


def sleeper(cluster, app):
    """A connection running a query for the whole test (active in every sample)."""
    conn = psycopg2.connect(cluster.dsn(user="app", application_name=app))
    conn.autocommit = True
    t = threading.Thread(target=lambda: _run_quietly(conn, "SELECT pg_sleep(600)"), daemon=True)
    t.start()
    return conn


def _run_quietly(conn, sql):
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    except psycopg2.Error:
        pass  # terminated at the end of the test


def test_exporter_series_equal_the_usage_rows(make_cluster):
    # degraded from 10 %: with max_connections 40 (37 usable) the test's ~10
    # connections make the status `degraded`, so its code is not a default 0.
    c = make_cluster(conf={"max_connections": "40", "warden.sample_interval": "'100ms'",
                           "warden.degraded_percent": "10", "warden.unhealthy_percent": "90"})
    c.psql("CREATE ROLE app LOGIN")  # budgets do not bind superusers
    c.psql("SELECT warden.set_budget('reports_cap', 2, application => 'reports')")
    budget_loaded(c, "reports_cap", 2)

    billing = connect(c, "app", "billing", 3)            # idle
    in_xact = connect(c, "app", "billing", 1)[0]
    in_xact.autocommit = False
    in_xact.cursor().execute("SELECT 1")                      # idle in transaction
    active = sleeper(c, "billing")                            # active
    reports = connect(c, "app", "reports", 2)            # idle, at the budget
    conn, err = try_connect(c, user="app", application_name="reports")
    assert conn is None and refused(err), err                 # refused: 1
    # terminated: 1, by an idle policy (the oldest idle billing connection; two are kept)
    c.psql("SELECT warden.add_idle_policy('billing_idle', '1 s', application => 'billing', "
           "state => 'idle', keep_min => 2)")
    check = psycopg2.connect(c.dsn(application_name="check"))  # the test's SQL, held open
    check.autocommit = True

    def app_rows():
        with check.cursor() as cur:
            cur.execute("SELECT database, role, application_name, "
                        + ", ".join(APP_COLUMNS.values()) + " FROM warden.app_usage")
            return {tuple(r[:3]): dict(zip(APP_COLUMNS, r[3:])) for r in cur.fetchall()}

    wait_until(lambda: (lambda r: r.get(("postgres", "app", "billing"), {}) == {
        **r.get(("postgres", "app", "billing"), {}), "connections": 4, "active_connections": 1,
        "idle_connections": 2, "idle_in_transaction_connections": 1,
        "terminated_sessions_total": 1})(app_rows()),
        timeout=15, what="billing's states sampled, one terminated by the policy")

    port = free_port()
    log = open(os.path.join(c.base_dir, "exporter.log"), "w")
    env = {**os.environ, "DATA_SOURCE_NAME": c.dsn(application_name="postgres_exporter") + " sslmode=disable"}
    proc = subprocess.Popen([EXPORTER, f"--web.listen-address=127.0.0.1:{port}",
                             f"--extend.query-path={QUERIES}", "--log.level=info"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # The first scrape opens the exporter's connection (a row of its own).
        first = wait_until(lambda: _try_scrape(port), timeout=20, what="the exporter's /metrics")
        assert only(first, "pg_up") == 1
        time.sleep(0.3)  # its connection in a sample, then the scrape to compare
        series = scrape(port)
        rows = app_rows()

        assert only(series, "pg_exporter_last_scrape_error") == 0, open(log.name).read()
        for lb, v in series["pg_exporter_user_queries_load_error"]:
            assert v == 0, (lb, open(log.name).read())
        assert set(app_series(series, "connections")) == set(rows)
        for key in [("postgres", "app", "billing"), ("postgres", "app", "reports")]:
            exported = {suffix: app_series(series, suffix)[key] for suffix in APP_COLUMNS}
            assert exported == pytest.approx(rows[key], abs=0.5), key  # longest idle moves
            assert exported["connections"] == rows[key]["connections"]
        b = {s: app_series(series, s)[("postgres", "app", "billing")] for s in APP_COLUMNS}
        assert (b["connections"], b["active_connections"], b["idle_connections"],
                b["idle_in_transaction_connections"], b["opened_connections_total"],
                b["terminated_sessions_total"], b["refused_logins_total"]) == (4, 1, 2, 1, 5, 1, 0)
        r = {s: app_series(series, s)[("postgres", "app", "reports")] for s in APP_COLUMNS}
        assert (r["connections"], r["idle_connections"], r["refused_logins_total"],
                r["terminated_sessions_total"]) == (2, 2, 1, 0)
        assert _types(port)["pg_warden_app_usage_refused_logins_total"] == "counter"

        with check.cursor() as cur:
            cur.execute("SELECT connections, max_connections, reserved, usage_percent, status "
                        "FROM warden.server_usage")
            conns, maxc, reserved, percent, status = cur.fetchone()
        assert only(series, "pg_warden_server_usage_connections") == conns
        assert only(series, "pg_warden_server_usage_max_connections") == maxc == 40
        assert only(series, "pg_warden_server_usage_reserved_connections") == reserved
        assert only(series, "pg_warden_server_usage_percent") == pytest.approx(percent)
        assert status == "degraded"
        assert only(series, "pg_warden_server_usage_status_code") == STATUS_CODES[status]
        assert 0 <= only(series, "pg_warden_server_usage_sample_age_seconds") < 5
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        close_all(billing + reports + [in_xact, check])
        c.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
               "WHERE application_name = 'billing' AND state = 'active'")
        close_all([active])


def _try_scrape(port):
    try:
        return scrape(port)
    except OSError:
        return None


def _types(port):
    """{family name: TYPE} from the exposition text."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return {line.split()[2]: line.split()[3] for line in r.read().decode().splitlines()
                if line.startswith("# TYPE ")}
