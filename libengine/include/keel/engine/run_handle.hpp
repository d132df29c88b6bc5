// A started run, as its caller follows it: its status, its typed result, its events and output streams.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_to.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "keel/common/result.hpp"
#include "keel/common/run_id.hpp"
#include "keel/engine/error.hpp"
#include "keel/engine/events.hpp"
#include "keel/engine/json_types.hpp"
#include "keel/engine/output_stream.hpp"
#include "keel/storage/records.hpp"

namespace keel {

class engine;

/// A registered workflow version with its input and output types (engine::register_workflow): starting a
/// run through it is type-checked at compile time, and its handle's result() is an `Output`.
template <class Input, class Output>
struct workflow_ref {
  std::string name;
  int version = 1;
};

/// A run, by id, on an engine that outlives the handle. Cheap to copy; holds no resources. Every member
/// reads the database afresh (another worker may be running the run), and copies what it needs before it
/// returns: the awaitable it gives outlives the handle and the arguments.
class run_handle {
 public:
  run_handle(engine& e, run_id id) : engine_(&e), id_(std::move(id)) {}
  /// An empty handle, to assign a real one to (what Asio needs of a result type); using it is undefined.
  run_handle() = default;

  [[nodiscard]] const run_id& id() const noexcept { return id_; }

  /// Its current status. Errors: run_not_found, invalid_run_id, storage.
  [[nodiscard]] boost::asio::awaitable<keel::result<storage::run_status>> status() const;
  /// Its whole record (engine::get).
  [[nodiscard]] boost::asio::awaitable<keel::result<storage::run_record>> info() const;

  /// Waits up to `timeout` for the run to finish and returns its output as JSON. A run that did not
  /// complete gives its own error: the engine code its record holds (step_failed, step_timeout,
  /// child_failed, dead_lettered, nondeterminism, invalid_input, output_rejected, ...), else run_failed;
  /// cancelled for a cancelled run. Errors also: wait_timeout, run_not_found, storage. The record (info())
  /// holds the failure's message and step.
  [[nodiscard]] boost::asio::awaitable<keel::result<boost::json::value>> output(
      std::chrono::milliseconds timeout) const;

  /// output(), converted to `T` with Boost.JSON (void: only whether it completed). An output that does not
  /// convert gives invalid_output.
  template <class T>
  [[nodiscard]] boost::asio::awaitable<keel::result<T>> result(std::chrono::milliseconds timeout) const {
    return converted<T>(output(timeout));
  }

  /// Its events (and its children's, recursively) from now on, as engine::stream with filter.run set to
  /// this run; `options.filter.run` is overwritten.
  [[nodiscard]] boost::asio::awaitable<keel::result<event_stream>> events(
      const stream_options& options = {}) const;
  /// Its durable output stream `name`, from chunk `from` (engine::read_stream).
  [[nodiscard]] boost::asio::awaitable<keel::result<output_reader>> stream(std::string_view name,
                                                                           std::int64_t from = 0) const;

 private:
  template <class T>
  static boost::asio::awaitable<keel::result<T>> converted(
      boost::asio::awaitable<keel::result<boost::json::value>> output) {
    auto out = co_await std::move(output);
    if (!out) co_return out.error();
    if constexpr (std::is_void_v<T>) {
      co_return keel::result<void>{};
    } else {
      try {
        co_return boost::json::value_to<T>(*out);
      } catch (const std::exception&) {
        co_return errc::invalid_output;
      }
    }
  }

  engine* engine_ = nullptr;
  run_id id_;
};

/// A run started through a workflow_ref: result() needs no type argument.
template <class Output>
class typed_run_handle : public run_handle {
 public:
  explicit typed_run_handle(run_handle h) : run_handle(std::move(h)) {}
  typed_run_handle() = default;

  [[nodiscard]] boost::asio::awaitable<keel::result<Output>> result(std::chrono::milliseconds timeout) const {
    return run_handle::result<Output>(timeout);
  }
};

namespace detail {
/// engine::start of a workflow_ref: the started run's handle, typed.
template <class Output>
boost::asio::awaitable<keel::result<typed_run_handle<Output>>> typed_handle(
    boost::asio::awaitable<keel::result<run_handle>> started) {
  auto h = co_await std::move(started);
  if (!h) co_return h.error();
  co_return typed_run_handle<Output>(std::move(*h));
}
}  // namespace detail

}  // namespace keel
