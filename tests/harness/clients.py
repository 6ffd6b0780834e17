"""Client-side helpers shared by the end-to-end and fault tests (psycopg2)."""
import psycopg2

from pgcluster import wait_until


def try_connect(cluster, **kw):
    """(connection, None) or (None, OperationalError)."""
    try:
        return psycopg2.connect(cluster.dsn(**kw)), None
    except psycopg2.OperationalError as e:
        return None, e


def refused(err):
    """Was this login refused by pg_warden's admission (53300)?"""
    return err is not None and "too many connections" in str(err)


def budget_loaded(cluster, name, max_connections, timeout=15):
    """Wait until the budget `name` with this limit is in the server's shared memory."""
    mc = "NULL" if max_connections is None else str(max_connections)
    wait_until(lambda: cluster.psql(f"SELECT count(*) FROM warden.budget_usage WHERE name = '{name}' "
                                    f"AND max_connections IS NOT DISTINCT FROM {mc}") == "1",
               timeout=timeout, what=f"budget {name} in shared memory")


def config_generation(cluster, dbname="postgres") -> int:
    """The loader's generation: grows by one with every load (warden.config_status())."""
    return int(cluster.psql("SELECT generation FROM warden.config_status()", dbname=dbname))


def config_applied(cluster, after_generation=None, dbname="postgres", timeout=15):
    """Wait until pg_warden's configuration as committed before this call is in
    shared memory and the worker has sampled with it (warden.config_status()).

    By default it stamps the time, then commits an empty change to a
    configuration table, so that a load with a snapshot after the stamp (hence
    after the caller's commit) is sure to follow. With after_generation (read
    before the caller's change, while nothing else changes), it only waits for
    a load after that one: for changes that must reload by themselves (roles)."""
    if after_generation is None:
        since = cluster.psql("SELECT clock_timestamp()", dbname=dbname)  # after the caller's commit
        cluster.psql("DELETE FROM warden.idle_policies WHERE false", dbname=dbname)
        cond = f"loaded_at > '{since}'"
        what = f"a configuration load after {since}"
    else:
        cond = f"generation > {int(after_generation)}"
        what = f"a configuration load after generation {after_generation}"
    query = f"SELECT {cond} AND applied_generation >= generation, * FROM warden.config_status()"
    try:
        wait_until(lambda: cluster.psql(query, dbname=dbname).startswith("t|"), timeout=timeout,
                   what=what + ", applied by the worker")
    except AssertionError as e:
        raise AssertionError(f"{e}; config_status: {cluster.psql(query, dbname=dbname)}") from None


def worker_passed(cluster, seconds, dbname="postgres", timeout=30):
    """Wait `seconds`, then until the worker has completed two samples that began
    after that: whatever a policy would do by then, it has done (for asserting
    that something did not happen)."""
    import time
    time.sleep(seconds)
    start = int(cluster.psql("SELECT samples FROM warden.worker_stats()", dbname=dbname))
    wait_until(lambda: int(cluster.psql("SELECT samples FROM warden.worker_stats()", dbname=dbname))
               >= start + 2, timeout=timeout, what="two more samples of the worker")


def connect(cluster, user, app="app", n=1):
    conns = []
    for _ in range(n):
        c = psycopg2.connect(cluster.dsn(user=user, application_name=app))
        c.autocommit = True
        conns.append(c)
    return conns


def count(cluster, role):
    return int(cluster.psql(
        f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}' "
        "AND backend_type = 'client backend'"))


def close_all(conns):
    for c in conns:
        try:
            c.close()
        except Exception:  # noqa: BLE001 - already terminated
            pass
