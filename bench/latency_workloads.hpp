// keel-bench's latency workloads: how soon an enqueued run starts, and how late a durable sleep wakes.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace keel {
class engine;
}

namespace keel::bench {

/// Runs started one at a time on an idle engine: enqueue call to the first step's start.
constexpr std::string_view k_start_latency = "start-latency";
/// Runs that sleep 0.5–2 s, enqueued over about a second: the sleep's wake time to the next step's start.
constexpr std::string_view k_sleep_lateness = "sleep-lateness";
/// What --runs means for these workloads when it is not given.
constexpr std::size_t k_latency_default_runs = 1'000;

/// True for the workloads this file runs.
[[nodiscard]] bool is_latency_workload(std::string_view workload) noexcept;

/// What a latency workload needs from keel-bench: its options, a fresh database, and the process's hooks.
struct latency_setup {
  std::string workload;
  std::string conninfo;  ///< a fresh, empty database
  std::size_t runs = k_latency_default_runs;
  std::size_t concurrency = 0, threads = 0, writers = 0, max_batch = 0, pool = 0;
  std::chrono::seconds timeout{600};  ///< the whole measurement fails past this
  /// Throws when a signal asked the benchmark to stop.
  std::function<void()> check_interrupted;
  /// Stops the engine (blocking, with keel-bench's hung-engine watchdog).
  std::function<void(engine&)> stop_engine_blocking;
};

/// Runs `s.workload` on `s.conninfo` and returns its one JSON line (without a newline). Blocking. Throws
/// std::runtime_error when the engine or the database fails, a run fails, or the timeout passes.
[[nodiscard]] std::string run_latency_workload_blocking(const latency_setup& s);

}  // namespace keel::bench
