-- pg_warden upgrade from 1.0 to 1.1 (ALTER EXTENSION pg_warden UPDATE).
-- Must leave exactly the objects of a fresh 1.1 install, keeping the rows of
-- the configuration tables (tests/e2e/test_upgrade.py checks both).
\echo Use "ALTER EXTENSION pg_warden UPDATE TO '1.1'" to load this file. \quit

COMMENT ON SCHEMA warden IS
  'pg_warden: connection usage, admission budgets and idle-session policies';
