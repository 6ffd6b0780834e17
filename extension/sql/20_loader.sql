-- The loader ------------------------------------------------------------------
-- The configuration tables (idle_policies, budgets) are copied into shared
-- memory by the loader worker; each table's statement trigger calls
-- warden.config_changed(), which makes the loader reload it at commit.

CREATE FUNCTION warden.config_changed() RETURNS trigger
  LANGUAGE C AS 'MODULE_PATHNAME', 'config_changed';
COMMENT ON FUNCTION warden.config_changed() IS
  'Statement trigger of pg_warden''s configuration tables: makes the loader worker reload them at commit.';

REVOKE ALL ON FUNCTION warden.config_changed() FROM PUBLIC;
