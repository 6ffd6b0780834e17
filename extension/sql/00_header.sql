-- pg_warden install script of the newest version (default_version in
-- pg_warden.control). Built by the Makefile from extension/sql/*.sql in name
-- order: one file per subsystem (usage, idle policies, admission, history...).
-- Every change here needs the same change in the upgrade script from the
-- previous version, extension/versions/pg_warden--<previous>--<newest>.sql.
\echo Use "CREATE EXTENSION pg_warden" to load this file. \quit

-- Refuse to install into a server that did not preload the library.
CREATE FUNCTION warden.assert_preloaded() RETURNS void
  LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'assert_preloaded';
SELECT warden.assert_preloaded();
COMMENT ON FUNCTION warden.assert_preloaded() IS
  'Raises an error unless pg_warden was loaded through shared_preload_libraries.';
REVOKE ALL ON FUNCTION warden.assert_preloaded() FROM PUBLIC;

GRANT USAGE ON SCHEMA warden TO PUBLIC;
COMMENT ON SCHEMA warden IS
  'pg_warden: connection usage, admission budgets and idle-session policies';

