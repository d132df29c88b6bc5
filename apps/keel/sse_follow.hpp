// Following a Server-Sent Events stream the way an EventSource does: messages as they arrive, and after a
// dropped connection a new one with Last-Event-ID, so that nothing is missed or shown twice.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "http_client.hpp"

namespace keel::cli {

/// One message of an event stream.
struct sse_message {
  std::optional<std::string> id;  ///< its `id:` field, if it had one
  std::string event;              ///< "" for the default type (`message`)
  std::string data;               ///< its `data:` lines, joined with '\n'
};

/// Splits a text/event-stream into messages as its bytes arrive (the WHATWG parsing rules, minus `retry`:
/// the follower has its own backoff).
class sse_parser {
 public:
  /// Feeds the next bytes; calls `on` for each message they complete.
  void feed(std::string_view bytes, const std::function<void(sse_message&&)>& on);
  /// Forgets a message cut off by a dropped connection.
  void reset();

 private:
  void line(std::string_view text, const std::function<void(sse_message&&)>& on);
  std::string partial_;
  bool after_cr_ = false;
  sse_message current_;
  bool has_data_ = false;
};

struct follow_options {
  /// The stream's path and query (under the URL's prefix).
  std::string target;
  /// Where to resume: the id of the last event already shown, if any.
  std::optional<std::string> last_event_id;
  /// The first wait before reconnecting, doubled after each failed attempt up to `max_backoff`.
  std::chrono::milliseconds initial_backoff{200};
  std::chrono::milliseconds max_backoff{5000};
  /// The longest silence accepted before the connection counts as dropped (the server sends a keepalive
  /// every 15 s).
  std::chrono::milliseconds idle{45000};
};

/// Follows the stream until `on_message` returns true (done) or SIGINT. Reconnects with backoff after a
/// dropped connection, a server that cannot be reached, or a 5xx answer; a 4xx answer throws api_error.
/// Progress notes (reconnecting…) go to stderr.
void follow_blocking(http_client& client, follow_options options,
                     const std::function<bool(const sse_message&)>& on_message);

}  // namespace keel::cli
