/*
 * cpp_only.hpp — included by headers that must come before pg.hpp (they use
 * the C++ standard library, whose names port.h would redefine).
 */
#pragma once

#ifdef PG_WARDEN_PG_INCLUDED
static_assert(false, "include C++-only pg_warden headers before <pg_warden/pg.hpp>");
#endif
