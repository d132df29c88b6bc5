// Helpers for engine tests: options for a fresh database, typed workflow registration, timers in workflows.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <chrono>

#include "keel/engine.hpp"
#include "pg_harness.hpp"

namespace keel::test {

namespace asio = boost::asio;
namespace json = boost::json;
using wf_fn = std::function<asio::awaitable<json::value>(context&, json::value)>;

/// Engine options for `conninfo` with test-friendly timings (short poll; lease as given).
inline engine_options options_for(const std::string& conninfo,
                                  std::chrono::milliseconds lease = std::chrono::seconds(30)) {
  engine_options o;
  o.store.conninfo = conninfo;
  o.lease = lease;
  o.poll_interval = std::chrono::milliseconds(20);
  o.threads = 2;
  return o;
}

/// Sleeps inside a coroutine without blocking its thread.
inline asio::awaitable<void> async_sleep(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
}

/// Registers a JSON-in, JSON-out workflow.
inline void add_workflow(engine& e, std::string name, wf_fn fn, int version = 1) {
  e.register_workflow<json::value, json::value>(std::move(name), version, std::move(fn));
}

/// The run's status as text ("?" if it cannot be read).
inline std::string status_of(engine& e, const std::string& id) {
  auto r = e.get_blocking(id);
  return r ? std::string(to_string(r->status)) : "?";
}

}  // namespace keel::test
