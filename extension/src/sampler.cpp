/*
 * sampler.cpp — the sampler, the background worker shown as "pg_warden
 * worker": every warden.sample_interval it samples
 * the state of every client backend (pg_stat_activity's source, read with
 * pgstat_read_current_status), publishes per-key active/idle counts and the
 * per-backend sample under sample_lock, and re-keys sessions whose
 * application_name changed after login. It connects to no database (shared
 * catalogs only), so it runs on a primary and a hot standby alike. After
 * each sample it hands over to the enforcer (idle policies), the usage
 * history and the loader's launcher.
 *
 * Locks: keys_lock via FindOrAddEntry when re-keying; BackendSlot.mutex while
 * reading a slot; sample_lock exclusive only to publish (a copy of a few
 * counters per key and a buffer flip).
 */
#include "pg_warden/sampler.hpp"

#include "pg_warden/boundary.hpp"
#include "pg_warden/enforcer.hpp"
#include "pg_warden/guc.hpp"
#include "pg_warden/history.hpp"
#include "pg_warden/loader.hpp"
#include "pg_warden/usage.hpp"

namespace warden {
namespace {

struct EntrySample {
  int32 active;
  int32 idle;
  int32 idle_in_transaction;
  double longest_idle_seconds;
  double longest_idle_in_transaction_seconds;
};

/* pid -> slot, rebuilt each sample (open addressing, size a power of two). */
struct PidMap {
  int32 *pids;
  int32 *slots;
  uint32 mask;
};

EntrySample *entry_samples = nullptr;
PidMap pid_map;
Oid *sampled_roles = nullptr;   /* role of each backend in the sample being built */
int32 *sampled_slots = nullptr; /* its BackendSlot index */

void ClearWorkerPid(int, Datum) {
  if (usage == nullptr) return;
  LWLockAcquire(usage->sample_lock, LW_EXCLUSIVE);
  if (usage->sampler_pid == MyProcPid) usage->sampler_pid = 0;
  LWLockRelease(usage->sample_lock);
}

void BuildPidMap() {
  const uint32 size = pid_map.mask + 1;
  for (uint32 i = 0; i < size; i++) pid_map.pids[i] = 0;
  for (int32 s = 0; s < usage->max_backends; s++) {
    BackendSlot *slot = &usage->slots[s];
    SpinLockAcquire(&slot->mutex);
    const int32 pid = slot->pid;
    const int32 entry = slot->entry;
    SpinLockRelease(&slot->mutex);
    if (pid == 0 || entry < 0) continue;
    uint32 i = static_cast<uint32>(pid) & pid_map.mask;
    while (pid_map.pids[i] != 0) i = (i + 1) & pid_map.mask;
    pid_map.pids[i] = pid;
    pid_map.slots[i] = s;
  }
}

int32 SlotOf(int32 pid) {
  for (uint32 i = static_cast<uint32>(pid) & pid_map.mask;; i = (i + 1) & pid_map.mask) {
    if (pid_map.pids[i] == 0) return -1;
    if (pid_map.pids[i] == pid) return pid_map.slots[i];
  }
}

/* The application a sampled backend now reports, as a key would hold it. */
bool ApplicationChanged(const UsageEntry &entry, const char *appname) {
  return strncmp(entry.key.application, appname ? appname : "", NAMEDATALEN - 1) != 0;
}

/* Samples, then enforces idle policies; returns when enforcement must run again (0: no need). */
TimestampTz SampleOnce() {
  instr_time start;
  INSTR_TIME_SET_CURRENT(start);
  const TimestampTz now = GetCurrentTimestamp();

  /* sized for every entry: re-keying may add keys during the sample */
  memset(entry_samples, 0, sizeof(EntrySample) * static_cast<Size>(usage->capacity));
  BuildPidMap();

  const int32 target = 1 - usage->current_buffer; /* only this process flips it */
  SampledBackend *out = usage->sampled[target];
  int32 nsampled = 0;

  pgstat_clear_backend_activity_snapshot();
  const int n = pgstat_fetch_stat_numbackends();
  for (int i = 1; i <= n; i++) {
    LocalPgBackendStatus *local = pgstat_fetch_stat_local_beentry(i);
    if (local == nullptr) continue;
    PgBackendStatus *be = &local->backendStatus;
    if (be->st_backendType != B_BACKEND || be->st_procpid <= 0) continue;
    const int32 slot = SlotOf(be->st_procpid);
    if (slot < 0) continue; /* still logging in, or not counted */
    BackendSlot *bs = &usage->slots[slot];
    UsageKey real; /* the session's real key: its login's database and role, its application now */
    char login_application[NAMEDATALEN];
    SpinLockAcquire(&bs->mutex);
    int32 entry = bs->entry;
    memcpy(real.database, bs->key.database, NAMEDATALEN);
    memcpy(real.role, bs->key.role, NAMEDATALEN);
    memcpy(login_application, bs->key.application, NAMEDATALEN);
    SpinLockRelease(&bs->mutex);
    if (entry < 0 || static_cast<uint32>(entry) >= pg_atomic_read_u32(&usage->used)) continue;
    MakePrintable(real.application, be->st_appname);
    /* A session folded at login stays in its <other> row until it changes its name. */
    const bool folded_as_logged_in =
        strcmp(usage->entries[entry].key.application, kOtherApplication) == 0 &&
        strcmp(real.application, login_application) == 0;

    if (!folded_as_logged_in && ApplicationChanged(usage->entries[entry], real.application)) {
      UsageKey key = usage->entries[entry].key;
      memcpy(key.application, real.application, NAMEDATALEN);
      const int32 to = FindOrAddEntry(key);
      if (to != entry) {
        Rekey(slot, be->st_procpid, entry, to);
        entry = to;
      }
      UnpinEntry(to);
    }

    const SessionState state = SessionStateOf(be->st_state);
    {
      EntrySample &es = entry_samples[entry];
      switch (state) {
        case SessionState::kActive:
        case SessionState::kFastpath:
          es.active++;
          break;
        case SessionState::kIdle: {
          es.idle++;
          const double idle_s =
              static_cast<double>(now - be->st_state_start_timestamp) / USECS_PER_SEC;
          if (idle_s > es.longest_idle_seconds) es.longest_idle_seconds = idle_s;
          break;
        }
        case SessionState::kIdleInTransaction:
        case SessionState::kIdleInTransactionAborted: {
          es.idle_in_transaction++;
          const double idle_s =
              static_cast<double>(now - be->st_state_start_timestamp) / USECS_PER_SEC;
          if (idle_s > es.longest_idle_in_transaction_seconds)
            es.longest_idle_in_transaction_seconds = idle_s;
          break;
        }
        default:
          break;
      }
    }

    if (nsampled < usage->max_backends) {
      SampledBackend &sb = out[nsampled++];
      sb.pid = be->st_procpid;
      sb.entry = entry;
      sb.key = real;
      sb.state = state;
      sb.state_start = be->st_state_start_timestamp;
      sb.backend_start = be->st_proc_start_timestamp;
      sb.xact_start = be->st_xact_start_timestamp;
      sb.client_addr = be->st_clientaddr;
      sampled_roles[nsampled - 1] = be->st_userid;
      sampled_slots[nsampled - 1] = slot;
    }
  }

  const TimestampTz deadline =
      EnforceIdlePolicies(out, sampled_roles, sampled_slots, nsampled, now);

  instr_time elapsed;
  INSTR_TIME_SET_CURRENT(elapsed);
  INSTR_TIME_SUBTRACT(elapsed, start);
  const double ms = INSTR_TIME_GET_MILLISEC(elapsed);

  const uint32 used = pg_atomic_read_u32(&usage->used);
  pg_read_barrier();
  LWLockAcquire(usage->sample_lock, LW_EXCLUSIVE);
  for (uint32 e = 0; e < used; e++) {
    UsageEntry &entry = usage->entries[e];
    entry.active = entry_samples[e].active;
    entry.idle = entry_samples[e].idle;
    entry.idle_in_transaction = entry_samples[e].idle_in_transaction;
    entry.longest_idle_seconds = entry_samples[e].longest_idle_seconds;
    entry.longest_idle_in_transaction_seconds =
        entry_samples[e].longest_idle_in_transaction_seconds;
  }
  usage->current_buffer = target;
  usage->nsampled = nsampled;
  usage->sampled_at = now;
  usage->samples++;
  usage->last_sample_ms = ms;
  usage->total_sample_ms += ms;
  LWLockRelease(usage->sample_lock);
  HistoryRecordSample(now);
  pgstat_clear_backend_activity_snapshot();
  return deadline;
}

void SamplerMain() {
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  pqsignal(SIGTERM, die);
  BackgroundWorkerUnblockSignals();
  /* Shared catalogs only: no database needed to sample, fine on a standby. */
  BackgroundWorkerInitializeConnection(nullptr, nullptr, 0);
  pgstat_report_appname("pg_warden worker");

  MemoryContext worker_ctx =
      AllocSetContextCreate(TopMemoryContext, "pg_warden worker", ALLOCSET_DEFAULT_SIZES);
  MemoryContextSwitchTo(worker_ctx);
  entry_samples =
      static_cast<EntrySample *>(palloc0(sizeof(EntrySample) * static_cast<Size>(usage->capacity)));
  uint32 map_size = 64;
  while (map_size < static_cast<uint32>(usage->max_backends) * 2) map_size <<= 1;
  pid_map.pids = static_cast<int32 *>(palloc0(sizeof(int32) * map_size));
  pid_map.slots = static_cast<int32 *>(palloc0(sizeof(int32) * map_size));
  pid_map.mask = map_size - 1;
  sampled_roles = static_cast<Oid *>(palloc0(sizeof(Oid) * static_cast<Size>(usage->max_backends)));
  sampled_slots =
      static_cast<int32 *>(palloc0(sizeof(int32) * static_cast<Size>(usage->max_backends)));

  on_shmem_exit(ClearWorkerPid, 0);
  LWLockAcquire(usage->sample_lock, LW_EXCLUSIVE);
  usage->sampler_pid = MyProcPid;
  LWLockRelease(usage->sample_lock);
  ereport(LOG, (errmsg("pg_warden worker started (sample interval %d ms)", guc_sample_interval)));

  /*
   * Two clocks: the sample tick, and the deadline of the next idle-policy
   * offender (so terminations are on time, not up to a tick late). Waking
   * for a deadline samples again (fresh states) without moving the tick.
   */
  TimestampTz next_sample = GetCurrentTimestamp();
  TimestampTz next_deadline = 0;
  uint64 seen_generation = 0;
  for (;;) {
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      ProcessConfigFile(PGC_SIGHUP);
    }
    TimestampTz now = GetCurrentTimestamp();
    const bool tick = now >= next_sample;
    /* the loader sets our latch after a reload: apply new policies at once */
    const uint64 generation = ConfigGeneration();
    if (tick || (next_deadline != 0 && now >= next_deadline) || generation != seen_generation) {
      seen_generation = generation;
      next_deadline = SampleOnce();
      ConfigApplied(generation);
      if (tick) {
        ManageLoader(now);
        next_sample = now + static_cast<TimestampTz>(guc_sample_interval) * 1000;
        if (next_sample < now) next_sample = now;
      }
    }
    TimestampTz wake = next_sample;
    if (next_deadline != 0 && next_deadline < wake) wake = next_deadline;
    /* round up: never wake before the deadline */
    long timeout_ms = static_cast<long>((wake - GetCurrentTimestamp() + 999) / 1000);
    if (timeout_ms < 0) timeout_ms = 0;
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout_ms,
                    PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
  }
}

}  // namespace

void RegisterSampler() {
  BackgroundWorker worker;
  memset(&worker, 0, sizeof(worker));
  worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  /* ConsistentState, not RecoveryFinished: it must run on hot standbys too. */
  worker.bgw_start_time = BgWorkerStart_ConsistentState;
  worker.bgw_restart_time = 1;
  strlcpy(worker.bgw_library_name, "pg_warden", BGW_MAXLEN);
  strlcpy(worker.bgw_function_name, "warden_sampler_main", BGW_MAXLEN);
  strlcpy(worker.bgw_name, "pg_warden worker", BGW_MAXLEN);
  strlcpy(worker.bgw_type, "pg_warden worker", BGW_MAXLEN);
  RegisterBackgroundWorker(&worker);
}

}  // namespace warden

extern "C" void warden_sampler_main(Datum) {
  warden::Guard("warden_sampler_main", [] { warden::SamplerMain(); });
}
