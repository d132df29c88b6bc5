// The workflows keeld serves by default (docs/http.md shows them over HTTP): an approval that waits for a
// person through a hook, a countdown that publishes progress frames between durable sleeps, an order saga
// with a compensation, and noop3, the benchmark workflow.
#pragma once

#include "keel/engine/engine.hpp"

namespace keel::examples {

/// Registers "approval", "countdown", "order" and "noop3" (version 1) on `e`.
void register_api_workflows(engine& e);

}  // namespace keel::examples
