// Who may call the API (API keys) and which browser origins may read its answers (CORS), decided before a
// request is routed.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api.hpp"

namespace keel::http::detail {

struct access_policy {
  /// Bearer keys any of which authorises a request; none configured: every request is authorised.
  std::vector<std::string> api_keys;
  /// Origins whose pages may call the API from a browser ("*": any).
  std::vector<std::string> cors_origins;
};

/// True when `req` may go on: keys are configured only for some paths (hooks are authorised by their token,
/// health and readiness probes by nobody), and the presented key is compared in constant time.
bool authorised(const access_policy& policy, const request& req);
/// 401 with a Bearer challenge.
response unauthorised();

/// True when `req` would change something (any method but GET, HEAD and OPTIONS) and comes from a web page
/// of an origin that is neither allowed (cors_origins) nor this server's own (its Origin names the Host it
/// was sent to). Without API keys, a page on any site could otherwise make a visitor's browser start or
/// cancel runs on a keeld it can reach (localhost): a simple cross-site POST needs no preflight. Hooks are
/// exempt (their token authorises them).
bool foreign_origin(const access_policy& policy, const request& req);
/// 403 forbidden_origin.
response forbidden_origin();

/// The value of Access-Control-Allow-Origin for `req` (empty: the request has no allowed Origin).
std::string allowed_origin(const access_policy& policy, const request& req);
/// The answer to a CORS preflight (an OPTIONS request naming Access-Control-Request-Method); nullopt when
/// `req` is not one.
std::optional<response> preflight(const access_policy& policy, const request& req);
/// Marks `res` as readable by pages from `origin` (nothing when it is empty).
template <class Response>
void allow_origin(Response& res, std::string_view origin) {
  if (origin.empty()) return;
  res.set(boost::beast::http::field::access_control_allow_origin, origin);
  res.set(boost::beast::http::field::vary, "Origin");
}

/// Equal contents, in a time that depends only on `presented`'s length.
bool constant_time_equal(std::string_view presented, std::string_view expected) noexcept;

}  // namespace keel::http::detail
