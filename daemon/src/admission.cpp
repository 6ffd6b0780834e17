// The two admission mechanisms (see admission.hpp). No locks.
#include "wardend/admission.hpp"

#include <fmt/format.h>

namespace wardend {

namespace {

class ConnectionLimitAdmission : public AdmissionMechanism {
 public:
  explicit ConnectionLimitAdmission(Connection& c) : c_(c) {}
  AdmissionKind kind() const override { return AdmissionKind::kConnectionLimit; }
  bool Usable(bool in_recovery) const override { return !in_recovery; }
  std::optional<int> CurrentLimit(const std::string& role) override {
    return c_.RoleConnectionLimit(role);
  }
  void Close(const std::string& role, int limit, const std::string&) override {
    c_.SetRoleConnectionLimit(role, limit);
  }
  std::string Reopen(const std::string& role, int original, int applied, int previous) override {
    auto now = c_.RoleConnectionLimit(role);
    if (!now) return "role no longer exists";
    if (*now == original) return fmt::format("CONNECTION LIMIT already {}", original);
    if (*now != applied && !(previous >= 0 && *now == previous))
      return fmt::format("CONNECTION LIMIT was changed to {} by someone else: left as is", *now);
    c_.SetRoleConnectionLimit(role, original);
    return fmt::format("CONNECTION LIMIT restored to {}", original);
  }
  std::string DescribeClose(int limit, int original) const override {
    return fmt::format("CONNECTION LIMIT {} (was {})", limit, original);
  }
  bool LostAtRestart() const override { return false; }

 private:
  Connection& c_;
};

class OverrideAdmission : public AdmissionMechanism {
 public:
  explicit OverrideAdmission(Connection& c) : c_(c) {}
  AdmissionKind kind() const override { return AdmissionKind::kOverride; }
  bool Usable(bool) const override { return true; }
  std::optional<int> CurrentLimit(const std::string& role) override {
    if (!c_.RoleConnectionLimit(role)) return std::nullopt;
    return -1;  // an override replaces nothing: there is no earlier limit to restore
  }
  void Close(const std::string& role, int limit, const std::string& reason) override {
    c_.CloseAdmission(role, limit, "wardend: " + reason);
  }
  std::string Reopen(const std::string& role, int, int, int) override {
    if (!c_.caps().close_admission) return "the extension is gone, and its overrides with it";
    c_.OpenAdmission(role);
    return "admission override removed";
  }
  std::string DescribeClose(int limit, int) const override {
    return fmt::format("warden.close_admission max_connections {}", limit);
  }
  bool LostAtRestart() const override { return true; }

 private:
  Connection& c_;
};

}  // namespace

std::unique_ptr<AdmissionMechanism> MakeMechanism(AdmissionKind kind, Connection& c) {
  if (kind == AdmissionKind::kOverride) return std::make_unique<OverrideAdmission>(c);
  return std::make_unique<ConnectionLimitAdmission>(c);
}

AdmissionKind ChooseMechanism(const Capabilities& caps) {
  return caps.close_admission ? AdmissionKind::kOverride : AdmissionKind::kConnectionLimit;
}

}  // namespace wardend
