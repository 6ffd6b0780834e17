/*
 * usage.hpp — connection usage per (database, role, application_name) in
 * shared memory.
 *
 * Layout (one ShmemInitStruct, sized at postmaster start, never grows):
 *   UsageShared header
 *   UsageEntry     entries[capacity]     capacity = max_tracked + other slots + 1
 *   int32          index[index_size]     open addressing over entries, -1 = empty
 *   BackendSlot    slots[MaxBackends]    one per backend id: which entry it counts in
 *   SampledBackend sampled[2][MaxBackends]  the sampler's latest sample, double-buffered
 *
 * Locking protocol:
 *   keys_lock (LWLock): shared to look a key up (and pin its entry),
 *     exclusive to add one or to reclaim an entry. An entry is reclaimed
 *     only when nothing refers to it: no connection counted in it, no pin,
 *     and no session in the latest sample; its generation moves. Counters
 *     are updated with atomics without the lock. The key of an entry is
 *     rewritten under keys_lock and sample_lock, so readers of the table
 *     under sample_lock see whole keys.
 *   sample_lock (LWLock): exclusive while the sampler publishes a sample (flips
 *     the sample buffer, writes the per-entry sampled fields), shared to read.
 *   BackendSlot.mutex (spinlock): guards slot.entry, so that counting out at
 *     exit and the sampler re-keying a session after SET application_name move
 *     each connection exactly once. Nothing is ever ereported under it.
 */
#pragma once

#include "pg_warden/pg.hpp"
#include "pg_warden/shmem.hpp"

namespace warden {

constexpr const char *kOtherApplication = "<other>";

struct UsageKey {
  char database[NAMEDATALEN];
  char role[NAMEDATALEN];
  char application[NAMEDATALEN];
};

/* Backend states as pg_warden records them (pg_stat_activity's names). */
enum class SessionState : uint8 {
  kStarting = 0,
  kActive,
  kIdle,
  kIdleInTransaction,
  kIdleInTransactionAborted,
  kFastpath,
  kDisabled,
};
const char *SessionStateName(SessionState s);
/* pgstat's BackendState as pg_warden records it. */
SessionState SessionStateOf(BackendState st);

struct UsageEntry {
  UsageKey key; /* written under keys_lock and sample_lock, both exclusive */
  uint32 hash;
  bool in_use;           /* under keys_lock */
  uint32 generation;     /* bumped each time the entry is reclaimed for another key */
  pg_atomic_uint32 pins; /* short holds by a login or the sampler between lookup and count-in */
  pg_atomic_uint64 last_seen;   /* TimestampTz of the last count in or out: reclaim order */
  pg_atomic_uint32 connections; /* exact: login hook in, exit callback out */
  pg_atomic_uint32 peak_connections;
  pg_atomic_uint64 peak_at; /* TimestampTz */
  pg_atomic_uint64 opened;
  pg_atomic_uint64 refused;
  pg_atomic_uint64 terminated;
  /* from the sampler's latest sample, under sample_lock */
  int32 active;
  int32 idle;
  int32 idle_in_transaction;
  double longest_idle_seconds;
  double longest_idle_in_transaction_seconds;
};

/* Admission rules a slot can match (budgets + overrides), as 64-bit words. */
constexpr int kRuleMaskWords = 3;

/*
 * One per backend id. The admission fields (key, rules, admitted) are
 * written by the backend at login and by the rebuild of the rule counters,
 * both under admission_lock (shared at login and exit, exclusive to
 * rebuild) and the slot's spinlock; entry and pid under the spinlock.
 */
struct BackendSlot {
  slock_t mutex;
  int32 pid;
  int32 entry; /* usage entry counted in, -1 if none (or login not established yet) */
  TimestampTz backend_start;
  bool admitted;                /* holds one count in every rule of `rules` and in the total */
  UsageKey key;                 /* the real key at login (printable), never folded */
  uint64 rules[kRuleMaskWords]; /* admission rules the key matched when counted */
};

struct SampledBackend {
  int32 pid;
  int32 entry;  /* the usage row it is shown in (may be a folded <other> row) */
  UsageKey key; /* its real key: database, role and application_name now */
  SessionState state;
  TimestampTz state_start;
  TimestampTz backend_start;
  TimestampTz xact_start;
  SockAddr client_addr;
};

struct UsageShared {
  LWLock *keys_lock;
  LWLock *sample_lock;
  int32 max_tracked;    /* regular keys: entries [1, max_tracked]; entry 0 is never used */
  int32 other_capacity; /* (database, role, <other>) keys: the entries after them */
  int32 capacity;       /* all entries */
  int32 index_size;     /* power of two */
  int32 max_backends;
  int32 used_regular; /* under keys_lock: entries of each part ever used */
  int32 used_other;
  int32 hand_regular; /* under keys_lock: where the next reclaim looks first */
  int32 hand_other;
  pg_atomic_uint64 reclaimed; /* keys reclaimed since start */
  pg_atomic_uint32 used;      /* bound of the entry indexes ever used; grows only */

  /* published by the sampler, under sample_lock */
  int32 current_buffer;
  int32 nsampled;
  TimestampTz sampled_at;
  int32 sampler_pid;
  uint64 samples;
  double last_sample_ms;
  double total_sample_ms;

  UsageEntry *entries;
  int32 *index;
  BackendSlot *slots;
  SampledBackend *sampled[2];
};

extern UsageShared *usage;

Size UsageShmemSize();
/* Number of usage entries (entry indexes are below it), from the settings. */
int32 UsageCapacity();
void UsageShmemInit();

/*
 * Entry for key, added if new (reclaiming the least recently seen key with
 * no connections when the table is full; only past that folding into
 * (database, role, <other>)). Never fails. The entry is returned pinned
 * (it cannot be reclaimed): the caller counts in, then calls UnpinEntry.
 */
int32 FindOrAddEntry(const UsageKey &key);
void UnpinEntry(int32 e);
/* Called (under keys_lock exclusive) before entry e is given to another key. */
extern void (*entry_reclaim_hook)(int32 e);

/*
 * A key as pg_warden stores and matches it: each name cut to NAMEDATALEN-1
 * bytes, every byte outside printable ASCII replaced by '?' (PostgreSQL's
 * rule for application_name, applied to all three names).
 */
void MakeKey(UsageKey *key, const char *database, const char *role, const char *application);
void MakePrintable(char *dst, const char *src);

/* The real key of a sampled session (what idle policies match), never a folded row. */
inline const UsageKey &SessionKey(const SampledBackend &sb) { return sb.key; }

/* Login path (auth hook): is there a slot for this backend? */
bool CanCountThisBackend();
/* This backend's slot (CanCountThisBackend() must hold). */
BackendSlot *MySlot();
/*
 * Login path: registers, once, the exit callback (which calls
 * release_admission, then counts out of the usage entry) and the callback
 * that counts the login in its usage entry when the startup transaction
 * commits, i.e. once PostgreSQL accepted the login.
 */
void RegisterLoginCallbacks(void (*release_admission)(BackendSlot *slot));
/* Counts one refused login against key (its entry is added if new). */
void CountRefused(const UsageKey &key);

/* The sampler moves a session to another key when its application_name changed. */
void Rekey(int32 slot, int32 pid, int32 from_entry, int32 to_entry);

/* The usage entry the backend with this pid is counted in, -1 if none (walks the slots). */
int32 EntryOfPid(int32 pid);

/* Text form of a client address as pg_stat_activity shows it; "" if none (unix socket). */
void FormatClientAddr(const SockAddr &addr, char *out, size_t size);

/* Raises a clear error when the library was not preloaded. */
void RequirePreloaded();

}  // namespace warden
