// The PostgreSQL store: migrations, enqueue, claims and leases, group-committed checkpoints, run queries.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/execution_context.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "keel/common/histogram.hpp"
#include "keel/common/result.hpp"
#include "keel/storage/error.hpp"
#include "keel/storage/json_limits.hpp"
#include "keel/storage/records.hpp"
#include "keel/storage/schedule_records.hpp"
#include "keel/storage/trigger_records.hpp"

namespace keel::storage {

/// Tuning of a store.
struct store_options {
  /// libpq connection string.
  std::string conninfo;
  /// Connections (and threads) for claims, heartbeats and queries.
  std::size_t pool_size = 2;
  /// Connections (and threads) that group-commit writes; each batch is one transaction.
  std::size_t writers = 1;
  /// Most writes one transaction carries.
  std::size_t max_batch = 512;
  /// How long a caller-facing operation (enqueue, get, cancel) waits for an unreachable database before it
  /// fails with errc::connection_lost. Engine writes (checkpoints, finishes) wait as long as it takes.
  std::chrono::milliseconds request_timeout{10'000};
  /// Limits on inputs, outputs and errors, checked before any SQL.
  json_limits limits{};
  /// Pinned on every session, whatever the server's or role's defaults: a statement, a lock wait or an idle
  /// open transaction past these is cut off (the write fails alone, or the connection is replaced).
  std::chrono::milliseconds statement_timeout{30'000};
  std::chrono::milliseconds lock_timeout{10'000};
  std::chrono::milliseconds idle_in_transaction_timeout{60'000};
  /// libpq connect_timeout and tcp_user_timeout unless the connection string sets them: a black-holed
  /// database is detected in seconds, not after the kernel's 15 minutes of TCP retransmissions.
  std::chrono::seconds connect_timeout{5};
  std::chrono::milliseconds tcp_user_timeout{10'000};
};

/// Longest idempotency key, workflow name or owner, in bytes.
inline constexpr std::size_t k_max_key_bytes = 255;

/// Largest weight of a fairness key (new_run::fairness_weight): a key gets at most this many runs claimed
/// for one of a key with weight 1.
inline constexpr int k_max_fairness_weight = 1'000;

/// Counters for benchmarks and metrics.
struct store_stats {
  std::uint64_t batches = 0;  ///< write transactions committed
  std::uint64_t writes = 0;   ///< writes they carried
};

/// Latencies and sizes, for /metrics.
/// What a batch of retention removed (store::purge_runs).
struct purged {
  std::int64_t runs = 0;
  /// The runs and every row they owned (steps, events, hooks, history; output streams go by cascade and are
  /// not counted).
  std::int64_t rows = 0;
};

struct store_metrics {
  histogram_snapshot claim_seconds;   ///< a claim, from its submission to its commit
  histogram_snapshot commit_seconds;  ///< a write transaction, from sending it to its COMMIT's answer
  histogram_snapshot batch_writes;    ///< the writes each write transaction carried
};

/// How many runs of a workflow are in a status that is not final (store::count_unfinished_runs).
struct run_count {
  std::string workflow;
  run_status status = run_status::queued;
  std::int64_t runs = 0;
  /// Of those, the ones due now: a queued run due is waiting for a worker (the queue's depth).
  std::int64_t due = 0;
};

/// A count that stops at a cap, so that what it costs is bounded: `capped` when there were more than `n`.
struct capped_count {
  std::int64_t n = 0;
  bool capped = false;
};

/// What a dashboard shows at the top (store::overview), each count bounded in cost.
struct run_overview {
  /// Unfinished runs, as count_unfinished_runs counts them.
  std::vector<run_count> unfinished;
  /// When the database counted (its clock).
  clock::time_point at;
  /// Failed and cancelled runs (through runs_resting_by_status), up to the cap.
  capped_count failed;
  capped_count cancelled;
  /// Hooks that take a resume now (as in hook_query), up to the cap.
  capped_count open_hooks;
  /// step_completed events committed to the run log in the minute before `at`, by every worker.
  std::int64_t steps_last_minute = 0;
};

namespace detail {
class store_impl;
}

/// Parameters are taken by reference and copied before the call returns: GCC 12 destroys a by-value class
/// argument built in a co_await expression twice, so no awaitable-returning API here takes one.
///
/// Thread-safe. Every awaitable completes on the awaiting coroutine's executor; no database I/O ever runs on
/// it (dedicated connection threads do the work). Writes are fenced by the lease (owner + epoch): a write
/// made under a lost lease fails with errc::fenced and changes nothing. An execution context that awaits
/// the store must outlive it: a connection thread may still be inside its post() when the awaiting
/// coroutine resumes, and only stop_blocking() (or the destructor) joins those threads.
/// What the store's listener reports (see store::listen); each may be empty.
struct store_listeners {
  /// Runs were enqueued (or became due by a wake-up), by any process.
  std::function<void()> runs_enqueued;
  /// A run was asked to cancel, by any process.
  std::function<void(const run_id&)> cancel_requested;
  /// The run log grew, in any process (several appends may be folded into one call).
  std::function<void()> log_appended;
  /// A frame some process published (store::publish_frame), this one included.
  std::function<void(std::string_view)> frame;
  /// A webhook's run answered its request (store::set_webhook_response), in any process: the token hash.
  std::function<void(std::string_view)> webhook_answered;
};

class store {
 public:
  explicit store(store_options options);
  ~store();
  store(const store&) = delete;
  store& operator=(const store&) = delete;

  /// Creates the `keel` schema and applies pending migrations under an advisory lock. Idempotent. Blocking.
  result<void> migrate_blocking();

  /// Inserts a run (group-committed with other writes). An existing idempotency key returns the existing run
  /// (`created == false`), with `conflict` set when its workflow or input differ. Errors: invalid_argument
  /// (key or workflow name empty, too long or not UTF-8; a NUL or bad UTF-8 in the input),
  /// payload_too_large, payload_too_deep, connection_lost (past request_timeout).
  boost::asio::awaitable<result<enqueue_outcome>> enqueue(const new_run& run);

  /// Enqueues `run` debounced by `key`: a new run due `window` from now, or, when a queued run of its
  /// workflow holds the key, that run takes this input, version and priority and is due `window` from now.
  /// Returns the run (`created` false: a collapse). Errors: invalid_argument (as enqueue; `run` with an
  /// idempotency key or run_at; a window <= 0), payload_too_large, payload_too_deep, connection_lost.
  boost::asio::awaitable<result<enqueue_outcome>> enqueue_debounced(const new_run& run,
                                                                    const std::string& key,
                                                                    std::chrono::milliseconds window);

  /// Claims up to `max` due runs (queued, or running with an expired lease) of the requested (workflow,
  /// version) pairs for `owner`, by priority then due time, with a lease of `lease`; group-committed with
  /// other writes. Returns them with their recorded steps, and the runs it dead-lettered instead.
  boost::asio::awaitable<result<claim_outcome>> claim(const claim_request& request);

  /// Claims the parked run `id` for `request.owner` if it is due by `now` (the caller's clock, which set
  /// its wake time), with its steps loaded in the same transaction: what a worker does when the wake-up
  /// timer of a run it parked fires. No run (someone else took it, or it is not due) is not an error.
  boost::asio::awaitable<result<claim_outcome>> claim_parked(const claim_request& request, const run_id& id,
                                                             clock::time_point now);

  /// Extends the leases in `held`; returns those that are no longer this worker's (matched by run and epoch,
  /// so an old execution's lease never stands for a newer one). `cancelling`, if given, receives the held
  /// runs that were asked to cancel, with how long until they are fenced.
  boost::asio::awaitable<result<std::vector<lease_token>>> heartbeat(
      const std::vector<lease_token>& held, std::chrono::milliseconds lease,
      std::vector<cancel_notice>* cancelling = nullptr);

  /// Announces (or refreshes) worker `owner` and the workflow versions it runs, for `ttl`; runs whose
  /// version no live worker has are reported as unclaimable by get().
  boost::asio::awaitable<result<void>> register_worker(const std::string& owner,
                                                       const std::vector<workflow_version>& workflows,
                                                       std::chrono::milliseconds ttl);
  /// Removes worker `owner` from the registry.
  boost::asio::awaitable<result<void>> unregister_worker(const std::string& owner);

  /// Durably records a step; resumes only after the transaction that carries it committed. Errors: fenced;
  /// payload_too_large, payload_too_deep, invalid_argument (output or error over the limits; nothing was
  /// written); data_rejected, query_failed (the database refused the write; nothing was written).
  boost::asio::awaitable<result<void>> checkpoint(const step_checkpoint& cp);

  /// Durably completes or fails a run. Errors: as checkpoint().
  boost::asio::awaitable<result<void>> finish(const run_finish& f);

  /// A durable wait (sleep, event, hook, or the first of several) at a step position of a held run: decided
  /// at once or parked (see wait_outcome). Errors: fenced; invalid_argument (an over-long or invalid event
  /// name; no alternatives, or more than k_max_wait_arms).
  boost::asio::awaitable<result<wait_outcome>> wait(const wait_request& w);

  /// Queues a held run afresh under the same id with `input`, as its next generation, its history cleared
  /// (see ctx.continue_as_new). Returns the new generation. Errors: fenced; invalid_argument,
  /// payload_too_large, payload_too_deep.
  boost::asio::awaitable<result<int>> continue_as_new(const lease_token& lease,
                                                      const boost::json::value& input);

  /// Starts a child run for a held run's step (once per idempotency key) and hands back its outcome if it
  /// has finished ('consumed': {"child", "status", "output", "error"}), else parks the parent `waiting` for
  /// it until the child ends. Errors: fenced; invalid_argument, payload_too_large, payload_too_deep.
  boost::asio::awaitable<result<wait_outcome>> start_child(const child_request& c);

  /// Starts a child run for a held run's step (once per idempotency key) without waiting for it; returns
  /// the child's id (the existing one's, on a repeat). Errors: fenced; invalid_argument, payload_too_large,
  /// payload_too_deep.
  boost::asio::awaitable<result<run_id>> start_child_only(const child_request& c);

  /// Sends an event to a run: kept until a wait for its name consumes it (oldest first), and the run is woken
  /// if it waits for that name now. Errors: not_found; run_finished; payload_too_large, payload_too_deep,
  /// invalid_argument (payload, name or key over the limits).
  boost::asio::awaitable<result<event_sent>> send_event(const event_delivery& e);

  /// The database's shared hook secret (used when the engine is given none). Errors: not_found.
  boost::asio::awaitable<result<std::string>> hook_secret();

  /// Records a hook for a run this worker holds (idempotent: the same token hash again is a no-op). Errors:
  /// fenced; invalid_argument (name), payload_too_large, payload_too_deep (metadata).
  boost::asio::awaitable<result<void>> create_hook(const hook_record& h);

  /// Resumes a hook: kept in the hook until its run's wait reads it, and the run woken if it waits for it
  /// now. The outcome says what happened, including the refusals. Errors: payload_too_large,
  /// payload_too_deep, invalid_argument (payload or caller identity), connection_lost.
  boost::asio::awaitable<result<hook_resume_answer>> resume_hook(const hook_resume& r);

  /// Keeps the answer to a webhook's request, sent by its run at position `seq` (the webhook's), for the
  /// request waiting on it (NOTIFY keel_webhooks with its token hash). Errors: fenced; not_found (no such
  /// webhook); payload_too_large, payload_too_deep.
  boost::asio::awaitable<result<void>> set_webhook_response(const lease_token& lease, int seq,
                                                            const boost::json::value& response);

  /// The answer a webhook's run sent, by the webhook's token hash; nullopt while there is none (or no such
  /// webhook).
  boost::asio::awaitable<result<std::optional<boost::json::value>>> webhook_response(
      const std::string& token_hash);

  /// Queues a failed run to continue from its failed step (its earlier checkpoints stay); recorded in its
  /// history. A run whose failure ran compensations is rewound instead to the earliest step they undid
  /// (their `from_step` in its error). Returns not_failed (and changes nothing) when the run has not
  /// failed. Errors: not_found.
  boost::asio::awaitable<result<retry_outcome>> retry(const run_id& id);

  /// Discards the run's checkpoints from step position `from_step` on and queues it to run again from there
  /// (any status; a worker running it is fenced off); recorded in its history with what was discarded.
  /// Returns the run's new epoch. Errors: not_found, invalid_argument (a negative position).
  boost::asio::awaitable<result<std::int64_t>> rewind(const run_id& id, int from_step);

  /// Hands a held run back to the queue (due now). Errors: fenced.
  boost::asio::awaitable<result<void>> release(const lease_token& lease);

  /// Whether the database answers, and how many of this build's migrations it has, within `within` (a
  /// readiness probe must not wait for the usual request timeout). Errors: connection_lost, timed_out.
  boost::asio::awaitable<result<readiness>> readiness_check(std::chrono::milliseconds within);

  /// A run with its steps. Errors: not_found.
  boost::asio::awaitable<result<run_record>> get(const run_id& id);

  /// Runs newest first (by id: UUIDv7, creation time), one page, each filter through its index. Errors:
  /// invalid_argument (a limit out of range, a malformed cursor or workflow); connection_lost.
  boost::asio::awaitable<result<run_list>> list_runs(const run_query& query);

  /// Runs queued, running, waiting or sleeping, by workflow and status, counted through the index of
  /// unfinished runs (their number, not the table's, is what it costs). Errors: connection_lost.
  boost::asio::awaitable<result<std::vector<run_count>>> count_unfinished_runs();

  /// The inbox of pending decisions: hooks that take a resume now, soonest expiry first (those that never
  /// expire last, ties by run and position), one page, through the index of open hooks (020). Errors:
  /// invalid_argument (a limit out of range, a malformed cursor or workflow); connection_lost.
  boost::asio::awaitable<result<hook_list>> list_hooks(const hook_query& query);

  /// A dashboard's counters in one call: the unfinished runs (as count_unfinished_runs), failed, cancelled
  /// and open hooks each counted up to `cap` (1 to 1,000,000), and the steps completed in the last minute
  /// (read from the run log's last minute only). A database it cannot reach within `within` fails it.
  /// Errors: invalid_argument (`cap`); connection_lost.
  boost::asio::awaitable<result<run_overview>> overview(std::int64_t cap, std::chrono::milliseconds within);

  /// Retention: deletes up to `batch` (1 to 10,000) runs that finished, and began, more than `older_than`
  /// ago, with their steps, events, hooks, history and output streams, in one short transaction that skips
  /// rows others hold. Run log events go by trim_log. Errors: invalid_argument, connection_lost.
  boost::asio::awaitable<result<purged>> purge_runs(std::chrono::milliseconds older_than, std::size_t batch);

  /// Concurrency keys and throttles: makes due the first parked runs of up to `max_keys` (1 to 100,000) keys
  /// of `kind` after `after`, as many of each as it has slots free. A freed concurrency slot wakes its key's
  /// next run by itself; this catches a run parked while the slot it needed was being freed (and frees a
  /// slot whose holder stopped running without freeing it). Throttled runs start by this alone. Errors:
  /// invalid_argument, connection_lost.
  boost::asio::awaitable<result<parked_sweep>> wake_parked(parked_kind kind, std::size_t max_keys,
                                                           const std::optional<parked_key>& after);

  /// Records what each workflow version declares of events (the triggers that start it, the events that
  /// cancel its runs); an identical declaration writes nothing. Errors: invalid_argument (a name over 255
  /// bytes or not UTF-8), connection_lost.
  boost::asio::awaitable<result<void>> declare_workflows(const std::vector<workflow_declaration>& workflows);
  /// Whom event `event` with `payload` concerns, as the newest declared version of each workflow says: the
  /// workflows it starts, and up to `max_cancel` unfinished runs it cancels (not yet asked to, and not in
  /// `spared`). Errors: invalid_argument (the name, a malformed id), payload_too_large, payload_too_deep,
  /// connection_lost.
  boost::asio::awaitable<result<event_audience>> event_subscribers(std::string event,
                                                                   const boost::json::value& payload,
                                                                   std::size_t max_cancel,
                                                                   const std::vector<run_id>& spared = {});

  /// Creates schedule `s.name` with next occurrence `s.next_fire_at`, or replaces its definition (workflow,
  /// version, cron, time_zone, input, priority, catch_up) when it differs: a new expression or zone takes
  /// `s.next_fire_at`, otherwise the stored next occurrence stays; `paused` is left as it is. Errors:
  /// invalid_argument (name, workflow, catch_up), payload_too_large, payload_too_deep, connection_lost.
  boost::asio::awaitable<result<schedule_put>> put_schedule(const schedule_record& s);
  /// Errors: not_found; invalid_argument (a malformed name); connection_lost.
  boost::asio::awaitable<result<schedule_record>> get_schedule(std::string name);
  /// By name, one page. Errors: invalid_argument (limit out of 1 to 1,000, a malformed cursor or workflow).
  boost::asio::awaitable<result<schedule_list>> list_schedules(const schedule_query& query);
  /// Pauses the schedule (a paused one stays as it is) and returns it. Errors: as get_schedule.
  boost::asio::awaitable<result<schedule_record>> pause_schedule(std::string name);
  /// Resumes a paused schedule at its revision `revision` with next occurrence `next`; returns 1, or 0 when
  /// it was not paused at that revision (changed meanwhile, or gone).
  boost::asio::awaitable<result<std::size_t>> resume_schedule(std::string name, std::int64_t revision,
                                                              std::optional<clock::time_point> next);
  /// Returns 1, or 0 when there was none.
  boost::asio::awaitable<result<std::size_t>> delete_schedule(std::string name);
  /// Up to `limit` active schedules of `workflows` whose next occurrence is due by the database's clock (but
  /// those in `skipped`, by name and revision), and the soonest occurrence after now among them.
  boost::asio::awaitable<result<schedules_due>> due_schedules(
      const std::vector<std::string>& workflows, std::size_t limit,
      const std::vector<std::pair<std::string, std::int64_t>>& skipped = {});
  /// Fires a due schedule (see schedule_firing): starts the occurrences' runs (one per idempotency key) and
  /// moves it on, in one transaction, if no one else did first. Returns 1 when this call fired it, else 0.
  boost::asio::awaitable<result<std::size_t>> fire_schedule(const schedule_firing& f);

  /// The run log after position `after` (0: from its start), oldest first, at most `limit` events (1 to
  /// 10,000) that `filter` takes. Events of transactions still in progress, and of those that began after
  /// one still in progress, come in a later read: what a reader gets never gains an earlier neighbour
  /// afterwards (a page shorter than `limit` reached the end readable now). Errors: invalid_argument;
  /// connection_lost.
  boost::asio::awaitable<result<log_page>> read_log(std::int64_t after, std::size_t limit,
                                                    const log_filter& filter = {});

  /// One batch of log retention: removes up to `rows` log rows whose runs all finished more than
  /// `older_than` ago (the rows as old), in one short transaction that skips rows others hold; readers
  /// then get gap_until for what went. Returns the events removed (0: nothing left to remove now).
  boost::asio::awaitable<result<std::int64_t>> trim_log(std::chrono::milliseconds older_than,
                                                        std::size_t rows);

  /// Cancels an unfinished run, and with it every unfinished run it started (child runs, recursively), in
  /// one transaction. A run that never started, or with `grace` 0, is cancelled at once (bumping its epoch
  /// fences the current worker). A started run is asked to cancel: it sees the request at its next step or
  /// wait until `grace` has passed, then a claim fences it (see sql::cancel_run). Returns the status after
  /// the call: cancelled, the status of a run asked to cancel, or the terminal status it already had.
  /// Errors: not_found.
  boost::asio::awaitable<result<run_status>> cancel(
      const run_id& id, std::chrono::milliseconds grace = std::chrono::milliseconds(0));

  /// Appends event `kind` with `data` to the run log for a run this worker holds (step_started,
  /// step_retrying), if its lease still holds when the writer commits it: with the writes queued after it,
  /// and below them in the log. Not awaited; never fails the caller (a refused or fenced append is dropped).
  /// `settled` (optional) is called, from any thread, once the append committed or was dropped.
  void append_log(const lease_token& lease, std::string_view kind, const boost::json::value& data,
                  std::function<void()> settled = {});

  /// Appends `f`'s chunks to its durable output stream (015_output_streams.sql), fenced by the lease;
  /// chunks an earlier execution or attempt wrote at or past this writer position go first. Chunks
  /// after a close are ignored. Errors: fenced, invalid_argument (a stream name over 255 bytes or not
  /// UTF-8), payload_too_large / payload_too_deep (a chunk), shut_down.
  boost::asio::awaitable<result<void>> write_output(const output_flush& f);

  /// Up to `limit` (1 to 10,000) chunks of `run`'s output stream `stream` from index `from`. Errors:
  /// invalid_argument; connection_lost.
  boost::asio::awaitable<result<output_page>> read_output(const run_id& run, const std::string& stream,
                                                          std::int64_t from, std::size_t limit);

  /// Starts the listener: a dedicated connection that LISTENs for what any process on this database
  /// announces, and calls `listeners` (from its thread; they must not block). Call once; it runs until
  /// stop_listening() or stop_blocking(). While it runs, this store announces its own log appends to
  /// other processes (coalesced) and can publish frames.
  void listen(store_listeners listeners);

  /// Calls `callback` (from a writer thread; it must not block) after each transaction of this store's
  /// writer commits: it may have appended to the run log. Call before the first write.
  void on_local_commit(std::function<void()> callback);

  /// `ctx` outlives this store's threads (as an engine's io_context does): completions for callers on it
  /// are posted directly, without the wait that lets any other caller destroy its context right after its
  /// last operation completed (see keel/common/post_from_any_thread.hpp). Call before the first operation.
  void outlived_by(const boost::asio::execution_context& ctx);

  /// Sends `payload` to every listening process (LISTEN/NOTIFY), best-effort and never blocking: false
  /// when it was not sent (no listener yet, over 7,900 bytes, or too many waiting to go out).
  bool publish_frame(std::string payload);

  /// The run log after `after` as a follower reads it (read_log's page without the events' workflow and
  /// parent, at most `limit` events, 0 to 10,000), with where the readable log ends now and whether
  /// committed events wait past it. Errors: invalid_argument; connection_lost.
  boost::asio::awaitable<result<log_follow_page>> follow_log(std::int64_t after, std::size_t limit);

  /// The workflow and parent of each of `ids` that is stored. Errors: invalid_argument.
  boost::asio::awaitable<result<std::vector<run_meta>>> runs_meta(const std::vector<run_id>& ids);

  /// The run and every run it started, recursively, that are stored. Errors: invalid_argument.
  boost::asio::awaitable<result<std::vector<run_id>>> run_tree(const run_id& root);

  /// Asks the listener thread (if any) to stop: it ends within 100 ms and is joined by stop_blocking().
  /// Non-blocking (safe on an io_context thread). Idempotent.
  void stop_listening() noexcept;

  /// The options the store runs with.
  [[nodiscard]] const store_options& options() const noexcept;

  /// Write counters since construction.
  [[nodiscard]] store_stats stats() const noexcept;
  [[nodiscard]] store_metrics metrics() const;

  /// Fails pending operations with errc::shut_down and joins the connection threads. Idempotent. Blocking.
  void stop_blocking();

 private:
  std::unique_ptr<detail::store_impl> impl_;
};

}  // namespace keel::storage
