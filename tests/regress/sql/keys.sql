-- Keys and the login path: warden.reset_history() and the 1.1 column of
-- warden.app_usage.
CREATE EXTENSION pg_warden;

-- reset_history: a writer, like reset_stats: not for PUBLIC, pinned search_path
SELECT proconfig, has_function_privilege('public', 'warden.reset_history()', 'EXECUTE') AS public_may
  FROM pg_proc WHERE oid = 'warden.reset_history()'::regprocedure;
CREATE ROLE keys_nobody;
SET ROLE keys_nobody;
SELECT warden.reset_history();
RESET ROLE;
DROP ROLE keys_nobody;
SELECT warden.reset_history();
-- only keys holding connections now can be back (the sampler records them again)
SELECT count(*) AS other_keys FROM warden.usage_history WHERE application_name NOT LIKE 'pg_regress%';

-- the age of the longest idle-in-transaction session: this session is active
SELECT longest_idle_in_transaction_seconds >= 0 AS shown
  FROM warden.app_usage WHERE application_name LIKE 'pg_regress%' LIMIT 1;
DROP EXTENSION pg_warden;
