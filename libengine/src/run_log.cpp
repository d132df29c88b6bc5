// The engine's view of the durable run log (libstorage's 013_run_log.sql).
#include "engine_impl.hpp"
#include "keel/engine/engine.hpp"
#include "keel/storage/json_limits.hpp"
#include "output_state.hpp"

namespace keel {

namespace detail {

boost::asio::awaitable<result<log_page>> engine_impl::read_log(std::int64_t after, read_log_options options) {
  if (options.run && !is_valid_run_id(*options.run)) co_return errc::invalid_run_id;
  storage::log_filter filter;
  filter.workflow = std::move(options.workflow);
  // The run itself even when it is no longer stored (what retention left of its events); its tree as
  // the page's own snapshot sees it, so a child started meanwhile has all its events in or none.
  if (options.run) filter.runs.push_back(*options.run);
  if (options.run && options.descendants) filter.tree = *options.run;
  auto page = co_await store_.read_log(after, options.limit, filter);  // `filter` lives in this frame
  if (!page) co_return engine_error(page.error());
  co_return std::move(*page);
}

boost::asio::awaitable<result<event_stream>> engine_impl::stream(stream_options options) {
  if (options.filter.run && !is_valid_run_id(*options.filter.run)) co_return errc::invalid_run_id;
  auto sub = co_await hub_->subscribe(std::move(options));  // `options` lives in this frame
  if (!sub) co_return engine_error(sub.error());
  co_return event_stream(std::move(*sub));
}

boost::asio::awaitable<result<output_reader>> engine_impl::read_stream(run_id id, std::string stream,
                                                                       std::int64_t from) {
  if (!is_valid_run_id(id)) co_return errc::invalid_run_id;
  if (from < 0 || stream.empty() || stream.size() > 255 || storage::valid_utf8(stream) != stream)
    co_return storage::errc::invalid_argument;
  // The run's events wake the reader when chunks come (subscribed before the first read: none is missed).
  stream_options o;
  o.filter.run = id;
  o.filter.progress = false;
  auto events = co_await this->stream(o);
  if (!events) co_return events.error();
  co_return output_reader(
      std::make_shared<output_follower>(*this, std::move(id), std::move(stream), from, std::move(*events)));
}

boost::asio::awaitable<result<std::int64_t>> engine_impl::trim_log(std::chrono::milliseconds older_than) {
  /// Rows per batch: each batch is one short transaction.
  constexpr std::size_t k_rows_per_batch = 500;
  std::int64_t removed = 0;
  for (;;) {
    auto batch = co_await store_.trim_log(older_than, k_rows_per_batch);
    if (!batch) co_return engine_error(batch.error());
    if (*batch == 0) co_return removed;
    removed += *batch;
  }
}

}  // namespace detail
}  // namespace keel
