"""Usage history and pool right-sizing advice (warden.usage_history,
warden.pool_advice, warden.pool_advice_summary), end to end: real client
connections, the worker's samples (warden.sample_interval = 100ms from the
harness), clean and crash restarts, and a damaged history file."""
import os
import signal
import threading
import time

import psycopg2
import pytest

from pgcluster import wait_until

APP = "api-pool"
HISTORY_FILE = os.path.join("pg_stat_tmp", "pg_warden_history.bin")


def rows(cluster, sql):
    out = cluster.psql(sql)
    return [line.split("|") for line in out.splitlines() if line]


def advice(cluster, app):
    r = rows(cluster, "SELECT held_now, peak_connections, active_p50, active_p95, active_p99,"
                      " active_max, recommended_pool_size, reclaimable, samples,"
                      " observed_since <= now() FROM warden.pool_advice"
                      f" WHERE application_name = '{app}'")
    if not r:
        return None
    v = r[0]
    return {"held_now": int(v[0]), "peak_connections": int(v[1]), "p50": int(v[2]),
            "p95": int(v[3]), "p99": int(v[4]), "active_max": int(v[5]),
            "recommended": int(v[6]), "reclaimable": int(v[7]), "samples": int(v[8]),
            "observed_since_ok": v[9] == "t"}


def minute_rows(cluster, app):
    """{bucket_start: (samples, active_peak, connections_peak)} of app's minute buckets."""
    return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows(
        cluster, "SELECT bucket_start, samples, active_peak, connections_peak"
                 " FROM warden.usage_history"
                 f" WHERE application_name = '{app}' AND granularity = 'minute'")}


def worker_pid(cluster):
    pid = cluster.psql("SELECT worker_pid FROM warden.server_usage")
    return int(pid) if pid else None


class Pool:
    """size connections of one application; `busy` of them run queries all the time."""

    def __init__(self, cluster, app, size, busy):
        self.conns = []
        for _ in range(size):
            c = psycopg2.connect(cluster.dsn(application_name=app))
            c.autocommit = True
            self.conns.append(c)
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(c,), daemon=True)
                        for c in self.conns[:busy]]
        for t in self.threads:
            t.start()

    def _run(self, conn):
        with conn.cursor() as cur:
            while not self.stop_event.is_set():
                cur.execute("SELECT pg_sleep(0.5)")

    def close(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=10)
        for c in self.conns:
            c.close()


def test_pool_advice_history_and_restarts(make_cluster):
    cluster = make_cluster(conf={"warden.history_save_interval": "'1s'"})
    pool = Pool(cluster, APP, size=10, busy=3)
    try:
        # ~8 s of samples at 100 ms with 3 of 10 connections always active.
        wait_until(lambda: (advice(cluster, APP) or {}).get("samples", 0) >= 80, timeout=30,
                   what="80 samples of the pool")
        a = advice(cluster, APP)
        assert a["held_now"] == 10
        assert a["peak_connections"] == 10
        assert a["active_max"] == 3
        assert a["p50"] <= a["p95"] <= a["p99"] <= a["active_max"]
        assert 3 <= a["recommended"] <= 6, a
        assert a["reclaimable"] >= 4, a
        assert a["reclaimable"] == a["held_now"] - a["recommended"]
        assert a["observed_since_ok"]

        # History rows for the current minute (the advice includes it too).
        wait_until(lambda: cluster.psql(
            "SELECT count(*) FROM warden.usage_history WHERE granularity = 'minute'"
            f" AND application_name = '{APP}' AND bucket_start = date_trunc('minute', now())")
            == "1", timeout=5, what="a history row for the current minute")
        minutes = minute_rows(cluster, APP)
        assert max(m[1] for m in minutes.values()) == 3
        assert max(m[2] for m in minutes.values()) == 10
        hour = rows(cluster, "SELECT samples, active_peak, connections_peak, connections_mean"
                             " FROM warden.usage_history WHERE granularity = 'hour'"
                             f" AND application_name = '{APP}'")
        assert len(hour) in (1, 2)  # the test may straddle an hour boundary
        assert sum(int(h[0]) for h in hour) >= 80
        assert max(int(h[2]) for h in hour) == 10

        summary = rows(cluster, "SELECT pools, held, recommended, reclaimable, max_connections,"
                                " connections FROM warden.pool_advice_summary")
        assert len(summary) == 1
        pools, held, recommended, reclaimable, max_conn, connections = map(int, summary[0])
        assert pools >= 1 and held >= 10 and reclaimable >= 4 and max_conn == 200
        assert recommended + reclaimable <= held <= connections + 1

        # A worker restart keeps the history (it lives in shared memory).
        old_pid = worker_pid(cluster)
        samples_before = advice(cluster, APP)["samples"]
        cluster.psql(f"SELECT pg_terminate_backend({old_pid})")
        wait_until(lambda: worker_pid(cluster) not in (None, old_pid), timeout=15,
                   what="a new worker")
        wait_until(lambda: advice(cluster, APP)["samples"] > samples_before, timeout=10,
                   what="samples after the worker restart")
        assert advice(cluster, APP)["active_max"] == 3
    finally:
        pool.close()

    # A clean restart keeps the history: saved at shutdown, loaded at start.
    before = minute_rows(cluster, APP)
    log_offset = len(cluster.log_text())
    cluster.restart()
    assert "pg_warden: loaded usage history of" in cluster.log_text()[log_offset:]
    after = minute_rows(cluster, APP)
    for bucket, (samples, active_peak, connections_peak) in before.items():
        assert bucket in after, f"minute {bucket} lost at restart"
        assert after[bucket][0] >= samples
        assert after[bucket][1] == active_peak
        assert after[bucket][2] == connections_peak
    a = advice(cluster, APP)
    assert a["active_max"] == 3 and a["peak_connections"] == 10
    assert a["held_now"] == 0 and a["reclaimable"] == 0

    # A backend crash: the postmaster reinitialises shared memory and the
    # history comes back from the worker's last periodic save (1 s here).
    before = minute_rows(cluster, APP)
    victim = psycopg2.connect(cluster.dsn(application_name="victim"))
    wait_until(lambda: minute_rows(cluster, "victim"), timeout=10, what="history of victim")
    time.sleep(2.5)  # a periodic save that has the victim's history: nothing else has it
    log_offset = len(cluster.log_text())
    os.kill(victim.get_backend_pid(), signal.SIGKILL)
    wait_until(lambda: "reinitializing" in cluster.log_text()[log_offset:], timeout=10,
               what="the crash restart")
    wait_until(lambda: "pg_warden: loaded usage history of" in cluster.log_text()[log_offset:],
               timeout=15, what="history loaded after the crash")
    wait_until(lambda: cluster.psql("SELECT 1", check=False) == "1", timeout=15,
               what="the server after the crash")
    after = minute_rows(cluster, APP)
    for bucket, (samples, active_peak, connections_peak) in before.items():
        if bucket == max(before):  # the newest minute may have moved on since the save
            continue
        assert after.get(bucket, (0, 0, 0))[1:] == (active_peak, connections_peak), bucket
    assert minute_rows(cluster, "victim"), "history since the clean restart lost in the crash"
    try:
        victim.close()
    except psycopg2.Error:
        pass

    # An immediate stop: the server starts and tracking resumes.
    cluster.stop("immediate")
    cluster.start()
    wait_until(lambda: worker_pid(cluster), timeout=15, what="the worker after a crash")
    conn = psycopg2.connect(cluster.dsn(application_name="after-crash"))
    try:
        assert cluster.psql("SELECT connections FROM warden.app_usage"
                            " WHERE application_name = 'after-crash'") == "1"
        wait_until(lambda: minute_rows(cluster, "after-crash"), timeout=10,
                   what="history of a connection opened after the crash")
        wait_until(lambda: advice(cluster, "after-crash"), timeout=5, what="advice after crash")
        assert advice(cluster, APP)["active_max"] == 3
    finally:
        conn.close()


def test_damaged_history_file_is_ignored(cluster):
    path = os.path.join(cluster.datadir, HISTORY_FILE)
    for damage, reason in (("truncate", "truncated"), ("flip", "checksum mismatch")):
        # Some history (the second round: recorded again after the damaged start).
        wait_until(lambda: worker_pid(cluster), timeout=15, what="the worker")
        conn = psycopg2.connect(cluster.dsn(application_name="short"))
        try:
            wait_until(lambda: minute_rows(cluster, "short"), timeout=10, what="history rows")
        finally:
            conn.close()
        # A clean stop writes the file; damage it; the server must start anyway.
        cluster.stop()
        assert os.path.exists(path)
        size = os.path.getsize(path)
        assert size > 39000  # header + at least one key (~39 kB each)
        if damage == "truncate":
            os.truncate(path, size // 2)
        else:
            with open(path, "r+b") as f:
                f.seek(size // 2)
                byte = f.read(1)
                f.seek(size // 2)
                f.write(bytes([byte[0] ^ 0xFF]))
        log_offset = len(cluster.log_text())
        cluster.start()
        log = cluster.log_text()[log_offset:]
        assert f'usage history file "{HISTORY_FILE}" ignored: {reason}' in log, log
        assert not os.path.exists(path)  # consumed, not retried at every start
        assert cluster.psql("SELECT count(*) FROM warden.usage_history"
                            " WHERE application_name = 'short'") == "0"


def test_standby_keeps_its_own_history(make_cluster):
    """A hot standby records the history of its own connections, in its own
    shared memory and file; the primary's history does not mix with it, not
    even through the base backup."""
    cluster = make_cluster(conf={"warden.history_save_interval": "'1s'"})
    primary_conn = psycopg2.connect(cluster.dsn(application_name="primary-pool"))
    wait_until(lambda: cluster.psql("SELECT saved_at IS NOT NULL AND used_keys >= 1"
                                    " FROM warden.history_stats()") == "t",
               timeout=15, what="a saved history on the primary")
    assert os.path.exists(os.path.join(cluster.datadir, HISTORY_FILE))
    standby = cluster.make_standby()
    standby.start()
    try:
        assert not os.path.exists(os.path.join(standby.datadir, HISTORY_FILE))
        assert not minute_rows(standby, "primary-pool")
        wait_until(lambda: standby.psql("SELECT count(*) FROM pg_extension"
                                        " WHERE extname = 'pg_warden'") == "1",
                   timeout=15, what="the extension replayed on the standby")
        pool = Pool(standby, "replica-pool", size=4, busy=1)
        try:
            wait_until(lambda: (advice(standby, "replica-pool") or {}).get("samples", 0) >= 10,
                       timeout=15, what="samples on the standby")
            a = advice(standby, "replica-pool")
            assert a["held_now"] == 4 and a["active_max"] == 1 and a["recommended"] == 3
            assert minute_rows(standby, "replica-pool")
            assert advice(cluster, "replica-pool") is None
            assert not minute_rows(cluster, "replica-pool")
        finally:
            pool.close()
        # The standby saves and loads its own file.
        standby.restart()
        assert "pg_warden: loaded usage history of" in standby.log_text()
        assert advice(standby, "replica-pool")["active_max"] == 1
        assert standby.psql("SELECT in_recovery FROM warden.server_usage") == "t"
        assert not minute_rows(standby, "primary-pool")
        # Promotion: nothing moves, the history goes on (no restart).
        samples = advice(standby, "replica-pool")["samples"]
        standby.promote()
        wait_until(lambda: standby.psql("SELECT in_recovery FROM warden.server_usage") == "f",
                   timeout=15, what="the promotion")
        wait_until(lambda: advice(standby, "replica-pool")["samples"] > samples, timeout=10,
                   what="samples after the promotion")
        assert advice(standby, "replica-pool")["active_max"] == 1
    finally:
        standby.destroy()
        primary_conn.close()
