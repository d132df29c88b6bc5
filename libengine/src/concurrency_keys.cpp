// Concurrency keys: the sweep that starts runs parked for a key with a free slot. Claims take and park runs
// and a freed slot wakes its key's next run, all in storage (026_concurrency_keys.sql); the sweep only
// covers the race between a park and a release, so one short statement a second is all it costs.
#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "engine_impl.hpp"

namespace keel::detail {

namespace {
/// Keys one sweep looks at; more wait for the next (a sweep is a safety net, not the path runs start by).
constexpr std::size_t k_sweep_keys = 1000;
}  // namespace

boost::asio::awaitable<void> engine_impl::key_sweep_loop() {
  bool warned = false;
  while (!stopping()) {
    auto woken = co_await store_.wake_key_parked(k_sweep_keys);
    if (!woken) {
      // The database is away: the claim loop reports it too; say it once per outage.
      if (!warned) log::warn("engine", "concurrency keys: cannot sweep: " + woken.error().message());
      warned = true;
    } else {
      warned = false;
      if (*woken > 0) wake_claimer();
    }
    if (stopping()) break;
    key_sweep_wait_.expires_after(
        std::max(options_.concurrency_sweep_interval, std::chrono::milliseconds(10)));
    co_await key_sweep_wait_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  }
  key_sweep_active_ = false;
  notify_changed();
}

}  // namespace keel::detail
