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
