/*
 * worker.hpp — the pg_warden background worker (sampler).
 */
#pragma once

#include "pg_warden/pg.hpp"

namespace warden {

void RegisterWorker();

}  // namespace warden

extern "C" PGDLLEXPORT void warden_worker_main(Datum arg);
