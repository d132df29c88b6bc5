// Workflow definitions: a named, versioned coroutine taking context& and a typed input.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "keel/engine/context.hpp"
#include "keel/engine/conversion_error.hpp"

namespace keel {

/// An event that cancels a workflow's unfinished runs (workflow_definition::cancel_on), when they match it.
struct cancel_on_event {
  /// The event's name, as engine::publish_event is given it.
  std::string event;
  /// A JSON pointer into the event's payload (e.g. "/user_id"): a run is cancelled when its input holds the
  /// same value at `input_match` — a payload without it cancels nothing. Empty: every unfinished run.
  std::string match;
  /// The JSON pointer into the run's input; empty: the same as `match`.
  std::string input_match;
};

/// Debounce (workflow_definition::debounce): enqueues with the same key, while their run has not started,
/// collapse into that one run — the last input wins — which starts `window` after the last of them.
struct debounce_rule {
  std::chrono::milliseconds window{0};
  /// A JSON pointer into the input whose value is the key (e.g. "/user_id"); "" makes the whole input the
  /// key. An input without the value is not debounced.
  std::string key;
};

/// Concurrency (workflow_definition::concurrency): at most `limit` of the workflow's runs with the same key
/// hold a worker at once, exactly, across every worker process; the others wait queued, in order, and start
/// as those finish. A run that sleeps or waits holds no worker, so it does not count.
struct concurrency_rule {
  int limit = 1;  ///< 1 to 10,000
  /// A JSON pointer into the input whose value is the key (e.g. "/tenant"): a string as it is, anything else
  /// as its JSON text; runs whose input lacks it share the key "". "": one key for all the workflow's runs.
  std::string key;
};

/// Throttle (workflow_definition::throttle): at most `limit` of the workflow's runs with the same key start
/// in any `window` (a sliding window, exact across every worker process); the others wait queued, in order,
/// and start as the window moves. Only a run's first start counts (not a resume after a sleep, a wait or a
/// crash).
struct throttle_rule {
  int limit = 1;  ///< 1 to 10,000
  std::chrono::milliseconds window{0};
  /// As concurrency_rule::key.
  std::string key;
};

/// Fairness (workflow_definition::fairness): while runs of several keys (tenants) are queued, claims take
/// them in turn, weighted (enqueue_options::fairness_weight), so a key with 100,000 queued runs delays
/// another key's run by at most one claim batch. Keys are shared by every workflow: a tenant is one key.
struct fairness_rule {
  /// A JSON pointer into the input whose value is the key (e.g. "/tenant"), as concurrency_rule::key; runs
  /// whose input lacks it share the key "". Not "".
  std::string key;
};

/// A workflow with its input and output erased to JSON; what the engine stores in its registry.
struct workflow_definition {
  std::string name;
  int version = 1;
  std::function<boost::asio::awaitable<boost::json::value>(context&, boost::json::value)> body;
  /// What callers see of it (GET /v1/workflows, the dashboard): an input to start a run with, and a line
  /// saying what it does. Both optional.
  boost::json::value input_example;
  std::string description;
  /// Events that start a run of it (engine::publish_event): each starts one, with the event's payload as its
  /// input (once per idempotency key). Declared by the newest version any worker has registered.
  std::vector<std::string> triggers;
  /// Events that cancel its unfinished runs (of every version), as engine::cancel does: compensations run.
  std::vector<cancel_on_event> cancel_on;
  /// Debounce of its enqueues (enqueue_options can give the key or the window instead).
  std::optional<debounce_rule> debounce;
  /// A limit on how many of its runs (per key) run at once (enqueue_options can give the key or limit).
  std::optional<concurrency_rule> concurrency;
  /// A limit on how many of its runs (per key) start per window (enqueue_options can give the key, limit or
  /// window).
  std::optional<throttle_rule> throttle;
  /// Fair claims among its runs' keys, and those of every workflow with a fairness key (enqueue_options
  /// can give the key and its weight).
  std::optional<fairness_rule> fairness;
};

/// Makes a definition from a typed body `awaitable<Output>(context&, Input)`. Input and Output convert with
/// boost::json::value_to / value_from (Output may be void; Input may be boost::json::value).
template <class Input, class Output>
workflow_definition make_workflow(std::string name, int version,
                                  std::function<boost::asio::awaitable<Output>(context&, Input)> body) {
  workflow_definition def{std::move(name), version,      {},           nullptr,     {}, {}, {},
                          std::nullopt,    std::nullopt, std::nullopt, std::nullopt};
  def.body = [body = std::move(body)](
                 context& ctx, boost::json::value input) -> boost::asio::awaitable<boost::json::value> {
    std::optional<Input> typed;
    try {
      typed.emplace(boost::json::value_to<Input>(input));
    } catch (const std::exception& e) {
      // Where the input is wrong, as a JSON pointer, for whoever reads the run's error.
      throw invalid_input_error("the input does not convert: " +
                                detail::conversion_error<Input>(input).value_or(e.what()));
    }
    // The call is made outside the co_await expression (GCC 12 mishandles by-value temporaries there).
    auto run = body(ctx, std::move(*typed));
    if constexpr (std::is_void_v<Output>) {
      co_await std::move(run);
      co_return nullptr;
    } else {
      auto output = co_await std::move(run);
      co_return boost::json::value_from(std::move(output));
    }
  };
  return def;
}

}  // namespace keel
