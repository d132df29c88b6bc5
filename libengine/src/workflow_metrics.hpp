// What a workflow's runs do on this worker, counted without a lock from the runs' strands.
#pragma once

#include <atomic>
#include <cstdint>

#include "keel/common/histogram.hpp"
#include "keel/storage/records.hpp"

namespace keel::detail {

struct workflow_metrics {
  histogram step_seconds{k_seconds_bounds};
  std::atomic<std::uint64_t> completed{0};
  std::atomic<std::uint64_t> failed{0};
  std::atomic<std::uint64_t> cancelled{0};

  void finished(storage::run_status status) noexcept {
    auto& counter = status == storage::run_status::completed   ? completed
                    : status == storage::run_status::cancelled ? cancelled
                                                               : failed;
    counter.fetch_add(1, std::memory_order_relaxed);
  }
};

}  // namespace keel::detail
