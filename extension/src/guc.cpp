/*
 * guc.cpp — definitions of the warden.* settings. Each one is documented in
 * docs/sql-reference.md; keep the two in step.
 */
#include "pg_warden/guc.hpp"

#include "pg_warden/loader.hpp"

namespace warden {

char *guc_database = nullptr;
int guc_sample_interval = 1000;
int guc_max_tracked = 1024;
int guc_degraded_percent = 80;
int guc_unhealthy_percent = 90;
bool guc_enforce = true;
char *guc_exempt_roles = nullptr;
bool guc_exempt_rewind_roles = true;
int guc_history_keys = 256;
int guc_history_save_interval = 300;

void DefineSettings() {
  DefineCustomStringVariable(
      "warden.database", "Database where pg_warden's policies and budgets live.",
      "The worker connects to it; CREATE EXTENSION pg_warden there.", &guc_database, "postgres",
      PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "warden.sample_interval", "How often the worker samples client backend states.", nullptr,
      &guc_sample_interval, 1000, 10, 60000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "warden.max_tracked", "Distinct (database, role, application) keys tracked in shared memory.",
      "Keys past it fold into application <other>; a login never fails for lack of room.",
      &guc_max_tracked, 1024, 4, 1000000, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "warden.degraded_percent", "Server usage (percent) at which health becomes degraded.",
      nullptr, &guc_degraded_percent, 80, 1, 100, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "warden.unhealthy_percent", "Server usage (percent) at which health becomes unhealthy.",
      nullptr, &guc_unhealthy_percent, 90, 1, 100, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable("warden.enforce",
                           "Off: evaluate, log and record, but never terminate or refuse.", nullptr,
                           &guc_enforce, true, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomStringVariable(
      "warden.exempt_roles", "Comma-separated roles pg_warden never terminates or refuses.",
      nullptr, &guc_exempt_roles, "", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable(
      "warden.exempt_rewind_roles", "Never terminate or refuse the roles that may run pg_rewind.",
      "Non-superuser roles granted EXECUTE on pg_read_binary_file(text, bigint, bigint, "
      "boolean) in warden.database, as Patroni's rewind role is.",
      &guc_exempt_rewind_roles, true, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "warden.history_keys", "Keys whose usage history is kept in shared memory.",
      "A key gets a history slot at its first sampled connection; keys past it have no "
      "history. 0 turns history off. Each slot costs about 39 kB.",
      &guc_history_keys, 256, 0, 100000, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "warden.history_save_interval", "How often the worker saves the usage history to disk.",
      "The history is also saved at shutdown; after a crash it comes back as of the last "
      "save. 0: only at shutdown.",
      &guc_history_save_interval, 300, 0, 86400, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr, nullptr);
  MarkGUCPrefixReserved("warden");
}

bool IsPatroniApplication(const char *application) {
  return application != nullptr && strcmp(application, "Patroni") == 0;
}

bool IsExemptRole(const char *role_name) {
  if (guc_exempt_rewind_roles && IsRewindRole(role_name)) return true;
  if (guc_exempt_roles == nullptr || guc_exempt_roles[0] == '\0') return false;
  /* A plain scan of the comma list: no allocation on the login path. */
  const char *p = guc_exempt_roles;
  const size_t len = strlen(role_name);
  while (*p) {
    while (*p == ' ' || *p == ',' || *p == '\t') p++;
    const char *start = p;
    while (*p && *p != ',') p++;
    const char *end = p;
    while (end > start && (end[-1] == ' ' || end[-1] == '\t')) end--;
    if (end > start && start[0] == '"' && end[-1] == '"' && end - start >= 2) {
      start++;
      end--;
    }
    if (static_cast<size_t>(end - start) == len && strncmp(start, role_name, len) == 0) return true;
  }
  return false;
}

}  // namespace warden
