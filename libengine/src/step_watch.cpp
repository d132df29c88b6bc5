// step_started in the run log: a step still running after a while is logged as it runs (its checkpoint
// then does not repeat it); a faster one is logged by its checkpoint, just before its end, and costs no
// statement of its own (see log_steps_cte).
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/object.hpp>

#include "engine_impl.hpp"
#include "keel/storage/json_limits.hpp"
#include "run_state.hpp"

namespace keel::detail {
namespace {

/// Appends the step's start, once. Under st.steps_mutex.
void log_started(run_state& st, run_state::running_step& step) {
  if (step.logged) return;
  step.logged = true;
  boost::json::object data;
  data["seq"] = step.seq;
  data["name"] = storage::valid_utf8(step.name);
  data["attempt"] = 1;
  data["epoch"] = st.claim.epoch;
  data["started_at"] =
      std::chrono::duration_cast<std::chrono::microseconds>(step.started.time_since_epoch()).count();
  if (step.branch) data["branch"] = *step.branch;
  step.unsettled->fetch_add(1, std::memory_order_acq_rel);
  st.engine.store_.append_log(
      st.lease(), "step_started", boost::json::value(std::move(data)),
      [unsettled = step.unsettled] { unsettled->fetch_sub(1, std::memory_order_acq_rel); });
}

}  // namespace

step_watch::step_watch(run_state& st, int seq, const std::string& name,
                       const std::optional<std::string>& branch,
                       std::chrono::system_clock::time_point started)
    : st_(st), unsettled_(std::make_shared<std::atomic<int>>(0)) {
  std::lock_guard lock(st_.steps_mutex);
  it_ = st_.running_steps.insert(st_.running_steps.end(),
                                 run_state::running_step{seq, name, branch, started, false, unsettled_});
}

std::function<void()> step_watch::track_append() {
  unsettled_->fetch_add(1, std::memory_order_acq_rel);
  return [unsettled = unsettled_] { unsettled->fetch_sub(1, std::memory_order_acq_rel); };
}

boost::asio::awaitable<void> step_watch::appends_settled() {
  if (unsettled_->load(std::memory_order_acquire) == 0) co_return;
  boost::asio::steady_timer wait(st_.strand);
  while (unsettled_->load(std::memory_order_acquire) > 0) {
    wait.expires_after(std::chrono::milliseconds(1));
    co_await wait.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  }
}

step_watch::~step_watch() {
  (void)finish();
}

void step_watch::log_start() {
  if (done_) return;
  std::lock_guard lock(st_.steps_mutex);
  log_started(st_, *it_);
}

bool step_watch::finish() {
  if (done_) return false;
  done_ = true;
  std::lock_guard lock(st_.steps_mutex);
  const bool logged = it_->logged;
  st_.running_steps.erase(it_);
  return logged;
}

void log_slow_steps(const std::vector<std::shared_ptr<run_state>>& runs, std::chrono::milliseconds after) {
  const auto cutoff = std::chrono::system_clock::now() - after;
  for (const auto& st : runs) {
    // Submitted under the lock: a checkpoint that sees `logged` is queued behind this append, so the
    // step's start is below its end in the log.
    std::lock_guard lock(st->steps_mutex);
    for (auto& step : st->running_steps) {
      if (step.started <= cutoff) log_started(*st, step);
    }
  }
}

}  // namespace keel::detail
