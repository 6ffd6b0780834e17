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
-- Refuse to install where the loader never looks: policies and budgets made
-- here would be accepted and never enforced.
DO $$
BEGIN
  IF pg_catalog.current_database() OPERATOR(pg_catalog.<>)
     pg_catalog.current_setting('warden.database') THEN
    RAISE EXCEPTION 'pg_warden must be created in database "%" (warden.database), not in "%"',
        pg_catalog.current_setting('warden.database'), pg_catalog.current_database()
      USING ERRCODE = '55000',
            DETAIL = 'pg_warden''s worker reads policies and budgets from warden.database only.',
            HINT = pg_catalog.format('Connect to database %I and run CREATE EXTENSION there, or set '
                                     'warden.database = %L in postgresql.conf and restart the server.',
                                     pg_catalog.current_setting('warden.database'),
                                     pg_catalog.current_database());
  END IF;
END $$;
COMMENT ON FUNCTION warden.assert_preloaded() IS
  'Raises an error unless pg_warden was loaded through shared_preload_libraries.';
REVOKE ALL ON FUNCTION warden.assert_preloaded() FROM PUBLIC;

GRANT USAGE ON SCHEMA warden TO PUBLIC;
COMMENT ON SCHEMA warden IS
  'pg_warden: connection usage, admission budgets and idle-session policies';

