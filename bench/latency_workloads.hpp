// keel-bench's latency workloads: how soon an enqueued run starts, a hook's resume goes on, a durable sleep
// wakes, and a long history replays.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace keel {
class engine;
struct engine_options;
}  // namespace keel

namespace keel::bench {

/// Runs started one at a time on an idle engine: enqueue call to the first step's start.
constexpr std::string_view k_start_latency = "start-latency";
/// Runs that sleep 0.5–2 s, enqueued over about a second: the sleep's wake time to the next step's start.
constexpr std::string_view k_sleep_lateness = "sleep-lateness";
/// Runs parked on hooks, resumed one at a time: resume_hook call to the next step's start.
constexpr std::string_view k_hook_latency = "hook-latency";
/// One run of --runs recorded steps resumed by an event: the event's send to the next step's start (the
/// replay of the whole history in between).
constexpr std::string_view k_replay = "replay";
/// What --runs means for these workloads when it is not given.
constexpr std::size_t k_latency_default_runs = 1'000;
/// What --runs (the recorded steps) means for replay when it is not given.
constexpr std::size_t k_replay_default_steps = 10'000;

/// True for the workloads this file runs.
[[nodiscard]] bool is_latency_workload(std::string_view workload) noexcept;

/// What a latency workload needs from keel-bench: its options, a fresh database, and the process's hooks.
struct latency_setup {
  std::string workload;
  std::string conninfo;  ///< a fresh, empty database
  std::size_t runs = k_latency_default_runs;
  std::size_t concurrency = 0, threads = 0, writers = 0, max_batch = 0, pool = 0;
  std::chrono::seconds timeout{600};  ///< the whole measurement fails past this
  /// sse-fanout: SSE clients; hook-resumes: keep-alive connections resuming hooks.
  std::size_t clients = 1'000, connections = 32;
  /// hook-resumes: leave out the direct engine::resume_hook comparison.
  bool skip_direct = false;
  /// Throws when a signal asked the benchmark to stop.
  std::function<void()> check_interrupted;
  /// Stops the engine (blocking, with keel-bench's hung-engine watchdog).
  std::function<void(engine&)> stop_engine_blocking;
};

/// Engine options for the setup's database and sizes (migrating; no event callback).
[[nodiscard]] engine_options engine_options_for(const latency_setup& s);

/// Stops the engine through keel-bench's hook when it goes out of scope (also on an exception).
class engine_guard {
 public:
  engine_guard(engine& e, const latency_setup& s) : e_(e), s_(s) {}
  ~engine_guard() { stop_blocking(); }
  engine_guard(const engine_guard&) = delete;
  engine_guard& operator=(const engine_guard&) = delete;
  void stop_blocking() {
    if (stopped_) return;
    stopped_ = true;
    s_.stop_engine_blocking(e_);
  }

 private:
  engine& e_;
  const latency_setup& s_;
  bool stopped_ = false;
};

/// The server's durability settings and version, as the noop3 line reports them.
struct server_settings {
  std::string fsync, synchronous_commit, server_version;
};

/// Reads the server settings and checks that `runs` runs completed with `steps_per_run` steps each (and
/// that the database holds no other runs or steps). Blocking; throws std::runtime_error otherwise.
server_settings verify_blocking(const std::string& conninfo, std::size_t runs, std::size_t steps_per_run);

/// `,"fsync":…,"synchronous_commit":…,"server_version":…`: the fields that end a latency workload's line.
[[nodiscard]] std::string server_fields(const server_settings& s);

/// Runs `s.workload` on `s.conninfo` and returns its one JSON line (without a newline). Blocking. Throws
/// std::runtime_error when the engine or the database fails, a run fails, or the timeout passes.
[[nodiscard]] std::string run_latency_workload_blocking(const latency_setup& s);

}  // namespace keel::bench
