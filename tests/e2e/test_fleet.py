"""wardend on a real Patroni cluster (etcd + 3 Patroni members from
tests/harness/patroni.py), configured with [[cluster]]: members discovered
from Patroni's REST API and followed as they join, leave and change roles;
overrides moved with the leader on a switchover and a failover; a role's
limit counted over the whole cluster; three wardends (one beside each member)
with exactly one actor for the cluster's limits; Patroni's own sessions and
replication never touched.

One cluster for the whole module (tests run in file order and build on each
other's state); figures go to the output (`-s`) and docs/fleet.md."""
import datetime
import os
import re
import shutil
import subprocess
import time

import psycopg2
import pytest

from clients import refused, try_connect
from patroni import REPLICATION_USER, REWIND_USER, PatroniCluster
from pgcluster import wait_until
from wardend import WARDENCTL, Wardend

pytestmark = [
    pytest.mark.patroni,
    pytest.mark.skipif(not (shutil.which("patroni") and shutil.which("etcd")),
                       reason="patroni and etcd-server are not installed (scripts/install-deps)"),
]

INTERVAL = 0.5  # wardend's interval in these tests (seconds)
SCOPE = "orders"
DSN = "dbname=postgres user=postgres application_name=wardend"


@pytest.fixture(scope="module")
def fleet():
    pc = PatroniCluster(members=3, scope=SCOPE, parameters={
        "warden.exempt_roles": f"{REPLICATION_USER},{REWIND_USER}"})
    try:
        pc.start()
        leader = pc.leader()
        pc.psql(leader, "CREATE EXTENSION pg_warden; CREATE ROLE app LOGIN; CREATE ROLE burst LOGIN")
        pc.wait_replayed()
    except BaseException:
        print(pc.logs())
        pc.destroy()
        raise
    print(f"\n[fleet] 3 members up in {pc.start_seconds:.1f} s")
    yield pc
    pc.destroy()


def cluster_toml(fleet, member=None, name=SCOPE):
    urls = ", ".join(f'"{m.api}"' for m in fleet.members_by_name.values())
    text = f'[[cluster]]\nname = "{name}"\npatroni = [{urls}]\ndsn = "{DSN}"\n'
    if member:
        text += f'member = "{member}"\n'
    return text


def start_wardend(tmp_path, fleet, body="", member=None, name="wardend", interval=INTERVAL):
    w = Wardend(tmp_path, [], body=cluster_toml(fleet, member) + body, name=name)
    with open(w.config) as f:
        text = f.read()
    w.write(text.replace('interval = "200ms"', f'interval = "{int(interval * 1000)}ms"', 1))
    w.start()
    w.wait_http()
    return w


def members_seen(w):
    """server name -> (patroni_role, reachable) from wardend's /health."""
    code, h = w.health()
    if not code:
        return {}
    return {c["name"]: (c["data"].get("patroni_role"), c["data"]["reachable"])
            for c in h["checks"] if "cluster" in c["data"]}


def expected(fleet):
    return {f"{SCOPE}/{m['name']}": (m["role"], True) for m in fleet.members()}


def overrides(fleet, member, role):
    v = fleet.psql(member, f"SELECT max_connections FROM warden.admission_overrides WHERE role = '{role}'",
                   check=False)
    return int(v) if v and v.strip().isdigit() else None


def hold(fleet, member, n, user="app", app="svc"):
    conns = []
    for _ in range(n):
        c, err = try_connect(fleet.member(member).pg, user=user, application_name=app)
        if c is not None:
            conns.append(c)
    return conns


def close_all(conns):
    for c in conns:
        try:
            c.close()
        except psycopg2.Error:
            pass


def patroni_footprint(fleet):
    """Per member: the pids of Patroni's own session and of replication."""
    return {name: fleet.psql(name, """
        SELECT string_agg(backend_type || ':' || coalesce(application_name, '') || ':' || pid, ','
                          ORDER BY backend_type, application_name, pid)
          FROM pg_stat_activity
         WHERE application_name = 'Patroni' OR backend_type IN ('walsender', 'walreceiver')""")
            for name in fleet.members_by_name}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def log_times(w, pattern):
    """{first group of pattern: unix time} of wardend's log lines matching it
    (its own millisecond timestamps: no scheduling noise of the test's)."""
    out = {}
    for line in w.log().splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ", line)
        g = re.search(pattern, line)
        if m and g and g.group(1) not in out:
            out[g.group(1)] = datetime.datetime.strptime(
                m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
    return out


def journal_servers(w):
    return sorted({e["server"] for e in w.journal()})


DISCOVERY_INTERVAL = 1.0  # seconds: the bar below is counted in intervals


def test_discovery_three_members_with_their_roles(fleet, tmp_path):
    t0 = time.monotonic()
    w = start_wardend(tmp_path, fleet, interval=DISCOVERY_INTERVAL)
    try:
        want = expected(fleet)
        wait_until(lambda: members_seen(w) == want, timeout=15, interval=0.05,
                   what=f"wardend sees {want} (it sees {members_seen(w)})")
        took = time.monotonic() - t0
        # The bar: from wardend's first answer from Patroni (the members found)
        # to every member polled (in /health with its role) within two
        # intervals and one poll, by wardend's own log timestamps.
        found = log_times(w, r"\[(" + SCOPE + r"/[^\]]+)\] member found: ")
        polled = log_times(w, r"\[(" + SCOPE + r"/[^\]]+)\] polled: ")
        assert set(found) == set(polled) == set(want), (found, polled, w.log())
        _, metrics = w.get("/metrics")
        poll = max(float(v) for v in re.findall(
            r"^pg_warden_poll_duration_seconds\{[^}]*\} (\S+)$", metrics, re.M))
        discovery = max(polled.values()) - min(found.values())
        print(f"\n[fleet] wardend started and polling 3 members with their roles in {took:.2f} s; "
              f"from Patroni's answer to the last member polled {discovery:.3f} s "
              f"(interval {DISCOVERY_INTERVAL} s, poll {poll * 1000:.1f} ms)")
        assert discovery <= 2 * DISCOVERY_INTERVAL + poll, (discovery, poll)
        _, h = w.health()
        leader = fleet.leader()
        for c in h["checks"]:
            assert c["data"]["cluster"] == SCOPE
            is_leader = c["name"] == f"{SCOPE}/{leader}"
            assert "lag_bytes" in c["data"] and (c["data"]["lag_bytes"] is None) == is_leader
            assert c["data"]["role"] == ("primary" if is_leader else "standby")
        _, metrics = w.get("/metrics")
        assert f'pg_warden_patroni_member_info{{server="{SCOPE}/{leader}",cluster="{SCOPE}",' \
               f'role="leader",state="running"}} 1' in metrics
        assert metrics.count("pg_warden_patroni_lag_bytes{") == 2
        # wardenctl status names the members and their Patroni roles
        out = subprocess.run([WARDENCTL, "status", "--config", w.config], capture_output=True, text=True,
                             timeout=10)
        assert out.returncode == 0, out.stderr
        assert f"{SCOPE}/{leader}" in out.stdout and "patroni: leader" in out.stdout, out.stdout
        assert out.stdout.count("patroni: replica") == 2, out.stdout
        # wardend's cost watching 3 members (figures for docs/fleet.md)
        cpu0, t0 = cpu_seconds(w.proc.pid), time.monotonic()
        time.sleep(5)
        cpu = (cpu_seconds(w.proc.pid) - cpu0) / (time.monotonic() - t0)
        print(f"[fleet] wardend watching 3 members at {DISCOVERY_INTERVAL} s: CPU {cpu * 100:.2f}% of a core, "
              f"RSS {rss_kib(w.proc.pid) / 1024:.1f} MiB")
    finally:
        assert w.stop() == 0


def test_catch_all_idle_step_spares_patroni_and_replication(fleet, tmp_path):
    """A wardend catch-all (terminate every idle session at 1% usage) ends a
    plain idle session but never Patroni's own session or replication."""
    before = patroni_footprint(fleet)
    leader = fleet.leader()
    idler = psycopg2.connect(fleet.dsn(leader, user="app", application_name="idler"))
    w = start_wardend(tmp_path, fleet, body='[[emergency]]\nat_percent = 1\naction = "terminate_idle"\n'
                                            'older_than = "0s"\nskip_priority = []\n')
    try:
        wait_until(lambda: fleet.psql(leader, "SELECT count(*) FROM pg_stat_activity "
                                              "WHERE application_name = 'idler'") == "0",
                   timeout=10, what="the plain idle session terminated")
        time.sleep(4 * INTERVAL)  # several more polls with the step active
        assert patroni_footprint(fleet) == before
    finally:
        assert w.stop() == 0
        idler.close()


def test_fourth_member_added_and_removed(fleet, tmp_path):
    w = start_wardend(tmp_path, fleet)
    try:
        wait_until(lambda: members_seen(w) == expected(fleet), timeout=10, what="3 members")
        t0 = time.monotonic()
        name = fleet.add_member()
        t_added = time.monotonic()
        wait_until(lambda: members_seen(w).get(f"{SCOPE}/{name}") == ("replica", True),
                   timeout=10, interval=0.05, what=f"{name} watched")
        print(f"\n[fleet] 4th member streaming in {t_added - t0:.1f} s; wardend polled it "
              f"{time.monotonic() - t_added:.2f} s later")
        assert len(members_seen(w)) == 4
        fleet.remove_member(name)
        t_removed = time.monotonic()
        wait_until(lambda: f"{SCOPE}/{name}" not in members_seen(w) and len(members_seen(w)) == 3,
                   timeout=10, interval=0.05, what=f"{name} dropped")
        print(f"[fleet] removed member dropped by wardend {time.monotonic() - t_removed:.2f} s "
              "after it left GET /cluster")
        assert w.proc.poll() is None  # no SIGHUP, no restart
        assert "reloaded" not in w.log()
    finally:
        assert w.stop() == 0


def test_cluster_scoped_limit_holds_over_the_members(fleet, tmp_path):
    """A cluster-scoped limit of 30 for a role, 60 login attempts spread over
    the three members: once converged the sum never exceeds 30."""
    w = start_wardend(tmp_path, fleet, body='[[role]]\nname = "burst"\nscope = "cluster"\n'
                                            'max_connections = 30\ncooldown = "30s"\n',
                      interval=0.2)
    names = sorted(fleet.members_by_name)
    held, refusals = [], 0
    try:
        wait_until(lambda: len(members_seen(w)) == 3, timeout=10, what="3 members")
        for i in range(60):
            c, err = try_connect(fleet.member(names[i % 3]).pg, user="burst", application_name="b")
            if c is not None:
                held.append(c)
            else:
                assert refused(err), err
                refusals += 1
            time.sleep(0.1)

        def total():
            return sum(int(fleet.psql(n, "SELECT count(*) FROM pg_stat_activity "
                                         "WHERE usename = 'burst'")) for n in names)
        caps = {n: overrides(fleet, n, "burst") for n in names}
        print(f"\n[fleet] 60 attempts: {len(held)} admitted, {refusals} refused; caps {caps}")
        assert None not in caps.values() and sum(caps.values()) == 30, caps
        assert total() == len(held) <= 30
        assert refusals >= 30
        # converged: more attempts on every member are refused, the sum stays put
        for n in names:
            for _ in range(3):
                c, err = try_connect(fleet.member(n).pg, user="burst", application_name="b")
                if c is not None:
                    held.append(c)
        assert total() <= 30
        assert "near its cluster limit" in w.log()
    finally:
        close_all(held)
        assert w.stop() == 0
    # stopping undoes every cap
    for n in names:
        assert overrides(fleet, n, "burst") is None


def test_three_wardends_exactly_one_actor(fleet, tmp_path):
    body = '[[role]]\nname = "burst"\nscope = "cluster"\nmax_connections = 6\ncooldown = "30s"\n'
    names = sorted(fleet.members_by_name)
    ws = {n: start_wardend(tmp_path, fleet, body=body, member=n, name=f"w-{n}") for n in names}
    held = []
    try:
        leader = fleet.leader()
        for n in names:
            held += hold(fleet, n, 2, user="burst")

        def actors():
            return sorted(n for n, w in ws.items() if w.journal())

        wait_until(lambda: actors() == [leader] and all(overrides(fleet, n, "burst") is not None
                                                          for n in names),
                   timeout=10, what=f"only {leader}'s wardend caps the members")
        assert journal_servers(ws[leader]) == [f"{SCOPE}/{n}" for n in names]
        candidate = next(n for n in names if n != leader)
        close_all(held)  # a switchover restarts the old leader: reopen after it
        held = []
        t = fleet.switchover(candidate)
        fleet.wait_ready()
        for n in names:
            held += hold(fleet, n, 2, user="burst")
        t0 = time.monotonic()
        wait_until(lambda: actors() == [candidate] and all(overrides(fleet, n, "burst") is not None
                                                             for n in names),
                   timeout=15, interval=0.1,
                   what=f"only {candidate}'s wardend acts (journals: "
                        f"{ {n: journal_servers(w) for n, w in ws.items()} })")
        print(f"\n[fleet] switchover in {t:.1f} s; the actor moved to {candidate}'s wardend "
              f"{time.monotonic() - t0:.2f} s after the members were ready")
        # the old actor's wardend logs that it no longer acts
        ws[leader].wait_log(r"not acting on cluster-scoped limits \(leader: " + candidate)
    finally:
        close_all(held)
        for w in ws.values():
            assert w.stop() == 0
    for n in names:
        assert overrides(fleet, n, "burst") is None


def run_leader_move(fleet, tmp_path, move):
    """An override on the leader (role app over its per-server limit), then
    `move` the leader; the clients reconnect to the new leader. The cap must
    follow them and nothing of wardend's stays on the old leader."""
    w = start_wardend(tmp_path, fleet, body='[[role]]\nname = "app"\nmax_connections = 2\n'
                                            'cooldown = "30s"\n')
    held = []
    try:
        old = fleet.leader()
        held = hold(fleet, old, 4)
        wait_until(lambda: overrides(fleet, old, "app") == 2, timeout=10, what="override on the leader")
        assert journal_servers(w) == [f"{SCOPE}/{old}"]
        new, took = move(old)  # the old leader's backends die with its postmaster
        close_all(held)
        held = hold(fleet, new, 4)  # the clients follow the leader
        t0 = time.monotonic()
        wait_until(lambda: overrides(fleet, new, "app") == 2, timeout=10, interval=0.05,
                   what="override on the new leader")
        follow = time.monotonic() - t0
        fleet.wait_ready(timeout=60)
        wait_until(lambda: journal_servers(w) == [f"{SCOPE}/{new}"] and
                   overrides(fleet, old, "app") is None,
                   timeout=15, what=f"nothing left on {old} (journal {w.journal()})")
        return old, new, took, follow
    finally:
        close_all(held)
        assert w.stop() == 0


def test_switchover_moves_the_override(fleet, tmp_path):
    def move(old):
        cand = next(n for n in sorted(fleet.members_by_name) if n != old)
        return cand, fleet.switchover(cand)
    old, new, took, follow = run_leader_move(fleet, tmp_path, move)
    print(f"\n[fleet] switchover {old} -> {new} in {took:.1f} s; override on {new} "
          f"{follow:.2f} s after the clients came")


def test_failover_moves_the_override(fleet, tmp_path):
    def move(old):
        _, new, took = fleet.failover()
        return new, took
    old, new, took, follow = run_leader_move(fleet, tmp_path, move)
    print(f"\n[fleet] failover {old} -> {new} in {took:.1f} s; override on {new} "
          f"{follow:.2f} s after the clients came")
