/*
 * history.cpp — usage history per key (minute and hour rings), the rolling
 * histogram of connections in use behind warden.pool_advice, the history file
 * (saved by the postmaster at a clean shutdown, loaded at start) and the
 * set-returning functions behind warden.usage_history, warden.pool_advice and
 * warden.history_stats.
 *
 * Locks: history_lock (see history.hpp); keys_lock through FindOrAddEntry
 * while the postmaster maps the keys of a loaded file (no other process
 * exists yet). Entry keys are read without keys_lock: they never change once
 * `used` covers them.
 */
#include "pg_warden/history.hpp"

#include "pg_warden/boundary.hpp"
#include "pg_warden/guc.hpp"
#include "pg_warden/usage.hpp"

namespace warden {
namespace {

/*
 * Ring lengths, each with one more bucket than the period so that the whole
 * period before the current, unfinished bucket is kept: 24 h of minutes,
 * 7 days of hours, and the percentile window of 7 days of daily histograms.
 */
constexpr int32 kMinutes = 1440 + 1;
constexpr int32 kHours = 168 + 1;
constexpr int32 kDays = 7 + 1;
/* Histogram bins: exact below 32, then 8 bins per power of two up to 65535. */
constexpr int32 kExactBins = 32;
constexpr int32 kBins = kExactBins + 8 * 11;
/* Per-sample counts are clamped to 16 bits (max_connections above it is rare). */
constexpr uint32 kMaxCount = 65535;

/* Headroom of the recommendation over active_p99: ×1.25, then +1. */
constexpr int32 kHeadroomNum = 5;
constexpr int32 kHeadroomDen = 4;
constexpr int32 kHeadroomExtra = 1;

/* One minute of one key. samples ≤ 65535 (a 10 ms interval gives 6000). */
struct MinuteBucket {
  uint16 samples;
  uint16 active_peak;
  uint16 connections_peak;
  uint16 idle_in_transaction_peak;
  uint32 active_sum; /* ≤ 65535 × 65535: fits */
  uint32 connections_sum;
  uint32 idle_in_transaction_sum;
};
static_assert(sizeof(MinuteBucket) == 20, "MinuteBucket is part of the file format");

/* One hour of one key. */
struct HourBucket {
  uint64 active_sum;
  uint64 connections_sum;
  uint64 idle_in_transaction_sum;
  uint32 samples;
  uint16 active_peak;
  uint16 connections_peak;
  uint16 idle_in_transaction_peak;
  uint16 unused;
};
static_assert(sizeof(HourBucket) == 40, "HourBucket is part of the file format");

/*
 * One UTC day of one key: how many samples saw n connections in use (active
 * or idle in transaction), as a histogram, for the percentiles of pool_advice.
 */
struct DayHistogram {
  TimestampTz first_at; /* first sample of the day */
  uint32 samples;
  uint16 in_use_max;
  uint16 connections_max;
  uint32 in_use[kBins];
};

struct HistorySlot {
  int32 entry;       /* usage entry; meaningless in the file */
  int32 last_minute; /* newest minute/hour/day number recorded (since 2000-01-01 UTC) */
  int32 last_hour;
  int32 last_day;
  MinuteBucket minutes[kMinutes];
  HourBucket hours[kHours];
  DayHistogram days[kDays];
};

struct HistoryShared {
  LWLock *lock;
  int32 nslots;     /* warden.history_keys */
  int32 capacity;   /* usage entries covered by slot_of_entry */
  int32 used_slots; /* grows only; under lock */
  int32 loaded_slots;
  uint64 records; /* samples recorded, and their cost */
  double last_record_ms;
  double total_record_ms;
  TimestampTz saved_at; /* the worker's last periodic save, and its cost */
  double last_save_ms;
  int32 *slot_of_entry;
  HistorySlot *slots;
};

HistoryShared *history = nullptr;

/*
 * In pg_stat_tmp, not pg_stat: the file exists while the server runs, and
 * base backups and pg_rewind skip pg_stat_tmp, so a standby made from this
 * server never starts with this server's history. It survives restarts.
 */
constexpr const char *kHistoryFile = "pg_stat_tmp/pg_warden_history.bin";
constexpr const char *kHistoryTmpFile = "pg_stat_tmp/pg_warden_history.bin.tmp";
constexpr uint32 kFileMagic = 0x50574831; /* "PWH1" */
constexpr uint32 kFileVersion = 1;

/* The file: FileHeader, nslots × (UsageKey, HistorySlot), pg_crc32c of all before it. */
struct FileHeader {
  uint32 magic;
  uint32 version;
  uint32 header_size;
  uint32 key_size;
  uint32 slot_size;
  int32 minutes;
  int32 hours;
  int32 days;
  int32 bins;
  int32 nslots;
  TimestampTz saved_at;
};

/* ---- time buckets ---------------------------------------------------------- */

int32 FloorDiv(TimestampTz t, int64 unit) {
  int64 q = t / unit;
  if (t % unit != 0 && t < 0) q--;
  return static_cast<int32>(q);
}

int32 Ring(int32 n, int32 size) {
  const int32 r = n % size;
  return r < 0 ? r + size : r;
}

struct SampleTime {
  TimestampTz at;
  int32 minute, hour, day;
};

SampleTime TimeOf(TimestampTz at) {
  return {at, FloorDiv(at, USECS_PER_MINUTE), FloorDiv(at, USECS_PER_HOUR),
          FloorDiv(at, USECS_PER_DAY)};
}

/* Moves a ring forward to bucket `now`, clearing the buckets it skips. */
template <typename Bucket>
int32 Advance(Bucket *ring, int32 size, int32 last, int32 now) {
  if (now <= last) return last; /* same bucket, or the clock went back: keep the newest */
  const int32 from = (now - last > size) ? now - size + 1 : last + 1;
  for (int32 n = from; n <= now; n++) memset(&ring[Ring(n, size)], 0, sizeof(Bucket));
  return now;
}

uint16 Clamp16(int64 v) {
  if (v <= 0) return 0;
  return v >= kMaxCount ? static_cast<uint16>(kMaxCount) : static_cast<uint16>(v);
}

/* ---- histogram bins ---------------------------------------------------------- */

int32 BinOf(uint32 v) {
  if (v < static_cast<uint32>(kExactBins)) return static_cast<int32>(v);
  const int32 octave = 31 - __builtin_clz(v); /* ≥ 5 */
  return kExactBins + (octave - 5) * 8 + static_cast<int32>((v >> (octave - 3)) & 7);
}

/* The largest value a bin holds. */
int32 BinUpper(int32 bin) {
  if (bin < kExactBins) return bin;
  const int32 k = bin - kExactBins;
  const int32 shift = 5 + k / 8 - 3;
  return ((8 + k % 8) << shift) + (1 << shift) - 1;
}

/* Nearest-rank percentile (the smallest value with at least pct % of the samples at or below). */
int32 Percentile(const uint64 *bins, uint64 total, int32 pct, int32 max) {
  uint64 rank = (total * static_cast<uint64>(pct) + 99) / 100;
  if (rank == 0) rank = 1;
  uint64 seen = 0;
  for (int32 b = 0; b < kBins; b++) {
    seen += bins[b];
    if (seen >= rank) return Min(BinUpper(b), max);
  }
  return max;
}

/* ---- recording (the worker) --------------------------------------------------- */

void InitSlot(HistorySlot *slot, int32 entry, const SampleTime &t) {
  memset(slot, 0, sizeof(HistorySlot));
  slot->entry = entry;
  slot->last_minute = t.minute;
  slot->last_hour = t.hour;
  slot->last_day = t.day;
}

void Record(HistorySlot *slot, const SampleTime &t, uint16 active, uint16 idle_in_transaction,
            uint16 connections) {
  slot->last_minute = Advance(slot->minutes, kMinutes, slot->last_minute, t.minute);
  MinuteBucket &m = slot->minutes[Ring(slot->last_minute, kMinutes)];
  if (m.samples < kMaxCount) {
    m.samples++;
    m.active_sum += active;
    m.connections_sum += connections;
    m.idle_in_transaction_sum += idle_in_transaction;
    m.active_peak = Max(m.active_peak, active);
    m.connections_peak = Max(m.connections_peak, connections);
    m.idle_in_transaction_peak = Max(m.idle_in_transaction_peak, idle_in_transaction);
  }

  slot->last_hour = Advance(slot->hours, kHours, slot->last_hour, t.hour);
  HourBucket &h = slot->hours[Ring(slot->last_hour, kHours)];
  h.samples++;
  h.active_sum += active;
  h.connections_sum += connections;
  h.idle_in_transaction_sum += idle_in_transaction;
  h.active_peak = Max(h.active_peak, active);
  h.connections_peak = Max(h.connections_peak, connections);
  h.idle_in_transaction_peak = Max(h.idle_in_transaction_peak, idle_in_transaction);

  slot->last_day = Advance(slot->days, kDays, slot->last_day, t.day);
  DayHistogram &d = slot->days[Ring(slot->last_day, kDays)];
  const uint16 in_use = Clamp16(static_cast<int64>(active) + idle_in_transaction);
  if (d.samples == 0) d.first_at = t.at;
  d.samples++;
  d.in_use[BinOf(in_use)]++;
  d.in_use_max = Max(d.in_use_max, in_use);
  d.connections_max = Max(d.connections_max, connections);
}

/* ---- the history file ---------------------------------------------------------- */

/*
 * Writes the used slots to kHistoryFile (through a .tmp file and a durable
 * rename). `buffer` null: read shared memory directly (the postmaster at
 * exit, every other process gone, no lock could be taken); otherwise copy
 * each slot into it under the shared lock first (the worker), so the lock is
 * never held during I/O. Problems are LOG lines; false if nothing was saved.
 */
bool WriteHistoryFile(HistorySlot *buffer) {
  FILE *file = AllocateFile(kHistoryTmpFile, PG_BINARY_W);
  if (file == nullptr) {
    ereport(LOG,
            (errcode_for_file_access(),
             errmsg("pg_warden: could not write usage history file \"%s\": %m", kHistoryTmpFile)));
    return false;
  }
  int32 nslots = history->used_slots;
  if (buffer != nullptr) {
    LWLockAcquire(history->lock, LW_SHARED);
    nslots = history->used_slots;
    LWLockRelease(history->lock);
  }
  FileHeader header;
  memset(&header, 0, sizeof(header));
  header.magic = kFileMagic;
  header.version = kFileVersion;
  header.header_size = sizeof(FileHeader);
  header.key_size = sizeof(UsageKey);
  header.slot_size = sizeof(HistorySlot);
  header.minutes = kMinutes;
  header.hours = kHours;
  header.days = kDays;
  header.bins = kBins;
  header.nslots = nslots;
  header.saved_at = GetCurrentTimestamp();

  pg_crc32c crc;
  INIT_CRC32C(crc);
  bool ok = fwrite(&header, sizeof(header), 1, file) == 1;
  COMP_CRC32C(crc, &header, sizeof(header));
  for (int32 i = 0; ok && i < nslots; i++) {
    const HistorySlot *slot = &history->slots[i];
    if (buffer != nullptr) {
      LWLockAcquire(history->lock, LW_SHARED);
      memcpy(buffer, slot, sizeof(HistorySlot));
      LWLockRelease(history->lock);
      slot = buffer;
    }
    /* keys never change once an entry is in use */
    const UsageKey &key = usage->entries[slot->entry].key;
    ok = fwrite(&key, sizeof(UsageKey), 1, file) == 1 &&
         fwrite(slot, sizeof(HistorySlot), 1, file) == 1;
    COMP_CRC32C(crc, &key, sizeof(UsageKey));
    COMP_CRC32C(crc, slot, sizeof(HistorySlot));
  }
  FIN_CRC32C(crc);
  ok = ok && fwrite(&crc, sizeof(crc), 1, file) == 1;
  ok = ok && !ferror(file);
  if (FreeFile(file) != 0) ok = false;
  if (!ok) {
    ereport(LOG,
            (errcode_for_file_access(),
             errmsg("pg_warden: could not write usage history file \"%s\": %m", kHistoryTmpFile)));
    unlink(kHistoryTmpFile);
    return false;
  }
  return durable_rename(kHistoryTmpFile, kHistoryFile, LOG) == 0;
}

/* The postmaster, as it exits. */
void SaveHistoryAtExit(int code, Datum) {
  /* Not after a crash (code != 0): shared memory may be inconsistent. */
  if (code != 0 || history == nullptr || history->nslots == 0 || usage == nullptr) return;
  (void)WriteHistoryFile(nullptr);
}

/* The worker: every warden.history_save_interval, so that a crash loses little. */
TimestampTz next_save_at = 0;
HistorySlot *save_buffer = nullptr;

void MaybeSaveHistory(TimestampTz now) {
  if (guc_history_save_interval <= 0) return;
  const TimestampTz interval = static_cast<TimestampTz>(guc_history_save_interval) * USECS_PER_SEC;
  if (next_save_at == 0 || next_save_at > now + interval) next_save_at = now + interval;
  if (now < next_save_at) return;
  next_save_at = now + interval;
  if (save_buffer == nullptr)
    save_buffer =
        static_cast<HistorySlot *>(MemoryContextAlloc(TopMemoryContext, sizeof(HistorySlot)));
  instr_time start;
  INSTR_TIME_SET_CURRENT(start);
  if (!WriteHistoryFile(save_buffer)) return;
  instr_time elapsed;
  INSTR_TIME_SET_CURRENT(elapsed);
  INSTR_TIME_SUBTRACT(elapsed, start);
  LWLockAcquire(history->lock, LW_EXCLUSIVE);
  history->saved_at = GetCurrentTimestamp();
  history->last_save_ms = INSTR_TIME_GET_MILLISEC(elapsed);
  LWLockRelease(history->lock);
}

void IgnoreFile(FILE *file, const char *why) {
  if (file != nullptr) FreeFile(file);
  ereport(LOG, (errmsg("pg_warden: usage history file \"%s\" ignored: %s", kHistoryFile, why),
                errdetail("Usage history starts empty.")));
  unlink(kHistoryFile);
}

/*
 * Loads the file written at the last shutdown, or by the worker's last
 * periodic save, into the (empty) slots. The file stays: after a crash the
 * history comes back as of the last save. A damaged file is removed.
 * Runs in the postmaster from shmem_startup: any problem is a LOG line,
 * never a failed start.
 */
void LoadHistory() {
  FILE *file = AllocateFile(kHistoryFile, PG_BINARY_R);
  if (file == nullptr) {
    if (errno != ENOENT)
      ereport(LOG,
              (errcode_for_file_access(),
               errmsg("pg_warden: could not read usage history file \"%s\": %m", kHistoryFile)));
    return;
  }
  FileHeader header;
  if (fread(&header, sizeof(header), 1, file) != 1) return IgnoreFile(file, "truncated header");
  if (header.magic != kFileMagic) return IgnoreFile(file, "not a pg_warden history file");
  if (header.version != kFileVersion || header.header_size != sizeof(FileHeader) ||
      header.key_size != sizeof(UsageKey) || header.slot_size != sizeof(HistorySlot) ||
      header.minutes != kMinutes || header.hours != kHours || header.days != kDays ||
      header.bins != kBins)
    return IgnoreFile(file, "written by an incompatible version of pg_warden");
  if (header.nslots < 0 || header.nslots > 10000000) return IgnoreFile(file, "bad key count");

  pg_crc32c crc;
  INIT_CRC32C(crc);
  COMP_CRC32C(crc, &header, sizeof(header));
  const int32 loadable = Min(header.nslots, history->nslots);
  UsageKey *keys = static_cast<UsageKey *>(palloc(sizeof(UsageKey) * Max(loadable, 1)));
  HistorySlot *scratch = nullptr;
  bool ok = true;
  for (int32 i = 0; ok && i < header.nslots; i++) {
    UsageKey key;
    HistorySlot *target = &history->slots[0];
    if (i < loadable) {
      target = &history->slots[i];
    } else {
      if (scratch == nullptr) scratch = static_cast<HistorySlot *>(palloc(sizeof(HistorySlot)));
      target = scratch;
    }
    ok = fread(&key, sizeof(UsageKey), 1, file) == 1 &&
         fread(target, sizeof(HistorySlot), 1, file) == 1;
    if (!ok) break;
    COMP_CRC32C(crc, &key, sizeof(UsageKey));
    COMP_CRC32C(crc, target, sizeof(HistorySlot));
    if (i < loadable) keys[i] = key;
  }
  FIN_CRC32C(crc);
  pg_crc32c stored = 0;
  const char *why = nullptr;
  if (!ok || fread(&stored, sizeof(stored), 1, file) != 1)
    why = "truncated";
  else if (fgetc(file) != EOF)
    why = "trailing data";
  else if (!EQ_CRC32C(crc, stored))
    why = "checksum mismatch";
  if (scratch != nullptr) pfree(scratch);
  if (why != nullptr) {
    memset(history->slots, 0, sizeof(HistorySlot) * static_cast<Size>(Max(loadable, 0)));
    pfree(keys);
    return IgnoreFile(file, why);
  }
  FreeFile(file);

  /* Entry indexes differ from the last run: map by key (adds the keys). */
  int32 kept = 0;
  int32 dropped = header.nslots - loadable;
  for (int32 i = 0; i < loadable; i++) {
    const int32 e = FindOrAddEntry(keys[i]);
    /* A key folded into <other> (smaller warden.max_tracked) or seen twice: dropped. */
    if (e < 0 || e >= history->capacity || history->slot_of_entry[e] >= 0 ||
        memcmp(&usage->entries[e].key, &keys[i], sizeof(UsageKey)) != 0) {
      dropped++;
      continue;
    }
    if (kept != i) memcpy(&history->slots[kept], &history->slots[i], sizeof(HistorySlot));
    history->slots[kept].entry = e;
    history->slot_of_entry[e] = kept;
    kept++;
  }
  history->used_slots = kept;
  history->loaded_slots = kept;
  pfree(keys);
  if (dropped > 0)
    ereport(LOG, (errmsg("pg_warden: loaded usage history of %d keys from \"%s\", %d dropped", kept,
                         kHistoryFile, dropped),
                  errhint("Raise warden.history_keys or warden.max_tracked to keep them.")));
  else
    ereport(LOG,
            (errmsg("pg_warden: loaded usage history of %d keys from \"%s\"", kept, kHistoryFile)));
}

/* ---- reading ------------------------------------------------------------------ */

void RequireHistory() {
  RequirePreloaded();
  if (history == nullptr)
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("pg_warden usage history is not initialised")));
}

/* Copies slot i under the shared lock; false when there is no slot i. */
template <typename Copy>
bool ReadSlot(int32 i, Copy &&copy) {
  LWLockAcquire(history->lock, LW_SHARED);
  const bool exists = i < history->used_slots;
  if (exists) copy(history->slots[i]);
  LWLockRelease(history->lock);
  return exists;
}

void KeyValues(int32 entry, Datum *values, bool *nulls) {
  const UsageKey &key = usage->entries[entry].key;
  const bool global_other = (entry == 0);
  values[0] =
      NameGetDatum(const_cast<NameData *>(reinterpret_cast<const NameData *>(key.database)));
  values[1] = NameGetDatum(const_cast<NameData *>(reinterpret_cast<const NameData *>(key.role)));
  nulls[0] = nulls[1] = global_other;
  values[2] = CStringGetTextDatum(key.application);
}

double Mean(uint64 sum, uint64 samples) {
  return samples > 0 ? static_cast<double>(sum) / static_cast<double>(samples) : 0.0;
}

}  // namespace

Size HistoryShmemSize() {
  Size size = MAXALIGN(sizeof(HistoryShared));
  size = add_size(size, MAXALIGN(mul_size(UsageCapacity(), sizeof(int32))));
  size = add_size(size, mul_size(guc_history_keys, sizeof(HistorySlot)));
  return size;
}

void HistoryShmemInit() {
  bool found = false;
  history = static_cast<HistoryShared *>(
      ShmemInitStruct("pg_warden history", HistoryShmemSize(), &found));
  const int32 capacity = UsageCapacity();
  char *p = reinterpret_cast<char *>(history) + MAXALIGN(sizeof(HistoryShared));
  history->slot_of_entry = reinterpret_cast<int32 *>(p);
  p += MAXALIGN(mul_size(capacity, sizeof(int32)));
  history->slots = reinterpret_cast<HistorySlot *>(p);
  if (found) return;

  LWLockPadded *locks = GetNamedLWLockTranche("pg_warden");
  history->lock = &locks[kHistoryLock].lock;
  history->nslots = guc_history_keys;
  history->capacity = capacity;
  history->used_slots = 0;
  history->loaded_slots = 0;
  history->records = 0;
  history->last_record_ms = history->total_record_ms = 0;
  history->saved_at = 0;
  history->last_save_ms = 0;
  for (int32 i = 0; i < capacity; i++) history->slot_of_entry[i] = -1;
  if (history->nslots == 0 || IsUnderPostmaster) return;
  /* The postmaster: save at a clean shutdown, load what the last one saved. */
  on_shmem_exit(SaveHistoryAtExit, 0);
  LoadHistory();
}

void HistoryRecordSample(TimestampTz sampled_at) {
  if (history == nullptr || history->nslots == 0 || usage == nullptr) return;
  instr_time start;
  INSTR_TIME_SET_CURRENT(start);
  const uint32 used =
      Min(pg_atomic_read_u32(&usage->used), static_cast<uint32>(history->capacity));
  pg_read_barrier();
  const SampleTime t = TimeOf(sampled_at);

  LWLockAcquire(history->lock, LW_EXCLUSIVE);
  for (uint32 e = 0; e < used; e++) {
    UsageEntry &entry = usage->entries[e];
    const uint32 connections = pg_atomic_read_u32(&entry.connections);
    int32 s = history->slot_of_entry[e];
    if (s < 0) {
      if (connections == 0 || history->used_slots >= history->nslots) continue;
      s = history->used_slots++;
      InitSlot(&history->slots[s], static_cast<int32>(e), t);
      history->slot_of_entry[e] = s;
    }
    /* active and idle_in_transaction: written by this process (the worker) */
    Record(&history->slots[s], t, Clamp16(entry.active), Clamp16(entry.idle_in_transaction),
           Clamp16(connections));
  }
  instr_time elapsed;
  INSTR_TIME_SET_CURRENT(elapsed);
  INSTR_TIME_SUBTRACT(elapsed, start);
  history->records++;
  history->last_record_ms = INSTR_TIME_GET_MILLISEC(elapsed);
  history->total_record_ms += history->last_record_ms;
  LWLockRelease(history->lock);
  MaybeSaveHistory(sampled_at);
}

}  // namespace warden

using namespace warden;

WARDEN_FUNCTION(usage_history) {
  RequireHistory();
  InitMaterializedSRF(fcinfo, 0);
  ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
  const SampleTime now = TimeOf(GetCurrentTimestamp());
  HistorySlot *slot = static_cast<HistorySlot *>(palloc(sizeof(HistorySlot)));

  for (int32 i = 0; ReadSlot(i, [slot](const HistorySlot &s) { *slot = s; }); i++) {
    Datum values[12];
    bool nulls[12] = {false};
    KeyValues(slot->entry, values, nulls);

    values[3] = CStringGetTextDatum("minute");
    for (int32 n = slot->last_minute - kMinutes + 1; n <= slot->last_minute; n++) {
      const MinuteBucket &b = slot->minutes[Ring(n, kMinutes)];
      if (b.samples == 0 || n <= now.minute - kMinutes) continue;
      values[4] = TimestampTzGetDatum(static_cast<TimestampTz>(n) * USECS_PER_MINUTE);
      values[5] = Int32GetDatum(b.samples);
      values[6] = Int32GetDatum(b.active_peak);
      values[7] = Float8GetDatum(Mean(b.active_sum, b.samples));
      values[8] = Int32GetDatum(b.connections_peak);
      values[9] = Float8GetDatum(Mean(b.connections_sum, b.samples));
      values[10] = Int32GetDatum(b.idle_in_transaction_peak);
      values[11] = Float8GetDatum(Mean(b.idle_in_transaction_sum, b.samples));
      tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }

    values[3] = CStringGetTextDatum("hour");
    for (int32 n = slot->last_hour - kHours + 1; n <= slot->last_hour; n++) {
      const HourBucket &b = slot->hours[Ring(n, kHours)];
      if (b.samples == 0 || n <= now.hour - kHours) continue;
      values[4] = TimestampTzGetDatum(static_cast<TimestampTz>(n) * USECS_PER_HOUR);
      values[5] =
          Int32GetDatum(static_cast<int32>(Min(b.samples, static_cast<uint32>(PG_INT32_MAX))));
      values[6] = Int32GetDatum(b.active_peak);
      values[7] = Float8GetDatum(Mean(b.active_sum, b.samples));
      values[8] = Int32GetDatum(b.connections_peak);
      values[9] = Float8GetDatum(Mean(b.connections_sum, b.samples));
      values[10] = Int32GetDatum(b.idle_in_transaction_peak);
      values[11] = Float8GetDatum(Mean(b.idle_in_transaction_sum, b.samples));
      tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
  }
  pfree(slot);
  return (Datum)0;
}

WARDEN_FUNCTION(pool_advice) {
  RequireHistory();
  InitMaterializedSRF(fcinfo, 0);
  ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
  const SampleTime now = TimeOf(GetCurrentTimestamp());

  struct Days {
    int32 entry;
    int32 last_day;
    DayHistogram days[kDays];
  };
  Days *copy = static_cast<Days *>(palloc(sizeof(Days)));
  uint64 bins[kBins];

  auto copy_days = [copy](const HistorySlot &s) {
    copy->entry = s.entry;
    copy->last_day = s.last_day;
    memcpy(copy->days, s.days, sizeof(s.days));
  };
  for (int32 i = 0; ReadSlot(i, copy_days); i++) {
    memset(bins, 0, sizeof(bins));
    uint64 samples = 0;
    int32 in_use_max = 0, connections_max = 0;
    TimestampTz observed_since = 0;
    for (int32 n = copy->last_day - kDays + 1; n <= copy->last_day; n++) {
      const DayHistogram &d = copy->days[Ring(n, kDays)];
      if (d.samples == 0 || n <= now.day - kDays) continue;
      for (int32 b = 0; b < kBins; b++) bins[b] += d.in_use[b];
      samples += d.samples;
      in_use_max = Max(in_use_max, static_cast<int32>(d.in_use_max));
      connections_max = Max(connections_max, static_cast<int32>(d.connections_max));
      if (observed_since == 0 || d.first_at < observed_since) observed_since = d.first_at;
    }
    if (samples == 0) continue;

    const int32 p50 = Percentile(bins, samples, 50, in_use_max);
    const int32 p95 = Percentile(bins, samples, 95, in_use_max);
    const int32 p99 = Percentile(bins, samples, 99, in_use_max);
    const int32 held =
        static_cast<int32>(pg_atomic_read_u32(&usage->entries[copy->entry].connections));
    int32 recommended = (p99 * kHeadroomNum + kHeadroomDen - 1) / kHeadroomDen + kHeadroomExtra;
    if (connections_max > 0) recommended = Min(recommended, connections_max);
    recommended = Max(recommended, 1);

    Datum values[13];
    bool nulls[13] = {false};
    KeyValues(copy->entry, values, nulls);
    values[3] = Int32GetDatum(held);
    values[4] = Int32GetDatum(connections_max);
    values[5] = Int32GetDatum(p50);
    values[6] = Int32GetDatum(p95);
    values[7] = Int32GetDatum(p99);
    values[8] = Int32GetDatum(in_use_max);
    values[9] = Int32GetDatum(recommended);
    values[10] = Int32GetDatum(Max(held - recommended, 0));
    values[11] = TimestampTzGetDatum(observed_since);
    values[12] = Int64GetDatum(static_cast<int64>(samples));
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
  }
  pfree(copy);
  return (Datum)0;
}

WARDEN_FUNCTION(history_stats) {
  RequireHistory();
  TupleDesc tupdesc;
  if (get_call_result_type(fcinfo, nullptr, &tupdesc) != TYPEFUNC_COMPOSITE)
    ereport(ERROR,
            (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("return type must be a row type")));
  LWLockAcquire(history->lock, LW_SHARED);
  const int32 used_slots = history->used_slots;
  const int32 loaded = history->loaded_slots;
  const uint64 records = history->records;
  const double last_ms = history->last_record_ms;
  const double total_ms = history->total_record_ms;
  const TimestampTz saved_at = history->saved_at;
  const double save_ms = history->last_save_ms;
  LWLockRelease(history->lock);
  Datum values[9];
  bool nulls[9] = {false};
  values[0] = Int32GetDatum(history->nslots);
  values[1] = Int32GetDatum(used_slots);
  values[2] = Int32GetDatum(loaded);
  values[3] = Int64GetDatum(static_cast<int64>(HistoryShmemSize()));
  values[4] = Int64GetDatum(static_cast<int64>(records));
  values[5] = Float8GetDatum(last_ms);
  values[6] = Float8GetDatum(records > 0 ? total_ms / static_cast<double>(records) : 0.0);
  values[7] = TimestampTzGetDatum(saved_at);
  nulls[7] = (saved_at == 0);
  values[8] = Float8GetDatum(save_ms);
  nulls[8] = (saved_at == 0);
  HeapTuple tuple = heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls);
  return HeapTupleGetDatum(tuple);
}
