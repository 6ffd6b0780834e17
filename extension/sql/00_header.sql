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

