/*
 * boundary.hpp — the one boundary between PostgreSQL's error handling
 * (ereport = longjmp) and C++'s (exceptions).
 *
 * pg_warden code is in one of two regimes:
 *  - PostgreSQL regime: may ereport, never throws, owns no C++ object with a
 *    destructor while it may ereport (palloc, List, plain structs only).
 *  - C++ regime: may throw, never ereports; calls into PostgreSQL only
 *    through PgCall(), which turns an ereport(ERROR) into a PgError.
 *
 * Every function PostgreSQL calls (SQL functions, hooks, _PG_init, the
 * worker's main) enters through Guard() (or the WARDEN_FUNCTION macro). Guard
 * catches every exception, records it in static storage (no allocation in
 * the handler), leaves the catch block, and only then raises
 * ereport(ERROR): the longjmp starts in a frame with no live C++ objects.
 * A PgError carries PostgreSQL's own ErrorData and is re-thrown unchanged
 * (same SQLSTATE, detail, hint).
 */
#pragma once

#include <exception>
#include <string>
#include <type_traits>
#include <utility>

#include "pg_warden/error.hpp"
#include "pg_warden/pg.hpp"

static_assert(warden::kInvalidParameterValue == ERRCODE_INVALID_PARAMETER_VALUE,
              "SqlState() must encode like MAKE_SQLSTATE");

namespace warden {

/* An ereport(ERROR) caught by PgCall, carried through C++ frames. */
class PgError : public std::exception {
 public:
  explicit PgError(ErrorData *edata) : edata_(edata) {}
  const char *what() const noexcept override { return edata_->message ? edata_->message : "error"; }
  ErrorData *edata() const noexcept { return edata_; }

 private:
  ErrorData *edata_;
};

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

/*
 * Calls a PostgreSQL function from C++ regime code: an ereport(ERROR) inside
 * f becomes a PgError exception. f must own no C++ resources itself.
 */
template <typename F>
auto PgCall(F &&f) -> decltype(f()) {
  using R = decltype(f());
  MemoryContext volatile ctx = CurrentMemoryContext;
  ErrorData *volatile edata = nullptr;
  if constexpr (std::is_void_v<R>) {
    PG_TRY();
    { f(); }
    PG_CATCH();
    {
      MemoryContextSwitchTo(ctx);
      edata = CopyErrorData();
      FlushErrorState();
    }
    PG_END_TRY();
    if (edata != nullptr) throw PgError(edata);
  } else {
    R result{};
    PG_TRY();
    { result = f(); }
    PG_CATCH();
    {
      MemoryContextSwitchTo(ctx);
      edata = CopyErrorData();
      FlushErrorState();
    }
    PG_END_TRY();
    if (edata != nullptr) throw PgError(edata);
    return result;
  }
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
