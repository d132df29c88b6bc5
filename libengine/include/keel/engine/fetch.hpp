// HTTP call steps (ctx.fetch): an outbound HTTP/1.1 request made as a checkpointed step.
#pragma once

#include <boost/json/value.hpp>
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keel {

/// Header fields in the order given or received; names compare case-insensitively.
using http_fields = std::vector<std::pair<std::string, std::string>>;

/// What ctx.fetch sends.
struct fetch_request {
  std::string method = "GET";
  /// `https://host[:port]/path?query` (or `http://`).
  std::string url;
  http_fields headers;
  std::string body;
  /// What the step is called after `keel.fetch:` (its record, the run's history, errors and logs show it).
  /// Empty: `<METHOD> <scheme://host/path>` — name it when the path holds a secret (a bot token, a Slack
  /// incoming-webhook URL). Must be the same on every execution, like a step's name.
  std::string name;
  /// Each attempt (connect, TLS handshake, request and response) ends after this long, and counts as a
  /// connection error.
  std::chrono::milliseconds timeout{30'000};
  /// A response body longer than this fails the attempt (response_too_large): it must fit in the step's
  /// record.
  std::size_t max_response_bytes = 512 * 1024;
};

/// What ctx.fetch returns, on the first execution and, from the step's record, on every replay.
struct fetch_response {
  unsigned status = 0;
  http_fields headers;
  /// The body's bytes, as received.
  std::string body;

  /// The first header named `name` (case-insensitive), if any.
  [[nodiscard]] std::optional<std::string_view> header(std::string_view name) const;
  /// The body parsed as JSON; nullopt when it does not parse.
  [[nodiscard]] std::optional<boost::json::value> json() const;
};

}  // namespace keel
