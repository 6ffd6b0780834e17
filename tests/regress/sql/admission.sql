-- Admission: the budgets API (validation, replace, drop), admission
-- overrides (close, list, open, bad input), and privileges.
CREATE EXTENSION pg_warden;
\set SHOW_CONTEXT never
CREATE ROLE ops;  -- a budget names a role that exists

-- budgets: create, replace, list
SELECT name, max_connections, application, role, database, reserved
  FROM warden.set_budget(name => 'workers', max_connections => 30, application => 'worker-%');
SELECT name, max_connections, reserved
  FROM warden.set_budget(name => 'workers', max_connections => 25, application => 'worker-%');
SELECT name, max_connections, role, reserved
  FROM warden.set_budget(name => 'ops-headroom', role => 'ops', reserved => 5);
SELECT name, max_connections, application, role, database, reserved, created_by = current_user AS mine
  FROM warden.budgets ORDER BY name;

-- bad input: a clear error, nothing stored
SELECT warden.set_budget(name => NULL, max_connections => 1);
SELECT warden.set_budget(name => '  ', max_connections => 1);
SELECT warden.set_budget(name => repeat('n', 64), max_connections => 1);
SELECT warden.set_budget(name => 'neg', max_connections => -1);
SELECT warden.set_budget(name => 'neg', reserved => -1, max_connections => 1);
SELECT warden.set_budget(name => 'empty');
SELECT warden.set_budget(name => 'huge', reserved => 47);
SELECT warden.set_budget(name => 'over', max_connections => 2, reserved => 3);
SELECT warden.set_budget(name => 'long', max_connections => 1, application => repeat('a', 64));
SELECT warden.set_budget(name => 'long', max_connections => 1, role => repeat('r', 64));
SELECT name FROM warden.set_budget(name => 'quote''s; DROP TABLE warden.budgets; --', max_connections => 1, application => 'it''s "quoted"');
SELECT name, application FROM warden.budgets WHERE name LIKE 'quote%';
-- plain UPDATE goes through the same validation
UPDATE warden.budgets SET max_connections = -5 WHERE name = 'workers';
UPDATE warden.budgets SET reserved = 1000 WHERE name = 'ops-headroom';
SELECT count(*) AS budgets FROM warden.budgets;

SELECT warden.drop_budget('quote''s; DROP TABLE warden.budgets; --');
SELECT warden.drop_budget('no-such-budget');
SELECT warden.drop_budget(NULL);

-- role_usage.budget: the tightest budget covering all of a role's connections
SELECT name, role = current_user AS mine FROM warden.set_budget(name => 'superuser-cap', role => current_user, max_connections => 40);
SELECT budget, round(usage_percent::numeric, 2) = round(100.0 * connections / 40, 2) AS pct
  FROM warden.role_usage WHERE role = current_user;
SELECT warden.drop_budget('superuser-cap');

-- admission overrides: this server, shared memory only
CREATE ROLE regress_app_api LOGIN;
SELECT role, application, max_connections, reason, expires IS NULL AS forever, connections
  FROM warden.close_admission(role => 'regress_app_api', max_connections => 12,
                              reason => 'wardend: emergency at 95%');
SELECT role, application, max_connections, reason, expires - since AS lasts
  FROM warden.close_admission(role => 'regress_app_api', application => 'api-%',
                              max_connections => 3, expires => '15 min');
-- replacing the same (role, application) keeps one row
SELECT max_connections FROM warden.close_admission(role => 'regress_app_api', max_connections => 10);
SELECT role, application, max_connections FROM warden.admission_overrides ORDER BY application NULLS FIRST;
-- max_connections NULL = what the role holds now (nothing)
SELECT max_connections FROM warden.close_admission(role => 'regress_app_api', application => 'idle-%');

-- bad input
SELECT warden.close_admission(role => 'regress_no_such_role');
SELECT warden.close_admission(role => NULL);
SELECT warden.close_admission(role => 'regress_app_api', max_connections => -1);
SELECT warden.close_admission(role => 'regress_app_api', expires => '-5 min');
SELECT warden.close_admission(role => 'regress_app_api', expires => '0');
SELECT warden.close_admission(role => 'regress_app_api', application => repeat('x', 64));
SELECT warden.close_admission(role => 'regress_app_api', reason => repeat('r', 300));
SELECT count(*) AS overrides FROM warden.admission_overrides;

SELECT warden.open_admission(role => 'regress_app_api');
SELECT warden.open_admission(role => 'regress_app_api');
SELECT warden.open_admission(role => 'regress_app_api', application => 'api-%');
SELECT warden.open_admission(role => 'regress_app_api', application => 'idle-%');
SELECT warden.open_admission(role => NULL);
SELECT count(*) AS overrides FROM warden.admission_overrides;

-- privileges: nobody but the owner and whom it grants
CREATE ROLE regress_plain;
CREATE ROLE regress_monitor IN ROLE pg_monitor;
SET ROLE regress_plain;
SELECT warden.set_budget(name => 'x', max_connections => 1);
SELECT warden.drop_budget('workers');
SELECT warden.close_admission(role => 'regress_app_api');
SELECT warden.open_admission(role => 'regress_app_api');
SELECT count(*) FROM warden.budgets;
SELECT count(*) FROM warden.admission_overrides;
INSERT INTO warden.budgets (name, max_connections) VALUES ('sneaky', 1);
RESET ROLE;
SET ROLE regress_monitor;
SELECT count(*) AS budgets FROM warden.budgets;
SELECT count(*) AS overrides FROM warden.admission_overrides;
SELECT warden.set_budget(name => 'x', max_connections => 1);
RESET ROLE;
-- the owner can delegate
GRANT EXECUTE ON FUNCTION warden.close_admission(text, text, int, text, interval),
  warden.open_admission(text, text) TO regress_plain;
SET ROLE regress_plain;
SELECT max_connections FROM warden.close_admission(role => 'regress_app_api', max_connections => 1);
SELECT warden.open_admission(role => 'regress_app_api');
RESET ROLE;

-- pg_dump keeps budgets: the table is an extension configuration table
SELECT c.relname
  FROM pg_extension e, unnest(e.extconfig) AS t(oid) JOIN pg_class c ON c.oid = t.oid
 WHERE e.extname = 'pg_warden' AND c.relname = 'budgets';

DROP EXTENSION pg_warden;
DROP ROLE regress_plain, regress_monitor, regress_app_api, ops;
