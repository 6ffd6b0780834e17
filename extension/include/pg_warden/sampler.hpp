/*
 * sampler.hpp — the sampler: the background worker registered at
 * _PG_init (shown as "pg_warden worker"), see sampler.cpp.
 */
#pragma once

#include "pg_warden/pg.hpp"

namespace warden {

void RegisterSampler();

}  // namespace warden

extern "C" PGDLLEXPORT void warden_sampler_main(Datum arg);
