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

CREATE OR REPLACE FUNCTION warden.budgets_validate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM warden.validate_budget(NEW.name, NEW.max_connections, NEW.application, NEW.role,
                                 NEW.database, NEW.reserved);
  IF TG_OP = 'INSERT' AND (SELECT count(*) FROM warden.budgets) >= 128 THEN
    RAISE EXCEPTION 'too many budgets' USING ERRCODE = '54000',
      DETAIL = 'At most 128 budgets can be enforced.';
  END IF;
  RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION warden.drop_budget(name text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
  IF name IS NULL THEN
    RAISE EXCEPTION 'invalid value for "name": must not be NULL' USING ERRCODE = '22023';
  END IF;
  DELETE FROM warden.budgets b WHERE b.name = drop_budget.name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'budget "%" does not exist', name USING ERRCODE = '42704';
  END IF;
  RETURN true;
END $$;

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
