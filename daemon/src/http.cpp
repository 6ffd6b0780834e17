// HTTP endpoints (see http.hpp). Handlers run on httplib's threads and only
// read copies of the status (taken by the provider under the status lock).
#include "wardend/http.hpp"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <stdexcept>

#include "wardend/health.hpp"
#include "wardend/status_html.hpp"

namespace wardend {

bool TokenMatches(const std::string& presented, const std::string& expected) {
  // Time depends on the expected length only, never on where they differ.
  volatile unsigned char diff = presented.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    unsigned char p = i < presented.size() ? static_cast<unsigned char>(presented[i]) : 0;
    diff = static_cast<unsigned char>(diff | (p ^ static_cast<unsigned char>(expected[i])));
  }
  return diff == 0;
}

HttpServer::HttpServer(Provider provider) : provider_(std::move(provider)) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Start(const std::string& host_port) {
  auto colon = host_port.rfind(':');
  std::string host = host_port.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  int port = std::stoi(host_port.substr(colon + 1));
  server_ = std::make_unique<httplib::Server>();
  auto& srv = *server_;
  // Enough threads, and short timeouts, that a few clients which connect and
  // send nothing cannot keep /health from answering.
  srv.new_task_queue = [] { return new httplib::ThreadPool(8); };
  srv.set_read_timeout(2, 0);
  srv.set_write_timeout(2, 0);
  srv.set_keep_alive_timeout(2);
  srv.set_keep_alive_max_count(20);

  auto authorized = [this](const httplib::Request& req, httplib::Response& res,
                           const Config& cfg) -> bool {
    if (cfg.daemon.http_token.empty()) return true;
    std::string h = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    if (h.size() > prefix.size() && h.compare(0, prefix.size(), prefix) == 0 &&
        TokenMatches(h.substr(prefix.size()), cfg.daemon.http_token))
      return true;
    res.status = 401;
    res.set_header("WWW-Authenticate", "Bearer realm=\"wardend\"");
    res.set_content("{\"error\":\"a valid bearer token is required\"}\n", "application/json");
    return false;
  };
  auto handle =
      [this, authorized](
          const httplib::Request& req, httplib::Response& res,
          const std::function<void(const Config&, const DaemonStatus&, httplib::Response&)>& body) {
        std::shared_ptr<const Config> cfg;
        DaemonStatus st;
        provider_(&cfg, &st);
        if (!authorized(req, res, *cfg)) return;
        if (cfg->daemon.http_token.empty()) {
          // Anyone who can reach the port reads this: libpq's text (host
          // names, user names, the reason a login failed) stays in the log.
          for (auto& s : st.servers) {
            if (!s.error.empty()) s.error = "connection or poll failed (details in wardend's log)";
            if (!s.pgbouncer_error.empty())
              s.pgbouncer_error = "admin console unreachable (details in wardend's log)";
          }
        }
        body(*cfg, st, res);
      };

  srv.Get("/health", [handle](const httplib::Request& req, httplib::Response& res) {
    handle(req, res, [](const Config& cfg, const DaemonStatus& st, httplib::Response& r) {
      int code = 200;
      auto j = HealthJson(cfg.daemon, st, &code);
      r.status = code;
      r.set_content(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                    "application/json");
    });
  });
  srv.Get("/health/ready", [handle](const httplib::Request& req, httplib::Response& res) {
    handle(req, res, [](const Config&, const DaemonStatus& st, httplib::Response& r) {
      int code = 200;
      auto j = ReadyJson(st, &code);
      r.status = code;
      r.set_content(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                    "application/json");
    });
  });
  srv.Get("/metrics", [handle](const httplib::Request& req, httplib::Response& res) {
    handle(req, res, [](const Config& cfg, const DaemonStatus& st, httplib::Response& r) {
      r.set_content(MetricsText(cfg, st), "text/plain; version=0.0.4; charset=utf-8");
    });
  });
  srv.Get("/alerts", [handle](const httplib::Request& req, httplib::Response& res) {
    handle(req, res, [](const Config&, const DaemonStatus& st, httplib::Response& r) {
      r.set_content(
          AlertsJson(st).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
          "application/json");
    });
  });
  // The status page (docs/monitoring.md). A browser cannot send a header when
  // it opens a page, so `/` also takes the token as ?token=; the page sends it
  // as a bearer header on its own fetches of /status.json.
  srv.Get("/", [this, authorized](const httplib::Request& req, httplib::Response& res) {
    std::shared_ptr<const Config> cfg;
    DaemonStatus st;
    provider_(&cfg, &st);
    const std::string& token = cfg->daemon.http_token;
    bool by_query = !token.empty() && req.has_param("token") &&
                    TokenMatches(req.get_param_value("token"), token);
    if (!by_query && !authorized(req, res, *cfg)) return;
    res.set_header("Cache-Control", "no-store");
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                   "connect-src 'self'; img-src data:");
    res.set_content(kStatusHtml, "text/html; charset=utf-8");
  });
  srv.Get("/status.json", [handle](const httplib::Request& req, httplib::Response& res) {
    handle(req, res, [](const Config& cfg, const DaemonStatus& st, httplib::Response& r) {
      double now =
          std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
              .count();
      r.set_header("Cache-Control", "no-store");
      r.set_content(
          StatusJson(cfg, st, now).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
              "\n",
          "application/json");
    });
  });

  if (!srv.bind_to_port(host, port))
    throw std::runtime_error("cannot listen on " + host_port + " ([daemon] http)");
  port_ = port;
  thread_ = std::thread([this] { server_->listen_after_bind(); });
}

void HttpServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

}  // namespace wardend
