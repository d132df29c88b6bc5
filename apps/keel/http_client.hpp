// A blocking HTTP/1.1 client for the Keel API: one request at a time, each with a deadline, and event
// streams read piece by piece. Beast stays in http_client.cpp.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel::cli {

/// The server's base URL (--url / KEEL_URL), checked once.
struct server_url {
  std::string text;    ///< as given, for messages
  std::string host;    ///< without brackets for IPv6
  std::string port;    ///< "80" when the URL has none
  std::string prefix;  ///< the path before /v1, without a trailing slash ("" or e.g. "/keel")

  /// Throws usage_error unless `text` is an http:// URL with a host (no query, no fragment).
  static server_url parse(std::string_view text);
};

struct http_header {
  std::string name;
  std::string value;
};

struct http_reply {
  int status = 0;
  std::string body;
};

/// An open event stream's body, read as it arrives. Not copyable; closing it closes the connection.
class event_source {
 public:
  virtual ~event_source() = default;
  /// Appends what arrives next to `out`; false when the stream ended: closed by the server, dropped, silent
  /// for longer than its idle limit, or interrupted (interrupt.hpp). `why` then says which.
  virtual bool read_some_blocking(std::string& out, std::string& why) = 0;
};

/// Talks to one server. Every failure to get an answer throws unreachable, naming the URL.
class http_client {
 public:
  http_client(server_url url, std::optional<std::string> api_key, std::chrono::milliseconds timeout);

  /// One request on a fresh connection, its whole answer within the timeout. `body`, when set, is sent as
  /// application/json, with `headers` besides the usual ones.
  http_reply request_blocking(std::string_view method, std::string_view path_and_query,
                              const std::optional<std::string>& body = std::nullopt,
                              const std::vector<http_header>& headers = {});

  /// GET of an event stream. A 200 answer gives the stream (`idle`: the longest silence it accepts); any
  /// other gives its status and body in `refused` and nullptr.
  std::unique_ptr<event_source> open_stream_blocking(std::string_view path_and_query,
                                                     const std::vector<http_header>& headers,
                                                     std::chrono::milliseconds idle, http_reply& refused);

  [[nodiscard]] const server_url& url() const noexcept { return url_; }

 private:
  server_url url_;
  std::optional<std::string> api_key_;
  std::chrono::milliseconds timeout_;
};

/// Throws api_error for a reply that is not 2xx, with the code and message of its error body (or the HTTP
/// status when the body has none).
void throw_unless_success(const http_reply& reply);

/// `segment` percent-encoded for a URL path (a workflow, event or run named by the user).
std::string path_segment(std::string_view segment);

/// `value` percent-encoded for a query string.
std::string query_value(std::string_view value);

}  // namespace keel::cli
