"""The monitoring stack (docs/monitoring.md) against real programs: wardend on
its default port beside Debian's postgres_exporter; its counters of refused
logins and terminated sessions after a scripted storm equal the deltas of
warden.app_usage; `promtool check metrics` on a live scrape; the alert rules
with `promtool test rules`; the Grafana dashboard's expressions against a
live scrape and a real Prometheus; the `/` status page in headless Chromium."""
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clients import budget_loaded, close_all, connect, refused, try_connect
from pgcluster import free_port, wait_until

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
MONITORING = os.path.join(ROOT, "monitoring")
QUERIES = os.path.join(MONITORING, "postgres_exporter", "queries.yaml")
DASHBOARD = os.path.join(MONITORING, "grafana", "pg_warden.json")
EXPORTER = shutil.which("prometheus-postgres-exporter")
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
CHROMIUM = shutil.which("chromium")
DEFAULT_PORT = 9479  # [daemon] http's default, 127.0.0.1:9479


def need(tool, name):
    if not tool:
        pytest.skip(f"{name} is not installed (scripts/install-deps)")


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def get(url, timeout=10, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def samples(text):
    """{(name, frozenset(labels)): value} of an exposition text."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def start_exporter(cluster, port, log_path):
    env = {**os.environ,
           "DATA_SOURCE_NAME": cluster.dsn(application_name="postgres_exporter") + " sslmode=disable"}
    log = open(log_path, "w")
    return subprocess.Popen([EXPORTER, f"--web.listen-address=127.0.0.1:{port}",
                             f"--extend.query-path={QUERIES}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# 1. A port of its own, beside postgres_exporter ------------------------------

def test_default_port_beside_postgres_exporter(make_cluster, wardend, tmp_path):
    need(EXPORTER, "prometheus-postgres-exporter")
    if not port_free(DEFAULT_PORT):
        pytest.skip(f"127.0.0.1:{DEFAULT_PORT} is in use on this machine")
    c = make_cluster()
    w = wardend([("primary", c)])
    # No `http` key: wardend listens on its default.
    w.write(re.sub(r'(?m)^http = .*\n', "", open(w.config).read()))
    assert "http =" not in open(w.config).read()
    w.port = DEFAULT_PORT
    exporter_port = 9187 if port_free(9187) else free_port()
    exporter = start_exporter(c, exporter_port, tmp_path / "exporter.log")
    w.start()
    try:
        w.wait_http()
        wait_until(lambda: 'pg_warden_up{server="primary"} 1' in w.get("/metrics")[1],
                   timeout=15, what="wardend's /metrics on its default port")
        code, text = wait_until(
            lambda: (lambda r: r if r[0] == 200 else None)(
                get(f"http://127.0.0.1:{exporter_port}/metrics")),
            timeout=20, what="postgres_exporter's /metrics")
        assert re.search(r"(?m)^pg_up 1$", text), text[-2000:]
        assert "pg_warden_server_usage_connections" in text
        # Both still serve, each its own families.
        assert w.get("/health")[0] == 200
        assert "pg_warden_build_info" in w.get("/metrics")[1]
        assert "pg_warden_build_info" not in text
    finally:
        stop(exporter)
        w.stop()


# 2. Names, labels, counters ---------------------------------------------------

def app_counters(cluster):
    rows = cluster.psql("SELECT database, role, application_name, refused, terminated "
                        "FROM warden.app_usage")
    out = {}
    for line in rows.splitlines():
        if line:
            d, r, a, ref, term = line.split("|")
            if float(ref) or float(term):  # wardend exports keys with a count only
                out[(d, r, a)] = (float(ref), float(term))
    return out


def metric_counters(text):
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name in ("pg_warden_refused_logins", "pg_warden_terminated_sessions"):
            for s in fam.samples:
                key = (s.labels["datname"], s.labels["usename"], s.labels["application_name"])
                ref, term = out.get(key, (0.0, 0.0))
                if fam.name == "pg_warden_refused_logins":
                    ref = s.value
                else:
                    term = s.value
                out[key] = (ref, term)
    return out


def delta(after, before):
    keys = set(after) | set(before)
    return {k: tuple(a - b for a, b in zip(after.get(k, (0, 0)), before.get(k, (0, 0))))
            for k in keys if after.get(k, (0, 0)) != before.get(k, (0, 0))}


def test_counters_follow_a_storm_and_promtool_is_clean(make_cluster, wardend, tmp_path):
    need(PROMTOOL, "promtool (prometheus)")
    c = make_cluster(conf={"warden.sample_interval": "'100ms'"})
    c.psql("CREATE ROLE app LOGIN")
    c.psql("SELECT warden.set_budget('storm_cap', 2, application => 'storm')")
    budget_loaded(c, "storm_cap", 2)
    # Counters from before the storm: one refused login of storm.
    held = connect(c, "app", "storm", 2)
    conn, err = try_connect(c, user="app", application_name="storm")
    assert conn is None and refused(err), err
    w = wardend([("primary", c)]).start()
    w.wait_http()
    wait_until(lambda: metric_counters(w.get("/metrics")[1]) == app_counters(c) != {},
               timeout=15, what="wardend's counters equal to app_usage before the storm")
    before_sql, before_metrics = app_counters(c), metric_counters(w.get("/metrics")[1])

    # The storm: 25 refused logins of storm, 4 of burst (budget 1, one held),
    # and 5 idle sessions of victim terminated by an idle policy.
    for _ in range(25):
        conn, err = try_connect(c, user="app", application_name="storm")
        assert conn is None and refused(err), err
    c.psql("SELECT warden.set_budget('burst_cap', 1, application => 'burst')")
    budget_loaded(c, "burst_cap", 1)
    held += connect(c, "app", "burst", 1)
    for _ in range(4):
        conn, err = try_connect(c, user="app", application_name="burst")
        assert conn is None and refused(err), err
    victims = connect(c, "app", "victim", 5)
    c.psql("SELECT warden.add_idle_policy('victim_idle', '1 s', application => 'victim', "
           "state => 'idle', keep_min => 0)")
    wait_until(lambda: app_counters(c).get(("postgres", "app", "victim"), (0, 0))[1] == 5,
               timeout=20, what="5 victim sessions terminated")

    sql_delta = delta(app_counters(c), before_sql)
    assert sql_delta == {("postgres", "app", "storm"): (25, 0), ("postgres", "app", "burst"): (4, 0),
                         ("postgres", "app", "victim"): (0, 5)}
    wait_until(lambda: delta(metric_counters(w.get("/metrics")[1]), before_metrics) == sql_delta,
               timeout=15, what=f"wardend's counter deltas equal to app_usage's {sql_delta}")

    code, text = w.get("/metrics")
    assert code == 200
    types = {line.split()[2]: line.split()[3] for line in text.splitlines()
             if line.startswith("# TYPE ")}
    assert types["pg_warden_refused_logins_total"] == "counter"
    assert types["pg_warden_terminated_sessions_total"] == "counter"
    for name, kind in types.items():  # counters, and only counters, end in _total
        assert (kind == "counter") == name.endswith("_total"), (name, kind)
    build = [line for line in text.splitlines() if line.startswith("pg_warden_build_info{")]
    assert len(build) == 1 and re.fullmatch(
        r'pg_warden_build_info\{version="1\.1\.0",commit="([0-9a-f]{7,40}|unknown)"\} 1', build[0]), build
    # Labels as postgres_exporter names them, plus server.
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    for s in fams["pg_warden_connections"].samples:
        assert set(s.labels) == {"server", "datname", "usename", "application_name", "state"}, s
    for s in fams["pg_warden_role_connections"].samples:
        assert set(s.labels) == {"server", "usename"}, s
    budgets = {s.labels["budget"]: s.value for s in fams["pg_warden_budget_max_connections"].samples}
    assert budgets == {"storm_cap": 2, "burst_cap": 1}
    used = {s.labels["budget"]: s.value for s in fams["pg_warden_budget_connections"].samples}
    assert used == {"storm_cap": 2, "burst_cap": 1}
    # No name of wardend's collides with the exporter's queries.yaml families.
    assert not [n for n in types if n.startswith(("pg_warden_app_usage_", "pg_warden_server_usage_"))]

    check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0 and check.stdout.strip() == "" and check.stderr.strip() == "", \
        (check.stdout, check.stderr)
    close_all(held + victims)
    assert w.stop() == 0


# 3. Alert rules ----------------------------------------------------------------

def test_alert_rules_pass_promtool():
    need(PROMTOOL, "promtool (prometheus)")
    d = os.path.join(MONITORING, "prometheus")
    r = subprocess.run([PROMTOOL, "check", "rules", "alerts.yml"], cwd=d, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=d, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    # Every alert of alerts.yml has a test case.
    alerts = set(re.findall(r"(?m)^\s+- alert: (\w+)$", open(os.path.join(d, "alerts.yml")).read()))
    tested = set(re.findall(r"alertname: (\w+)", open(os.path.join(d, "alerts_test.yml")).read()))
    assert alerts and alerts == tested, (alerts, tested)


# 4. The Grafana dashboard ------------------------------------------------------

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "offset", "bool", "inf", "nan"}


def dashboard_exprs():
    d = json.load(open(DASHBOARD))
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []))
            walk(p.get("panels", []))
    walk(d["panels"])
    for v in d["templating"]["list"]:
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", q or "")
        if m:
            exprs.append(m.group(1))
    return exprs


def metric_names(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)     # strings
    e = re.sub(r"\{[^}]*\}", "", e)                  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                 # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        rest = e[m.end():].lstrip()
        if rest.startswith("("):  # a function
            continue
        if m.group(0).lower() in PROMQL_WORDS:
            continue
        names.add(m.group(0))
    return names


def grafana_to_promql(expr):
    return expr.replace("$server", ".+").replace("$__rate_interval", "1m")


def test_dashboard_names_live_metrics_and_prometheus_answers(make_cluster, wardend, tmp_path):
    need(EXPORTER, "prometheus-postgres-exporter")
    need(PROMETHEUS, "prometheus")
    c = make_cluster(conf={"warden.sample_interval": "'100ms'"})
    c.psql("CREATE ROLE app LOGIN")
    c.psql("SELECT warden.set_budget('dash_cap', 1, application => 'dash')")
    budget_loaded(c, "dash_cap", 1)
    c.psql("CREATE ROLE capped LOGIN")
    held = connect(c, "app", "dash", 1)
    conn, err = try_connect(c, user="app", application_name="dash")
    assert conn is None and refused(err), err
    # capped: over its [[role]] limit, so wardend closes its admission (a cap
    # and alerts in the scrape).
    w = wardend([("primary", c)], body='[[role]]\nname = "app"\nmax_connections = 50\n'
                '[[role]]\nname = "capped"\nmax_connections = 1\ncooldown = "1h"\n').start()
    held += connect(c, "capped", "batch", 2)
    exporter_port = free_port()
    exporter = start_exporter(c, exporter_port, tmp_path / "exporter.log")
    prom = None
    try:
        w.wait_http()
        wait_until(lambda: "pg_warden_refused_logins_total{" in w.get("/metrics")[1]
                   and "pg_warden_role_admission_cap_connections{" in w.get("/metrics")[1],
                   timeout=20, what="the refused counter and capped's cap in wardend's scrape")
        _, exporter_text = wait_until(
            lambda: (lambda r: r if r[0] == 200 and "pg_warden_app_usage_connections" in r[1]
                     else None)(get(f"http://127.0.0.1:{exporter_port}/metrics")),
            timeout=20, what="postgres_exporter's scrape with queries.yaml")
        live = {name for name, _ in samples(w.get("/metrics")[1])}
        live |= {name for name, _ in samples(exporter_text)}

        exprs = dashboard_exprs()
        assert len(exprs) >= 15
        missing = {(n, e) for e in exprs for n in metric_names(e) if n not in live}
        assert not missing, missing

        # A real Prometheus scraping both.
        prom_port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "rule_files:\n  - " + os.path.abspath(os.path.join(MONITORING, "prometheus", "alerts.yml")) + "\n"
            "scrape_configs:\n"
            f"  - job_name: wardend\n    static_configs:\n      - targets: ['127.0.0.1:{w.port}']\n"
            f"  - job_name: postgres\n    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n")
        plog = open(tmp_path / "prometheus.log", "w")
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdout=plog, stderr=subprocess.STDOUT)
        api = f"http://127.0.0.1:{prom_port}/api/v1"

        def query(expr):
            code, body = get(f"{api}/query?" + urllib.parse.urlencode({"query": expr}))
            return code, (json.loads(body) if body.startswith("{") else {"raw": body})

        def targets_up():
            code, body = query("up")
            if code != 200:
                return False
            ups = {r["metric"]["job"]: r["value"][1] for r in body["data"]["result"]}
            return ups == {"wardend": "1", "postgres": "1"}
        wait_until(targets_up, timeout=40, what="Prometheus scraping wardend and the exporter")
        # A few scrapes, so that rate() has two samples in its window.
        time.sleep(4)
        # More refusals inside rate()'s window.
        for _ in range(3):
            conn, err = try_connect(c, user="app", application_name="dash")
            assert conn is None and refused(err), err
        time.sleep(3)
        empty = []
        for e in exprs:
            code, body = query(grafana_to_promql(e))
            assert code == 200 and body.get("status") == "success", (e, code, body)
            if not body["data"]["result"]:
                empty.append(e)
        # Only series that need a condition not set up here may be empty.
        allowed_empty = ("idle_in_transaction_connections > 0",)
        assert all(any(a in e for a in allowed_empty) for e in empty), empty
        # The rules load in the same Prometheus.
        code, body = get(f"{api}/rules")
        groups = json.loads(body)["data"]["groups"]
        assert {r["name"] for g in groups for r in g["rules"]} >= {"PgWardenServerUnreachable",
                                                                   "PgWardenLoginsRefused"}
        assert all(r.get("health") != "err" for g in groups for r in g["rules"]), groups
    finally:
        if prom:
            stop(prom)
        stop(exporter)
        close_all(held)
        w.stop()


# 5. The status page in a real browser -----------------------------------------

def chromium(url, tmp_path, *args, budget_ms=8000):
    profile = tmp_path / "chromium-profile"
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                        f"--virtual-time-budget={budget_ms}", *args, url],
                       capture_output=True, text=True, timeout=120)
    return r


def test_status_page_in_chromium(make_cluster, wardend, tmp_path):
    need(CHROMIUM, "chromium")
    c = make_cluster()
    c.psql("CREATE ROLE app_r LOGIN")
    tok = tmp_path / "token"
    tok.write_text("page-token-42\n")
    w = wardend([("primary", c)], daemon_extra=f'http_token_file = "{tok}"',
                body='[[role]]\nname = "app_r"\nmax_connections = 3\ncooldown = "1h"\n').start()
    w.wait_http()
    held = connect(c, "app_r", "orders", 4)  # above its limit: wardend closes its admission
    try:
        def action():
            code, body = w.get("/status.json", token="page-token-42")
            if code != 200:
                return None
            d = json.loads(body)
            return d if d["actions"] and any(r["usename"] == "app_r" and r["admission_cap"] is not None
                                             for r in d["roles"]) else None
        status = wait_until(action, timeout=20, what="wardend closing app_r's admission")
        act = status["actions"][0]["text"]
        assert "app_r" in act, status["actions"]

        # The token protects the page and its data like the other endpoints.
        assert w.get("/")[0] == 401
        assert w.get("/?token=wrong")[0] == 401
        assert w.get("/status.json")[0] == 401
        assert w.get("/status.json?token=page-token-42")[0] == 401  # data: the header only
        code, html = w.get("/?token=page-token-42")
        assert code == 200 and "<title>wardend status</title>" in html
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # self-contained
        assert w.get("/", token="page-token-42")[0] == 200

        url = f"http://127.0.0.1:{w.port}/?token=page-token-42"
        r = chromium(url, tmp_path, "--dump-dom")
        dom = r.stdout
        assert "<html" in dom, r.stderr[-3000:]
        text = re.sub(r"<[^>]+>", " ", dom)
        text = re.sub(r"\s+", " ", text)
        # The server and its status.
        assert re.search(r"Servers .*\bprimary\b (Healthy|Degraded|Unhealthy)", text), text
        # The role at its limit, with its connections against its limit.
        row = re.search(r'<tr class="at-limit"><td>primary</td><td>app_r</td>'
                        r'<td class="n">4</td><td class="n">3</td>', dom)
        assert row, dom
        assert "AT LIMIT" in text and "closed at" in text
        # The action wardend just took.
        assert act in text.replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&") or \
            act in dom, (act, text)
        # Its alert.
        assert "role_over_limit" in json.dumps(status["alerts"]) or "app_r" in text
        assert "Cannot read wardend's status" not in text or 'id="error" style="display: none;"' in dom

        # A screenshot for people (docs/monitoring.md): kept with the test's files.
        chromium(url, tmp_path, f"--screenshot={tmp_path / 'status.png'}", "--window-size=1400,1000")
        assert (tmp_path / "status.png").stat().st_size > 10000
        shutil.copy(tmp_path / "status.png", os.environ.get("WARDEN_STATUS_SCREENSHOT",
                                                            tmp_path / "status-copy.png"))
    finally:
        close_all(held)
        w.stop()
