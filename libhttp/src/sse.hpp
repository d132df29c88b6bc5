// Server-Sent Events: a run's lifecycle events (or every run's), and a run's durable output stream, as
// text/event-stream bodies any EventSource client follows and resumes with Last-Event-ID.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "api.hpp"

namespace keel::http::detail {

/// What an SSE request asks for (decoded from its path, query and Last-Event-ID).
struct sse_request {
  enum class source { run_events, all_events, output };
  source what = source::all_events;
  std::string run;     ///< run_events, output
  std::string stream;  ///< output
  std::optional<std::string> workflow;
  /// Events: resume after this log position (run_events default to 0, the run's whole history; all_events
  /// to live only).
  std::optional<std::int64_t> after;
  /// Output: the first chunk index to send.
  std::int64_t from = 0;
  bool frames = true;
  /// HEAD: the answer's head only (after the same checks as GET).
  bool head = false;
  /// The request's HTTP version (10, 11): HTTP/1.0 gets a body that ends with the connection.
  unsigned version = 11;
};

/// Whether `req` is an SSE request: nullopt for any other; its decoding, or the error answer to a bad one.
std::optional<std::variant<sse_request, response>> sse_route(const request& req);

/// Counts the server reports (/metrics).
struct sse_counters {
  std::atomic<std::int64_t> clients{0};
  /// Progress frames a client was too slow for.
  std::atomic<std::int64_t> dropped_frames{0};
};

/// The connection an SSE body is written to, on its strand.
struct sse_link {
  boost::beast::tcp_stream& stream;
  /// The heartbeat timer; the server cancels it when it stops (with `stopping` set).
  boost::asio::steady_timer& wake;
  const std::atomic<bool>& stopping;
  /// One write must finish within this, or the client is dropped.
  std::chrono::milliseconds write_timeout;
  std::chrono::milliseconds heartbeat_interval;
  std::size_t max_queued_events;
  sse_counters& counters;
  /// Access-Control-Allow-Origin of the stream's answer (empty: none).
  std::string_view origin;
};

/// Serves `r`: an error answer when it cannot start (unknown run, bad stream name, no database); nullopt
/// once the event stream was written and ended (the client left, the engine or the server stopped, the
/// output stream closed): the connection then closes.
boost::asio::awaitable<std::optional<response>> serve_sse(engine& e, const sse_request& r, sse_link link);

}  // namespace keel::http::detail
