// run_handle: a run followed through its engine.
#include "keel/engine/run_handle.hpp"

#include "keel/engine/engine.hpp"

namespace keel {

boost::asio::awaitable<result<run_handle>> engine::start(std::string_view workflow,
                                                         const boost::json::value& input,
                                                         const enqueue_options& options) {
  auto id = co_await enqueue(workflow, input, options);
  if (!id) co_return id.error();
  co_return run_handle(*this, std::move(*id));
}

boost::asio::awaitable<result<storage::run_status>> run_handle::status() const {
  auto run = co_await engine_->get(id_);
  if (!run) co_return run.error();
  co_return run->status;
}

boost::asio::awaitable<result<storage::run_record>> run_handle::info() const {
  co_return co_await engine_->get(id_);
}

boost::asio::awaitable<result<boost::json::value>> run_handle::output(
    std::chrono::milliseconds timeout) const {
  auto run = co_await engine_->wait(id_, timeout);
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

boost::asio::awaitable<result<event_stream>> run_handle::events(stream_options options) const {
  options.filter.run = id_;
  co_return co_await engine_->stream(options);
}

boost::asio::awaitable<result<output_reader>> run_handle::stream(std::string_view name,
                                                                 std::int64_t from) const {
  co_return co_await engine_->read_stream(id_, name, from);
}

}  // namespace keel
