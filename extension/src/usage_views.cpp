/*
 * usage_views.cpp — the set-returning functions behind warden.app_usage,
 * warden.server_usage and warden.backends, reset_stats, worker_stats (the
 * sampler's cost), assert_preloaded, and the foreign data wrapper behind the
 * foreign table warden.app_usage. Runs in client backends only. Readers copy what they need under
 * sample_lock (shared) into local memory, release it, and only then build tuples. Keys are read
 * without keys_lock: an entry's key is written before `used` covers it
 * (write barrier) and never changes afterwards. Locks: sample_lock (shared).
 */
#include "pg_warden/boundary.hpp"
#include "pg_warden/guc.hpp"
#include "pg_warden/usage.hpp"

namespace warden {
namespace {

struct AppRow {
  UsageKey key;
  bool in_use;
  int32 connections, active, idle, idle_in_transaction, peak;
  double longest_idle;
  double longest_idle_in_transaction;
  TimestampTz peak_at;
  int64 opened, refused, terminated;
};

struct BackendRow {
  SampledBackend sample;
  UsageKey key;
};

Datum TimestampOrNull(TimestampTz t, bool *isnull) {
  *isnull = (t == 0);
  return TimestampTzGetDatum(t);
}

Datum ClientAddr(const SockAddr &addr, bool *isnull) {
  char host[NI_MAXHOST];
  FormatClientAddr(addr, host, sizeof(host));
  *isnull = (host[0] == '\0');
  return *isnull ? (Datum)0 : DirectFunctionCall1(inet_in, CStringGetDatum(host));
}

double UsagePercent(int64 connections) {
  const int usable = MaxConnections - ReservedBackends;
  return usable > 0 ? 100.0 * static_cast<double>(connections) / usable : 100.0;
}

/* 1.1 added longest_idle_in_transaction_seconds; a 1.0 install has the first 13. */
constexpr int kAppUsageColumns = 14;
constexpr int kAppUsageColumns10 = 13;

/* Copies the usage table under sample_lock (shared) into palloc'd rows. */
uint32 SnapshotAppRows(AppRow **out) {
  const uint32 used = pg_atomic_read_u32(&usage->used);
  pg_read_barrier();
  AppRow *rows = static_cast<AppRow *>(palloc(sizeof(AppRow) * Max(used, 1u)));
  LWLockAcquire(usage->sample_lock, LW_SHARED);
  for (uint32 i = 0; i < used; i++) {
    UsageEntry &e = usage->entries[i];
    AppRow &r = rows[i];
    r.key = e.key;
    r.in_use = e.in_use;
    r.connections = static_cast<int32>(pg_atomic_read_u32(&e.connections));
    r.peak = static_cast<int32>(pg_atomic_read_u32(&e.peak_connections));
    r.peak_at = static_cast<TimestampTz>(pg_atomic_read_u64(&e.peak_at));
    r.opened = static_cast<int64>(pg_atomic_read_u64(&e.opened));
    r.refused = static_cast<int64>(pg_atomic_read_u64(&e.refused));
    r.terminated = static_cast<int64>(pg_atomic_read_u64(&e.terminated));
    r.active = e.active;
    r.idle = e.idle;
    r.idle_in_transaction = e.idle_in_transaction;
    r.longest_idle = e.longest_idle_seconds;
    r.longest_idle_in_transaction = e.longest_idle_in_transaction_seconds;
  }
  LWLockRelease(usage->sample_lock);
  *out = rows;
  return used;
}

/* Entries not (yet) given to a key. */
bool AppRowHidden(const AppRow &r, uint32) { return !r.in_use; }

/* One app_usage row as datums; names point into r, the text is palloc'd. */
void AppRowValues(const AppRow &r, uint32 index, Datum *values, bool *nulls) {
  for (int i = 0; i < kAppUsageColumns; i++) nulls[i] = false;
  values[0] =
      NameGetDatum(const_cast<NameData *>(reinterpret_cast<const NameData *>(r.key.database)));
  values[1] = NameGetDatum(const_cast<NameData *>(reinterpret_cast<const NameData *>(r.key.role)));
  values[2] = CStringGetTextDatum(r.key.application);
  values[3] = Int32GetDatum(r.connections);
  values[4] = Int32GetDatum(r.active);
  values[5] = Int32GetDatum(r.idle);
  values[6] = Int32GetDatum(r.idle_in_transaction);
  values[7] = Float8GetDatum(r.longest_idle);
  values[8] = Int32GetDatum(r.peak);
  values[9] = TimestampOrNull(r.peak_at, &nulls[9]);
  values[10] = Int64GetDatum(r.opened);
  values[11] = Int64GetDatum(r.refused);
  values[12] = Int64GetDatum(r.terminated);
}

/* The 1.1 column, where the row has room for it (not in a 1.0 install). */
void AppRowValues11(const AppRow &r, int natts, Datum *values, bool *nulls) {
  if (natts < kAppUsageColumns) return;
  values[13] = Float8GetDatum(r.longest_idle_in_transaction);
  nulls[13] = false;
}

}  // namespace
}  // namespace warden

using namespace warden;

WARDEN_FUNCTION(app_usage) {
  RequirePreloaded();
  InitMaterializedSRF(fcinfo, 0);
  ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
  AppRow *rows;
  const uint32 used = SnapshotAppRows(&rows);
  for (uint32 i = 0; i < used; i++) {
    if (AppRowHidden(rows[i], i)) continue;
    Datum values[kAppUsageColumns];
    bool nulls[kAppUsageColumns];
    AppRowValues(rows[i], i, values, nulls);
    AppRowValues11(rows[i], kAppUsageColumns, values, nulls);
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
  }
  return (Datum)0;
}

WARDEN_FUNCTION(server_usage) {
  RequirePreloaded();
  TupleDesc tupdesc;
  if (get_call_result_type(fcinfo, nullptr, &tupdesc) != TYPEFUNC_COMPOSITE)
    ereport(ERROR,
            (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("return type must be a row type")));
  const uint32 used = pg_atomic_read_u32(&usage->used);
  int64 connections = 0;
  for (uint32 i = 0; i < used; i++)
    connections += pg_atomic_read_u32(&usage->entries[i].connections);
  LWLockAcquire(usage->sample_lock, LW_SHARED);
  const TimestampTz sampled_at = usage->sampled_at;
  const int32 worker_pid = usage->sampler_pid;
  LWLockRelease(usage->sample_lock);

  const double usage = UsagePercent(connections);
  const char *status = usage >= guc_unhealthy_percent  ? "unhealthy"
                       : usage >= guc_degraded_percent ? "degraded"
                                                       : "healthy";
  Datum values[8];
  bool nulls[8] = {false};
  values[0] = Int32GetDatum(static_cast<int32>(connections));
  values[1] = Int32GetDatum(MaxConnections);
  values[2] = Int32GetDatum(ReservedBackends);
  values[3] = Float8GetDatum(usage);
  values[4] = CStringGetTextDatum(status);
  values[5] = TimestampOrNull(sampled_at, &nulls[5]);
  values[6] = Int32GetDatum(worker_pid);
  nulls[6] = (worker_pid == 0);
  values[7] = BoolGetDatum(RecoveryInProgress());
  HeapTuple tuple = heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls);
  return HeapTupleGetDatum(tuple);
}

WARDEN_FUNCTION(backends) {
  RequirePreloaded();
  InitMaterializedSRF(fcinfo, 0);
  ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
  BackendRow *rows = static_cast<BackendRow *>(
      palloc(sizeof(BackendRow) * static_cast<Size>(usage->max_backends)));
  LWLockAcquire(usage->sample_lock, LW_SHARED);
  const int32 n = usage->nsampled;
  const TimestampTz sampled_at = usage->sampled_at;
  const SampledBackend *sampled = usage->sampled[usage->current_buffer];
  for (int32 i = 0; i < n; i++) {
    rows[i].sample = sampled[i];
    rows[i].key = sampled[i].key; /* the real key, never a folded row */
  }
  LWLockRelease(usage->sample_lock);

  for (int32 i = 0; i < n; i++) {
    const BackendRow &r = rows[i];
    Datum values[9];
    bool nulls[9] = {false};
    values[0] = Int32GetDatum(r.sample.pid);
    values[1] =
        NameGetDatum(const_cast<NameData *>(reinterpret_cast<const NameData *>(r.key.database)));
    values[2] =
        NameGetDatum(const_cast<NameData *>(reinterpret_cast<const NameData *>(r.key.role)));
    values[3] = CStringGetTextDatum(r.key.application);
    values[4] = ClientAddr(r.sample.client_addr, &nulls[4]);
    values[5] = CStringGetTextDatum(SessionStateName(r.sample.state));
    values[6] = Float8GetDatum(r.sample.state_start == 0
                                   ? 0.0
                                   : static_cast<double>(sampled_at - r.sample.state_start) /
                                         USECS_PER_SEC);
    nulls[6] = (r.sample.state_start == 0);
    values[7] = TimestampOrNull(r.sample.backend_start, &nulls[7]);
    values[8] = TimestampOrNull(r.sample.xact_start, &nulls[8]);
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
  }
  return (Datum)0;
}

WARDEN_FUNCTION(reset_stats) {
  RequirePreloaded();
  const uint32 used = pg_atomic_read_u32(&usage->used);
  const TimestampTz now = GetCurrentTimestamp();
  for (uint32 i = 0; i < used; i++) {
    UsageEntry &e = usage->entries[i];
    const uint32 connections = pg_atomic_read_u32(&e.connections);
    pg_atomic_write_u32(&e.peak_connections, connections);
    pg_atomic_write_u64(&e.peak_at, connections > 0 ? static_cast<uint64>(now) : 0);
    pg_atomic_write_u64(&e.opened, 0);
    pg_atomic_write_u64(&e.refused, 0);
    pg_atomic_write_u64(&e.terminated, 0);
  }
  PG_RETURN_VOID();
}

WARDEN_FUNCTION(worker_stats) {
  RequirePreloaded();
  TupleDesc tupdesc;
  if (get_call_result_type(fcinfo, nullptr, &tupdesc) != TYPEFUNC_COMPOSITE)
    ereport(ERROR,
            (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("return type must be a row type")));
  LWLockAcquire(usage->sample_lock, LW_SHARED);
  const uint64 samples = usage->samples;
  const double last_ms = usage->last_sample_ms;
  const double total_ms = usage->total_sample_ms;
  const int32 nsampled = usage->nsampled;
  LWLockRelease(usage->sample_lock);
  const uint32 used = pg_atomic_read_u32(&usage->used);
  Datum values[6];
  bool nulls[6] = {false};
  values[0] = Int64GetDatum(static_cast<int64>(samples));
  values[1] = Float8GetDatum(last_ms);
  values[2] = Float8GetDatum(samples > 0 ? total_ms / static_cast<double>(samples) : 0.0);
  values[3] = Int32GetDatum(nsampled);
  values[4] = Int32GetDatum(static_cast<int32>(used));
  values[5] = Int32GetDatum(usage->capacity);
  HeapTuple tuple = heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls);
  return HeapTupleGetDatum(tuple);
}

WARDEN_FUNCTION(assert_preloaded) {
  RequirePreloaded();
  PG_RETURN_VOID();
}

/*
 * The foreign data wrapper behind the foreign table warden.app_usage.
 *
 * A view over warden.app_usage() costs PostgreSQL 15 about 70,000
 * instructions per query on its own (the rewriter copies the view's query
 * tree and the planner copies it again to pull the subquery up): more than
 * half of what reading the same rows from a plain table costs. A foreign
 * table is planned and executed as a base relation, like that table, so
 * `SELECT * FROM warden.app_usage` costs what a read of the rows from a
 * small table costs (docs/benchmarks.md). The scan copies the usage table
 * under sample_lock at executor start, exactly like warden.app_usage().
 */
namespace warden {
namespace {

struct AppUsageScan {
  AppRow *rows;
  uint32 nrows;
  uint32 next;
};

constexpr Oid kAppUsageTypes[kAppUsageColumns] = {
    NAMEOID,   NAMEOID, TEXTOID,        INT4OID, INT4OID, INT4OID, INT4OID,
    FLOAT8OID, INT4OID, TIMESTAMPTZOID, INT8OID, INT8OID, INT8OID, FLOAT8OID};

/* A foreign table of this wrapper must have app_usage's columns, in order. */
void CheckAppUsageShape(Relation rel) {
  TupleDesc desc = RelationGetDescr(rel);
  bool ok = desc->natts == kAppUsageColumns || desc->natts == kAppUsageColumns10;
  for (int i = 0; ok && i < desc->natts; i++) {
    Form_pg_attribute att = TupleDescAttr(desc, i);
    ok = !att->attisdropped && att->atttypid == kAppUsageTypes[i];
  }
  if (!ok)
    ereport(ERROR,
            (errcode(ERRCODE_DATATYPE_MISMATCH),
             errmsg("foreign table \"%s\" does not have the columns of warden.app_usage",
                    RelationGetRelationName(rel)),
             errhint("Only warden.app_usage, created by the extension, uses this wrapper.")));
}

void UsageGetRelSize(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid) {
  Guard("usage_fdw_rel_size",
        [baserel] { baserel->rows = usage ? Max(pg_atomic_read_u32(&usage->used), 1u) : 1; });
}

void UsageGetPaths(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid) {
  Guard("usage_fdw_paths", [root, baserel] {
    const Cost total = baserel->rows * cpu_tuple_cost;
    add_path(baserel, reinterpret_cast<Path *>(
                          create_foreignscan_path(root, baserel, nullptr, baserel->rows, 0, total,
                                                  NIL, baserel->lateral_relids, nullptr, NIL)));
  });
}

ForeignScan *UsageGetPlan(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid,
                          ForeignPath *best_path, List *tlist, List *scan_clauses,
                          Plan *outer_plan) {
  return Guard("usage_fdw_plan", [baserel, tlist, scan_clauses, outer_plan] {
    /* No remote side: every qual is checked locally by the scan node. */
    List *quals = extract_actual_clauses(scan_clauses, false);
    return make_foreignscan(tlist, quals, baserel->relid, NIL, NIL, NIL, NIL, outer_plan);
  });
}

void UsageBeginScan(ForeignScanState *node, int eflags) {
  Guard("usage_fdw_begin", [node, eflags] {
    CheckAppUsageShape(node->ss.ss_currentRelation);
    if (eflags & EXEC_FLAG_EXPLAIN_ONLY) return;
    RequirePreloaded();
    AppUsageScan *scan = static_cast<AppUsageScan *>(palloc0(sizeof(AppUsageScan)));
    scan->nrows = SnapshotAppRows(&scan->rows);
    node->fdw_state = scan;
  });
}

TupleTableSlot *UsageIterate(ForeignScanState *node) {
  return Guard("usage_fdw_iterate", [node] {
    TupleTableSlot *slot = node->ss.ss_ScanTupleSlot;
    AppUsageScan *scan = static_cast<AppUsageScan *>(node->fdw_state);
    ExecClearTuple(slot);
    while (scan->next < scan->nrows && AppRowHidden(scan->rows[scan->next], scan->next))
      scan->next++;
    if (scan->next >= scan->nrows) return slot;
    AppRowValues(scan->rows[scan->next], scan->next, slot->tts_values, slot->tts_isnull);
    AppRowValues11(scan->rows[scan->next], slot->tts_tupleDescriptor->natts, slot->tts_values,
                   slot->tts_isnull);
    scan->next++;
    return ExecStoreVirtualTuple(slot);
  });
}

void UsageReScan(ForeignScanState *node) {
  Guard("usage_fdw_rescan", [node] { static_cast<AppUsageScan *>(node->fdw_state)->next = 0; });
}

void UsageEndScan(ForeignScanState *node) {}

}  // namespace
}  // namespace warden

WARDEN_FUNCTION(usage_fdw_handler) {
  FdwRoutine *routine = makeNode(FdwRoutine);
  routine->GetForeignRelSize = UsageGetRelSize;
  routine->GetForeignPaths = UsageGetPaths;
  routine->GetForeignPlan = UsageGetPlan;
  routine->BeginForeignScan = UsageBeginScan;
  routine->IterateForeignScan = UsageIterate;
  routine->ReScanForeignScan = UsageReScan;
  routine->EndForeignScan = UsageEndScan;
  PG_RETURN_POINTER(routine);
}
