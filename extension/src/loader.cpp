/*
 * loader.cpp — the "pg_warden loader" worker (see loader.hpp for the
 * protocol) and warden.config_changed(), the statement trigger of the
 * configuration tables. Locks: config_lock (exclusive to publish loader_pid /
 * ready, shared to read); sample_lock (shared) to find the sampler to wake.
 * Each load function takes its own lock to publish its data.
 */
#include "pg_warden/loader.hpp"

#include "pg_warden/admission.hpp"
#include "pg_warden/boundary.hpp"
#include "pg_warden/guc.hpp"
#include "pg_warden/usage.hpp"

namespace warden {
namespace {

struct LoaderShared {
  LWLock *lock;
  int32 loader_pid; /* 0 when no loader runs */
  bool ready;
  pg_atomic_uint64 generation;
  /* the latest load: when its snapshot was taken (under lock), and the
     generation the sampler applied last (its first sample after the load) */
  TimestampTz loaded_at;
  pg_atomic_uint64 applied_generation;
  /* roles that may run pg_rewind (see IsRewindRole), under lock */
  int32 nrewind;
  NameData rewind_roles[kMaxRewindRoles];
};

LoaderShared *loader_shared = nullptr;

/* -- the loader's side ------------------------------------------------------ */

volatile bool config_stale = true;
Oid watched[kMaxConfigLoaders];
bool logged_missing_extension = false;

void OnRelcacheInvalidation(Datum, Oid relid) {
  if (relid == InvalidOid) {
    config_stale = true;
    return;
  }
  for (int i = 0; i < kNumConfigLoaders; i++)
    if (watched[i] == relid) config_stale = true;
}

void OnRoleInvalidation(Datum, int, uint32) { config_stale = true; }

void ClearLoaderPid(int, Datum) {
  LWLockAcquire(loader_shared->lock, LW_EXCLUSIVE);
  if (loader_shared->loader_pid == MyProcPid) loader_shared->loader_pid = 0;
  LWLockRelease(loader_shared->lock);
}

/*
 * The roles pg_rewind can run as without being superusers: those granted
 * EXECUTE on pg_read_binary_file(text, bigint, bigint, boolean), which
 * PostgreSQL revokes from PUBLIC and pg_rewind calls (Patroni grants it to its
 * rewind role at bootstrap). Only a superuser can grant it, so no client can
 * make itself exempt. SPI connected, inside the load's snapshot.
 */
void LoadRewindRoles() {
  int32 n = 0;
  NameData found[kMaxRewindRoles];
  if (SPI_execute("SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.rolcanlogin AND "
                  "NOT r.rolsuper AND pg_catalog.has_function_privilege(r.oid, "
                  "'pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)', 'EXECUTE') "
                  "ORDER BY 1",
                  true, kMaxRewindRoles) != SPI_OK_SELECT)
    elog(ERROR, "pg_warden loader: reading the rewind roles failed");
  for (uint64 i = 0; i < SPI_processed && n < kMaxRewindRoles; i++) {
    bool isnull = false;
    const Datum d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
    if (!isnull) namestrcpy(&found[n++], NameStr(*DatumGetName(d)));
  }
  LWLockAcquire(loader_shared->lock, LW_EXCLUSIVE);
  memcpy(loader_shared->rewind_roles, found, sizeof(NameData) * static_cast<size_t>(n));
  loader_shared->nrewind = n;
  LWLockRelease(loader_shared->lock);
}

/* Inside a transaction; takes the snapshot it reads the tables with. */
void LoadAll() {
  TimestampTz snapshot_at = GetCurrentTimestamp();
  const Oid ext = get_extension_oid("pg_warden", true);
  const Oid nsp = OidIsValid(ext) ? get_namespace_oid("warden", true) : InvalidOid;
  if (!OidIsValid(ext) || !OidIsValid(nsp)) {
    /* look again next time: CREATE EXTENSION sends no invalidation we watch */
    config_stale = true;
    if (logged_missing_extension) return; /* still missing: nothing changed */
    ereport(LOG, (errmsg("pg_warden: extension pg_warden is not created in database \"%s\"; "
                         "idle policies and budgets are not loaded",
                         guc_database),
                  errhint("Run CREATE EXTENSION pg_warden in database \"%s\".", guc_database)));
    logged_missing_extension = true;
    for (int i = 0; i < kNumConfigLoaders; i++) {
      watched[i] = InvalidOid;
      kConfigLoaders[i].clear();
    }
    /* Nothing the extension enforced outlives it: no SQL is left to lift them. */
    ClearAdmissionOverrides();
    LWLockAcquire(loader_shared->lock, LW_EXCLUSIVE);
    loader_shared->nrewind = 0;
    LWLockRelease(loader_shared->lock);
  } else {
    if (logged_missing_extension)
      ereport(LOG,
              (errmsg("pg_warden: extension found in database \"%s\"; loading its configuration",
                      guc_database)));
    logged_missing_extension = false;
    /* Know which tables to watch before taking the snapshot the tables are read
       with: a commit after the snapshot then always leaves an invalidation that
       matches (with the snapshot first, one processed while the OIDs were still
       unknown, e.g. at a new loader's first load, was lost until the next change). */
    for (int i = 0; i < kNumConfigLoaders; i++)
      watched[i] = get_relname_relid(kConfigLoaders[i].table, nsp);
    /* The loader runs as the bootstrap superuser: nobody's function or operator
       on the database's default search_path may stand in for pg_catalog's (the
       setting is local to this transaction). */
    (void)set_config_option("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION,
                            GUC_ACTION_LOCAL, true, 0, false);
    /* taken before the snapshot: a commit before this time is in what is loaded */
    snapshot_at = GetCurrentTimestamp();
    PushActiveSnapshot(GetTransactionSnapshot());
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "pg_warden loader: SPI_connect failed");
    for (int i = 0; i < kNumConfigLoaders; i++) {
      if (OidIsValid(watched[i]))
        kConfigLoaders[i].load();
      else
        kConfigLoaders[i].clear();
    }
    LoadRewindRoles();
    SPI_finish();
    PopActiveSnapshot();
  }
  LWLockAcquire(loader_shared->lock, LW_EXCLUSIVE);
  loader_shared->ready = true;
  loader_shared->loaded_at = snapshot_at;
  pg_atomic_fetch_add_u64(&loader_shared->generation, 1);
  LWLockRelease(loader_shared->lock);

  /* Wake the sampler: it applies the new configuration now, not at its next tick. */
  LWLockAcquire(usage->sample_lock, LW_SHARED);
  const int32 sampler_pid = usage->sampler_pid;
  LWLockRelease(usage->sample_lock);
  PGPROC *sampler = sampler_pid != 0 ? BackendPidGetProc(sampler_pid) : nullptr;
  if (sampler != nullptr) SetLatch(&sampler->procLatch);
}

/*
 * warden.degraded_percent must be below warden.unhealthy_percent. Check hooks
 * cannot compare the two reliably (a reload applies them one at a time, in
 * file order), so the pair is checked where it is used: health tests
 * unhealthy first, so a contradicting degraded_percent is never reached.
 * The loader says so at its start and at each reload that changes the pair.
 */
void CheckHealthThresholds() {
  static int logged_degraded = -1, logged_unhealthy = -1;
  if (guc_degraded_percent == logged_degraded && guc_unhealthy_percent == logged_unhealthy) return;
  logged_degraded = guc_degraded_percent;
  logged_unhealthy = guc_unhealthy_percent;
  if (guc_degraded_percent >= guc_unhealthy_percent)
    ereport(WARNING,
            (errmsg("pg_warden: warden.degraded_percent (%d) must be below "
                    "warden.unhealthy_percent (%d)",
                    guc_degraded_percent, guc_unhealthy_percent),
             errdetail("Health goes from healthy straight to unhealthy at %d %%: the degraded "
                       "status is never reported.",
                       guc_unhealthy_percent),
             errhint("Set warden.degraded_percent below warden.unhealthy_percent and reload.")));
}

void LoaderMain() {
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  pqsignal(SIGTERM, die);
  BackgroundWorkerUnblockSignals();
  BackgroundWorkerInitializeConnection(guc_database, nullptr, 0);
  pgstat_report_appname("pg_warden loader");

  LWLockAcquire(loader_shared->lock, LW_EXCLUSIVE);
  loader_shared->loader_pid = MyProcPid;
  LWLockRelease(loader_shared->lock);
  on_shmem_exit(ClearLoaderPid, 0);

  for (int i = 0; i < kNumConfigLoaders; i++) watched[i] = InvalidOid;
  CacheRegisterRelcacheCallback(OnRelcacheInvalidation, 0);
  CacheRegisterSyscacheCallback(AUTHOID, OnRoleInvalidation, 0);
  CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, OnRoleInvalidation, 0);
  /* GRANT EXECUTE on a function: the rewind roles may change */
  CacheRegisterSyscacheCallback(PROCOID, OnRoleInvalidation, 0);
  ereport(LOG, (errmsg("pg_warden loader started in database \"%s\"", guc_database)));
  CheckHealthThresholds();

  for (;;) {
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      ProcessConfigFile(PGC_SIGHUP);
      CheckHealthThresholds();
    }
    /* Starting a transaction accepts pending invalidations (may set config_stale). */
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    if (config_stale) {
      config_stale = false;
      pgstat_report_activity(STATE_RUNNING, "pg_warden: loading configuration");
      LoadAll();
    }
    CommitTransactionCommand();
    pgstat_report_activity(STATE_IDLE, nullptr);
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, guc_sample_interval,
                    PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
  }
}

}  // namespace

Size LoaderShmemSize() { return MAXALIGN(sizeof(LoaderShared)); }

void LoaderShmemInit() {
  bool found = false;
  loader_shared =
      static_cast<LoaderShared *>(ShmemInitStruct("pg_warden loader", LoaderShmemSize(), &found));
  if (found) return;
  memset(loader_shared, 0, sizeof(LoaderShared));
  loader_shared->lock = &GetNamedLWLockTranche("pg_warden")[kConfigLock].lock;
  pg_atomic_init_u64(&loader_shared->generation, 0);
  pg_atomic_init_u64(&loader_shared->applied_generation, 0);
}

bool ConfigReady() {
  if (loader_shared == nullptr) return false;
  LWLockAcquire(loader_shared->lock, LW_SHARED);
  const bool ready = loader_shared->ready;
  LWLockRelease(loader_shared->lock);
  return ready;
}

int32 LoaderPid() {
  LWLockAcquire(loader_shared->lock, LW_SHARED);
  const int32 pid = loader_shared->loader_pid;
  LWLockRelease(loader_shared->lock);
  return pid;
}

uint64 ConfigGeneration() {
  return loader_shared == nullptr ? 0 : pg_atomic_read_u64(&loader_shared->generation);
}

bool IsRewindRole(const char *role_name) {
  if (loader_shared == nullptr || role_name == nullptr) return false;
  bool found = false;
  LWLockAcquire(loader_shared->lock, LW_SHARED);
  for (int32 i = 0; i < loader_shared->nrewind && !found; i++)
    found = strcmp(NameStr(loader_shared->rewind_roles[i]), role_name) == 0;
  LWLockRelease(loader_shared->lock);
  return found;
}

void ConfigApplied(uint64 generation) {
  if (loader_shared != nullptr) pg_atomic_write_u64(&loader_shared->applied_generation, generation);
}

}  // namespace warden

using namespace warden;

/* Statement trigger on configuration tables: tell the loader at commit. */
WARDEN_FUNCTION(config_changed) {
  if (!CALLED_AS_TRIGGER(fcinfo))
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("warden.config_changed() must be called as a trigger")));
  TriggerData *trigdata = reinterpret_cast<TriggerData *>(fcinfo->context);
  CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
  return PointerGetDatum(nullptr);
}

extern "C" void warden_loader_main(Datum) {
  warden::Guard("warden_loader_main", [] { warden::LoaderMain(); });
}

/*
 * warden.config_status(): whether a configuration change reached shared
 * memory and the sampler. A change committed before loaded_at is loaded;
 * applied_generation = generation once the sampler has sampled with it.
 */
WARDEN_FUNCTION(config_status) {
  RequirePreloaded();
  TupleDesc tupdesc;
  if (get_call_result_type(fcinfo, nullptr, &tupdesc) != TYPEFUNC_COMPOSITE)
    ereport(ERROR,
            (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("return type must be a row type")));
  LWLockAcquire(loader_shared->lock, LW_SHARED);
  const bool ready = loader_shared->ready;
  const int32 pid = loader_shared->loader_pid;
  const TimestampTz loaded_at = loader_shared->loaded_at;
  const uint64 generation = pg_atomic_read_u64(&loader_shared->generation);
  const int32 nrewind = loader_shared->nrewind;
  NameData rewind[kMaxRewindRoles];
  memcpy(rewind, loader_shared->rewind_roles, sizeof(NameData) * static_cast<size_t>(nrewind));
  LWLockRelease(loader_shared->lock);
  const uint64 applied = pg_atomic_read_u64(&loader_shared->applied_generation);
  Datum names[kMaxRewindRoles];
  for (int32 i = 0; i < nrewind; i++) names[i] = CStringGetTextDatum(NameStr(rewind[i]));
  Datum values[6];
  bool nulls[6] = {false};
  values[0] = BoolGetDatum(ready);
  values[1] = Int32GetDatum(pid);
  nulls[1] = pid == 0;
  values[2] = TimestampTzGetDatum(loaded_at);
  nulls[2] = !ready;
  values[3] = Int64GetDatum(static_cast<int64>(generation));
  values[4] = Int64GetDatum(static_cast<int64>(applied));
  values[5] = PointerGetDatum(construct_array(names, nrewind, TEXTOID, -1, false, TYPALIGN_INT));
  HeapTuple tuple = heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls);
  return HeapTupleGetDatum(tuple);
}
