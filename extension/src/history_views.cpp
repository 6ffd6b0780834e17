/*
 * history_views.cpp — the set-returning functions behind warden.usage_history,
 * warden.pool_advice and warden.history_stats. Runs in client backends.
 * Locks: history_lock (shared, one slot at a time, copied into local memory
 * before tuples are built). Entry keys are read without keys_lock: they
 * never change once `used` covers them.
 */
#include "pg_warden/history.hpp"
#include "pg_warden/history_store.hpp"

#include "pg_warden/boundary.hpp"
#include "pg_warden/usage.hpp"

namespace warden {
namespace {

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

void KeyValues(const UsageKey &key, Datum *values, bool *) {
  values[0] =
      NameGetDatum(const_cast<NameData *>(reinterpret_cast<const NameData *>(key.database)));
  values[1] = NameGetDatum(const_cast<NameData *>(reinterpret_cast<const NameData *>(key.role)));
  values[2] = CStringGetTextDatum(key.application);
}

double Mean(uint64 sum, uint64 samples) {
  return samples > 0 ? static_cast<double>(sum) / static_cast<double>(samples) : 0.0;
}

}  // namespace
}  // namespace warden

using namespace warden;

WARDEN_FUNCTION(usage_history) {
  RequireHistory();
  InitMaterializedSRF(fcinfo, 0);
  ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
  const SampleTime now = TimeOf(GetCurrentTimestamp());
  HistorySlot *slot = static_cast<HistorySlot *>(palloc(sizeof(HistorySlot)));

  UsageKey *key = static_cast<UsageKey *>(palloc(sizeof(UsageKey)));
  for (int32 i = 0; ReadSlot(i,
                             [slot, key, i](const HistorySlot &s) {
                               *slot = s;
                               *key = history->slot_keys[i];
                             });
       i++) {
    Datum values[12];
    bool nulls[12] = {false};
    KeyValues(*key, values, nulls);

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
    UsageKey key;
    int32 entry;
    int32 last_day;
    DayHistogram days[kDays];
  };
  Days *copy = static_cast<Days *>(palloc(sizeof(Days)));
  uint64 bins[kBins];

  int32 index = 0;
  auto copy_days = [copy, &index](const HistorySlot &s) {
    copy->key = history->slot_keys[index];
    copy->entry = s.entry;
    copy->last_day = s.last_day;
    memcpy(copy->days, s.days, sizeof(s.days));
  };
  for (int32 i = 0; index = i, ReadSlot(i, copy_days); i++) {
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
        copy->entry < 0
            ? 0
            : static_cast<int32>(pg_atomic_read_u32(&usage->entries[copy->entry].connections));
    int32 recommended = (p99 * kHeadroomNum + kHeadroomDen - 1) / kHeadroomDen + kHeadroomExtra;
    if (connections_max > 0) recommended = Min(recommended, connections_max);
    recommended = Max(recommended, 1);

    Datum values[13];
    bool nulls[13] = {false};
    KeyValues(copy->key, values, nulls);
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

WARDEN_FUNCTION(reset_history) {
  RequireHistory();
  ResetHistory();
  PG_RETURN_VOID();
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
