-- Trust: where the extension may be created, what budgets, policies and
-- overrides refuse (one rule for unknown roles and databases, input that
-- would do nothing or lock everyone out), transactional overrides,
-- privileges, and search_path pinned in every PL/pgSQL function.

\set SHOW_CONTEXT never
-- CREATE EXTENSION outside warden.database: refused, naming it
CREATE DATABASE regress_elsewhere;
\c regress_elsewhere
CREATE EXTENSION pg_warden;
SELECT count(*) AS installed FROM pg_extension WHERE extname = 'pg_warden';
\c contrib_regression
DROP DATABASE regress_elsewhere;

CREATE EXTENSION pg_warden;
CREATE ROLE regress_t_app LOGIN;
CREATE ROLE regress_t_super SUPERUSER;

-- budgets: input that would lock everyone out, or do nothing
SELECT warden.set_budget('lockout', 0);
SELECT warden.set_budget('nobody', max_connections => 5, reserved => 2);
SELECT name, max_connections FROM warden.set_budget('server-cap', 40);
-- unknown roles and databases: the same errors as close_admission
SELECT warden.set_budget('typo', 5, role => 'regress_no_such_role');
SELECT warden.set_budget('typo', 5, database => 'regress_no_such_db');
INSERT INTO warden.budgets (name, max_connections, role) VALUES ('typo', 5, 'regress_no_such_role');
SELECT * FROM warden.terminate_idle('1 hour', role => 'regress_no_such_role');
SELECT * FROM warden.terminate_idle('1 hour', database => 'regress_no_such_db');
-- NULL arguments: one wording
SELECT warden.set_budget('nulls', 5, reserved => NULL);
-- reservations that together exceed the usable connections (47 here)
SELECT name, reserved FROM warden.set_budget('keep-a', role => 'regress_t_app', reserved => 30);
SELECT warden.set_budget('keep-b', application => 'ops%', reserved => 17);
SELECT name, reserved FROM warden.set_budget('keep-b', application => 'ops%', reserved => 16);
-- replacing one's own reservation is not counted twice
SELECT name, reserved FROM warden.set_budget('keep-a', role => 'regress_t_app', reserved => 30);
SELECT warden.drop_budget('keep-a'), warden.drop_budget('keep-b'), warden.drop_budget('server-cap');

-- set_budget's errors carry no CONTEXT of its internal INSERT
\set SHOW_CONTEXT errors
SELECT warden.set_budget('neg', -1);
\set SHOW_CONTEXT never

-- 128 budgets: a new one is refused, replacing one works
SELECT count(*) FROM (SELECT warden.set_budget('b' || i, i, application => 'b' || i) FROM generate_series(1, 128) i) s;
SELECT warden.set_budget('b129', 1, application => 'b129');
SELECT name, max_connections FROM warden.set_budget('b7', 70, application => 'b7');
DELETE FROM warden.budgets;

-- idle policies: the same rule for roles and databases; timeouts and
-- schedules that can never act
SELECT warden.add_idle_policy('p', '1 min', role => 'regress_no_such_role');
SELECT warden.add_idle_policy('p', '1 min', database => 'regress_no_such_db');
SELECT warden.add_idle_policy('p', '0.5 ms');
SELECT warden.add_idle_policy('p', '9 ms');
SELECT warden.add_idle_policy('p', '1 min', schedule => '* * 31 2 *');
SELECT warden.add_idle_policy('p', '1 min', schedule => '* * 30,31 2 *');
-- ... but a day of month that exists in one of the months is fine (30 April,
-- 29 February), and so is a restricted day of week (cron matches either)
SELECT warden.add_idle_policy('apr30', '1 min', schedule => '* * 30,31 2,4 *', role => 'regress_t_app');
SELECT warden.add_idle_policy('feb29', '10 ms', schedule => '0 0 29 2 *', role => 'regress_t_app');
SELECT warden.add_idle_policy('or-dow', '1 min', schedule => '* * 31 2 1', dry_run => true);
-- a policy owner that does not exist
INSERT INTO warden.idle_policies (name, idle_timeout, owner) VALUES ('ghost', '1 min', 'regress_ghost');
SELECT name, owner = current_user AS mine FROM warden.idle_policies ORDER BY name;
DELETE FROM warden.idle_policies;

-- overrides: an application alone; superusers and unknown roles refused
SELECT role, application, max_connections FROM warden.close_admission(application => 'api-%', max_connections => 3);
SELECT role, application, max_connections FROM warden.admission_overrides;
SELECT warden.open_admission(application => 'api-%');
SELECT warden.close_admission(role => 'regress_t_super', max_connections => 0);
SELECT warden.close_admission(role => current_user::text, max_connections => 0);
SELECT warden.close_admission(role => 'regress_no_such_role', max_connections => 0);

-- overrides are transactional: in force from commit, nothing after ROLLBACK
BEGIN;
SELECT count(*) FROM (SELECT warden.close_admission(application => 'rb-' || i, max_connections => 0)
                        FROM generate_series(1, 64) i) s;
SELECT count(*) AS before_commit FROM warden.admission_overrides;
ROLLBACK;
SELECT count(*) AS after_rollback FROM warden.admission_overrides;
BEGIN;
SELECT max_connections FROM warden.close_admission(role => 'regress_t_app', max_connections => 1);
SAVEPOINT s;
SELECT max_connections FROM warden.close_admission(application => 'sp', max_connections => 2);
ROLLBACK TO SAVEPOINT s;
SAVEPOINT t;
SELECT max_connections FROM warden.close_admission(application => 'kept', max_connections => 3);
RELEASE SAVEPOINT t;
COMMIT;
SELECT role, application, max_connections FROM warden.admission_overrides ORDER BY application NULLS FIRST;
-- open_admission counts the transaction's own changes, and applies at commit
BEGIN;
SELECT warden.open_admission(role => 'regress_t_app');
SELECT warden.open_admission(role => 'regress_t_app');
SELECT count(*) AS still_in_force FROM warden.admission_overrides WHERE role = 'regress_t_app';
COMMIT;
SELECT role, application FROM warden.admission_overrides;
-- close then open in one transaction: nothing
BEGIN;
SELECT max_connections FROM warden.close_admission(application => 'brief', max_connections => 0);
SELECT warden.open_admission(application => 'brief');
COMMIT;
SELECT warden.open_admission(application => 'kept');
SELECT count(*) AS overrides FROM warden.admission_overrides;
-- 64 overrides fit, the 65th is refused at the call, counting pending ones
BEGIN;
SELECT count(*) FROM (SELECT warden.close_admission(application => 'full-' || i, max_connections => 0)
                        FROM generate_series(1, 64) i) s;
SELECT warden.close_admission(application => 'full-65', max_connections => 0);
ROLLBACK;
-- a prepared transaction cannot hold an override change
BEGIN;
SELECT max_connections FROM warden.close_admission(application => 'prep', max_connections => 0);
PREPARE TRANSACTION 'regress_trust';
SELECT count(*) AS overrides FROM warden.admission_overrides;

-- privileges: record_action is the owner's (and whom it grants), not every
-- pg_signal_backend member's
CREATE ROLE regress_t_signaller IN ROLE pg_signal_backend;
SELECT has_function_privilege('regress_t_signaller',
  'warden.record_action(int, name, name, text, text, float8, text, bool, inet)', 'EXECUTE') AS signaller_may_record;
-- policies: the privileges of pg_signal_backend, not membership without INHERIT
CREATE ROLE regress_t_noinherit NOINHERIT;
GRANT pg_signal_backend TO regress_t_noinherit;
GRANT INSERT, SELECT ON warden.idle_policies TO regress_t_noinherit, regress_t_signaller;
GRANT EXECUTE ON FUNCTION warden.add_idle_policy(text, interval, text, text, text, text, int, text, bool)
  TO regress_t_noinherit, regress_t_signaller;
SET ROLE regress_t_noinherit;
SELECT warden.add_idle_policy('noinherit', '1 min', application => 'x');
RESET ROLE;
SET ROLE regress_t_signaller;
SELECT warden.add_idle_policy('signaller', '1 min', application => 'x');
RESET ROLE;
SELECT name, owner FROM warden.idle_policies;
DELETE FROM warden.idle_policies;

-- search_path: a hostile "=" on the caller's path (before pg_catalog) is
-- never called by the extension's functions and triggers
CREATE FUNCTION public.regress_hostile_eq(text, text) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE 'hostile = called';
  RETURN $1 OPERATOR(pg_catalog.=) $2;
END $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.regress_hostile_eq);
CREATE FUNCTION public.regress_hostile_ge(bigint, int) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE 'hostile >= called';
  RETURN $1 OPERATOR(pg_catalog.>=) $2;
END $$;
CREATE OPERATOR public.>= (LEFTARG = bigint, RIGHTARG = int, FUNCTION = public.regress_hostile_ge);
SET search_path = public, pg_catalog;
SELECT 'a'::text = 'a'::text AS planted;
SELECT warden.add_idle_policy('hp', '1 min', application => 'x');
UPDATE warden.idle_policies SET keep_min = 1 WHERE name OPERATOR(pg_catalog.=) 'hp';
SELECT warden.drop_idle_policy('hp');
SELECT name FROM warden.set_budget('hb', 5, application => 'x', reserved => 1);
SELECT warden.drop_budget('hb');
SELECT warden.set_budget('hb', -1);
RESET search_path;
DROP OPERATOR public.= (text, text);
DROP OPERATOR public.>= (bigint, int);
DROP FUNCTION public.regress_hostile_eq(text, text), public.regress_hostile_ge(bigint, int);

DROP EXTENSION pg_warden;
DROP ROLE regress_t_app, regress_t_super, regress_t_signaller, regress_t_noinherit;
