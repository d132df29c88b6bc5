// A run's durable output streams in this execution: their write buffers and flushers (output_stream.cpp).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/json/value.hpp>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "keel/engine/events.hpp"
#include "keel/engine/output_stream.hpp"
#include "keel/storage/records.hpp"

namespace keel::storage {
class store;
}

namespace keel::detail {

class engine_impl;
struct run_state;

/// Touched only on the run's strand (the flusher runs there too). Shared by the handles of one stream
/// and its flusher, which may outlive the execution (abandoned with its lease).
struct output_state {
  output_state(std::string n, storage::lease_token l, int g, bool older, storage::store& s,
               boost::asio::strand<boost::asio::io_context::executor_type> st)
      : name(std::move(n)),
        lease(std::move(l)),
        generation(g),
        store(s),
        strand(st),
        older_executions(older) {}

  std::string name;
  storage::lease_token lease;
  int generation = 0;
  storage::store& store;
  boost::asio::strand<boost::asio::io_context::executor_type> strand;
  struct pending {
    boost::json::value chunk;
    int seq = 0;
    int attempt = 0;
  };
  std::deque<pending> buffer;
  /// A writer position: a step's (seq, attempt), or (seq, 0) for the workflow's own code before seq.
  struct position {
    int seq = 0;
    int attempt = 0;
    bool operator==(const position&) const = default;
  };
  /// An earlier execution of the run may have written chunks this one redoes (see needs_trim).
  bool older_executions = false;
  /// Where this execution's last successful flush moved the writer (none yet: nullopt).
  std::optional<position> moved_to;
  /// A flush without chunks is due at this position, to remove what it supersedes.
  std::optional<position> trim_at;
  bool close_requested = false;
  int close_seq = 0;  // where close() was called
  bool closed = false;
  bool flushing = false;
  /// A flush was fenced (the lease is gone) or storage shut down: nothing more is written.
  bool fenced = false;
  /// A flush was refused (not a lost lease): its chunks are lost, and the next wait for the flusher throws.
  std::string refused;
  /// Woken (cancelled) whenever a flush round ends.
  std::vector<boost::asio::steady_timer*> waiters;
};

/// Before the run records something at its current position (`attempt`: the step's, for a step's
/// checkpoint): waits until every output stream of the run has flushed what it buffered, and removes the
/// chunks a failed attempt or an earlier execution wrote that this record supersedes. Loses the lease
/// (throws) if a flush was fenced. A no-op for a run without output streams.
boost::asio::awaitable<void> flush_outputs(run_state& st, int attempt = 0);

/// engine::read_stream's state: the page buffer, the position, and the run's events that say more came.
class output_follower {
 public:
  output_follower(engine_impl& engine, run_id run, std::string stream, std::int64_t from,
                  event_stream events);
  boost::asio::awaitable<std::optional<output_chunk>> next();

 private:
  /// The page shows chunks removed since the last read (storage::output_page::trims) below what was read:
  /// forgets what it read from there on, and returns true (the page is stale).
  bool replaced(const storage::output_page& page);

  engine_impl& engine_;
  const run_id run_;
  const std::string stream_;
  /// The next index to read, and the one after the last handed to the consumer.
  std::int64_t next_index_;
  std::int64_t delivered_;
  /// Chunks from here on that the consumer has were replaced: next() says so first.
  std::optional<std::int64_t> rewind_;
  /// The stream's trims at the last read (none read yet: nullopt).
  std::optional<int> trims_seen_;
  event_stream events_;
  std::deque<output_chunk> page_;
  bool done_ = false;
};

}  // namespace keel::detail
