// keel::http::server: the HTTP/1.1 front end of an engine (Boost.Beast), on the engine's own io_context.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "keel/common/result.hpp"

namespace keel {
class engine;
}

namespace keel::http {

namespace detail {
struct server_state;
}

struct server_options {
  /// Where to listen: an IPv4 or IPv6 address, and a port (0: any free port, see server::port()).
  std::string address = "127.0.0.1";
  unsigned short port = 8080;
  /// A request body larger than this is refused with 413 before it is read.
  std::size_t max_body_bytes = 1024 * 1024;
  /// Request line and headers together; larger is refused with 431.
  std::size_t max_header_bytes = 16 * 1024;
  /// A request must arrive whole within this from its first byte: a slow client cannot hold a connection.
  std::chrono::milliseconds request_timeout{30'000};
  /// A connection waiting for a request's first byte (a new one, or a kept-alive one between requests) is
  /// closed after this.
  std::chrono::milliseconds idle_timeout{60'000};
  /// Connections open at once; one more is answered 503 and closed.
  std::size_t max_connections = 1024;
  /// An event stream with nothing to send writes a comment this often (proxies and clients drop streams
  /// that stay silent); a write that takes longer than request_timeout drops its client.
  std::chrono::milliseconds heartbeat_interval{15'000};
  /// Events waiting for an event stream's client at most: a client further behind is too slow for the
  /// live stream, which is dropped (its progress frames are lost, counted) and its lifecycle events read
  /// again from the run log.
  std::size_t max_queued_events = 4096;
  /// When not empty, every request but a hook's (authorised by its token) and the /healthz and /readyz
  /// probes must carry `Authorization: Bearer <key>` with one of these keys (several, so that keys rotate
  /// without downtime); others get 401.
  std::vector<std::string> api_keys;
  /// Origins whose web pages may call the API (CORS; "*" for any): their requests' answers carry
  /// Access-Control-Allow-Origin, and preflights are answered.
  std::vector<std::string> cors_origins;
};

/// What a server counts (its /metrics report them too).
struct server_stats {
  /// Event streams open now.
  std::int64_t event_streams = 0;
  /// Progress frames event stream clients were too slow for.
  std::int64_t dropped_frames = 0;
};

/// Serves the engine's REST API (see docs/http.md). Thread-safe; stop() (or the destructor) before the
/// engine goes.
class server {
 public:
  server(engine& e, server_options options);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Binds and starts accepting. Errors: the bind's or listen's (address in use, bad address).
  result<void> start();
  /// The port it listens on (the one chosen when options.port was 0).
  [[nodiscard]] unsigned short port() const noexcept;
  [[nodiscard]] server_stats stats() const noexcept;
  /// Stops accepting, closes idle connections, lets requests in progress finish (up to `deadline`), then
  /// closes the rest. Blocks the calling thread; not from the engine's threads.
  void stop_blocking(std::chrono::milliseconds deadline = std::chrono::seconds(10));

 private:
  std::shared_ptr<detail::server_state> state_;
};

}  // namespace keel::http
