-- Usage history and pool advice: shape of the views, privileges, and the
-- rules every advice row follows.
CREATE EXTENSION pg_warden;

-- Columns and types.
SELECT attname, format_type(atttypid, atttypmod) AS type
  FROM pg_attribute WHERE attrelid = 'warden.usage_history'::regclass AND attnum > 0
 ORDER BY attnum;
SELECT attname, format_type(atttypid, atttypmod) AS type
  FROM pg_attribute WHERE attrelid = 'warden.pool_advice'::regclass AND attnum > 0
 ORDER BY attnum;
SELECT attname, format_type(atttypid, atttypmod) AS type
  FROM pg_attribute WHERE attrelid = 'warden.pool_advice_summary'::regclass AND attnum > 0
 ORDER BY attnum;

-- Every view and function is documented.
SELECT c.relname, obj_description(c.oid, 'pg_class') IS NOT NULL AS commented
  FROM pg_class c
 WHERE c.relnamespace = 'warden'::regnamespace
   AND c.relname IN ('usage_history', 'pool_advice', 'pool_advice_summary')
 ORDER BY 1;
SELECT p.proname, obj_description(p.oid, 'pg_proc') IS NOT NULL AS commented
  FROM pg_proc p
 WHERE p.pronamespace = 'warden'::regnamespace
   AND p.proname IN ('usage_history', 'pool_advice', 'history_stats')
 ORDER BY 1;

-- Defaults: 256 history slots of about 39 kB each.
SELECT history_keys, shared_memory_bytes BETWEEN 256 * 39000 AND 256 * 40000 AS sized
  FROM warden.history_stats();

-- This session's own key gets history within a few samples.
DO $$
BEGIN
  FOR i IN 1..200 LOOP
    PERFORM 1 FROM warden.pool_advice
     WHERE application_name = current_setting('application_name');
    EXIT WHEN FOUND;
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;
SELECT granularity, bool_and(samples > 0) AS sampled,
       bool_and(connections_peak >= 1) AS held,
       bool_and(active_peak <= connections_peak) AS active_within_held,
       bool_and(connections_mean <= connections_peak) AS mean_within_peak,
       bool_and(bucket_start = date_trunc(granularity, bucket_start)) AS aligned
  FROM warden.usage_history
 WHERE application_name = current_setting('application_name')
 GROUP BY granularity ORDER BY granularity;
SELECT held_now >= 1 AS held, samples > 0 AS sampled, observed_since <= now() AS observed
  FROM warden.pool_advice WHERE application_name = current_setting('application_name');

-- The rules of the recommendation hold for every key.
SELECT count(*) AS violations
  FROM warden.pool_advice
 WHERE recommended_pool_size < 1
    OR (peak_connections > 0 AND recommended_pool_size > peak_connections)
    OR reclaimable <> greatest(held_now - recommended_pool_size, 0)
    OR NOT (active_p50 <= active_p95 AND active_p95 <= active_p99 AND active_p99 <= active_max);

-- One server-level row.
SELECT count(*) AS rows, bool_and(max_connections = 50) AS max_connections,
       bool_and(held >= 1 AND recommended >= 1 AND reclaimable >= 0) AS sums
  FROM warden.pool_advice_summary;

-- Privileges: pg_monitor members read the views; nobody else does.
CREATE ROLE warden_history_plain;
CREATE ROLE warden_history_monitor IN ROLE pg_monitor;
SET ROLE warden_history_plain;
SELECT count(*) FROM warden.usage_history;
SELECT count(*) FROM warden.pool_advice;
SELECT count(*) FROM warden.pool_advice_summary;
SELECT count(*) FROM warden.usage_history();
SELECT count(*) FROM warden.pool_advice();
SELECT history_keys FROM warden.history_stats();
RESET ROLE;
SET ROLE warden_history_monitor;
SELECT count(*) > 0 AS readable FROM warden.usage_history;
SELECT count(*) > 0 AS readable FROM warden.pool_advice;
SELECT count(*) AS rows FROM warden.pool_advice_summary;
SELECT history_keys FROM warden.history_stats();
SELECT count(*) > 0 AS callable FROM warden.pool_advice();
RESET ROLE;
DROP ROLE warden_history_plain;
DROP ROLE warden_history_monitor;
DROP EXTENSION pg_warden;
