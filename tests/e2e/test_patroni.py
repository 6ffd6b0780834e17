"""pg_warden on a real Patroni cluster (etcd + 3 Patroni 3.0 members from
tests/harness/patroni.py): the extension created on the leader replicates,
budgets and idle policies defined there apply on every member, a switchover
hands policy changes to the new leader, and a catch-all idle policy never
touches Patroni's own sessions, replication or pg_rewind.

One cluster for the whole module (tests run in file order and build on each
other's state); figures go to the output (`-s`) and docs/fleet.md."""
import select
import shutil
import time

import psycopg2
import pytest

from clients import budget_loaded, refused, try_connect
from patroni import REPLICATION_USER, REWIND_USER, PatroniCluster, http_json
from pgcluster import wait_until

pytestmark = [
    pytest.mark.patroni,
    pytest.mark.skipif(not (shutil.which("patroni") and shutil.which("etcd")),
                       reason="patroni and etcd-server are not installed (scripts/install-deps)"),
]


@pytest.fixture(scope="module")
def fleet():
    # The documented setup (docs/fleet.md): nothing to exempt by hand. Patroni's
    # own sessions run as a superuser, replication is walsenders (never counted),
    # and the rewind role is exempt by its grants (warden.exempt_rewind_roles).
    pc = PatroniCluster(members=3)
    try:
        pc.start()
    except BaseException:
        print(pc.logs())
        pc.destroy()
        raise
    print(f"\n[fleet] 3 members up and the leader writable in {pc.start_seconds:.1f} s")
    yield pc
    t0 = time.monotonic()
    pc.destroy()
    print(f"\n[fleet] stopped in {time.monotonic() - t0:.1f} s")


def pg(fleet, member):
    """The member's PostgreSQL as a pgcluster.Cluster handle (dsn, psql)."""
    return fleet.member(member).pg


def sqlstate_of(fleet, member, sql):
    try:
        with psycopg2.connect(fleet.dsn(member)) as c, c.cursor() as cur:
            cur.execute(sql)
    except psycopg2.Error as e:
        return e.pgcode
    return None


def admitted_of(fleet, member, n, user="app", app="svc"):
    """Opens n connections one by one; returns (admitted, refused) counts and
    closes them all."""
    conns, errors = [], []
    for _ in range(n):
        c, err = try_connect(pg(fleet, member), user=user, application_name=app)
        if c is not None:
            conns.append(c)
        else:
            assert refused(err), err
            errors.append(err)
    for c in conns:
        c.close()
    return len(conns), len(errors)


def terminated_within(conn, seconds):
    """Did the server close this idle connection within `seconds`?"""
    p = select.poll()
    p.register(conn.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(p.poll(seconds * 1000))


def patroni_footprint(fleet):
    """Per member: the pids of Patroni's own session, of the walsenders (on
    the leader) and of the walreceiver (on a replica)."""
    out = {}
    for name in fleet.members_by_name:
        out[name] = fleet.psql(name, """
            SELECT string_agg(backend_type || ':' || coalesce(application_name, '') || ':' || pid, ','
                              ORDER BY backend_type, application_name)
              FROM pg_stat_activity
             WHERE application_name = 'Patroni' OR backend_type IN ('walsender', 'walreceiver')""")
    return out


def spared(fleet):
    """Terminations on any member of Patroni's session, replication or rewind."""
    rows = []
    for name in fleet.members_by_name:
        out = fleet.psql(name, f"""
            SELECT role || '|' || application_name || '|' || policy FROM warden.terminations
             WHERE application_name IN ('Patroni', 'pg_rewind', 'pg_basebackup')
                OR role IN ('{REPLICATION_USER}', '{REWIND_USER}')""")
        rows += [f"{name}: {line}" for line in out.splitlines()]
    return rows


def test_three_members_with_their_roles(fleet):
    ms = fleet.members()
    assert sorted(m["name"] for m in ms) == ["pg1", "pg2", "pg3"]
    assert sorted(m["role"] for m in ms) == ["leader", "replica", "replica"]
    assert {m["state"] for m in ms} == {"running"}
    leader = fleet.leader()
    replicas = fleet.replicas()
    # a member reports its timeline and lag at its next loop: give them a few
    wait_until(lambda: [(m.get("timeline"), m.get("lag", 0)) for m in fleet.members()] == [(1, 0)] * 3,
               timeout=10, what="every member on timeline 1, replicas without lag")
    # the replication connections: walsenders named after the members, as Patroni's replication role
    assert fleet.psql(leader, "SELECT string_agg(usename || ':' || application_name || ':' || state, ','"
                              " ORDER BY application_name) FROM pg_stat_replication") == \
        ",".join(f"{REPLICATION_USER}:{r}:streaming" for r in sorted(replicas))
    for name in fleet.members_by_name:
        assert fleet.psql(name, "SHOW shared_preload_libraries") == "pg_warden"
    # Patroni's health endpoints: 200 only on the member holding the leader key
    for name in fleet.members_by_name:
        for path in ("/leader", "/primary"):
            code, body = http_json(fleet.member(name).api + path)
            assert code == (200 if name == leader else 503), (name, path, code)
            assert body["patroni"]["scope"] == fleet.scope


def test_extension_created_on_the_leader_replicates(fleet):
    leader = fleet.leader()
    fleet.psql(leader, "CREATE EXTENSION pg_warden")
    fleet.wait_replayed()
    version = fleet.psql(leader, "SELECT extversion FROM pg_extension WHERE extname = 'pg_warden'")
    assert version
    for name in fleet.members_by_name:
        assert fleet.psql(name, "SELECT extversion FROM pg_extension WHERE extname = 'pg_warden'") == version
        assert fleet.psql(name, "SELECT in_recovery FROM warden.server_usage") == \
            ("f" if name == leader else "t")
    # walsenders are not client backends: pg_warden counts none of them
    assert fleet.psql(leader, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'") == "2"
    wait_until(lambda: fleet.psql(leader, """
        SELECT (SELECT connections FROM warden.server_usage)
             = (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')""") == "t",
               timeout=5, what="server_usage exact on the leader")
    assert fleet.psql(leader, "SELECT count(*) FROM warden.app_usage"
                              f" WHERE role = '{REPLICATION_USER}'") == "0"
    # Patroni's own session is a client backend, as the superuser, counted like any other
    for name in fleet.members_by_name:
        assert fleet.psql(name, "SELECT usename || ':' || backend_type FROM pg_stat_activity "
                                "WHERE application_name = 'Patroni'") == "postgres:client backend"


def test_budget_and_idle_policy_from_the_leader_apply_on_a_replica(fleet):
    leader = fleet.leader()
    replica = fleet.replicas()[0]
    fleet.psql(leader, "CREATE ROLE app LOGIN;"
                       "SELECT warden.set_budget(name => 'app', max_connections => 3, role => 'app');"
                       "SELECT warden.add_idle_policy(name => 'idlers', idle_timeout => '1 s',"
                       " application => 'idler')")
    fleet.wait_replayed()
    budget_loaded(pg(fleet, replica), "app", 3)
    # a budget of 3 admits exactly 3 on the replica (and counts only the replica's own)
    assert admitted_of(fleet, replica, 5) == (3, 2)
    assert fleet.psql(replica, "SELECT refused FROM warden.app_usage"
                               " WHERE role = 'app' AND application_name = 'svc'") == "2"
    assert fleet.psql(leader, "SELECT count(*) FROM warden.app_usage WHERE role = 'app'") == "0"
    # the idle policy terminates an idler on the replica
    conn = psycopg2.connect(fleet.dsn(replica, user="app", application_name="idler"))
    pid = conn.get_backend_pid()
    try:
        assert terminated_within(conn, 5)
    finally:
        conn.close()
    assert fleet.psql(replica, f"SELECT policy FROM warden.terminations WHERE pid = {pid}") == "idlers"
    assert fleet.psql(leader, "SELECT count(*) FROM warden.terminations") == "0"


def test_switchover_then_the_new_leader_takes_policy_changes(fleet):
    old = fleet.leader()
    candidate = fleet.replicas()[0]
    seconds = fleet.switchover(candidate)
    print(f"\n[fleet] switchover {old} -> {candidate}: writable after {seconds:.1f} s")
    t0 = time.monotonic()
    fleet.wait_ready()
    print(f"[fleet] {old} streaming from {candidate} {time.monotonic() - t0:.1f} s later")
    assert fleet.leader() == candidate
    assert {m["name"]: m["role"] for m in fleet.members()}[old] == "replica"
    # the old leader is read-only now; the new one takes the change
    assert sqlstate_of(fleet, old, "SELECT warden.set_budget(name => 'app', max_connections => 2,"
                                   " role => 'app')") == "25006"
    fleet.psql(candidate, "SELECT warden.set_budget(name => 'app', max_connections => 2, role => 'app')")
    fleet.wait_replayed()
    for name in fleet.members_by_name:
        budget_loaded(pg(fleet, name), "app", 2)
    assert admitted_of(fleet, old, 4) == (2, 2)
    assert admitted_of(fleet, candidate, 4) == (2, 2)


def test_catch_all_idle_policy_spares_patroni_replication_and_rewind(fleet):
    leader = fleet.leader()
    # A catch-all policy owned by a non-superuser administrator (the
    # documented setup): it may terminate every client session but a
    # superuser's, and the exempt roles'.
    fleet.psql(leader, """
        CREATE ROLE warden_admin LOGIN IN ROLE pg_signal_backend;
        GRANT EXECUTE ON FUNCTION warden.add_idle_policy(text, interval, text, text, text, text, int,
                                                          text, bool) TO warden_admin;
        GRANT SELECT, INSERT, UPDATE, DELETE ON warden.idle_policies TO warden_admin;
        SELECT warden.drop_idle_policy('idlers');""")
    fleet.psql(leader, "SELECT warden.add_idle_policy(name => 'catch-all', idle_timeout => '500 ms',"
                       " application => NULL, role => NULL, keep_min => 0)", user="warden_admin")
    fleet.wait_replayed()
    time.sleep(0.3)  # loaded within one sample interval of the replay
    # the rewind role, found by the grants Patroni gave it at bootstrap, on every member
    for name in fleet.members_by_name:
        assert fleet.psql(name, "SELECT rewind_roles FROM warden.config_status()") == f"{{{REWIND_USER}}}"
    before = patroni_footprint(fleet)
    # the policy acts: a bystander's idle session goes on every member
    bystanders = {n: psycopg2.connect(fleet.dsn(n, user="app", application_name="bystander"))
                  for n in fleet.members_by_name}
    try:
        for name, conn in bystanders.items():
            assert terminated_within(conn, 5), f"bystander on {name} not terminated"
    finally:
        for conn in bystanders.values():
            conn.close()
    time.sleep(3)  # several Patroni loops (loop_wait 1 s), each leaving its session idle ~1 s
    assert patroni_footprint(fleet) == before
    assert spared(fleet) == []

    # a failover with the policy in force; the old leader's WAL diverges so
    # that Patroni rewinds it (pg_rewind connects to the new leader as the
    # rewind role, a client backend)
    fleet.psql(leader, "SELECT pg_terminate_backend(pid) FROM pg_stat_replication;"
                       "CREATE TABLE diverged AS SELECT generate_series(1, 20000) AS g")
    old, new, seconds = fleet.failover()
    print(f"\n[fleet] failover (SIGKILL of {old}'s postmaster) -> {new} writable after {seconds:.1f} s")
    t0 = time.monotonic()
    fleet.wait_ready(timeout=60)
    rewound = "running pg_rewind" in open(fleet.member(old).patroni_log).read()
    print(f"[fleet] {old} back as a replica {time.monotonic() - t0:.1f} s later (pg_rewind: {rewound})")
    assert {m["name"]: m["role"] for m in fleet.members()}[old] == "replica"
    assert spared(fleet) == []
    # the pg_rewind session was a client backend of the rewind role on the new leader
    if rewound:
        assert int(fleet.psql(new, f"SELECT coalesce(sum(opened), 0) FROM warden.app_usage"
                                   f" WHERE role = '{REWIND_USER}'")) >= 1


def test_superuser_catch_all_spares_patronis_own_session(fleet):
    leader = fleet.leader()
    fleet.psql(leader, "SELECT warden.add_idle_policy(name => 'su-catch-all', idle_timeout => '500 ms')")
    try:
        fleet.wait_replayed()
        time.sleep(3)
        assert [r for r in spared(fleet) if "|Patroni|" in r] == []
    finally:
        fleet.psql(fleet.leader(), "SELECT warden.drop_idle_policy('su-catch-all')")


def test_member_added_then_removed(fleet):
    t0 = time.monotonic()
    name = fleet.add_member()
    print(f"\n[fleet] {name} added and streaming in {time.monotonic() - t0:.1f} s")
    ms = {m["name"]: m for m in fleet.members()}
    assert len(ms) == 4 and ms[name]["role"] == "replica"
    # made from the leader by pg_basebackup: preloaded, with the extension and its budgets
    assert fleet.psql(name, "SHOW shared_preload_libraries") == "pg_warden"
    budget_loaded(pg(fleet, name), "app", 2)
    assert admitted_of(fleet, name, 3) == (2, 1)
    t0 = time.monotonic()
    fleet.remove_member(name)
    print(f"[fleet] {name} stopped, its key deleted and gone from GET /cluster"
          f" in {time.monotonic() - t0:.1f} s")
    assert sorted(m["name"] for m in fleet.members()) == ["pg1", "pg2", "pg3"]
