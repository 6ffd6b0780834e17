
-- Idle-termination policies ---------------------------------------------------
-- Policies live in this table (an extension configuration table: pg_dump
-- keeps its rows). The loader copies the enabled rows into shared memory at
-- commit (statement trigger -> relcache invalidation); the sampler enforces
-- them (extension/src/enforcer.cpp).

CREATE FUNCTION warden.validate_idle_policy(
    name text, idle_timeout interval, application text, role text, database text,
    state text, keep_min int, schedule text, dry_run bool)
  RETURNS void
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'validate_idle_policy';
COMMENT ON FUNCTION warden.validate_idle_policy(text, interval, text, text, text, text, int, text, bool) IS
  'Raises an error (SQLSTATE 22023, naming the argument) unless the arguments make a valid idle policy.';

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
COMMENT ON FUNCTION warden.add_idle_policy(text, interval, text, text, text, text, int, text, bool) IS
  'Adds an idle-termination policy; it applies at commit. Validates every argument first.';

CREATE FUNCTION warden.drop_idle_policy(name text) RETURNS void
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
COMMENT ON FUNCTION warden.drop_idle_policy(text) IS 'Removes an idle-termination policy; it stops at commit.';

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

-- Privileges: policies belong to the extension owner and whom it grants;
-- terminating is for superusers and pg_signal_backend members.
REVOKE ALL ON warden.idle_policies FROM PUBLIC;
GRANT SELECT ON warden.idle_policies TO pg_monitor;
REVOKE ALL ON FUNCTION warden.add_idle_policy(text, interval, text, text, text, text, int, text, bool),
  warden.drop_idle_policy(text),
  warden.terminate_idle(interval, text, text, text, text, int, bool),
  warden.idle_policies_check() FROM PUBLIC;
-- warden.validate_idle_policy() stays executable by everyone: it only
-- validates arguments (no effect, reads nothing), and add_idle_policy() calls
-- it before the row trigger says who may write policies.
GRANT EXECUTE ON FUNCTION warden.terminate_idle(interval, text, text, text, text, int, bool)
  TO pg_signal_backend;
