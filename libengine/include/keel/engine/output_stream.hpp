// Durable output streams: ordered chunks a run writes (ctx.stream) and anyone reads from any index
// (engine::read_stream), for AI tokens, logs and partial results a client must not miss.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/json/value.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace keel {

namespace detail {
struct run_state;
struct output_state;
class output_follower;
}  // namespace detail

/// A run's named output stream, from ctx.stream(name) (on the main line, not in a ctx.parallel branch).
/// Chunks are numbered from 0 in the order written and buffered: write() returns at once (unless 10,000
/// wait), and the buffer is committed in batches, at the latest before the step that wrote them
/// completes, before the run waits or ends, and at flush() / close(). A step that is retried or re-run
/// after a crash replaces the chunks its earlier attempt or execution wrote instead of adding to them;
/// replayed steps write nothing again. Use from the run's own coroutine (its strand), and name the handle
/// (`auto out = ctx.stream("tokens"); co_await out.write(v);`: GCC 12 destroys a temporary inside a
/// co_await expression twice).
class output_stream {
 public:
  output_stream(detail::run_state& st, std::shared_ptr<detail::output_state> state);

  /// Appends a chunk (any JSON; a string for text). Throws std::invalid_argument for a chunk over the
  /// store's payload limits, and stops the run (like a step) when its lease is gone.
  boost::asio::awaitable<void> write(const boost::json::value& chunk);
  /// Waits until every chunk written so far is durable.
  boost::asio::awaitable<void> flush();
  /// Flushes, then ends the stream: readers following it end after its last chunk; later writes are
  /// ignored.
  boost::asio::awaitable<void> close();
  [[nodiscard]] const std::string& name() const noexcept;

 private:
  detail::run_state* st_;
  std::shared_ptr<detail::output_state> state_;
};

/// One chunk of an output stream, or word that chunks were replaced (`rewound`).
struct output_chunk {
  std::int64_t index = 0;
  boost::json::value data;
  /// No data: a redo (a retried attempt, or work re-run after its execution was lost) replaced the chunks
  /// from `index` on that this reader already returned. Drop them; the replacements follow from `index`.
  bool rewound = false;
};

/// Reads an output stream from an index, then follows it live (engine::read_stream).
class output_reader {
 public:
  output_reader() = default;
  explicit output_reader(std::shared_ptr<detail::output_follower> follower);
  ~output_reader();
  output_reader(output_reader&&) noexcept;
  output_reader& operator=(output_reader&&) noexcept;

  /// The next chunk (index n, then n + 1, ... without a gap), waiting for it to be written; nullopt once
  /// the stream was closed, or its run has ended, and every chunk was read (or the engine stopped).
  /// Chunks are returned as soon as they are durable, before the step that wrote them completes: when
  /// that step's attempt fails, or its execution is lost, the redo replaces them, and the reader says so
  /// with a `rewound` chunk before going on from its index. Storage errors are retried. Supports
  /// per-operation cancellation (`co_await (r.next() || timer.async_wait())`): a cancelled call returns
  /// nullopt and the reader goes on from where it was. One call at a time.
  boost::asio::awaitable<std::optional<output_chunk>> next();

 private:
  std::shared_ptr<detail::output_follower> follower_;
};

}  // namespace keel
