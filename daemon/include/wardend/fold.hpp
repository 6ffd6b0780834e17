// Bounding what the status board keeps per server: the largest applications
// and roles keep their own rows, the rest fold into "<other>". Pure
// functions (no locks), unit-tested.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "wardend/snapshot.hpp"

namespace wardend {

// At most `cap` rows (cap >= 1): the cap - 1 applications holding the most
// connections (ties: by database, role, application name), then one row
// ("<other>", "<other>", "<other>") summing the rest (longest idle and
// longest idle in transaction: their maxima). Unchanged, but sorted, when there are at most `cap`.
std::vector<AppUsage> FoldApplications(std::vector<AppUsage> apps, size_t cap);

// Sets each application's longest_idle_in_transaction_seconds to the longest
// state_seconds of its backends (same database, role and application) whose
// state is "idle in transaction" or "idle in transaction (aborted)"; 0 when
// it has none. For an extension older than 1.1, whose warden.app_usage has no
// such column: warden.backends of the same sample has the same facts.
void LongestIdleInTransactionFromBackends(Snapshot& s);

// Roles in name order keep their own row until the rows reach cap - 1; after
// that only roles for which keep(role) holds (those with a [[role]] limit)
// get one, the others are summed into "<other>".
std::map<std::string, RoleCount> FoldRoles(const std::map<std::string, RoleCount>& roles,
                                           size_t cap,
                                           const std::function<bool(const std::string&)>& keep);

}  // namespace wardend
