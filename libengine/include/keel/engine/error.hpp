// Engine error codes (a boost::system category) and the exceptions that carry them through workflow code.
#pragma once

#include <boost/json/value.hpp>
#include <boost/system/error_code.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace keel {

/// Why an engine operation failed. Storage failures (e.g. keel::storage::errc::connection_lost) pass through.
enum class errc {
  /// No workflow is registered under that name.
  unknown_workflow = 1,
  /// The idempotency key belongs to a run with a different workflow or input.
  idempotency_conflict,
  /// No run with that id.
  run_not_found,
  /// The run id is not a UUID.
  invalid_run_id,
  /// The input could not be converted to the workflow's input type.
  invalid_input,
  /// wait() gave up before the run finished.
  wait_timeout,
  /// A step's name differs from the one recorded at the same position: the workflow code is not
  /// deterministic.
  nondeterminism,
  /// A step failed after its last attempt, or with a non-retriable error.
  step_failed,
  /// A step did not finish within its timeout (on its last attempt).
  step_timeout,
  /// The worker lost the run's lease (reclaimed elsewhere or cancelled): its writes were fenced off.
  lease_lost,
  /// The run was cancelled.
  cancelled,
  /// The engine is stopping and accepts no more work.
  shutting_down,
  /// Two ctx.step calls of one run were in progress at once (e.g. `co_await (ctx.step(a) && ctx.step(b))`):
  /// steps of one context run one after the other.
  concurrent_step,
  /// The run lost its worker (lease expired) more than max_recoveries times and was failed for good.
  dead_lettered,
  /// A step's output or the run's output could not be stored (over the limits, or refused by the database).
  output_rejected,
  /// The run has finished (completed, failed or cancelled): it takes no more events.
  run_finished,
  /// No hook has that token.
  hook_not_found,
  /// The hook's time to live passed before anyone resumed it.
  hook_expired,
  /// The hook was resumed before, with another payload (a repeat with the same payload succeeds).
  hook_already_resumed,
  /// The hook's run has finished, or the hook was closed.
  hook_closed,
  /// retry() of a run that has not failed.
  run_not_failed,
  /// A child run (ctx.child) failed or was cancelled, after its last attempt.
  child_failed,
  /// The hook takes signed requests only (hook_options::signature_key), and this one carried no signature
  /// made with its key.
  signature_required,
  /// The request's signature is malformed, or no secret configured for it matches.
  invalid_signature,
  /// The signature's timestamp is further from now than the tolerance (engine_options::signature_tolerance).
  signature_expired,
  /// The signature was accepted before (for this hook or another): a replay.
  signature_replayed,
  /// A cron expression is malformed (keel::cron_error's message says where).
  invalid_cron_expression,
  /// A time zone name is not in the system's time zone database (IANA names such as "America/New_York").
  unknown_time_zone,
  /// No schedule has that name.
  schedule_not_found,
  /// The run failed, with an error that is not one of the engine's own codes (run_handle::output).
  run_failed,
  /// The run's output does not convert to the type asked for (run_handle::result).
  invalid_output,
  // New codes go here, before this line: errc_from_code_name scans up to the last (k_last_errc, error.cpp).
};

const boost::system::error_category& engine_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), engine_category()};
}

/// The short stable code stored in a run's error ("step_failed", ...).
[[nodiscard]] std::string code_name(errc e);
/// The code whose code_name is `name`, if any.
[[nodiscard]] std::optional<errc> errc_from_code_name(std::string_view name);

/// Throw from step code to fail the step at once, without further attempts.
class non_retriable_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Thrown into the workflow by ctx.step when a step has failed for good (also on replay of a failed step).
/// Uncaught, it fails the run with `error()` as the run's error.
class step_failed_error : public std::runtime_error {
 public:
  /// `error` is {code, message, step, attempts}.
  explicit step_failed_error(boost::json::value error);
  [[nodiscard]] const boost::json::value& error() const noexcept { return error_; }

 private:
  boost::json::value error_;
};

/// Thrown into the workflow at its next step or wait once the run was asked to cancel (engine::cancel with a
/// grace), once. The workflow may catch it and clean up (its steps still run until the grace ends);
/// registered compensations run either way, and the run ends `cancelled`.
class cancelled_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Thrown when a run's input does not convert to the workflow's input type; fails the run (invalid_input).
class invalid_input_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// Thrown by ctx.step when the step's name differs from the recorded one at the same position.
class nondeterminism_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

/// Thrown by ctx.step when another step of the same run is still in progress; fails the run.
class concurrent_step_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

}  // namespace keel

template <>
struct boost::system::is_error_code_enum<keel::errc> : std::true_type {};
