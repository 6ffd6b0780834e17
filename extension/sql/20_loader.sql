-- The loader ------------------------------------------------------------------
-- The configuration tables (idle_policies, budgets) are copied into shared
-- memory by the loader worker; each table's statement trigger calls
-- warden.config_changed(), which makes the loader reload it at commit.

CREATE FUNCTION warden.config_changed() RETURNS trigger
  LANGUAGE C AS 'MODULE_PATHNAME', 'config_changed';
COMMENT ON FUNCTION warden.config_changed() IS
  'Statement trigger of pg_warden''s configuration tables: makes the loader worker reload them at commit.';

REVOKE ALL ON FUNCTION warden.config_changed() FROM PUBLIC;

CREATE FUNCTION warden.config_status(
    OUT ready bool, OUT loader_pid int, OUT loaded_at timestamptz,
    OUT generation bigint, OUT applied_generation bigint, OUT rewind_roles text[])
  RETURNS record
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'config_status';
COMMENT ON FUNCTION warden.config_status() IS
  'Whether configuration changes reached shared memory: a change committed before loaded_at is loaded, and the worker applies it once applied_generation = generation; rewind_roles: the roles exempt as pg_rewind''s (warden.exempt_rewind_roles).';

REVOKE ALL ON FUNCTION warden.config_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION warden.config_status() TO pg_monitor;
