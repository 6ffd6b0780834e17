-- pg_warden upgrade from 1.0 to 1.1 (ALTER EXTENSION pg_warden UPDATE).
-- Must leave exactly the objects of a fresh 1.1 install, keeping the rows of
-- the configuration tables (tests/e2e/test_upgrade.py checks both).
\echo Use "ALTER EXTENSION pg_warden UPDATE TO '1.1'" to load this file. \quit

COMMENT ON SCHEMA warden IS
  'pg_warden: connection usage, admission budgets and idle-session policies';

-- Budgets are validated in C, with the one argument wording of every
-- SQL function (validate_budget); the trigger calls it.
CREATE FUNCTION warden.validate_budget(
    name text, max_connections int, application text, role text, database text, reserved int)
  RETURNS void
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'validate_budget';
COMMENT ON FUNCTION warden.validate_budget(text, int, text, text, text, int) IS
  'Raises an error (SQLSTATE 22023, naming the argument) unless the arguments make a valid budget.';

-- Every PL/pgSQL function runs with search_path pinned (nobody's function or
-- operator on the caller's path stands in for pg_catalog's); budgets: the
-- count of 128 lets a replacement through, reservations together must leave
-- connections, set_budget validates before its INSERT; policies: the owner
-- must exist and writers need the privileges of pg_signal_backend.

CREATE OR REPLACE FUNCTION warden.idle_policies_check() RETURNS trigger
  LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  writer_is_super bool := (SELECT r.rolsuper FROM pg_catalog.pg_roles r
                            WHERE r.rolname OPERATOR(pg_catalog.=) current_user);
BEGIN
  -- USAGE: the privileges of pg_signal_backend (has_privs_of_role), what
  -- PostgreSQL checks to signal; membership without INHERIT is not enough.
  IF NOT writer_is_super AND NOT pg_catalog.pg_has_role(current_user, 'pg_signal_backend', 'USAGE') THEN
    RAISE EXCEPTION 'permission denied to write idle policies'
      USING ERRCODE = '42501',
            DETAIL = 'Only superusers and roles with the privileges of pg_signal_backend may define idle policies.';
  END IF;
  PERFORM warden.validate_idle_policy(NEW.name, NEW.idle_timeout, NEW.application, NEW.role,
                                      NEW.database, NEW.state, NEW.keep_min, NEW.schedule,
                                      NEW.dry_run);
  IF NEW.enabled IS NULL THEN
    RAISE EXCEPTION 'invalid value for "enabled": must not be NULL' USING ERRCODE = '22023';
  END IF;
  IF NOT writer_is_super THEN
    NEW.owner := current_user;
  ELSIF NEW.owner IS NULL THEN
    RAISE EXCEPTION 'invalid value for "owner": must not be NULL' USING ERRCODE = '22023';
  ELSIF NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) NEW.owner) THEN
    RAISE EXCEPTION 'role "%" does not exist', NEW.owner USING ERRCODE = '42704',
      DETAIL = 'An idle policy''s owner must be a role: its privileges decide what the policy may terminate.';
  END IF;
  RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION warden.add_idle_policy(
    name text, idle_timeout interval, application text DEFAULT NULL, role text DEFAULT NULL,
    database text DEFAULT NULL, state text DEFAULT 'idle', keep_min int DEFAULT 0,
    schedule text DEFAULT NULL, dry_run bool DEFAULT false)
  RETURNS void
  LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM warden.validate_idle_policy(name, idle_timeout, application, role, database, state,
                                      keep_min, schedule, dry_run);
  IF EXISTS (SELECT 1 FROM warden.idle_policies p
              WHERE p.name OPERATOR(pg_catalog.=) add_idle_policy.name) THEN
    RAISE EXCEPTION 'idle policy "%" already exists', name USING ERRCODE = '23505';
  END IF;
  IF (SELECT pg_catalog.count(*) FROM warden.idle_policies) OPERATOR(pg_catalog.>=) 64 THEN
    RAISE EXCEPTION 'too many idle policies' USING ERRCODE = '54000',
      DETAIL = 'pg_warden holds at most 64 idle policies.';
  END IF;
  INSERT INTO warden.idle_policies (name, idle_timeout, application, role, database, state,
                                    keep_min, schedule, dry_run)
  VALUES (name, idle_timeout, application, role, database, state, keep_min, schedule, dry_run);
END
$$;

CREATE OR REPLACE FUNCTION warden.drop_idle_policy(name text) RETURNS void
  LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF name IS NULL THEN
    RAISE EXCEPTION 'invalid value for "name": must not be NULL' USING ERRCODE = '22023';
  END IF;
  DELETE FROM warden.idle_policies p WHERE p.name OPERATOR(pg_catalog.=) drop_idle_policy.name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'idle policy "%" does not exist', name USING ERRCODE = '42704';
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION warden.budgets_validate() RETURNS trigger
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

CREATE OR REPLACE FUNCTION warden.set_budget(
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

CREATE OR REPLACE FUNCTION warden.drop_budget(name text) RETURNS boolean
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


-- Overrides may name an application alone (role defaults to NULL); they apply
-- at commit and are lifted at DROP EXTENSION.

CREATE OR REPLACE FUNCTION warden.close_admission(
    role text DEFAULT NULL, application text DEFAULT NULL, max_connections int DEFAULT NULL,
    reason text DEFAULT NULL, expires interval DEFAULT NULL,
    OUT role name, OUT application text, OUT max_connections int, OUT reason text,
    OUT since timestamptz, OUT expires timestamptz, OUT connections int)
  RETURNS record
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'close_admission';
COMMENT ON FUNCTION warden.close_admission(text, text, int, text, interval) IS
  'Caps logins of a role and/or application pattern on this server (NULL max_connections = what it holds now), from commit until open_admission() or expiry; not replicated, gone at restart or DROP EXTENSION.';

CREATE OR REPLACE FUNCTION warden.open_admission(role text DEFAULT NULL, application text DEFAULT NULL)
  RETURNS boolean
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'open_admission';
COMMENT ON FUNCTION warden.open_admission(text, text) IS
  'Lifts the admission override of a role/application on this server at commit; false if there was none.';


-- record_action: the extension owner and whom it grants (wardend's role), no
-- longer every pg_signal_backend member.
REVOKE EXECUTE ON FUNCTION warden.record_action(int, name, name, text, text, float8, text, bool, inet)
  FROM pg_signal_backend;
-- warden.reset_history(): empties the usage history.
CREATE FUNCTION warden.reset_history() RETURNS void
  LANGUAGE C STRICT VOLATILE SET search_path = pg_catalog, pg_temp
  AS 'MODULE_PATHNAME', 'reset_history';
COMMENT ON FUNCTION warden.reset_history() IS
  'Forgets the usage history of every key on this server (shared memory; the file follows at the next save).';
REVOKE ALL ON FUNCTION warden.reset_history() FROM PUBLIC;

-- app_usage: the age of the longest idle-in-transaction session per key.
ALTER TYPE warden.app_usage_row ADD ATTRIBUTE longest_idle_in_transaction_seconds float8;
ALTER FOREIGN TABLE warden.app_usage ADD COLUMN longest_idle_in_transaction_seconds float8;

-- warden.config_status(): whether a configuration change reached shared memory.
CREATE FUNCTION warden.config_status(
    OUT ready bool, OUT loader_pid int, OUT loaded_at timestamptz,
    OUT generation bigint, OUT applied_generation bigint, OUT rewind_roles text[])
  RETURNS record
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'config_status';
COMMENT ON FUNCTION warden.config_status() IS
  'Whether configuration changes reached shared memory: a change committed before loaded_at is loaded, and the worker applies it once applied_generation = generation; rewind_roles: the roles exempt as pg_rewind''s (warden.exempt_rewind_roles).';
REVOKE ALL ON FUNCTION warden.config_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION warden.config_status() TO pg_monitor;
