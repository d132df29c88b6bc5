// Event triggers as stored: what each registered workflow version declares (the events that start it and
// those that cancel its runs), and whom an event concerns.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "keel/common/run_id.hpp"

namespace keel::storage {

/// An event that cancels a workflow's unfinished runs whose input matches the payload: the value at `input`
/// (a path of object keys and array indexes, as PostgreSQL's #> takes it) equals the payload's at `match`.
/// An empty `match`: every unfinished run.
struct cancel_rule {
  std::string event;
  std::vector<std::string> match;
  std::vector<std::string> input;
};

/// What a worker declares of a workflow version it registers (store::declare_workflows).
struct workflow_declaration {
  std::string workflow;
  int version = 1;
  /// Events that start a run of it.
  std::vector<std::string> triggers;
  std::vector<cancel_rule> cancel_on;
  /// Concurrency (026_concurrency_keys.sql): at most this many of its runs with the same key run at once;
  /// none: no limit.
  std::optional<int> concurrency_limit;
  /// Where the key is in a run's input (a path, as #>> takes it); none: one key for all its runs.
  std::optional<std::vector<std::string>> concurrency_key;
  /// Throttle (027_throttle.sql): at most this many of its runs with the same key start per window; none:
  /// no throttle.
  std::optional<int> throttle_limit;
  std::optional<std::chrono::milliseconds> throttle_window;
  /// Where the throttle key is in a run's input; none: one key for all its runs.
  std::optional<std::vector<std::string>> throttle_key;
  /// Fair claims (028_fair_claims.sql): where its runs' fairness key is in their input; none: no fairness
  /// key but one given at enqueue.
  std::optional<std::vector<std::string>> fair_key;
};

/// A workflow an event starts, at the newest version declared.
struct triggered_workflow {
  std::string workflow;
  int version = 1;
};

/// Whom an event concerns (store::event_subscribers), as the newest declared version of each workflow says.
struct event_audience {
  std::vector<triggered_workflow> start;
  /// Unfinished runs it cancels.
  std::vector<run_id> cancel;
};

}  // namespace keel::storage
