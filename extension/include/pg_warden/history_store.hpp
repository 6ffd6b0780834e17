/*
 * history_store.hpp — the usage history's shared memory as its three rooms
 * see it: recording by the sampler (history.cpp), the history file
 * (history_file.cpp) and the SQL functions (history_views.cpp). Layout and
 * locking protocol: history.hpp.
 */
#pragma once

#include "pg_warden/pg.hpp"
#include "pg_warden/usage.hpp"

namespace warden {

/*
 * Ring lengths, each with one more bucket than the period so that the whole
 * period before the current, unfinished bucket is kept: 24 h of minutes,
 * 7 days of hours, and the percentile window of 7 days of daily histograms.
 */
constexpr int32 kMinutes = 1440 + 1;
constexpr int32 kHours = 168 + 1;
constexpr int32 kDays = 7 + 1;
/* Histogram bins: exact below 32, then 8 bins per power of two up to 65535. */
constexpr int32 kExactBins = 32;
constexpr int32 kBins = kExactBins + 8 * 11;
/* Per-sample counts are clamped to 16 bits (max_connections above it is rare). */
constexpr uint32 kMaxCount = 65535;

/* Headroom of the recommendation over active_p99: ×1.25, then +1. */
constexpr int32 kHeadroomNum = 5;
constexpr int32 kHeadroomDen = 4;
constexpr int32 kHeadroomExtra = 1;

/* One minute of one key. samples ≤ 65535 (a 10 ms interval gives 6000). */
struct MinuteBucket {
  uint16 samples;
  uint16 active_peak;
  uint16 connections_peak;
  uint16 idle_in_transaction_peak;
  uint32 active_sum; /* ≤ 65535 × 65535: fits */
  uint32 connections_sum;
  uint32 idle_in_transaction_sum;
};
static_assert(sizeof(MinuteBucket) == 20, "MinuteBucket is part of the file format");

/* One hour of one key. */
struct HourBucket {
  uint64 active_sum;
  uint64 connections_sum;
  uint64 idle_in_transaction_sum;
  uint32 samples;
  uint16 active_peak;
  uint16 connections_peak;
  uint16 idle_in_transaction_peak;
  uint16 unused;
};
static_assert(sizeof(HourBucket) == 40, "HourBucket is part of the file format");

/*
 * One UTC day of one key: how many samples saw n connections in use (active
 * or idle in transaction), as a histogram, for the percentiles of pool_advice.
 */
struct DayHistogram {
  TimestampTz first_at; /* first sample of the day */
  uint32 samples;
  uint16 in_use_max;
  uint16 connections_max;
  uint32 in_use[kBins];
};

struct HistorySlot {
  int32 entry;       /* usage entry, -1 once that entry was reclaimed; meaningless in the file */
  int32 last_minute; /* newest minute/hour/day number recorded (since 2000-01-01 UTC) */
  int32 last_hour;
  int32 last_day;
  MinuteBucket minutes[kMinutes];
  HourBucket hours[kHours];
  DayHistogram days[kDays];
};

struct HistoryShared {
  LWLock *lock;
  int32 nslots;     /* warden.history_keys */
  int32 capacity;   /* usage entries covered by slot_of_entry */
  int32 used_slots; /* grows only; under lock */
  int32 loaded_slots;
  uint64 records; /* samples recorded, and their cost */
  double last_record_ms;
  double total_record_ms;
  TimestampTz saved_at; /* the sampler's last periodic save, and its cost */
  double last_save_ms;
  int32 *slot_of_entry;
  UsageKey *slot_keys; /* the key of each slot: kept when its usage entry is reclaimed */
  HistorySlot *slots;
};

extern HistoryShared *history;

/* ---- time buckets ---------------------------------------------------------- */

inline int32 FloorDiv(TimestampTz t, int64 unit) {
  int64 q = t / unit;
  if (t % unit != 0 && t < 0) q--;
  return static_cast<int32>(q);
}

inline int32 Ring(int32 n, int32 size) {
  const int32 r = n % size;
  return r < 0 ? r + size : r;
}

struct SampleTime {
  TimestampTz at;
  int32 minute, hour, day;
};

inline SampleTime TimeOf(TimestampTz at) {
  return {at, FloorDiv(at, USECS_PER_MINUTE), FloorDiv(at, USECS_PER_HOUR),
          FloorDiv(at, USECS_PER_DAY)};
}

/* Moves a ring forward to bucket `now`, clearing the buckets it skips. */
template <typename Bucket>
inline int32 Advance(Bucket *ring, int32 size, int32 last, int32 now) {
  if (now <= last) return last; /* same bucket, or the clock went back: keep the newest */
  const int32 from = (now - last > size) ? now - size + 1 : last + 1;
  for (int32 n = from; n <= now; n++) memset(&ring[Ring(n, size)], 0, sizeof(Bucket));
  return now;
}

inline uint16 Clamp16(int64 v) {
  if (v <= 0) return 0;
  return v >= kMaxCount ? static_cast<uint16>(kMaxCount) : static_cast<uint16>(v);
}

/* ---- histogram bins ---------------------------------------------------------- */

inline int32 BinOf(uint32 v) {
  if (v < static_cast<uint32>(kExactBins)) return static_cast<int32>(v);
  const int32 octave = 31 - __builtin_clz(v); /* ≥ 5 */
  return kExactBins + (octave - 5) * 8 + static_cast<int32>((v >> (octave - 3)) & 7);
}

/* The largest value a bin holds. */
inline int32 BinUpper(int32 bin) {
  if (bin < kExactBins) return bin;
  const int32 k = bin - kExactBins;
  const int32 shift = 5 + k / 8 - 3;
  return ((8 + k % 8) << shift) + (1 << shift) - 1;
}

/* Nearest-rank percentile (the smallest value with at least pct % of the samples at or below). */
inline int32 Percentile(const uint64 *bins, uint64 total, int32 pct, int32 max) {
  uint64 rank = (total * static_cast<uint64>(pct) + 99) / 100;
  if (rank == 0) rank = 1;
  uint64 seen = 0;
  for (int32 b = 0; b < kBins; b++) {
    seen += bins[b];
    if (seen >= rank) return Min(BinUpper(b), max);
  }
  return max;
}

/* -- the history file (history_file.cpp) -- */

/* The sampler: every warden.history_save_interval, so that a crash loses little. */
void MaybeSaveHistory(TimestampTz now);
/* The postmaster, as it exits (on_shmem_exit). */
void SaveHistoryAtExit(int code, Datum arg);
/* The postmaster, at shared memory creation: loads the last saved file. */
void LoadHistory();

}  // namespace warden
