// What ctx.any and ctx.all wait for: hooks, events, timers and child runs, side by side.
#pragma once

#include <boost/json/value.hpp>
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace keel {

/// An alternative of ctx.any / ctx.all: a durable timer, due `after` from the first execution that reached
/// the wait, or at a given time. Trivially destructible, so `keel::timer(24h)` may be written inside the
/// co_await expression.
struct timer {
  explicit timer(std::chrono::milliseconds after) noexcept : after(after) {}
  explicit timer(std::chrono::system_clock::time_point at) noexcept : at(at) {}
  std::chrono::milliseconds after{0};
  std::optional<std::chrono::system_clock::time_point> at;
};

/// An alternative of ctx.any / ctx.all: the oldest event of this name sent to the run and not yet consumed
/// (engine::send_event). Holds a view of the name, read when ctx.any / ctx.all is called.
struct event_wait {
  explicit event_wait(std::string_view name) noexcept : name(name) {}
  std::string_view name;
};

/// What ctx.any returned: which alternative completed first, and its payload.
struct any_result {
  /// The winner's position among ctx.any's arguments, from 0.
  std::size_t index = 0;
  /// The winning event's or hook's payload, or a child run's outcome ({"child", "status", "output",
  /// "error"}); nullopt when a timer won, or a hook that had expired or was closed.
  std::optional<boost::json::value> payload;
};

namespace detail {
/// An alternative as the context records it.
struct wait_alternative {
  enum class what { timer, event, hook, child } kind = what::timer;
  std::string name;  ///< event: its name; hook: the hook's name; child: the child run's id
  int hook_seq = 0;
  std::optional<std::chrono::milliseconds> after;
  std::optional<std::chrono::system_clock::time_point> until;
};
}  // namespace detail

}  // namespace keel
