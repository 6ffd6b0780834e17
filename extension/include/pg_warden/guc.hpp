/*
 * guc.hpp — pg_warden's settings (warden.*), defined in guc.cpp.
 */
#pragma once

#include "pg_warden/pg.hpp"

namespace warden {

extern char *guc_database;            /* warden.database (postmaster) */
extern int guc_sample_interval;       /* warden.sample_interval, ms */
extern int guc_max_tracked;           /* warden.max_tracked (postmaster) */
extern int guc_degraded_percent;      /* warden.degraded_percent */
extern int guc_unhealthy_percent;     /* warden.unhealthy_percent */
extern bool guc_enforce;              /* warden.enforce */
extern char *guc_exempt_roles;        /* warden.exempt_roles */
extern bool guc_exempt_rewind_roles;  /* warden.exempt_rewind_roles */
extern int guc_history_keys;          /* warden.history_keys (postmaster) */
extern int guc_history_save_interval; /* warden.history_save_interval, s */

void DefineSettings();

/*
 * The built-in exemption: Patroni's own session (a superuser's client backend
 * whose application_name is "Patroni", docs/fleet.md) is never terminated.
 * The caller checks that the role is a superuser; this checks the name.
 */
bool IsPatroniApplication(const char *application);

/* Is role_name listed in warden.exempt_roles, or a rewind role while
   warden.exempt_rewind_roles is on? (PostgreSQL regime; takes config_lock
   shared: call it with no other pg_warden lock held.) */
bool IsExemptRole(const char *role_name);

}  // namespace warden
