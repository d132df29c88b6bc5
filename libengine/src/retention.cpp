// Retention of finished runs: a loop that deletes, every retention.interval, the runs that finished longer
// ago than retention.keep_finished (their run log events first), and engine::purge_finished_runs, one pass
// on demand. Storage's retention.cpp and trim_log do each batch in one short transaction.
#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "engine_impl.hpp"

namespace keel {
namespace detail {

boost::asio::awaitable<result<storage::purged>> engine_impl::purge_finished(
    std::chrono::milliseconds older_than, std::size_t batch) {
  // Ages past a century would overflow the clock's arithmetic (and mean "forever" anyway).
  constexpr auto k_longest = std::chrono::hours(24 * 36'525);
  if (older_than.count() <= 0 || older_than > k_longest || batch == 0 || batch > 10'000)
    co_return storage::errc::invalid_argument;
  storage::purged out;
  // The log first: a log event outliving its run is harmless (trim_log counts a run no longer stored as
  // finished), and this order never leaves a run whose log is gone but not it.
  for (;;) {
    auto trimmed = co_await store_.trim_log(older_than, batch);
    if (!trimmed) co_return trimmed.error();
    out.rows += *trimmed;
    retention_rows_removed_.fetch_add(static_cast<std::uint64_t>(*trimmed), std::memory_order_relaxed);
    if (*trimmed == 0 || stopping()) break;
  }
  for (;;) {
    auto gone = co_await store_.purge_runs(older_than, batch);
    if (!gone) co_return gone.error();
    out.runs += gone->runs;
    out.rows += gone->rows;
    retention_runs_removed_.fetch_add(static_cast<std::uint64_t>(gone->runs), std::memory_order_relaxed);
    retention_rows_removed_.fetch_add(static_cast<std::uint64_t>(gone->rows), std::memory_order_relaxed);
    if (gone->runs < static_cast<std::int64_t>(batch) || stopping()) break;
  }
  co_return out;
}

boost::asio::awaitable<void> engine_impl::retention_loop() {
  const auto& r = options_.retention;
  while (!stopping()) {
    auto pass = co_await purge_finished(r.keep_finished, r.batch);
    if (!pass) {
      log::warn("engine", "retention: " + pass.error().message() + " (trying again in the next pass)");
    } else if (pass->rows > 0) {
      log::info("engine", "retention: removed " + std::to_string(pass->runs) + " finished run(s), " +
                              std::to_string(pass->rows) + " row(s) in all");
    }
    if (stopping()) break;
    retention_wait_.expires_after(std::max(r.interval, std::chrono::milliseconds(10)));  // never a busy loop
    co_await retention_wait_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  }
  retention_active_ = false;
  notify_changed();
}

}  // namespace detail

boost::asio::awaitable<result<purged_runs>> engine::purge_finished_runs(
    std::chrono::milliseconds older_than) {
  return impl_->purge_finished(older_than, impl_->options_.retention.batch);
}

result<purged_runs> engine::purge_finished_runs_blocking(std::chrono::milliseconds older_than) {
  return impl_->block_on(impl_->purge_finished(older_than, impl_->options_.retention.batch));
}

}  // namespace keel
