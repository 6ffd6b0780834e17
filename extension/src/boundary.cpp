/*
 * boundary.cpp — the exception side of the error boundary (see boundary.hpp).
 * Captured errors live in static storage so that the catch handler never
 * allocates and never ereports.
 */
#include <cstring>
#include <new>

#include "pg_warden/boundary.hpp"

namespace warden::detail {
namespace {

struct Captured {
  int sqlstate;
  char where[64];
  char message[1024];
  char detail[1024];
  char hint[512];
};

Captured captured;

void Copy(char *dst, size_t size, const char *src) { strlcpy(dst, src ? src : "", size); }

}  // namespace

void CaptureCurrentException(const char *where) noexcept {
  captured.sqlstate = ERRCODE_INTERNAL_ERROR;
  captured.detail[0] = captured.hint[0] = '\0';
  Copy(captured.where, sizeof(captured.where), where);
  try {
    throw;
  } catch (const Error &e) {
    captured.sqlstate = e.sqlstate();
    Copy(captured.message, sizeof(captured.message), e.what());
    Copy(captured.detail, sizeof(captured.detail), e.detail().c_str());
    Copy(captured.hint, sizeof(captured.hint), e.hint().c_str());
  } catch (const std::bad_alloc &) {
    captured.sqlstate = ERRCODE_OUT_OF_MEMORY;
    Copy(captured.message, sizeof(captured.message), "out of memory");
  } catch (const std::exception &e) {
    Copy(captured.message, sizeof(captured.message), e.what());
  } catch (...) {
    Copy(captured.message, sizeof(captured.message), "unknown C++ exception");
  }
}

void RaiseCaptured() {
  if (captured.sqlstate == ERRCODE_INTERNAL_ERROR) {
    ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("pg_warden: %s", captured.message),
                    errcontext("pg_warden function %s", captured.where)));
  }
  ereport(ERROR, (errcode(captured.sqlstate), errmsg("%s", captured.message),
                  captured.detail[0] ? errdetail("%s", captured.detail) : 0,
                  captured.hint[0] ? errhint("%s", captured.hint) : 0));
  pg_unreachable();
}

}  // namespace warden::detail
