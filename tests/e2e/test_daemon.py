"""wardend end to end: real servers from the shared harness, real client
connections (psycopg2), the wardend and wardenctl binaries from
$WARDEN_BIN_DIR run as subprocesses with a temporary configuration."""
import json
import os
import pty
import re
import select
import signal
import subprocess
import time

import psycopg2
import pytest

from clients import close_all, connect, count
from pgcluster import wait_until
from wardend import (BIN_DIR, WARDENCTL, WARDEND, admission_cap, connlimit, has_override_api,
                     restored)

if not BIN_DIR:
    pytest.skip("WARDEN_BIN_DIR is not set (scripts/test sets it after building the daemon)",
                allow_module_level=True)
INTERVAL = 0.2  # seconds, the poll interval of every test configuration


def alive(conn):
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        return True
    except psycopg2.Error:
        return False


def test_role_limit_idle_enforced_down_to_max_idle(make_cluster, wardend, tmp_path):
    c = make_cluster()
    c.psql("CREATE ROLE app_idle LOGIN")
    w = wardend([("primary", c)], '[[role]]\nname = "app_idle"\nmax_idle = 2\n').start()
    w.wait_log(r"\[primary\] polled")
    old = connect(c, "app_idle", "worker-old", 4)
    time.sleep(0.3)
    new = connect(c, "app_idle", "worker-new", 2)  # the most recently used: kept
    breach = time.monotonic()
    wait_until(lambda: count(c, "app_idle") == 2, timeout=10, what="idle trimmed to max_idle")
    took = time.monotonic() - breach
    print(f"\nbreach to max_idle enforced: {took * 1000:.0f} ms (interval 200 ms)")
    assert took < 5
    assert all(alive(x) for x in new)
    assert not any(alive(x) for x in old)
    time.sleep(3 * INTERVAL)
    assert count(c, "app_idle") == 2, "never cut below max_idle"
    assert "terminated pid" in w.log() and "max_idle 2" in w.log()
    # Recorded through warden.record_action (source 'daemon').
    rows = c.psql("SELECT count(*) FROM warden.terminations WHERE source = 'daemon' "
                  "AND policy = 'wardend max_idle' AND role = 'app_idle' AND NOT dry_run")
    assert rows == "4"
    assert w.stop() == 0
    close_all(old + new)


def test_admission_closed_over_role_limit_and_reopened_after_cooldown(make_cluster, wardend):
    c = make_cluster()
    c.psql("CREATE ROLE app_adm LOGIN CONNECTION LIMIT 50")
    w = wardend([("primary", c)],
                '[[role]]\nname = "app_adm"\nmax_connections = 3\ncooldown = "1s"\n').start()
    w.wait_log(r"\[primary\] polled")
    held = connect(c, "app_adm", "api", 5)
    breach = time.monotonic()
    wait_until(lambda: admission_cap(c, "app_adm") == 3, timeout=10, interval=0.01,
               what="admission closed at 3")
    print(f"\nbreach to admission closed: {(time.monotonic() - breach) * 1000:.0f} ms (interval 200 ms)")
    assert len(w.journal()) == 1
    if has_override_api(c):  # the extension's override, not ALTER ROLE
        assert w.journal()[0]["mechanism"] == "override"
        assert connlimit(c, "app_adm") == 50
    with pytest.raises(psycopg2.OperationalError, match="too many connections"):
        connect(c, "app_adm")
    close_all(held[:3])  # back under the limit: 2 <= 3
    under = time.monotonic()
    wait_until(lambda: restored(c, "app_adm", 50), timeout=10, what="admission reopened")
    assert time.monotonic() - under >= 0.9, "reopened before the cool-down"
    assert connlimit(c, "app_adm") == 50, "original CONNECTION LIMIT restored exactly"
    assert w.journal() == []
    more = connect(c, "app_adm", "api", 2)  # logins work again
    assert w.stop() == 0
    close_all(held + more)


def test_emergency_close_admission_fires_and_is_undone(make_cluster, wardend):
    # 20 - 3 reserved = 17 usable; wardend's own connection counts too.
    c = make_cluster(conf={"max_connections": "20"})
    c.psql("CREATE ROLE batch LOGIN; CREATE ROLE app_web LOGIN")
    w = wardend([("primary", c)],
                '[[role]]\nname = "batch"\npriority = "low"\n'
                '[[emergency]]\nat_percent = 60\naction = "close_admission"\n',
                daemon_extra="hysteresis_percent = 10").start()
    w.wait_log(r"\[primary\] polled")
    batch = connect(c, "batch", "etl", 4)
    web = connect(c, "app_web", "web", 6)  # 11/17 = 65%
    wait_until(lambda: admission_cap(c, "batch") == 4, timeout=10, what="batch capped at what it holds")
    w.wait_log(r"emergency 60% \(close_admission\) fired")
    with pytest.raises(psycopg2.OperationalError, match="too many connections"):
        connect(c, "batch")
    close_all(web[:4])  # 7/17 = 41% < 60 - 10
    wait_until(lambda: restored(c, "batch", -1), timeout=10, what="batch reopened")
    assert connlimit(c, "batch") == -1
    w.wait_log(r"emergency 60% \(close_admission\) undone")
    close_all(batch + web)
    assert w.stop() == 0


def test_emergency_terminate_idle_skips_critical_roles(make_cluster, wardend):
    c = make_cluster(conf={"max_connections": "20"})
    c.psql("CREATE ROLE app_e LOGIN; CREATE ROLE vip LOGIN")
    w = wardend([("primary", c)],
                '[[role]]\nname = "vip"\npriority = "critical"\n'
                '[[emergency]]\nat_percent = 50\naction = "terminate_idle"\nolder_than = "1s"\n'
                'skip_priority = ["critical"]\n').start()
    w.wait_log(r"\[primary\] polled")
    vip = connect(c, "vip", "console", 2)
    idle = connect(c, "app_e", "svc", 8)  # 11/17 = 65%
    # As many as bring usage under 50 %: 3 (8/17 = 47 %), 4 if the psql that
    # counts is sampled too; never the critical role's, never all of them.
    wait_until(lambda: count(c, "app_e") <= 5, timeout=10, what="idle sessions terminated")
    w.wait_log(r"emergency 50% \(terminate_idle\) fired")
    time.sleep(5 * INTERVAL)
    assert 4 <= count(c, "app_e") <= 5
    close_all(idle)  # 3/17 = 18 % < 50 - 5
    w.wait_log(r"emergency 50% \(terminate_idle\) undone")
    assert all(alive(x) for x in vip), "critical role never touched"
    assert "older_than 1s" in w.log()
    close_all(vip + idle)
    assert w.stop() == 0


def test_kill9_then_restart_restores_connection_limit(make_cluster, wardend):
    c = make_cluster()
    c.psql("CREATE ROLE app_k LOGIN CONNECTION LIMIT 25")
    held = connect(c, "app_k", "api", 4)
    w = wardend([("primary", c)], '[[role]]\nname = "app_k"\nmax_connections = 2\n').start()
    wait_until(lambda: admission_cap(c, "app_k") == 2, timeout=10, what="admission closed")
    w.kill9()
    entries = w.journal()
    assert [(e["role"], e["applied_limit"]) for e in entries] == [("app_k", 2)]
    assert admission_cap(c, "app_k") == 2, "still in force after kill -9"
    r = ctl("status", "--config", w.config)  # the segment outlives kill -9; its pid does not
    assert r.returncode == 1 and "not running" in r.stderr
    close_all(held[:3])  # under the limit now: nothing to put back
    w.start()
    wait_until(lambda: restored(c, "app_k", 25), timeout=10, what="restored after restart")
    assert connlimit(c, "app_k") == 25
    w.wait_log("left by a previous run")
    assert w.journal() == []
    r = wait_until(lambda: (lambda r: r if r.returncode == 0 else None)(
        ctl("status", "--config", w.config)), timeout=10, what="the stale segment replaced")
    assert f"wardend pid {w.proc.pid}" in r.stdout
    assert w.stop() == 0
    close_all(held)


def test_sigterm_undoes_every_change(make_cluster, wardend):
    c = make_cluster()
    c.psql("CREATE ROLE app_t LOGIN")
    held = connect(c, "app_t", "api", 3)
    w = wardend([("primary", c)], '[[role]]\nname = "app_t"\nmax_connections = 1\n').start()
    wait_until(lambda: admission_cap(c, "app_t") == 1, timeout=10, what="admission closed")
    assert w.stop() == 0
    assert restored(c, "app_t", -1)
    assert connlimit(c, "app_t") == -1
    assert w.journal() == []
    close_all(held)


def test_server_restart_while_daemon_runs(make_cluster, wardend):
    c = make_cluster()
    c.psql("CREATE ROLE app_r LOGIN")
    w = wardend([("primary", c)], '[[role]]\nname = "app_r"\nmax_idle = 1\n').start()
    w.wait_http()
    wait_until(lambda: w.health()[0] == 200, timeout=10, what="healthy")
    c.restart()
    w.wait_log(r"\[primary\] (connection lost|poll failed)")
    wait_until(lambda: w.health()[0] == 200 and w.health()[1]["checks"][0]["status"] == "Healthy",
               timeout=15, what="healthy again after the restart")
    conns = connect(c, "app_r", "svc", 3)
    wait_until(lambda: count(c, "app_r") == 1, timeout=10, what="role limit enforced after reconnecting")
    assert len(re.findall(r"\[primary\] connected", w.log())) >= 2
    close_all(conns)
    assert w.stop() == 0


def test_two_servers_one_down(make_cluster, wardend):
    a = make_cluster(name="a")
    b = make_cluster(name="b")
    a.psql("CREATE ROLE app_two LOGIN")
    b.stop()
    w = wardend([("a", a), ("b", b)], '[[role]]\nname = "app_two"\nmax_idle = 0\n').start()
    w.wait_http()
    code, h = wait_until(lambda: (lambda r: r if r[1] and len(r[1]["checks"]) == 2
                                  and r[1]["checks"][0]["status"] == "Healthy" else None)(w.health()),
                         timeout=10, what="a healthy")
    assert code == 503 and h["status"] == "Unhealthy"
    checks = {x["name"]: x for x in h["checks"]}
    assert checks["b"]["status"] == "Unhealthy" and "unreachable" in checks["b"]["description"]
    assert checks["a"]["data"]["connections"] >= 1
    assert w.get("/health/ready")[0] == 503
    conns = connect(a, "app_two", "svc", 2)
    wait_until(lambda: count(a, "app_two") == 0, timeout=10, what="a still served while b is down")
    code, alerts = w.get("/alerts")
    assert any(x["name"] == "server_unreachable" and x["server"] == "b" and x["since"] > 0
               for x in json.loads(alerts)["alerts"])
    b.start()
    wait_until(lambda: w.health()[0] == 200, timeout=15, what="b reconnected")
    assert w.get("/health/ready")[0] == 200
    close_all(conns)
    assert w.stop() == 0


def test_degraded_mode_without_the_extension(make_cluster, wardend):
    c = make_cluster(preload=False)
    c.psql("CREATE ROLE app_d LOGIN CONNECTION LIMIT 30")
    w = wardend([("plain", c)],
                # min_idle_age: the busy sessions below are idle for a moment between
                # their login and their first statement, and must not be trimmed then.
                '[[role]]\nname = "app_d"\nmax_idle = 1\nmax_connections = 2\ncooldown = "500ms"\n'
                'min_idle_age = "2s"\n').start()
    w.wait_log("DEGRADED MODE")
    w.wait_http()
    # a poll that timed out on a loaded machine answers 503 (unreachable) until the next one
    code, h = wait_until(lambda: (lambda r: r if r[0] == 200 and r[1]["checks"][0]["data"]["mode"] != "unknown"
                                  else None)(w.health()), timeout=15, what="polled")
    assert h["checks"][0]["data"]["mode"] == "degraded"
    assert h["checks"][0]["status"] == "Degraded"
    assert "degraded mode" in h["checks"][0]["description"]
    idle = connect(c, "app_d", "svc", 3)
    wait_until(lambda: count(c, "app_d") == 1, timeout=10, what="idle trimmed via pg_terminate_backend")
    # Three sessions were over max_connections too: the limit placed meanwhile is lifted first.
    wait_until(lambda: connlimit(c, "app_d") == 30, timeout=10, what="CONNECTION LIMIT restored")
    # Over max_connections with sessions in a transaction (not idle: kept):
    # ALTER ROLE ... CONNECTION LIMIT, the original restored exactly afterwards.
    busy = connect(c, "app_d", "busy", 3)
    for conn in busy:
        conn.autocommit = False
        conn.cursor().execute("SELECT 1")  # opens a transaction: "idle in transaction"
    wait_until(lambda: connlimit(c, "app_d") == 2, timeout=10, what="ALTER ROLE CONNECTION LIMIT 2")
    assert w.journal()[0]["mechanism"] == "alter_role" and w.journal()[0]["original_limit"] == 30
    close_all(busy)
    wait_until(lambda: connlimit(c, "app_d") == 30, timeout=10, what="CONNECTION LIMIT restored")
    close_all(idle)
    assert w.stop() == 0


def test_health_shape_status_metrics_alerts(make_cluster, wardend):
    c = make_cluster(conf={"max_connections": "23"})  # 20 usable
    c.psql("CREATE ROLE app_h LOGIN")
    w = wardend([("primary", c)], '[[role]]\nname = "app_h"\nmax_connections = 100\n',
                daemon_extra="degraded_percent = 30\nunhealthy_percent = 60").start()
    w.wait_http()
    code, h = wait_until(lambda: (lambda r: r if r[0] == 200 else None)(w.health()), timeout=10,
                         what="healthy")
    assert set(h) == {"status", "checks"} and h["status"] == "Healthy"
    chk = h["checks"][0]
    assert set(chk) == {"name", "status", "description", "data"}
    assert chk["name"] == "primary"
    assert re.fullmatch(r"primary: \d+/23 connections in use", chk["description"])
    for k in ("connections", "max_connections", "usage_percent", "active", "idle",
              "idle_in_transaction", "longest_idle_seconds", "role", "mode"):
        assert k in chk["data"], k
    assert chk["data"]["role"] == "primary" and chk["data"]["mode"] == "extension"
    assert w.get("/health/ready")[0] == 200

    conns = connect(c, "app_h", "svc", 6)  # 7/20 = 35%
    wait_until(lambda: w.health()[1]["status"] == "Degraded", timeout=10, what="Degraded")
    assert w.health()[0] == 200
    conns += connect(c, "app_h", "svc", 6)  # 13/20 = 65%
    wait_until(lambda: w.health()[1]["status"] == "Unhealthy", timeout=10, what="Unhealthy")
    assert w.health()[0] == 503
    alerts = json.loads(w.get("/alerts")[1])["alerts"]
    assert any(a["name"] == "usage_unhealthy" and a["severity"] == "critical" for a in alerts)

    from prometheus_client.parser import text_string_to_metric_families
    code, text = w.get("/metrics")
    assert code == 200
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("pg_warden_up", "pg_warden_server_connections", "pg_warden_server_connection_usage_ratio",
                 "pg_warden_connections", "pg_warden_role_connections", "pg_warden_actions",
                 "pg_warden_poll_duration_seconds", "pg_warden_last_successful_poll_timestamp_seconds"):
        assert name in fams, name
    by_state = {(s.labels["application_name"], s.labels["state"]): s.value
                for s in fams["pg_warden_connections"].samples if s.labels["usename"] == "app_h"}
    assert by_state[("svc", "idle")] + by_state[("svc", "active")] + by_state[("svc", "other")] == 12
    up = [s.value for s in fams["pg_warden_up"].samples]
    assert up == [1.0]
    for line in text.splitlines():  # every family announced with HELP and TYPE
        if line.startswith("pg_warden_"):
            fam = re.match(r"[a-z_]+", line).group(0)
            assert f"# TYPE {fam.removesuffix('_total')}" in text or f"# TYPE {fam}" in text
    close_all(conns)
    wait_until(lambda: w.health()[1]["status"] == "Healthy", timeout=10, what="Healthy again")
    assert w.stop() == 0


def test_bearer_token(make_cluster, wardend, tmp_path):
    c = make_cluster()
    tok = tmp_path / "token"
    tok.write_text("s3cret-token\n")
    w = wardend([("primary", c)], daemon_extra=f'http_token_file = "{tok}"').start()
    w.wait_http()
    assert w.get("/health")[0] == 401
    assert w.get("/metrics", token="wrong")[0] == 401
    assert w.get("/alerts", token="s3cret-token")[0] == 200
    wait_until(lambda: w.get("/health", token="s3cret-token")[0] == 200, timeout=10, what="200 with token")
    assert "s3cret-token" not in w.log()
    assert w.stop() == 0


def ctl(*args, timeout=15):
    return subprocess.run([WARDENCTL, *args], capture_output=True, text=True, timeout=timeout)


def test_wardenctl_status_top_and_second_daemon_refused(make_cluster, wardend, tmp_path):
    c = make_cluster()
    c.psql("CREATE ROLE app_s LOGIN")
    conns = connect(c, "app_s", "status-app", 3)
    w = wardend([("primary", c)], '[[role]]\nname = "app_s"\nmax_idle = 1\n').start()
    wait_until(lambda: count(c, "app_s") == 1, timeout=10, what="trimmed")
    r = wait_until(lambda: (lambda r: r if r.returncode == 0 and "primary" in r.stdout else None)(
        ctl("status", "--config", w.config)), timeout=10, what="wardenctl status")
    assert f"wardend pid {w.proc.pid}" in r.stdout
    assert re.search(r"primary\s+primary\s+extension\s+\d+/200", r.stdout), r.stdout
    assert "terminate pid" in r.stdout  # recent actions
    j = json.loads(ctl("status", "--state-file", w.state_file, "--json").stdout)
    assert j["pid"] == w.proc.pid and j["servers"][0]["reachable"] is True
    assert any(a["application_name"] == "status-app" for a in j["servers"][0]["applications"])

    # wardenctl top in a pseudo-terminal of 80 columns: one refresh, then q.
    pid, fd = pty.fork()
    if pid == 0:
        import fcntl
        import struct
        import termios
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        os.execv(WARDENCTL, [WARDENCTL, "top", "--config", w.config, "--interval", "200ms"])
    out = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and b"status-app" not in out:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    os.write(fd, b"q")
    _, status = os.waitpid(pid, 0)
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out.decode(errors="replace"))
    assert "status-app" in text and "application" in text
    assert max(len(line) for line in text.replace("\r", "").split("\n")) <= 80
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0

    # A second daemon with the same state file refuses to start.
    second = subprocess.run([WARDEND, "--config", w.config], capture_output=True, text=True, timeout=15)
    assert second.returncode == 1
    assert "another wardend is already running" in second.stderr
    assert w.proc.poll() is None
    assert w.stop() == 0
    # Clean exit removes the segment.
    r = ctl("status", "--config", w.config)
    assert r.returncode == 1 and "no status segment" in r.stderr
    close_all(conns)


def test_wardenctl_check_config_and_plan(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[server]]\nname = "p"\ndsn = "x"\n[[role]]\nname = "a"\nmax_idle = "ten"\n')
    r = ctl("check-config", str(bad))
    assert r.returncode == 2
    assert f"{bad}:6: key 'role[0].max_idle'" in r.stderr
    r = subprocess.run([WARDEND, "--config", str(bad)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "role[0].max_idle" in r.stderr and ":6:" in r.stderr
    good = tmp_path / "good.toml"
    good.write_text('[[server]]\nname = "p"\ndsn = "x"\n')
    r = ctl("check-config", str(good))
    assert r.returncode == 0 and "ok" in r.stdout
    example = os.path.join(os.path.dirname(__file__), "..", "..", "daemon", "wardend.example.toml")
    r = ctl("check-config", example)
    assert r.returncode == 0 and "3 role limit(s), 2 emergency step(s)" in r.stdout, r.stderr
    # The old spelling [[budget]] (key `role`) is still read, with one warning at load.
    old = tmp_path / "old.toml"
    old.write_text(f'[daemon]\nstate_file = "{tmp_path}/old.state"\nhttp = ""\n'
                   '[[server]]\nname = "p"\ndsn = "host=/nonexistent"\n'
                   '[[budget]]\nrole = "a"\nmax_idle = 1\n[[budget]]\nrole = "b"\n')
    r = ctl("check-config", str(old))
    assert r.returncode == 0 and "2 role limit(s)" in r.stdout, r.stderr
    assert r.stderr.count("[[budget]] is deprecated") == 1 and f"{old}:7:" in r.stderr, r.stderr
    r = subprocess.run([WARDEND, "--config", str(old), "--once"], capture_output=True, text=True,
                       timeout=30)
    out = r.stdout + r.stderr
    assert out.count("[[budget]] is deprecated") == 1, out
    assert "2 role limit(s)" in out, out

    plan = tmp_path / "plan.toml"
    plan.write_text('max_connections = 500\nreserved = 3\nheadroom = 10\n'
                    '[[service]]\nname = "api"\ninstances = 12\npool_size = 10\n'
                    '[[service]]\nname = "worker"\ninstances = 30\npool_size = 5\n'
                    '[[service]]\nname = "reports"\ninstances = 4\npool_size = 20\n')
    r = ctl("plan", str(plan))
    assert r.returncode == 0, r.stderr
    assert "487 usable" in r.stdout and "headroom: 137 connections" in r.stdout
    assert re.search(r"api\s+12\s+10\s+120\s+[\d.]+%\s+26", r.stdout), r.stdout
    assert "pooler: not needed" in r.stdout
    j = json.loads(ctl("plan", str(plan), "--json").stdout)
    assert j["total"] == 350 and [s["exhausts_at_instances"] for s in j["services"]] == [26, 58, 11]
    plan.write_text(plan.read_text().replace("instances = 30", "instances = 80"))
    r = ctl("plan", str(plan))
    assert r.returncode == 3 and "pooler: needed" in r.stdout and "over capacity by 113" in r.stdout


def test_reload_once_dry_run_json_log_and_masked_password(make_cluster, wardend):
    c = make_cluster()
    c.psql("CREATE ROLE app_o LOGIN; ALTER ROLE postgres PASSWORD 'pw-secret-1'")
    conns = connect(c, "app_o", "svc", 3)
    body = '[[role]]\nname = "app_o"\nmax_idle = 1\n'
    w = wardend([("primary", c)], body, daemon_extra='log_format = "json"')
    w.write(open(w.config).read().replace(f'dsn = "{c.dsn()}"', f'dsn = "{c.dsn()} password=pw-secret-1"'))
    # The extension's worker samples states every 100 ms: let it see them.
    wait_until(lambda: c.psql("SELECT count(*) FROM warden.backends WHERE role = 'app_o'") == "3",
               timeout=5, what="sampled")
    # --dry-run: decides and logs, changes nothing.
    r = w.run_once("--dry-run")
    assert r.returncode == 0, r.stderr
    assert "dry-run: would terminate" in r.stderr and count(c, "app_o") == 3
    assert "pw-secret-1" not in r.stderr and "password=********" in r.stderr
    for line in r.stderr.strip().splitlines():
        rec = json.loads(line)  # JSON lines
        assert {"time", "level", "msg"} <= set(rec)
    # --once: one poll, act, exit.
    r = w.run_once()
    assert r.returncode == 0, r.stderr
    wait_until(lambda: count(c, "app_o") == 1, timeout=5, what="--once trimmed")
    # SIGHUP: an invalid file keeps the old configuration; a valid one applies.
    w.start()
    w.wait_log("polled")
    text = open(w.config).read()
    w.write(text.replace("max_idle = 1", "max_idle = -4"))
    w.proc.send_signal(signal.SIGHUP)
    w.wait_log(r"reload: .*role\[0\]\.max_idle.*keeping the previous configuration")
    conns += connect(c, "app_o", "svc", 2)
    wait_until(lambda: count(c, "app_o") == 1, timeout=10, what="old config still enforced")
    w.write(text.replace("max_idle = 1", "max_idle = 3"))
    w.proc.send_signal(signal.SIGHUP)
    w.wait_log("reloaded")
    conns += connect(c, "app_o", "svc", 4)
    time.sleep(6 * INTERVAL)
    wait_until(lambda: count(c, "app_o") == 3, timeout=10, what="new max_idle 3 enforced")
    assert "pw-secret-1" not in w.log()
    assert w.stop() == 0
    close_all(conns)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def test_rss_while_watching_many_connections(make_cluster, wardend):
    """RSS stays under 30 MB; WARDEN_RSS_CONNECTIONS=1000 for the full figure."""
    n = int(os.environ.get("WARDEN_RSS_CONNECTIONS", "300"))
    c = make_cluster(conf={"max_connections": str(n + 60)})
    c.psql("CREATE ROLE app_m LOGIN")
    conns = []
    for i in range(n):
        conns += connect(c, "app_m", f"svc-{i % 40}")
    w = wardend([("primary", c)],
                '[[role]]\nname = "app_m"\nmax_connections = 100000\nmax_idle = 100000\n'
                '[[emergency]]\nat_percent = 99\naction = "terminate_idle"\nolder_than = "1h"\n').start()
    w.wait_http()
    wait_until(lambda: (lambda h: h[1] and h[1]["checks"][0]["data"]["connections"] >= n)(w.health()),
               timeout=20, what="all connections seen")
    for _ in range(10):  # /metrics and /health under load too
        w.get("/metrics")
        w.get("/health")
    time.sleep(20 * INTERVAL)
    rss, hwm = rss_kb(w.proc.pid)
    print(f"\nwardend watching {n} connections: RSS {rss / 1024:.1f} MB, peak {hwm / 1024:.1f} MB")
    assert hwm < 30 * 1024
    assert w.stop() == 0
    close_all(conns)


def test_pgbouncer_pools_in_metrics_and_health(make_cluster, wardend):
    import shutil
    import threading
    from pgcluster import PgBouncer
    if not shutil.which("pgbouncer"):
        pytest.skip("pgbouncer is not installed (scripts/install-deps installs it)")
    c = make_cluster()
    bouncer = PgBouncer(c, pool_size=2).start()
    try:
        w = wardend([("primary", c)])
        w.write(open(w.config).read().replace(
            f'dsn = "{c.dsn()}"\n',
            f'dsn = "{c.dsn()}"\npgbouncer_dsn = "{bouncer.dsn(dbname="pgbouncer")}"\n'))
        w.start()
        w.wait_http()
        # Two clients hold the pool's two server connections (session mode); a third waits.
        holders = [psycopg2.connect(bouncer.dsn(application_name="via-bouncer")) for _ in range(2)]
        for h in holders:
            h.cursor().execute("SELECT 1")
        waiter = psycopg2.connect(bouncer.dsn(application_name="waiter"))
        t = threading.Thread(target=lambda: waiter.cursor().execute("SELECT 1"), daemon=True)
        t.start()
        from prometheus_client.parser import text_string_to_metric_families

        def waiting():
            # Both at once, from one poll: a client also waits for a moment while
            # pgbouncer logs a server connection in, before the holders are served.
            fams = {f.name: f for f in text_string_to_metric_families(w.get("/metrics")[1])}

            def value(name):
                fam = fams.get(name)
                return max((s.value for s in fam.samples if s.labels["datname"] == "postgres"),
                           default=0) if fam else 0
            return (value("pg_warden_pgbouncer_clients_waiting") >= 1
                    and value("pg_warden_pgbouncer_servers_active") == 2)

        wait_until(waiting, timeout=10, what="two active servers and a waiting client in /metrics")
        text = w.get("/metrics")[1]
        assert 'pg_warden_pgbouncer_up{server="primary"} 1' in text
        assert re.search(r'pg_warden_pgbouncer_servers_active\{server="primary",datname="postgres",'
                         r'usename="postgres"\} 2', text), text
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        assert any(s.labels["datname"] == "postgres" and s.value >= 2
                   for s in fams["pg_warden_pgbouncer_queries"].samples)
        code, h = w.health()
        pgb = h["checks"][0]["data"]["pgbouncer"]
        assert pgb["reachable"] is True and pgb["client_waiting"] >= 1
        assert h["checks"][0]["status"] == "Degraded"
        assert any(a["name"] == "pgbouncer_waiting" for a in json.loads(w.get("/alerts")[1])["alerts"])
        close_all(holders)
        t.join(timeout=10)
        waiter.close()
        wait_until(lambda: w.health()[1]["checks"][0]["status"] == "Healthy", timeout=10,
                   what="no more waiting clients")
        # pgbouncer down: reported, the server itself still served.
        bouncer.stop()
        wait_until(lambda: 'pg_warden_pgbouncer_up{server="primary"} 0' in w.get("/metrics")[1],
                   timeout=10, what="pgbouncer down in /metrics")
        code, h = w.health()
        assert code == 200 and h["checks"][0]["status"] == "Degraded"
        assert h["checks"][0]["data"]["pgbouncer"]["reachable"] is False
        assert h["checks"][0]["data"]["reachable"] is True
        assert w.stop() == 0
    finally:
        bouncer.stop()


def test_idle_in_transaction_timeout_longest_first(make_cluster, wardend):
    c = make_cluster()
    c.psql("CREATE ROLE app_x LOGIN")
    w = wardend([("primary", c)],
                '[[role]]\nname = "app_x"\nidle_in_transaction_timeout = "1s"\n').start()
    w.wait_log(r"\[primary\] polled")
    idle = connect(c, "app_x", "plain-idle", 2)  # idle, not in a transaction: never touched
    txn = connect(c, "app_x", "in-txn", 2)
    for conn in txn:
        conn.autocommit = False
        conn.cursor().execute("SELECT 1")
    start = time.monotonic()
    by_app = ("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_x' "
              "AND application_name = '{}'")
    wait_until(lambda: c.psql(by_app.format("in-txn")) == "0", timeout=10,
               what="idle in transaction terminated")
    assert time.monotonic() - start >= 0.9, "terminated before the timeout"
    assert c.psql(by_app.format("plain-idle")) == "2"
    assert all(alive(x) for x in idle)
    assert "idle_in_transaction_timeout 1s" in w.log()
    close_all(idle + txn)
    assert w.stop() == 0


def test_standby_health_and_override(make_cluster, wardend):
    p = make_cluster()
    p.psql("CREATE ROLE app_sb LOGIN")
    sb = p.make_standby().start()
    w = wardend([("primary", p), ("replica", sb)],
                '[[role]]\nname = "app_sb"\nmax_connections = 1\ncooldown = "500ms"\n').start()
    w.wait_http()

    def replica_check():
        code, h = w.health()
        if not h:
            return None
        chk = {x["name"]: x for x in h["checks"]}.get("replica")
        return chk if chk and chk["data"]["reachable"] else None

    chk = wait_until(replica_check, timeout=15, what="replica polled")
    assert chk["data"]["role"] == "standby" and "replay_lag_seconds" in chk["data"]
    held = connect(sb, "app_sb", "ro", 3)
    if has_override_api(sb):
        wait_until(lambda: admission_cap(sb, "app_sb") == 1, timeout=10, what="override on the standby")
        assert connlimit(p, "app_sb") == -1, "no ALTER ROLE on the primary for a standby's role limit"
        close_all(held)
        wait_until(lambda: restored(sb, "app_sb", -1), timeout=10, what="override lifted")
    else:
        w.wait_log("cannot close admission of role app_sb")
        close_all(held)
    assert w.stop() == 0


def test_corrupt_state_file_refuses_to_start(tmp_path):
    state = tmp_path / "w.state"
    state.write_text('{"version": 1, "entries": [{"server": "p"')
    cfg = tmp_path / "w.toml"
    cfg.write_text(f'[daemon]\nstate_file = "{state}"\nhttp = ""\n[[server]]\nname = "p"\ndsn = "host=/nonexistent"\n')
    r = subprocess.run([WARDEND, "--config", str(cfg)], capture_output=True, text=True, timeout=15)
    assert r.returncode == 1
    assert "malformed state file" in r.stderr and str(state) in r.stderr


def test_reserved_slot_for_a_non_superuser_wardend(make_cluster, wardend):
    """The recipe of docs/daemon.md: a non-superuser `warden` role with a
    pg_warden `reserved` budget still gets in when the server is full."""
    c = make_cluster(conf={"max_connections": "20"})  # 17 usable
    c.psql("CREATE ROLE warden LOGIN; GRANT pg_monitor, pg_signal_backend TO warden; "
           "GRANT USAGE ON SCHEMA warden TO warden; "
           "GRANT EXECUTE ON FUNCTION warden.close_admission(text, text, int, text, interval), "
           "warden.open_admission(text, text), "
           "warden.record_action(int, name, name, text, text, float8, text, bool, inet) TO warden; "
           "CREATE ROLE app_full LOGIN")
    c.psql("SELECT warden.set_budget(name => 'wardend-slot', role => 'warden', "
           "max_connections => 2, reserved => 2)")
    wait_until(lambda: c.psql("SELECT count(*) FROM warden.budget_usage WHERE name = 'wardend-slot'")
               == "1", timeout=5, what="budget loaded")
    held = []
    with pytest.raises(psycopg2.OperationalError, match="too many connections") as e:
        while len(held) < 20:
            held += connect(c, "app_full", "hog")
    print(e.value)
    assert len(held) == 15  # 17 usable - 2 reserved for warden
    w = wardend([("primary", c)], '[[role]]\nname = "app_full"\nmax_idle = 10\n')
    w.write(open(w.config).read().replace(f'dsn = "{c.dsn()}"', f'dsn = "{c.dsn(user="warden")}"'))
    w.start()
    w.wait_log(r"\[primary\] connected")
    wait_until(lambda: count(c, "app_full") == 10, timeout=10, what="max_idle enforced as warden")
    assert "non-superuser" in w.log()
    close_all(held)
    assert w.stop() == 0


def test_server_settings_thresholds_and_exempt_roles(make_cluster, wardend):
    c = make_cluster(conf={"max_connections": "23", "warden.degraded_percent": "20",
                           "warden.unhealthy_percent": "95", "warden.exempt_roles": "'app_ex'"})
    c.psql("CREATE ROLE app_ex LOGIN; CREATE ROLE app_in LOGIN")
    w = wardend([("primary", c)], '[[role]]\nname = "app_ex"\nmax_idle = 0\n'
                '[[role]]\nname = "app_in"\nmax_idle = 0\n').start()
    w.wait_http()
    ex = connect(c, "app_ex", "exempt", 5)  # 6/20 = 30% >= warden.degraded_percent 20
    inn = connect(c, "app_in", "policed", 1)
    wait_until(lambda: count(c, "app_in") == 0, timeout=10, what="non-exempt role trimmed")
    wait_until(lambda: w.health()[1]["status"] == "Degraded", timeout=10,
               what="Degraded by the server's warden.degraded_percent")
    time.sleep(3 * INTERVAL)
    assert count(c, "app_ex") == 5, "warden.exempt_roles never terminated"
    close_all(ex + inn)
    assert w.stop() == 0


def test_extension_created_while_running_is_noticed(make_cluster, wardend):
    c = make_cluster(extension=False)  # preloaded, not created: degraded mode
    w = wardend([("primary", c)]).start()
    w.wait_log("DEGRADED MODE")
    w.wait_http()
    wait_until(lambda: w.health()[1]["checks"][0]["data"]["mode"] == "degraded", timeout=10,
               what="degraded")
    c.psql("CREATE EXTENSION pg_warden")
    w.proc.send_signal(signal.SIGHUP)
    w.wait_log("the pg_warden extension is now present")
    wait_until(lambda: w.health()[1]["checks"][0]["data"]["mode"] == "extension", timeout=10,
               what="extension mode")
    assert w.health()[1]["checks"][0]["status"] == "Healthy"
    assert w.stop() == 0


def test_unwritable_state_file_withholds_changes(make_cluster, wardend):
    c = make_cluster()
    c.psql("CREATE ROLE app_u LOGIN CONNECTION LIMIT 40")
    held = connect(c, "app_u", "api", 3)
    w = wardend([("primary", c)], '[[role]]\nname = "app_u"\nmax_connections = 1\n')
    os.mkdir(w.state_file + ".tmp")  # the journal's temp file cannot be created (even as root)
    w.start()
    w.wait_log("admission of role app_u NOT closed")
    w.wait_http()
    alerts = wait_until(lambda: [a for a in json.loads(w.get("/alerts")[1])["alerts"]
                                 if a["name"] == "state_file_unwritable"], timeout=10,
                        what="state_file_unwritable alert")
    assert alerts[0]["severity"] == "critical"
    assert restored(c, "app_u", 40), "nothing changed that could not be journaled"
    os.rmdir(w.state_file + ".tmp")
    wait_until(lambda: admission_cap(c, "app_u") == 1, timeout=10, what="closed once journaled")
    wait_until(lambda: not [a for a in json.loads(w.get("/alerts")[1])["alerts"]
                            if a["name"] == "state_file_unwritable"], timeout=10, what="alert cleared")
    assert w.stop() == 0
    assert restored(c, "app_u", 40)
    close_all(held)


def test_metrics_cardinality_is_bounded(make_cluster, wardend):
    c = make_cluster()
    c.psql("CREATE ROLE app_many LOGIN")
    conns = []
    for i in range(12):
        conns += connect(c, "app_many", f"svc-{i:02d}", 1 + (i == 0))
    w = wardend([("primary", c)], daemon_extra="metrics_max_applications = 5").start()
    w.wait_http()
    from prometheus_client.parser import text_string_to_metric_families

    def apps():
        fams = {f.name: f for f in text_string_to_metric_families(w.get("/metrics")[1])}
        fam = fams.get("pg_warden_connections")
        return {(s.labels["usename"], s.labels["application_name"]) for s in fam.samples} if fam else set()

    wait_until(lambda: ("<other>", "<other>") in apps(), timeout=10, what="<other> row")
    got = apps()
    assert len(got) == 5
    assert ("app_many", "svc-00") in got  # the largest application (2 connections) kept
    fams = {f.name: f for f in text_string_to_metric_families(w.get("/metrics")[1])}
    total = sum(s.value for s in fams["pg_warden_connections"].samples)
    assert total == sum(s.value for s in fams["pg_warden_server_connections"].samples)
    close_all(conns)
    assert w.stop() == 0
