// keel-bench's event-latency workload: ctx.emit to a stream consumer on the same worker and in another
// process, and a logged event to that other process's stream.
#pragma once

#include <string>
#include <string_view>

#include "latency_workloads.hpp"

namespace keel::bench {

constexpr std::string_view k_event_latency = "event-latency";
/// One run appending --runs x 100 chunks to a durable output stream; a reader in another process.
constexpr std::string_view k_stream_write = "stream-write";
/// The hidden first argument that makes keel-bench the other process's stream reader.
constexpr std::string_view k_stream_reader_flag = "--stream-reader";
/// The hidden first argument that makes keel-bench the other process's consumer.
constexpr std::string_view k_event_consumer_flag = "--event-consumer";

/// Runs the workload on `s.conninfo` (s.runs frames) and returns its JSON line. Blocking.
[[nodiscard]] std::string event_latency_blocking(const latency_setup& s);

/// Runs the stream-write workload on `s.conninfo` and returns its JSON line. Blocking.
[[nodiscard]] std::string stream_write_blocking(const latency_setup& s);

/// The reader process: `keel-bench --stream-reader CONNINFO RUN_ID CHUNKS`. Prints "ready" once its
/// reader is open, then one JSON line with what it measured.
int run_stream_reader(int argc, char** argv);

/// The consumer process: `keel-bench --event-consumer CONNINFO FRAMES`. Prints "ready" once its stream is
/// open, then one JSON line with what it measured. Returns the exit code.
int run_event_consumer(int argc, char** argv);

}  // namespace keel::bench
