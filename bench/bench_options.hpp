// keel-bench's command line: the workloads it knows and the options that size them (README.md, "Running it").
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ceiling.hpp"

namespace keel::bench {

/// Exit status for a bad command line.
inline constexpr int k_exit_usage = 2;
/// The standard throughput workload: three no-op steps per run, against the raw-SQL ceilings.
inline constexpr std::string_view k_noop3 = "noop3";
/// The noop3 drain twice, with and without parked runs (queued for tomorrow) in the table.
inline constexpr std::string_view k_parked = "parked";
/// The noop3 drain twice, without and with the durable run log.
inline constexpr std::string_view k_log_overhead = "log-overhead";
/// The noop3 drain twice, without and with one unbounded stream attached (and consumed).
inline constexpr std::string_view k_stream_overhead = "stream-overhead";
/// The noop3 drain twice, without and with a concurrency key on every run.
inline constexpr std::string_view k_keyed_overhead = "keyed-overhead";

struct bench_options {
  std::string workload{k_noop3};
  std::size_t runs = 20'000;  // k_latency_default_runs for the latency workloads
  std::size_t parked = 200'000;
  // 512 drained fastest on the 2-core development VM (64: ~2k runs/s, 256: ~7k, 512: ~11k, 1024: ~12k with
  // twice the in-engine latency); see README.md.
  std::size_t concurrency = 512;
  std::size_t threads = 2;
  std::size_t writers = 1;
  std::size_t max_batch = 512;
  std::size_t pool = 2;
  std::size_t enqueuers = 1024;
  std::size_t clients = 1'000;   // sse-fanout
  std::size_t connections = 32;  // hook-resumes
  bool skip_ceiling = false;
  bool analyze = false;
  /// --ceiling-indexes: which of keel.runs' indexes the ceilings' runs table keeps.
  ceiling_indexes ceiling_indexes_kept = ceiling_indexes::all;
  std::optional<std::string> database_url;
  bool keep_database = false;
  std::vector<std::string> pg_settings;
  std::chrono::seconds timeout{600};
};

/// The parsed options, or the exit code to leave with (0 after --help).
struct parsed_options {
  std::optional<bench_options> options;
  int exit_code = 0;
};
/// Parses and checks the command line; prints the help or the error itself.
parsed_options parse_options(int argc, char** argv);

}  // namespace keel::bench
