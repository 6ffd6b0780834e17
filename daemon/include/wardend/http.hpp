// The HTTP endpoints (/health, /health/ready, /metrics, /alerts) on
// cpp-httplib, in their own thread; optional bearer token.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "wardend/config.hpp"
#include "wardend/status.hpp"

namespace httplib {
class Server;
}

namespace wardend {

class HttpServer {
 public:
  // Returns a consistent copy of the configuration and the status.
  using Provider = std::function<void(std::shared_ptr<const Config>*, DaemonStatus*)>;
  explicit HttpServer(Provider provider);
  ~HttpServer();
  // Binds "host:port" (throws std::runtime_error if it cannot) and serves in a thread.
  void Start(const std::string& host_port);
  void Stop();
  int port() const { return port_; }

 private:
  Provider provider_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

// Constant-time comparison of a presented token with the configured one.
bool TokenMatches(const std::string& presented, const std::string& expected);

}  // namespace wardend
