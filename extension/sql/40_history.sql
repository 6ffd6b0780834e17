-- Usage history and pool right-sizing advice ------------------------------
-- Kept in this server's shared memory (a standby has its own), saved to
-- pg_stat_tmp/pg_warden_history.bin at shutdown and every
-- warden.history_save_interval, and loaded at start.

CREATE FUNCTION warden.usage_history(
    OUT database name, OUT role name, OUT application_name text,
    OUT granularity text, OUT bucket_start timestamptz, OUT samples int,
    OUT active_peak int, OUT active_mean float8,
    OUT connections_peak int, OUT connections_mean float8,
    OUT idle_in_transaction_peak int, OUT idle_in_transaction_mean float8)
  RETURNS SETOF record
  LANGUAGE C STRICT VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'usage_history';
COMMENT ON FUNCTION warden.usage_history() IS
  'Usage history per key and minute (last 24 h) or hour (last 7 days); see the view warden.usage_history.';

CREATE VIEW warden.usage_history AS SELECT * FROM warden.usage_history();
COMMENT ON VIEW warden.usage_history IS
  'Per (database, role, application_name) and minute (last 24 h) or hour (last 7 days): samples, peak and mean of active, total and idle-in-transaction connections.';

CREATE FUNCTION warden.pool_advice(
    OUT database name, OUT role name, OUT application_name text,
    OUT held_now int, OUT peak_connections int,
    OUT active_p50 int, OUT active_p95 int, OUT active_p99 int, OUT active_max int,
    OUT recommended_pool_size int, OUT reclaimable int,
    OUT observed_since timestamptz, OUT samples bigint)
  RETURNS SETOF record
  LANGUAGE C STRICT VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'pool_advice';
COMMENT ON FUNCTION warden.pool_advice() IS
  'Pool right-sizing advice per key from the usage history; see the view warden.pool_advice.';

CREATE VIEW warden.pool_advice AS SELECT * FROM warden.pool_advice();
COMMENT ON VIEW warden.pool_advice IS
  'Per (database, role, application_name): connections held now against the percentiles of connections in use over the last 7-8 days, recommended_pool_size = least(greatest(ceil(1.25 * active_p99) + 1, 1), peak_connections) and reclaimable = held_now - recommended_pool_size.';

-- The server-level line: what all pools hold against max_connections, and
-- what would be freed if every pool followed the advice.
CREATE VIEW warden.pool_advice_summary AS
SELECT count(a.*)::int AS pools,
       s.connections,
       coalesce(sum(a.held_now), 0)::int AS held,
       coalesce(sum(a.recommended_pool_size), 0)::int AS recommended,
       coalesce(sum(a.reclaimable), 0)::int AS reclaimable,
       s.max_connections,
       s.reserved,
       s.usage_percent,
       (100.0 * greatest(s.connections - coalesce(sum(a.reclaimable), 0), 0) /
          greatest(1, s.max_connections - s.reserved))::float8 AS usage_percent_after_advice
  FROM warden.server_usage s
  LEFT JOIN warden.pool_advice a ON true
 GROUP BY s.connections, s.max_connections, s.reserved, s.usage_percent;
COMMENT ON VIEW warden.pool_advice_summary IS
  'One row: connections held by all pools against max_connections, the sum of recommended pool sizes, and the connections freed if every pool followed warden.pool_advice.';

CREATE FUNCTION warden.history_stats(
    OUT history_keys int, OUT used_keys int, OUT loaded_keys int,
    OUT shared_memory_bytes bigint, OUT records bigint,
    OUT last_record_ms float8, OUT mean_record_ms float8,
    OUT saved_at timestamptz, OUT last_save_ms float8)
  RETURNS record
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'history_stats';
COMMENT ON FUNCTION warden.history_stats() IS
  'Usage history: slots (warden.history_keys) and how many are used or were loaded from the file at start, its shared memory, the worker''s cost of recording a sample, and its last periodic save to disk.';

REVOKE ALL ON FUNCTION warden.usage_history(), warden.pool_advice(),
  warden.history_stats() FROM PUBLIC;
REVOKE ALL ON warden.usage_history, warden.pool_advice, warden.pool_advice_summary FROM PUBLIC;
GRANT SELECT ON warden.usage_history, warden.pool_advice, warden.pool_advice_summary TO pg_monitor;
-- A view checks EXECUTE on the functions it calls as the querying user, not
-- as the view's owner: the readers of the views need both.
GRANT EXECUTE ON FUNCTION warden.usage_history(), warden.pool_advice(),
  warden.history_stats() TO pg_monitor;

CREATE FUNCTION warden.reset_history() RETURNS void
  LANGUAGE C STRICT VOLATILE SET search_path = pg_catalog, pg_temp
  AS 'MODULE_PATHNAME', 'reset_history';
COMMENT ON FUNCTION warden.reset_history() IS
  'Forgets the usage history of every key on this server (shared memory; the file follows at the next save).';
REVOKE ALL ON FUNCTION warden.reset_history() FROM PUBLIC;
