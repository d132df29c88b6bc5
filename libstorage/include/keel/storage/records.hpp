// Plain data exchanged between the engine and the store: new runs, claims, checkpoints, run snapshots.
#pragma once

#include <boost/json/value.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "keel/common/run_id.hpp"

namespace keel::storage {

using clock = std::chrono::system_clock;

/// Run statuses as stored. sleeping/waiting are reserved for durable timers, events and hooks.
enum class run_status { queued, running, sleeping, waiting, completed, failed, cancelled };

[[nodiscard]] std::string_view to_string(run_status s) noexcept;
[[nodiscard]] std::optional<run_status> run_status_from(std::string_view s) noexcept;
[[nodiscard]] inline bool is_terminal(run_status s) noexcept {
  return s == run_status::completed || s == run_status::failed || s == run_status::cancelled;
}

/// What a listing can ask for besides a stored status (run_query::filter): runs that stopped, or wait, for
/// a reason an operator must act on.
enum class run_filter {
  /// Failed by a claim as dead_lettered (error code "dead_lettered", with its `recoveries`): it lost its
  /// worker more than max_recoveries times.
  dead_lettered,
  /// Queued, and no live worker has registered its (workflow, version): nothing will claim it until one
  /// does (run_summary::unclaimable says so).
  unclaimable,
};

/// "dead_lettered", "unclaimable".
[[nodiscard]] std::string_view to_string(run_filter f) noexcept;
[[nodiscard]] std::optional<run_filter> run_filter_from(std::string_view s) noexcept;
/// The stored status every run a filter matches has: failed for dead_lettered, queued for unclaimable.
[[nodiscard]] run_status status_of(run_filter f) noexcept;

/// A run to insert.
struct new_run {
  run_id id;
  std::string workflow;
  int version = 1;
  boost::json::value input;
  std::optional<std::string> idempotency_key;
  int priority = 0;
  std::optional<clock::time_point> run_at;
  /// Its concurrency key and limit instead of those its workflow version declares (026_concurrency_keys.sql):
  /// a key needs a limit, given here or declared; a limit alone applies to the declared key.
  std::optional<std::string> concurrency_key;
  std::optional<int> concurrency_limit;
  /// Its throttle key, limit and window instead of those its workflow version declares (027_throttle.sql):
  /// a key needs a limit and a window, given here or declared.
  std::optional<std::string> throttle_key;
  std::optional<int> throttle_limit;
  std::optional<std::chrono::milliseconds> throttle_window;
  /// Its fairness key instead of the one its workflow version declares (028_fair_claims.sql), and the key's
  /// weight (1 to 1,000; default 1): while several keys have queued runs, claims take runs of each in turn,
  /// `weight` of a key's for one of a key with weight 1.
  std::optional<std::string> fairness_key;
  std::optional<int> fairness_weight;
  /// The W3C trace context it was started with (a valid `traceparent` value; 029_trace_context.sql).
  std::optional<std::string> traceparent;
};

/// The keys runs wait for (store::wake_parked).
enum class parked_kind { concurrency, throttle };

/// A concurrency or throttle key of a workflow.
struct parked_key {
  std::string workflow;
  std::string key;
};

/// What a sweep of parked runs did.
struct parked_sweep {
  std::size_t woken = 0;
  /// Where the next sweep goes on (it read as many keys as it could); none: it reached the last key.
  std::optional<parked_key> next;
  /// Throttles: when the next slot of a swept key comes free (the database's clock).
  std::optional<clock::time_point> next_free_at;
};

/// What an enqueue did.
struct enqueue_outcome {
  run_id id;              ///< the new run, or the existing one with the same idempotency key
  bool created = false;   ///< false when an existing run was returned
  bool conflict = false;  ///< the key exists with a different workflow or input (id is the existing run)
};

/// A step as recorded.
struct step_record {
  int seq = 0;
  std::string name;
  bool failed = false;
  boost::json::value output;  ///< null when failed
  boost::json::value error;   ///< null when completed
  int attempts = 0;
  clock::time_point started_at;
  clock::time_point finished_at;
  /// Inside a parallel branch: the branch's path (e.g. "3:1") and the step's position in it; on replay the
  /// step is found by these, not by `seq`. None on the main line.
  std::optional<std::string> branch;
  int branch_seq = 0;
  /// For a checkpoint of a ctx.step whose start was not logged while it ran (a fast one): the checkpoint
  /// logs it, just before the step's end. Records of waits, children and parallel regions have no start.
  bool log_start = false;
};

/// A run this worker now holds, with what earlier attempts recorded.
struct claimed_run {
  run_id id;
  std::string workflow;
  int version = 1;
  boost::json::value input;
  std::int64_t epoch = 0;         ///< fencing token for every write this claim makes
  int claims = 0;                 ///< 1 on first execution
  int recoveries = 0;             ///< how many times a worker lost it (lease expired) before this claim
  int recorded_steps = 0;         ///< steps checkpointed by earlier executions (loaded into `steps`)
  int generation = 0;             ///< how many times the run continued as new (ctx.continue_as_new)
  bool cancel_requested = false;  ///< asked to cancel (cooperatively): the run sees it at its next boundary
  std::optional<run_id> parent;   ///< the run that started it (ctx.child)
  std::vector<step_record> steps;
  std::optional<std::string> traceparent;  ///< the W3C trace context it was started with (or its parent)
};

/// What a claim did: the runs this worker now holds, and the runs it failed as dead_lettered instead (they
/// had lost their worker more than max_recoveries times).
struct claim_outcome {
  std::vector<claimed_run> runs;
  std::vector<run_id> dead_lettered;
  /// Due runs the claim parked instead: their concurrency key had no free slot. They start, in order, as
  /// slots free up.
  std::size_t parked = 0;
  /// Of those, the ones parked for a throttle (they start when its window moves).
  std::size_t parked_for_throttle = 0;
};

/// What a worker can run: a workflow name and one of its versions.
struct workflow_version {
  std::string name;
  int version = 1;
};

/// A claim request.
struct claim_request {
  std::string owner;
  std::vector<workflow_version> workflows;
  std::size_t max = 1;
  std::chrono::milliseconds lease{30'000};
  /// A run whose lease expired more than this many times is failed as dead_lettered instead of claimed.
  int max_recoveries = 5;
};

/// A lease as held by a worker: the fencing condition of every write.
struct lease_token {
  run_id id;
  std::string owner;
  std::int64_t epoch = 0;
};

/// A held run that was asked to cancel, as a heartbeat reports it: how long until it is fenced.
struct cancel_notice {
  run_id id;
  std::int64_t epoch = 0;
  std::chrono::milliseconds left{0};
};

/// One step's checkpoint.
struct step_checkpoint {
  lease_token lease;
  step_record step;
};

/// A run's final state written by its worker.
struct run_finish {
  lease_token lease;
  run_status status = run_status::completed;  ///< completed or failed
  boost::json::value output;
  boost::json::value error;
};

/// One event of the durable run log (see 013_run_log.sql): appended in the same transaction as the change
/// it describes.
struct log_event {
  /// Its place in the log: increasing in the order readers see events, never reused. A reader that has
  /// seen `pos` asks for what follows it and misses nothing.
  std::int64_t pos = 0;
  run_id run;
  /// run_enqueued, run_started, run_resumed, run_sleeping, run_waiting, run_released, run_completed,
  /// run_failed, run_cancelled, run_cancel_requested, run_dead_lettered, run_retried, run_rewound,
  /// run_continued, step_started, step_retrying, step_completed, step_failed, stream_appended,
  /// stream_closed, stream_rewound.
  std::string kind;
  clock::time_point at;
  boost::json::value data;
  /// The run's workflow, and the run that started it (ctx.child); empty once the run is no longer stored.
  std::string workflow;
  std::optional<run_id> parent;
};

/// Which events of the run log a read returns (store::read_log).
struct log_filter {
  /// Only these runs' events (empty: every run's, unless `tree` is set; at most 100,000 runs).
  std::vector<run_id> runs;
  /// Also (or only) the events of this run and every run it started (ctx.child), recursively, as the
  /// runs are when the page is read.
  std::optional<run_id> tree;
  /// Only events of runs of this workflow (of runs still stored).
  std::optional<std::string> workflow;
};

/// A page of the run log, oldest first.
struct log_page {
  std::vector<log_event> events;
  /// Retention removed events after the position asked for, up to this one: the reader missed them.
  std::optional<std::int64_t> gap_until;
};

/// Chunks of a durable output stream written by a held run (store::write_output), all from one writer
/// position: the step position `seq` and its `attempt` (0: the workflow's own code, between steps); seq
/// -1 for a close without chunks.
struct output_flush {
  lease_token lease;
  std::string stream;
  int generation = 0;  ///< of the run (ctx.continue_as_new)
  int seq = 0;
  int attempt = 0;
  std::vector<boost::json::value> chunks;
  /// The stream ends after these chunks; the close was written at step position `close_seq`.
  bool close = false;
  int close_seq = 0;
};

/// A page of a durable output stream (store::read_output).
struct output_page {
  /// (index, chunk), ascending from the index asked for.
  std::vector<std::pair<std::int64_t, boost::json::value>> chunks;
  bool closed = false;     ///< the stream was closed
  bool run_ended = false;  ///< its run has finished (or is not stored)
  /// How often redone work removed chunks of the stream, and the first index the last removal took.
  int trims = 0;
  std::optional<std::int64_t> trimmed_from;
};

/// A run's workflow and parent (store::runs_meta).
struct run_meta {
  run_id id;
  std::string workflow;
  std::optional<run_id> parent;
};

/// What a log follower reads (store::follow_log): a page, and where the readable log ends now.
struct log_follow_page {
  log_page page;
  /// The first position not yet readable: events of transactions still in progress, or younger than one
  /// still in progress, start here. A follower that starts now begins after top - 1.
  std::int64_t top = 0;
  /// Committed events wait at or past `top` (held back by an older transaction still in progress): they
  /// become readable as soon as it ends, so read again soon.
  bool held_back = false;
};

/// Whether the database can serve the engine (store::readiness): how many of this build's migrations it has.
struct readiness {
  int applied = 0;   ///< of this build's migrations
  int expected = 0;  ///< this build's migrations
  [[nodiscard]] bool migrated() const noexcept { return applied == expected; }
};

/// A hook of a run that takes a resume now (run_record::hooks).
struct open_hook {
  std::string name;
  int seq = 0;  ///< the create_hook step's position
  boost::json::value metadata;
  clock::time_point created_at;
  std::optional<clock::time_point> expires_at;
  /// Where to resume it ("/v1/hooks/<token>", "/v1/webhooks/<token>"): filled in by the engine, which can
  /// derive the token.
  std::string path;
  bool webhook = false;  ///< resumed by a whole HTTP request (ctx.create_webhook)
};

/// A snapshot of a run for get().
struct run_record {
  run_id id;
  std::string workflow;
  int version = 1;
  run_status status = run_status::queued;
  boost::json::value input;
  boost::json::value output;
  boost::json::value error;
  std::optional<std::string> idempotency_key;
  int priority = 0;
  std::optional<std::string> owner;
  std::int64_t epoch = 0;
  int claims = 0;
  int recoveries = 0;  ///< how many times a worker lost the run (its lease expired)
  /// Set while the run is queued and no live worker has registered its (workflow, version): why it waits.
  std::optional<std::string> unclaimable;
  clock::time_point created_at;
  std::optional<clock::time_point> started_at;
  std::optional<clock::time_point> finished_at;
  /// While sleeping or waiting: what for, e.g. {"kind": "event", "event": "approved", "until": µs, "step":
  /// 3}.
  boost::json::value waiting_for;
  /// What was done to the run (retries, rewinds): [{"at": µs, "what": "rewound", "detail": {...}}, ...].
  boost::json::value history;
  std::vector<step_record> steps;
  /// Its fresh starts so far (ctx.continue_as_new).
  int generation = 0;
  /// Its hooks that take a resume now (open, not expired), by position.
  std::vector<open_hook> hooks;
  /// The run that started it (ctx.child).
  std::optional<run_id> parent;
  /// Its concurrency key and that key's limit (026_concurrency_keys.sql), if it has one.
  std::optional<std::string> concurrency_key;
  int concurrency_limit = 0;
  /// Its throttle key, limit and window (027_throttle.sql), if it has one.
  std::optional<std::string> throttle_key;
  int throttle_limit = 0;
  std::chrono::milliseconds throttle_window{0};
  /// Its fairness key and weight (028_fair_claims.sql), if it has one.
  std::optional<std::string> fairness_key;
  int fairness_weight = 0;
  /// The W3C trace context it was started with, or its parent's (029_trace_context.sql).
  std::optional<std::string> traceparent;
  /// Due, but parked until a slot of its concurrency key frees up or its throttle's window moves.
  bool waits_for_key = false;
};

/// A run as a listing shows it (store::list_runs): no input, output or steps.
struct run_summary {
  run_id id;
  std::string workflow;
  int version = 1;
  run_status status = run_status::queued;
  boost::json::value error;
  std::optional<std::string> idempotency_key;
  int priority = 0;
  clock::time_point created_at;
  std::optional<clock::time_point> started_at;
  std::optional<clock::time_point> finished_at;
  /// The run that started it (ctx.child).
  std::optional<run_id> parent;
  /// While sleeping or waiting: what for, as run_record::waiting_for; null otherwise.
  boost::json::value waiting_for;
  /// Set while the run is queued and no live worker has registered its (workflow, version): why it waits
  /// (as run_record::unclaimable). A dead-lettered run says why in `error` (code, recoveries).
  std::optional<std::string> unclaimable;
};

/// Which runs a listing shows, newest first (store::list_runs).
struct run_query {
  std::optional<std::string> workflow;
  std::optional<run_status> status;
  /// Only the runs this filter matches (each through an index of its own). With `status`, that status
  /// must be the filter's (status_of), else invalid_argument.
  std::optional<run_filter> filter;
  /// Only the runs this run started (ctx.child), through the index of children.
  std::optional<run_id> parent;
  /// The page after this run (the previous page's `next`); none: from the newest.
  std::optional<run_id> after;
  /// Runs per page, 1 to 1,000.
  std::size_t limit = 50;
};

/// A page of runs, newest first; `next` is where the next page starts (none: this was the last).
struct run_list {
  std::vector<run_summary> runs;
  std::optional<run_id> next;
};

/// Which hooks the inbox shows (store::list_hooks): those that take a resume now (run_record::hooks: open,
/// not expired, their run not finished), soonest expiry first, those that never expire last.
struct hook_query {
  /// Only hooks of this workflow's runs.
  std::optional<std::string> workflow;
  /// The page after this one (the previous page's `next`: opaque, see is_valid_hook_cursor); none: from the
  /// soonest expiry.
  std::optional<std::string> after;
  /// Hooks per page, 1 to 1,000.
  std::size_t limit = 50;
};

/// A hook in the inbox, with the run it belongs to.
struct inbox_hook {
  run_id run;
  std::string workflow;
  clock::time_point run_created_at;
  /// The run's fresh starts (its hooks' tokens derive from it).
  int generation = 0;
  /// The hook; its `path` is filled in by the engine, which can derive the token.
  open_hook hook;
};

/// A page of the inbox; `next` is where the next page starts (none: this was the last).
struct hook_list {
  std::vector<inbox_hook> hooks;
  std::optional<std::string> next;
};

/// Whether `cursor` has the shape of a hook_list::next (a hook's expiry or "never", its run, its position).
[[nodiscard]] bool is_valid_hook_cursor(std::string_view cursor) noexcept;

/// What a durable wait waits for. `any`: the first of several alternatives (wait_request::arms); `child`: a
/// child run (child_request).
enum class wait_kind { sleep, event, hook, any, child };

/// One alternative of a wait for any: a timer (sleep, due at `until`), an event, a hook's resume or a child
/// run's end.
struct wait_arm {
  wait_kind kind = wait_kind::sleep;
  std::string event;  ///< event: its name; hook: the hook's name; child: the child run's id
  int hook_seq = 0;   ///< hook: the step position that created it
  /// Timer: when it fires. Event: none. Hook: its expiry (the arm then times out), or none.
  std::optional<clock::time_point> until;
  /// wait_mode::park: which blocked wait the arm belongs to (a hook's resume is refused once a timer of
  /// its own group is due, not another's).
  int group = 0;
};

/// How a wait for any is decided (wait_request::mode).
enum class wait_mode {
  /// The first arm ready wins (recorded at the step); none ready: the run parks.
  decide,
  /// As decide, but none ready leaves the run as it is (outcome `blocked`): a parallel branch's wait,
  /// which blocks in memory while other branches go on.
  probe,
  /// The run's blocked branches, together: if one of their arms is ready nothing changes (outcome
  /// `ready`: the branches decide again); else the run parks until one is. Consumes and records nothing.
  park,
};

/// A wait at a step position of a run this worker holds: decided at once (a recorded or pending outcome)
/// or parked (the run releases its lease until it is due or woken).
struct wait_request {
  lease_token lease;
  int seq = 0;
  std::string name;  ///< the step name recorded for the wait
  wait_kind kind = wait_kind::sleep;
  std::string event;  ///< for event waits: the event's name; for hook waits: the hook's name
  int hook_seq = 0;   ///< for hook waits: the step position that created the hook
  /// Sleep: the wake time. Event: the timeout. Hook: its expiry. None: wait for as long as it takes.
  std::optional<clock::time_point> until;
  clock::time_point started_at;
  /// kind any: the alternatives, at most k_max_wait_arms. The one that completed first wins (ties: the
  /// earlier arm); the record is {"index": arm, "payload": ...} or {"index": arm, "timed_out": true}.
  std::vector<wait_arm> arms;
  /// The execution has seen a cancel request already: a pending one does not stop this wait (outcome
  /// `cancel` otherwise).
  bool cancel_seen = false;
  /// kind any only.
  wait_mode mode = wait_mode::decide;
  /// A wait in a parallel branch: its branch and position there, recorded with the step. An empty `name`
  /// (probe of child arms only) records nothing.
  std::optional<std::string> branch;
  int branch_seq = 0;
};

/// A child run started by a held run at step position `seq` (its idempotency key makes the start happen
/// once), which the parent waits for.
struct child_request {
  lease_token lease;  ///< the parent's
  int seq = 0;
  new_run child;  ///< with a fresh id, and the key that makes it once per (parent, position, attempt)
  bool cancel_seen = false;  ///< as wait_request::cancel_seen
};

/// The most alternatives one wait for any takes.
inline constexpr std::size_t k_max_wait_arms = 64;
/// The most arms a run's blocked parallel branches park on together (wait_mode::park).
inline constexpr std::size_t k_max_park_arms = 1024;

/// How a wait was decided.
struct wait_outcome {
  enum class what {
    recorded,   ///< an earlier attempt recorded it: `output` is the record
    consumed,   ///< an event was consumed (or a hook's payload taken): `output` is {"payload": ...}
    timed_out,  ///< the event wait's timeout passed: `output` is {"timed_out": true}
    parked,     ///< the run now sleeps or waits; this worker no longer holds it
    cancel,     ///< nothing done: the run was asked to cancel, which its execution has not seen yet
    blocked,    ///< wait_mode::probe: nothing ready, nothing changed
    ready,      ///< wait_mode::park: an arm is ready, nothing changed
  } outcome = what::parked;
  boost::json::value output;
};

/// An event for a run.
struct event_delivery {
  run_id run;
  std::string name;
  boost::json::value payload;
  /// A repeat with the same key (for the same run) is a no-op.
  std::optional<std::string> idempotency_key;
};

/// A hook to create (by the run at step position `seq`, under its lease). The token itself is never stored.
struct hook_record {
  lease_token lease;
  int seq = 0;
  std::string name;
  std::string token_hash;  ///< SHA-256 of the token, lowercase hex
  boost::json::value metadata;
  std::optional<clock::time_point> expires_at;
  /// Recorded in the same statement (a hook created in a parallel branch: its position, `seq`, is taken
  /// when it is new, so the hook and its record must commit together). `step.seq` is ignored (`seq` is).
  std::optional<step_record> step;
  /// The signing key whose secrets a resume must be signed with (none: any resume with the token).
  std::optional<std::string> signature_key;
  /// A webhook's answering rule (030_webhooks.sql); none: a plain hook.
  std::optional<boost::json::value> webhook;
};

/// A resume of a hook by its token's hash.
struct hook_resume {
  std::string token_hash;
  boost::json::value payload;
  std::optional<std::string> resumed_by;  ///< the caller's identity, when known (audit)
  /// The signing keys the request's signature was verified with (empty: unsigned, or none matched).
  std::vector<std::string> signature_keys;
  /// The SHA-256 (lowercase hex) of the signed message ("<t>.<body>") whose signature was verified, and
  /// its time: recorded so that it is accepted only once.
  std::optional<std::string> signature;
  std::int64_t signed_at = 0;  ///< Unix seconds
  /// How long a recorded signature is kept (past which its timestamp is refused anyway).
  std::chrono::seconds replay_window{900};
  /// A webhook delivery: only a webhook takes it (and a webhook takes nothing else).
  bool webhook = false;
};

/// What a resume did.
enum class hook_resume_outcome {
  resumed,          ///< the hook was open: it holds the payload now, and its run was woken if it waited
  repeated,         ///< already resumed with the same payload: an idempotent success
  not_found,        ///< no hook has that token
  expired,          ///< past its expiry, never resumed
  already_resumed,  ///< resumed before with another payload
  closed,           ///< its run finished, or the hook was closed
  not_signed,       ///< the hook has a signature key and the request was not signed with it
  replayed,         ///< the request's signature was accepted before
};

/// What a resume did, and to which run (store::resume_hook).
struct hook_resume_answer {
  hook_resume_outcome outcome = hook_resume_outcome::not_found;
  run_id run;  ///< empty when no hook has the token
  /// A webhook's answering rule (hook_record::webhook), when the hook is one.
  std::optional<boost::json::value> webhook;
};

/// What a retry did.
enum class retry_outcome { retried, not_failed };

/// What sending an event did.
struct event_sent {
  bool duplicate = false;  ///< the key was seen before: nothing was added
};

}  // namespace keel::storage
