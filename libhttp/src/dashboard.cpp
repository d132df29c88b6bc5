#include "dashboard.hpp"

#include <boost/beast/http/field.hpp>

#include "web_assets.hpp"

namespace keel::http::detail {
namespace {

namespace beast_http = boost::beast::http;
using beast_http::status;

constexpr std::string_view k_ui_prefix = "/ui/";

/// The page runs its own scripts and styles only (no inline script, no eval, nothing from elsewhere) and
/// talks to this server only; nobody may frame it (clickjacking an Approve button).
constexpr std::string_view k_content_security_policy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

std::string_view path_of(std::string_view target_text) {
  return target_text.substr(0, target_text.find('?'));
}

/// Whether If-None-Match (a list of entity tags, or `*`) names `etag`. Weak tags compare by their opaque
/// part (RFC 9110 §13.1.2 uses the weak comparison for If-None-Match).
bool none_match(std::string_view header, std::string_view etag) {
  while (!header.empty()) {
    const auto comma = header.find(',');
    auto tag = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
    while (!tag.empty() && (tag.front() == ' ' || tag.front() == '\t'))
      tag.remove_prefix(1);
    while (!tag.empty() && (tag.back() == ' ' || tag.back() == '\t'))
      tag.remove_suffix(1);
    if (tag == "*") return true;
    if (tag.starts_with("W/")) tag.remove_prefix(2);
    if (tag == etag) return true;
  }
  return false;
}

}  // namespace

bool is_dashboard(std::string_view target_text) {
  const auto path = path_of(target_text);
  return path == "/" || path.starts_with(k_ui_prefix);
}

response dashboard(const request& req) {
  const auto method = req.method();
  if (method != beast_http::verb::get && method != beast_http::verb::head)
    return method_not_allowed(beast_http::verb::get);
  const auto path = path_of(req.target());
  const auto* asset =
      find_web_asset(path == "/" ? std::string_view("index.html") : path.substr(k_ui_prefix.size()));
  if (asset == nullptr)
    return error_response(status::not_found, "not_found", "no such file: " + std::string(path));
  const bool fresh = none_match(req[beast_http::field::if_none_match], asset->etag);
  response res{fresh ? status::not_modified : status::ok, 11};
  res.set(beast_http::field::etag, asset->etag);
  // Revalidated on every load (a 304 costs a round trip, no body), so a new keeld's page is used at once.
  res.set(beast_http::field::cache_control, "no-cache");
  res.set(beast_http::field::content_type, asset->content_type);
  res.set("Content-Security-Policy", k_content_security_policy);
  res.set("X-Content-Type-Options", "nosniff");
  res.set("X-Frame-Options", "DENY");
  // Hook links hold their token: never hand them to another site in a Referer.
  res.set("Referrer-Policy", "no-referrer");
  if (!fresh) res.body() = std::string(asset->body);
  return res;
}

}  // namespace keel::http::detail
