// Parallel branches (ctx.parallel, ctx.map): branches interleaved on the run's strand, each with positions
// of its own, their steps taking seqs from the region the parallel spans.
//
// The region of a parallel at main-line position N is seqs N+1 .. N+T, T being how many steps its branches
// take in all (nested parallels included); the main line goes on at N+T+1 and the parallel's own record
// ("keel.parallel", {"branches": k}) sits at N. Branches finish in any order, so a branch step takes the
// region's next seq that no record holds when it is new, and is found on replay by (branch, position).
// The region stays contiguous: a replay re-runs exactly the steps whose records are missing, filling the
// holes a crash left before going past them.
#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "engine_impl.hpp"
#include "keel/engine/context.hpp"
#include "output_state.hpp"

namespace keel {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;

constexpr std::string_view k_parallel_step = "keel.parallel";

/// What the branches of one parallel call hand back, touched only on the run's strand.
struct join_state {
  explicit join_state(asio::strand<asio::io_context::executor_type> s, std::size_t n)
      : results(n), errors(n), wake(s, asio::steady_timer::time_point::max()) {}
  std::vector<json::value> results;
  std::vector<std::exception_ptr> errors;
  std::size_t started = 0, finished = 0;
  asio::steady_timer wake;
  /// A nested parallel's caller (a branch line) waits for its branches: not running meanwhile.
  bool waiter_idle = false;
};

/// The branches of one parallel are live (their hooks and child handles usable) while it runs.
class live_branches_scope {
 public:
  live_branches_scope(detail::run_state& st, const std::vector<std::unique_ptr<detail::branch_state>>& lines)
      : st_(st), lines_(lines) {}
  ~live_branches_scope() {
    std::erase_if(st_.live_branches, [this](const detail::branch_state* b) {
      return std::any_of(lines_.begin(), lines_.end(), [b](const auto& l) { return l.get() == b; });
    });
  }
  live_branches_scope(const live_branches_scope&) = delete;
  live_branches_scope& operator=(const live_branches_scope&) = delete;

 private:
  detail::run_state& st_;
  const std::vector<std::unique_ptr<detail::branch_state>>& lines_;
};

/// While the outermost parallel runs, its join timer is where lines report that they block or stop.
class join_watch_scope {
 public:
  join_watch_scope(detail::run_state& st, asio::steady_timer& t) : st_(st) { st_.join_watch = &t; }
  ~join_watch_scope() { st_.join_watch = nullptr; }
  join_watch_scope(const join_watch_scope&) = delete;
  join_watch_scope& operator=(const join_watch_scope&) = delete;

 private:
  detail::run_state& st_;
};

}  // namespace

void context::main_line_only(std::string_view what) {
  if (branch_ == nullptr) return;
  auto& st = *state_;
  json::object error;
  error["code"] = code_name(errc::step_failed);
  error["message"] = std::string(what) + " inside a ctx.parallel / ctx.map branch (" + branch_->path +
                     "): it acts on the whole run, so it belongs on the main line";
  error["retriable"] = false;
  st.poisoned = std::make_exception_ptr(step_failed_error(json::value(std::move(error))));
  std::rethrow_exception(st.poisoned);
}

asio::awaitable<std::vector<json::value>> context::run_parallel(std::vector<branch_fn> branches,
                                                                std::size_t concurrency) {
  auto& st = *state_;
  auto& engine = st.engine;
  const std::string name(k_parallel_step);
  const detail::step_slot slot(st, branch_ ? branch_->in_step : st.in_step, name);
  const bool top = branch_ == nullptr;
  // The parallel's own position: on the main line its seq; in a branch (nested) its place in the branch.
  const int local = top ? st.next_seq++ : branch_->next_local++;
  const auto* recorded = top ? detail::replayed_step(st, local, name)
                             : detail::replayed_branch_step(st, branch_->path, local, name);
  const std::size_t n = branches.size();
  if (recorded) {
    const auto* o = recorded->output.if_object();
    const auto* k = o ? o->if_contains("branches") : nullptr;
    if (k == nullptr || !k->is_int64() || static_cast<std::size_t>(k->as_int64()) != n) {
      st.poisoned = std::make_exception_ptr(nondeterminism_error(
          "run " + st.claim.id + ": the parallel at this position recorded " +
          (k ? json::serialize(*k) : "?") + " branches, but the workflow now gives " + std::to_string(n)));
      std::rethrow_exception(st.poisoned);
    }
  }
  if (top) {
    st.next_free_seq = local + 1;
    st.region_high = local;
    st.spare_seqs.clear();  // seqs of an earlier region are not this one's
  }
  const std::string prefix = (top ? std::string() : branch_->path + "/") + std::to_string(local) + ":";
  const auto started_at = std::chrono::system_clock::now();

  std::vector<std::unique_ptr<detail::branch_state>> lines;
  lines.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    lines.push_back(std::make_unique<detail::branch_state>(prefix + std::to_string(i), st.strand));
    st.branch_backoffs.push_back(&lines.back()->backoff);
    st.live_branches.push_back(lines.back().get());
  }
  if (recorded) {
    // Branches an earlier execution saw cancelled at a wait: their replay meets the cancel there again.
    if (const auto* c = recorded->output.as_object().if_contains("cancelled"); c && c->is_array()) {
      for (const auto& i : c->as_array()) {
        if (i.is_int64() && i.as_int64() >= 0 && static_cast<std::size_t>(i.as_int64()) < n)
          lines[static_cast<std::size_t>(i.as_int64())]->cancelled_before = true;
      }
    }
  }
  const live_branches_scope live(st, lines);
  std::vector<std::unique_ptr<context>> contexts;
  contexts.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    contexts.push_back(std::make_unique<context>(st, lines[i].get()));

  join_state join(st.strand, n);
  std::optional<join_watch_scope> watching;
  if (top) watching.emplace(st, join.wake);
  const std::size_t width = concurrency == 0 ? n : std::min(concurrency, n);
  // Starts the next branch; each one's end starts another, until all have run.
  std::function<void()> start_next = [&] {
    const std::size_t i = join.started++;
    auto body = branches[i](*contexts[i]);  // called outside co_spawn's expression (GCC 12)
    ++st.running_lines;
    asio::co_spawn(st.strand, std::move(body),
                   asio::bind_executor(st.strand, [&st, &join, &lines, &start_next, i, n](
                                                      std::exception_ptr e, json::value v) {
                     lines[i]->done = true;
                     join.errors[i] = e;
                     join.results[i] = std::move(v);
                     ++join.finished;
                     if (join.started < n) start_next();
                     if (join.waiter_idle) {
                       // Counted before this line stops: the run is never seen with no line running in
                       // between.
                       join.waiter_idle = false;
                       ++st.running_lines;
                     }
                     st.line_idle();
                     join.wake.cancel();
                   }));
  };
  for (std::size_t i = 0; i < width; ++i)
    start_next();
  if (top) {
    std::function<bool()> all_done = [&join, n] { return join.finished == n; };  // named (GCC 12)
    co_await detail::watch_branches(st, join.wake, std::move(all_done));
  } else {
    while (join.finished < n) {
      join.waiter_idle = true;
      st.line_idle();
      join.wake.expires_at(asio::steady_timer::time_point::max());
      co_await join.wake.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }
  std::erase_if(st.branch_backoffs, [&](asio::steady_timer* t) {
    return std::any_of(lines.begin(), lines.end(), [t](const auto& l) { return &l->backoff == t; });
  });

  // An interruption (lost lease, stop) ends the run's execution: nothing more is written.
  for (auto& e : join.errors) {
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const detail::run_interrupted&) {
      throw;
    } catch (...) {
    }
  }
  if (st.poisoned) std::rethrow_exception(st.poisoned);
  if (!recorded) {
    // The parallel's own record: on the main line at its position (the region follows it); nested, as a
    // step of its branch.
    json::object out;
    out["branches"] = n;
    // Which branches a cancel ended at a wait: nothing else records it, and a replay must not decide
    // those waits anew (a branch going on would shift everything after the region).
    json::array cancelled;
    for (std::size_t i = 0; i < n; ++i) {
      if (!join.errors[i]) continue;
      try {
        std::rethrow_exception(join.errors[i]);
      } catch (const cancelled_error&) {
        cancelled.push_back(static_cast<std::int64_t>(i));
      } catch (...) {
      }
    }
    if (!cancelled.empty()) out["cancelled"] = std::move(cancelled);
    // Where the region ends: a replay goes on after it even if its last seqs hold no record (a wait that
    // blocked gave its seq back, and nothing took it again).
    if (top) out["high"] = st.region_high;
    const int seq = top ? local : st.take_branch_seq();
    storage::step_record rec{seq,     name, false,      json::value(std::move(out)),
                             nullptr, 1,    started_at, std::chrono::system_clock::now(),
                             {},      0};
    if (!top) {
      rec.branch = branch_->path;
      rec.branch_seq = local;
    }
    storage::step_checkpoint cp{st.lease(), std::move(rec)};
    if (top) co_await detail::flush_outputs(st);  // the record commits after what the run wrote before it
    auto written = co_await engine.store_.checkpoint(cp);
    if (!written) detail::lose_lease(st);
  }
  // The main line goes on past the region (as recorded, when it was).
  if (top && recorded) {
    if (const auto* high = recorded->output.as_object().if_contains("high"); high && high->is_int64())
      st.region_high = std::max(st.region_high, static_cast<int>(high->as_int64()));
  }
  if (top) st.next_seq = std::max(st.next_seq, st.region_high + 1);
  for (auto& e : join.errors) {
    if (e) std::rethrow_exception(e);
  }
  co_return std::move(join.results);
}

}  // namespace keel
