/*
 * validate.cpp — argument checks of the SQL functions (see validate.hpp).
 * PostgreSQL regime; no locks.
 */
#include "pg_warden/match.hpp"

#include "pg_warden/validate.hpp"

namespace warden {

void InvalidArgument(const char *arg, const char *why, const char *detail, const char *hint) {
  ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                  errmsg("invalid value for \"%s\": %s", arg, why),
                  detail ? errdetail("%s", detail) : 0, hint ? errhint("%s", hint) : 0));
  pg_unreachable();
}

void RequireArgument(FunctionCallInfo fcinfo, int argno, const char *arg) {
  if (PG_ARGISNULL(argno)) InvalidArgument(arg, "must not be NULL");
}

bool TextArgument(FunctionCallInfo fcinfo, int argno, const char *arg, char *out, size_t size) {
  out[0] = '\0';
  if (PG_ARGISNULL(argno)) return false;
  text *t = PG_GETARG_TEXT_PP(argno);
  if (static_cast<size_t>(VARSIZE_ANY_EXHDR(t)) >= size) {
    char why[64];
    snprintf(why, sizeof(why), "longer than %d bytes", static_cast<int>(size - 1));
    InvalidArgument(arg, why);
  }
  text_to_cstring_buffer(t, out, size);
  return true;
}

void CheckApplicationPattern(const char *arg, const char *pattern) {
  if (!IsPrintableAscii(pattern))
    InvalidArgument(arg,
                    "must be printable ASCII (PostgreSQL replaces any other character "
                    "of application_name with '?')");
}

int32 NonNegativeArgument(FunctionCallInfo fcinfo, int argno, const char *arg) {
  RequireArgument(fcinfo, argno, arg);
  const int32 v = PG_GETARG_INT32(argno);
  if (v < 0) InvalidArgument(arg, "must not be negative");
  return v;
}

void CheckRoleExists(const char *role) {
  if (role != nullptr && !OidIsValid(get_role_oid(role, true)))
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT), errmsg("role \"%s\" does not exist", role)));
}

void CheckDatabaseExists(const char *database) {
  if (database != nullptr && !OidIsValid(get_database_oid(database, true)))
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_DATABASE),
                    errmsg("database \"%s\" does not exist", database)));
}

int64 IntervalUsecs(const Interval *iv) {
  const double us = static_cast<double>(iv->time) + static_cast<double>(iv->day) * USECS_PER_DAY +
                    static_cast<double>(iv->month) * DAYS_PER_MONTH * USECS_PER_DAY;
  if (us > 1e17) return INT64CONST(100000000000000000);
  return static_cast<int64>(us);
}

int64 PositiveIntervalArgument(FunctionCallInfo fcinfo, int argno, const char *arg) {
  RequireArgument(fcinfo, argno, arg);
  const int64 us = IntervalUsecs(PG_GETARG_INTERVAL_P(argno));
  if (us <= 0) InvalidArgument(arg, "must be a positive interval");
  return us;
}

}  // namespace warden
