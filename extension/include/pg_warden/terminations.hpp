/*
 * terminations.hpp — the ring of termination decisions behind the view
 * warden.terminations: every session the sampler's idle policies,
 * warden.terminate_idle() or the daemon (warden.record_action) terminated,
 * and every dry-run decision.
 *
 * Shared memory: a fixed ring of kTerminationsRing records (the newest win),
 * guarded by terminations_lock (exclusive to append, shared to copy out).
 * The ring is saved to $PGDATA/pg_warden_terminations.dat by the postmaster
 * at a clean shutdown and loaded (then removed) at the next start; a crash
 * loses it; a file that fails its CRC-32C, or was written by another
 * version, is ignored with a LOG line.
 */
#pragma once

#include "pg_warden/pg.hpp"

namespace warden {

constexpr int kTerminationsRing = 1024;

enum class TerminationSource : uint8 { kPolicy = 0, kManual, kDaemon };

struct TerminationRecord {
  TimestampTz at;
  int32 pid;
  char database[NAMEDATALEN];
  char role[NAMEDATALEN];
  char application[NAMEDATALEN];
  char client_addr[64]; /* numeric address, empty = NULL (unix socket) */
  char state[32];
  double idle_seconds;
  char policy[NAMEDATALEN]; /* empty = NULL */
  TerminationSource source;
  bool dry_run;
};

Size TerminationsShmemSize();
void TerminationsShmemInit();

/* Appends one record (takes terminations_lock; PostgreSQL regime). */
void RecordTermination(const TerminationRecord &rec);

/*
 * The one way a session is terminated and recorded (idle policies and
 * terminate_idle): sets rec->at, sends SIGTERM to rec->pid if it is still a
 * session of roleid (unless rec->dry_run), then sets rec->idle_seconds from
 * state_start, appends the record, counts it on usage entry `entry` (-1:
 * none) and logs it. False, with nothing recorded, if the session was gone.
 * PostgreSQL regime.
 */
bool TerminateAndRecord(TerminationRecord *rec, Oid roleid, TimestampTz state_start, int32 entry);

/* Appends rec as a row of the terminations row type to a materialized SRF. */
void PutTerminationRow(ReturnSetInfo *rsinfo, const TerminationRecord &rec);

}  // namespace warden
