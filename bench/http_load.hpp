// keel-bench's HTTP workloads: hook resumes per second through `POST /v1/hooks/{token}`, and the latency of
// a run's events fanned out over Server-Sent Events to many connected clients. The load generator is an
// asynchronous Beast client on a thread of its own in the same process, over loopback.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "latency_workloads.hpp"

namespace keel::bench {

/// --runs runs parked on hooks, resumed over HTTP from --connections keep-alive connections (and, unless
/// --skip-ceiling, as many again with engine::resume_hook called directly at the same concurrency).
constexpr std::string_view k_hook_resumes = "hook-resumes";
/// --clients SSE clients on one run's events; the run emits --runs progress frames, each after a step.
constexpr std::string_view k_sse_fanout = "sse-fanout";
/// What --runs means for hook-resumes when it is not given.
constexpr std::size_t k_hook_resumes_default_runs = 5'000;
/// What --runs (the frames, and steps, of the one run) means for sse-fanout when it is not given.
constexpr std::size_t k_sse_fanout_default_frames = 100;

/// True for the workloads this file runs.
[[nodiscard]] bool is_http_workload(std::string_view workload) noexcept;

/// Runs `s.workload` (hook-resumes or sse-fanout) on `s.conninfo` and returns its JSON line (without a
/// newline). Blocking. Throws std::runtime_error when the engine, the server or the database fails, a
/// request is refused, a client misses a lifecycle event, or the timeout passes.
[[nodiscard]] std::string http_workload_blocking(const latency_setup& s);

}  // namespace keel::bench
