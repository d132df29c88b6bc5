// How a step is retried and timed out.
#pragma once

#include <chrono>
#include <optional>

namespace keel {

/// Exponential backoff with jitter between attempts of a failing step.
struct retry_policy {
  /// Attempts in all, including the first. 1 = no retry.
  int max_attempts = 3;
  /// Delay before the second attempt.
  std::chrono::milliseconds initial_delay{100};
  /// Each further delay is the previous one times this.
  double multiplier = 2.0;
  /// No delay exceeds this.
  std::chrono::milliseconds max_delay{30'000};
  /// Each delay is scaled by a random factor in [1 - jitter, 1 + jitter].
  double jitter = 0.2;

  /// The delay before attempt `attempt + 1`, for a random `unit` in [0, 1).
  [[nodiscard]] std::chrono::milliseconds delay_after(int attempt, double unit) const noexcept;
};

/// Options of one ctx.step call.
struct step_options {
  retry_policy retry{};
  /// An attempt of a coroutine step that runs longer is cancelled (Asio per-operation cancellation of what
  /// it awaits) and counts as failed (code step_timeout). An operation that ignores cancellation delays the
  /// timeout until it completes. A plain callable runs to completion on the run's strand, uninterrupted.
  std::optional<std::chrono::milliseconds> timeout;
};

}  // namespace keel
