// Patroni's REST API as wardend reads it: `GET /cluster` of any member gives
// the member list (name, role, state, host, port, lag); a pure function turns
// that document into Members, and a small client (cpp-httplib) asks the
// configured URLs in turn until one answers. No locks, no threads.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace wardend {

struct PatroniMember {
  std::string name;
  std::string role;   // "leader", "replica", "standby_leader", "sync_standby", ...
  std::string state;  // "running", "stopped", "starting", ...
  std::string host;   // postgresql.connect_address
  int port = 0;
  std::optional<int64_t> lag_bytes;  // absent on the leader, or "unknown"
  std::optional<int64_t> timeline;

  bool Leader() const { return role == "leader" || role == "standby_leader"; }
  bool Running() const { return state == "running"; }
};

struct PatroniCluster {
  std::vector<PatroniMember> members;  // sorted by name
  bool paused = false;                 // maintenance mode ("pause": true)

  // The member holding the leader key and running, or nullptr (in the middle
  // of a switchover or failover there is none for a moment).
  const PatroniMember* RunningLeader() const;
  const PatroniMember* Find(const std::string& name) const;
};

class PatroniError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Pure: the body of `GET /cluster` -> the members. Throws PatroniError on a
// document that is not Patroni's (not JSON, no "members" array, a member
// without a name). Members without host/port are skipped: they cannot be
// connected to.
PatroniCluster ParseClusterDocument(const std::string& body);

// A libpq DSN for one member: the cluster's DSN (no host, no port) plus the
// member's host and port.
std::string MemberDsn(const std::string& cluster_dsn, const PatroniMember& m);

// `GET <url>/cluster` on each URL in turn (timeout per URL); the first good
// answer wins. Throws PatroniError naming every URL's failure.
PatroniCluster FetchCluster(const std::vector<std::string>& urls, int timeout_ms);

// Pure: a cluster-wide limit split over the members so that the caps sum to
// it exactly, each member's share in proportion to the connections it holds
// now (largest remainders first, ties by name); with no connections anywhere,
// evenly. `counts`: member -> connections of the role.
std::map<std::string, int> SplitLimit(int limit, const std::map<std::string, int>& counts);

}  // namespace wardend
