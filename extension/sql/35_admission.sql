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

-- One validation for set_budget() and for plain INSERT/UPDATE of the table,
-- in C like idle policies' (the same wording: invalid value for "<column>").
CREATE FUNCTION warden.validate_budget(
    name text, max_connections int, application text, role text, database text, reserved int)
  RETURNS void
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'validate_budget';
COMMENT ON FUNCTION warden.validate_budget(text, int, text, text, text, int) IS
  'Raises an error (SQLSTATE 22023, naming the argument) unless the arguments make a valid budget.';

-- The row trigger also checks what one row cannot show: the number of budgets
-- (an INSERT ... ON CONFLICT that replaces a budget adds none) and that the
-- reservations, together, leave connections to everyone else.
CREATE FUNCTION warden.budgets_validate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  usable int := pg_catalog.current_setting('max_connections')::int OPERATOR(pg_catalog.-)
                pg_catalog.current_setting('superuser_reserved_connections')::int;
  others_reserved bigint;
BEGIN
  PERFORM warden.validate_budget(NEW.name, NEW.max_connections, NEW.application, NEW.role,
                                 NEW.database, NEW.reserved);
  IF TG_OP OPERATOR(pg_catalog.=) 'INSERT'
     AND NOT EXISTS (SELECT FROM warden.budgets b WHERE b.name OPERATOR(pg_catalog.=) NEW.name)
     AND (SELECT pg_catalog.count(*) FROM warden.budgets) OPERATOR(pg_catalog.>=) 128 THEN
    RAISE EXCEPTION 'too many budgets' USING ERRCODE = '54000',
      DETAIL = 'At most 128 budgets can be enforced.';
  END IF;
  IF NEW.reserved OPERATOR(pg_catalog.>) 0 THEN
    SELECT coalesce(pg_catalog.sum(b.reserved), 0) INTO others_reserved
      FROM warden.budgets b
     WHERE b.name OPERATOR(pg_catalog.<>) NEW.name
       AND (TG_OP OPERATOR(pg_catalog.=) 'INSERT' OR b.name OPERATOR(pg_catalog.<>) OLD.name);
    IF others_reserved OPERATOR(pg_catalog.+) NEW.reserved OPERATOR(pg_catalog.>=) usable THEN
      RAISE EXCEPTION 'invalid value for "reserved": the reservations together must be smaller than the server''s usable connections'
        USING ERRCODE = '22023',
              DETAIL = pg_catalog.format('Other budgets reserve %s, this one %s; max_connections - superuser_reserved_connections is %s.',
                                         others_reserved, NEW.reserved, usable),
              HINT = 'Lower a reservation, or raise max_connections.';
    END IF;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER budgets_validate BEFORE INSERT OR UPDATE ON warden.budgets
  FOR EACH ROW EXECUTE FUNCTION warden.budgets_validate();
-- The loader reloads the table into shared memory at commit (relcache
-- invalidation, replayed on standbys too; 20_loader.sql).
CREATE TRIGGER budgets_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON warden.budgets
  FOR EACH STATEMENT EXECUTE FUNCTION warden.config_changed();

CREATE FUNCTION warden.set_budget(
    name text, max_connections int DEFAULT NULL, application text DEFAULT NULL,
    role text DEFAULT NULL, database text DEFAULT NULL, reserved int DEFAULT 0)
  RETURNS warden.budgets
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  result warden.budgets;
  msg text;
  state text;
  detail text;
  hint text;
BEGIN
  -- Validated here first, and raised from this function: an error carries no
  -- CONTEXT of the INSERT below (the row trigger checks again, for plain DML).
  BEGIN
    PERFORM warden.validate_budget(set_budget.name, set_budget.max_connections,
                                   set_budget.application, set_budget.role, set_budget.database,
                                   set_budget.reserved);
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE,
                            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    IF detail OPERATOR(pg_catalog.<>) '' AND hint OPERATOR(pg_catalog.<>) '' THEN
      RAISE EXCEPTION USING MESSAGE = msg, ERRCODE = state, DETAIL = detail, HINT = hint;
    ELSIF detail OPERATOR(pg_catalog.<>) '' THEN
      RAISE EXCEPTION USING MESSAGE = msg, ERRCODE = state, DETAIL = detail;
    ELSIF hint OPERATOR(pg_catalog.<>) '' THEN
      RAISE EXCEPTION USING MESSAGE = msg, ERRCODE = state, HINT = hint;
    ELSE
      RAISE EXCEPTION USING MESSAGE = msg, ERRCODE = state;
    END IF;
  END;
  INSERT INTO warden.budgets AS b (name, max_connections, application, role, database, reserved)
  VALUES (set_budget.name, set_budget.max_connections, set_budget.application,
          set_budget.role, set_budget.database, set_budget.reserved)
  ON CONFLICT ON CONSTRAINT budgets_pkey DO UPDATE
    SET max_connections = EXCLUDED.max_connections, application = EXCLUDED.application,
        role = EXCLUDED.role, database = EXCLUDED.database, reserved = EXCLUDED.reserved,
        created_by = current_user, created_at = pg_catalog.now()
  RETURNING b.* INTO result;
  RETURN result;
END $$;
COMMENT ON FUNCTION warden.set_budget(text, int, text, text, text, int) IS
  'Creates or replaces a connection budget, enforced at login on every server within one sample interval of commit.';

CREATE FUNCTION warden.drop_budget(name text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF name IS NULL THEN
    RAISE EXCEPTION 'invalid value for "name": must not be NULL' USING ERRCODE = '22023';
  END IF;
  DELETE FROM warden.budgets b WHERE b.name OPERATOR(pg_catalog.=) drop_budget.name;
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
    role text DEFAULT NULL, application text DEFAULT NULL, max_connections int DEFAULT NULL,
    reason text DEFAULT NULL, expires interval DEFAULT NULL,
    OUT role name, OUT application text, OUT max_connections int, OUT reason text,
    OUT since timestamptz, OUT expires timestamptz, OUT connections int)
  RETURNS record
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'close_admission';
COMMENT ON FUNCTION warden.close_admission(text, text, int, text, interval) IS
  'Caps logins of a role and/or application pattern on this server (NULL max_connections = what it holds now), from commit until open_admission() or expiry; not replicated, gone at restart or DROP EXTENSION.';

CREATE FUNCTION warden.open_admission(role text DEFAULT NULL, application text DEFAULT NULL)
  RETURNS boolean
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'open_admission';
COMMENT ON FUNCTION warden.open_admission(text, text) IS
  'Lifts the admission override of a role/application on this server at commit; false if there was none.';

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
