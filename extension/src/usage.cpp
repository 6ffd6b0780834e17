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

int32 OtherCapacity(int32 max_tracked) { return Max(16, max_tracked / 4); }

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

/* Caller holds keys_lock exclusively and has checked there is room. */
int32 Insert(const UsageKey &key, uint32 hash) {
  const int32 e = static_cast<int32>(pg_atomic_read_u32(&usage->used));
  UsageEntry *entry = &usage->entries[e];
  entry->key = key;
  entry->hash = hash;
  /* counters were zeroed at init and entries are never reused */
  const uint32 mask = static_cast<uint32>(usage->index_size - 1);
  uint32 i = hash & mask;
  while (usage->index[i] >= 0) i = (i + 1) & mask;
  usage->index[i] = e;
  pg_write_barrier();
  pg_atomic_write_u32(&usage->used, static_cast<uint32>(e + 1));
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
  const int32 other = OtherCapacity(guc_max_tracked);
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
  }
  for (int32 i = 0; i < index_size; i++) usage->index[i] = -1;
  for (int32 i = 0; i < MaxBackends; i++) {
    SpinLockInit(&usage->slots[i].mutex);
    usage->slots[i].pid = 0;
    usage->slots[i].entry = -1;
    usage->slots[i].admitted = false;
  }
  /* entry 0: the global <other>, for when even the <other> keys are full */
  UsageKey global;
  MakeKey(&global, "", "", kOtherApplication);
  Insert(global, HashKey(global));
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

int32 FindOrAddEntry(const UsageKey &key) {
  const uint32 hash = HashKey(key);
  LWLockAcquire(usage->keys_lock, LW_SHARED);
  int32 e = Lookup(key, hash);
  LWLockRelease(usage->keys_lock);
  if (e >= 0) return e;

  LWLockAcquire(usage->keys_lock, LW_EXCLUSIVE);
  e = Lookup(key, hash);
  if (e < 0) {
    const bool is_other = strcmp(key.application, kOtherApplication) == 0;
    if (!is_other && usage->used_regular < usage->max_tracked) {
      e = Insert(key, hash);
      usage->used_regular++;
    } else {
      UsageKey other = key;
      memset(other.application, 0, NAMEDATALEN);
      strlcpy(other.application, kOtherApplication, NAMEDATALEN);
      const uint32 other_hash = HashKey(other);
      e = Lookup(other, other_hash);
      if (e < 0 && usage->used_other < usage->other_capacity) {
        e = Insert(other, other_hash);
        usage->used_other++;
      }
      if (e < 0) e = 0;
    }
  }
  LWLockRelease(usage->keys_lock);
  return e;
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
  pg_atomic_fetch_add_u64(&usage->entries[FindOrAddEntry(key)].refused, 1);
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
