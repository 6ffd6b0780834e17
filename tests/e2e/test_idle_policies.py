"""Idle-termination policies end to end: real servers from the shared harness,
real libpq connections. Lateness is measured from the client's side (the
moment the query returned, the session's idle start, to the moment its socket
turns readable with the FATAL the termination sends) and from the server's
side (idle_seconds in warden.terminations, which must never be below the
timeout)."""
import datetime
import os
import select
import statistics
import subprocess
import time

import psycopg2
import pytest

import pgcluster
from clients import config_applied


@pytest.fixture(scope="module")
def srv():
    c = pgcluster.Cluster(conf={"max_connections": "400"}).init()
    c.start()
    c.psql("CREATE EXTENSION pg_warden")
    c.psql("CREATE ROLE ops LOGIN IN ROLE pg_signal_backend; CREATE ROLE app LOGIN")
    c.psql("GRANT EXECUTE ON FUNCTION warden.add_idle_policy(text, interval, text, text, text,"
           " text, int, text, bool) TO ops;"
           "GRANT SELECT, INSERT, UPDATE, DELETE ON warden.idle_policies TO ops")
    yield c
    c.destroy()


@pytest.fixture
def db(srv):
    yield srv
    srv.psql("DELETE FROM warden.idle_policies")
    config_applied(srv)


class Session:
    """One client connection, remembering when it last became idle."""

    def __init__(self, cluster, app, user="postgres"):
        self.conn = psycopg2.connect(cluster.dsn(user=user, application_name=app))
        self.conn.autocommit = True
        self.app = app
        self.idle_since = None
        self.killed_at = None
        self.pid = self.conn.get_backend_pid()

    def use(self, sql="SELECT 1"):
        with self.conn.cursor() as cur:
            cur.execute(sql)
        self.idle_since = time.monotonic()

    def fileno(self):
        return self.conn.fileno()

    def close(self):
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - already terminated
            pass


def watch(sessions, seconds):
    """Records when each session's socket turns readable (terminated) within `seconds`."""
    poller = select.poll()
    by_fd = {}
    for s in sessions:
        if s.killed_at is None:
            poller.register(s.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
            by_fd[s.fileno()] = s
    deadline = time.monotonic() + seconds
    while by_fd:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for fd, _ev in poller.poll(left * 1000):
            s = by_fd.pop(fd, None)
            if s is not None:
                s.killed_at = time.monotonic()
                poller.unregister(fd)
    return [s for s in sessions if s.killed_at is not None]


def wait_policy_loaded(cluster, name):
    """The policy committed is in shared memory and the worker has sampled with it."""
    config_applied(cluster)


def terminations(cluster, where="true"):
    out = cluster.psql("SELECT pid, policy, dry_run, idle_seconds, source FROM warden.terminations"
                       f" WHERE {where} ORDER BY at")
    rows = []
    for line in out.splitlines():
        pid, policy, dry, idle, source = line.split("|")
        rows.append((int(pid), policy, dry == "t", float(idle), source))
    return rows


def lateness_ms(sessions, timeout_s):
    return sorted((s.killed_at - s.idle_since - timeout_s) * 1000 for s in sessions)


def pct(values, p):
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def test_offender_gone_on_time_never_early(db):
    db.psql("SELECT warden.add_idle_policy('ontime', '1500 ms', application => 'ontime')")
    wait_policy_loaded(db, "ontime")
    sessions = [Session(db, "ontime") for _ in range(20)]
    bystander = Session(db, "other-app")
    bystander.use()
    for s in sessions:
        s.use()
        time.sleep(0.037)  # spread the deadlines over more than a tick
    killed = watch(sessions + [bystander], 1.5 + 1.5)
    assert set(killed) == set(sessions), "every offender goes, the other application stays"
    late = lateness_ms(sessions, 1.5)
    print(f"\nlateness over {len(late)} terminations: p50 {pct(late, 50):.1f} ms,"
          f" p99 {pct(late, 99):.1f} ms, max {late[-1]:.1f} ms, min {late[0]:.1f} ms")
    # The client stamps idle_since when the result arrives, after the server went
    # idle; on a loaded box that delay reaches a few ms, so the client's view can
    # look early by that much. "Never early" is asserted exactly below, from the
    # server's own idle time (pgstat's state_start).
    assert late[0] > -25.0, "terminated early (beyond the client's stamping delay)"
    assert pct(late, 99) < 100, "far later than the 20 ms target even on a loaded box"
    rows = [r for r in terminations(db, "policy = 'ontime'")]
    assert sorted(r[0] for r in rows) == sorted(s.pid for s in sessions)
    assert all(r[3] >= 1.5 for r in rows), "server-side idle time below the timeout"
    assert all(not r[2] and r[4] == "policy" for r in rows)
    assert "policy \"ontime\"" in db.log_text()
    counted = db.psql("SELECT sum(terminated) FROM warden.app_usage WHERE application_name = 'ontime'")
    assert int(counted) == 20
    bystander.use()  # still alive
    bystander.close()


def test_keep_min_keeps_newest_active_and_other_apps_untouched(db):
    db.psql("SELECT warden.add_idle_policy('pool', '1 s', application => 'pool%', keep_min => 3)")
    wait_policy_loaded(db, "pool")
    pool = [Session(db, "pool-a") for _ in range(8)]
    other = Session(db, "worker")
    other.use()
    # one session of the same pool stays active (a long query) the whole time
    active = psycopg2.connect(db.dsn(application_name="pool-a"), async_=1)
    while active.poll() != psycopg2.extensions.POLL_OK:
        select.select([active.fileno()], [active.fileno()], [], 1)
    active_cur = active.cursor()
    active_cur.execute("SELECT pg_sleep(2.6)")
    for s in pool:
        s.use()
        time.sleep(0.02)
    killed = watch(pool + [other], 2.3)
    assert set(killed) == set(pool[:5]), "the 5 least recently used go, the 3 newest stay"
    while active.poll() != psycopg2.extensions.POLL_OK:  # the active query completes normally
        select.select([active.fileno()], [], [], 1)
    assert active_cur.fetchone() == ("",)
    active.close()
    for s in pool[5:] + [other]:
        s.use()
        s.close()


def test_idle_in_transaction_policy(db):
    db.psql("SELECT warden.add_idle_policy('iit', '1 s', application => 'iit',"
            " state => 'idle in transaction')")
    wait_policy_loaded(db, "iit")
    in_tx = Session(db, "iit")
    in_tx.conn.autocommit = False
    in_tx.use("SELECT 1")  # BEGIN ... now idle in transaction
    plain_idle = Session(db, "iit")
    plain_idle.use()
    killed = watch([in_tx, plain_idle], 2.5)
    assert killed == [in_tx]
    rows = terminations(db, "policy = 'iit'")
    assert [r[0] for r in rows] == [in_tx.pid]
    state = db.psql(f"SELECT state FROM warden.terminations WHERE pid = {in_tx.pid}")
    assert state == "idle in transaction"
    plain_idle.use()
    plain_idle.close()


def test_schedule_and_update_apply_without_restart(db):
    now = datetime.datetime.now(datetime.timezone.utc)  # the harness runs servers in UTC
    other_minute = (now.minute + 30) % 60
    db.psql(f"SELECT warden.add_idle_policy('sched', '500 ms', application => 'sched',"
            f" schedule => '{other_minute} * * * *')")
    wait_policy_loaded(db, "sched")
    s = Session(db, "sched")
    s.use()
    assert watch([s], 1.5) == [], "a schedule that does not match now does nothing"
    db.psql("UPDATE warden.idle_policies SET schedule = '* * * * *' WHERE name = 'sched'")
    t0 = time.monotonic()
    assert watch([s], 1.0) == [s], "a matching schedule acts, right after the UPDATE commits"
    assert s.killed_at - t0 < 0.35, "within about one sample interval (100 ms) of the commit"

    # enabled = false by UPDATE: stops at commit; true again: acts again.
    db.psql("UPDATE warden.idle_policies SET enabled = false WHERE name = 'sched'")
    wait_policy_loaded(db, "sched")
    s2 = Session(db, "sched")
    s2.use()
    assert watch([s2], 1.2) == []
    db.psql("UPDATE warden.idle_policies SET enabled = true WHERE name = 'sched'")
    assert watch([s2], 1.0) == [s2]


def test_dry_run_records_without_killing(db):
    db.psql("SELECT warden.add_idle_policy('dry', '500 ms', application => 'dry', dry_run => true)")
    wait_policy_loaded(db, "dry")
    s = Session(db, "dry")
    s.use()
    assert watch([s], 1.5) == []
    rows = terminations(db, "policy = 'dry'")
    assert [(r[0], r[2]) for r in rows] == [(s.pid, True)], "one dry-run decision per idle period"
    assert "dry run: would terminate" in db.log_text()
    s.use()
    assert watch([s], 1.0) == []
    assert len(terminations(db, "policy = 'dry'")) == 2  # a new idle period, a new decision

    # warden.enforce = off turns a real policy into a dry run too.
    db.psql("ALTER SYSTEM SET warden.enforce = off")
    db.reload()
    try:
        db.psql("UPDATE warden.idle_policies SET dry_run = false WHERE name = 'dry'")
        config_applied(db)
        s.use()
        assert watch([s], 1.2) == []
        assert terminations(db, "policy = 'dry'")[-1][2] is True
    finally:
        db.psql("ALTER SYSTEM RESET warden.enforce")
        db.reload()
    s.close()


def test_dry_run_records_each_session_once(db):
    sessions = [Session(db, "dry-many") for _ in range(100)]
    for s in sessions:
        s.use()  # one idle period each from now on
    db.psql("SELECT warden.add_idle_policy('dry-many', '300 ms', application => 'dry-many',"
            " dry_run => true)")
    assert watch(sessions, 2.0) == []  # about 17 samples past the timeout, nobody killed
    counts = db.psql("SELECT count(*), count(DISTINCT pid) FROM warden.terminations"
                     " WHERE policy = 'dry-many'")
    assert counts == "100|100", "one decision per session and idle period, however many samples"
    for s in sessions:
        s.close()


def test_superuser_session_survives_non_superuser_policy(db):
    db.psql("SELECT warden.add_idle_policy('ops-policy', '500 ms', application => 'mixed')",
            user="ops")
    assert db.psql("SELECT owner FROM warden.idle_policies WHERE name = 'ops-policy'") == "ops"
    wait_policy_loaded(db, "ops-policy")
    su = Session(db, "mixed", user="postgres")
    plain = Session(db, "mixed", user="app")
    su.use()
    plain.use()
    assert watch([su, plain], 1.5) == [plain]
    # a superuser's policy may
    db.psql("SELECT warden.add_idle_policy('su-policy', '500 ms', application => 'mixed')")
    assert watch([su], 1.5) == [su]


def test_terminate_idle(db):
    sessions = [Session(db, "manual", user="app") for _ in range(3)]
    for s in sessions:
        s.use()
        time.sleep(0.05)
    su = Session(db, "manual-su")
    su.use()
    time.sleep(0.3)
    # a pg_signal_backend member: the superuser's session is not touched
    out = db.psql("SELECT pid, source, policy IS NULL FROM warden.terminate_idle("
                  "'200 ms', application => 'manual%', keep_min => 1)", user="ops")
    pids = sorted(int(line.split("|")[0]) for line in out.splitlines())
    assert pids == sorted(s.pid for s in sessions[:2])
    assert all(line.endswith("|manual|t") for line in out.splitlines())
    assert sorted(watch(sessions + [su], 0.5), key=lambda s: s.pid) == sorted(sessions[:2], key=lambda s: s.pid)
    # dry run: reported, nobody killed
    out = db.psql("SELECT pid, dry_run FROM warden.terminate_idle('100 ms',"
                  " application => 'manual%', dry_run => true)")
    assert sorted(out.splitlines()) == sorted([f"{sessions[2].pid}|t", f"{su.pid}|t"])
    assert watch([sessions[2], su], 0.3) == []
    # a plain role may not
    err = db.psql("SELECT * FROM warden.terminate_idle('1 s')", user="app", check=False)
    assert "permission denied" in err


def test_pg_dump_keeps_policies(db):
    db.psql("SELECT warden.add_idle_policy('dumped', '10 min', application => 'reports%',"
            " keep_min => 5, schedule => '* 0-5 * * *')")
    db.psql("SELECT warden.add_idle_policy('dumped-ops', '1 h', role => 'app')", user="ops")
    res = subprocess.run([f"{pgcluster.PG_BIN}/pg_dump", "-h", db.sockdir, "-p", str(db.port),
                          "-U", "postgres", "-d", "postgres"], capture_output=True, text=True,
                         check=True)
    assert "COPY warden.idle_policies" in res.stdout
    assert "dumped\t00:10:00\treports%" in res.stdout
    # restored by a superuser: same rows, same owners, validated again on the way
    # in; into a database of another name only where warden.database names it
    def restore_into(c):
        return subprocess.run([f"{pgcluster.PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                               "-h", c.sockdir, "-p", str(c.port), "-U", "postgres",
                               "-d", "restored"], input=res.stdout, capture_output=True, text=True)
    db.psql("CREATE DATABASE restored")
    try:
        refused = restore_into(db)
        assert refused.returncode != 0
        assert 'pg_warden must be created in database "postgres" (warden.database), not in "restored"' \
            in refused.stderr
    finally:
        db.psql("DROP DATABASE restored")
    with pgcluster.Cluster(name="restore", conf={"warden.database": "'restored'"}).init() as other:
        other.start()
        other.psql("CREATE ROLE ops LOGIN IN ROLE pg_signal_backend; CREATE ROLE app LOGIN;"
                   "CREATE DATABASE restored")
        restore = restore_into(other)
        assert restore.returncode == 0, restore.stderr
        rows = other.psql("SELECT name, idle_timeout, application, role, keep_min, schedule, owner"
                          " FROM warden.idle_policies ORDER BY name", dbname="restored")
        assert rows.splitlines() == ["dumped|00:10:00|reports%||5|* 0-5 * * *|postgres",
                                     "dumped-ops|01:00:00||app|0||ops"]


def test_exempt_roles_never_touched(db):
    db.psql("ALTER SYSTEM SET warden.exempt_roles = 'app'")
    db.reload()
    try:
        time.sleep(0.2)
        db.psql("SELECT warden.add_idle_policy('exempt', '500 ms', application => 'exempt')")
        wait_policy_loaded(db, "exempt")
        exempt = Session(db, "exempt", user="app")
        victim = Session(db, "exempt", user="ops")
        exempt.use()
        victim.use()
        assert watch([exempt, victim], 1.5) == [victim]
    finally:
        db.psql("ALTER SYSTEM RESET warden.exempt_roles")
        db.reload()
    exempt.close()


def test_terminations_survive_clean_restart(db):
    before = db.psql("SELECT count(*), max(at) FROM warden.terminations")
    assert int(before.split("|")[0]) > 0
    db.restart()
    after = db.psql("SELECT count(*), max(at) FROM warden.terminations")
    assert after == before
    assert not os.path.exists(os.path.join(db.datadir, "pg_warden_terminations.dat"))
    # a corrupt file is ignored with a LOG line
    db.stop()
    path = os.path.join(db.datadir, "pg_warden_terminations.dat")
    with open(path, "r+b") as f:
        f.seek(20)
        f.write(b"garbage")
    db.start()
    assert db.psql("SELECT count(*) FROM warden.terminations") == "0"
    assert "ignoring corrupt terminations file" in db.log_text()
    assert "cannot read pg_class" not in db.log_text()  # the worker never failed at start


def test_missing_database_logged_once_then_loader_starts(make_cluster):
    c = make_cluster(conf={"warden.database": "'wardendb'"}, extension=False)
    time.sleep(1.0)
    log = c.log_text()
    assert log.count('database "wardendb" (warden.database) does not exist') == 1
    assert "FATAL" not in log
    # CREATE EXTENSION elsewhere is refused, naming warden.database
    out = c.psql("CREATE EXTENSION pg_warden", check=False)
    assert 'pg_warden must be created in database "wardendb" (warden.database)' in out
    c.psql("CREATE DATABASE wardendb")
    pgcluster.wait_until(lambda: 'loader started in database "wardendb"' in c.log_text(),
                         timeout=10, what="the loader")
    assert 'extension pg_warden is not created in database "wardendb"' in c.log_text()
    c.psql("CREATE EXTENSION pg_warden", dbname="wardendb")
    assert int(c.psql("SELECT connections FROM warden.server_usage()", dbname="wardendb")) >= 1
    c.psql("SELECT warden.add_idle_policy('late-db', '300 ms', application => 'late-db')",
           dbname="wardendb")
    s = Session(c, "late-db")
    s.use()
    assert watch([s], 3.0) == [s], "policies of the new database apply"
    assert c.log_text().count("does not exist") == 1


def test_standby_follows_primary_policies(db):
    sb = db.make_standby()
    try:
        sb.start()
        pgcluster.wait_until(lambda: sb.psql("SELECT count(*) FROM pg_stat_activity"
                                             " WHERE backend_type = 'pg_warden loader'") == "1",
                             what="loader on the standby")
        err = sb.psql("SELECT warden.add_idle_policy('on-standby', '1 s')", check=False)
        assert "read-only transaction" in err
        s = Session(sb, "standby-app", user="app")
        su = Session(sb, "standby-app", user="postgres")
        s.use()
        su.use()
        # a non-superuser's policy: the standby's worker checks roles in a read-only transaction
        db.psql("SELECT warden.add_idle_policy('replicated', '700 ms', application => 'standby-app')",
                user="ops")
        assert watch([s, su], 3.0) == [s], "a policy made on the primary acts on the standby"
        rows = terminations(sb, "policy = 'replicated'")
        assert [r[0] for r in rows] == [s.pid]
    finally:
        sb.destroy()


def test_300_connections_10_policies_no_wrong_termination(db):
    apps = [f"load-{k}" for k in range(10)]
    for k, app in enumerate(apps):
        db.psql(f"SELECT warden.add_idle_policy('load-{k}', '1500 ms', application => '{app}',"
                f" keep_min => 10)")
    wait_policy_loaded(db, "load")
    bystanders = [Session(db, "load-bystander") for _ in range(30)]
    for s in bystanders:
        s.use()
    # Open the groups interleaved, each session inside a transaction (not "idle",
    # so no policy applies yet: logins may take longer than the timeout on a slow
    # machine), then end the transactions in the same order; within a group, that
    # order is the age order of their idleness.
    groups = {app: [] for app in apps}
    for i in range(27):
        for app in apps:
            s = Session(db, app)
            s.use("BEGIN")
            groups[app].append(s)
    for i in range(27):
        for app in apps:
            groups[app][i].use("COMMIT")
    everyone = [s for g in groups.values() for s in g] + bystanders
    watch_start = time.monotonic()
    killed = set(watch(everyone, 1.5 + 2.0))
    expected = {s for g in groups.values() for s in g[:17]}
    wrong = killed - expected
    missed = expected - killed
    assert not wrong, f"{len(wrong)} wrong terminations"
    assert not missed, f"{len(missed)} offenders left"
    # clients see a termination only once watched: count the deadlines after that
    late = lateness_ms([s for s in killed if s.idle_since + 1.5 > watch_start + 0.05], 1.5)
    server_late = sorted((r[3] - 1.5) * 1000 for r in terminations(db, "policy LIKE 'load-%'"))
    stats = db.psql("SELECT round(last_sample_ms::numeric, 3), round(mean_sample_ms::numeric, 3),"
                    " sampled_backends FROM warden.worker_stats()")
    print(f"\n300 connections, 10 policies: {len(killed)} terminated; lateness seen by clients ({len(late)} watched)"
          f" p50 {pct(late, 50):.1f} ms, p99 {pct(late, 99):.1f} ms, max {late[-1]:.1f} ms;"
          f" recorded by the worker p50 {pct(server_late, 50):.1f} ms, p99 {pct(server_late, 99):.1f} ms,"
          f" max {server_late[-1]:.1f} ms; worker sample ms last|mean|backends: {stats}")
    # server_late is exact (pgstat's state_start); the client's view lags by its stamping delay
    assert late[0] > -25.0 and server_late[0] >= 0.0, f"terminated early: {late[0]} {server_late[0]}"
    # Precision is the benchmark's bar (bench/, idle_kill: p99 <= 20 ms); here 170
    # backends exit within a few hundred ms, and on a slow machine their exits take
    # the CPU the worker needs: this only guards against a missed cycle or worse.
    assert pct(server_late, 99) < 1000 and pct(late, 99) < 1500
    # the kept ten of each group stay, however long they idle
    assert watch(everyone, 1.0) == list(killed) or not set(watch(everyone, 0.01)) - killed
    for s in everyone:
        s.close()
