#include "keel/engine/error.hpp"

namespace keel {
namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "keel"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::unknown_workflow:
        return "unknown workflow";
      case errc::idempotency_conflict:
        return "idempotency key already used with a different input";
      case errc::run_not_found:
        return "run not found";
      case errc::invalid_run_id:
        return "invalid run id";
      case errc::invalid_input:
        return "input does not match the workflow's input type";
      case errc::wait_timeout:
        return "timed out waiting for the run to finish";
      case errc::nondeterminism:
        return "workflow is not deterministic: step differs from the recorded one";
      case errc::step_failed:
        return "step failed";
      case errc::step_timeout:
        return "step timed out";
      case errc::lease_lost:
        return "lease lost";
      case errc::cancelled:
        return "run cancelled";
      case errc::shutting_down:
        return "engine shutting down";
      case errc::concurrent_step:
        return "two steps of one run were in progress at once";
      case errc::dead_lettered:
        return "the run lost its worker too many times and was dead-lettered";
      case errc::output_rejected:
        return "an output could not be stored";
      case errc::run_finished:
        return "the run has finished";
      case errc::hook_not_found:
        return "no hook has that token";
      case errc::hook_expired:
        return "the hook expired";
      case errc::hook_already_resumed:
        return "the hook was already resumed with another payload";
      case errc::hook_closed:
        return "the hook is closed";
      case errc::run_not_failed:
        return "the run has not failed";
      case errc::child_failed:
        return "a child run failed or was cancelled";
      case errc::signature_required:
        return "the hook takes requests signed with its key only (Keel-Signature)";
      case errc::invalid_signature:
        return "the signature header is malformed or matches no secret";
      case errc::signature_expired:
        return "the signature's timestamp is outside the tolerance";
      case errc::signature_replayed:
        return "the signature was accepted before: a replay";
      case errc::invalid_cron_expression:
        return "the cron expression is malformed";
      case errc::unknown_time_zone:
        return "unknown time zone";
      case errc::schedule_not_found:
        return "no schedule has that name";
      case errc::run_failed:
        return "the run failed";
      case errc::invalid_output:
        return "the run's output does not convert to the type asked for";
    }
    return "unknown keel error";
  }
};

}  // namespace

const boost::system::error_category& engine_category() noexcept {
  static const category c;
  return c;
}

std::string code_name(errc e) {
  switch (e) {
    case errc::unknown_workflow:
      return "unknown_workflow";
    case errc::idempotency_conflict:
      return "idempotency_conflict";
    case errc::run_not_found:
      return "run_not_found";
    case errc::invalid_run_id:
      return "invalid_run_id";
    case errc::invalid_input:
      return "invalid_input";
    case errc::wait_timeout:
      return "wait_timeout";
    case errc::nondeterminism:
      return "nondeterminism";
    case errc::step_failed:
      return "step_failed";
    case errc::step_timeout:
      return "step_timeout";
    case errc::lease_lost:
      return "lease_lost";
    case errc::cancelled:
      return "cancelled";
    case errc::shutting_down:
      return "shutting_down";
    case errc::concurrent_step:
      return "concurrent_step";
    case errc::dead_lettered:
      return "dead_lettered";
    case errc::output_rejected:
      return "output_rejected";
    case errc::run_finished:
      return "run_finished";
    case errc::hook_not_found:
      return "hook_not_found";
    case errc::hook_expired:
      return "hook_expired";
    case errc::hook_already_resumed:
      return "hook_already_resumed";
    case errc::hook_closed:
      return "hook_closed";
    case errc::run_not_failed:
      return "run_not_failed";
    case errc::child_failed:
      return "child_failed";
    case errc::signature_required:
      return "signature_required";
    case errc::invalid_signature:
      return "invalid_signature";
    case errc::signature_expired:
      return "signature_expired";
    case errc::signature_replayed:
      return "signature_replayed";
    case errc::invalid_cron_expression:
      return "invalid_cron_expression";
    case errc::unknown_time_zone:
      return "unknown_time_zone";
    case errc::schedule_not_found:
      return "schedule_not_found";
    case errc::run_failed:
      return "run_failed";
    case errc::invalid_output:
      return "invalid_output";
  }
  return "unknown";
}

namespace {
/// The last code of the enumeration (a new one goes after it and moves this).
constexpr errc k_last_errc = errc::invalid_output;
}  // namespace

std::optional<errc> errc_from_code_name(std::string_view name) {
  for (int i = static_cast<int>(errc::unknown_workflow); i <= static_cast<int>(k_last_errc); ++i) {
    const auto e = static_cast<errc>(i);
    if (code_name(e) == name) return e;
  }
  return std::nullopt;
}

step_failed_error::step_failed_error(boost::json::value error)
    : std::runtime_error([&] {
        const auto* o = error.if_object();
        const auto* m = o ? o->if_contains("message") : nullptr;
        return m && m->is_string() ? std::string(m->as_string()) : std::string("step failed");
      }()),
      error_(std::move(error)) {}

}  // namespace keel
