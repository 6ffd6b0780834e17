-- Idle-termination policies: the SQL API, validation, privileges.
CREATE EXTENSION IF NOT EXISTS pg_warden;
SET client_min_messages = warning;
\set SHOW_CONTEXT never
-- err(statement): 'ok', or the SQLSTATE and message of the error it raised.
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE q;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- A policy with every argument, and one with defaults.
SELECT warden.add_idle_policy(
  name => 'reports-night', idle_timeout => '10 min', application => 'reports%',
  role => NULL, database => NULL, state => 'idle', keep_min => 5,
  schedule => '* 0-5 * * *', dry_run => false);
SELECT warden.add_idle_policy('short', '30 s');
SELECT name, idle_timeout, application, role, database, state, keep_min, schedule, dry_run,
       enabled, owner = current_user AS owned_by_me, created_at <= now() AS created
  FROM warden.idle_policies ORDER BY name;

-- Every bad input: SQLSTATE 22023 naming the argument, nothing stored.
-- (the full report once, with its DETAIL and HINT)
SELECT warden.add_idle_policy('bad', '1 min', schedule => '* * * jan *');
SELECT warden.add_idle_policy('bad', '1 min', state => 'sleeping');
SELECT pg_temp.err($$SELECT warden.add_idle_policy(NULL, '1 min')$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('', '1 min')$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy(repeat('n', 64), '1 min')$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('bad', NULL)$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('bad', '0 s')$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('bad', '-5 min')$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('bad', '1 min', application => repeat('a', 256))$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('bad', '1 min', role => repeat('r', 64))$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('bad', '1 min', database => repeat('d', 64))$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('bad', '1 min', state => 'sleeping')$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('bad', '1 min', state => NULL)$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('bad', '1 min', keep_min => -1)$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('bad', '1 min', keep_min => NULL)$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('bad', '1 min', schedule => '* * *')$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('bad', '1 min', schedule => '61 * * * *')$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('bad', '1 min', schedule => '* 5-1 * * *')$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('bad', '1 min', schedule => '*/0 * * * *')$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('bad', '1 min', schedule => '* * * jan *')$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('bad', '1 min', dry_run => NULL)$$);
SELECT pg_temp.err($$SELECT warden.add_idle_policy('short', '1 min')$$);
SELECT count(*) AS still_two FROM warden.idle_policies;

-- At most 64 policies.
SELECT count(*) FROM (SELECT warden.add_idle_policy('bulk-' || i, '1 min')
                        FROM generate_series(1, 62) AS i) AS added;
SELECT pg_temp.err($$SELECT warden.add_idle_policy('one-too-many', '1 min')$$);
DELETE FROM warden.idle_policies WHERE name LIKE 'bulk-%';

-- Plain UPDATE and INSERT are validated the same way.
SELECT pg_temp.err($$UPDATE warden.idle_policies SET keep_min = -3 WHERE name = 'short'$$);
SELECT pg_temp.err($$UPDATE warden.idle_policies SET state = 'busy' WHERE name = 'short'$$);
SELECT pg_temp.err($$UPDATE warden.idle_policies SET schedule = '* * * * * *' WHERE name = 'short'$$);
SELECT pg_temp.err($$UPDATE warden.idle_policies SET enabled = NULL WHERE name = 'short'$$);
SELECT pg_temp.err($$INSERT INTO warden.idle_policies (name, idle_timeout) VALUES ('zero', '0 s')$$);
UPDATE warden.idle_policies SET enabled = false, keep_min = 2 WHERE name = 'short';
SELECT name, keep_min, enabled FROM warden.idle_policies ORDER BY name;

-- All states are accepted.
SELECT warden.add_idle_policy('s1', '1 min', state => 'idle in transaction');
SELECT warden.add_idle_policy('s2', '1 min', state => 'idle in transaction (aborted)');
SELECT warden.add_idle_policy('s3', '1 min', state => 'any idle', schedule => '0,30 */2 1-15 1-6,9 1-5');

-- Drop.
SELECT warden.drop_idle_policy('s1');
SELECT pg_temp.err($$SELECT warden.drop_idle_policy('s1')$$);
SELECT pg_temp.err($$SELECT warden.drop_idle_policy('nope')$$);
DELETE FROM warden.idle_policies WHERE name IN ('s2', 's3');
SELECT name FROM warden.idle_policies ORDER BY name;

-- The table is an extension configuration table (pg_dump keeps its rows).
SELECT c.relname FROM pg_extension e, unnest(e.extconfig) AS t(oid)
  JOIN pg_class c ON c.oid = t.oid WHERE e.extname = 'pg_warden' AND c.relname = 'idle_policies';

-- terminate_idle: validation, and a dry run that finds nobody idle here.
SELECT pg_temp.err($$SELECT * FROM warden.terminate_idle(NULL)$$);
SELECT pg_temp.err($$SELECT * FROM warden.terminate_idle('0 s')$$);
SELECT pg_temp.err($$SELECT * FROM warden.terminate_idle('1 min', state => 'asleep')$$);
SELECT pg_temp.err($$SELECT * FROM warden.terminate_idle('1 min', keep_min => -1)$$);
SELECT count(*) FROM warden.terminate_idle('1 hour', dry_run => true);

-- record_action (for wardend) lands in warden.terminations.
SELECT warden.record_action(4242, 'appdb', 'app_api', 'api-1', 'idle', 42.5,
                            'budget app_api: max_idle', false, '10.0.0.7');
SELECT pid, database, role, application_name, client_addr, state, idle_seconds, policy,
       source, dry_run FROM warden.terminations WHERE source = 'daemon';
SELECT pg_temp.err($$SELECT warden.record_action(NULL, 'appdb', 'app_api', 'api-1', 'idle', 1, 'x')$$);

-- Privileges: a plain role can do none of it.
CREATE ROLE warden_plain LOGIN;
SET ROLE warden_plain;
SELECT pg_temp.err($$SELECT warden.add_idle_policy('mine', '1 min')$$);
SELECT pg_temp.err($$SELECT warden.drop_idle_policy('short')$$);
SELECT pg_temp.err($$SELECT * FROM warden.idle_policies$$);
SELECT pg_temp.err($$UPDATE warden.idle_policies SET enabled = true$$);
SELECT pg_temp.err($$SELECT * FROM warden.terminations$$);
SELECT pg_temp.err($$SELECT * FROM warden.terminate_idle('1 min')$$);
RESET ROLE;

-- Granted the functions and the table but not pg_signal_backend: still refused.
GRANT EXECUTE ON FUNCTION warden.add_idle_policy(text, interval, text, text, text, text, int, text, bool)
  TO warden_plain;
GRANT SELECT, INSERT, UPDATE, DELETE ON warden.idle_policies TO warden_plain;
GRANT EXECUTE ON FUNCTION warden.terminate_idle(interval, text, text, text, text, int, bool)
  TO warden_plain;
SET ROLE warden_plain;
SELECT pg_temp.err($$SELECT warden.add_idle_policy('mine', '1 min')$$);
SELECT pg_temp.err($$SELECT * FROM warden.terminate_idle('1 min')$$);
RESET ROLE;

-- With pg_signal_backend: allowed, owned by that role.
GRANT pg_signal_backend TO warden_plain;
SET ROLE warden_plain;
SELECT warden.add_idle_policy('mine', '1 min', application => 'batch%');
UPDATE warden.idle_policies SET owner = 'postgres' WHERE name = 'mine';
SELECT owner FROM warden.idle_policies WHERE name = 'mine';
SELECT count(*) FROM warden.terminate_idle('1 hour', dry_run => true);
RESET ROLE;

-- Clean up.
DELETE FROM warden.idle_policies;
REVOKE ALL ON warden.idle_policies FROM warden_plain;
REVOKE ALL ON FUNCTION warden.add_idle_policy(text, interval, text, text, text, text, int, text, bool)
  FROM warden_plain;
REVOKE ALL ON FUNCTION warden.terminate_idle(interval, text, text, text, text, int, bool)
  FROM warden_plain;
DROP ROLE warden_plain;
DROP EXTENSION pg_warden;
