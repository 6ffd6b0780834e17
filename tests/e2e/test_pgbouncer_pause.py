"""The pause_pool emergency step against a real pgbouncer (docs/pgbouncer.md):
wardend PAUSEs the pool when server usage crosses the step, journaled before
the PAUSE, and RESUMEs it on the way down; after a kill -9 of wardend the next
start resumes it once no step needs it, and clients through pgbouncer work
again."""
import json
import re
import shutil
import threading
import time

import psycopg2
import pytest

import pgcluster

pytestmark = pytest.mark.skipif(not shutil.which("pgbouncer"), reason="pgbouncer is not installed")

MAX_CONNECTIONS = 20
AT_PERCENT = 50
HOLD = 14  # direct sessions that push usage well over AT_PERCENT


@pytest.fixture(scope="module")
def srv():
    c = pgcluster.Cluster(conf={"max_connections": str(MAX_CONNECTIONS)}).init()
    c.start()
    c.psql("CREATE EXTENSION pg_warden")
    c.psql("CREATE ROLE pooled LOGIN")
    yield c
    c.destroy()


def console(bouncer):
    conn = psycopg2.connect(bouncer.dsn(dbname="pgbouncer"))
    conn.autocommit = True
    return conn


def paused(admin, db="postgres"):
    with admin.cursor() as cur:
        cur.execute("SHOW DATABASES")
        cols = [d[0] for d in cur.description]
        for row in cur.fetchall():
            r = dict(zip(cols, row))
            if r["name"] == db:
                return int(r["paused"])
    raise AssertionError(f"no database {db} in SHOW DATABASES")


def pause_entries(w):
    return [e for e in w.journal() if e.get("mechanism") == "pause_pool"]


def usage(srv):
    return float(srv.psql("SELECT usage_percent FROM warden.server_usage()"))


def hold(srv, n):
    conns = [psycopg2.connect(srv.dsn(application_name="holder")) for _ in range(n)]
    pgcluster.wait_until(lambda: usage(srv) >= AT_PERCENT + 10, timeout=10,
                         what="usage over the step")
    return conns


def release(conns):
    for c in conns:
        c.close()
    conns.clear()


def query_through(bouncer, timeout):
    """SELECT 1 through pgbouncer in a thread: its answer, or None if it did
    not come within `timeout` seconds (the thread is left to finish)."""
    out = {}

    def run():
        try:
            c = psycopg2.connect(bouncer.dsn(application_name="client"))
            c.autocommit = True
            with c.cursor() as cur:
                cur.execute("SELECT 1")
                out["v"] = cur.fetchone()[0]
            c.close()
        except psycopg2.Error as e:
            out["error"] = str(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return t, out


def wait_paused(admin, w, want):
    """Waits until the pool's paused flag is `want`; while it is 1 the journal
    must already hold the entry (it is written before the PAUSE)."""
    def check():
        p = paused(admin)
        if p == 1:
            assert pause_entries(w), "pool paused before the journal held it"
        return p == want
    pgcluster.wait_until(check, timeout=20, what=f"paused = {want}\n{w.log()[-3000:]}")


def test_pause_pool_is_journaled_undone_on_the_way_down_and_after_kill9(srv, wardend):
    bouncer = pgcluster.PgBouncer(srv, pool_mode="transaction", pool_size=2,
                                  db_options="user=pooled").start()
    conns = []
    try:
        w = wardend([("primary", srv)], body=(
            f'[[emergency]]\nat_percent = {AT_PERCENT}\naction = "pause_pool"\n'
            f'pool = "postgres"\n'))
        w.write(open(w.config).read().replace(
            f'dsn = "{srv.dsn()}"\n',
            f'dsn = "{srv.dsn()}"\npgbouncer_dsn = "{bouncer.dsn(dbname="pgbouncer")}"\n'))
        admin = console(bouncer)
        # A pool in use: one client has run a query through it. (pgbouncer
        # 1.18: clients that log in to a pool that never had a server
        # connection while it is paused still wait after RESUME, see
        # docs/pgbouncer.md.)
        warm = psycopg2.connect(bouncer.dsn(application_name="warm"))
        warm.autocommit = True
        warm.cursor().execute("SELECT 1")
        w.start()
        w.wait_http()
        time.sleep(1)  # a few polls at low usage: nothing paused
        assert paused(admin) == 0
        assert pause_entries(w) == []

        # Over the step: paused, journaled first.
        conns = hold(srv, HOLD)
        wait_paused(admin, w, 1)
        [entry] = pause_entries(w)
        assert entry["pool"] == "postgres"
        assert entry["pgbouncer"] == f"{bouncer.dir}:{bouncer.port}"
        assert entry["identity"] != ""  # keyed by the server's identity
        w.wait_log(r"paused pgbouncer pool postgres")
        # What clients see: a query through the pool waits while it is paused...
        t, out = query_through(bouncer, 1.5)
        assert t.is_alive() and out == {}, out
        code, health = w.health()
        assert '"pgbouncer_paused": ["postgres"]' in json.dumps(health)
        status = json.loads(w.get("/status.json")[1])
        assert any("pause pgbouncer pool postgres" in a["text"] for a in status["actions"])
        assert "pgbouncer_paused:postgres" in w.get("/alerts")[1]

        # ...and gets its answer once usage drops and wardend resumes the pool.
        release(conns)
        wait_paused(admin, w, 0)
        pgcluster.wait_until(lambda: pause_entries(w) == [], timeout=10, what="journal empty")
        t.join(10)
        assert out == {"v": 1}
        w.wait_log(r"resumed pgbouncer pool postgres")
        metrics = w.get("/metrics")[1]
        assert 'pg_warden_actions_total{server="primary",kind="pause_pool"} 1' in metrics
        assert 'pg_warden_actions_total{server="primary",kind="resume_pool"} 1' in metrics
        recorded = srv.psql("SELECT policy FROM warden.terminations WHERE policy LIKE "
                            "'wardend %_pool' ORDER BY at").splitlines()
        assert recorded == ["wardend pause_pool", "wardend resume_pool"]

        # kill -9 while paused: the next start resumes it once no step needs it.
        conns = hold(srv, HOLD)
        wait_paused(admin, w, 1)
        w.kill9()
        assert len(pause_entries(w)) == 1
        release(conns)
        time.sleep(1)
        assert paused(admin) == 1  # nobody resumed it meanwhile
        w.start()
        w.wait_log(r"change left in force by a previous run: server primary, pgbouncer \S+ "
                   r"pool postgres paused")
        wait_paused(admin, w, 0)
        pgcluster.wait_until(lambda: pause_entries(w) == [], timeout=10, what="journal empty")
        w.wait_log(r"resumed pgbouncer pool postgres")
        t, out = query_through(bouncer, 10)
        assert out == {"v": 1}

        # kill -9 while paused, restarted with usage still high: it stays
        # paused (no RESUME then PAUSE), and a stop resumes it.
        conns = hold(srv, HOLD)
        wait_paused(admin, w, 1)
        w.kill9()
        w.start()
        w.wait_log(r"change left in force by a previous run")
        time.sleep(1.5)
        assert paused(admin) == 1
        assert len(pause_entries(w)) == 1
        assert w.stop() == 0
        assert paused(admin) == 0
        assert pause_entries(w) == []
        assert re.search(r"resumed pgbouncer pool postgres on \S+ \(wardend stopping\)", w.log())
        release(conns)
        t, out = query_through(bouncer, 10)
        assert out == {"v": 1}
        with warm.cursor() as cur:  # the client connected all along works too
            cur.execute("SELECT 2")
            assert cur.fetchone()[0] == 2
        warm.close()
        admin.close()
    finally:
        release(conns)
        bouncer.stop()


def test_pause_pool_in_session_mode_does_not_hold_wardend_up(srv, wardend):
    """Session mode: PAUSE answers only once the pool's clients disconnect.
    wardend waits for the answer at most statement_timeout, keeps polling, and
    treats the pool as paused (pgbouncer holds new queries); RESUME on the way
    down ends it, and the client connected all along works again."""
    bouncer = pgcluster.PgBouncer(srv, pool_mode="session", pool_size=2,
                                  db_options="user=pooled").start()
    conns = []
    try:
        w = wardend([("primary", srv)], daemon_extra='statement_timeout = "1s"', body=(
            f'[[emergency]]\nat_percent = {AT_PERCENT}\naction = "pause_pool"\n'
            f'pool = "postgres"\n'))
        w.write(open(w.config).read().replace(
            f'dsn = "{srv.dsn()}"\n',
            f'dsn = "{srv.dsn()}"\npgbouncer_dsn = "{bouncer.dsn(dbname="pgbouncer")}"\n'))
        admin = console(bouncer)
        session = psycopg2.connect(bouncer.dsn(application_name="session"))
        session.autocommit = True
        session.cursor().execute("SELECT 1")  # holds its server connection
        w.start()
        w.wait_http()

        conns = hold(srv, HOLD)
        wait_paused(admin, w, 1)
        w.wait_log(r"pausing pgbouncer pool postgres on \S+: .*new clients wait")
        # The poll loop goes on while the PAUSE is pending in pgbouncer.
        def last_poll():
            m = re.search(r'^pg_warden_last_successful_poll_timestamp_seconds\{server="primary"\} '
                          r'(\S+)$', w.get("/metrics")[1], re.M)
            return float(m.group(1)) if m else 0.0
        first = last_poll()
        pgcluster.wait_until(lambda: last_poll() >= first + 1, timeout=10, what="polls go on")
        assert paused(admin) == 1
        assert len(pause_entries(w)) == 1

        release(conns)
        wait_paused(admin, w, 0)
        pgcluster.wait_until(lambda: pause_entries(w) == [], timeout=10, what="journal empty")
        with session.cursor() as cur:
            cur.execute("SELECT 2")
            assert cur.fetchone()[0] == 2
        session.close()
        t, out = query_through(bouncer, 10)
        assert out == {"v": 1}
        assert w.stop() == 0
        admin.close()
    finally:
        release(conns)
        bouncer.stop()
