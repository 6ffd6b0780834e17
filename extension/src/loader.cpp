/*
 * loader.cpp — the "pg_warden loader" worker and the sampler's side of
 * starting it (see loader.hpp for the protocol). Locks: config_lock
 * (exclusive to publish loader_pid / ready, shared to read). Each loader
 * function takes its own lock to publish its data.
 */
#include "pg_warden/loader.hpp"

#include "pg_warden/admission.hpp"

#include "pg_warden/boundary.hpp"
#include "pg_warden/guc.hpp"
#include "pg_warden/policies.hpp"
#include "pg_warden/tracking.hpp"

namespace warden {
namespace {

/* Every configuration table and how to load it. Add one line per table. */
const ConfigLoader kConfigLoaders[] = {
    {"idle_policies", LoadIdlePolicies, ClearIdlePolicies},
    {"budgets", LoadBudgets, ClearBudgets},
};
constexpr int kNumLoaders = sizeof(kConfigLoaders) / sizeof(kConfigLoaders[0]);

struct LoaderShared {
  LWLock *lock;
  int32 loader_pid; /* 0 when no loader runs */
  bool ready;
  pg_atomic_uint64 generation;
};

LoaderShared *loader_shared = nullptr;

/* -- the sampler's side ----------------------------------------------------- */

BackgroundWorkerHandle *loader_handle = nullptr;
TimestampTz next_database_check = 0;
bool logged_missing_database = false;
bool logged_no_slot = false;

/*
 * Does warden.database exist? A heap scan of pg_database, like the
 * autovacuum launcher's: with no database selected, the relcache may not
 * have the shared catalogs' indexes yet, so no syscache/index lookup here.
 */
bool DatabaseExists(const char *name) {
  bool found = false;
  Relation rel = table_open(DatabaseRelationId, AccessShareLock);
  TableScanDesc scan = table_beginscan_catalog(rel, 0, nullptr);
  HeapTuple tup;
  while (!found && HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
    found = strcmp(NameStr(reinterpret_cast<Form_pg_database>(GETSTRUCT(tup))->datname), name) == 0;
  table_endscan(scan);
  table_close(rel, AccessShareLock);
  return found;
}

bool LoaderRunning() {
  LWLockAcquire(loader_shared->lock, LW_SHARED);
  const int32 pid = loader_shared->loader_pid;
  LWLockRelease(loader_shared->lock);
  return pid != 0 && kill(pid, 0) == 0;
}

/* -- the loader's side ------------------------------------------------------ */

volatile bool config_stale = true;
Oid watched[kNumLoaders];
bool logged_missing_extension = false;

void OnRelcacheInvalidation(Datum, Oid relid) {
  if (relid == InvalidOid) {
    config_stale = true;
    return;
  }
  for (int i = 0; i < kNumLoaders; i++)
    if (watched[i] == relid) config_stale = true;
}

void OnRoleInvalidation(Datum, int, uint32) { config_stale = true; }

void ClearLoaderPid(int, Datum) {
  LWLockAcquire(loader_shared->lock, LW_EXCLUSIVE);
  if (loader_shared->loader_pid == MyProcPid) loader_shared->loader_pid = 0;
  LWLockRelease(loader_shared->lock);
}

/* Inside a transaction; takes the snapshot it reads the tables with. */
void LoadAll() {
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
    for (int i = 0; i < kNumLoaders; i++) {
      watched[i] = InvalidOid;
      kConfigLoaders[i].clear();
    }
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
    for (int i = 0; i < kNumLoaders; i++)
      watched[i] = get_relname_relid(kConfigLoaders[i].table, nsp);
    PushActiveSnapshot(GetTransactionSnapshot());
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "pg_warden loader: SPI_connect failed");
    for (int i = 0; i < kNumLoaders; i++) {
      if (OidIsValid(watched[i]))
        kConfigLoaders[i].load();
      else
        kConfigLoaders[i].clear();
    }
    SPI_finish();
    PopActiveSnapshot();
  }
  LWLockAcquire(loader_shared->lock, LW_EXCLUSIVE);
  loader_shared->ready = true;
  LWLockRelease(loader_shared->lock);
  pg_atomic_fetch_add_u64(&loader_shared->generation, 1);

  /* Wake the sampler: it applies the new configuration now, not at its next tick. */
  LWLockAcquire(tracking->sample_lock, LW_SHARED);
  const int32 sampler_pid = tracking->worker_pid;
  LWLockRelease(tracking->sample_lock);
  PGPROC *sampler = sampler_pid != 0 ? BackendPidGetProc(sampler_pid) : nullptr;
  if (sampler != nullptr) SetLatch(&sampler->procLatch);
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

  for (int i = 0; i < kNumLoaders; i++) watched[i] = InvalidOid;
  CacheRegisterRelcacheCallback(OnRelcacheInvalidation, 0);
  CacheRegisterSyscacheCallback(AUTHOID, OnRoleInvalidation, 0);
  CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, OnRoleInvalidation, 0);
  ereport(LOG, (errmsg("pg_warden loader started in database \"%s\"", guc_database)));

  for (;;) {
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      ProcessConfigFile(PGC_SIGHUP);
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
}

bool ConfigReady() {
  if (loader_shared == nullptr) return false;
  LWLockAcquire(loader_shared->lock, LW_SHARED);
  const bool ready = loader_shared->ready;
  LWLockRelease(loader_shared->lock);
  return ready;
}

uint64 ConfigGeneration() {
  return loader_shared == nullptr ? 0 : pg_atomic_read_u64(&loader_shared->generation);
}

void ManageLoader(TimestampTz now) {
  if (loader_handle != nullptr) {
    pid_t pid;
    const BgwHandleStatus st = GetBackgroundWorkerPid(loader_handle, &pid);
    if (st == BGWH_STARTED || st == BGWH_NOT_YET_STARTED) return;
    pfree(loader_handle);
    loader_handle = nullptr;
    /* it exited: give it a moment before starting it again */
    next_database_check = now + 2 * USECS_PER_SEC;
  }
  if (now < next_database_check) return;
  next_database_check = now + 5 * USECS_PER_SEC;
  if (LoaderRunning()) return; /* started by an earlier life of this worker */

  MemoryContext caller_context = CurrentMemoryContext;
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  const bool exists = DatabaseExists(guc_database);
  CommitTransactionCommand();
  MemoryContextSwitchTo(caller_context);
  if (!exists) {
    if (!logged_missing_database)
      ereport(LOG, (errmsg("pg_warden: database \"%s\" (warden.database) does not exist; "
                           "idle policies and budgets are not loaded, usage is still tracked",
                           guc_database)));
    logged_missing_database = true;
    return;
  }
  logged_missing_database = false;

  BackgroundWorker worker;
  memset(&worker, 0, sizeof(worker));
  worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  worker.bgw_start_time = BgWorkerStart_ConsistentState;
  worker.bgw_restart_time = BGW_NEVER_RESTART; /* this function restarts it */
  strlcpy(worker.bgw_library_name, "pg_warden", BGW_MAXLEN);
  strlcpy(worker.bgw_function_name, "warden_loader_main", BGW_MAXLEN);
  strlcpy(worker.bgw_name, "pg_warden loader", BGW_MAXLEN);
  strlcpy(worker.bgw_type, "pg_warden loader", BGW_MAXLEN);
  worker.bgw_notify_pid = MyProcPid;
  MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
  const bool ok = RegisterDynamicBackgroundWorker(&worker, &loader_handle);
  MemoryContextSwitchTo(old);
  if (!ok) {
    loader_handle = nullptr;
    if (!logged_no_slot)
      ereport(LOG, (errmsg("pg_warden: could not start the loader worker"),
                    errhint("Raise max_worker_processes.")));
    logged_no_slot = true;
    return;
  }
  logged_no_slot = false;
}

}  // namespace warden

extern "C" void warden_loader_main(Datum) {
  warden::Guard("warden_loader_main", [] { warden::LoaderMain(); });
}
