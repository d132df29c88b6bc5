// One outbound HTTP/1.1 exchange over TCP or TLS (Boost.Beast), for ctx.fetch: no retries, no records.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "keel/engine/fetch.hpp"

namespace boost::asio::ssl {
class context;
}

namespace keel::detail {

/// A request's URL, taken apart as the exchange needs it.
struct http_target {
  bool tls = false;
  /// What is resolved and what the certificate must name: a host name, or an IP address (IPv6 without
  /// brackets).
  std::string host;
  /// The port as given, else the scheme's (80, 443).
  std::string port;
  /// Path and query, "/" for an empty path.
  std::string target;
  /// `host[:port]` as the Host header carries it (the port only when the URL gives one).
  std::string authority;
  /// True when `host` is an IP address: no SNI then (RFC 6066 allows names only).
  bool host_is_address = false;
  /// `scheme://authority/path`: the URL without query and fragment (what a step name shows).
  std::string without_query;
};

/// `url` taken apart: http:// or https://, a host, an optional port (1 to 65535), no user info (credentials
/// go in an Authorization header, not in a URL a step name shows). nullopt, with `why`, for anything else.
[[nodiscard]] std::optional<http_target> parse_http_url(std::string_view url, std::string& why);

/// True when `method` is an HTTP token (RFC 9110 tchar), such as GET or PATCH.
[[nodiscard]] bool is_http_token(std::string_view method) noexcept;

/// The TLS client context for ctx.fetch: peers verified against the system's CAs plus `ca_file` (PEM; empty:
/// none). Built once per CA file and shared (process-wide, thread-safe). Throws std::runtime_error when the
/// file cannot be loaded (not cached: a fixed file is read on the next call).
[[nodiscard]] std::shared_ptr<boost::asio::ssl::context> tls_client_context(const std::string& ca_file);

/// What one exchange gave: a response, or what went wrong.
struct http_outcome {
  std::optional<fetch_response> response;
  /// Without a response: what failed, for a person ("connect to 127.0.0.1:8443: Connection refused").
  std::string error;
  /// Without a response: the body was longer than the limit (another attempt would get the same).
  bool too_large = false;
};

/// What an exchange sends, and its limits.
struct http_exchange_options {
  std::string method;
  /// Sent as given, in order (the caller adds Host, User-Agent and the like); Content-Length is set here.
  const http_fields* headers = nullptr;
  const std::string* body = nullptr;
  /// The whole exchange (resolve, connect, handshake, request, response) ends after this long. Name
  /// resolution runs on Asio's resolver thread and cannot be interrupted: a resolver that hangs is reported
  /// as a timeout once it returns.
  std::chrono::milliseconds timeout{30'000};
  std::size_t max_body = 0;
  /// For https:// targets.
  boost::asio::ssl::context* tls = nullptr;
};

/// Sends one request on a new connection (closed afterwards: no pool, one connection per attempt) and reads
/// the response, on the awaiting coroutine's executor. Network failures are values, never exceptions;
/// cancellation of the awaiting coroutine (ctx.step's timeout) ends the exchange.
boost::asio::awaitable<http_outcome> http_exchange(const http_target& to,
                                                   const http_exchange_options& options);

/// "keel/<version>": ctx.fetch's User-Agent.
[[nodiscard]] std::string_view user_agent() noexcept;

/// "30s", "1500ms": a duration as error messages say it.
[[nodiscard]] std::string duration_text(std::chrono::milliseconds d);

}  // namespace keel::detail
