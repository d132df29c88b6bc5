// Workflow definitions: a named, versioned coroutine taking context& and a typed input.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>
#include <functional>
#include <optional>
#include <string>

#include "keel/engine/context.hpp"

namespace keel {

/// A workflow with its input and output erased to JSON; what the engine stores in its registry.
struct workflow_definition {
  std::string name;
  int version = 1;
  std::function<boost::asio::awaitable<boost::json::value>(context&, boost::json::value)> body;
  /// What callers see of it (GET /v1/workflows, the dashboard): an input to start a run with, and a line
  /// saying what it does. Both optional.
  boost::json::value input_example;
  std::string description;
};

/// Makes a definition from a typed body `awaitable<Output>(context&, Input)`. Input and Output convert with
/// boost::json::value_to / value_from (Output may be void; Input may be boost::json::value).
template <class Input, class Output>
workflow_definition make_workflow(std::string name, int version,
                                  std::function<boost::asio::awaitable<Output>(context&, Input)> body) {
  workflow_definition def{std::move(name), version, {}, nullptr, {}};
  def.body = [body = std::move(body)](
                 context& ctx, boost::json::value input) -> boost::asio::awaitable<boost::json::value> {
    std::optional<Input> typed;
    try {
      typed.emplace(boost::json::value_to<Input>(input));
    } catch (const std::exception& e) {
      throw invalid_input_error(e.what());
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
