// Logging setup: spdlog to stderr, plain lines or JSON lines.
#pragma once

#include <string>

#include "wardend/config.hpp"

namespace wardend {

void SetupLogging(LogFormat format, const std::string& level);

}  // namespace wardend
