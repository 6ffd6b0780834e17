"""pg_warden demo (run by scripts/demo): everything happens on a throwaway
server started through the shared harness, and everything is stopped at the
end, also on failure."""
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import psycopg2
import psycopg2.pool

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "harness"))
import pgcluster  # noqa: E402


def title(text):
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(cluster, sql, note=None):
    if note:
        print(f"-- {note}")
    print(f"postgres=# {sql}")
    out = pgcluster.run([f"{pgcluster.PG_BIN}/psql", "-X", "-P", "pager=off", "-h", cluster.sockdir,
                         "-p", str(cluster.port), "-U", "postgres", "-d", "postgres", "-c", sql],
                        check=False)
    print((out.stdout + out.stderr).rstrip(), flush=True)


def has_function(cluster, name):
    return cluster.psql(f"SELECT count(*) FROM pg_proc WHERE proname = '{name}' "
                        "AND pronamespace = 'warden'::regnamespace") != "0"


class Pool:
    """An application's connection pool (psycopg2's ThreadedConnectionPool),
    `active` of whose connections keep running short queries."""

    def __init__(self, cluster, app, role, size, active):
        self.pool = psycopg2.pool.ThreadedConnectionPool(size, size, cluster.dsn(user=role, application_name=app))
        self.conns = [self.pool.getconn() for _ in range(size)]
        for c in self.conns:
            c.autocommit = True
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.work, args=(c,), daemon=True) for c in self.conns[:active]]
        for t in self.threads:
            t.start()

    def work(self, conn):
        while not self.stop.is_set():
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_sleep(0.3)")
            except psycopg2.Error:
                return

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=2)
        try:
            self.pool.closeall()
        except psycopg2.Error:
            pass


def main():
    cluster = pgcluster.Cluster(conf={"max_connections": "60", "warden.sample_interval": "'200ms'"}).init()
    pools = []
    daemon = None
    try:
        title("A throwaway PostgreSQL 15 server with pg_warden preloaded")
        cluster.start()
        cluster.psql("CREATE EXTENSION pg_warden; CREATE ROLE app_api LOGIN; CREATE ROLE app_worker LOGIN;"
                     "CREATE ROLE reporting LOGIN; CREATE ROLE warden LOGIN IN ROLE pg_monitor, pg_signal_backend;"
                     # wardend records its actions in warden.terminations (granted explicitly)
                     "GRANT EXECUTE ON FUNCTION warden.record_action(int, name, name, text, text, "
                     "float8, text, bool, inet) TO warden;")
        print(f"server: {cluster.dsn()}  (max_connections = 60)")

        title("Simulated application pools")
        specs = [("api", "app_api", 10, 3), ("worker-1", "app_worker", 6, 1), ("worker-2", "app_worker", 6, 1),
                 ("reports", "reporting", 8, 0)]
        for app, role, size, active in specs:
            pools.append(Pool(cluster, app, role, size, active))
            print(f"  {app:10} role {role:11} pool of {size:2}, {active} kept busy")
        time.sleep(1.5)

        title("Who holds the connections (exact), and what they do (sampled)")
        show(cluster, "SELECT database, role, application_name, connections, active, idle, "
                      "round(longest_idle_seconds::numeric, 1) AS longest_idle_s, peak_connections "
                      "FROM warden.app_usage WHERE connections > 0 ORDER BY connections DESC")
        show(cluster, "SELECT role, connections, active, idle, connection_limit, budget, "
                      "round(usage_percent::numeric, 1) AS pct FROM warden.role_usage ORDER BY 2 DESC")
        show(cluster, "SELECT connections, max_connections, reserved, round(usage_percent::numeric, 1) AS pct, "
                      "status, in_recovery FROM warden.server_usage")

        if has_function(cluster, "pool_advice") or cluster.psql(
                "SELECT count(*) FROM pg_views WHERE schemaname = 'warden' AND viewname = 'pool_advice'") != "0":
            title("Pool right-sizing advice (from the history the worker keeps)")
            time.sleep(2)
            show(cluster, "SELECT application_name, held_now, active_max, active_p99, recommended_pool_size, "
                          "reclaimable FROM warden.pool_advice WHERE held_now > 0 ORDER BY reclaimable DESC")

        if has_function(cluster, "add_idle_policy"):
            title("An idle policy: reports' idle connections older than 3 s go, the 2 newest stay")
            show(cluster, "SELECT warden.add_idle_policy(name => 'reports-idle', idle_timeout => '3 s', "
                          "application => 'reports', keep_min => 2)")
            time.sleep(4.5)
            show(cluster, "SELECT at, pid, application_name, state, round(idle_seconds::numeric, 3) AS idle_s, "
                          "policy FROM warden.terminations ORDER BY at")
            show(cluster, "SELECT application_name, connections, terminated FROM warden.app_usage "
                          "WHERE application_name = 'reports'")

        title("A budget: at most 12 connections for worker-% applications")
        show(cluster, "SELECT name, max_connections, application FROM "
                      "warden.set_budget(name => 'workers', max_connections => 12, application => 'worker-%')")
        time.sleep(0.6)
        try:
            psycopg2.connect(cluster.dsn(user="app_worker", application_name="worker-3")).close()
            print("  (login admitted)")
        except psycopg2.OperationalError as e:
            print("  a 13th worker login:", str(e).strip().replace("\n", "\n  "))

        bin_dir = os.environ.get("WARDEN_BIN_DIR")
        wardend = os.path.join(bin_dir, "wardend") if bin_dir else None
        if wardend and os.path.exists(wardend):
            title("wardend: per-role limits for app_api (max_idle = 4), /health")
            work = tempfile.mkdtemp(prefix="wardend-demo-")
            conf = os.path.join(work, "wardend.toml")
            with open(conf, "w") as f:
                f.write(f"""[daemon]
interval = "500ms"
state_file = "{work}/wardend.state"
http = "127.0.0.1:{pgcluster.free_port()}"

[[server]]
name = "primary"
dsn = "host={cluster.sockdir} port={cluster.port} dbname=postgres user=warden application_name=wardend"

[[role]]
name = "app_api"
max_connections = 40
max_idle = 4
# idle at least 2 s before max_idle applies (the default, 30 s, is longer than this demo)
min_idle_age = "2s"
priority = "normal"
""")
            http = open(conf).read().split('http = "')[1].split('"')[0]
            daemon = subprocess.Popen([wardend, "--config", conf], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
            time.sleep(3)
            try:
                with urllib.request.urlopen(f"http://{http}/health", timeout=5) as r:
                    print(f"GET /health -> {r.status}\n{r.read().decode()}")
            except Exception as e:  # noqa: BLE001
                print(f"GET /health failed: {e}")
            show(cluster, "SELECT role, connections, active, idle FROM warden.role_usage WHERE role = 'app_api'")
            daemon.terminate()
            out, _ = daemon.communicate(timeout=15)
            print("wardend log (last lines):")
            print("\n".join(out.strip().splitlines()[-8:]))
            daemon = None
        else:
            title("wardend is not built in this checkout; skipping the daemon part")
        title("Done: stopping the server")
    finally:
        if daemon:
            daemon.kill()
        for p in pools:
            p.close()
        cluster.destroy()


if __name__ == "__main__":
    main()
