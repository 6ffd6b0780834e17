"""wardend under a service manager: systemd's notify protocol, checked against
a unix datagram socket this test listens on (NOTIFY_SOCKET), as systemd would
(no systemd runs here).

READY=1 comes only after the first poll of every server, WATCHDOG=1 repeats
at half of WATCHDOG_USEC and stops while a poll loop is stuck (so that systemd
restarts the daemon), RELOADING=1 then READY=1 around SIGHUP, STOPPING=1 at
SIGTERM.
"""
import os
import signal
import socket
import subprocess
import time

import pytest

from wardend import WARDEND, Wardend

WATCHDOG_USEC = 600_000  # pings every 0.3 s; a poll stuck for 0.6 s stops them


class NotifySocket:
    """The manager's end: a unix datagram socket collecting (time, message)."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []

    def drain(self, seconds: float = 0.0) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                data = self.sock.recv(4096)
                self.messages.append((time.monotonic(), data.decode()))
                continue
            except socket.timeout:
                pass
            if time.monotonic() >= deadline:
                return

    def wait_for(self, field: str, timeout: float = 15.0, after: float = 0.0) -> float:
        """Time at which a message with the line `field` arrived (after `after`)."""
        deadline = time.monotonic() + timeout
        while True:
            for t, m in self.messages:
                if t >= after and field in m.split("\n"):
                    return t
            if time.monotonic() > deadline:
                raise AssertionError(f"no {field} within {timeout}s; got {self.messages}")
            self.drain(0.05)

    def count(self, field: str, since: float, until: float = float("inf")) -> int:
        return sum(1 for t, m in self.messages if since <= t < until and field in m.split("\n"))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    s = NotifySocket(tmp_path / "notify.sock")
    yield s
    s.close()


def start(w: Wardend, notify: NotifySocket) -> subprocess.Popen:
    env = dict(os.environ, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC=str(WATCHDOG_USEC))
    log = open(w.logfile, "a")
    w.proc = subprocess.Popen([WARDEND, "--config", w.config], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    log.close()
    return w.proc


def wardend_backend(cluster) -> int:
    pid = cluster.psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
                       "AND pid <> pg_backend_pid()")
    assert pid, "wardend has no session on the server"
    return int(pid)


def test_notify_protocol(cluster, wardend, notify):  # noqa: F811
    w = wardend([("primary", cluster)], daemon_extra='connect_timeout = "10s"')
    # The server freezes, so wardend's first poll cannot finish...
    postmaster = int(open(os.path.join(cluster.datadir, "postmaster.pid")).readline())
    os.kill(postmaster, signal.SIGSTOP)
    try:
        proc = start(w, notify)
        notify.drain(1.5)
        assert notify.count("READY=1", 0) == 0, f"READY=1 before the first poll: {notify.messages}"
    finally:
        os.kill(postmaster, signal.SIGCONT)
    # ...and once it has, READY=1 comes, with the poll's figures already out.
    ready_at = notify.wait_for("READY=1")
    code, health = w.health()
    assert code == 200, health
    assert "connections in use" in health["checks"][0]["description"], health

    # The watchdog: fed every WATCHDOG_USEC / 2 while the poll loop runs.
    t0 = time.monotonic()
    notify.drain(1.8)
    t1 = time.monotonic()
    pings = notify.count("WATCHDOG=1", t0, t1)
    expected = (t1 - t0) / (WATCHDOG_USEC / 2e6)
    assert expected - 2 <= pings <= expected + 1, f"{pings} pings in {t1 - t0:.2f} s"

    # A stuck poll loop: wardend's session frozen mid-poll. The pings stop, so
    # systemd would kill and restart wardend after WatchdogSec.
    backend = wardend_backend(cluster)
    os.kill(backend, signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        notify.drain(3.0)
        # Within 0.2 s the next poll starts and blocks; 0.6 s later it is stuck.
        assert notify.count("WATCHDOG=1", frozen_at + 1.2) == 0, notify.messages
    finally:
        os.kill(backend, signal.SIGCONT)
    resumed_at = time.monotonic()
    notify.wait_for("WATCHDOG=1", after=resumed_at, timeout=5)

    # SIGHUP: RELOADING=1, then READY=1 once the configuration is reloaded.
    hup_at = time.monotonic()
    proc.send_signal(signal.SIGHUP)
    reloading = notify.wait_for("RELOADING=1", after=hup_at)
    notify.wait_for("READY=1", after=reloading)
    w.wait_log("reloaded")

    # SIGTERM: STOPPING=1, then a clean exit.
    term_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    notify.wait_for("STOPPING=1", after=term_at)
    assert proc.wait(timeout=20) == 0
    w.proc = None


def test_no_notify_socket_no_messages(cluster, wardend, notify):  # noqa: F811
    """Without NOTIFY_SOCKET (started by hand), wardend sends nothing and runs."""
    w = wardend([("primary", cluster)])
    w.start()
    w.wait_http()
    notify.drain(0.5)
    assert notify.messages == []
    assert w.stop() == 0
