// Live events of runs, as engine::stream yields them: the durable run log's lifecycle events (each with its
// log position, also its SSE id) and the progress frames runs publish with ctx.emit (not durable).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "keel/common/run_id.hpp"
#include "keel/storage/records.hpp"

namespace keel {

/// The bodies of stream events, one type per kind (its name is the log's kind).
namespace events {

struct run_enqueued {
  int version = 1;
  int priority = 0;
  /// When it was enqueued to start later (enqueue_options::run_at).
  std::optional<std::chrono::system_clock::time_point> run_at;
};
struct run_started {
  int execution = 0;  ///< 1 on its first execution
  std::string worker;
  std::int64_t epoch = 0;
  bool recovery = false;  ///< the previous worker lost it (its lease lapsed)
};
struct run_resumed {
  std::string by;  ///< timer, event, hook, child or cancel
  boost::json::value detail;
};
struct run_sleeping {
  std::optional<std::chrono::system_clock::time_point> until;
  boost::json::value detail;
};
struct run_waiting {
  boost::json::value what;  ///< {"kind": "event" | "hook" | "child" | "any", ...}
};
struct run_completed {
  boost::json::value output;
};
struct run_failed {
  boost::json::value error;
};
struct run_cancelled {
  boost::json::value error;
};
struct run_dead_lettered {
  boost::json::value error;
};
/// An attempt of a step began (logged with the writes that follow it: it shows once they commit).
struct step_started {
  std::string name;
  int seq = 0;
  int attempt = 1;
  std::optional<std::string> branch;
  std::optional<std::chrono::system_clock::time_point> started_at;
};
/// An attempt failed; the next one follows after `next_delay`.
struct step_retrying {
  std::string name;
  int seq = 0;
  int attempt = 1;
  std::string error;
  std::chrono::milliseconds next_delay{0};
  std::optional<std::string> branch;
};
/// A step's checkpoint became durable.
struct step_completed {
  std::string name;
  int seq = 0;
  int attempts = 1;
  std::chrono::microseconds duration{0};
  boost::json::value output;
  std::optional<std::string> branch;  ///< the ctx.parallel branch it ran in
};
/// A step failed for good (its failure is recorded).
struct step_failed {
  std::string name;
  int seq = 0;
  int attempts = 1;
  boost::json::value error;
  std::optional<std::string> branch;
};
/// Something else the log records: run_released, run_cancel_requested, run_retried, run_rewound,
/// run_continued, stream_appended / stream_closed / stream_rewound (an output stream's chunks from
/// `from` were written, closed, or removed by a redo), and kinds added later.
struct run_changed {
  std::string kind;
  boost::json::value data;
};
/// A frame a run published with ctx.emit: at most once, never durable, only from the execution that holds
/// the run's lease. `seq` counts the execution's frames from 1; `missed` says how many of this run's frames
/// before this one the stream dropped (it fell behind, see stream_options).
struct progress {
  boost::json::value frame;
  int execution = 0;
  std::int64_t epoch = 0;
  std::int64_t seq = 0;
  std::int64_t missed = 0;
};
/// Retention removed log events this stream may have seen, up to position `until` (its id is 0: it is
/// no position to resume from).
struct log_gap {
  std::int64_t until = 0;
};

}  // namespace events

/// One event of a stream. Each stream gets its own copy: changing it changes nothing elsewhere.
struct stream_event {
  using body_type = std::variant<events::run_enqueued, events::run_started, events::run_resumed,
                                 events::run_sleeping, events::run_waiting, events::run_completed,
                                 events::run_failed, events::run_cancelled, events::run_dead_lettered,
                                 events::step_started, events::step_retrying, events::step_completed,
                                 events::step_failed, events::run_changed, events::progress, events::log_gap>;
  /// The event's position in the durable run log, also its SSE id; 0 for progress frames (not logged).
  std::int64_t id = 0;
  run_id run;
  std::string workflow;
  /// The run that started this one (ctx.child), if any.
  std::optional<run_id> parent;
  std::chrono::system_clock::time_point at;
  body_type body;

  /// The kind's name: "run_started", "step_completed", "progress", "gap", ...
  [[nodiscard]] std::string_view kind() const noexcept;
  template <class T>
  [[nodiscard]] const T* as() const noexcept {
    return std::get_if<T>(&body);
  }
};

/// A run log event (engine::read_log) as a stream would yield it: its body decoded by kind.
[[nodiscard]] stream_event to_stream_event(storage::log_event e);

/// An event as a JSON document, the shape libhttp's SSE sends: {"id", "run_id", "workflow", "parent_id"?,
/// "at", "kind", "data"}; `data` holds the body's fields (times in RFC 3339, UTC; durations in `…_us` /
/// `…_ms` fields).
[[nodiscard]] boost::json::value to_json(const stream_event& e);

/// Which runs a stream sees.
struct stream_filter {
  /// Only runs of this workflow.
  std::optional<std::string> workflow;
  /// Only this run and the runs it started (ctx.child), recursively.
  std::optional<run_id> run;
  /// Progress frames too (ctx.emit).
  bool progress = true;
};

/// How a stream buffers events its consumer has not pulled yet.
struct stream_options {
  /// Unset (the default): unbounded, never slows the engine. n > 0: once n events wait, the engine pauses
  /// each run before its next unit of work (a step, a claim) until the consumer pulls. 0: a strict
  /// rendezvous: the engine goes on only while the consumer waits in next(). A paused run keeps its lease,
  /// and is released by a cancel, a lost lease or engine::stop. Progress frames never pause anything: a
  /// consumer that falls behind gets each run's latest frames (up to 64 per run) and a count of the rest.
  std::optional<std::size_t> buffer_size;
  stream_filter filter;
};

namespace detail {
class subscription;
}

/// A live feed of events, from the moment it was opened (engine::stream). Destroying it unsubscribes it.
/// next() may be called from any executor, one call at a time.
class event_stream {
 public:
  /// A stream that has ended (next() returns nullopt).
  event_stream() = default;
  explicit event_stream(std::shared_ptr<detail::subscription> sub);
  ~event_stream();
  event_stream(event_stream&&) noexcept;
  event_stream& operator=(event_stream&&) noexcept;
  event_stream(const event_stream&) = delete;
  event_stream& operator=(const event_stream&) = delete;

  /// The next event, waiting for one; nullopt once the stream ended (engine::stop) and everything before
  /// the end was pulled. Supports per-operation cancellation (`co_await (s.next() || timer.async_wait())`):
  /// a cancelled call returns nullopt and the stream goes on.
  boost::asio::awaitable<std::optional<stream_event>> next();
  /// The next event if one waits now (never waits); nullopt otherwise.
  std::optional<stream_event> try_next();
  /// Events waiting to be pulled.
  [[nodiscard]] std::size_t buffered() const;

 private:
  std::shared_ptr<detail::subscription> sub_;
};

}  // namespace keel
