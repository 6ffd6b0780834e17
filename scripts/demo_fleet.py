"""pg_warden fleet demo (run by `scripts/demo --fleet`): a throwaway Patroni
cluster (etcd and three PostgreSQL 15 members with pg_warden preloaded, on
loopback, through tests/harness/patroni.py), wardend watching it through
[[cluster]], a role over its limit capped on the leader, and a switchover
that moves the cap to the new leader and leaves nothing on the old one.
Everything is stopped at the end, also on failure."""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import psycopg2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "harness"))
import pgcluster  # noqa: E402
from patroni import PatroniCluster  # noqa: E402

SCOPE = "demo"


def title(text):
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def overrides(fleet):
    """member -> its warden.admission_overrides rows for role app."""
    out = {}
    for name in sorted(fleet.members_by_name):
        rows = fleet.psql(name, "SELECT role || ' capped at ' || max_connections"
                                " || coalesce(' (' || reason || ')', '')"
                                " FROM warden.admission_overrides WHERE role = 'app'", check=False)
        out[name] = rows.strip() or "-"
    return out


def get_health(http):
    try:
        with urllib.request.urlopen(f"http://{http}/health", timeout=5) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:  # 503 while a member is unhealthy or unreachable
        return json.loads(e.read())


def print_members(http):
    health = get_health(http)
    print(f"GET /health -> {health['status']}")
    for c in health["checks"]:
        d = c["data"]
        lag = d.get("replay_lag_seconds")
        print(f"  {c['name']:14} {d.get('patroni_role', '?'):8} {c['status']:9} "
              f"{d.get('connections', '?')}/{d.get('max_connections', '?')} connections"
              + (f", replay lag {lag:.2f} s" if isinstance(lag, (int, float)) else ""))


def hold(fleet, member, n):
    conns = []
    for _ in range(n):
        try:
            conns.append(psycopg2.connect(fleet.dsn(member, user="app", application_name="svc")))
        except psycopg2.OperationalError as e:
            print(f"  login refused on {member}: {str(e).strip().splitlines()[0]}")
    return conns


def close_all(conns):
    for c in conns:
        try:
            c.close()
        except psycopg2.Error:
            pass


def main():
    wardend = os.path.join(os.environ.get("WARDEN_BIN_DIR", "build"), "wardend")
    fleet = PatroniCluster(members=3, scope=SCOPE)
    daemon = None
    held = []
    work = tempfile.mkdtemp(prefix="wardend-fleet-demo-")
    t_start = time.monotonic()
    try:
        title("A Patroni cluster on loopback: etcd + 3 members, pg_warden preloaded")
        fleet.start()
        leader = fleet.leader()
        fleet.psql(leader, "CREATE EXTENSION pg_warden; CREATE ROLE app LOGIN")
        fleet.wait_replayed()
        print(f"up in {fleet.start_seconds:.1f} s; leader {leader}")

        title("wardend with [[cluster]]: members from Patroni's REST API, app limited to 2 per server")
        http = f"127.0.0.1:{pgcluster.free_port()}"
        urls = ", ".join(f'"{m.api}"' for m in fleet.members_by_name.values())
        conf = os.path.join(work, "wardend.toml")
        with open(conf, "w") as f:
            f.write(f"""[daemon]
interval = "1s"
state_file = "{work}/wardend.state"
http = "{http}"

[[cluster]]
name = "{SCOPE}"
patroni = [{urls}]
dsn = "dbname=postgres user=postgres application_name=wardend"

[[role]]
name = "app"
max_connections = 2
cooldown = "30s"
""")
        print(open(conf).read().rstrip())
        log = open(os.path.join(work, "wardend.log"), "w")
        daemon = subprocess.Popen([wardend, "--config", conf], stdout=log, stderr=subprocess.STDOUT)
        pgcluster.wait_until(lambda: _health_ok(http), timeout=20, what="wardend answering /health")
        pgcluster.wait_until(lambda: _members_known(http) == 3, timeout=20, what="3 members polled, in /health")
        print_members(http)

        title(f"Four sessions of app on the leader {leader}: wardend caps the role there")
        held = hold(fleet, leader, 4)
        pgcluster.wait_until(lambda: overrides(fleet)[leader] != "-", timeout=15, what="the cap on the leader")
        for name, row in overrides(fleet).items():
            print(f"  {name}: {row}")

        candidate = next(n for n in sorted(fleet.members_by_name) if n != leader)
        title(f"patronictl switchover {leader} -> {candidate}; the clients follow the leader")
        took = fleet.switchover(candidate)
        close_all(held)
        held = hold(fleet, candidate, 4)
        t0 = time.monotonic()
        pgcluster.wait_until(lambda: overrides(fleet)[candidate] != "-", timeout=20,
                             what="the cap on the new leader")
        follow = time.monotonic() - t0
        fleet.wait_ready(timeout=60)
        pgcluster.wait_until(lambda: overrides(fleet)[leader] == "-", timeout=20,
                             what="nothing left on the old leader")
        print(f"switchover took {took:.1f} s; the cap was on {candidate} {follow:.1f} s after its clients came")
        for name, row in overrides(fleet).items():
            print(f"  {name}: {row}")
        print_members(http)
        with open(os.path.join(work, "wardend.state")) as f:
            journal = json.load(f)
        print(f"wardend's journal: {json.dumps(journal)[:300]}")

        title("Clients gone: wardend lifts the cap after its cool-down; stopping wardend lifts it now")
        close_all(held)
        held = []
        daemon.terminate()
        daemon.wait(timeout=30)
        daemon = None
        for name, row in overrides(fleet).items():
            print(f"  {name}: {row}")
        print("wardend log (last lines):")
        with open(os.path.join(work, "wardend.log")) as f:
            print("".join(f.readlines()[-8:]).rstrip())
        title(f"Done in {time.monotonic() - t_start:.0f} s: stopping the cluster")
    finally:
        close_all(held)
        if daemon:
            daemon.kill()
            daemon.wait()
        fleet.destroy()


def _health_ok(http):
    try:
        with urllib.request.urlopen(f"http://{http}/health", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # answered (503 while a member is unreachable)
    except OSError:
        return False


def _members_known(http):
    try:
        health = get_health(http)
    except OSError:
        return 0
    return sum(1 for c in health["checks"]
               if c["data"].get("patroni_role") and c["data"].get("reachable") and
               c["data"].get("max_connections"))  # polled


if __name__ == "__main__":
    main()
