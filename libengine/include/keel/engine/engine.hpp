// keel::engine: runs registered workflows durably on PostgreSQL with a thread pool, one strand per run.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_from.hpp>
#include <chrono>
#include <concepts>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keel/common/result.hpp"
#include "keel/common/run_id.hpp"
#include "keel/engine/error.hpp"
#include "keel/engine/events.hpp"
#include "keel/engine/output_stream.hpp"
#include "keel/engine/run_handle.hpp"
#include "keel/engine/webhook.hpp"
#include "keel/engine/workflow.hpp"
#include "keel/storage/records.hpp"
#include "keel/storage/schedule_records.hpp"
#include "keel/storage/store.hpp"

namespace keel {

using storage::run_status;
/// A run with its status, input, output, error and steps (attempts and timings).
using run_info = storage::run_record;
/// Listing runs (engine::list_runs): which, and a page of them.
using run_query = storage::run_query;
using run_filter = storage::run_filter;
using run_summary = storage::run_summary;
using run_list = storage::run_list;
/// The inbox of pending decisions (engine::list_hooks): which hooks, one of them with its run, a page.
using hook_query = storage::hook_query;
using inbox_hook = storage::inbox_hook;
using hook_list = storage::hook_list;
/// A dashboard's counters (engine::overview).
using run_overview = storage::run_overview;
/// Cron schedules (engine::put_schedule and the calls after it): one as stored, with its next firings; a
/// page of them and which.
using schedule_info = storage::schedule_record;
using schedule_query = storage::schedule_query;
using schedule_list = storage::schedule_list;

/// A cron schedule's definition (engine::put_schedule): at each firing of `cron` in `time_zone`, one run of
/// `workflow` with `input`.
struct schedule_spec {
  /// Its name: 1 to 200 ASCII letters, digits and `-_.:`.
  std::string name;
  std::string workflow;
  /// A 5-field cron expression or an alias, as keel::cron_schedule reads it (`0 9 * * mon-fri`, `@hourly`).
  std::string cron;
  /// The IANA time zone the expression's fields are read in.
  std::string time_zone = "UTC";
  boost::json::value input;
  /// The workflow version its runs run; none: the newest one the firing worker has registered.
  std::optional<int> version;
  int priority = 0;
  /// Occurrences missed while no worker could fire them (every worker down, or the database unreachable for
  /// longer than schedule_tolerance) are skipped; with catch_up = N the newest N of them still run when a
  /// worker can fire again (0 to 1,000).
  int catch_up = 0;
};

/// What engine::put_schedule did.
using schedule_put = storage::schedule_put;

/// Per-publish options (engine::publish_event).
struct publish_options {
  /// A repeat with the same key starts nothing more: each workflow the event starts gets one run per key
  /// (its idempotency key derives from the event's name, this key and the workflow). Without one, every
  /// publish starts runs.
  std::optional<std::string> idempotency_key;
};

/// A run an event started.
struct triggered_run {
  std::string workflow;
  run_id id;
  /// false: a repeat with the same idempotency key found it.
  bool created = false;
};

/// What engine::publish_event did: the runs it started, and the runs it cancelled (or asked to cancel).
struct published_event {
  std::vector<triggered_run> started;
  std::vector<run_id> cancelled;
};

/// Something that happened to a run, as reported to engine_options::on_event.
struct run_event {
  enum class kind {
    enqueued,        ///< inserted (or found by its idempotency key)
    claimed,         ///< this worker took the run (execution > 1: a reclaim or resume)
    step_completed,  ///< a step's checkpoint is durable (not reported for replayed steps)
    step_retrying,   ///< an attempt failed; another follows after a backoff
    step_failed,     ///< the step failed for good; its failure is recorded
    completed,
    failed,
    released,       ///< handed back to the queue (engine stopping)
    abandoned,      ///< the lease was lost (reclaimed elsewhere or cancelled); nothing more is written
    dead_lettered,  ///< failed by this worker's claim: it had lost its worker more than max_recoveries times
    sleeping,       ///< parked by ctx.sleep until its wake time (detail: the step); no worker holds it
    waiting,        ///< parked by a wait (detail: what for: the event, hook or step name); no worker holds it
    continued,      ///< started afresh by ctx.continue_as_new (detail: "generation N"); queued, due now
    cancelled,      ///< ended cancelled by its worker after it saw a cancel request (detail: the error JSON)
  };
  kind what;
  run_id id;
  std::string workflow;
  std::string step;    ///< for step events
  int attempt = 0;     ///< for step events: the attempt (1-based); for claimed: the execution
  std::string detail;  ///< error message, or output JSON for completed
};

[[nodiscard]] std::string_view to_string(run_event::kind k) noexcept;

/// What engine::resume_hook did: the run the hook belongs to, and whether this call repeated an earlier
/// resume with the same payload (which changed nothing).
struct hook_resumption {
  run_id run;
  bool repeated = false;
};

/// An event of the durable run log, and a page of them (see engine::read_log).
using log_event = storage::log_event;
using log_page = storage::log_page;

/// Options of engine::read_log.
struct read_log_options {
  /// Only this run's events.
  std::optional<run_id> run;
  /// With `run`: those of the runs it started too (ctx.child), recursively, as stream_filter::run.
  bool descendants = false;
  /// Only events of runs of this workflow.
  std::optional<std::string> workflow;
  /// At most this many events (1 to 10,000).
  std::size_t limit = 1000;
};

/// A step as step middleware sees it.
struct step_info {
  const run_id& run;
  const std::string& workflow;
  const std::string& step;
  int seq = 0;
  int attempt = 1;
  /// The ctx.parallel branch it runs in, if any.
  const std::string* branch = nullptr;
};

/// Observes steps on the run's strand, synchronously (keep it short: it runs in the step's time). Any member
/// may be empty. A middleware that throws is logged and ignored: it can never fail, veto or delay a step
/// beyond its own run time. Replayed steps are not reported.
struct step_middleware {
  /// An attempt is about to run.
  std::function<void(const step_info&)> before_step;
  /// The step's checkpoint is durable: its output, and how long it took (all attempts and backoffs).
  std::function<void(const step_info&, const boost::json::value& output, std::chrono::microseconds duration)>
      after_step;
  /// An attempt failed; `will_retry` says whether another follows.
  std::function<void(const step_info&, std::string_view error, bool will_retry)> on_step_error;
  /// The run parked on a durable wait (a sleep, an event, a hook, a child): `what` as the run log's
  /// run_sleeping / run_waiting event says it.
  std::function<void(const run_id&, const std::string& workflow, std::string_view what)> on_wait;
};

/// An asynchronous hook on live events (engine_options::hooks): called with every event a stream of this
/// engine would see (every worker's logged events, this worker's frames), awaited in order per run (one
/// call at a time per run; different runs' calls run concurrently, each run's on a strand of its own). A
/// hook that throws is logged and ignored. Hooks still running when the engine is destroyed are abandoned.
using event_hook = std::function<boost::asio::awaitable<void>(const stream_event&)>;

/// Retention of finished runs (engine_options::retention).
struct retention_options {
  /// Runs that finished longer ago than this are deleted with everything they own: steps, events, hooks,
  /// history, output streams and their run log events. Their idempotency keys are then free again. 0: runs
  /// are kept forever.
  std::chrono::milliseconds keep_finished{0};
  /// Runs per transaction (1 to 10,000): each batch is short, and skips rows others hold.
  std::size_t batch = 500;
  /// How often a pass runs.
  std::chrono::milliseconds interval{60'000};
};

struct engine_options {
  /// Database and connection settings.
  storage::store_options store;
  /// Runs in flight at once on this worker.
  std::size_t concurrency = 64;
  /// io_context threads; 0 = one per core.
  std::size_t threads = 0;
  /// How long a claim lasts without a heartbeat; another worker reclaims the run after it lapses.
  std::chrono::milliseconds lease{30'000};
  /// Heartbeat period; 0 = lease / 3.
  std::chrono::milliseconds heartbeat{0};
  /// How often an idle worker looks for due runs without being told: runs that became due by time (run_at,
  /// expired leases) or whose notification was missed. Enqueues anywhere wake workers at once
  /// (LISTEN/NOTIFY).
  std::chrono::milliseconds poll_interval{100};
  /// This worker's name in leases (`owner`); empty = "<host>:<pid>:<random>".
  std::string worker_id;
  /// Log a warning when the io_context threads were all unavailable for longer than this: step code or a
  /// callback is blocking them (heartbeats and checkpoints wait meanwhile). 0 disables the watchdog.
  std::chrono::milliseconds lag_warning{250};
  /// Apply migrations when the engine starts (start_blocking() / first tick()).
  bool migrate = true;
  /// A run whose lease expired (its worker crashed, was killed or stalled) more than this many times is
  /// failed with code dead_lettered instead of being run again: a run that crashes every worker stops and
  /// shows.
  int max_recoveries = 5;
  /// The secret hook tokens are derived from (HMAC-SHA256); every engine of one database must use the same.
  /// Empty: a secret generated in the database (keel.secrets) at migration, which needs no setup but lets
  /// anyone who can read the database compute live tokens. Set it (e.g. from a secret store) in production.
  std::string hook_secret;
  /// Signing keys for machine webhooks, by name: a hook created with hook_options::signature_key = name is
  /// resumed only by requests whose Keel-Signature was made with one of that key's secrets (several while
  /// rotating: the new one added, senders moved over, the old one removed). See webhook_signature.hpp.
  std::map<std::string, std::vector<std::string>> webhook_secrets;
  /// How far a signature's timestamp may be from now (either way).
  std::chrono::seconds signature_tolerance{300};
  /// A PEM file of certificate authorities ctx.fetch trusts besides the system's (e.g. a private CA).
  std::string fetch_ca_file;
  /// Called for every run_event, from the run's strand (any pool thread). Must not block. This worker's
  /// own view, as it happens (claims, releases and abandoned leases included); engine::stream is the
  /// durable, cross-worker one.
  std::function<void(const run_event&)> on_event;
  /// Step middleware, called in order.
  std::vector<step_middleware> middleware;
  /// Asynchronous hooks on live events, called in order for each event (see event_hook); fed by a stream
  /// that opens when the engine starts.
  std::vector<event_hook> hooks;
  /// Cron schedules: how late a worker may fire an occurrence and still count it on time (later, it was
  /// missed: skipped, or replayed up to the schedule's catch_up).
  std::chrono::milliseconds schedule_tolerance{60'000};
  /// How often a worker looks for due schedules when it knows of none due sooner (schedules created or
  /// changed by other processes are seen within this).
  std::chrono::milliseconds schedule_poll_interval{1'000};
  /// Concurrency keys: a freed slot starts its key's next run at once; a run that queued for a key while a
  /// slot was being freed (a race the release cannot see) starts within this.
  std::chrono::milliseconds concurrency_sweep_interval{1'000};
  /// Deleting old finished runs (off unless retention.keep_finished is set). Every worker with it set runs
  /// passes; they share the work (each batch skips rows another holds).
  retention_options retention;
  /// How often streams read the run log when nothing announced new events (a missed notification, an
  /// append by a transaction outside the engine). Appends on any worker wake them at once.
  std::chrono::milliseconds stream_poll_interval{200};
};

/// Per-event options.
struct event_options {
  /// A repeat with the same key, for the same run, is a no-op.
  std::optional<std::string> idempotency_key;
};

/// Per-resume options.
struct resume_options {
  /// Who resumes, for the hook's audit (e.g. the authenticated user). At most 255 bytes of UTF-8.
  std::optional<std::string> resumed_by;
  /// The request's Keel-Signature header (`t=<unix>,v1=<hex>`), checked over `signed_body` against
  /// engine_options::webhook_secrets. Required by a hook with a signature key; given to another, it must
  /// still verify.
  std::optional<std::string> signature;
  /// The bytes the signature covers: the request body exactly as received (the payload is its parse).
  std::string signed_body;
};

/// Per-cancel options.
struct cancel_options {
  /// How long a run that has started gets to see the cancel — a keel::cancelled_error at its next step or
  /// wait, once, which it may handle (compensate, clean up) — before it is fenced off. 0: fenced at once;
  /// nothing more of it runs or is written. A run that never started is cancelled at once either way.
  std::chrono::milliseconds grace{30'000};
};

/// Per-enqueue options.
struct enqueue_options {
  /// Same key and same input: the existing run is returned. Same key, different input: idempotency_conflict.
  std::optional<std::string> idempotency_key;
  /// Higher runs first.
  int priority = 0;
  /// Not before this time.
  std::optional<std::chrono::system_clock::time_point> run_at;
  /// The workflow version to run; empty = the newest version registered on this engine. A run of a version
  /// that no worker has registered stays queued.
  std::optional<int> version;
  /// Debounce (see debounce_rule): the key, instead of the one the workflow's rule reads from the input.
  /// With a key and a window (this one's or the rule's), enqueues with the same key collapse into one
  /// queued run, whose id each of them returns (created: only the first). Not with idempotency_key or
  /// run_at (storage::errc::invalid_argument).
  std::optional<std::string> debounce_key;
  /// The debounce window, instead of the rule's.
  std::optional<std::chrono::milliseconds> debounce_window;
  /// Concurrency (see concurrency_rule): the key, instead of the one the workflow's rule reads from the
  /// input. Needs a limit, this one's or the rule's (storage::errc::invalid_argument otherwise).
  std::optional<std::string> concurrency_key;
  /// The limit (1 to 10,000) for this run's key, instead of the rule's; without a rule and without
  /// concurrency_key, one key for all the workflow's runs that give it.
  std::optional<int> concurrency_limit;
  /// Throttle (see throttle_rule): the key, instead of the rule's; needs a limit and a window, these or the
  /// rule's (storage::errc::invalid_argument otherwise).
  std::optional<std::string> throttle_key;
  /// The throttle's limit (1 to 10,000) and window (up to a year) for this run's key, instead of the rule's.
  std::optional<int> throttle_limit;
  std::optional<std::chrono::milliseconds> throttle_window;
  /// Fairness (see fairness_rule): the key, instead of the one the workflow's rule reads from the input;
  /// with neither, the run takes no part in fair claims.
  std::optional<std::string> fairness_key;
  /// The key's weight, 1 to 1,000 (default 1): a key with weight 3 gets three runs claimed for one of a
  /// key with weight 1, while both have runs queued.
  std::optional<int> fairness_weight;
  /// The W3C trace context of the caller (a `traceparent` header value, e.g.
  /// "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"): kept with the run and its children,
  /// available to its steps as ctx.trace(). A malformed one: storage::errc::invalid_argument.
  std::optional<std::string> traceparent;
};

/// What engine::submit did: the run, and whether it is new (false: an idempotent repeat got the run that
/// already holds the key).
struct enqueued {
  run_id id;
  bool created = false;
};

/// What one workflow's runs did on this worker (engine::metrics).
struct workflow_metrics_snapshot {
  std::string workflow;
  /// Each step attempt's time, in seconds (replayed steps are not run, so not counted).
  histogram_snapshot step_seconds;
  /// Runs that finished here, by outcome.
  std::uint64_t completed = 0;
  std::uint64_t failed = 0;
  std::uint64_t cancelled = 0;
};

/// A workflow version registered on an engine, as callers are shown it (engine::workflows).
struct registered_workflow {
  std::string name;
  int version = 1;
  boost::json::value input_example;  ///< null: none registered
  std::string description;
};

/// What this engine measured since it was made, for /metrics.
struct engine_metrics {
  std::vector<workflow_metrics_snapshot> workflows;  ///< one per registered workflow name, by name
  storage::store_metrics store;
  /// Retention on this engine: finished runs deleted, and every row that went with them (run log events
  /// included).
  std::uint64_t retention_runs_removed = 0;
  std::uint64_t retention_rows_removed = 0;
};

/// What engine::purge_finished_runs removed.
using purged_runs = storage::purged;

namespace detail {
class engine_impl;
}

/// Arguments are taken by reference or view and copied before a call returns (GCC 12 destroys by-value class
/// arguments built inside a co_await expression twice), so `co_await e.enqueue("wf", json::value{...})` is
/// safe.
///
/// Thread-safe: every member may be called from any thread. The awaitable members complete on the caller's
/// executor; the `_blocking` ones must not be called from this engine's own threads.
class engine {
 public:
  explicit engine(engine_options options);
  /// Stops (as stop_blocking) if still running.
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  /// Registers a workflow version; do it before start_blocking(). Several versions of one workflow may be
  /// registered: this worker claims runs of each, and runs each with the body of its own version. A second
  /// registration of the same name and version replaces the first. Throws std::invalid_argument for a
  /// trigger or cancel_on event name that is empty or over 255 bytes, a cancel_on or debounce pointer that
  /// is not a JSON pointer ("" or "/a/0/b", with ~0 and ~1 escapes), a debounce window <= 0.
  void register_workflow(workflow_definition def);

  /// Registers a typed workflow body `awaitable<Output>(context&, Input)`, with what callers are shown of
  /// it (an input example, a description). The reference it returns starts runs of exactly this version
  /// with a checked input type (start(ref, input)).
  template <class Input, class Output>
  workflow_ref<Input, Output> register_workflow(
      std::string name, int version, std::function<boost::asio::awaitable<Output>(context&, Input)> body,
      boost::json::value input_example = nullptr, std::string description = {}) {
    workflow_ref<Input, Output> ref{name, version};
    auto def = make_workflow<Input, Output>(std::move(name), version, std::move(body));
    def.input_example = std::move(input_example);
    def.description = std::move(description);
    register_workflow(std::move(def));
    if constexpr (!std::is_same_v<Input, boost::json::value>) {
      set_input_check(ref.name, version, [](const boost::json::value& input) -> std::optional<std::string> {
        try {
          auto why = detail::conversion_error<Input>(input);
          if (why) return "the input does not convert: " + *why;
          return std::nullopt;
        } catch (const std::exception& e) {
          return "the input does not convert: " + std::string(e.what());
        }
      });
    }
    return ref;
  }

  /// Why `input` would fail a run of `workflow` (version `version`, else the newest registered here) at its
  /// start: its typed body's input does not convert ("the input does not convert: at /amount: ..."). nullopt
  /// when it converts, the body takes JSON, or the workflow is not registered here (then not checked).
  /// keeld refuses such a start with 400 invalid_input and this message.
  [[nodiscard]] std::optional<std::string> input_error(std::string_view workflow, std::optional<int> version,
                                                       const boost::json::value& input) const;

  /// Applies migrations (if enabled; this blocks the calling thread on the database), then claims and runs
  /// work continuously until stop(). Errors: the migration's.
  result<void> start_blocking();

  /// Stops claiming, lets each in-flight run finish its current step (retry backoffs are cut short), hands
  /// the runs back to the queue and releases their leases, then stops the store's listener. Completes when
  /// nothing is in flight, or at `deadline`: runs still in flight then are abandoned (they write nothing
  /// more; their leases lapse and another worker resumes them).
  boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline = std::chrono::seconds(30));
  void stop_blocking(std::chrono::milliseconds deadline = std::chrono::seconds(30));

  /// Claims one batch (up to `concurrency`) and runs it until each run completes, fails or is released.
  /// Returns how many runs it claimed. For tests and CLI tools; do not mix with start().
  boost::asio::awaitable<result<std::size_t>> tick();
  result<std::size_t> tick_blocking();

  /// Enqueues a run of `workflow` with `input`. Errors: unknown_workflow (or a version not registered here),
  /// idempotency_conflict, and from storage: invalid_argument (key or name over 255 bytes or not UTF-8, NUL
  /// or bad UTF-8 in the input), payload_too_large, payload_too_deep (checked before anything is copied),
  /// connection_lost.
  boost::asio::awaitable<result<run_id>> enqueue(std::string_view workflow, const boost::json::value& input,
                                                 const enqueue_options& options = {});
  result<run_id> enqueue_blocking(std::string_view workflow, const boost::json::value& input,
                                  const enqueue_options& options = {});
  /// enqueue, returning a handle to follow the run by (its status, result, events and output streams).
  /// Errors: as enqueue.
  boost::asio::awaitable<result<run_handle>> start(std::string_view workflow, const boost::json::value& input,
                                                   const enqueue_options& options = {});
  /// start() of `ref`'s version, with an input of its type (or one that converts to it: anything else does
  /// not compile). `options.version` is overwritten with the ref's.
  template <class Input, class Output, class Arg>
  requires std::convertible_to<const Arg&, Input> boost::asio::awaitable<result<typed_run_handle<Output>>>
  start(const workflow_ref<Input, Output>& ref, const Arg& input, const enqueue_options& options = {}) {
    // Not a coroutine itself: what it needs is copied before it returns, as enqueue's arguments are.
    const Input typed(input);
    auto pinned = options;
    pinned.version = ref.version;
    return detail::typed_handle<Output>(start(ref.name, boost::json::value_from(typed), pinned));
  }
  /// A handle to an existing run (nothing is read until it is used).
  [[nodiscard]] run_handle handle(run_id id) { return run_handle(*this, std::move(id)); }

  /// enqueue, also saying whether the run is new (an HTTP API answers a repeat differently).
  boost::asio::awaitable<result<enqueued>> submit(std::string_view workflow, const boost::json::value& input,
                                                  const enqueue_options& options = {});

  /// The workflows registered on this engine, each version once, by name then version. Call after
  /// registering (registration is not synchronised with this).
  [[nodiscard]] std::vector<registered_workflow> workflows() const;

  /// Whether this engine's database can serve it now: it answers within `within`, and how many of this
  /// build's migrations it has. Errors: storage (connection_lost, timed_out).
  boost::asio::awaitable<result<storage::readiness>> readiness(std::chrono::milliseconds within);

  /// The run's current record. Errors: invalid_run_id, run_not_found, storage.
  boost::asio::awaitable<result<run_info>> get(std::string_view id);
  result<run_info> get_blocking(std::string_view id);

  /// Runs newest first, a page at a time: pass the page's `next` as the next query's `after`. Served by
  /// indexes, as fast with millions of runs as with a few. Errors: storage::errc::invalid_argument (a
  /// limit out of 1 to 1,000, a malformed cursor or workflow name); connection_lost.
  boost::asio::awaitable<result<run_list>> list_runs(const run_query& query);
  result<run_list> list_runs_blocking(const run_query& query);

  /// The hooks that take a resume now, across runs (a run's `hooks` are the same set), soonest expiry
  /// first and those that never expire last: pass the page's `next` as the next query's `after`. Each with
  /// its resume link (derived as get() derives it). Served by the index of open hooks. Errors:
  /// storage::errc::invalid_argument (a limit out of 1 to 1,000, a malformed cursor or workflow name);
  /// connection_lost.
  boost::asio::awaitable<result<hook_list>> list_hooks(const hook_query& query);
  result<hook_list> list_hooks_blocking(const hook_query& query);

  /// The counters a dashboard shows (storage::store::overview), each bounded in cost: unfinished runs by
  /// workflow and status, failed, cancelled and open hooks up to `cap`, steps completed in the last minute.
  /// A database it cannot reach within `within` fails it. Errors: storage (invalid_argument,
  /// connection_lost).
  boost::asio::awaitable<result<run_overview>> overview(std::int64_t cap, std::chrono::milliseconds within);

  /// Waits until the run is completed, failed or cancelled, and returns it. Errors: wait_timeout, as get().
  boost::asio::awaitable<result<run_info>> wait(std::string_view id, std::chrono::milliseconds timeout);
  result<run_info> wait_blocking(std::string_view id, std::chrono::milliseconds timeout);

  /// Cancels a run and, recursively, the unfinished runs it started (ctx.child). One that never started is
  /// cancelled at once. One that has started is asked to: it sees a keel::cancelled_error at its next step
  /// or wait (a parked one is woken for it), its registered compensations run, and it ends `cancelled`; past
  /// `options.grace` it is fenced off instead (with grace 0, at once: a worker running it is fenced at its
  /// next write). Returns the status after the call: cancelled, the status of a run now asked to cancel, or
  /// the terminal status it already had. Errors: as get().
  boost::asio::awaitable<result<run_status>> cancel(std::string_view id, const cancel_options& options = {});
  result<run_status> cancel_blocking(std::string_view id, const cancel_options& options = {});

  /// Sends the event `name` with `payload` to a run. It is kept until the run's ctx.wait_for_event(name)
  /// consumes it (oldest first, each once): an event sent before the run reaches its wait is not lost. A
  /// run waiting for it now is woken (on any worker). Errors: invalid_run_id, run_not_found, run_finished;
  /// from storage: invalid_argument (name or key over 255 bytes or not UTF-8), payload_too_large,
  /// payload_too_deep, connection_lost.
  boost::asio::awaitable<result<void>> send_event(std::string_view id, std::string_view name,
                                                  const boost::json::value& payload,
                                                  const event_options& options = {});
  result<void> send_event_blocking(std::string_view id, std::string_view name,
                                   const boost::json::value& payload, const event_options& options = {});

  /// Publishes the event `name` with `payload`: starts one run (input: the payload) of each workflow whose
  /// newest version lists `name` in its triggers, and cancels, as cancel() with its default grace, the
  /// unfinished runs of each workflow whose newest version has a cancel_on rule that matches. What workflows
  /// declare is known once a worker that registers them has started (start_blocking); the workflows need not
  /// be registered on this engine. Errors: idempotency_conflict (the key was used for this event with
  /// another payload); from storage: invalid_argument (name or key over 255 bytes or not UTF-8),
  /// payload_too_large, payload_too_deep, connection_lost.
  boost::asio::awaitable<result<published_event>> publish_event(std::string_view name,
                                                                const boost::json::value& payload,
                                                                const publish_options& options = {});
  result<published_event> publish_event_blocking(std::string_view name, const boost::json::value& payload,
                                                 const publish_options& options = {});

  /// Resumes the hook whose token this is (see context::create_hook) with `payload`, once: the run's
  /// hook.wait() returns it, at once if the run waits now (on any worker), or when it gets there. A repeat
  /// with the same payload succeeds again (the same answer, `repeated`). Returns the run it resumes.
  /// Errors: hook_not_found, hook_expired, hook_already_resumed (another payload came first), hook_closed
  /// (its run finished); from storage: payload_too_large, payload_too_deep, invalid_argument,
  /// connection_lost.
  boost::asio::awaitable<result<hook_resumption>> resume_hook(std::string_view token,
                                                              const boost::json::value& payload,
                                                              const resume_options& options = {});
  result<hook_resumption> resume_hook_blocking(std::string_view token, const boost::json::value& payload,
                                               const resume_options& options = {});

  /// Delivers `request` to the webhook with this token (keeld's `/v1/webhooks/<token>[/...]`, any method):
  /// it becomes the webhook's payload (webhook::wait), and the answer for its sender is the webhook's
  /// respond_with, or what its run sends (webhook::respond) within the webhook's response_timeout, or none
  /// (keeld then answers 202: the run has the request). The same request again (a sender's retry) changes
  /// nothing and gets the same answer. Errors: hook_not_found (no webhook has the token; a plain hook's does
  /// not count), hook_expired, hook_already_resumed (another request came first), hook_closed (its run
  /// finished); from storage: payload_too_large, invalid_argument, connection_lost.
  boost::asio::awaitable<result<webhook_delivery>> deliver_webhook(std::string_view token,
                                                                   const webhook_request& request);
  result<webhook_delivery> deliver_webhook_blocking(std::string_view token, const webhook_request& request);
  /// Deliveries waiting for their run's answer end now, and later ones do not wait (none: keeld's 202; the
  /// runs have the requests): for a server shutting down, which would otherwise wait out their timeouts.
  /// Thread-safe. stop() does it too.
  void end_webhook_waits() noexcept;

  /// A live stream of events (see stream_options): every lifecycle event of the durable run log committed,
  /// on any worker, after this returns, each with its log position, and the progress frames runs publish
  /// (ctx.emit). Independent of every other stream; destroying it unsubscribes it; stop() ends it. To
  /// resume after a position `p` without a gap or a duplicate: open the stream, read_log(p) with the same
  /// filter until a page comes back shorter than its limit, then take the stream's events past the last
  /// position read (libhttp's SSE does so).
  /// Errors: invalid_run_id (filter.run); from storage: connection_lost.
  boost::asio::awaitable<result<event_stream>> stream(const stream_options& options = {});
  result<event_stream> stream_blocking(const stream_options& options = {});

  /// Reads run `id`'s durable output stream `stream` (ctx.stream) from chunk `from`: what exists, then
  /// live as chunks are written, until the stream is closed or the run ends. A reader reconnecting at n
  /// gets chunk n next, never a gap. The reader must not outlive the engine. Errors: invalid_run_id,
  /// storage::errc::invalid_argument (a stream name over 255 bytes or not UTF-8, a negative index).
  boost::asio::awaitable<result<output_reader>> read_stream(std::string_view id, std::string_view stream,
                                                            std::int64_t from = 0);
  result<output_reader> read_stream_blocking(std::string_view id, std::string_view stream,
                                             std::int64_t from = 0);

  /// The durable run log after position `after` (0: from the start), oldest first: every lifecycle event
  /// of every run (or those `options` names), each appended in the same transaction as the change it
  /// describes.
  /// Positions only grow, in the order readers see events: read again after the last position seen and
  /// nothing is missed or repeated, whichever worker wrote it. `gap_until` says retention removed events
  /// after `after`. Errors: invalid_run_id; storage::errc::invalid_argument (a limit out of range).
  boost::asio::awaitable<result<log_page>> read_log(std::int64_t after, const read_log_options& options = {});
  result<log_page> read_log_blocking(std::int64_t after, const read_log_options& options = {});

  /// Log retention: removes the run log's events of runs that finished more than `older_than` ago, in
  /// batches (short transactions; nothing waits on them). A reader asking from before what went gets
  /// `gap_until`; a trimmed run's own log says so too. Returns how many events went.
  boost::asio::awaitable<result<std::int64_t>> trim_log(std::chrono::milliseconds older_than);
  result<std::int64_t> trim_log_blocking(std::chrono::milliseconds older_than);

  /// Retention, once: deletes the runs that finished more than `older_than` ago (> 0) as
  /// retention_options describes, batch after batch until none is left, their run log events first.
  /// Returns what went (`rows` includes the log events). Errors: storage::errc::invalid_argument,
  /// connection_lost.
  boost::asio::awaitable<result<purged_runs>> purge_finished_runs(std::chrono::milliseconds older_than);
  result<purged_runs> purge_finished_runs_blocking(std::chrono::milliseconds older_than);

  /// Continues a failed run from its failed step: the failed step runs again, the checkpoints before it are
  /// replayed (recorded in the run's history). A run whose failure was compensated (ctx.compensate) starts
  /// again at the earliest step a compensation undid, as rewind() to it would (recorded as a rewind): its
  /// records describe effects that no longer hold. Errors: run_not_failed, invalid_run_id, run_not_found.
  boost::asio::awaitable<result<void>> retry(std::string_view id);
  result<void> retry_blocking(std::string_view id);

  /// Discards the run's checkpoints from step position `from_step` on and runs it again from there, whatever
  /// its status (a worker running it is fenced off at its next write). Events those steps consumed are
  /// delivered again, hooks they created are created again (same tokens). Recorded in the run's history
  /// with what was discarded. Errors: invalid_run_id, run_not_found, storage::errc::invalid_argument.
  boost::asio::awaitable<result<void>> rewind(std::string_view id, int from_step);
  result<void> rewind_blocking(std::string_view id, int from_step);

  /// Creates the schedule `spec.name`, or replaces its definition. Idempotent: a put of the definition it
  /// has already changes nothing (`changed` false), so every worker may put its schedules as it starts. A
  /// replaced expression or time zone fires next at its first occurrence from now; paused stays as it was.
  /// Exactly one run starts per occurrence, whatever the number of workers: any worker that registers the
  /// workflow fires it, in one statement that moves the schedule to its next occurrence only if no one did,
  /// and each run's idempotency key (`schedule:<name>@<instant>`) holds against repeats. Errors:
  /// invalid_cron_expression, unknown_time_zone, unknown_workflow (or a version not registered here);
  /// storage::errc::invalid_argument (the name; catch_up out of 0 to 1,000), payload_too_large,
  /// payload_too_deep, connection_lost.
  boost::asio::awaitable<result<schedule_put>> put_schedule(const schedule_spec& spec);
  result<schedule_put> put_schedule_blocking(const schedule_spec& spec);

  /// The schedule `name`, with its next `upcoming` firings (5; none while paused). Errors:
  /// schedule_not_found; storage::errc::invalid_argument (a malformed name), connection_lost.
  boost::asio::awaitable<result<schedule_info>> get_schedule(std::string_view name);
  result<schedule_info> get_schedule_blocking(std::string_view name);

  /// Schedules by name, a page at a time (each with its upcoming firings). Errors:
  /// storage::errc::invalid_argument (a limit out of 1 to 1,000), connection_lost.
  boost::asio::awaitable<result<schedule_list>> list_schedules(const schedule_query& query);
  result<schedule_list> list_schedules_blocking(const schedule_query& query);

  /// Pauses the schedule: it fires nothing until resume_schedule. Returns it. Errors: as get_schedule.
  boost::asio::awaitable<result<schedule_info>> pause_schedule(std::string_view name);
  result<schedule_info> pause_schedule_blocking(std::string_view name);

  /// Resumes a paused schedule at its first occurrence from now (what it was paused for is not replayed).
  /// Returns it. Errors: as get_schedule; invalid_cron_expression, unknown_time_zone (its time zone is
  /// unknown to this machine).
  boost::asio::awaitable<result<schedule_info>> resume_schedule(std::string_view name);
  result<schedule_info> resume_schedule_blocking(std::string_view name);

  /// Deletes the schedule; the runs it started stay. Errors: as get_schedule.
  boost::asio::awaitable<result<void>> delete_schedule(std::string_view name);
  result<void> delete_schedule_blocking(std::string_view name);

  /// This worker's lease owner name.
  [[nodiscard]] const std::string& worker_id() const noexcept;
  /// The engine's io_context executor.
  [[nodiscard]] boost::asio::any_io_executor get_executor() const noexcept;
  /// Step times and finished runs by workflow, claim and commit latencies, commit batch sizes. Thread-safe.
  [[nodiscard]] engine_metrics metrics() const;
  /// The store (for stats and tools).
  [[nodiscard]] storage::store& store() noexcept;

 private:
  void set_input_check(std::string workflow, int version,
                       std::function<std::optional<std::string>(const boost::json::value&)> check);
  std::unique_ptr<detail::engine_impl> impl_;
};

}  // namespace keel
