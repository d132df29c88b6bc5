// Time skipping (environment::advance_blocking): what waits for a time comes due as if it had passed.
#pragma once

#include <chrono>
#include <string>

namespace keel::testing::detail {

/// Moves every pending timer in the database at `conninfo` `by` earlier, in one transaction, and wakes the
/// workers' claim loops. Blocking; throws std::runtime_error with the database's message.
void advance_timers_blocking(const std::string& conninfo, std::chrono::microseconds by);

/// Waits until no run is running or due to start (every run has finished or waits for a time, an event, a
/// hook, a child or a slot), polling the database at `conninfo`. Returns how many runs still run or are due
/// if that did not happen within `timeout` (0 once settled). Blocking.
long wait_until_settled_blocking(const std::string& conninfo, std::chrono::milliseconds timeout);

}  // namespace keel::testing::detail
