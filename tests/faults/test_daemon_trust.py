"""wardend's changes never outlive their reason, and nobody's objects stand in
for its own: "could not tell" is never "no extension", the journal follows the
server's identity (a renamed [[server]]), a reconnect reconciles with
warden.admission_overrides, overrides carry a lease (kill -9 and never
restart), search_path is pinned (planted aggregate and operator),
warden.enforce = off makes wardend's actions dry runs, /health keeps libpq's
text to the log, and a few stalled sockets do not stall /health.

Uses the shared harness's wardend (tests/harness/wardend.py)."""
import json
import os
import re
import socket
import time

import psycopg2
import pytest

from clients import close_all, config_applied, count
from pgcluster import wait_until
from wardend import BIN_DIR, admission_cap, restored

if not BIN_DIR:
    pytest.skip("WARDEN_BIN_DIR is not set (scripts/test sets it after building the daemon)",
                allow_module_level=True)

CAP = '[[role]]\nname = "app"\nmax_connections = 2\n'


def hold(cluster, user, n, app="api"):
    conns = []
    for _ in range(n):
        c = psycopg2.connect(cluster.dsn(), user=user, application_name=app)
        c.autocommit = True
        conns.append(c)
    return conns


def capped(cluster, w, n_held=4):
    """A role `app` holding n_held sessions, and wardend (started) capping it at 2."""
    cluster.psql("CREATE ROLE app LOGIN")
    held = hold(cluster, "app", n_held)
    w.start()
    wait_until(lambda: admission_cap(cluster, "app") == 2, timeout=15, what="override in force")
    return held


def entries_for(w, role):
    return [e for e in w.journal() if e["role"] == role]


def kick_wardend(cluster):
    """Ends wardend's session on the server: wardend reconnects."""
    cluster.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE application_name = 'wardend' AND pid <> pg_backend_pid()")


def test_a_locked_probe_is_could_not_tell_not_no_extension(make_cluster, wardend):
    """The capability probe blocked by a lock for longer than wardend's
    statement timeout while an override is in force: the journal entry and the
    override stay; once the lock is gone the override is undone."""
    c = make_cluster()
    w = wardend([("primary", c)], CAP, daemon_extra='statement_timeout = "300ms"')
    held = capped(c, w)
    locker = psycopg2.connect(c.dsn())
    cur = locker.cursor()
    cur.execute("LOCK TABLE warden.server_usage IN ACCESS EXCLUSIVE MODE")
    try:
        kick_wardend(c)  # the reconnect's probe meets the lock
        close_all(held[:3])  # under the limit: the override's reason is gone
        w.wait_log(r"statement timeout", timeout=10)
        time.sleep(3)  # several intervals and cool-downs under the lock
        assert entries_for(w, "app"), "the journal entry must survive a probe that could not tell"
        assert admission_cap(c, "app") == 2, "the override stays while wardend cannot tell"
        assert "DEGRADED MODE" not in w.log()
    finally:
        locker.rollback()
        locker.close()
    wait_until(lambda: restored(c, "app", -1) and not entries_for(w, "app"), timeout=8,
               what="override undone and journaled entry gone once the lock is released")
    assert "reopened admission of role app" in w.log()
    w.stop()


def test_a_reconnect_knows_the_override_it_placed(make_cluster, wardend):
    """wardend's session ends while an override is in force: after the
    reconnect it still knows the override and lifts it when the role is back
    under its limit (well before the lease would)."""
    c = make_cluster()
    w = wardend([("primary", c)], CAP)
    held = capped(c, w)
    kick_wardend(c)
    w.wait_log(r"connection lost|poll failed", timeout=10)
    close_all(held[:3])
    t0 = time.monotonic()
    wait_until(lambda: restored(c, "app", -1), timeout=9, what="override lifted after a reconnect")
    print(f"\noverride lifted {time.monotonic() - t0:.2f} s after the role went under its limit")
    assert "reopened admission of role app" in w.log()
    assert not entries_for(w, "app")
    w.stop()


def test_a_renamed_server_orphans_nothing(make_cluster, wardend):
    """kill -9, the [[server]] renamed in the file, restart: the entry written
    under the old name is found by the server's identity and undone."""
    c = make_cluster()
    w = wardend([("old-name", c)], CAP)
    held = capped(c, w)
    w.kill9()
    (entry,) = entries_for(w, "app")
    assert re.fullmatch(r"\d+/.*", entry["identity"]), entry
    with open(w.config) as f:
        text = f.read()
    w.write(text.replace('name = "old-name"', 'name = "new-name"'))
    close_all(held[:3])
    w.start()
    wait_until(lambda: restored(c, "app", -1) and not entries_for(w, "app"), timeout=8,
               what="the renamed server's entry undone")
    assert re.search(r"\[new-name\] reopened admission of role app", w.log()), w.log()[-2000:]
    w.stop()


def test_kill9_never_restarted_leaves_no_cap_past_the_lease(make_cluster, wardend):
    """kill -9 and no restart: the override's lease runs out. A symbolic link
    planted at the state file's temp path is never followed."""
    c = make_cluster()
    w = wardend([("primary", c)], CAP)
    victim = os.path.join(str(w.dir), "victim")
    with open(victim, "w") as f:
        f.write("not wardend's\n")
    os.symlink(victim, w.state_file + ".tmp")
    held = capped(c, w)
    with open(victim) as f:
        assert f.read() == "not wardend's\n", "the temp file's symlink was followed"
    assert not os.path.islink(w.state_file)
    expires = c.psql("SELECT extract(epoch FROM expires - now()) FROM warden.admission_overrides "
                     "WHERE role = 'app'")
    assert expires and 0 < float(expires) <= 10.5, f"a lease of about 10 s, got {expires!r}"
    w.kill9()
    t0 = time.monotonic()
    wait_until(lambda: admission_cap(c, "app") is None, timeout=15, what="the lease ran out")
    took = time.monotonic() - t0
    print(f"\ncap lifted {took:.1f} s after kill -9 (lease 10 s)")
    close_all(held)


def test_search_path_is_pinned_planted_objects_never_called(make_cluster, wardend):
    """A user with CREATE on public plants json_agg(json) and >=(numeric,
    float8), better matches than pg_catalog's for wardend's poll and its
    termination statement; wardend polls and terminates, the plants are never
    called."""
    c = make_cluster()
    c.psql("""
CREATE ROLE mallory LOGIN;
GRANT CREATE ON SCHEMA public TO mallory;
CREATE TABLE public.called (what text);
GRANT INSERT ON public.called TO PUBLIC;
CREATE ROLE idler LOGIN;
""")
    plant = psycopg2.connect(c.dsn(), user="mallory")
    plant.autocommit = True
    plant.cursor().execute("""
CREATE FUNCTION public.rec(a json, b json) RETURNS json LANGUAGE sql AS
  $$ INSERT INTO public.called VALUES ('json_agg'); SELECT b $$;
CREATE AGGREGATE public.json_agg(json) (sfunc = public.rec, stype = json);
CREATE FUNCTION public.ge(a numeric, b float8) RETURNS bool LANGUAGE sql AS
  $$ INSERT INTO public.called VALUES ('>='); SELECT true $$;
CREATE OPERATOR public.>= (leftarg = numeric, rightarg = float8, function = public.ge);
""")
    plant.close()
    # The plants work: an unpinned session with the default search_path calls them.
    probe = c.psql("SELECT json_agg(x)::text FROM (SELECT '1'::json AS x) s; "
                   "SELECT count(*) FROM public.called")
    assert probe.splitlines()[-1] != "0", "the planted aggregate must win where unpinned"
    c.psql("TRUNCATE public.called")
    idle = hold(c, "idler", 2, app="idle")
    w = wardend([("primary", c)], '[[role]]\nname = "idler"\nmax_idle = 1\n').start()
    wait_until(lambda: c.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'idler'") == "1",
               timeout=15, what="one idle session terminated")
    w.wait_log(r"terminated pid", timeout=5)
    time.sleep(1)  # a few more polls
    assert c.psql("SELECT count(*) FROM public.called") == "0", \
        c.psql("SELECT string_agg(what, ',') FROM public.called")
    w.stop()
    close_all(idle)


def test_enforce_off_makes_wardend_a_dry_run_and_health_says_so(make_cluster, wardend):
    c = make_cluster(conf={"warden.enforce": "off"})
    c.psql("CREATE ROLE app LOGIN")
    held = hold(c, "app", 4)
    w = wardend([("primary", c)], CAP).start()
    w.wait_log(r"warden.enforce is off", timeout=15)
    w.wait_log(r"dry-run: would close admission", timeout=10)
    time.sleep(1)
    assert admission_cap(c, "app") is None, "no override under warden.enforce = off"
    assert not w.journal()
    code, h = w.health()
    chk = h["checks"][0]
    assert chk["data"]["enforce"] is False, chk
    assert "warden.enforce = off" in chk["description"], chk
    w.stop()
    close_all(held)


def test_health_without_a_token_shows_no_libpq_text(make_cluster, wardend, tmp_path):
    c = make_cluster()
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    dead = port.getsockname()[1]
    port.close()

    class Dead:
        def dsn(self):
            return f"host=127.0.0.1 port={dead} user=nosuchuser dbname=postgres"

    w = wardend([("primary", c), ("down", Dead())]).start()
    w.wait_http()
    w.wait_log(r"\[down\] cannot connect", timeout=10)

    def down_check():
        code, h = w.health()
        return h and {x["name"]: x for x in h["checks"]}.get("down")

    chk = wait_until(lambda: (down_check() or {}).get("description", "").find("unreachable") >= 0
                     and down_check(), timeout=10, what="the down server reported")
    text = json.dumps(w.health()[1])
    assert "unreachable" in chk["description"]
    for leak in ("refused", "127.0.0.1", str(dead), "nosuchuser", "connection to server"):
        assert leak not in text, f"{leak!r} in /health: {text}"
    assert "refused" in w.log(), "the libpq text is in the log"
    w.stop()


def test_stalled_sockets_do_not_stall_health(make_cluster, wardend):
    c = make_cluster()
    w = wardend([("primary", c)]).start()
    w.wait_http()
    stalled = []
    try:
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", w.port))
            stalled.append(s)  # connects, sends nothing
        time.sleep(0.2)
        t0 = time.monotonic()
        code, _ = w.get("/health", timeout=10)
        took = time.monotonic() - t0
        print(f"\n/health with 4 stalled sockets open: {took * 1000:.0f} ms")
        assert code in (200, 503) and took < 1.0, (code, took)
    finally:
        for s in stalled:
            s.close()
    w.stop()


def test_a_session_used_since_the_sample_is_spared(make_cluster, wardend):
    """The worker samples every 5 s. Both of a role's sessions are idle at a
    sample (max_idle = 1: the older one, A, is the one to go); A is used right
    after the sample; a wardend --once poll then reads that same sample and
    picks A, and the termination statement itself spares it."""
    c = make_cluster(conf={"warden.sample_interval": "5s"})
    c.psql("CREATE ROLE idler LOGIN")
    a = hold(c, "idler", 1, app="a")[0]
    b = hold(c, "idler", 1, app="b")[0]
    w = wardend([("primary", c)], '[[role]]\nname = "idler"\nmax_idle = 1\n',
                daemon_extra='log_level = "debug"')
    for _ in range(3):
        since = c.psql("SELECT sampled_at FROM warden.server_usage")
        wait_until(lambda: c.psql(f"SELECT sampled_at > '{since}' FROM warden.server_usage") == "t",
                   timeout=10, interval=0.02, what="a fresh sample with both sessions idle")
        sample = c.psql("SELECT sampled_at FROM warden.server_usage")
        assert c.psql("SELECT count(*) FROM warden.backends "
                      "WHERE role = 'idler' AND state = 'idle'") == "2"
        a.cursor().execute("SELECT 1")  # used after the sample, idle again
        r = w.run_once()
        if c.psql("SELECT sampled_at FROM warden.server_usage") == sample:
            break  # wardend's poll read that same sample
    else:
        pytest.fail("wardend --once never ran within one sample interval")
    assert re.search(r"pid \d+ no longer qualifies", r.stdout + r.stderr), r.stdout + r.stderr
    a.cursor().execute("SELECT 1")  # still alive
    assert c.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'idler'") == "2"
    close_all([a, b])


def polls_later(w, n):
    """Waits until wardend's first server has been polled n more times
    (/health's last_poll moved n times): an observable condition, not a sleep."""
    seen = [w.health()[1]["checks"][0]["data"]["last_poll"]]

    def moved():
        t = w.health()[1]["checks"][0]["data"]["last_poll"]
        if t != seen[-1]:
            seen.append(t)
        return len(seen) > n
    wait_until(moved, timeout=15, interval=0.05, what=f"{n} more polls")


def test_superuser_sessions_only_where_a_role_names_them(make_cluster, wardend):
    """Catch-all emergency steps (terminate every idle session, cap every
    priority, from 1 % usage) end a plain role's idle session but never a
    superuser's, and never cap it; a [[role]] that names the superuser
    (max_idle = 0) ends its idle sessions."""
    c = make_cluster()
    c.psql("CREATE ROLE su_app LOGIN SUPERUSER; CREATE ROLE plain LOGIN")
    su = hold(c, "su_app", 2, app="su")
    plain = hold(c, "plain", 1, app="plain")
    catch_all = ('[[emergency]]\nat_percent = 1\naction = "terminate_idle"\nolder_than = "0s"\n'
                 'skip_priority = []\n'
                 '[[emergency]]\nat_percent = 2\naction = "close_admission"\n'
                 'priorities = ["low", "normal", "critical"]\n')
    w = wardend([("primary", c)], catch_all).start()
    try:
        w.wait_http()
        wait_until(lambda: count(c, "plain") == 0, timeout=15,
                   what="the plain role's idle session terminated")
        polls_later(w, 5)  # the steps stay in force: five more polls
        assert count(c, "su_app") == 2
        assert admission_cap(c, "su_app") is None
        for conn in su:
            conn.cursor().execute("SELECT 1")  # alive
        _, text = w.get("/metrics")
        assert 'pg_warden_actions_total{server="primary",kind="terminate"} 1\n' in text, text
    finally:
        assert w.stop() == 0

    # A [[role]] naming the superuser: its limits apply to it.
    w = wardend([("primary", c)], '[[role]]\nname = "su_app"\nmax_idle = 0\n',
                name="named").start()
    try:
        wait_until(lambda: count(c, "su_app") == 0, timeout=15,
                   what="the superuser's idle sessions ended by its [[role]]")
        terminated = c.psql("SELECT count(*) FROM warden.terminations "
                            "WHERE role = 'su_app' AND NOT dry_run")
        assert terminated == "2", terminated
    finally:
        assert w.stop() == 0
        close_all(su + plain)


def test_rewind_role_spared_by_catch_all_steps(make_cluster, wardend):
    """The roles the extension exempts as pg_rewind's (granted EXECUTE on
    pg_read_binary_file, warden.exempt_rewind_roles) are exempt for wardend too:
    a catch-all terminate_idle step ends a plain role's idle session, never theirs."""
    c = make_cluster()
    c.psql("CREATE ROLE rw LOGIN; CREATE ROLE plain LOGIN;"
           "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)"
           " TO rw")
    config_applied(c)
    assert c.psql("SELECT rewind_roles FROM warden.config_status()") == "{rw}"
    rw = hold(c, "rw", 2, app="rewind")
    plain = hold(c, "plain", 1, app="plain")
    w = wardend([("primary", c)], '[[emergency]]\nat_percent = 1\naction = "terminate_idle"\n'
                                  'older_than = "0s"\nskip_priority = []\n').start()
    try:
        w.wait_http()
        wait_until(lambda: count(c, "plain") == 0, timeout=15,
                   what="the plain role's idle session terminated")
        polls_later(w, 5)
        assert count(c, "rw") == 2
        for conn in rw:
            conn.cursor().execute("SELECT 1")  # alive
    finally:
        assert w.stop() == 0
        close_all(rw + plain)
