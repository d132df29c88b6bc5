// A histogram with fixed buckets, observed from any thread without a lock (for /metrics).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace keel {

/// What a histogram holds at one moment, Prometheus-shaped: `counts[i]` observations were at most
/// `bounds[i]` (cumulative), and `count` in all (the +Inf bucket).
struct histogram_snapshot {
  std::vector<double> bounds;
  std::vector<std::uint64_t> counts;
  std::uint64_t count = 0;
  double sum = 0;
};

/// Upper bounds for durations in seconds, 100 µs to 10 s.
inline constexpr std::array<double, 16> k_seconds_bounds{
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

class histogram {
 public:
  /// `bounds`: the buckets' upper bounds, ascending.
  explicit histogram(std::span<const double> bounds);
  histogram(const histogram&) = delete;
  histogram& operator=(const histogram&) = delete;

  void observe(double value) noexcept;
  /// Counts taken one by one while others observe: a snapshot may be a few observations apart between
  /// its fields, never torn within one.
  [[nodiscard]] histogram_snapshot snapshot() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // per bucket (not cumulative), then +Inf
  std::atomic<double> sum_{0};
};

}  // namespace keel
