// Timers for the runs this worker parked. A sleep's timer claims its run by id a little before its wake
// time (by this worker's clock, which set it), and the replayed sleep waits out the rest in memory, so the
// sleep ends at its wake time rather than a transaction after it; the other timers (event and hook
// timeouts, decided by the database's clock) wake the claim loop instead of waiting for its next poll.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "engine_impl.hpp"
#include "keel/common/log.hpp"

namespace keel::detail {
namespace {

namespace asio = boost::asio;

/// The claim loop's claim compares due_at with the database's now(), which is taken when the claim's
/// transaction starts: waking it a little after the wake time makes its first claim find the run.
constexpr std::chrono::microseconds k_claim_loop_slack{500};

/// How long before its wake time a sleeping run is claimed: a claim's transaction through a busy writer, with
/// room to spare (1 ms was too tight on a loaded machine: p50 lateness 0.6-3.4 ms; 3 ms: 0.06-0.07). The
/// replayed sleep waits out the rest; k_sleep_held_in_memory in context_waits.cpp must be larger.
constexpr std::chrono::microseconds k_claim_ahead{3'000};

}  // namespace

void engine_impl::schedule_wakeup(std::chrono::system_clock::time_point until, std::optional<run_id> run) {
  const auto at = std::chrono::steady_clock::now() +
                  std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                      until - std::chrono::system_clock::now()) +
                  (run ? -k_claim_ahead : k_claim_loop_slack);
  asio::post(ctl_, [this, at, until, run = std::move(run)]() mutable {
    if (stopping() || !wakeup_active_) return;  // no wake-up loop (tick mode): the caller polls
    const bool soonest = wakeups_.empty() || at < wakeups_.begin()->first;
    wakeups_.emplace(at, wakeup{std::move(run), until});
    if (soonest) wakeup_timer_.cancel();  // the loop re-arms for the new soonest time
  });
}

asio::awaitable<void> engine_impl::claim_parked(run_id id, std::chrono::system_clock::time_point until) {
  ++direct_claims_;
  const storage::claim_request request{worker_id_, {}, 1, options_.lease, options_.max_recoveries};
  const auto lease_until = std::chrono::steady_clock::now() + options_.lease;  // counted from the request
  // Due at `until`, which this claim anticipates by k_claim_ahead.
  auto claimed = co_await store_.claim_parked(request, id, std::max(until, std::chrono::system_clock::now()));
  --direct_claims_;
  notify_changed();  // a stop waits for direct claims
  if (!claimed || claimed->runs.empty()) {
    // Taken elsewhere, woken by something else, or the claim failed: the claim loop looks (a poll would too).
    if (!claimed) log::warn("engine", "claim of parked run " + id + " failed: " + claimed.error().message());
    schedule_wakeup(std::chrono::system_clock::now());
    co_return;
  }
  co_await launch_claimed(std::move(claimed->runs), lease_until);
}

asio::awaitable<void> engine_impl::wakeup_loop() {
  while (!stopping()) {
    wakeup_timer_.expires_at(wakeups_.empty() ? std::chrono::steady_clock::time_point::max()
                                              : wakeups_.begin()->first);
    co_await wakeup_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    const auto now = std::chrono::steady_clock::now();
    bool claim_loop = false;
    while (!wakeups_.empty() && wakeups_.begin()->first <= now && !stopping()) {
      auto w = std::move(wakeups_.begin()->second);
      wakeups_.erase(wakeups_.begin());
      if (w.run && free_slots() > 0) {
        asio::co_spawn(ctl_, claim_parked(std::move(*w.run), w.until), asio::detached);
      } else if (w.run) {
        schedule_wakeup(w.until);  // no slot now: the claim loop takes it when one frees
      } else {
        claim_loop = true;
      }
    }
    if (claim_loop) wake_claimer();
  }
  wakeups_.clear();
  wakeup_active_ = false;
  notify_changed();
}

}  // namespace keel::detail
