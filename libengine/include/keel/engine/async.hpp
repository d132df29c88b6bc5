// The engine's main operations with any Asio completion token — use_future, a callback, deferred,
// use_awaitable, as_tuple(...) — as Asio and Beast users expect: `keel::async_start(e, "order", input, {},
// asio::use_future)`. Each runs the engine's own awaitable operation (no second implementation) on the
// engine's executor and completes with `void(std::exception_ptr, result<T>)`; the exception_ptr is null
// unless the engine threw, which it does not for errors it reports (a T of async_result must be default
// constructible, as Asio's result types are). Arguments are taken by reference (GCC 12, see engine.hpp) and
// copied before the call returns, so a deferred operation may outlive the caller's strings. The engine must
// outlive the operation.
#pragma once

#include <boost/asio/co_spawn.hpp>
#include <chrono>
#include <exception>
#include <string>
#include <utility>

#include "keel/engine/engine.hpp"

namespace keel {

namespace detail {
/// Completes `token` with what the awaitable `op()` returns, run on `e`'s executor.
template <class Op, class Token>
auto run_with_token(engine& e, Op op, Token&& token) {
  return boost::asio::co_spawn(e.get_executor(), std::move(op), std::forward<Token>(token));
}
}  // namespace detail

/// engine::start: a handle to a new run.
template <class Token>
auto async_start(engine& e, std::string_view workflow, const boost::json::value& input,
                 const enqueue_options& options, Token&& token) {
  auto op = [&e, workflow = std::string(workflow), input,
             options]() -> boost::asio::awaitable<result<run_handle>> {
    co_return co_await e.start(workflow, input, options);
  };
  return detail::run_with_token(e, std::move(op), std::forward<Token>(token));
}

/// engine::start of a workflow_ref, type-checked as it is.
template <class Input, class Output, class Arg, class Token>
requires std::convertible_to<const Arg&, Input>
auto async_start(engine& e, const workflow_ref<Input, Output>& ref, const Arg& input,
                 const enqueue_options& options, Token&& token) {
  auto op = [&e, ref, input = Input(input),
             options]() -> boost::asio::awaitable<result<typed_run_handle<Output>>> {
    co_return co_await e.start(ref, input, options);
  };
  return detail::run_with_token(e, std::move(op), std::forward<Token>(token));
}

/// engine::enqueue: the new run's id.
template <class Token>
auto async_enqueue(engine& e, std::string_view workflow, const boost::json::value& input,
                   const enqueue_options& options, Token&& token) {
  auto op = [&e, workflow = std::string(workflow), input,
             options]() -> boost::asio::awaitable<result<run_id>> {
    co_return co_await e.enqueue(workflow, input, options);
  };
  return detail::run_with_token(e, std::move(op), std::forward<Token>(token));
}

/// engine::get: the run's record.
template <class Token>
auto async_get(engine& e, std::string_view id, Token&& token) {
  auto op = [&e, id = run_id(id)]() -> boost::asio::awaitable<result<run_info>> {
    co_return co_await e.get(id);
  };
  return detail::run_with_token(e, std::move(op), std::forward<Token>(token));
}

/// engine::wait: the run's record once it finished (wait_timeout after `timeout`).
template <class Token>
auto async_wait(engine& e, std::string_view id, std::chrono::milliseconds timeout, Token&& token) {
  auto op = [&e, id = run_id(id), timeout]() -> boost::asio::awaitable<result<run_info>> {
    co_return co_await e.wait(id, timeout);
  };
  return detail::run_with_token(e, std::move(op), std::forward<Token>(token));
}

/// run_handle::result<T>: the run's typed output, or its own error.
template <class T, class Token>
auto async_result(engine& e, const run_handle& h, std::chrono::milliseconds timeout, Token&& token) {
  auto op = [h, timeout]() -> boost::asio::awaitable<result<T>> {
    co_return co_await h.template result<T>(timeout);
  };
  return detail::run_with_token(e, std::move(op), std::forward<Token>(token));
}

/// engine::cancel: the run's status after the call.
template <class Token>
auto async_cancel(engine& e, std::string_view id, const cancel_options& options, Token&& token) {
  auto op = [&e, id = run_id(id), options]() -> boost::asio::awaitable<result<run_status>> {
    co_return co_await e.cancel(id, options);
  };
  return detail::run_with_token(e, std::move(op), std::forward<Token>(token));
}

/// engine::send_event.
template <class Token>
auto async_send_event(engine& e, std::string_view id, std::string_view name,
                      const boost::json::value& payload, const event_options& options, Token&& token) {
  auto op = [&e, id = run_id(id), name = std::string(name), payload,
             options]() -> boost::asio::awaitable<result<void>> {
    co_return co_await e.send_event(id, name, payload, options);
  };
  return detail::run_with_token(e, std::move(op), std::forward<Token>(token));
}

/// engine::resume_hook: the run it resumes.
template <class Token>
auto async_resume_hook(engine& e, std::string_view hook_token, const boost::json::value& payload,
                       const resume_options& options, Token&& token) {
  auto op = [&e, hook_token = std::string(hook_token), payload,
             options]() -> boost::asio::awaitable<result<hook_resumption>> {
    co_return co_await e.resume_hook(hook_token, payload, options);
  };
  return detail::run_with_token(e, std::move(op), std::forward<Token>(token));
}

}  // namespace keel
