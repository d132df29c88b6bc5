// Umbrella header for keel::engine.
#pragma once

#include "keel/engine/context.hpp"
#include "keel/engine/cron.hpp"
#include "keel/engine/engine.hpp"
#include "keel/engine/error.hpp"
#include "keel/engine/step_options.hpp"
#include "keel/engine/webhook_signature.hpp"
#include "keel/engine/workflow.hpp"
