// Time skipping (environment::advance_blocking): what waits for a time comes due as if it had passed.
#pragma once

#include <chrono>
#include <string>

namespace keel::testing::detail {

/// Moves every pending timer in the database at `conninfo` `by` earlier, in one transaction, and wakes the
/// workers' claim loops. Blocking; throws std::runtime_error with the database's message.
void advance_timers_blocking(const std::string& conninfo, std::chrono::microseconds by);

}  // namespace keel::testing::detail
