// PgBouncer's admin console (see pgbouncer.hpp). No locks.
#include "wardend/pgbouncer.hpp"

#include <cstdlib>
#include <map>
#include <tuple>

#include "wardend/config.hpp"

namespace wardend {

namespace {

constexpr size_t kMaxRows = 256;
constexpr size_t kMaxClientRows = 100000;

double Num(const std::map<std::string, std::string>& row, const char* column) {
  auto it = row.find(column);
  return it == row.end() ? 0.0 : std::atof(it->second.c_str());
}

std::string Text(const std::map<std::string, std::string>& row, const char* column) {
  auto it = row.find(column);
  return it == row.end() ? "" : it->second;
}

}  // namespace

std::vector<PoolStat> PoolsFromRows(const std::vector<std::map<std::string, std::string>>& rows) {
  std::vector<PoolStat> out;
  for (const auto& row : rows) {
    PoolStat p;
    p.database = Text(row, "database");
    p.user = Text(row, "user");
    p.cl_active = static_cast<int>(Num(row, "cl_active"));
    p.cl_waiting = static_cast<int>(Num(row, "cl_waiting"));
    p.sv_active = static_cast<int>(Num(row, "sv_active"));
    p.sv_idle = static_cast<int>(Num(row, "sv_idle"));
    p.sv_used = static_cast<int>(Num(row, "sv_used"));
    p.maxwait_seconds = Num(row, "maxwait") + Num(row, "maxwait_us") / 1e6;
    out.push_back(std::move(p));
  }
  return out;
}

std::vector<BouncerDbStat> StatsFromRows(
    const std::vector<std::map<std::string, std::string>>& rows) {
  std::vector<BouncerDbStat> out;
  for (const auto& row : rows) {
    BouncerDbStat b;
    b.database = Text(row, "database");
    b.xact_count = Num(row, "total_xact_count");
    b.query_count = Num(row, "total_query_count");
    b.wait_seconds = Num(row, "total_wait_time") / 1e6;
    out.push_back(std::move(b));
  }
  return out;
}

std::vector<BouncerClients> ClientsFromRows(
    const std::vector<std::map<std::string, std::string>>& rows) {
  using Key = std::tuple<std::string, std::string, std::string>;
  std::map<Key, int> groups;
  for (const auto& row : rows) {
    Key key{Text(row, "database"), Text(row, "user"), Text(row, "application_name")};
    auto it = groups.find(key);
    if (it == groups.end() && groups.size() >= kMaxClientGroups) {
      std::get<2>(key) = "(other)";
      it = groups.find(key);
    }
    if (it == groups.end()) it = groups.emplace(key, 0).first;
    ++it->second;
  }
  std::vector<BouncerClients> out;
  out.reserve(groups.size());
  for (const auto& [key, n] : groups)
    out.push_back({std::get<0>(key), std::get<1>(key), std::get<2>(key), n});
  return out;
}

BouncerReport BouncerPoller::Poll(const std::string& dsn) {
  BouncerReport r;
  try {
    if (!console_ || !console_->ok()) {
      console_.reset();
      console_ = ConsoleConnection::Open(dsn, 2);
    }
    r.pools = PoolsFromRows(console_->Show("SHOW POOLS", kMaxRows));
    r.stats = StatsFromRows(console_->Show("SHOW STATS", kMaxRows));
    r.clients = ClientsFromRows(console_->Show("SHOW CLIENTS", kMaxClientRows));
    r.ok = true;
  } catch (const std::exception& e) {
    console_.reset();
    r.ok = false;
    r.pools.clear();
    r.error = MaskDsn(e.what());
  }
  return r;
}

}  // namespace wardend
