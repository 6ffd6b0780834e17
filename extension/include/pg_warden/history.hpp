/*
 * history.hpp — usage history per (database, role, application) key and the
 * pool right-sizing advice built from it, in bounded shared memory.
 *
 * History is per server (a hot standby has its own connections and its own
 * history), so it lives in shared memory, not in a table. It is fed by the
 * sampler after each published sample, saved to a file by the postmaster at a
 * clean shutdown and loaded back at the next start.
 *
 * Layout (one ShmemInitStruct, sized at postmaster start, never grows):
 *   HistoryShared header
 *   int32        slot_of_entry[UsageCapacity()]   usage entry -> history slot, -1 = none
 *   HistorySlot  slots[warden.history_keys]
 *
 *   UsageKey     slot_keys[warden.history_keys]   each slot's own key
 *
 * A key gets a slot the first time a sample sees it holding a connection.
 * When its usage entry is reclaimed the slot stays with its key (detached,
 * entry -1) and is taken up again if the key comes back. When every slot is
 * in use, a new key takes the least recently recorded slot whose key holds
 * no connection. warden.reset_history() empties it.
 *
 * Locking protocol:
 *   history_lock (LWLock): exclusive while the sampler records a sample (one
 *     acquisition per sample for every slot) or assigns a slot; shared for
 *     readers, who copy one slot at a time into local memory and release it
 *     before building tuples. The postmaster loads (shmem_startup, no other
 *     process yet) and saves (on_shmem_exit, every child gone) without it.
 */
#pragma once

#include "pg_warden/pg.hpp"

namespace warden {

Size HistoryShmemSize();
void HistoryShmemInit();

/*
 * Called by the sampler right after it published a sample taken at
 * sampled_at: records, for every key with a history slot, the sampled active
 * and idle-in-transaction counts (UsageEntry fields the sampler itself just
 * wrote) and the exact connections counter.
 */
void HistoryRecordSample(TimestampTz sampled_at);

/* Forgets every key's history (warden.reset_history()). */
void ResetHistory();

}  // namespace warden
