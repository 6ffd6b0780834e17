/*
 * history.cpp — usage history per key (minute and hour rings, the rolling
 * histogram of connections in use behind warden.pool_advice): its shared
 * memory and the recording of each sample by the sampler. The file is in
 * history_file.cpp, the SQL functions in history_views.cpp.
 *
 * Locks: history_lock (see history.hpp), exclusive once per sample, and
 * when a usage entry is reclaimed (under keys_lock: order keys_lock, then
 * history_lock). Each slot keeps its own copy of its key.
 */
#include "pg_warden/history.hpp"
#include "pg_warden/history_store.hpp"

#include "pg_warden/guc.hpp"
#include "pg_warden/usage.hpp"

namespace warden {

HistoryShared *history = nullptr;

namespace {

/* ---- recording (the sampler) -------------------------------------------------- */

void InitSlot(int32 s, int32 entry, const SampleTime &t) {
  HistorySlot *slot = &history->slots[s];
  memset(slot, 0, sizeof(HistorySlot));
  history->slot_keys[s] = usage->entries[entry].key;
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

/* Caller holds history_lock exclusively. */
void DetachSlot(int32 s) {
  const int32 e = history->slots[s].entry;
  if (e >= 0 && e < history->capacity) history->slot_of_entry[e] = -1;
  history->slots[s].entry = -1;
}

/*
 * Caller holds history_lock exclusively. A slot for entry e, which has none:
 * its key's own slot if the key had one before its usage entry was
 * reclaimed, else a never used slot, else the least recently recorded slot
 * whose key holds no connection (kept ones first); -1 if none.
 */
int32 SlotFor(uint32 e) {
  const UsageKey &key = usage->entries[e].key;
  for (int32 s = 0; s < history->used_slots; s++)
    if (history->slots[s].entry < 0 && memcmp(&history->slot_keys[s], &key, sizeof(UsageKey)) == 0)
      return s;
  if (history->used_slots < history->nslots) return -(history->used_slots++) - 2;
  int32 best = -1;
  int32 best_minute = 0;
  for (int32 s = 0; s < history->used_slots; s++) {
    const int32 owner = history->slots[s].entry;
    if (owner >= 0 && pg_atomic_read_u32(&usage->entries[owner].connections) > 0) continue;
    if (best < 0 || history->slots[s].last_minute < best_minute) {
      best = s;
      best_minute = history->slots[s].last_minute;
    }
  }
  if (best < 0) return -1;
  DetachSlot(best);
  return -best - 2;
}

/* usage.cpp's entry_reclaim_hook: the key's history stays, without its entry. */
void DetachEntry(int32 e) {
  if (history == nullptr || history->nslots == 0 || e >= history->capacity) return;
  LWLockAcquire(history->lock, LW_EXCLUSIVE);
  const int32 s = history->slot_of_entry[e];
  if (s >= 0) DetachSlot(s);
  LWLockRelease(history->lock);
}

}  // namespace

void ResetHistory() {
  LWLockAcquire(history->lock, LW_EXCLUSIVE);
  for (int32 i = 0; i < history->capacity; i++) history->slot_of_entry[i] = -1;
  history->used_slots = 0;
  history->loaded_slots = 0;
  LWLockRelease(history->lock);
}

Size HistoryShmemSize() {
  Size size = MAXALIGN(sizeof(HistoryShared));
  size = add_size(size, MAXALIGN(mul_size(UsageCapacity(), sizeof(int32))));
  size = add_size(size, MAXALIGN(mul_size(guc_history_keys, sizeof(UsageKey))));
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
  history->slot_keys = reinterpret_cast<UsageKey *>(p);
  p += MAXALIGN(mul_size(guc_history_keys, sizeof(UsageKey)));
  history->slots = reinterpret_cast<HistorySlot *>(p);
  entry_reclaim_hook = DetachEntry;
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
  const uint32 used = Min(pg_atomic_read_u32(&usage->used), static_cast<uint32>(history->capacity));
  pg_read_barrier();
  const SampleTime t = TimeOf(sampled_at);

  LWLockAcquire(history->lock, LW_EXCLUSIVE);
  for (uint32 e = 0; e < used; e++) {
    UsageEntry &entry = usage->entries[e];
    const uint32 connections = pg_atomic_read_u32(&entry.connections);
    if (!entry.in_use) continue;
    int32 s = history->slot_of_entry[e];
    if (s < 0) {
      if (connections == 0) continue;
      s = SlotFor(e);
      if (s == -1) continue;
      if (s <= -2) { /* a new or reclaimed slot: starts empty */
        s = -s - 2;
        InitSlot(s, static_cast<int32>(e), t);
      }
      history->slots[s].entry = static_cast<int32>(e);
      history->slot_of_entry[e] = s;
    }
    /* active and idle_in_transaction: written by this process (the sampler) */
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
