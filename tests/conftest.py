"""pytest fixtures shared by the end-to-end and fault tests: real servers from
the one harness (tests/harness/, on the import path through pytest.ini's
`pythonpath`), real libpq connections, wardend processes."""
import resource

import pytest

import pgcluster
from pgcluster import wait_until
from wardend import BIN_DIR, Wardend

# Thousands of client connections from one process need file descriptors.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, _hard), _hard))


@pytest.fixture
def make_cluster():
    """Factory: make_cluster(conf={...}, preload=True, extension=True) -> started Cluster.
    Every cluster it made is stopped and removed at the end of the test."""
    made = []

    def factory(conf=None, preload=True, extension=True, name="primary"):
        c = pgcluster.Cluster(name=name, conf=conf, preload=preload).init()
        made.append(c)
        c.start()
        if extension and preload:
            c.psql("CREATE EXTENSION pg_warden")
        return c

    yield factory
    for c in made:
        c.destroy()


@pytest.fixture
def cluster(make_cluster):
    """One started server with pg_warden preloaded and created in `postgres`."""
    return make_cluster()


@pytest.fixture
def replica_pair(make_cluster):
    """(primary, standby): a started primary with pg_warden created, and a
    streaming hot standby of it made with pg_basebackup -R."""
    primary = make_cluster(conf={"max_connections": "100"})
    standby = primary.make_standby()
    standby.start()
    wait_until(lambda: primary.psql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == "1",
               timeout=30, what="streaming replication")
    yield primary, standby
    standby.destroy()


@pytest.fixture
def wardend(tmp_path):
    """Factory: wardend(servers, body, daemon_extra, name) -> Wardend (not started).
    Every wardend it made that still runs is killed at the end of the test."""
    if not BIN_DIR:
        pytest.skip("WARDEN_BIN_DIR is not set (scripts/test sets it after building the daemon)")
    made = []

    def factory(servers, body="", daemon_extra="", name="wardend"):
        w = Wardend(tmp_path, servers, body, daemon_extra, name)
        made.append(w)
        return w

    yield factory
    for w in made:
        if w.proc and w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()
