// What the engine holds for one run in flight on this worker.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "keel/engine/engine.hpp"

namespace keel::detail {

class engine_impl;
struct output_state;

/// Owned by the run's coroutine and by the engine's in-flight table; touched only on the run's strand,
/// except `lost` and `stopping`, which other strands set.
struct run_state {
  run_state(engine_impl& e, storage::claimed_run c,
            boost::asio::strand<boost::asio::io_context::executor_type> s,
            std::chrono::steady_clock::time_point lease_until);

  engine_impl& engine;
  storage::claimed_run claim;
  boost::asio::strand<boost::asio::io_context::executor_type> strand;
  /// Retry backoff; cancelled to cut the wait short when the engine stops or the run is lost.
  boost::asio::steady_timer backoff;
  /// Position of the next ctx.step call on the main line (outside parallel branches).
  int next_seq = 0;
  /// Position of the workflow's latest own step on the main line (not the engine's `keel.` records of
  /// waits, clocks, hooks), -1 before the first: what a compensation registered now undoes.
  int last_user_step = -1;
  /// Progress frames this execution published (ctx.emit): the last one's number.
  std::int64_t frames = 0;
  /// The attempt of the main-line step in progress (its output stream chunks carry it).
  int step_attempt = 0;
  /// Durable output streams written in this execution, by name (output_stream.cpp).
  std::map<std::string, std::shared_ptr<output_state>> outputs;
  /// Steps executing now (not replayed), for the engine's watch that logs step_started for those still
  /// running after a while (step_watch.cpp); a faster step's start is logged by its checkpoint.
  struct running_step {
    int seq = 0;
    std::string name;
    std::optional<std::string> branch;
    std::chrono::system_clock::time_point started;
    bool logged = false;
    /// The step's appends not yet committed (or dropped): its checkpoint waits for them, so that the
    /// step's end is never logged before its start or retries.
    std::shared_ptr<std::atomic<int>> unsettled;
  };
  std::mutex steps_mutex;
  std::list<running_step> running_steps;  // under steps_mutex
  /// A ctx.step call is in progress on the main line (its steps must not overlap).
  bool in_step = false;
  /// The records of earlier executions by position (nullptr where there is none), and those of parallel
  /// branches by (branch, position in it): branches finish in any order, so their seqs are not positions.
  std::vector<const storage::step_record*> by_seq;
  std::map<std::pair<std::string, int>, const storage::step_record*> by_branch;
  /// Inside the parallel region being executed: the next seq a new branch step may take (recorded seqs are
  /// skipped), and the highest seq the region holds so far.
  int next_free_seq = 0;
  int region_high = -1;
  /// Compensations registered by ctx.compensate in this execution, oldest first.
  struct compensation {
    std::string name;
    std::function<boost::asio::awaitable<boost::json::value>()> fn;
    step_options options;
    /// The position of the step it undoes (the workflow's latest step when it was registered, or the next
    /// position before any): a retry of the compensated run starts again there.
    int from_step = 0;
  };
  std::vector<compensation> compensations;
  /// Retry backoff timers of parallel branches in progress (besides `backoff`): cut short with it.
  std::vector<boost::asio::steady_timer*> branch_backoffs;
  /// A parallel branch blocked on a durable wait, in memory, while other branches go on
  /// (context_branch_waits.cpp). Whoever wakes it says why, takes it off `blocked` and counts it running.
  struct blocked_wait {
    enum class verdict { waiting, decide_again, cancelled };
    blocked_wait(boost::asio::strand<boost::asio::io_context::executor_type> s,
                 std::vector<storage::wait_arm> a);
    std::vector<storage::wait_arm> arms;
    boost::asio::steady_timer wake;
    verdict how = verdict::waiting;
  };
  std::vector<blocked_wait*> blocked;
  /// Branch lines executing now: neither blocked on a wait nor waiting for a nested parallel. When none
  /// is and some are blocked, the run parks on all their arms together (the outermost parallel does it).
  int running_lines = 0;
  /// The outermost parallel's join timer, told when a line blocks or stops running.
  boost::asio::steady_timer* join_watch = nullptr;
  /// The parallel branches in progress (their states live while their parallel runs).
  std::vector<const branch_state*> live_branches;
  /// Seqs a branch wait took for its record but did not record (it blocked): taken again first.
  std::vector<int> spare_seqs;
  /// A branch's wait decision in flight (one at a time), and the branches in line for their turn.
  struct probe_waiter {
    boost::asio::steady_timer wake;
    bool granted = false;
  };
  bool probing = false;
  std::deque<probe_waiter*> probe_queue;
  /// The run's finish was submitted (set on the run's strand before the completion handler reads it).
  bool finishing = false;
  /// The lease is gone (heartbeat or a write said so): write nothing more.
  std::atomic<bool> lost{false};
  /// Asked to cancel (engine::cancel with a grace): the next step or wait throws cancelled_error, once.
  std::atomic<bool> cancel_requested{false};
  bool cancel_seen = false;
  /// The latest time this worker can be sure it still holds the lease: when the claim or the last successful
  /// heartbeat was sent, plus the lease. Past it, no new step attempt starts (the database may have handed
  /// the run to another worker even if no write has been fenced yet).
  std::atomic<std::chrono::steady_clock::time_point> lease_deadline;
  /// Set once the context threw a terminal error (nondeterminism, lease lost): later steps rethrow it.
  std::exception_ptr poisoned;
  /// Set when a wait parked the run (sleeping or waiting): this execution ends without a finish.
  struct parked_wait {
    storage::wait_kind kind = storage::wait_kind::sleep;
    std::string event;
    std::optional<std::chrono::system_clock::time_point> until;
    /// Not a wait: ctx.continue_as_new queued the run afresh (due now).
    bool continued = false;
  };
  std::optional<parked_wait> parked;

  [[nodiscard]] storage::lease_token lease() const;
  /// A seq for a new step of a parallel branch: the region's next one no record holds.
  int take_branch_seq();
  /// Cancels every retry backoff in progress, and tells the outermost parallel (on the run's strand).
  void cancel_backoffs();
  /// A branch line stopped running (finished, blocked, or waits for a nested parallel).
  void line_idle();
  /// Wakes every blocked branch with `how` (each then counts as running).
  void wake_blocked(blocked_wait::verdict how);
};

/// One branch of a ctx.parallel / ctx.map in progress: its path and the position of its next step.
struct branch_state {
  std::string path;
  int next_local = 0;
  bool in_step = false;
  /// The branch ended (its coroutine returned or threw): its context takes no more work.
  bool done = false;
  /// An earlier execution saw a cancel at this branch's first unrecorded wait (the parallel's record says
  /// so): the replay throws cancelled_error there again, once, instead of deciding the wait anew.
  bool cancelled_before = false;
  boost::asio::steady_timer backoff;
  branch_state(std::string p, boost::asio::strand<boost::asio::io_context::executor_type> s)
      : path(std::move(p)), backoff(s) {}
};

/// Registers a step executing now in run_state::running_steps for as long as it lives.
class step_watch {
 public:
  step_watch(run_state& st, int seq, const std::string& name, const std::optional<std::string>& branch,
             std::chrono::system_clock::time_point started);
  ~step_watch();
  step_watch(const step_watch&) = delete;
  step_watch& operator=(const step_watch&) = delete;
  /// Logs the step's start now if it is not yet (before the step's first retry is logged).
  void log_start();
  /// For an append of this step's: counts it until the returned callback runs.
  std::function<void()> track_append();
  /// Waits on the run's strand until every append of this step committed or was dropped (normally done
  /// long before: they were queued ahead of the step's end).
  boost::asio::awaitable<void> appends_settled();
  /// Ends the watch: whether the step's start was logged while it ran (then its checkpoint does not).
  bool finish();

 private:
  run_state& st_;
  std::list<run_state::running_step>::iterator it_;
  std::shared_ptr<std::atomic<int>> unsettled_;
  bool done_ = false;
};

/// Logs step_started for the steps of `runs` that have been running for `after` or longer (once each).
void log_slow_steps(const std::vector<std::shared_ptr<run_state>>& runs, std::chrono::milliseconds after);

/// Thrown inside a run when it must stop executing without writing an outcome: the lease was lost, or the
/// engine is stopping and the run is handed back to the queue. Deliberately not a std::exception, so that
/// `catch (const std::exception&)` in workflow code does not swallow it.
struct run_interrupted {
  enum class why { lease_lost, released, parked } reason;
};

/// Marks a ctx.step or wait in progress for the duration of the call, however it ends (also when its frame is
/// destroyed mid-await). Throws concurrent_step_error (poisoning the run) if one is already in progress:
/// positional replay, fencing and the backoff timer all assume one at a time.
class step_slot {
 public:
  /// `busy`: the flag of the line the step runs on (the main line's, or its branch's).
  step_slot(run_state& st, bool& busy, const std::string& name);
  ~step_slot() { busy_ = false; }
  step_slot(const step_slot&) = delete;
  step_slot& operator=(const step_slot&) = delete;

 private:
  bool& busy_;
};

/// Before new work of a run: rethrows (and records) a lost lease, or the engine stopping; on the main line
/// (`main_line`), also a cancel request, once. Parallel branches do not see it: which branch got there
/// first would differ between executions, and their replay with it.
void check_interrupt(run_state& st, bool main_line = true);

/// check_interrupt for new work of a parallel branch; and a cancel an earlier execution saw there, once.
void check_branch_interrupt(run_state& st, branch_state& branch);

/// A hook or child handle made in parallel branch `made_in` (nullptr: the main line) is used: fails the run
/// if that branch has ended (its context is gone, or its positions would depend on when a sibling used it).
void check_handle(run_state& st, const branch_state* made_in, std::string_view what);

/// A write of the run was fenced (the lease moved on) or storage shut down: this worker must not continue
/// the run. Records it and throws.
[[noreturn]] void lose_lease(run_state& st);

/// The outermost parallel's join (branch_waits.cpp): until `done()`, wakes blocked branches to decide their
/// waits again when a timer of theirs comes due (and now and then, for events, hooks and children), and
/// parks the run on all their arms together once no branch line runs.
boost::asio::awaitable<void> watch_branches(run_state& st, boost::asio::steady_timer& wake,
                                            std::function<bool()> done);

/// Decides a parallel branch's wait at its position `local` (a wait for any of `arms`), blocking the branch
/// in memory between tries; recorded as step `name`, or not at all when `name` is empty (child arms only:
/// the caller records the outcome). Returns the decision ({"index", "payload"} or {"index", "timed_out"}).
boost::asio::awaitable<boost::json::value> decide_branch_wait(run_state& st, branch_state& branch, int local,
                                                              std::string name,
                                                              std::vector<storage::wait_arm> arms);

/// The record an earlier execution made at main-line step position `seq`, or nullptr if there is none.
/// Throws (and poisons the run with) nondeterminism_error when the record has another name.
const storage::step_record* replayed_step(run_state& st, int seq, const std::string& name);

/// The same for position `local` of parallel branch `branch`.
const storage::step_record* replayed_branch_step(run_state& st, const std::string& branch, int local,
                                                 const std::string& name);

}  // namespace keel::detail
