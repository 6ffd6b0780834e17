/*
 * loader.hpp — the config loader: a second background worker, "pg_warden
 * loader", connected to the database named by warden.database, that copies
 * pg_warden's configuration tables (warden.idle_policies, ...) into shared
 * memory, where the sampler and the login path read them.
 *
 * Lifecycle: the sampler (connected to no database) checks in a short
 * transaction that warden.database exists in pg_database and starts the
 * loader with RegisterDynamicBackgroundWorker; when the database is missing
 * it logs that once and checks again every 5 s, and it restarts the loader if
 * it exits. The loader starts at BgWorkerStart_ConsistentState: it also runs
 * on a hot standby, where it only reads.
 *
 * Changes apply at commit without polling the tables (as pg_cron does): a
 * statement-level trigger on each table calls warden.config_changed(), which
 * registers a relcache invalidation of the table; invalidations are sent at
 * commit and WAL-logged, so they also reach a standby's loader at replay. The
 * loader registers a relcache callback that marks the configuration stale,
 * wakes every warden.sample_interval, starts and commits an empty
 * transaction (which accepts pending invalidations) and reloads only when
 * stale. Role changes (ALTER ROLE, GRANT role) also mark it stale, because
 * loaders may compute privileges of a row's owner.
 *
 * Adding a table (e.g. budgets):
 *   1. in its SQL file: the table, `pg_extension_config_dump`, and
 *        CREATE TRIGGER budgets_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
 *          ON warden.budgets FOR EACH STATEMENT EXECUTE FUNCTION warden.config_changed();
 *   2. a Load function (called inside the loader's transaction, SPI connected,
 *      the table exists: read it with SPI, copy into your own shared memory
 *      under your own LWLock) and a Clear function (the table or the
 *      extension is absent: empty your shared state);
 *   3. one line in kConfigLoaders in pg_warden.cpp:  {"budgets", LoadBudgets, ClearBudgets}.
 * After each reload, ConfigGeneration() grows by one and ConfigReady() is true.
 */
#pragma once

#include "pg_warden/pg.hpp"

namespace warden {

struct ConfigLoader {
  const char *table; /* in schema warden */
  void (*load)();    /* PostgreSQL regime; SPI connected, inside a transaction */
  void (*clear)();   /* table or extension absent */
};

/* Every configuration table and how to load it: defined in pg_warden.cpp, next to the
   subsystem table (one line per table), so the loader depends on no subsystem. */
constexpr int kMaxConfigLoaders = 8;
extern const ConfigLoader kConfigLoaders[];
extern const int kNumConfigLoaders;

Size LoaderShmemSize();
void LoaderShmemInit();

/* True once the loader completed its first load (with or without tables). */
bool ConfigReady();
/* The running loader's pid, 0 if none. */
int32 LoaderPid();
/* Grows by one after every reload. */
uint64 ConfigGeneration();
/* The sampler: it has sampled with this generation (warden.config_status()). */
void ConfigApplied(uint64 generation);

/* Roles that may run pg_rewind without being superusers, as of the latest load
   (EXECUTE on pg_read_binary_file in warden.database); exempt while
   warden.exempt_rewind_roles is on. Takes config_lock shared. */
constexpr int kMaxRewindRoles = 32;
bool IsRewindRole(const char *role_name);

/* Called by the sampler every sample: starts the loader when needed. */
void ManageLoader(TimestampTz now);

}  // namespace warden

extern "C" PGDLLEXPORT void warden_loader_main(Datum arg);
