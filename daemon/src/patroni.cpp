// Patroni's REST API (see patroni.hpp). No locks.
#include "wardend/patroni.hpp"

#include <httplib.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <regex>

namespace wardend {

const PatroniMember* PatroniCluster::RunningLeader() const {
  for (const auto& m : members)
    if (m.Leader() && m.Running()) return &m;
  return nullptr;
}

const PatroniMember* PatroniCluster::Find(const std::string& name) const {
  for (const auto& m : members)
    if (m.name == name) return &m;
  return nullptr;
}

namespace {

std::optional<int64_t> OptInt(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) return std::nullopt;  // e.g. "unknown"
  return it->get<int64_t>();
}

std::string OptString(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

PatroniCluster ParseClusterDocument(const std::string& body) {
  nlohmann::json doc = nlohmann::json::parse(body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) throw PatroniError("not a JSON object");
  auto ms = doc.find("members");
  if (ms == doc.end() || !ms->is_array()) throw PatroniError("no \"members\" array");
  PatroniCluster out;
  if (auto p = doc.find("pause"); p != doc.end() && p->is_boolean()) out.paused = p->get<bool>();
  for (const auto& j : *ms) {
    if (!j.is_object()) throw PatroniError("a member is not an object");
    PatroniMember m;
    m.name = OptString(j, "name");
    if (m.name.empty()) throw PatroniError("a member has no name");
    m.role = OptString(j, "role");
    m.state = OptString(j, "state");
    m.host = OptString(j, "host");
    auto port = OptInt(j, "port");
    m.lag_bytes = OptInt(j, "lag");
    m.timeline = OptInt(j, "timeline");
    if (m.host.empty() || !port || *port <= 0 || *port > 65535) continue;
    m.port = static_cast<int>(*port);
    out.members.push_back(std::move(m));
  }
  std::sort(out.members.begin(), out.members.end(),
            [](const PatroniMember& a, const PatroniMember& b) { return a.name < b.name; });
  return out;
}

std::string MemberDsn(const std::string& cluster_dsn, const PatroniMember& m) {
  // Later keywords win in libpq: host and port come last. A host is quoted.
  std::string host;
  for (char c : m.host) {
    if (c == '\\' || c == '\'') host += '\\';
    host += c;
  }
  return cluster_dsn + " host='" + host + "' port=" + std::to_string(m.port);
}

std::map<std::string, int> SplitLimit(int limit, const std::map<std::string, int>& counts) {
  std::map<std::string, int> caps;
  if (counts.empty()) return caps;
  long long total = 0;
  for (const auto& [m, n] : counts) total += std::max(n, 0);
  std::vector<std::pair<long long, std::string>> rest;  // remainder (scaled), member
  int given = 0;
  for (const auto& [m, n] : counts) {
    long long w = total > 0 ? std::max(n, 0) : 1;
    long long t = total > 0 ? total : static_cast<long long>(counts.size());
    long long share = static_cast<long long>(limit) * w;
    caps[m] = static_cast<int>(share / t);
    given += caps[m];
    rest.emplace_back(share % t, m);
  }
  std::stable_sort(rest.begin(), rest.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; given < limit && i < rest.size(); ++i, ++given) ++caps[rest[i].second];
  return caps;
}

PatroniCluster FetchCluster(const std::vector<std::string>& urls, int timeout_ms) {
  static const std::regex url_re(R"(^(https?://[^/]+)(/.*)?$)");
  std::string errors;
  for (const auto& url : urls) {
    std::smatch m;
    std::string why;
    if (!std::regex_match(url, m, url_re)) {
      why = "not an http:// URL";
    } else {
      std::string base = m[2].matched ? m[2].str() : "";
      while (!base.empty() && base.back() == '/') base.pop_back();
      httplib::Client cli(m[1].str());
      auto t = std::chrono::milliseconds(timeout_ms);
      cli.set_connection_timeout(t);
      cli.set_read_timeout(t);
      cli.set_write_timeout(t);
      auto res = cli.Get(base + "/cluster");
      if (!res) {
        why = httplib::to_string(res.error());
      } else if (res->status != 200) {
        why = "HTTP " + std::to_string(res->status);
      } else {
        try {
          return ParseClusterDocument(res->body);
        } catch (const PatroniError& e) {
          why = e.what();
        }
      }
    }
    if (!errors.empty()) errors += "; ";
    errors.append(url).append(": ").append(why);
  }
  throw PatroniError("no Patroni REST API answered GET /cluster (" + errors + ")");
}

}  // namespace wardend
