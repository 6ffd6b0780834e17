/*
 * loader_launch.cpp — the sampler's side of the loader (see loader.hpp):
 * checks that warden.database exists (a heap scan of pg_database in a short
 * transaction), starts the "pg_warden loader" worker and restarts it if it
 * exits. Runs in the sampler only. Locks: config_lock (shared, through
 * LoaderPid).
 */
#include "pg_warden/loader.hpp"

#include "pg_warden/guc.hpp"

namespace warden {
namespace {

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
  const int32 pid = LoaderPid();
  return pid != 0 && kill(pid, 0) == 0;
}

}  // namespace

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
  if (LoaderRunning()) return; /* started by an earlier life of the sampler */

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
