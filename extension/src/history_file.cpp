/*
 * history_file.cpp — the usage history file: saved by the sampler every
 * warden.history_save_interval and by the postmaster at a clean shutdown,
 * loaded by the postmaster at start (see history.hpp). Locks: history_lock
 * (shared, one slot at a time, while the sampler copies slots out; never
 * held during I/O); keys_lock through FindOrAddEntry while the postmaster
 * maps the keys of a loaded file (no other process exists yet).
 */
#include "pg_warden/history.hpp"
#include "pg_warden/history_store.hpp"

#include "pg_warden/guc.hpp"
#include "pg_warden/usage.hpp"

namespace warden {
namespace {

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

/*
 * Writes the used slots to kHistoryFile (through a .tmp file and a durable
 * rename). `buffer` null: read shared memory directly (the postmaster at
 * exit, every other process gone, no lock could be taken); otherwise copy
 * each slot into it under the shared lock first (the sampler), so the lock is
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
    const UsageKey &key = history->slot_keys[i]; /* set once with the slot */
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

void IgnoreFile(FILE *file, const char *why) {
  if (file != nullptr) FreeFile(file);
  ereport(LOG, (errmsg("pg_warden: usage history file \"%s\" ignored: %s", kHistoryFile, why),
                errdetail("Usage history starts empty.")));
  unlink(kHistoryFile);
}

TimestampTz next_save_at = 0;
HistorySlot *save_buffer = nullptr;

}  // namespace

/* The postmaster, as it exits. */
void SaveHistoryAtExit(int code, Datum) {
  /* Not after a crash (code != 0): shared memory may be inconsistent. */
  if (code != 0 || history == nullptr || history->nslots == 0 || usage == nullptr) return;
  (void)WriteHistoryFile(nullptr);
}

/* The sampler: every warden.history_save_interval, so that a crash loses little. */
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

/*
 * Loads the file written at the last shutdown, or by the sampler's last
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
    UnpinEntry(e);
    /* A key folded into <other> (smaller warden.max_tracked) or seen twice: dropped. */
    if (e < 0 || e >= history->capacity || history->slot_of_entry[e] >= 0 ||
        memcmp(&usage->entries[e].key, &keys[i], sizeof(UsageKey)) != 0) {
      dropped++;
      continue;
    }
    if (kept != i) memcpy(&history->slots[kept], &history->slots[i], sizeof(HistorySlot));
    history->slot_keys[kept] = keys[i];
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

}  // namespace warden
