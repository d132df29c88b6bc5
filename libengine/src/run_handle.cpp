// run_handle: a run followed through its engine. The members are plain functions that hand copies of what
// they need to a coroutine, so the awaitable they return outlives the handle (see engine.hpp).
#include "keel/engine/run_handle.hpp"

#include "keel/engine/engine.hpp"

namespace keel {
namespace {

boost::asio::awaitable<result<run_handle>> handle_of(engine& e,
                                                     boost::asio::awaitable<result<run_id>> enqueued) {
  auto id = co_await std::move(enqueued);
  if (!id) co_return id.error();
  co_return run_handle(e, std::move(*id));
}

boost::asio::awaitable<result<storage::run_status>> status_of(boost::asio::awaitable<result<run_info>> got) {
  auto run = co_await std::move(got);
  if (!run) co_return run.error();
  co_return run->status;
}

/// A finished run's outcome: its output, or its own error.
boost::asio::awaitable<result<boost::json::value>> output_of(
    boost::asio::awaitable<result<run_info>> waited) {
  auto run = co_await std::move(waited);
  if (!run) co_return run.error();
  switch (run->status) {
    case storage::run_status::completed:
      co_return std::move(run->output);
    case storage::run_status::cancelled:
      co_return errc::cancelled;
    default:
      break;
  }
  // Failed: the engine's own code, when the record carries one.
  const auto* o = run->error.if_object();
  const auto* code = o != nullptr ? o->if_contains("code") : nullptr;
  if (code != nullptr && code->is_string()) {
    if (auto e = errc_from_code_name(code->as_string()); e) co_return *e;
  }
  co_return errc::run_failed;
}

}  // namespace

boost::asio::awaitable<result<run_handle>> engine::start(std::string_view workflow,
                                                         const boost::json::value& input,
                                                         const enqueue_options& options) {
  // enqueue copies its arguments before it returns; so does this.
  return handle_of(*this, enqueue(workflow, input, options));
}

boost::asio::awaitable<result<storage::run_status>> run_handle::status() const {
  return status_of(engine_->get(id_));
}

boost::asio::awaitable<result<storage::run_record>> run_handle::info() const {
  return engine_->get(id_);
}

boost::asio::awaitable<result<boost::json::value>> run_handle::output(
    std::chrono::milliseconds timeout) const {
  return output_of(engine_->wait(id_, timeout));
}

boost::asio::awaitable<result<event_stream>> run_handle::events(const stream_options& options) const {
  auto mine = options;
  mine.filter.run = id_;
  return engine_->stream(mine);
}

boost::asio::awaitable<result<output_reader>> run_handle::stream(std::string_view name,
                                                                 std::int64_t from) const {
  return engine_->read_stream(id_, name, from);
}

}  // namespace keel
