"""Trust, end to end: nothing the extension enforces outlives DROP EXTENSION
(on a standby too), the loader never calls a planted operator, a dry run is
recorded once per idle period whatever else changes, and what runs under
`warden.enforce = off`, `warden.exempt_roles` or for Patroni's own session."""
import time

import psycopg2

import pgcluster
from clients import close_all, connect, refused, try_connect
from pgcluster import wait_until


def admitted(cluster, user, app="app"):
    c, e = try_connect(cluster, user=user, application_name=app)
    if c is not None:
        c.close()
        return True
    assert refused(e), str(e)
    return False


def test_drop_extension_lifts_overrides_on_primary_and_standby(replica_pair):
    primary, standby = replica_pair
    primary.psql("CREATE ROLE api LOGIN")
    pgcluster.wait_replayed(primary, standby)
    for server in (primary, standby):
        server.psql("SELECT warden.close_admission(role => 'api', max_connections => 0, reason => 'test')")
        server.psql("SELECT warden.close_admission(application => 'batch-%', max_connections => 0)")
        assert not admitted(server, "api")
    primary.psql("DROP EXTENSION pg_warden")
    t0 = time.monotonic()
    # within one sample interval (1 s) of the loader's wake, plus replay
    wait_until(lambda: admitted(primary, "api"), timeout=5, what="override lifted on the primary")
    wait_until(lambda: admitted(standby, "api"), timeout=10, what="override lifted on the standby")
    print(f"\n[trust] overrides lifted on both servers {time.monotonic() - t0:.2f} s after DROP EXTENSION")
    for server in (primary, standby):
        assert "admission override(s) lifted: the extension is gone" in server.log_text()
    # created again: no override comes back
    primary.psql("CREATE EXTENSION pg_warden")
    assert primary.psql("SELECT count(*) FROM warden.admission_overrides") == "0"


def test_loader_never_calls_a_planted_operator(make_cluster):
    c = make_cluster()
    # A database owner with CREATE on public plants "=" for the types the
    # loader compares (name = name: a policy's owner against pg_roles), and
    # puts public before pg_catalog in the database's default search_path,
    # which the loader (the bootstrap superuser) runs under.
    c.psql("CREATE ROLE mallory LOGIN; ALTER DATABASE postgres OWNER TO mallory; "
           "GRANT CREATE ON SCHEMA public TO mallory; CREATE ROLE victim LOGIN;")
    c.psql("""
        CREATE FUNCTION public.planted_eq(name, name) RETURNS bool LANGUAGE plpgsql AS $$
        BEGIN
          RAISE WARNING 'planted operator called by %', current_user;
          RETURN $1::text OPERATOR(pg_catalog.=) $2::text;
        END $$;
        CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = name, FUNCTION = public.planted_eq);
        ALTER DATABASE postgres SET search_path = public, pg_catalog;
        """, user="mallory")
    # the plant works for anyone on that path ...
    assert "planted operator called" in c.psql("SELECT 'a'::name = 'a'::name", check=False)
    # ... the loader starts again with the database's new defaults
    loader = c.psql("SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_warden loader'")
    c.psql(f"SELECT pg_terminate_backend({loader})")
    wait_until(lambda: c.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                              f"'pg_warden loader' AND pid <> {loader}") == "1",
               timeout=15, what="the loader restarted")
    mark = len(c.log_text())
    c.psql("SELECT warden.add_idle_policy('p', '1 h', role => 'victim')")
    c.psql("SELECT warden.set_budget('b', 5, role => 'victim')")
    wait_until(lambda: "loaded 1 idle policies" in c.log_text()[mark:], timeout=10, what="policies loaded")
    wait_until(lambda: c.psql("SELECT count(*) FROM warden.budget_usage") == "1", timeout=10,
               what="budget loaded")
    assert "planted operator called" not in c.log_text()[mark:]


def test_dry_run_recorded_once_per_idle_period_across_budget_changes(cluster):
    cluster.psql("SELECT warden.add_idle_policy('dry', '200 ms', application => 'dry', dry_run => true)")
    wait_until(lambda: "loaded 1 idle policies" in cluster.log_text(), timeout=10, what="policy loaded")
    s = connect(cluster, "postgres", app="dry")

    def recorded():
        return int(cluster.psql("SELECT count(*) FROM warden.terminations WHERE policy = 'dry'"))
    try:
        wait_until(lambda: recorded() == 1, timeout=5, what="the dry-run decision")
        # every budget change is a new configuration generation
        for i in range(3):
            cluster.psql(f"SELECT warden.set_budget('b{i}', 10 + {i}, application => 'other')")
            wait_until(lambda: cluster.psql(f"SELECT count(*) FROM warden.budget_usage WHERE name = 'b{i}'") == "1",
                       timeout=10, what="budget loaded")
            time.sleep(0.3)  # past the policy's timeout: a new record would be due now if any
        assert recorded() == 1
        # a new idle period is decided again
        s[0].cursor().execute("SELECT 1")
        wait_until(lambda: recorded() == 2, timeout=5, what="the next idle period's decision")
    finally:
        close_all(s)


def test_terminate_idle_under_enforce_off_says_so(make_cluster):
    c = make_cluster(conf={"warden.enforce": "off"})
    s = connect(c, "postgres", app="idle-app")
    try:
        conn = psycopg2.connect(c.dsn())
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("SELECT pid, dry_run FROM warden.terminate_idle('1 ms', application => 'idle-app')")
        rows = cur.fetchall()
        assert rows and all(r[1] for r in rows)
        assert any("warden.enforce is off: no session is terminated" in n for n in conn.notices)
        # dry_run => true asked for: nothing to say
        conn.notices.clear()
        cur.execute("SELECT count(*) FROM warden.terminate_idle('1 ms', application => 'idle-app', "
                    "dry_run => true)")
        assert not any("enforce" in n for n in conn.notices)
        conn.close()
    finally:
        close_all(s)


def test_close_admission_refuses_an_exempt_role(make_cluster):
    c = make_cluster(conf={"warden.exempt_roles": "'ops'"})
    c.psql("CREATE ROLE ops LOGIN")
    out = c.psql("SELECT warden.close_admission(role => 'ops', max_connections => 0)", check=False)
    assert 'invalid value for "role": "ops" is in warden.exempt_roles' in out
    assert c.psql("SELECT count(*) FROM warden.admission_overrides") == "0"


def test_patronis_own_session_is_never_terminated(cluster):
    """A superuser's session named 'Patroni' is spared by a superuser's policy
    and by terminate_idle; other superuser sessions are not."""
    cluster.psql("SELECT warden.add_idle_policy('su-catch-all', '300 ms')")
    wait_until(lambda: "loaded 1 idle policies" in cluster.log_text(), timeout=10, what="policy loaded")
    patroni = connect(cluster, "postgres", app="Patroni")[0]
    other = connect(cluster, "postgres", app="not-patroni")[0]
    try:
        wait_until(lambda: cluster.psql("SELECT count(*) FROM warden.terminations "
                                        "WHERE application_name = 'not-patroni'") == "1",
                   timeout=5, what="the other superuser session terminated")
        time.sleep(0.5)
        patroni.cursor().execute("SELECT 1")  # still connected
        assert cluster.psql("SELECT count(*) FROM warden.terminations WHERE application_name = 'Patroni'") == "0"
        cluster.psql("SELECT warden.drop_idle_policy('su-catch-all')")
        time.sleep(0.2)
        assert cluster.psql("SELECT count(*) FROM warden.terminate_idle('1 ms', application => 'Patroni')") == "0"
        patroni.cursor().execute("SELECT 1")
    finally:
        close_all([patroni, other])


def test_contradicting_health_thresholds_are_reported(make_cluster):
    c = make_cluster(conf={"warden.degraded_percent": "95", "warden.unhealthy_percent": "90"})
    msg = "warden.degraded_percent (95) must be below warden.unhealthy_percent (90)"
    wait_until(lambda: msg in c.log_text(), timeout=10, what="the warning at start")
    # at 50 % of a server whose unhealthy_percent is 40: unhealthy wins
    c.set_conf(**{"warden.degraded_percent": "60", "warden.unhealthy_percent": "40",
                  "max_connections": "13"})
    c.restart()
    wait_until(lambda: "warden.degraded_percent (60) must be below warden.unhealthy_percent (40)"
               in c.log_text(), timeout=10, what="the warning after restart")
    held = connect(c, "postgres", app="hold", n=4)  # + the psql below: 5 of 10 usable
    try:
        wait_until(lambda: c.psql("SELECT status FROM warden.server_usage") == "unhealthy",
                   timeout=5, what="unhealthy")
    finally:
        close_all(held)


def test_policy_of_an_owner_without_inherited_privileges_is_not_loaded(cluster):
    """The loader checks what PostgreSQL checks to signal (has_privs_of_role):
    a NOINHERIT member of pg_signal_backend does not have its privileges."""
    cluster.psql("CREATE ROLE noinh NOINHERIT LOGIN IN ROLE pg_signal_backend; "
                 "CREATE ROLE inh LOGIN IN ROLE pg_signal_backend")
    # a superuser writes the rows (as a restore would): the owners are kept
    cluster.psql("INSERT INTO warden.idle_policies (name, idle_timeout, application, owner) VALUES "
                 "('by-noinh', '1 h', 'x', 'noinh'), ('by-inh', '1 h', 'x', 'inh')")
    wait_until(lambda: "loaded 1 idle policies" in cluster.log_text(), timeout=10, what="policies loaded")
    assert ('idle policy "by-noinh" is ignored: its owner "noinh" is not a superuser and lacks '
            'the privileges of pg_signal_backend') in cluster.log_text()
    assert 'idle policy "by-inh" is ignored' not in cluster.log_text()


def test_rewind_role_exempt_by_default(make_cluster):
    """A role that may run pg_rewind (granted EXECUTE on pg_read_binary_file, as
    Patroni's rewind role is) is never terminated or refused, unless
    warden.exempt_rewind_roles is off; nobody can grant that to themselves."""
    from clients import config_applied, worker_passed
    c = make_cluster()
    c.psql("CREATE ROLE rw LOGIN; CREATE ROLE plain LOGIN;"
           "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)"
           " TO rw")
    config_applied(c)  # the GRANT reloads too; this makes sure it is in
    assert c.psql("SELECT rewind_roles FROM warden.config_status()") == "{rw}"
    c.psql("SELECT warden.add_idle_policy('catch-all', '300 ms', application => NULL, role => NULL);"
           "SELECT warden.set_budget('one-each', 1, application => 'b-%')")
    config_applied(c)
    rw = psycopg2.connect(c.dsn(user="rw", application_name="rewind"))
    rw.autocommit = True
    pl = psycopg2.connect(c.dsn(user="plain", application_name="other"))
    wait_until(lambda: pl.closed or c.psql(
        f"SELECT count(*) FROM warden.terminations WHERE pid = {pl.get_backend_pid()}") == "1",
        timeout=10, what="the plain role's idle session terminated")
    worker_passed(c, 0.6)
    assert c.psql(f"SELECT count(*) FROM warden.terminations WHERE pid = {rw.get_backend_pid()}") == "0"
    rw.cursor().execute("SELECT 1")  # still alive
    # budgets: the rewind role gets past a budget that refuses the plain role
    held = [psycopg2.connect(c.dsn(user=u, application_name="b-1")) for u in ("plain",)]
    assert not admitted(c, "plain", "b-1")
    assert admitted(c, "rw", "b-1")
    err = pgcluster.run([f"{pgcluster.PG_BIN}/psql", "-X", "-h", c.sockdir, "-p", str(c.port),
                         "-U", "postgres", "-d", "postgres", "-c",
                         "SELECT warden.close_admission(role => 'rw')"], check=False)
    assert err.returncode != 0 and "may run pg_rewind" in err.stderr, err.stderr
    # switched off: the policy takes the rewind role's idle session too
    c.psql("ALTER SYSTEM SET warden.exempt_rewind_roles = off")
    c.reload()
    wait_until(lambda: c.psql("SHOW warden.exempt_rewind_roles") == "off", what="reload")
    wait_until(lambda: c.psql(
        f"SELECT count(*) FROM warden.terminations WHERE pid = {rw.get_backend_pid()}") == "1",
        timeout=10, what="the rewind role's idle session terminated once not exempt")
    c.psql("ALTER SYSTEM RESET warden.exempt_rewind_roles")
    c.reload()
    # the list follows REVOKE without any configuration change
    before = int(c.psql("SELECT generation FROM warden.config_status()"))
    c.psql("REVOKE EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)"
           " FROM rw")
    config_applied(c, after_generation=before)
    assert c.psql("SELECT rewind_roles FROM warden.config_status()") == "{}"
    close_all(held + [rw, pl])
