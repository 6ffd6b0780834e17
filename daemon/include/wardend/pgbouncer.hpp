// Reading PgBouncer's admin console for one server (SHOW POOLS, SHOW STATS)
// into the status board's shapes; the connection is kept between polls and
// opened again after a failure. Through pg.hpp's ConsoleConnection (no libpq
// here). No locks: a BouncerPoller belongs to one server's thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "wardend/pg.hpp"
#include "wardend/status.hpp"

namespace wardend {

// The rows of SHOW POOLS / SHOW STATS (column -> text) as status values;
// missing columns read as 0 (they differ between PgBouncer versions).
std::vector<PoolStat> PoolsFromRows(const std::vector<std::map<std::string, std::string>>& rows);
std::vector<BouncerDbStat> StatsFromRows(
    const std::vector<std::map<std::string, std::string>>& rows);
// SHOW CLIENTS rows counted per (database, user, application_name), at most
// kMaxClientGroups groups: the clients of further groups are counted under
// application_name "(other)" of their database and user, so the sum stays exact.
constexpr size_t kMaxClientGroups = 256;
std::vector<BouncerClients> ClientsFromRows(
    const std::vector<std::map<std::string, std::string>>& rows);

class BouncerPoller {
 public:
  void Reset() { console_.reset(); }
  // One poll; never throws (a failure is in the report and drops the connection).
  BouncerReport Poll(const std::string& dsn);

 private:
  std::unique_ptr<ConsoleConnection> console_;
};

}  // namespace wardend
