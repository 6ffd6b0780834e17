"""wardend and wardenctl as a DBA following the docs meets them on day one:
actions recorded for good (past the capability probes and SIGHUP), emergency
steps that take no more than needed, wardenctl status that names what it
counts, and bad input refused with a clear error."""
import json
import re
import signal
import subprocess
import time

import psycopg2
import pytest

from clients import close_all, connect, count
from pgcluster import wait_until
from wardend import WARDENCTL, WARDEND, admission_cap

INTERVAL = 0.2


def ctl(*args, timeout=15):
    return subprocess.run([WARDENCTL, *args], capture_output=True, text=True, timeout=timeout)


def alive(conn):
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        return True
    except psycopg2.Error:
        return False


def test_actions_recorded_past_two_probe_periods_and_a_reload(make_cluster, wardend):
    c = make_cluster()
    c.psql("CREATE ROLE app_rec LOGIN")
    w = wardend([("primary", c)], '[[role]]\nname = "app_rec"\nmax_idle = 0\n',
                daemon_extra='probe_interval = "1s"').start()
    w.wait_log(r"\[primary\] polled")
    made = []
    deadline = time.monotonic() + 3.5  # past three probe periods of 1 s
    reloaded = False
    while time.monotonic() < deadline:
        made += connect(c, "app_rec", "rec", 2)
        if not reloaded and time.monotonic() > deadline - 2:
            w.proc.send_signal(signal.SIGHUP)  # a reload probes again at once
            reloaded = True
        time.sleep(0.4)
    wait_until(lambda: count(c, "app_rec") == 0, timeout=10, what="every idle session terminated")
    time.sleep(2 * INTERVAL)
    log = w.log()
    terminated = len(re.findall(r"terminated pid \d+", log))
    assert terminated == len(made), log[-3000:]
    assert "used more than once" not in log, log[-3000:]
    rows = c.psql("SELECT count(*) FROM warden.terminations WHERE source = 'daemon' "
                  "AND role = 'app_rec' AND NOT dry_run")
    assert int(rows) == len(made), log[-3000:]
    assert w.stop() == 0
    close_all(made)


def test_emergency_terminate_idle_takes_only_what_is_needed(make_cluster, wardend):
    # 40 - 3 reserved = 37 usable; 80 % of it is 29.6 connections.
    c = make_cluster(conf={"max_connections": "40"})
    c.psql("CREATE ROLE app_pool LOGIN; CREATE ROLE app_small LOGIN")
    w = wardend([("primary", c)],
                '[[emergency]]\nat_percent = 80\naction = "terminate_idle"\nolder_than = "1s"\n'
                'keep_min = 2\n', daemon_extra="hysteresis_percent = 20").start()
    w.wait_log(r"\[primary\] polled")
    probe = psycopg2.connect(c.dsn())  # one steady connection to count with
    probe.autocommit = True

    def pooled():
        with probe.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_pool'")
            return cur.fetchone()[0]
    small = connect(c, "app_small", "small", 2)  # a group of 2: kept whole (keep_min 2)
    pool = connect(c, "app_pool", "api-1", 28)
    # wardend + probe + 2 + 28 = 32 (86.5 %): 3 terminations bring it to 29 (78.4 %).
    w.wait_log(r"emergency 80% \(terminate_idle\) fired", timeout=15)
    wait_until(lambda: pooled() == 25, timeout=10, what="3 pool sessions terminated")
    time.sleep(8 * INTERVAL)
    assert pooled() == 25, "no more than needed"
    assert all(alive(x) for x in small)
    # The oldest idle went first: the first three connections made.
    assert [alive(x) for x in pool[:3]] == [False, False, False]
    assert all(alive(x) for x in pool[3:])
    close_all(small + pool + [probe])
    assert w.stop() == 0


def test_max_idle_spares_sessions_younger_than_min_idle_age(make_cluster, wardend):
    c = make_cluster()
    c.psql("CREATE ROLE app_young LOGIN")
    w = wardend([("primary", c)],
                '[[role]]\nname = "app_young"\nmax_idle = 0\nmin_idle_age = "3s"\n').start()
    w.wait_log(r"\[primary\] polled")
    conns = connect(c, "app_young", "pool", 2)
    t0 = time.monotonic()
    time.sleep(1.5)
    assert count(c, "app_young") == 2, "sessions idle < min_idle_age are spared"
    wait_until(lambda: count(c, "app_young") == 0, timeout=10, what="terminated once old enough")
    assert time.monotonic() - t0 >= 2.9
    assert w.stop() == 0
    close_all(conns)


def test_emergency_close_admission_never_caps_at_zero(make_cluster, wardend):
    c = make_cluster(conf={"max_connections": "20"})
    c.psql("CREATE ROLE batch0 LOGIN; CREATE ROLE app_web0 LOGIN")
    w = wardend([("primary", c)],
                '[[role]]\nname = "batch0"\npriority = "low"\n'
                '[[emergency]]\nat_percent = 60\naction = "close_admission"\n').start()
    w.wait_log(r"\[primary\] polled")
    web = connect(c, "app_web0", "web", 11)  # 12/17 = 70 %, batch0 holds 0
    wait_until(lambda: admission_cap(c, "batch0") == 1, timeout=10, what="batch0 capped at 1")
    one = connect(c, "batch0", "etl", 1)  # still gets one
    close_all(web + one)
    assert w.stop() == 0


def test_wardenctl_status_names_roles_alerts_and_full_reasons(make_cluster, wardend):
    c = make_cluster(conf={"max_connections": "20"})
    c.psql("CREATE ROLE app_st LOGIN")
    # The sessions first: wardend closes the role's admission at its first poll.
    conns = connect(c, "app_st", "an-application-name-that-is-rather-long", 5)
    w = wardend([("primary", c)],
                '[[role]]\nname = "app_st"\nmax_connections = 2\ncooldown = "1h"\n',
                daemon_extra="degraded_percent = 20\nunhealthy_percent = 95").start()
    w.wait_log(r"\[primary\] polled")
    wait_until(lambda: admission_cap(c, "app_st") == 2, timeout=10, what="admission closed")
    r = wait_until(lambda: (lambda r: r if "admission closed: role app_st" in r.stdout else None)(
        ctl("status", "--config", w.config)), timeout=10, what="wardenctl status with the role")
    assert "admission closed: role app_st at 2 connection(s)" in r.stdout, r.stdout
    assert re.search(r"alert usage_degraded \(warning\): ", r.stdout), r.stdout
    # The reason in full, not cut at a fixed width.
    assert "close admission of role app_st at 2 connections: role app_st: over max_connections 2" \
        in r.stdout, r.stdout
    j = json.loads(ctl("status", "--config", w.config, "--json").stdout)
    s = j["servers"][0]
    assert s["closed_roles"] == [{"role": "app_st", "limit": 2}]
    assert any(a["alert"] == "usage_degraded" for a in s["alert_list"])
    close_all(conns)
    assert w.stop() == 0


def test_unknown_role_is_an_error_in_the_log_and_health(make_cluster, wardend):
    c = make_cluster()
    c.psql("CREATE ROLE app_known LOGIN")
    w = wardend([("primary", c)],
                '[[role]]\nname = "app_known"\nmax_idle = 5\n'
                '[[role]]\nname = "app_typo"\nmax_idle = 5\n').start()
    w.wait_log(r'\[error\] \[primary\] configuration: .*role\[1\]\.name: role "app_typo" does not exist')
    w.wait_http()
    _, h = wait_until(lambda: (lambda r: r if r[1] and r[1]["checks"][0]["data"].get("config_problems")
                               else None)(w.health()), timeout=10, what="problem in /health")
    assert "app_typo" in h["checks"][0]["data"]["config_problems"][0]
    assert "app_typo" in h["checks"][0]["description"]
    assert "app_known" not in json.dumps(h["checks"][0]["data"]["config_problems"])
    assert w.stop() == 0


def test_health_of_a_never_reached_server_says_role_unknown(wardend, tmp_path):
    class Nowhere:
        def dsn(self):
            return "host=/nonexistent-dday connect_timeout=1"
    w = wardend([("gone", Nowhere())]).start()
    w.wait_http()
    w.wait_log(r"cannot connect")
    _, h = w.health()
    assert h["checks"][0]["data"]["role"] == "unknown"
    # One event is one line: libpq's multi-line message is escaped.
    for line in w.log().splitlines():
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[", line), line
    assert w.stop() == 0


def test_degraded_alter_role_failure_says_it_needs_createrole(make_cluster, wardend):
    c = make_cluster(preload=False)
    c.psql("CREATE ROLE w_nocr LOGIN; GRANT pg_monitor, pg_signal_backend TO w_nocr; "
           "CREATE ROLE app_cr LOGIN")

    class AsNoCreateRole:
        def dsn(self):
            return c.dsn(user="w_nocr")
    w = wardend([("plain", AsNoCreateRole())],
                '[[role]]\nname = "app_cr"\nmax_connections = 1\n').start()
    w.wait_log("DEGRADED MODE")
    busy = connect(c, "app_cr", "busy", 3)
    for conn in busy:
        conn.autocommit = False
        conn.cursor().execute("SELECT 1")
    w.wait_log(r"permission denied.*needs the CREATEROLE attribute", timeout=15)
    close_all(busy)
    assert w.stop() == 0


def test_bad_configuration_is_refused_with_file_line_key(tmp_path):
    def check(text, key, line, words):
        f = tmp_path / "w.toml"
        f.write_text(text)
        r = ctl("check-config", str(f))
        assert r.returncode == 2, (text, r.stdout, r.stderr)
        assert f"{f}:{line}: key '{key}'" in r.stderr, r.stderr
        assert words in r.stderr, r.stderr
        # wardend itself refuses it at load the same way.
        r = subprocess.run([WARDEND, "--config", str(f), "--once"], capture_output=True, text=True,
                           timeout=15)
        assert r.returncode == 2 and key in r.stderr, r.stderr

    server = '[[server]]\nname = "p"\ndsn = "host=/tmp"\n'
    check('[[server]]\nname = "p"\ndsn = "host=/tmp pport=5432"\n', "server[0].dsn", 3,
          'invalid connection option "pport"')
    check(server + '[[emergency]]\nat_percent = 90\naction = "terminate_idle"\n'
                   '[[emergency]]\nat_percent = 90\naction = "terminate_idle"\n',
          "emergency[1].at_percent", 8, "duplicate emergency step")
    check('[daemon]\nstate_file = "wardend.state"\n' + server, "daemon.state_file", 2,
          "must be an absolute path")
    # Settings that contradict each other.
    check('[daemon]\ndegraded_percent = 90\nunhealthy_percent = 90\n' + server,
          "daemon.unhealthy_percent", 3, "must be above degraded_percent (90)")
    check('[daemon]\ndegraded_percent = 95\n' + server, "daemon.degraded_percent", 2,
          "must be below unhealthy_percent (90, the default)")
    check(server + '[[role]]\nname = "api"\nmax_connections = 10\nmax_idle = 20\n',
          "role[0].max_idle", 7, "must not be above max_connections (10)")
    check(server + '[[emergency]]\nat_percent = 90\naction = "terminate_idle"\nolder_than = "5m"\n'
                   '[[emergency]]\nat_percent = 95\naction = "terminate_idle"\nolder_than = "1h"\n',
          "emergency[1].at_percent", 9, "can take no session that emergency[0] at 90% does not")
    # A file that cannot be read says why.
    r = ctl("check-config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "No such file or directory" in r.stderr, r.stderr


def test_plan_refuses_impossible_headroom_and_duplicate_services(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text('max_connections = 100\nheadroom = 200\n'
                    '[[service]]\nname = "api"\ninstances = 2\npool_size = 5\n')
    r = ctl("plan", str(plan))
    assert r.returncode == 2 and f"{plan}:2: key 'headroom'" in r.stderr, r.stderr
    plan.write_text('max_connections = 100\n'
                    '[[service]]\nname = "api"\ninstances = 2\npool_size = 5\n'
                    '[[service]]\nname = "api"\ninstances = 1\npool_size = 5\n')
    r = ctl("plan", str(plan))
    assert r.returncode == 2 and "duplicate service name \"api\"" in r.stderr, r.stderr


def test_top_interval_units(tmp_path):
    state = tmp_path / "none.state"
    r = ctl("top", "--state-file", str(state), "--interval", "50ms", "--count", "1")
    assert r.returncode == 2
    assert "at least 100 ms (got \"50ms\" = 50 ms)" in r.stderr, r.stderr
    r = ctl("top", "--state-file", str(state), "--interval", "soon", "--count", "1")
    assert r.returncode == 2 and "a number of seconds" in r.stderr, r.stderr
    # A bare number is seconds: accepted (no daemon here: exit 1, not 2).
    r = ctl("top", "--state-file", str(state), "--interval", "5", "--count", "1")
    assert r.returncode == 1 and "no status segment" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize("variant", ["extension", "extension-1.0", "degraded"])
def test_longest_idle_in_transaction_in_health_metrics_and_top(make_cluster, wardend, variant):
    """A session left idle in a transaction (the one that holds locks and a
    snapshot) shows its age in /health, /metrics and `wardenctl top`: with the
    extension (its app_usage column), with 1.0's SQL (no such column: from
    warden.backends) and in degraded mode (from pg_stat_activity)."""
    c = make_cluster(preload=variant != "degraded")
    if variant == "extension-1.0":
        c.psql("DROP EXTENSION pg_warden; CREATE EXTENSION pg_warden VERSION '1.0'")
    c.psql("CREATE ROLE app_iit LOGIN")
    w = wardend([("primary", c)]).start()
    w.wait_http()
    plain = connect(c, "app_iit", "plain-idle", 1)  # idle, not in a transaction
    forgotten = psycopg2.connect(c.dsn(user="app_iit", application_name="forgotten-tx"))
    forgotten.cursor().execute("SELECT 1")  # autocommit off: the transaction stays open
    try:
        _, h = wait_until(lambda: (lambda r: r if r[1] and r[1]["checks"][0]["data"].get(
            "longest_idle_in_transaction_seconds", 0) >= 2 else None)(w.health()),
            timeout=20, what="/health showing the idle transaction's age")
        data = h["checks"][0]["data"]
        assert data["idle_in_transaction"] >= 1, data
        assert data["mode"] == ("degraded" if variant == "degraded" else "extension"), data

        _, text = w.get("/metrics")
        server = re.search(r'^pg_warden_server_longest_idle_in_transaction_seconds'
                           r'\{server="primary"\} (\S+)$', text, re.M)
        assert server and float(server.group(1)) >= 2, text

        def per_app(app):
            m = re.search(r'^pg_warden_longest_idle_in_transaction_seconds\{server="primary",'
                          r'datname="postgres",usename="app_iit",application_name="' + app +
                          r'"\} (\S+)$', text, re.M)
            assert m, (app, text)
            return float(m.group(1))
        assert per_app("forgotten-tx") >= 2
        assert per_app("plain-idle") == 0  # idle, but not in a transaction

        r = ctl("top", "--config", w.config, "--count", "1")
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        header = next(line for line in lines if line.startswith("database"))
        assert re.search(r"idle s +iit s$", header), header
        row = next(line for line in lines if "forgotten-tx" in line)
        assert float(row.split()[-1]) >= 2, r.stdout
        row = next(line for line in lines if "plain-idle" in line)
        assert float(row.split()[-1]) == 0, r.stdout
        assert re.search(r"iit \d+ \(\d+s\)", r.stdout), r.stdout
    finally:
        forgotten.close()
        close_all(plain)
        assert w.stop() == 0
