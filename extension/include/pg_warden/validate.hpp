/*
 * validate.hpp — the one way SQL functions check their arguments, with one
 * wording: `invalid value for "<argument>": <why>` (SQLSTATE 22023), raised
 * before anything changes. PostgreSQL regime (ereports directly); no locks.
 */
#pragma once

#include "pg_warden/pg.hpp"

namespace warden {

/* Raises `invalid value for "arg": why` (22023), with an optional detail and hint. */
[[noreturn]] void InvalidArgument(const char *arg, const char *why, const char *detail = nullptr,
                                  const char *hint = nullptr);

/* Argument argno must not be NULL. */
void RequireArgument(FunctionCallInfo fcinfo, int argno, const char *arg);

/*
 * Copies an optional text argument into out (size bytes with the NUL),
 * refusing one that would not fit; returns false (out = "") if NULL.
 */
bool TextArgument(FunctionCallInfo fcinfo, int argno, const char *arg, char *out, size_t size);

/* An application pattern: printable ASCII only (what application_name can hold). */
void CheckApplicationPattern(const char *arg, const char *pattern);

/*
 * A role (database) a budget, a policy or an override names must exist: the
 * one rule of every SQL function, `role "x" does not exist` (42704) and
 * `database "x" does not exist` (3D000). nullptr (any) passes.
 */
void CheckRoleExists(const char *role);
void CheckDatabaseExists(const char *database);

/* A non-NULL, non-negative integer. */
int32 NonNegativeArgument(FunctionCallInfo fcinfo, int argno, const char *arg);

/* A non-NULL, positive interval, in microseconds (months count 30 days; saturates). */
int64 PositiveIntervalArgument(FunctionCallInfo fcinfo, int argno, const char *arg);

/* An interval in microseconds (months count 30 days, like extract(epoch); saturates). */
int64 IntervalUsecs(const Interval *iv);

}  // namespace warden
