/*
 * usage.cpp — the usage table in shared memory: counting in at login and
 * out at exit, re-keying (for the sampler), and the lookups other rooms
 * share (EntryOfPid, FormatClientAddr). Locks: keys_lock (shared to look
 * up, exclusive to add a key), BackendSlot.mutex around a slot's entry;
 * counters are atomics. See usage.hpp for the full protocol.
 */
#include "pg_warden/usage.hpp"

#include "pg_warden/guc.hpp"

namespace warden {

UsageShared *usage = nullptr;

namespace {

/* More than backends can ever hold, so a folded key always finds an entry. */
int32 OtherCapacity() { return Max(16, MaxBackends + 2); }

int32 IndexSize(int32 capacity) {
  int32 n = 64;
  while (n < capacity * 2) n <<= 1;
  return n;
}

uint32 HashKey(const UsageKey &key) {
  return hash_bytes(reinterpret_cast<const unsigned char *>(&key), sizeof(UsageKey));
}

/* Caller holds keys_lock (either mode). */
int32 Lookup(const UsageKey &key, uint32 hash) {
  const uint32 mask = static_cast<uint32>(usage->index_size - 1);
  for (uint32 i = hash & mask;; i = (i + 1) & mask) {
    int32 e = usage->index[i];
    if (e < 0) return -1;
    const UsageEntry &entry = usage->entries[e];
    if (entry.hash == hash && memcmp(&entry.key, &key, sizeof(UsageKey)) == 0) return e;
  }
}

/* Caller holds keys_lock exclusively. */
void IndexAdd(int32 e) {
  const uint32 mask = static_cast<uint32>(usage->index_size - 1);
  uint32 i = usage->entries[e].hash & mask;
  while (usage->index[i] >= 0) i = (i + 1) & mask;
  usage->index[i] = e;
}

/* Caller holds keys_lock exclusively. Removal from linear probing by backward shift. */
void IndexRemove(int32 e) {
  const uint32 mask = static_cast<uint32>(usage->index_size - 1);
  uint32 i = usage->entries[e].hash & mask;
  while (usage->index[i] != e) i = (i + 1) & mask;
  usage->index[i] = -1;
  for (uint32 j = (i + 1) & mask; usage->index[j] >= 0; j = (j + 1) & mask) {
    const uint32 home = usage->entries[usage->index[j]].hash & mask;
    /* the entry at j may move to i when its home is not cyclically in (i, j] */
    const bool stays = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
    if (stays) continue;
    usage->index[i] = usage->index[j];
    usage->index[j] = -1;
    i = j;
  }
}

/* Nothing refers to entry e: no connection, no pin, no session in the latest sample. */
bool Reclaimable(const UsageEntry &entry) {
  return entry.in_use &&
         pg_atomic_read_u32(const_cast<pg_atomic_uint32 *>(&entry.connections)) == 0 &&
         pg_atomic_read_u32(const_cast<pg_atomic_uint32 *>(&entry.pins)) == 0 &&
         entry.active == 0 && entry.idle == 0 && entry.idle_in_transaction == 0;
}

/*
 * The least recently seen reclaimable entry of [lo, hi), -1 if none. It
 * looks at up to kReclaimCandidates reclaimable entries from the hand on
 * (and at most kReclaimScan entries), so a new key costs the same however
 * large the table: least recently seen among a sample, as Redis evicts.
 */
constexpr int32 kReclaimCandidates = 32;
constexpr int32 kReclaimScan = 1024;
int32 PickVictim(int32 lo, int32 hi, int32 *hand) {
  const int32 n = hi - lo;
  int32 best = -1;
  uint64 best_seen = 0;
  int32 found = 0;
  int32 i = *hand;
  for (int32 k = 0; k < Min(n, kReclaimScan) && found < kReclaimCandidates; k++) {
    const int32 e = lo + (i % n);
    i = (i + 1) % n;
    const UsageEntry &entry = usage->entries[e];
    if (!Reclaimable(entry)) continue;
    found++;
    const uint64 seen = pg_atomic_read_u64(const_cast<pg_atomic_uint64 *>(&entry.last_seen));
    if (best < 0 || seen < best_seen) {
      best = e;
      best_seen = seen;
    }
  }
  *hand = i;
  return best;
}

/* Caller holds keys_lock exclusively. Gives entry e (unused or reclaimable) to key. */
void Assign(int32 e, const UsageKey &key, uint32 hash) {
  UsageEntry *entry = &usage->entries[e];
  if (entry->in_use) {
    if (entry_reclaim_hook != nullptr) entry_reclaim_hook(e);
    IndexRemove(e);
    pg_atomic_fetch_add_u64(&usage->reclaimed, 1);
  }
  /* readers of keys and counters hold sample_lock */
  LWLockAcquire(usage->sample_lock, LW_EXCLUSIVE);
  entry->key = key;
  entry->hash = hash;
  entry->generation++;
  pg_atomic_write_u32(&entry->peak_connections, 0);
  pg_atomic_write_u64(&entry->peak_at, 0);
  pg_atomic_write_u64(&entry->opened, 0);
  pg_atomic_write_u64(&entry->refused, 0);
  pg_atomic_write_u64(&entry->terminated, 0);
  pg_atomic_write_u64(&entry->last_seen, static_cast<uint64>(GetCurrentTimestamp()));
  entry->active = entry->idle = entry->idle_in_transaction = 0;
  entry->longest_idle_seconds = entry->longest_idle_in_transaction_seconds = 0;
  entry->in_use = true;
  LWLockRelease(usage->sample_lock);
  IndexAdd(e);
  const uint32 bound = static_cast<uint32>(e + 1);
  pg_write_barrier();
  if (pg_atomic_read_u32(&usage->used) < bound) pg_atomic_write_u32(&usage->used, bound);
}

/*
 * Caller holds keys_lock exclusively. An entry for a new key in the regular
 * part (other = false) or the <other> part: a never used one, else the
 * least recently seen one nothing refers to; -1 if the regular part has
 * none. The <other> part has more entries than backends can hold, so it
 * always has one.
 */
int32 AddIn(const UsageKey &key, uint32 hash, bool other) {
  /* entry 0 stays unused: other rooms read entry 0 as "no key" */
  const int32 lo = other ? 1 + usage->max_tracked : 1;
  const int32 size = other ? usage->other_capacity : usage->max_tracked;
  int32 *used_part = other ? &usage->used_other : &usage->used_regular;
  int32 e = -1;
  if (*used_part < size) {
    e = lo + (*used_part)++;
  } else {
    e = PickVictim(lo, lo + size, other ? &usage->hand_other : &usage->hand_regular);
    if (e < 0 && !other) return -1;
    if (e < 0) {
      /* Only sessions that left since the latest sample keep every <other>
       * entry referenced: take one with no connection and no pin. */
      for (int32 k = lo; k < lo + size && e < 0; k++)
        if (pg_atomic_read_u32(&usage->entries[k].connections) == 0 &&
            pg_atomic_read_u32(&usage->entries[k].pins) == 0)
          e = k;
      if (e < 0) return lo; /* cannot happen: more entries than backends */
    }
  }
  Assign(e, key, hash);
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

void (*release_admission_fn)(BackendSlot *slot) = nullptr;
bool callbacks_registered = false;
bool login_established = false;

void CountOut(int, Datum) {
  if (!CanCountThisBackend()) return;
  BackendSlot *slot = MySlot();
  if (release_admission_fn != nullptr) release_admission_fn(slot);
  SpinLockAcquire(&slot->mutex);
  const int32 e = slot->entry;
  slot->entry = -1;
  slot->pid = 0;
  if (e >= 0) pg_atomic_fetch_sub_u32(&usage->entries[e].connections, 1);
  SpinLockRelease(&slot->mutex);
  if (e >= 0)
    pg_atomic_write_u64(&usage->entries[e].last_seen, static_cast<uint64>(GetCurrentTimestamp()));
}

/*
 * InitPostgres authenticates inside its startup transaction and commits it
 * only once every check of its own passed (the database exists, CONNECT
 * privilege, the role's and the database's connection limits). Its
 * pre-commit is therefore the moment the login is established: only then
 * does the key get a usage row, a connection, `opened` and a peak. A login
 * refused by PostgreSQL aborts that transaction and leaves nothing behind.
 */
void CountInAtStartupCommit(XactEvent event, void *) {
  if (login_established || event != XACT_EVENT_PRE_COMMIT) return;
  login_established = true;
  if (!CanCountThisBackend()) return;
  BackendSlot *slot = MySlot();
  const int32 e = FindOrAddEntry(slot->key);
  UsageEntry *entry = &usage->entries[e];
  SpinLockAcquire(&slot->mutex);
  slot->pid = MyProcPid;
  slot->backend_start = MyStartTimestamp;
  slot->entry = e;
  const uint32 now_connections = pg_atomic_add_fetch_u32(&entry->connections, 1);
  SpinLockRelease(&slot->mutex);
  UnpinEntry(e);
  pg_atomic_fetch_add_u64(&entry->opened, 1);
  UpdatePeak(entry, now_connections);
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

int32 UsageCapacity() { return 1 + guc_max_tracked + OtherCapacity(); }

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

Size UsageShmemSize() {
  const int32 capacity = UsageCapacity();
  Size size = MAXALIGN(sizeof(UsageShared));
  size = add_size(size, MAXALIGN(mul_size(capacity, sizeof(UsageEntry))));
  size = add_size(size, MAXALIGN(mul_size(IndexSize(capacity), sizeof(int32))));
  size = add_size(size, MAXALIGN(mul_size(MaxBackends, sizeof(BackendSlot))));
  size = add_size(size, mul_size(2, MAXALIGN(mul_size(MaxBackends, sizeof(SampledBackend)))));
  return size;
}

void UsageShmemInit() {
  bool found = false;
  usage =
      static_cast<UsageShared *>(ShmemInitStruct("pg_warden tracking", UsageShmemSize(), &found));
  char *p = reinterpret_cast<char *>(usage) + MAXALIGN(sizeof(UsageShared));
  const int32 other = OtherCapacity();
  const int32 capacity = UsageCapacity();
  const int32 index_size = IndexSize(capacity);
  if (!found) {
    memset(usage, 0, sizeof(UsageShared));
    LWLockPadded *locks = GetNamedLWLockTranche("pg_warden");
    usage->keys_lock = &locks[kKeysLock].lock;
    usage->sample_lock = &locks[kSampleLock].lock;
    usage->max_tracked = guc_max_tracked;
    usage->other_capacity = other;
    usage->capacity = capacity;
    usage->index_size = index_size;
    usage->max_backends = MaxBackends;
    pg_atomic_init_u32(&usage->used, 0);
    pg_atomic_init_u64(&usage->reclaimed, 0);
  }
  usage->entries = reinterpret_cast<UsageEntry *>(p);
  p += MAXALIGN(mul_size(capacity, sizeof(UsageEntry)));
  usage->index = reinterpret_cast<int32 *>(p);
  p += MAXALIGN(mul_size(index_size, sizeof(int32)));
  usage->slots = reinterpret_cast<BackendSlot *>(p);
  p += MAXALIGN(mul_size(MaxBackends, sizeof(BackendSlot)));
  usage->sampled[0] = reinterpret_cast<SampledBackend *>(p);
  p += MAXALIGN(mul_size(MaxBackends, sizeof(SampledBackend)));
  usage->sampled[1] = reinterpret_cast<SampledBackend *>(p);
  if (found) return;

  for (int32 i = 0; i < capacity; i++) {
    UsageEntry *e = &usage->entries[i];
    memset(e, 0, sizeof(*e));
    pg_atomic_init_u32(&e->connections, 0);
    pg_atomic_init_u32(&e->peak_connections, 0);
    pg_atomic_init_u64(&e->peak_at, 0);
    pg_atomic_init_u64(&e->opened, 0);
    pg_atomic_init_u64(&e->refused, 0);
    pg_atomic_init_u64(&e->terminated, 0);
    pg_atomic_init_u32(&e->pins, 0);
    pg_atomic_init_u64(&e->last_seen, 0);
  }
  for (int32 i = 0; i < index_size; i++) usage->index[i] = -1;
  for (int32 i = 0; i < MaxBackends; i++) {
    SpinLockInit(&usage->slots[i].mutex);
    usage->slots[i].pid = 0;
    usage->slots[i].entry = -1;
    usage->slots[i].admitted = false;
  }
}

void RequirePreloaded() {
  if (usage != nullptr) return;
  ereport(ERROR,
          (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE), errmsg("pg_warden is not loaded"),
           errdetail("pg_warden must be loaded at server start through shared_preload_libraries."),
           errhint("Add pg_warden to shared_preload_libraries in postgresql.conf and restart the "
                   "server.")));
}

void MakePrintable(char *dst, const char *src) {
  memset(dst, 0, NAMEDATALEN);
  if (src == nullptr) return;
  for (int i = 0; i < NAMEDATALEN - 1 && src[i] != '\0'; i++) {
    const unsigned char c = static_cast<unsigned char>(src[i]);
    dst[i] = (c >= 0x20 && c <= 0x7e) ? static_cast<char>(c) : '?';
  }
}

void MakeKey(UsageKey *key, const char *database, const char *role, const char *application) {
  MakePrintable(key->database, database);
  MakePrintable(key->role, role);
  MakePrintable(key->application, application);
}

void (*entry_reclaim_hook)(int32 e) = nullptr;

int32 FindOrAddEntry(const UsageKey &key) {
  const uint32 hash = HashKey(key);
  LWLockAcquire(usage->keys_lock, LW_SHARED);
  int32 e = Lookup(key, hash);
  if (e >= 0) pg_atomic_fetch_add_u32(&usage->entries[e].pins, 1);
  LWLockRelease(usage->keys_lock);
  if (e >= 0) return e;

  LWLockAcquire(usage->keys_lock, LW_EXCLUSIVE);
  e = Lookup(key, hash);
  if (e < 0 && strcmp(key.application, kOtherApplication) != 0) e = AddIn(key, hash, false);
  if (e < 0) {
    UsageKey other = key;
    MakePrintable(other.application, kOtherApplication);
    const uint32 other_hash = HashKey(other);
    e = Lookup(other, other_hash);
    if (e < 0) e = AddIn(other, other_hash, true);
  }
  pg_atomic_fetch_add_u32(&usage->entries[e].pins, 1);
  LWLockRelease(usage->keys_lock);
  return e;
}

void UnpinEntry(int32 e) {
  pg_atomic_write_u64(&usage->entries[e].last_seen, static_cast<uint64>(GetCurrentTimestamp()));
  pg_atomic_fetch_sub_u32(&usage->entries[e].pins, 1);
}

bool CanCountThisBackend() {
  return usage != nullptr && MyBackendId >= 1 && MyBackendId <= usage->max_backends;
}

BackendSlot *MySlot() { return &usage->slots[MyBackendId - 1]; }

void RegisterLoginCallbacks(void (*release_admission)(BackendSlot *slot)) {
  if (callbacks_registered) return;
  callbacks_registered = true;
  release_admission_fn = release_admission;
  /* Register the way out before counting in: no path can skip it. */
  before_shmem_exit(CountOut, 0);
  RegisterXactCallback(CountInAtStartupCommit, nullptr);
}

void CountRefused(const UsageKey &key) {
  const int32 e = FindOrAddEntry(key);
  pg_atomic_fetch_add_u64(&usage->entries[e].refused, 1);
  UnpinEntry(e);
}

void Rekey(int32 slot_index, int32 pid, int32 from_entry, int32 to_entry) {
  BackendSlot *slot = &usage->slots[slot_index];
  uint32 now_connections = 0;
  bool moved = false;
  SpinLockAcquire(&slot->mutex);
  if (slot->pid == pid && slot->entry == from_entry) {
    slot->entry = to_entry;
    now_connections = pg_atomic_add_fetch_u32(&usage->entries[to_entry].connections, 1);
    pg_atomic_fetch_sub_u32(&usage->entries[from_entry].connections, 1);
    moved = true;
  }
  SpinLockRelease(&slot->mutex);
  if (moved) UpdatePeak(&usage->entries[to_entry], now_connections);
}

int32 EntryOfPid(int32 pid) {
  for (int32 i = 0; i < usage->max_backends; i++) {
    BackendSlot *slot = &usage->slots[i];
    SpinLockAcquire(&slot->mutex);
    const int32 slot_pid = slot->pid, entry = slot->entry;
    SpinLockRelease(&slot->mutex);
    if (slot_pid == pid) return entry;
  }
  return -1;
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

}  // namespace warden
