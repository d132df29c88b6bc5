// Timers for the runs this worker parked: the claim loop wakes when one becomes due, instead of at its next
// poll, so a sleep ends within a claim round trip of its wake time.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "engine_impl.hpp"

namespace keel::detail {
namespace {

namespace asio = boost::asio;

/// The claim compares due_at with the database's now(), which is taken when the claim's transaction starts:
/// waking a little after the wake time makes the first claim find the run.
constexpr std::chrono::microseconds k_wakeup_slack{500};

}  // namespace

void engine_impl::schedule_wakeup(std::chrono::system_clock::time_point until) {
  const auto at = std::chrono::steady_clock::now() +
                  std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                      until - std::chrono::system_clock::now()) +
                  k_wakeup_slack;
  asio::post(ctl_, [this, at] {
    if (stopping() || !wakeup_active_) return;  // no wake-up loop (tick mode): the caller polls
    const bool soonest = wakeups_.empty() || at < *wakeups_.begin();
    wakeups_.insert(at);
    if (soonest) wakeup_timer_.cancel();  // the loop re-arms for the new soonest time
  });
}

asio::awaitable<void> engine_impl::wakeup_loop() {
  while (!stopping()) {
    wakeup_timer_.expires_at(wakeups_.empty() ? std::chrono::steady_clock::time_point::max()
                                              : *wakeups_.begin());
    co_await wakeup_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    const auto now = std::chrono::steady_clock::now();
    bool due = false;
    while (!wakeups_.empty() && *wakeups_.begin() <= now) {
      wakeups_.erase(wakeups_.begin());
      due = true;
    }
    if (due) wake_claimer();
  }
  wakeups_.clear();
  wakeup_active_ = false;
  notify_changed();
}

}  // namespace keel::detail
