#include "keel/engine/step_options.hpp"

#include <algorithm>
#include <cmath>

namespace keel {

std::chrono::milliseconds retry_policy::delay_after(int attempt, double unit) const noexcept {
  const double base =
      static_cast<double>(initial_delay.count()) * std::pow(multiplier, std::max(0, attempt - 1));
  const double capped = std::min(base, static_cast<double>(max_delay.count()));
  const double j = std::clamp(jitter, 0.0, 1.0);
  const double scaled = capped * (1.0 - j + 2.0 * j * std::clamp(unit, 0.0, 1.0));
  return std::chrono::milliseconds{
      static_cast<std::int64_t>(std::max(0.0, std::min(scaled, capped * (1.0 + j))))};
}

}  // namespace keel
