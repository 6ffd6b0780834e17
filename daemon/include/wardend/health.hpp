// /health, /health/ready, /metrics and /alerts as pure functions of the
// status (unit-tested without a server or a socket).
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "wardend/config.hpp"
#include "wardend/status.hpp"

namespace wardend {

// The (degraded, unhealthy) usage thresholds for a server: those of the
// configuration file when it sets them, else the server's warden.* settings,
// else 80 and 90.
std::pair<double, double> Thresholds(const DaemonConfig& d, const ServerStatus& s);
// "Healthy" | "Degraded" | "Unhealthy" for one server.
std::string ServerHealth(const DaemonConfig& d, const ServerStatus& s);
// The /health document; *http_status is 200 (Healthy, Degraded) or 503.
nlohmann::json HealthJson(const DaemonConfig& d, const DaemonStatus& st, int* http_status);
// /health/ready: every server polled successfully (last poll ok).
nlohmann::json ReadyJson(const DaemonStatus& st, int* http_status);
// Alerts that hold now for one server (key -> severity, message; since left 0).
std::map<std::string, AlertState> CurrentAlerts(const Config& cfg, const ServerStatus& s);
nlohmann::json AlertsJson(const DaemonStatus& st);
// Prometheus text exposition format 0.0.4.
std::string MetricsText(const Config& cfg, const DaemonStatus& st);
// The status page's one document (GET /status.json): /health's document, the
// active alerts, the roles and applications holding the most connections with
// their limits and counters, and the newest actions first.
nlohmann::json StatusJson(const Config& cfg, const DaemonStatus& st, double now_unix);
// wardend's version and the source commit it was built from ("unknown" outside git).
std::string BuildVersion();
std::string BuildCommit();
// Escapes a label value (backslash, double quote, newline).
std::string EscapeLabel(const std::string& v);

}  // namespace wardend
