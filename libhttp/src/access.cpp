#include "access.hpp"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/field.hpp>

#include "dashboard.hpp"

namespace keel::http::detail {
namespace {

namespace beast_http = boost::beast::http;

/// Paths a request may take without a key: a (web)hook's token is its own authorisation (the third party that
/// calls it holds no API key), and probes come from the orchestrator. Anything else, an unknown or
/// unparseable path included, needs a key, so that a caller without one learns nothing, not even a 404.
bool open_path(std::string_view target_text) {
  if (is_dashboard(target_text)) return true;  // the page and its files: no data, it asks for the key
  try {
    const auto t = parse_target(target_text);
    const auto& p = t.path;
    if (p.size() == 1 && (p[0] == "healthz" || p[0] == "readyz")) return true;
    return p.size() >= 3 && p[0] == "v1" && (p[1] == "hooks" || p[1] == "webhooks");
  } catch (const bad_request&) {
    return false;
  }
}

constexpr std::string_view k_bearer = "Bearer ";

}  // namespace

bool constant_time_equal(std::string_view presented, std::string_view expected) noexcept {
  // The loop runs over the presented key, so its length is all the timing tells; the lengths' difference
  // enters the result, not the control flow.
  unsigned char diff = presented.size() == expected.size() ? 0 : 1;
  for (std::size_t i = 0; i < presented.size(); ++i) {
    const unsigned char e = expected.empty() ? 0 : static_cast<unsigned char>(expected[i % expected.size()]);
    diff |= static_cast<unsigned char>(presented[i]) ^ e;
  }
  return diff == 0;
}

bool authorised(const access_policy& policy, const request& req) {
  if (policy.api_keys.empty() || open_path(req.target())) return true;
  const auto header = req[beast_http::field::authorization];
  // The scheme's name is case-insensitive (RFC 9110); the key is not.
  if (header.size() <= k_bearer.size() || !boost::beast::iequals(header.substr(0, k_bearer.size()), k_bearer))
    return false;
  const auto presented = header.substr(k_bearer.size());
  bool match = false;
  for (const auto& key : policy.api_keys)  // every key, so that which one matched does not show in the time
    match |= constant_time_equal(presented, key);
  return match;
}

bool foreign_origin(const access_policy& policy, const request& req) {
  const auto method = req.method();
  if (method == beast_http::verb::get || method == beast_http::verb::head ||
      method == beast_http::verb::options)
    return false;
  const auto origin = req[beast_http::field::origin];
  if (origin.empty()) return false;  // not a browser's request (curl, a webhook sender, keel)
  if (!allowed_origin(policy, req).empty()) return false;
  // The page's own server: its origin's host and port are the Host the browser sent ("null" never is).
  const auto scheme_end = origin.find("://");
  if (scheme_end != std::string_view::npos && origin.substr(scheme_end + 3) == req[beast_http::field::host])
    return false;
  // A hook's token is its own authorisation, as for keys.
  try {
    const auto t = parse_target(req.target());
    if (t.path.size() >= 3 && t.path[0] == "v1" && (t.path[1] == "hooks" || t.path[1] == "webhooks"))
      return false;
  } catch (const bad_request&) {
  }
  return true;
}

response forbidden_origin() {
  return error_response(beast_http::status::forbidden, "forbidden_origin",
                        "a page from this origin may not change anything here: start keeld with "
                        "--cors-origin ORIGIN to let it");
}

response unauthorised() {
  auto res = error_response(beast_http::status::unauthorized, "unauthorized",
                            "this server needs an API key: send 'Authorization: Bearer <key>'");
  res.set(beast_http::field::www_authenticate, "Bearer");
  return res;
}

std::string allowed_origin(const access_policy& policy, const request& req) {
  const auto origin = req[beast_http::field::origin];
  if (origin.empty()) return {};
  for (const auto& allowed : policy.cors_origins) {
    if (allowed == "*" || allowed == origin) return std::string(origin);
  }
  return {};
}

std::optional<response> preflight(const access_policy& policy, const request& req) {
  if (req.method() != beast_http::verb::options ||
      req[beast_http::field::access_control_request_method].empty())
    return std::nullopt;
  const auto origin = allowed_origin(policy, req);
  // A preflight from an origin that is not allowed gets no CORS headers: the browser then refuses the call.
  response res{beast_http::status::no_content, req.version()};
  if (!origin.empty()) {
    allow_origin(res, origin);
    res.set(beast_http::field::access_control_allow_methods, "GET, POST, PUT, DELETE, HEAD, OPTIONS");
    res.set(beast_http::field::access_control_allow_headers,
            "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, Keel-Signature");
    res.set(beast_http::field::access_control_max_age, "600");
  }
  return res;
}

}  // namespace keel::http::detail
