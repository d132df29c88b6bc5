// Durable waits inside parallel branches (ctx.parallel, ctx.map).
//
// A branch's wait is decided like a wait for any (sql::wait_any_decide, mode probe) at the branch's own
// position. When nothing is ready, the branch blocks in memory while the other branches go on; the
// outermost parallel wakes it to decide again when one of its timers comes due, and now and then for events,
// hooks and child runs. Once no branch line runs, the run parks on every blocked branch's arms together
// (mode park) and holds no worker: whichever arm completes wakes it, and its next execution replays the
// branches, each deciding its own wait again. A branch's position never depends on the order the others
// ran in, so neither does what it waits for.
#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/value.hpp>
#include <deque>

#include "engine_impl.hpp"
#include "keel/engine/context.hpp"
#include "output_state.hpp"

namespace keel::detail {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using std::chrono::steady_clock;
using std::chrono::system_clock;
using verdict = run_state::blocked_wait::verdict;

/// How soon blocked branches look again for events, hooks and children while other branches run (then less
/// and less often). When no branch runs, the run parks instead and is woken by what it waits for.
constexpr std::chrono::milliseconds k_first_poll{100};
constexpr std::chrono::milliseconds k_longest_poll{5000};

/// Takes a blocked branch off the run's list however its frame ends.
class blocked_entry {
 public:
  blocked_entry(run_state& st, run_state::blocked_wait& me) : st_(st), me_(me) {
    st_.blocked.push_back(&me_);
  }
  ~blocked_entry() { std::erase(st_.blocked, &me_); }
  blocked_entry(const blocked_entry&) = delete;
  blocked_entry& operator=(const blocked_entry&) = delete;

 private:
  run_state& st_;
  run_state::blocked_wait& me_;
};

/// Blocks a branch line until the outermost parallel wakes it: to decide its wait again (returns), or
/// because the run was asked to cancel (throws cancelled_error), parked or interrupted (rethrows that).
asio::awaitable<void> block_branch(run_state& st, std::vector<storage::wait_arm> arms) {
  run_state::blocked_wait me(st.strand, std::move(arms));
  const blocked_entry entry(st, me);
  st.line_idle();
  co_await me.wake.async_wait(asio::as_tuple(asio::use_awaitable));
  if (me.how == verdict::waiting) ++st.running_lines;  // not woken through wake_blocked
  // Parked (or interrupted) meanwhile: that ends the line, whatever check_interrupt would say now.
  if (st.poisoned) std::rethrow_exception(st.poisoned);
  if (me.how == verdict::cancelled) {
    st.cancel_seen = true;
    throw cancelled_error("run " + st.claim.id + " was asked to cancel");
  }
  check_interrupt(st, false);
}

/// One probe of a run at a time: probes in one batch would each read the same pending event and both
/// consume it. Whoever holds the turn hands it to the next in line.
class probe_turn {
 public:
  explicit probe_turn(run_state& st) : st_(st) {}
  probe_turn(const probe_turn&) = delete;
  probe_turn& operator=(const probe_turn&) = delete;
  ~probe_turn() {
    if (!held_) return;
    if (st_.probe_queue.empty()) {
      st_.probing = false;
      return;
    }
    auto* next = st_.probe_queue.front();
    st_.probe_queue.pop_front();
    next->granted = true;
    next->wake.cancel();
  }

  asio::awaitable<void> take() {
    while (st_.probing) {
      run_state::probe_waiter me{asio::steady_timer(st_.strand, steady_clock::time_point::max())};
      st_.probe_queue.push_back(&me);
      const queued_entry entry(st_, me);
      co_await me.wake.async_wait(asio::as_tuple(asio::use_awaitable));
      if (me.granted) {
        held_ = true;  // handed over: `probing` stays set
        co_return;
      }
    }
    st_.probing = true;
    held_ = true;
  }

 private:
  /// Out of the line however the waiting frame ends.
  struct queued_entry {
    run_state& st;
    run_state::probe_waiter& me;
    queued_entry(run_state& s, run_state::probe_waiter& m) : st(s), me(m) {}
    ~queued_entry() { std::erase(st.probe_queue, &me); }
    queued_entry(const queued_entry&) = delete;
    queued_entry& operator=(const queued_entry&) = delete;
  };
  run_state& st_;
  bool held_ = false;
};

asio::awaitable<result<storage::wait_outcome>> probe_once(run_state& st,
                                                          const storage::wait_request& request) {
  probe_turn turn(st);
  co_await turn.take();
  co_await flush_outputs(st);
  co_return co_await st.engine.store_.wait(request);
}

bool interrupted(const run_state& st) {
  return st.poisoned || st.lost.load(std::memory_order_acquire) || st.engine.stopping() ||
         steady_clock::now() > st.lease_deadline.load(std::memory_order_acquire);
}

/// A workflow error found at a branch's wait: fails the run (another execution would do the same).
void fail_wait(run_state& st, std::string message) {
  json::object error;
  error["code"] = "invalid_argument";
  error["message"] = std::move(message);
  error["retriable"] = false;
  st.poisoned = std::make_exception_ptr(step_failed_error(json::value(std::move(error))));
}

/// No branch line runs and some are blocked: parks the run on all their arms, unless one is ready already
/// (then they decide again) or the run was asked to cancel (then they see it).
asio::awaitable<void> park_blocked(run_state& st) {
  std::vector<storage::wait_arm> arms;
  int group = 0;
  for (const auto* b : st.blocked) {
    for (auto a : b->arms) {
      a.group = group;
      arms.push_back(std::move(a));
    }
    ++group;
  }
  if (arms.size() > storage::k_max_park_arms) {
    fail_wait(st, "ctx.parallel / ctx.map: " + std::to_string(st.blocked.size()) + " branches wait with " +
                      std::to_string(arms.size()) + " alternatives in all, more than " +
                      std::to_string(storage::k_max_park_arms) +
                      " at once; give ctx.map a concurrency, or fan out with ctx.map_children");
    st.wake_blocked(verdict::decide_again);
    co_return;
  }
  const bool timers_only = std::all_of(arms.begin(), arms.end(),
                                       [](const auto& a) { return a.kind == storage::wait_kind::sleep; });
  storage::wait_request request{st.lease(),
                                -1,
                                std::string(),
                                storage::wait_kind::any,
                                std::string(),
                                0,
                                std::nullopt,
                                system_clock::now(),
                                std::move(arms),
                                st.cancel_seen,
                                storage::wait_mode::park,
                                std::nullopt,
                                0};
  // No line runs, so none blocks or wakes while this is decided; only this loop wakes them.
  co_await flush_outputs(st);  // what the run wrote is durable before it parks
  auto decided = co_await st.engine.store_.wait(request);
  if (!decided) {
    if (decided.error() == storage::errc::invalid_argument) {
      fail_wait(st, "ctx.parallel / ctx.map: the branches' waits cannot be stored (" +
                        decided.error().message() + ")");
    } else {
      st.lost.store(true, std::memory_order_release);
      st.poisoned = std::make_exception_ptr(run_interrupted{run_interrupted::why::lease_lost});
    }
  } else if (decided->outcome == storage::wait_outcome::what::cancel) {
    st.cancel_requested.store(true, std::memory_order_release);
    st.wake_blocked(verdict::cancelled);
    co_return;
  } else if (decided->outcome == storage::wait_outcome::what::parked) {
    std::optional<system_clock::time_point> due;
    if (const auto* o = decided->output.if_object()) {
      if (const auto* u = o->if_contains("until"); u && u->is_int64())
        due = system_clock::time_point(std::chrono::microseconds(u->as_int64()));
    }
    st.parked = run_state::parked_wait{timers_only ? storage::wait_kind::sleep : storage::wait_kind::any,
                                       "parallel branches", due};
    st.poisoned = std::make_exception_ptr(run_interrupted{run_interrupted::why::parked});
  }
  st.wake_blocked(verdict::decide_again);
}

/// When the blocked branches must look again: their soonest timer, and the next poll if one waits for
/// something that is not a timer.
steady_clock::time_point next_look(const run_state& st, std::chrono::milliseconds poll) {
  const auto now = steady_clock::now();
  const auto wall = system_clock::now();
  auto at = steady_clock::time_point::max();
  for (const auto* b : st.blocked) {
    for (const auto& a : b->arms) {
      if (a.until) {
        // At least a little ahead: a timer due by this clock but not yet by the database's is tried again
        // soon, not in a loop.
        const auto in = std::max<system_clock::duration>(*a.until - wall, std::chrono::milliseconds(1));
        at = std::min(at, now + std::chrono::duration_cast<steady_clock::duration>(in));
      }
      if (a.kind != storage::wait_kind::sleep) at = std::min(at, now + poll);
    }
  }
  return at;
}

}  // namespace

run_state::blocked_wait::blocked_wait(boost::asio::strand<boost::asio::io_context::executor_type> s,
                                      std::vector<storage::wait_arm> a)
    : arms(std::move(a)), wake(s, steady_clock::time_point::max()) {}

void run_state::line_idle() {
  --running_lines;
  if (join_watch != nullptr) join_watch->cancel();
}

void run_state::wake_blocked(blocked_wait::verdict how) {
  auto lines = std::move(blocked);
  blocked.clear();
  for (auto* b : lines) {
    b->how = how;
    ++running_lines;
    b->wake.cancel();
  }
}

asio::awaitable<void> watch_branches(run_state& st, asio::steady_timer& wake, std::function<bool()> done) {
  auto poll = k_first_poll;
  while (!done()) {
    if (!st.blocked.empty() && interrupted(st)) {
      st.wake_blocked(verdict::decide_again);  // each sees the interruption and ends
    } else if (!st.blocked.empty() && st.running_lines == 0) {
      try {
        co_await park_blocked(st);
      } catch (const std::exception& e) {
        // The branches still run on this frame's state: they must end before it unwinds.
        fail_wait(st, std::string("ctx.parallel: cannot park the blocked branches: ") + e.what());
        st.wake_blocked(verdict::decide_again);
      }
      poll = k_first_poll;
      continue;
    }
    wake.expires_at(next_look(st, poll));
    const auto [ec] = co_await wake.async_wait(asio::as_tuple(asio::use_awaitable));
    if (!ec && !st.blocked.empty()) {
      // A timer came due, or it is time to look again: the blocked branches decide again.
      st.wake_blocked(verdict::decide_again);
      poll = std::min(poll * 2, k_longest_poll);
    }
  }
}

asio::awaitable<json::value> decide_branch_wait(run_state& st, branch_state& branch, int local,
                                                std::string name, std::vector<storage::wait_arm> arms) {
  const auto started = system_clock::now();
  const bool record = !name.empty();
  for (;;) {
    check_branch_interrupt(st, branch);
    const int seq = record ? st.take_branch_seq() : -1;
    // Cancel requests are the main line's to see (which branch got there first differs between executions).
    storage::wait_request request{
        st.lease(), seq,  name, storage::wait_kind::any,   std::string(), 0,    std::nullopt,
        started,    arms, true, storage::wait_mode::probe, branch.path,   local};
    auto decided = co_await probe_once(st, request);
    if (!decided) {
      if (decided.error() != storage::errc::invalid_argument) lose_lease(st);
      fail_wait(st, "a wait in parallel branch " + branch.path +
                        ": 1 to 64 alternatives; event names of 1 to 255 bytes of UTF-8");
      std::rethrow_exception(st.poisoned);
    }
    using what = storage::wait_outcome::what;
    if (decided->outcome == what::consumed || decided->outcome == what::recorded)
      co_return std::move(decided->output);
    if (record) st.spare_seqs.push_back(seq);
    auto again = arms;  // named: no class temporary inside the co_await expression (GCC 12)
    co_await block_branch(st, std::move(again));
  }
}

}  // namespace keel::detail
