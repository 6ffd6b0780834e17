-- pg_warden 1.0 install script.
-- Built by the Makefile from extension/sql/*.sql in name order: one file per
-- subsystem (usage, idle policies, admission, history...).
\echo Use "CREATE EXTENSION pg_warden" to load this file. \quit

-- Refuse to install into a server that did not preload the library.
CREATE FUNCTION warden.assert_preloaded() RETURNS void
  LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'assert_preloaded';
SELECT warden.assert_preloaded();
COMMENT ON FUNCTION warden.assert_preloaded() IS
  'Raises an error unless pg_warden was loaded through shared_preload_libraries.';
REVOKE ALL ON FUNCTION warden.assert_preloaded() FROM PUBLIC;

GRANT USAGE ON SCHEMA warden TO PUBLIC;

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
    opened bigint, refused bigint, terminated bigint);
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
    opened bigint, refused bigint, terminated bigint)
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

-- Idle-termination policies ---------------------------------------------------
-- Policies live in this table (an extension configuration table: pg_dump
-- keeps its rows). The loader worker copies the enabled rows into shared
-- memory at commit (statement trigger -> relcache invalidation); the sampler
-- worker enforces them.

CREATE FUNCTION warden.validate_idle_policy(
    name text, idle_timeout interval, application text, role text, database text,
    state text, keep_min int, schedule text, dry_run bool)
  RETURNS void
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'validate_idle_policy';
COMMENT ON FUNCTION warden.validate_idle_policy(text, interval, text, text, text, text, int, text, bool) IS
  'Raises an error (SQLSTATE 22023, naming the argument) unless the arguments make a valid idle policy.';

CREATE FUNCTION warden.config_changed() RETURNS trigger
  LANGUAGE C AS 'MODULE_PATHNAME', 'config_changed';
COMMENT ON FUNCTION warden.config_changed() IS
  'Statement trigger of pg_warden''s configuration tables: makes the loader worker reload them at commit.';

CREATE TABLE warden.idle_policies (
  name          text PRIMARY KEY,
  idle_timeout  interval NOT NULL,
  application   text,                          -- LIKE pattern; NULL = any
  role          text,                          -- NULL = any
  database      text,                          -- NULL = any
  state         text NOT NULL DEFAULT 'idle',  -- idle | idle in transaction | idle in transaction (aborted) | any idle
  keep_min      int NOT NULL DEFAULT 0,
  schedule      text,                          -- 5-field cron in the server's time zone; NULL = always
  dry_run       bool NOT NULL DEFAULT false,
  enabled       bool NOT NULL DEFAULT true,
  owner         name NOT NULL DEFAULT current_user,
  created_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE warden.idle_policies IS
  'Idle-termination policies enforced by the pg_warden worker; plain UPDATE/DELETE work and apply at commit.';

-- Every written row is validated like add_idle_policy's arguments. The owner
-- is the role that wrote the row, unless a superuser writes it (pg_dump's
-- restore keeps the original owners). Whether a policy may touch superuser
-- sessions is decided from its owner's attributes when it is loaded.
CREATE FUNCTION warden.idle_policies_check() RETURNS trigger
  LANGUAGE plpgsql AS $$
DECLARE
  writer_is_super bool := (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
BEGIN
  IF NOT writer_is_super AND NOT pg_catalog.pg_has_role(current_user, 'pg_signal_backend', 'MEMBER') THEN
    RAISE EXCEPTION 'permission denied to write idle policies'
      USING ERRCODE = '42501',
            DETAIL = 'Only superusers and members of pg_signal_backend may define idle policies.';
  END IF;
  PERFORM warden.validate_idle_policy(NEW.name, NEW.idle_timeout, NEW.application, NEW.role,
                                      NEW.database, NEW.state, NEW.keep_min, NEW.schedule,
                                      NEW.dry_run);
  IF NEW.enabled IS NULL THEN
    RAISE EXCEPTION 'invalid value for "enabled": must not be NULL' USING ERRCODE = '22023';
  END IF;
  IF NOT writer_is_super THEN
    NEW.owner := current_user;
  END IF;
  RETURN NEW;
END
$$;
COMMENT ON FUNCTION warden.idle_policies_check() IS
  'Row trigger of warden.idle_policies: validates the row and records its owner.';

CREATE TRIGGER idle_policies_check BEFORE INSERT OR UPDATE ON warden.idle_policies
  FOR EACH ROW EXECUTE FUNCTION warden.idle_policies_check();
CREATE TRIGGER idle_policies_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
  ON warden.idle_policies FOR EACH STATEMENT EXECUTE FUNCTION warden.config_changed();

SELECT pg_catalog.pg_extension_config_dump('warden.idle_policies', '');

CREATE FUNCTION warden.add_idle_policy(
    name text, idle_timeout interval, application text DEFAULT NULL, role text DEFAULT NULL,
    database text DEFAULT NULL, state text DEFAULT 'idle', keep_min int DEFAULT 0,
    schedule text DEFAULT NULL, dry_run bool DEFAULT false)
  RETURNS void
  LANGUAGE plpgsql AS $$
BEGIN
  PERFORM warden.validate_idle_policy(name, idle_timeout, application, role, database, state,
                                      keep_min, schedule, dry_run);
  IF EXISTS (SELECT 1 FROM warden.idle_policies p WHERE p.name = add_idle_policy.name) THEN
    RAISE EXCEPTION 'idle policy "%" already exists', name USING ERRCODE = '23505';
  END IF;
  IF (SELECT count(*) FROM warden.idle_policies) >= 64 THEN
    RAISE EXCEPTION 'too many idle policies' USING ERRCODE = '54000',
      DETAIL = 'pg_warden holds at most 64 idle policies.';
  END IF;
  INSERT INTO warden.idle_policies (name, idle_timeout, application, role, database, state,
                                    keep_min, schedule, dry_run)
  VALUES (name, idle_timeout, application, role, database, state, keep_min, schedule, dry_run);
END
$$;
COMMENT ON FUNCTION warden.add_idle_policy(text, interval, text, text, text, text, int, text, bool) IS
  'Adds an idle-termination policy; it applies at commit. Validates every argument first.';

CREATE FUNCTION warden.drop_idle_policy(name text) RETURNS void
  LANGUAGE plpgsql AS $$
BEGIN
  IF name IS NULL THEN
    RAISE EXCEPTION 'invalid value for "name": must not be NULL' USING ERRCODE = '22023';
  END IF;
  DELETE FROM warden.idle_policies p WHERE p.name = drop_idle_policy.name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'idle policy "%" does not exist', name USING ERRCODE = '42704';
  END IF;
END
$$;
COMMENT ON FUNCTION warden.drop_idle_policy(text) IS 'Removes an idle-termination policy; it stops at commit.';

-- Terminations ----------------------------------------------------------------

CREATE FUNCTION warden.terminations(
    OUT at timestamptz, OUT pid int, OUT database name, OUT role name,
    OUT application_name text, OUT client_addr inet, OUT state text,
    OUT idle_seconds float8, OUT policy text, OUT source text, OUT dry_run bool)
  RETURNS SETOF record
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'terminations';
COMMENT ON FUNCTION warden.terminations() IS
  'The ring of the last 1024 terminations and dry-run decisions; see the view warden.terminations.';

CREATE VIEW warden.terminations AS SELECT * FROM warden.terminations();
COMMENT ON VIEW warden.terminations IS
  'Every termination and dry-run decision (policies, terminate_idle, the daemon), oldest first; the last 1024.';

CREATE FUNCTION warden.terminate_idle(
    older_than interval, application text DEFAULT NULL, role text DEFAULT NULL,
    database text DEFAULT NULL, state text DEFAULT 'any idle', keep_min int DEFAULT 0,
    dry_run bool DEFAULT false)
  RETURNS TABLE (at timestamptz, pid int, database name, role name, application_name text,
                 client_addr inet, state text, idle_seconds float8, policy text, source text,
                 dry_run bool)
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'terminate_idle';
COMMENT ON FUNCTION warden.terminate_idle(interval, text, text, text, text, int, bool) IS
  'Terminates now the idle sessions a policy with these arguments would; returns the terminations rows.';

CREATE FUNCTION warden.record_action(
    pid int, database name, role name, application text, state text, idle_seconds float8,
    action text, dry_run bool DEFAULT false, client_addr inet DEFAULT NULL)
  RETURNS void
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'record_action';
COMMENT ON FUNCTION warden.record_action(int, name, name, text, text, float8, text, bool, inet) IS
  'Records an action of wardend in warden.terminations (source ''daemon''; action goes to the policy column).';

-- Privileges: policies belong to the extension owner and whom it grants;
-- terminating is for superusers and pg_signal_backend members.
REVOKE ALL ON warden.idle_policies FROM PUBLIC;
GRANT SELECT ON warden.idle_policies TO pg_monitor;
REVOKE ALL ON FUNCTION warden.add_idle_policy(text, interval, text, text, text, text, int, text, bool),
  warden.drop_idle_policy(text), warden.terminations(),
  warden.terminate_idle(interval, text, text, text, text, int, bool),
  warden.record_action(int, name, name, text, text, float8, text, bool, inet),
  warden.config_changed(), warden.idle_policies_check() FROM PUBLIC;
-- warden.validate_idle_policy() stays executable by everyone: it only
-- validates arguments (no effect, reads nothing), and add_idle_policy() calls
-- it before the row trigger says who may write policies.
REVOKE ALL ON warden.terminations FROM PUBLIC;
GRANT SELECT ON warden.terminations TO pg_monitor;
-- A view calls its function with the reader's privileges: pg_monitor needs both.
GRANT EXECUTE ON FUNCTION warden.terminations() TO pg_monitor;
GRANT EXECUTE ON FUNCTION warden.terminate_idle(interval, text, text, text, text, int, bool),
  warden.record_action(int, name, name, text, text, float8, text, bool, inet) TO pg_signal_backend;
-- Admission at login: budgets (a table, replicated, dumped) and admission
-- overrides (this server's shared memory only).

CREATE TABLE warden.budgets (
  name            text PRIMARY KEY,
  max_connections int,
  application     text,
  role            text,
  database        text,
  reserved        int NOT NULL DEFAULT 0,
  created_by      name NOT NULL DEFAULT current_user,
  created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE warden.budgets IS
  'Connection budgets enforced at login on every server (application is a LIKE pattern; NULL matches anything).';
SELECT pg_catalog.pg_extension_config_dump('warden.budgets', '');

-- One validation for set_budget() and for plain INSERT/UPDATE of the table.
CREATE FUNCTION warden.budgets_validate() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  usable int := current_setting('max_connections')::int
                - current_setting('superuser_reserved_connections')::int;
BEGIN
  IF NEW.name IS NULL OR btrim(NEW.name) = '' THEN
    RAISE EXCEPTION 'budget name must not be empty' USING ERRCODE = '22023';
  END IF;
  IF octet_length(NEW.name) > 63 THEN
    RAISE EXCEPTION 'budget name is too long' USING ERRCODE = '22023',
      DETAIL = 'At most 63 bytes are allowed.';
  END IF;
  IF NEW.max_connections IS NOT NULL AND NEW.max_connections < 0 THEN
    RAISE EXCEPTION 'max_connections must not be negative' USING ERRCODE = '22023';
  END IF;
  IF NEW.reserved IS NULL OR NEW.reserved < 0 THEN
    RAISE EXCEPTION 'reserved must not be negative' USING ERRCODE = '22023';
  END IF;
  IF NEW.reserved >= usable THEN
    RAISE EXCEPTION 'reserved must be smaller than the server''s usable connections'
      USING ERRCODE = '22023',
      DETAIL = format('reserved is %s, max_connections - superuser_reserved_connections is %s.',
                      NEW.reserved, usable);
  END IF;
  IF NEW.max_connections IS NULL AND NEW.reserved = 0 THEN
    RAISE EXCEPTION 'a budget needs max_connections or reserved' USING ERRCODE = '22023';
  END IF;
  IF NEW.max_connections IS NOT NULL AND NEW.reserved > NEW.max_connections THEN
    RAISE EXCEPTION 'reserved must not exceed max_connections' USING ERRCODE = '22023';
  END IF;
  IF octet_length(NEW.application) > 63 THEN
    RAISE EXCEPTION 'application pattern is too long' USING ERRCODE = '22023',
      DETAIL = 'At most 63 bytes are allowed.';
  END IF;
  -- application_name holds printable ASCII only (PostgreSQL turns any other
  -- byte into '?'): a pattern with other characters would never match.
  IF NEW.application ~ '[^ -~]' THEN
    RAISE EXCEPTION 'application pattern must be printable ASCII' USING ERRCODE = '22023',
      DETAIL = 'PostgreSQL replaces any other character of application_name with ''?''.';
  END IF;
  IF octet_length(NEW.role) > 63 THEN
    RAISE EXCEPTION 'role is too long' USING ERRCODE = '22023';
  END IF;
  IF octet_length(NEW.database) > 63 THEN
    RAISE EXCEPTION 'database is too long' USING ERRCODE = '22023';
  END IF;
  IF TG_OP = 'INSERT' AND (SELECT count(*) FROM warden.budgets) >= 128 THEN
    RAISE EXCEPTION 'too many budgets' USING ERRCODE = '54000',
      DETAIL = 'At most 128 budgets can be enforced.';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER budgets_validate BEFORE INSERT OR UPDATE ON warden.budgets
  FOR EACH ROW EXECUTE FUNCTION warden.budgets_validate();
-- The loader reloads the table into shared memory at commit (relcache
-- invalidation, replayed on standbys too).
CREATE TRIGGER budgets_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON warden.budgets
  FOR EACH STATEMENT EXECUTE FUNCTION warden.config_changed();

CREATE FUNCTION warden.set_budget(
    name text, max_connections int DEFAULT NULL, application text DEFAULT NULL,
    role text DEFAULT NULL, database text DEFAULT NULL, reserved int DEFAULT 0)
  RETURNS warden.budgets
LANGUAGE plpgsql AS $$
DECLARE
  result warden.budgets;
BEGIN
  INSERT INTO warden.budgets AS b (name, max_connections, application, role, database, reserved)
  VALUES (set_budget.name, set_budget.max_connections, set_budget.application,
          set_budget.role, set_budget.database, coalesce(set_budget.reserved, 0))
  ON CONFLICT ON CONSTRAINT budgets_pkey DO UPDATE
    SET max_connections = EXCLUDED.max_connections, application = EXCLUDED.application,
        role = EXCLUDED.role, database = EXCLUDED.database, reserved = EXCLUDED.reserved,
        created_by = current_user, created_at = now()
  RETURNING b.* INTO result;
  RETURN result;
END $$;
COMMENT ON FUNCTION warden.set_budget(text, int, text, text, text, int) IS
  'Creates or replaces a connection budget, enforced at login on every server within one sample interval of commit.';

CREATE FUNCTION warden.drop_budget(name text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
  IF name IS NULL THEN
    RAISE EXCEPTION 'budget name must not be NULL' USING ERRCODE = '22023';
  END IF;
  DELETE FROM warden.budgets b WHERE b.name = drop_budget.name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'budget "%" does not exist', name USING ERRCODE = '42704';
  END IF;
  RETURN true;
END $$;
COMMENT ON FUNCTION warden.drop_budget(text) IS 'Drops a connection budget.';

CREATE FUNCTION warden.budget_usage(
    OUT name text, OUT max_connections int, OUT application text, OUT role text,
    OUT database text, OUT reserved int, OUT connections int)
  RETURNS SETOF record
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'budget_usage';
COMMENT ON FUNCTION warden.budget_usage() IS
  'The budgets in force on this server (as loaded into shared memory) and the connections each counts.';
CREATE VIEW warden.budget_usage AS SELECT * FROM warden.budget_usage();
COMMENT ON VIEW warden.budget_usage IS
  'Budgets in force on this server with the connections each counts now.';

-- Admission overrides: this server only, shared memory only.
CREATE FUNCTION warden.close_admission(
    role text, application text DEFAULT NULL, max_connections int DEFAULT NULL,
    reason text DEFAULT NULL, expires interval DEFAULT NULL,
    OUT role name, OUT application text, OUT max_connections int, OUT reason text,
    OUT since timestamptz, OUT expires timestamptz, OUT connections int)
  RETURNS record
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'close_admission';
COMMENT ON FUNCTION warden.close_admission(text, text, int, text, interval) IS
  'Caps logins of a role and/or application pattern on this server (NULL max_connections = what it holds now), until open_admission() or expiry; not replicated, gone at restart.';

CREATE FUNCTION warden.open_admission(role text, application text DEFAULT NULL)
  RETURNS boolean
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'open_admission';
COMMENT ON FUNCTION warden.open_admission(text, text) IS
  'Lifts the admission override of a role/application on this server; false if there was none.';

CREATE FUNCTION warden.admission_overrides(
    OUT role name, OUT application text, OUT max_connections int, OUT reason text,
    OUT since timestamptz, OUT expires timestamptz, OUT connections int)
  RETURNS SETOF record
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'admission_overrides';
COMMENT ON FUNCTION warden.admission_overrides() IS 'Admission overrides in force on this server.';
CREATE VIEW warden.admission_overrides AS SELECT * FROM warden.admission_overrides();
COMMENT ON VIEW warden.admission_overrides IS
  'Admission overrides in force on this server (expired ones are not shown).';

-- Per role and per database: sums over app_usage with the limits that apply.
-- budget = the tightest budget that covers all of the role's (database's)
-- connections: role (database) set, the other fields NULL, or all NULL.
-- usage_percent is of the tightest of connection_limit and budget, or of the
-- server's usable connections when neither is set.
CREATE VIEW warden.role_usage AS
WITH u AS (
  SELECT role, sum(connections)::int AS connections, sum(active)::int AS active,
         sum(idle)::int AS idle, sum(idle_in_transaction)::int AS idle_in_transaction
    FROM warden.app_usage GROUP BY role),
l AS (
  SELECT u.*, nullif(r.rolconnlimit, -1) AS connection_limit,
         (SELECT min(b.max_connections) FROM warden.budgets b
           WHERE (b.role = u.role::text OR b.role IS NULL)
             AND b.application IS NULL AND b.database IS NULL) AS budget
    FROM u LEFT JOIN pg_catalog.pg_roles r ON r.rolname = u.role)
SELECT role, connections, active, idle, idle_in_transaction, connection_limit, budget,
       (100.0 * connections / greatest(1, coalesce(least(connection_limit, budget),
          (SELECT max_connections - reserved FROM warden.server_usage))))::float8 AS usage_percent
  FROM l;
COMMENT ON VIEW warden.role_usage IS
  'Connection usage per role, with its CONNECTION LIMIT and tightest pg_warden budget.';

CREATE VIEW warden.database_usage AS
WITH u AS (
  SELECT database, sum(connections)::int AS connections, sum(active)::int AS active,
         sum(idle)::int AS idle, sum(idle_in_transaction)::int AS idle_in_transaction
    FROM warden.app_usage GROUP BY database),
l AS (
  SELECT u.*, nullif(d.datconnlimit, -1) AS connection_limit,
         (SELECT min(b.max_connections) FROM warden.budgets b
           WHERE (b.database = u.database::text OR b.database IS NULL)
             AND b.application IS NULL AND b.role IS NULL) AS budget
    FROM u LEFT JOIN pg_catalog.pg_database d ON d.datname = u.database)
SELECT database, connections, active, idle, idle_in_transaction, connection_limit, budget,
       (100.0 * connections / greatest(1, coalesce(least(connection_limit, budget),
          (SELECT max_connections - reserved FROM warden.server_usage))))::float8 AS usage_percent
  FROM l;
COMMENT ON VIEW warden.database_usage IS
  'Connection usage per database, with its CONNECTION LIMIT and tightest pg_warden budget.';

-- Privileges: the owner (superuser) manages budgets and overrides and grants
-- them to whom it chooses; monitoring roles read.
REVOKE ALL ON warden.budgets FROM PUBLIC;
REVOKE ALL ON FUNCTION warden.set_budget(text, int, text, text, text, int),
  warden.drop_budget(text), warden.budgets_validate(), warden.budget_usage(),
  warden.close_admission(text, text, int, text, interval), warden.open_admission(text, text),
  warden.admission_overrides() FROM PUBLIC;
REVOKE ALL ON warden.role_usage, warden.database_usage, warden.budget_usage,
  warden.admission_overrides FROM PUBLIC;
GRANT SELECT ON warden.budgets, warden.role_usage, warden.database_usage, warden.budget_usage,
  warden.admission_overrides TO pg_monitor;
GRANT EXECUTE ON FUNCTION warden.budget_usage(), warden.admission_overrides() TO pg_monitor;
-- Usage history and pool right-sizing advice ------------------------------
-- Kept in this server's shared memory (a standby has its own), saved to
-- pg_stat_tmp/pg_warden_history.bin at shutdown and every
-- warden.history_save_interval, and loaded at start.

CREATE FUNCTION warden.usage_history(
    OUT database name, OUT role name, OUT application_name text,
    OUT granularity text, OUT bucket_start timestamptz, OUT samples int,
    OUT active_peak int, OUT active_mean float8,
    OUT connections_peak int, OUT connections_mean float8,
    OUT idle_in_transaction_peak int, OUT idle_in_transaction_mean float8)
  RETURNS SETOF record
  LANGUAGE C STRICT VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'usage_history';
COMMENT ON FUNCTION warden.usage_history() IS
  'Usage history per key and minute (last 24 h) or hour (last 7 days); see the view warden.usage_history.';

CREATE VIEW warden.usage_history AS SELECT * FROM warden.usage_history();
COMMENT ON VIEW warden.usage_history IS
  'Per (database, role, application_name) and minute (last 24 h) or hour (last 7 days): samples, peak and mean of active, total and idle-in-transaction connections.';

CREATE FUNCTION warden.pool_advice(
    OUT database name, OUT role name, OUT application_name text,
    OUT held_now int, OUT peak_connections int,
    OUT active_p50 int, OUT active_p95 int, OUT active_p99 int, OUT active_max int,
    OUT recommended_pool_size int, OUT reclaimable int,
    OUT observed_since timestamptz, OUT samples bigint)
  RETURNS SETOF record
  LANGUAGE C STRICT VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'pool_advice';
COMMENT ON FUNCTION warden.pool_advice() IS
  'Pool right-sizing advice per key from the usage history; see the view warden.pool_advice.';

CREATE VIEW warden.pool_advice AS SELECT * FROM warden.pool_advice();
COMMENT ON VIEW warden.pool_advice IS
  'Per (database, role, application_name): connections held now against the percentiles of connections in use over the last 7-8 days, recommended_pool_size = least(greatest(ceil(1.25 * active_p99) + 1, 1), peak_connections) and reclaimable = held_now - recommended_pool_size.';

-- The server-level line: what all pools hold against max_connections, and
-- what would be freed if every pool followed the advice.
CREATE VIEW warden.pool_advice_summary AS
SELECT count(a.*)::int AS pools,
       s.connections,
       coalesce(sum(a.held_now), 0)::int AS held,
       coalesce(sum(a.recommended_pool_size), 0)::int AS recommended,
       coalesce(sum(a.reclaimable), 0)::int AS reclaimable,
       s.max_connections,
       s.reserved,
       s.usage_percent,
       (100.0 * greatest(s.connections - coalesce(sum(a.reclaimable), 0), 0) /
          greatest(1, s.max_connections - s.reserved))::float8 AS usage_percent_after_advice
  FROM warden.server_usage s
  LEFT JOIN warden.pool_advice a ON true
 GROUP BY s.connections, s.max_connections, s.reserved, s.usage_percent;
COMMENT ON VIEW warden.pool_advice_summary IS
  'One row: connections held by all pools against max_connections, the sum of recommended pool sizes, and the connections freed if every pool followed warden.pool_advice.';

CREATE FUNCTION warden.history_stats(
    OUT history_keys int, OUT used_keys int, OUT loaded_keys int,
    OUT shared_memory_bytes bigint, OUT records bigint,
    OUT last_record_ms float8, OUT mean_record_ms float8,
    OUT saved_at timestamptz, OUT last_save_ms float8)
  RETURNS record
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'history_stats';
COMMENT ON FUNCTION warden.history_stats() IS
  'Usage history: slots (warden.history_keys) and how many are used or were loaded from the file at start, its shared memory, the worker''s cost of recording a sample, and its last periodic save to disk.';

REVOKE ALL ON FUNCTION warden.usage_history(), warden.pool_advice(),
  warden.history_stats() FROM PUBLIC;
REVOKE ALL ON warden.usage_history, warden.pool_advice, warden.pool_advice_summary FROM PUBLIC;
GRANT SELECT ON warden.usage_history, warden.pool_advice, warden.pool_advice_summary TO pg_monitor;
-- A view checks EXECUTE on the functions it calls as the querying user, not
-- as the view's owner: the readers of the views need both.
GRANT EXECUTE ON FUNCTION warden.usage_history(), warden.pool_advice(),
  warden.history_stats() TO pg_monitor;
