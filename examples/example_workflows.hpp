// Example workflows shipped with keeld: an order that is reserved, charged and shipped, a user onboarding,
// and an expense approval that escalates when the manager does not answer in time.
#pragma once

#include <boost/json/value.hpp>
#include <string>

#include "keel/engine/engine.hpp"

namespace keel::examples {

/// Registers "order_fulfillment", "user_onboarding" and "expense_approval" on `e`.
void register_example_workflows(engine& e);

/// A demonstration input for `workflow` number `n`.
boost::json::value example_input(const std::string& workflow, int n);

}  // namespace keel::examples
