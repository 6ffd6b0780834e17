-- Usage views over the extension's shared memory.
-- Usage -------------------------------------------------------------------

-- The row type of app_usage is a named composite type rather than OUT
-- parameters: PostgreSQL rebuilds the result descriptor of an OUT-parameter
-- function from pg_proc's arrays several times per query (parse, plan,
-- executor start, the call), while a named row type comes from the type
-- cache. That is about 25,000 instructions, ~11 % of one `SELECT * FROM
-- warden.app_usage` (docs/benchmarks.md).
CREATE TYPE warden.app_usage_row AS (
    database name, role name, application_name text,
    connections int, active int, idle int, idle_in_transaction int,
    longest_idle_seconds float8, peak_connections int, peak_at timestamptz,
    opened bigint, refused bigint, terminated bigint,
    longest_idle_in_transaction_seconds float8);
COMMENT ON TYPE warden.app_usage_row IS 'A row of warden.app_usage.';

CREATE FUNCTION warden.app_usage()
  RETURNS SETOF warden.app_usage_row
  LANGUAGE C STRICT VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'app_usage';
COMMENT ON FUNCTION warden.app_usage() IS
  'Connection usage per (database, role, application_name); see the view warden.app_usage.';

-- warden.app_usage is a foreign table over shared memory rather than a view
-- over warden.app_usage(): a view costs PostgreSQL 15 ~70,000 instructions
-- per query by itself (rewrite and subquery pull-up), a foreign table is
-- planned like a plain table (docs/benchmarks.md). Same columns, same rows.
CREATE FUNCTION warden.usage_fdw_handler() RETURNS fdw_handler
  LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'usage_fdw_handler';
COMMENT ON FUNCTION warden.usage_fdw_handler() IS
  'Foreign data wrapper handler of pg_warden''s usage tables (shared memory, no remote side).';
CREATE FOREIGN DATA WRAPPER pg_warden HANDLER warden.usage_fdw_handler;
COMMENT ON FOREIGN DATA WRAPPER pg_warden IS 'pg_warden''s usage tables, read from shared memory.';
CREATE SERVER pg_warden FOREIGN DATA WRAPPER pg_warden;
COMMENT ON SERVER pg_warden IS 'pg_warden''s shared memory on this server.';

CREATE FOREIGN TABLE warden.app_usage (
    database name, role name, application_name text,
    connections int, active int, idle int, idle_in_transaction int,
    longest_idle_seconds float8, peak_connections int, peak_at timestamptz,
    opened bigint, refused bigint, terminated bigint,
    longest_idle_in_transaction_seconds float8)
  SERVER pg_warden;
COMMENT ON FOREIGN TABLE warden.app_usage IS
  'One row per (database, role, application_name): exact connections, sampled states, peaks and counters.';

CREATE FUNCTION warden.server_usage(
    OUT connections int, OUT max_connections int, OUT reserved int,
    OUT usage_percent float8, OUT status text, OUT sampled_at timestamptz,
    OUT worker_pid int, OUT in_recovery bool)
  RETURNS record
  LANGUAGE C STRICT VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'server_usage';
COMMENT ON FUNCTION warden.server_usage() IS 'Server-wide usage; see the view warden.server_usage.';

CREATE VIEW warden.server_usage AS SELECT * FROM warden.server_usage();
COMMENT ON VIEW warden.server_usage IS
  'One row: client connections against max_connections - superuser_reserved_connections, and health status.';

CREATE FUNCTION warden.backends(
    OUT pid int, OUT database name, OUT role name, OUT application_name text,
    OUT client_addr inet, OUT state text, OUT state_seconds float8,
    OUT backend_start timestamptz, OUT xact_start timestamptz)
  RETURNS SETOF record
  LANGUAGE C STRICT VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'backends';
COMMENT ON FUNCTION warden.backends() IS 'Client backends as of the latest sample; see the view warden.backends.';

CREATE VIEW warden.backends AS SELECT * FROM warden.backends();
COMMENT ON VIEW warden.backends IS 'One row per client backend, from the worker''s latest sample.';

CREATE FUNCTION warden.reset_stats() RETURNS void
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'reset_stats';
COMMENT ON FUNCTION warden.reset_stats() IS
  'Resets peaks (to the current connections) and the opened/refused/terminated counters.';

CREATE FUNCTION warden.worker_stats(
    OUT samples bigint, OUT last_sample_ms float8, OUT mean_sample_ms float8,
    OUT sampled_backends int, OUT tracked_keys int, OUT key_capacity int)
  RETURNS record
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'worker_stats';
COMMENT ON FUNCTION warden.worker_stats() IS
  'The worker''s sampling cost and the usage table''s fill level.';

-- Privileges: monitoring roles read, nobody else by default.
REVOKE ALL ON FUNCTION warden.app_usage(), warden.server_usage(), warden.backends(),
  warden.reset_stats(), warden.worker_stats(), warden.usage_fdw_handler() FROM PUBLIC;
REVOKE ALL ON warden.app_usage, warden.server_usage, warden.backends FROM PUBLIC;
GRANT SELECT ON warden.app_usage, warden.server_usage, warden.backends TO pg_monitor;
-- Functions in a view run with the caller's EXECUTE privilege.
GRANT EXECUTE ON FUNCTION warden.app_usage(), warden.server_usage(), warden.backends(),
  warden.worker_stats() TO pg_monitor;
