/*
 * terminations.cpp — the terminations ring (see terminations.hpp), the
 * warden.terminations() SRF and warden.record_action(). Locks:
 * terminations_lock only, never held while building tuples or ereporting.
 */
#include "pg_warden/terminations.hpp"

#include "pg_warden/boundary.hpp"
#include "pg_warden/tracking.hpp"

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

}  // namespace

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

void FormatClientAddr(const SockAddr &addr, char *out, size_t size) {
  out[0] = '\0';
  if (addr.salen == 0) return;
  const int family = addr.addr.ss_family;
  if (family != AF_INET && family != AF_INET6) return;
  char host[NI_MAXHOST];
  host[0] = '\0';
  if (pg_getnameinfo_all(&addr.addr, addr.salen, host, sizeof(host), nullptr, 0,
                         NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return;
  clean_ipv6_addr(family, host);
  strlcpy(out, host, size);
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
  RequireTracking();
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
  RequireTracking();
  TerminationRecord rec;
  memset(&rec, 0, sizeof(rec));
  if (PG_ARGISNULL(0))
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("invalid value for \"pid\": must not be NULL")));
  if (PG_ARGISNULL(6))
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("invalid value for \"action\": must not be NULL")));
  if (PG_GETARG_INT32(0) < 0)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("invalid value for \"pid\": must not be negative"),
                    errhint("Use 0 for an action that concerns no session.")));
  if (!PG_ARGISNULL(5) && !(PG_GETARG_FLOAT8(5) >= 0.0 && PG_GETARG_FLOAT8(5) < 1e12))
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
             errmsg("invalid value for \"idle_seconds\": must be a finite, non-negative number")));
  if (PG_ARGISNULL(7))
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("invalid value for \"dry_run\": must not be NULL")));
  /* Text that would not fit is refused rather than cut short. */
  struct {
    int arg;
    const char *name;
    size_t size;
  } const texts[] = {{3, "application", sizeof(rec.application)},
                     {4, "state", sizeof(rec.state)},
                     {6, "action", sizeof(rec.policy)}};
  for (const auto &t : texts)
    if (!PG_ARGISNULL(t.arg) &&
        VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(t.arg)) >= static_cast<Size>(t.size))
      ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                      errmsg("invalid value for \"%s\": longer than %d bytes", t.name,
                             static_cast<int>(t.size) - 1)));
  rec.at = GetCurrentTimestamp();
  rec.pid = PG_GETARG_INT32(0);
  if (!PG_ARGISNULL(1)) strlcpy(rec.database, NameStr(*PG_GETARG_NAME(1)), NAMEDATALEN);
  if (!PG_ARGISNULL(2)) strlcpy(rec.role, NameStr(*PG_GETARG_NAME(2)), NAMEDATALEN);
  if (!PG_ARGISNULL(3)) text_to_cstring_buffer(PG_GETARG_TEXT_PP(3), rec.application, NAMEDATALEN);
  if (!PG_ARGISNULL(4)) text_to_cstring_buffer(PG_GETARG_TEXT_PP(4), rec.state, sizeof(rec.state));
  rec.idle_seconds = PG_ARGISNULL(5) ? 0.0 : PG_GETARG_FLOAT8(5);
  text_to_cstring_buffer(PG_GETARG_TEXT_PP(6), rec.policy, NAMEDATALEN);
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
