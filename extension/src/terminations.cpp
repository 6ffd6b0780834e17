/*
 * terminations.cpp — the terminations ring (see terminations.hpp), the one
 * way to terminate and record a session (TerminateAndRecord: idle policies
 * in the sampler, terminate_idle in a backend), the warden.terminations()
 * SRF and warden.record_action(). Locks: terminations_lock, never held while
 * building tuples or ereporting; ProcArrayLock through BackendPidGetProc.
 */
#include "pg_warden/terminations.hpp"

#include "pg_warden/boundary.hpp"
#include "pg_warden/usage.hpp"
#include "pg_warden/validate.hpp"

namespace warden {
namespace {

constexpr const char *kSaveFile = "pg_warden_terminations.dat";
constexpr uint32 kFileMagic = 0x57445452; /* "WDTR" */
constexpr uint32 kFileVersion = 1;

/* CRC-32C of the saved counter and ring: a damaged file is not loaded. */
pg_crc32c RingChecksum(uint64 appended, const TerminationRecord *ring) {
  pg_crc32c crc;
  INIT_CRC32C(crc);
  COMP_CRC32C(crc, &appended, sizeof(appended));
  COMP_CRC32C(crc, ring, sizeof(TerminationRecord) * kTerminationsRing);
  FIN_CRC32C(crc);
  return crc;
}

struct TerminationsShared {
  LWLock *lock;
  uint64 appended; /* records ever appended; ring[appended % size] is next */
  TerminationRecord ring[kTerminationsRing];
};

TerminationsShared *ring_shared = nullptr;

const char *SourceName(TerminationSource s) {
  switch (s) {
    case TerminationSource::kPolicy:
      return "policy";
    case TerminationSource::kManual:
      return "manual";
    case TerminationSource::kDaemon:
      return "daemon";
  }
  return "policy";
}

/* Postmaster, clean shutdown only: write the ring for the next start. */
void SaveRing(int code, Datum) {
  if (code != 0 || ring_shared == nullptr) return;
  char tmp[MAXPGPATH];
  snprintf(tmp, sizeof(tmp), "%s.tmp", kSaveFile);
  FILE *f = AllocateFile(tmp, PG_BINARY_W);
  if (f == nullptr) {
    ereport(LOG, (errcode_for_file_access(), errmsg("pg_warden: could not write \"%s\": %m", tmp)));
    return;
  }
  const uint32 header[3] = {kFileMagic, kFileVersion,
                            static_cast<uint32>(sizeof(TerminationRecord))};
  const uint64 appended = ring_shared->appended;
  const pg_crc32c crc = RingChecksum(appended, ring_shared->ring);
  bool ok = fwrite(header, sizeof(header), 1, f) == 1 &&
            fwrite(&appended, sizeof(appended), 1, f) == 1 &&
            fwrite(ring_shared->ring, sizeof(ring_shared->ring), 1, f) == 1 &&
            fwrite(&crc, sizeof(crc), 1, f) == 1;
  ok = (FreeFile(f) == 0) && ok;
  if (!ok || durable_rename(tmp, kSaveFile, LOG) != 0) {
    ereport(LOG, (errmsg("pg_warden: could not save the terminations ring to \"%s\"", kSaveFile)));
    unlink(tmp);
  }
}

/* Postmaster, at shared memory creation: load and remove the saved ring. */
void LoadRing() {
  FILE *f = AllocateFile(kSaveFile, PG_BINARY_R);
  if (f == nullptr) return; /* none saved: normal after initdb or a crash */
  uint32 header[3] = {0, 0, 0};
  uint64 appended = 0;
  pg_crc32c crc = 0;
  const bool ok = fread(header, sizeof(header), 1, f) == 1 && header[0] == kFileMagic &&
                  header[1] == kFileVersion && header[2] == sizeof(TerminationRecord) &&
                  fread(&appended, sizeof(appended), 1, f) == 1 &&
                  fread(ring_shared->ring, sizeof(ring_shared->ring), 1, f) == 1 &&
                  fread(&crc, sizeof(crc), 1, f) == 1 &&
                  EQ_CRC32C(crc, RingChecksum(appended, ring_shared->ring)) && fgetc(f) == EOF;
  FreeFile(f);
  if (ok) {
    ring_shared->appended = appended;
  } else {
    memset(ring_shared->ring, 0, sizeof(ring_shared->ring));
    ring_shared->appended = 0;
    ereport(LOG, (errmsg("pg_warden: ignoring corrupt terminations file \"%s\"", kSaveFile)));
  }
  unlink(kSaveFile);
}

/* SIGTERM, as pg_terminate_backend sends it, to the same session only. */
bool SignalTerminate(int32 pid, Oid roleid) {
  PGPROC *proc = BackendPidGetProc(pid);
  if (proc == nullptr || proc->roleId != roleid) return false;
#ifdef HAVE_SETSID
  if (kill(-pid, SIGTERM) == 0) return true;
#endif
  return kill(pid, SIGTERM) == 0;
}

void LogDecision(const TerminationRecord &r) {
  const char *by = r.policy[0] ? r.policy : "terminate_idle";
  if (r.dry_run)
    ereport(LOG, (errmsg("pg_warden: dry run: would terminate session %d of application \"%s\", "
                         "role \"%s\", database \"%s\": %s for %.3f s (%s \"%s\")",
                         r.pid, r.application, r.role, r.database, r.state, r.idle_seconds,
                         r.policy[0] ? "policy" : "by", by)));
  else
    ereport(LOG, (errmsg("pg_warden: terminated session %d of application \"%s\", role \"%s\", "
                         "database \"%s\": %s for %.3f s (%s \"%s\")",
                         r.pid, r.application, r.role, r.database, r.state, r.idle_seconds,
                         r.policy[0] ? "policy" : "by", by)));
}

void CountTerminated(int32 entry) {
  if (entry >= 0 && static_cast<uint32>(entry) < pg_atomic_read_u32(&usage->used))
    pg_atomic_fetch_add_u64(&usage->entries[entry].terminated, 1);
}

}  // namespace

bool TerminateAndRecord(TerminationRecord *rec, Oid roleid, TimestampTz state_start, int32 entry) {
  rec->at = GetCurrentTimestamp(); /* before the signal: idle_seconds proves it was not early */
  if (!rec->dry_run && !SignalTerminate(rec->pid, roleid)) return false;
  rec->idle_seconds = static_cast<double>(rec->at - state_start) / USECS_PER_SEC;
  RecordTermination(*rec);
  if (!rec->dry_run) CountTerminated(entry);
  LogDecision(*rec);
  return true;
}

Size TerminationsShmemSize() { return MAXALIGN(sizeof(TerminationsShared)); }

void TerminationsShmemInit() {
  bool found = false;
  ring_shared = static_cast<TerminationsShared *>(
      ShmemInitStruct("pg_warden terminations", TerminationsShmemSize(), &found));
  if (found) return;
  memset(ring_shared, 0, sizeof(TerminationsShared));
  ring_shared->lock = &GetNamedLWLockTranche("pg_warden")[kTerminationsLock].lock;
  LoadRing();
  if (!IsUnderPostmaster) on_shmem_exit(SaveRing, (Datum)0);
}

void RecordTermination(const TerminationRecord &rec) {
  if (ring_shared == nullptr) return;
  LWLockAcquire(ring_shared->lock, LW_EXCLUSIVE);
  ring_shared->ring[ring_shared->appended % kTerminationsRing] = rec;
  ring_shared->appended++;
  LWLockRelease(ring_shared->lock);
}

void PutTerminationRow(ReturnSetInfo *rsinfo, const TerminationRecord &r) {
  Datum values[11];
  bool nulls[11] = {false};
  values[0] = TimestampTzGetDatum(r.at);
  values[1] = Int32GetDatum(r.pid);
  values[2] = NameGetDatum(const_cast<NameData *>(reinterpret_cast<const NameData *>(r.database)));
  values[3] = NameGetDatum(const_cast<NameData *>(reinterpret_cast<const NameData *>(r.role)));
  values[4] = CStringGetTextDatum(r.application);
  if (r.client_addr[0] != '\0')
    values[5] = DirectFunctionCall1(inet_in, CStringGetDatum(r.client_addr));
  else
    nulls[5] = true;
  values[6] = CStringGetTextDatum(r.state);
  values[7] = Float8GetDatum(r.idle_seconds);
  if (r.policy[0] != '\0')
    values[8] = CStringGetTextDatum(r.policy);
  else
    nulls[8] = true;
  values[9] = CStringGetTextDatum(SourceName(r.source));
  values[10] = BoolGetDatum(r.dry_run);
  tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

}  // namespace warden

using namespace warden;

WARDEN_FUNCTION(terminations) {
  RequirePreloaded();
  InitMaterializedSRF(fcinfo, 0);
  ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
  TerminationRecord *rows =
      static_cast<TerminationRecord *>(palloc(sizeof(TerminationRecord) * kTerminationsRing));
  LWLockAcquire(ring_shared->lock, LW_SHARED);
  const uint64 appended = ring_shared->appended;
  const uint64 first = appended > kTerminationsRing ? appended - kTerminationsRing : 0;
  int n = 0;
  for (uint64 i = first; i < appended; i++) rows[n++] = ring_shared->ring[i % kTerminationsRing];
  LWLockRelease(ring_shared->lock);
  for (int i = 0; i < n; i++) PutTerminationRow(rsinfo, rows[i]);
  return (Datum)0;
}

/*
 * record_action(pid, database, role, application, state, idle_seconds,
 *               action, dry_run, client_addr): the daemon's own decisions,
 * recorded with source 'daemon'; `action` goes to the policy column.
 */
WARDEN_FUNCTION(record_action) {
  RequirePreloaded();
  TerminationRecord rec;
  memset(&rec, 0, sizeof(rec));
  RequireArgument(fcinfo, 0, "pid");
  RequireArgument(fcinfo, 6, "action");
  if (PG_GETARG_INT32(0) < 0)
    InvalidArgument("pid", "must not be negative", nullptr,
                    "Use 0 for an action that concerns no session.");
  if (!PG_ARGISNULL(5) && !(PG_GETARG_FLOAT8(5) >= 0.0 && PG_GETARG_FLOAT8(5) < 1e12))
    InvalidArgument("idle_seconds", "must be a finite, non-negative number");
  RequireArgument(fcinfo, 7, "dry_run");
  /* Text that would not fit is refused rather than cut short. */
  TextArgument(fcinfo, 3, "application", rec.application, sizeof(rec.application));
  TextArgument(fcinfo, 4, "state", rec.state, sizeof(rec.state));
  TextArgument(fcinfo, 6, "action", rec.policy, sizeof(rec.policy));
  rec.at = GetCurrentTimestamp();
  rec.pid = PG_GETARG_INT32(0);
  if (!PG_ARGISNULL(1)) strlcpy(rec.database, NameStr(*PG_GETARG_NAME(1)), NAMEDATALEN);
  if (!PG_ARGISNULL(2)) strlcpy(rec.role, NameStr(*PG_GETARG_NAME(2)), NAMEDATALEN);
  rec.idle_seconds = PG_ARGISNULL(5) ? 0.0 : PG_GETARG_FLOAT8(5);
  rec.dry_run = PG_GETARG_BOOL(7);
  if (!PG_ARGISNULL(8)) {
    char *addr = DatumGetCString(DirectFunctionCall1(inet_out, PG_GETARG_DATUM(8)));
    /* host part only, as pg_stat_activity shows it */
    char *slash = strchr(addr, '/');
    if (slash) *slash = '\0';
    strlcpy(rec.client_addr, addr, sizeof(rec.client_addr));
  }
  rec.source = TerminationSource::kDaemon;
  RecordTermination(rec);
  PG_RETURN_VOID();
}
