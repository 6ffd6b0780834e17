-- Usage tracking: the SQL surface of warden.app_usage, role_usage,
-- database_usage, server_usage, backends, reset_stats and the settings.
CREATE EXTENSION pg_warden;

-- settings exist, with their defaults (sample_interval set by regress.conf)
SELECT name, setting, unit, context FROM pg_settings WHERE name LIKE 'warden.%' ORDER BY name;
-- the prefix is reserved
SET warden.no_such_setting = 1;

-- column names and types, as the design names them
SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod)
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relnamespace = 'warden'::regnamespace AND c.relkind IN ('v', 'f') AND a.attnum > 0
   AND c.relname IN ('app_usage', 'role_usage', 'database_usage', 'server_usage', 'backends')
 ORDER BY c.relname, a.attnum;

-- wait (bounded) until the worker has published a sample that saw us active
DO $$
BEGIN
  FOR i IN 1..200 LOOP
    EXIT WHEN EXISTS (SELECT 1 FROM warden.backends
                       WHERE pid = pg_backend_pid() AND state = 'active');
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;

SELECT connections >= 1 AS counted, max_connections, reserved, status, in_recovery,
       worker_pid IS NOT NULL AS worker_running, sampled_at IS NOT NULL AS sampled,
       usage_percent = 100.0 * connections / (max_connections - reserved) AS usage_formula
  FROM warden.server_usage;

-- this session is counted under its own key
SELECT database = current_database() AS same_db, role = current_user AS same_role,
       connections >= 1 AS connected, opened >= 1 AS opened, peak_connections >= connections AS peak_ok,
       peak_at IS NOT NULL AS has_peak_at, refused, terminated
  FROM warden.app_usage
 WHERE application_name = current_setting('application_name');

SELECT database = current_database() AS same_db, role = current_user AS same_role,
       application_name = current_setting('application_name') AS same_app,
       client_addr, backend_start IS NOT NULL AS has_start
  FROM warden.backends WHERE pid = pg_backend_pid();

-- the per-role and per-database views agree with app_usage
SELECT (SELECT sum(connections) FROM warden.role_usage) =
       (SELECT sum(connections) FROM warden.app_usage) AS roles_sum,
       (SELECT sum(connections) FROM warden.database_usage) =
       (SELECT sum(connections) FROM warden.app_usage) AS databases_sum,
       (SELECT connections FROM warden.server_usage) =
       (SELECT sum(connections) FROM warden.app_usage) AS server_sum;

-- connection_limit comes from the catalog, NULL when unlimited
SELECT connection_limit FROM warden.role_usage WHERE role = current_user;
ALTER ROLE CURRENT_USER CONNECTION LIMIT 40;
SELECT connection_limit, round(usage_percent::numeric, 2) = round(100.0 * connections / 40, 2) AS pct
  FROM warden.role_usage WHERE role = current_user;
ALTER ROLE CURRENT_USER CONNECTION LIMIT -1;

-- reset_stats: counters to zero, peaks to the current count
SELECT warden.reset_stats();
SELECT opened, refused, terminated, peak_connections = connections AS peak_reset
  FROM warden.app_usage WHERE application_name = current_setting('application_name');

-- privileges: nothing for a plain role, reading for pg_monitor members
CREATE ROLE regress_warden_plain;
CREATE ROLE regress_warden_monitor LOGIN IN ROLE pg_monitor;
SET ROLE regress_warden_plain;
SELECT count(*) FROM warden.app_usage;
SELECT count(*) FROM warden.role_usage;
SELECT count(*) FROM warden.database_usage;
SELECT count(*) FROM warden.server_usage;
SELECT count(*) FROM warden.backends;
SELECT count(*) FROM warden.app_usage();
SELECT warden.reset_stats();
RESET ROLE;
-- a monitoring login
\c - regress_warden_monitor
SELECT count(*) > 0 AS can_read FROM warden.app_usage;
SELECT count(*) > 0 AS can_read FROM warden.app_usage();
SELECT count(*) > 0 AS can_read FROM warden.role_usage;
SELECT count(*) > 0 AS can_read FROM warden.database_usage;
SELECT count(*) = 1 AS can_read FROM warden.server_usage;
SELECT count(*) > 0 AS can_read FROM warden.backends;
SELECT warden.reset_stats();
\c - postgres

-- the worker's cost is visible to monitoring
SELECT samples > 0 AS sampling, tracked_keys >= 2 AS keys, key_capacity FROM warden.worker_stats();

-- warden.app_usage is a foreign table over shared memory: the same rows as
-- the function, quals checked locally, rescans start over, and the wrapper
-- refuses a foreign table without app_usage's columns
SELECT (SELECT count(*) FROM warden.app_usage) = (SELECT count(*) FROM warden.app_usage()) AS same_rows;
EXPLAIN (COSTS OFF) SELECT * FROM warden.app_usage WHERE connections > 0;
SET enable_hashjoin = off;
SET enable_mergejoin = off;
SET enable_material = off;
SELECT count(*) = (SELECT count(*) FROM warden.app_usage) AS rescans
  FROM warden.app_usage a JOIN warden.app_usage b
       ON a.application_name = b.application_name AND a.role IS NOT DISTINCT FROM b.role
      AND a.database IS NOT DISTINCT FROM b.database;
RESET enable_hashjoin;
RESET enable_mergejoin;
RESET enable_material;
CREATE FOREIGN TABLE regress_not_usage (a int) SERVER pg_warden;
SELECT * FROM regress_not_usage;
DROP FOREIGN TABLE regress_not_usage;

DROP ROLE regress_warden_plain, regress_warden_monitor;
DROP EXTENSION pg_warden;
