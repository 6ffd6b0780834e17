// `wardenctl plan FILE`: the scaling arithmetic of services x instances x pool
// size against max_connections.
#pragma once

#include <string>
#include <vector>

namespace wardend {

struct PlanService {
  std::string name;
  int instances = 0;
  int pool_size = 0;
  long long total() const { return static_cast<long long>(instances) * pool_size; }
};

struct PlanInput {
  int max_connections = 0;
  int reserved = 3;  // superuser_reserved_connections
  int headroom = 0;  // slots kept free for admin tools, wardend, migrations
  std::vector<PlanService> services;
};

struct PlanServiceResult {
  PlanService service;
  long long total = 0;
  double share_percent = 0;  // of the usable connections
  // Instances of this service at which the server is exhausted (the others unchanged):
  // the smallest n with others + n * pool_size > usable.
  long long exhausts_at_instances = 0;
  long long spare_instances = 0;  // exhausts_at_instances - 1 - instances (negative: already over)
};

struct PlanResult {
  int usable = 0;  // max_connections - reserved - headroom
  long long total = 0;
  long long headroom_left = 0;  // usable - total
  double usage_percent = 0;
  std::vector<PlanServiceResult> services;
  std::string pooler;  // "needed" | "advised" | "not needed"
  std::string verdict;
};

PlanInput ParsePlan(const std::string& text, const std::string& path);  // throws ConfigError
PlanResult ComputePlan(const PlanInput& in);
std::string FormatPlan(const PlanInput& in, const PlanResult& r);

}  // namespace wardend
