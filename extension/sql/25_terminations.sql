-- Terminations ----------------------------------------------------------------

CREATE FUNCTION warden.terminations(
    OUT at timestamptz, OUT pid int, OUT database name, OUT role name,
    OUT application_name text, OUT client_addr inet, OUT state text,
    OUT idle_seconds float8, OUT policy text, OUT source text, OUT dry_run bool)
  RETURNS SETOF record
  LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'terminations';
COMMENT ON FUNCTION warden.terminations() IS
  'The ring of the last 1024 terminations and dry-run decisions; see the view warden.terminations.';

CREATE VIEW warden.terminations AS SELECT * FROM warden.terminations();
COMMENT ON VIEW warden.terminations IS
  'Every termination and dry-run decision (policies, terminate_idle, the daemon), oldest first; the last 1024.';

CREATE FUNCTION warden.record_action(
    pid int, database name, role name, application text, state text, idle_seconds float8,
    action text, dry_run bool DEFAULT false, client_addr inet DEFAULT NULL)
  RETURNS void
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'record_action';
COMMENT ON FUNCTION warden.record_action(int, name, name, text, text, float8, text, bool, inet) IS
  'Records an action of wardend in warden.terminations (source ''daemon''; action goes to the policy column).';

-- Privileges: monitoring roles read the ring; recording is for the extension
-- owner and whom it grants EXECUTE (wardend's role, docs/daemon.md), not for
-- every pg_signal_backend member (who could forge entries and push real ones
-- out of the ring).
REVOKE ALL ON FUNCTION warden.terminations(),
  warden.record_action(int, name, name, text, text, float8, text, bool, inet) FROM PUBLIC;
REVOKE ALL ON warden.terminations FROM PUBLIC;
GRANT SELECT ON warden.terminations TO pg_monitor;
-- A view calls its function with the reader's privileges: pg_monitor needs both.
GRANT EXECUTE ON FUNCTION warden.terminations() TO pg_monitor;
