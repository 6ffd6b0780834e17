/*
 * tracking.cpp — the usage table in shared memory and the login/logout
 * counting. Locks: keys_lock (shared to look up, exclusive to add a key),
 * BackendSlot.mutex around a slot's entry; counters are atomics. See
 * tracking.hpp for the full protocol.
 */
#include "pg_warden/tracking.hpp"

#include "pg_warden/guc.hpp"

namespace warden {

TrackingShared *tracking = nullptr;

namespace {

int32 OtherCapacity(int32 max_tracked) { return Max(16, max_tracked / 4); }

int32 IndexSize(int32 capacity) {
  int32 n = 64;
  while (n < capacity * 2) n <<= 1;
  return n;
}

uint32 HashKey(const UsageKey &key) {
  return hash_bytes(reinterpret_cast<const unsigned char *>(&key), sizeof(UsageKey));
}

void MakeKey(UsageKey *key, const char *database, const char *role, const char *application) {
  memset(key, 0, sizeof(*key));
  strlcpy(key->database, database ? database : "", NAMEDATALEN);
  strlcpy(key->role, role ? role : "", NAMEDATALEN);
  strlcpy(key->application, application ? application : "", NAMEDATALEN);
}

/* Caller holds keys_lock (either mode). */
int32 Lookup(const UsageKey &key, uint32 hash) {
  const uint32 mask = static_cast<uint32>(tracking->index_size - 1);
  for (uint32 i = hash & mask;; i = (i + 1) & mask) {
    int32 e = tracking->index[i];
    if (e < 0) return -1;
    const UsageEntry &entry = tracking->entries[e];
    if (entry.hash == hash && memcmp(&entry.key, &key, sizeof(UsageKey)) == 0) return e;
  }
}

/* Caller holds keys_lock exclusively and has checked there is room. */
int32 Insert(const UsageKey &key, uint32 hash) {
  const int32 e = static_cast<int32>(pg_atomic_read_u32(&tracking->used));
  UsageEntry *entry = &tracking->entries[e];
  entry->key = key;
  entry->hash = hash;
  /* counters were zeroed at init and entries are never reused */
  const uint32 mask = static_cast<uint32>(tracking->index_size - 1);
  uint32 i = hash & mask;
  while (tracking->index[i] >= 0) i = (i + 1) & mask;
  tracking->index[i] = e;
  pg_write_barrier();
  pg_atomic_write_u32(&tracking->used, static_cast<uint32>(e + 1));
  return e;
}

void UpdatePeak(UsageEntry *entry, uint32 now_connections) {
  uint32 peak = pg_atomic_read_u32(&entry->peak_connections);
  while (now_connections > peak) {
    if (pg_atomic_compare_exchange_u32(&entry->peak_connections, &peak, now_connections)) {
      pg_atomic_write_u64(&entry->peak_at, static_cast<uint64>(GetCurrentTimestamp()));
      break;
    }
  }
}

void CountOut(int, Datum) {
  if (tracking == nullptr || MyBackendId < 1 || MyBackendId > tracking->max_backends) return;
  BackendSlot *slot = &tracking->slots[MyBackendId - 1];
  SpinLockAcquire(&slot->mutex);
  const int32 e = slot->entry;
  slot->entry = -1;
  slot->pid = 0;
  if (e >= 0) pg_atomic_fetch_sub_u32(&tracking->entries[e].connections, 1);
  SpinLockRelease(&slot->mutex);
}

}  // namespace

const char *SessionStateName(SessionState s) {
  switch (s) {
    case SessionState::kActive:
      return "active";
    case SessionState::kIdle:
      return "idle";
    case SessionState::kIdleInTransaction:
      return "idle in transaction";
    case SessionState::kIdleInTransactionAborted:
      return "idle in transaction (aborted)";
    case SessionState::kFastpath:
      return "fastpath function call";
    case SessionState::kDisabled:
      return "disabled";
    case SessionState::kStarting:
      break;
  }
  return "starting";
}

int32 UsageCapacity() { return guc_max_tracked + OtherCapacity(guc_max_tracked) + 1; }

SessionState SessionStateOf(BackendState st) {
  switch (st) {
    case STATE_RUNNING:
      return SessionState::kActive;
    case STATE_IDLE:
      return SessionState::kIdle;
    case STATE_IDLEINTRANSACTION:
      return SessionState::kIdleInTransaction;
    case STATE_IDLEINTRANSACTION_ABORTED:
      return SessionState::kIdleInTransactionAborted;
    case STATE_FASTPATH:
      return SessionState::kFastpath;
    case STATE_DISABLED:
      return SessionState::kDisabled;
    default:
      return SessionState::kStarting;
  }
}

Size TrackingShmemSize() {
  const int32 capacity = UsageCapacity();
  Size size = MAXALIGN(sizeof(TrackingShared));
  size = add_size(size, MAXALIGN(mul_size(capacity, sizeof(UsageEntry))));
  size = add_size(size, MAXALIGN(mul_size(IndexSize(capacity), sizeof(int32))));
  size = add_size(size, MAXALIGN(mul_size(MaxBackends, sizeof(BackendSlot))));
  size = add_size(size, mul_size(2, MAXALIGN(mul_size(MaxBackends, sizeof(SampledBackend)))));
  return size;
}

void TrackingShmemInit() {
  bool found = false;
  tracking = static_cast<TrackingShared *>(
      ShmemInitStruct("pg_warden tracking", TrackingShmemSize(), &found));
  char *p = reinterpret_cast<char *>(tracking) + MAXALIGN(sizeof(TrackingShared));
  const int32 other = OtherCapacity(guc_max_tracked);
  const int32 capacity = UsageCapacity();
  const int32 index_size = IndexSize(capacity);
  if (!found) {
    memset(tracking, 0, sizeof(TrackingShared));
    LWLockPadded *locks = GetNamedLWLockTranche("pg_warden");
    tracking->keys_lock = &locks[kKeysLock].lock;
    tracking->sample_lock = &locks[kSampleLock].lock;
    tracking->max_tracked = guc_max_tracked;
    tracking->other_capacity = other;
    tracking->capacity = capacity;
    tracking->index_size = index_size;
    tracking->max_backends = MaxBackends;
    pg_atomic_init_u32(&tracking->used, 0);
  }
  tracking->entries = reinterpret_cast<UsageEntry *>(p);
  p += MAXALIGN(mul_size(capacity, sizeof(UsageEntry)));
  tracking->index = reinterpret_cast<int32 *>(p);
  p += MAXALIGN(mul_size(index_size, sizeof(int32)));
  tracking->slots = reinterpret_cast<BackendSlot *>(p);
  p += MAXALIGN(mul_size(MaxBackends, sizeof(BackendSlot)));
  tracking->sampled[0] = reinterpret_cast<SampledBackend *>(p);
  p += MAXALIGN(mul_size(MaxBackends, sizeof(SampledBackend)));
  tracking->sampled[1] = reinterpret_cast<SampledBackend *>(p);
  if (found) return;

  for (int32 i = 0; i < capacity; i++) {
    UsageEntry *e = &tracking->entries[i];
    memset(e, 0, sizeof(*e));
    pg_atomic_init_u32(&e->connections, 0);
    pg_atomic_init_u32(&e->peak_connections, 0);
    pg_atomic_init_u64(&e->peak_at, 0);
    pg_atomic_init_u64(&e->opened, 0);
    pg_atomic_init_u64(&e->refused, 0);
    pg_atomic_init_u64(&e->terminated, 0);
  }
  for (int32 i = 0; i < index_size; i++) tracking->index[i] = -1;
  for (int32 i = 0; i < MaxBackends; i++) {
    SpinLockInit(&tracking->slots[i].mutex);
    tracking->slots[i].pid = 0;
    tracking->slots[i].entry = -1;
  }
  /* entry 0: the global <other>, for when even the <other> keys are full */
  UsageKey global;
  MakeKey(&global, "", "", kOtherApplication);
  Insert(global, HashKey(global));
}

void RequireTracking() {
  if (tracking != nullptr) return;
  ereport(ERROR,
          (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE), errmsg("pg_warden is not loaded"),
           errdetail("pg_warden must be loaded at server start through shared_preload_libraries."),
           errhint("Add pg_warden to shared_preload_libraries in postgresql.conf and restart the "
                   "server.")));
}

int32 FindOrAddEntry(const UsageKey &key) {
  const uint32 hash = HashKey(key);
  LWLockAcquire(tracking->keys_lock, LW_SHARED);
  int32 e = Lookup(key, hash);
  LWLockRelease(tracking->keys_lock);
  if (e >= 0) return e;

  LWLockAcquire(tracking->keys_lock, LW_EXCLUSIVE);
  e = Lookup(key, hash);
  if (e < 0) {
    const bool is_other = strcmp(key.application, kOtherApplication) == 0;
    if (!is_other && tracking->used_regular < tracking->max_tracked) {
      e = Insert(key, hash);
      tracking->used_regular++;
    } else {
      UsageKey other = key;
      memset(other.application, 0, NAMEDATALEN);
      strlcpy(other.application, kOtherApplication, NAMEDATALEN);
      const uint32 other_hash = HashKey(other);
      e = Lookup(other, other_hash);
      if (e < 0 && tracking->used_other < tracking->other_capacity) {
        e = Insert(other, other_hash);
        tracking->used_other++;
      }
      if (e < 0) e = 0;
    }
  }
  LWLockRelease(tracking->keys_lock);
  return e;
}

bool CanCountThisBackend() {
  return tracking != nullptr && MyBackendId >= 1 && MyBackendId <= tracking->max_backends;
}

int32 LoginEntry(const char *database, const char *role, const char *application) {
  UsageKey key;
  MakeKey(&key, database, role, application);
  return FindOrAddEntry(key);
}

void CountIn(int32 e) {
  UsageEntry *entry = &tracking->entries[e];
  BackendSlot *slot = &tracking->slots[MyBackendId - 1];

  /* Register the way out before counting in: no path can skip it. */
  before_shmem_exit(CountOut, 0);
  SpinLockAcquire(&slot->mutex);
  slot->pid = MyProcPid;
  slot->entry = e;
  slot->backend_start = MyStartTimestamp;
  const uint32 now_connections = pg_atomic_add_fetch_u32(&entry->connections, 1);
  SpinLockRelease(&slot->mutex);
  pg_atomic_fetch_add_u64(&entry->opened, 1);
  UpdatePeak(entry, now_connections);
}

void Rekey(int32 slot_index, int32 pid, int32 from_entry, int32 to_entry) {
  BackendSlot *slot = &tracking->slots[slot_index];
  uint32 now_connections = 0;
  bool moved = false;
  SpinLockAcquire(&slot->mutex);
  if (slot->pid == pid && slot->entry == from_entry) {
    slot->entry = to_entry;
    now_connections = pg_atomic_add_fetch_u32(&tracking->entries[to_entry].connections, 1);
    pg_atomic_fetch_sub_u32(&tracking->entries[from_entry].connections, 1);
    moved = true;
  }
  SpinLockRelease(&slot->mutex);
  if (moved) UpdatePeak(&tracking->entries[to_entry], now_connections);
}

}  // namespace warden
