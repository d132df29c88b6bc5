// The engine's private state: io_context threads, the store, the in-flight table and the control loops.
#pragma once

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>
#include <vector>

#include "event_hub.hpp"
#include "keel/common/log.hpp"
#include "keel/engine/engine.hpp"
#include "run_state.hpp"
#include "workflow_metrics.hpp"

namespace keel::detail {

/// An error from storage, as the engine reports it: not_found becomes run_not_found.
error_code engine_error(error_code ec);

/// How an enqueue is debounced: its key and window; none: not debounced (debounce.cpp).
struct debounce_key {
  std::string key;
  std::chrono::milliseconds window{0};
};
/// From the workflow's rule and the enqueue's options (which win). Errors: storage::errc::invalid_argument
/// (a debounce with an idempotency key or run_at, a window <= 0).
result<std::optional<debounce_key>> debounce_of(const workflow_definition& def,
                                                const boost::json::value& input,
                                                const enqueue_options& options);

class engine_impl {
 public:
  using strand_t = boost::asio::strand<boost::asio::io_context::executor_type>;

  explicit engine_impl(engine_options options);
  ~engine_impl();

  // Called from run strands.
  void emit(run_event::kind what, const run_state& st, std::string step = {}, int attempt = 0,
            std::string detail = {}) const;
  void emit(run_event event) const;
  /// A step's end in this worker's log (failures at info, the rest at debug), with the run's trace id.
  static void log_step(run_event::kind what, const run_state& st, std::string_view step, int attempt,
                       std::string_view detail);
  [[nodiscard]] bool stopping() const noexcept { return stopping_.load(std::memory_order_acquire); }
  /// A uniformly random number in [0, 1) for backoff jitter; thread-safe.
  double random_unit();

  result<void> migrate_blocking();
  /// Records what the registered workflows declare, once (blocking; tick_blocking's, before its enqueues).
  result<void> declare_blocking();
  result<void> start();
  boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline);
  boost::asio::awaitable<result<std::size_t>> tick();
  boost::asio::awaitable<result<enqueued>> enqueue(std::string workflow, boost::json::value input,
                                                   enqueue_options options);
  boost::asio::awaitable<result<run_info>> get(run_id id);
  boost::asio::awaitable<result<run_info>> wait(run_id id, std::chrono::milliseconds timeout);
  boost::asio::awaitable<result<run_status>> cancel(run_id id, cancel_options options);
  /// A run in flight here was asked to cancel: it sees a cancelled_error at its next boundary.
  void cancel_requested(const run_id& id);
  boost::asio::awaitable<result<void>> send_event(storage::event_delivery event);
  boost::asio::awaitable<result<event_stream>> stream(stream_options options);
  boost::asio::awaitable<result<output_reader>> read_stream(run_id id, std::string stream, std::int64_t from);
  boost::asio::awaitable<result<log_page>> read_log(std::int64_t after, read_log_options options);
  boost::asio::awaitable<result<std::int64_t>> trim_log(std::chrono::milliseconds older_than);
  boost::asio::awaitable<result<void>> retry(run_id id);
  boost::asio::awaitable<result<void>> rewind(run_id id, int from_step);
  /// A run in flight here whose epoch moved on elsewhere (cancel, rewind): stop its executions older than
  /// `epoch` at their next boundary (a newer one, claimed since, goes on).
  void fence_local(const run_id& id, std::int64_t epoch);
  /// `webhook_rule`, if given, receives the webhook's answering rule (resume.webhook).
  boost::asio::awaitable<result<hook_resumption>> resume_hook(
      std::string token, storage::hook_resume resume,
      std::optional<boost::json::value>* webhook_rule = nullptr);
  /// engine::deliver_webhook (webhooks.cpp).
  boost::asio::awaitable<result<webhook_delivery>> deliver_webhook(std::string token,
                                                                   boost::json::value request);
  /// A webhook's run answered (its token hash): the requests waiting here for it read the answer now.
  void webhook_answered(std::string_view token_hash);
  /// Every request waiting for an answer looks again (engine stop: they end with none).
  void wake_webhook_waiters();
  /// engine::end_webhook_waits (or stop) was called.
  std::atomic<bool> webhook_waits_ended_{false};
  /// The resume of `payload` with `options`' signature verified (run_operations.cpp). Errors:
  /// invalid_signature, signature_expired.
  [[nodiscard]] result<storage::hook_resume> signed_resume(const boost::json::value& payload,
                                                           const resume_options& options) const;
  /// The hook secret: engine_options::hook_secret, or the database's (read once, then cached).
  boost::asio::awaitable<result<std::string>> hook_secret();
  /// The version a run of `workflow` gets: `wanted` if registered here, else the newest registered here.
  [[nodiscard]] std::optional<int> registered_version(const std::string& workflow,
                                                      std::optional<int> wanted) const;
  /// At `until`, a run this worker parked becomes due (wakeups.cpp): `run` (a sleep) is then claimed by id
  /// at once; without one, the claim loop is woken (a little after `until`, for the database's clock).
  void schedule_wakeup(std::chrono::system_clock::time_point until, std::optional<run_id> run = std::nullopt);
  /// One retention pass: old finished runs' log events, then the runs, batch after batch.
  boost::asio::awaitable<result<storage::purged>> purge_finished(std::chrono::milliseconds older_than,
                                                                 std::size_t batch);
  std::atomic<std::uint64_t> retention_runs_removed_{0};
  std::atomic<std::uint64_t> retention_rows_removed_{0};
  /// Has the schedule loop look for due schedules now (one was created or changed here).
  void wake_scheduler();
  /// Has the claim loop look for due runs now (runs were enqueued here).
  void wake_claimer();

  /// Runs `aw` on the engine's threads and blocks the calling thread for its result.
  template <class T>
  T block_on(boost::asio::awaitable<T> aw);

  engine_options options_;
  std::string worker_id_;
  /// The definition registered for (name, version), or nullptr.
  [[nodiscard]] const workflow_definition* find_workflow(const std::string& name, int version) const;

  /// name -> version -> definition; immutable once started.
  std::unordered_map<std::string, std::map<int, workflow_definition>> workflows_;
  /// Typed workflows' input checks (engine::input_error), by name and version; set at registration.
  std::map<std::pair<std::string, int>, std::function<std::optional<std::string>(const boost::json::value&)>>
      input_checks_;
  /// name -> what its runs did here; the map is immutable once started, its counters are not.
  std::unordered_map<std::string, std::unique_ptr<workflow_metrics>> metrics_;
  /// The counters of a registered workflow (nullptr for another name).
  [[nodiscard]] workflow_metrics* metrics_of(const std::string& workflow) const {
    const auto it = metrics_.find(workflow);
    return it == metrics_.end() ? nullptr : it->second.get();
  }
  boost::asio::io_context ioc_;
  storage::store store_;
  /// Live events: the log follower, streams, frames and the backpressure gate (event_hub.cpp).
  std::shared_ptr<event_hub> hub_;

  /// Calls `call` with each step middleware, logging and ignoring what it throws (on the run's strand).
  template <class F>
  void observe(F&& call) const {
    for (const auto& m : options_.middleware) {
      try {
        call(m);
      } catch (const std::exception& e) {
        log::warn("engine", std::string("a step middleware threw (ignored): ") + e.what());
      } catch (...) {
        log::warn("engine", "a step middleware threw (ignored)");
      }
    }
  }

 private:
  boost::asio::awaitable<void> stop_on_ctl(std::chrono::milliseconds deadline);
  boost::asio::awaitable<result<std::size_t>> tick_on_ctl();
  boost::asio::awaitable<void> claim_loop();
  boost::asio::awaitable<void> heartbeat_loop();
  boost::asio::awaitable<void> watchdog_loop();
  /// Logs step_started for steps that run a while (step_watch.cpp), until the engine stops.
  boost::asio::awaitable<void> step_watch_loop();
  boost::asio::awaitable<void> wakeup_loop();
  /// Deletes old finished runs every retention.interval, until the engine stops (retention.cpp).
  boost::asio::awaitable<void> retention_loop();
  /// Fires the due cron schedules of the workflows registered here, until the engine stops (schedules.cpp).
  boost::asio::awaitable<void> schedule_loop();
  /// Fires one due schedule read at `now` (the database's clock); true when this call fired it.
  boost::asio::awaitable<bool> fire_schedule(const storage::schedule_record& s,
                                             std::chrono::system_clock::time_point now);
  void ensure_heartbeat();
  /// What one claim did: runs it took, and due runs it parked (their concurrency key was full).
  struct claim_tally {
    std::size_t claimed = 0;
    std::size_t parked = 0;
  };
  boost::asio::awaitable<claim_tally> claim_batch(std::size_t max);
  /// Starts parked runs whose concurrency key has a free slot, every concurrency_sweep_interval, until the
  /// engine stops (concurrency_keys.cpp).
  boost::asio::awaitable<void> key_sweep_loop();
  /// Runs what a claim took, or hands it straight back when the engine is stopping (on ctl_).
  boost::asio::awaitable<void> launch_claimed(std::vector<storage::claimed_run> runs,
                                              std::chrono::steady_clock::time_point lease_until);
  /// Claims the parked run `id` whose wake-up timer fired (just before `until`), and runs it (wakeups.cpp).
  boost::asio::awaitable<void> claim_parked(run_id id, std::chrono::system_clock::time_point until);
  /// After a run's body failed: its registered compensations (ctx.compensate), recorded in `fin`'s error.
  boost::asio::awaitable<void> compensate(run_state& st, storage::run_finish& fin,
                                          std::optional<run_interrupted>& interrupted);
  /// Slots free for new runs now (on ctl_).
  [[nodiscard]] std::size_t free_slots() const;
  void launch(storage::claimed_run claim, std::chrono::steady_clock::time_point lease_until);
  boost::asio::awaitable<void> execute(std::shared_ptr<run_state> st);
  void notify_changed();
  boost::asio::awaitable<void> wait_changed();
  std::vector<storage::workflow_version> workflow_versions() const;
  /// How long this worker's registry entry lasts without a refresh.
  std::chrono::milliseconds worker_ttl() const;

  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::vector<std::thread> threads_;
  strand_t ctl_;  // owns everything below
  std::unordered_map<run_id, std::shared_ptr<run_state>> inflight_;
  boost::asio::steady_timer changed_;     // cancelled whenever in-flight runs or loops change
  boost::asio::steady_timer claim_wait_;  // the claim loop's idle wait
  bool claim_waiting_ = false;
  bool wake_pending_ = false;
  boost::asio::steady_timer heartbeat_wait_;
  boost::asio::steady_timer step_watch_wait_;
  bool step_watch_active_ = false;
  bool claim_loop_active_ = false;
  bool heartbeat_active_ = false;
  bool watchdog_active_ = false;
  /// Wake times of runs parked here, soonest first, and the timer set to the soonest. A sleep's entry names
  /// its run, which is claimed by id when it fires; the others wake the claim loop.
  struct wakeup {
    std::optional<run_id> run;
    std::chrono::system_clock::time_point until;
  };
  std::multimap<std::chrono::steady_clock::time_point, wakeup> wakeups_;
  /// Cancel requests for runs not in flight here when they came (see cancel_requested), with when.
  std::vector<std::pair<run_id, std::chrono::steady_clock::time_point>> recent_cancels_;
  /// Claims of single parked runs in progress (they hold a slot the claim loop must not hand out).
  std::size_t direct_claims_ = 0;
  boost::asio::steady_timer wakeup_timer_;
  bool wakeup_active_ = false;
  boost::asio::steady_timer schedule_wait_;
  bool schedule_loop_active_ = false;
  boost::asio::steady_timer retention_wait_;
  bool retention_active_ = false;
  boost::asio::steady_timer key_sweep_wait_;
  bool key_sweep_active_ = false;
  std::chrono::steady_clock::time_point last_sweep_nudge_;
  /// Schedules this worker cannot fire (their zone unknown here, their version not registered), by name and
  /// revision: logged once each.
  std::set<std::pair<std::string, std::int64_t>> unfireable_schedules_;
  bool started_ = false;
  bool migrated_ = false;
  /// What the registered workflows declare is recorded (by start, or by the first enqueue).
  std::atomic<bool> declared_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> started_once_{false};
  std::atomic<bool> hooks_started_{false};
  /// Runs in flight whose finish was submitted (their slots are claimed for ahead of the commit).
  std::atomic<std::size_t> finishing_{0};
  std::mutex secret_mutex_;
  std::string database_hook_secret_;  // under secret_mutex_
  std::mutex rng_mutex_;
  std::mt19937_64 rng_;
  /// Requests waiting for their webhook's answer (deliver_webhook), by token hash.
  struct webhook_waiter;
  boost::asio::awaitable<std::optional<webhook_response>> await_webhook_answer(
      std::string token_hash, std::chrono::milliseconds timeout);
  std::mutex webhook_mutex_;
  std::multimap<std::string, std::shared_ptr<webhook_waiter>, std::less<>> webhook_waiters_;  // under it
};

}  // namespace keel::detail
