// Example workflows shipped with keeld: an order that is reserved, charged and shipped, and a user
// onboarding.
#pragma once

#include <boost/json/value.hpp>
#include <string>

#include "keel/engine/engine.hpp"

namespace keel::examples {

/// Registers "order_fulfillment" and "user_onboarding" on `e`.
void register_example_workflows(engine& e);

/// A demonstration input for `workflow` number `n`.
boost::json::value example_input(const std::string& workflow, int n);

}  // namespace keel::examples
