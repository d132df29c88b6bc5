// A step failure with a code of its own, for step bodies the engine provides (ctx.fetch).
#pragma once

#include <stdexcept>
#include <string>

namespace keel::detail {

/// Thrown by an engine-provided step body to fail the step for good (no further attempt of ctx.step) with
/// `code` ("fetch_failed", ...) instead of step_failed, and the attempts the body made itself: the step's
/// record and the step_failed_error the workflow sees carry both.
class coded_step_failure : public std::runtime_error {
 public:
  coded_step_failure(std::string code, const std::string& message, int attempts)
      : std::runtime_error(message), code_(std::move(code)), attempts_(attempts) {}
  [[nodiscard]] const std::string& code() const noexcept { return code_; }
  [[nodiscard]] int attempts() const noexcept { return attempts_; }

 private:
  std::string code_;
  int attempts_;
};

}  // namespace keel::detail
