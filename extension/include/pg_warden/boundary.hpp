/*
 * boundary.hpp — the one boundary between PostgreSQL's error handling
 * (ereport = longjmp) and C++'s (exceptions).
 *
 * pg_warden code is in one of two regimes:
 *  - PostgreSQL regime: may ereport, never throws, owns no C++ object with a
 *    destructor while it may ereport (palloc, List, plain structs only).
 *  - C++ regime: may throw, never ereports, and calls no PostgreSQL
 *    function that can ereport (today only the pure parts are C++ regime:
 *    the cron parser, the matcher, the idle selection; they include no
 *    PostgreSQL header at all).
 *
 * Every function PostgreSQL calls (SQL functions, hooks, _PG_init, the
 * sampler's and the loader's main) enters through Guard() (or the
 * WARDEN_FUNCTION macro). Guard catches every exception, records it in
 * static storage (no allocation in the handler), leaves the catch block,
 * and only then raises ereport(ERROR) with the warden::Error's SQLSTATE, detail and hint: the
 * longjmp starts in a frame with no live C++ objects. (There is no opposite
 * guard: no C++-regime code calls a PostgreSQL function that can ereport.)
 */
#pragma once

#include <exception>
#include <string>
#include <utility>

#include "pg_warden/error.hpp"
#include "pg_warden/pg.hpp"

static_assert(warden::kInvalidParameterValue == ERRCODE_INVALID_PARAMETER_VALUE,
              "SqlState() must encode like MAKE_SQLSTATE");

namespace warden {

namespace detail {
/* Records the exception being handled; called only from a catch block. */
void CaptureCurrentException(const char *where) noexcept;
/* Raises the recorded error with ereport(ERROR); never returns. */
[[noreturn]] void RaiseCaptured();
}  // namespace detail

/*
 * Runs f (C++ regime allowed) and turns any exception into ereport(ERROR)
 * after the C++ frames are gone. f itself may also ereport directly as long
 * as no C++ object with a destructor is live at that moment.
 */
template <typename F>
auto Guard(const char *where, F &&f) -> decltype(f()) {
  try {
    return f();
  } catch (...) {
    detail::CaptureCurrentException(where);
  }
  detail::RaiseCaptured();
}

}  // namespace warden

/*
 * Declares a SQL-callable function whose body runs inside Guard():
 *
 *   WARDEN_FUNCTION(reset_stats) { ...; PG_RETURN_VOID(); }
 */
#define WARDEN_FUNCTION(name)                                                         \
  static Datum name##_body(PG_FUNCTION_ARGS);                                         \
  extern "C" {                                                                        \
  PG_FUNCTION_INFO_V1(name);                                                          \
  Datum name(PG_FUNCTION_ARGS) {                                                      \
    return warden::Guard(#name, [fcinfo]() -> Datum { return name##_body(fcinfo); }); \
  }                                                                                   \
  }                                                                                   \
  static Datum name##_body(PG_FUNCTION_ARGS)
