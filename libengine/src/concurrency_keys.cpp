// Concurrency keys and throttles: the sweep that starts runs parked for a key with a slot free. Claims take
// and park runs and a freed concurrency slot wakes its key's next run, all in storage
// (026_concurrency_keys.sql, 027_throttle.sql); throttle slots come free by time, so throttled runs start
// by this sweep, which sleeps until the next one does.
#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "engine_impl.hpp"

namespace keel::detail {

namespace {
/// Keys one sweep statement reads; the next goes on after the last (a cursor per kind), so every key with
/// parked runs is seen within a few sweeps however many there are.
constexpr std::size_t k_sweep_keys = 1000;
/// The shortest pause between sweeps.
constexpr std::chrono::milliseconds k_shortest_pause{10};
}  // namespace

boost::asio::awaitable<void> engine_impl::key_sweep_loop() {
  bool warned = false;
  std::optional<storage::parked_key> after_concurrency, after_throttle;
  while (!stopping()) {
    auto pause = std::max(options_.concurrency_sweep_interval, k_shortest_pause);
    auto keys =
        co_await store_.wake_parked(storage::parked_kind::concurrency, k_sweep_keys, after_concurrency);
    auto throttled =
        keys ? co_await store_.wake_parked(storage::parked_kind::throttle, k_sweep_keys, after_throttle)
             : keys;
    if (!keys || !throttled) {
      // The database is away: the claim loop reports it too; say it once per outage.
      const auto& error = !keys ? keys.error() : throttled.error();
      if (!warned) log::warn("engine", "concurrency keys and throttles: cannot sweep: " + error.message());
      warned = true;
    } else {
      warned = false;
      if (keys->woken + throttled->woken > 0) wake_claimer();
      after_concurrency = keys->next;
      after_throttle = throttled->next;
      if (keys->next || throttled->next) pause = k_shortest_pause;  // more keys to read
      if (throttled->next_free_at) {
        // A millisecond past the next throttle slot's time (the database's clock, read as this host's).
        const auto until = std::chrono::ceil<std::chrono::milliseconds>(*throttled->next_free_at -
                                                                        std::chrono::system_clock::now()) +
                           std::chrono::milliseconds(1);
        pause = std::clamp(until, k_shortest_pause, pause);
      }
    }
    if (stopping()) break;
    key_sweep_wait_.expires_after(pause);
    co_await key_sweep_wait_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  }
  key_sweep_active_ = false;
  notify_changed();
}

}  // namespace keel::detail
