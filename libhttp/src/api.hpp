// The REST API: one request in, one response out (the connection handling is server.cpp's).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/json/value.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "keel/common/result.hpp"

namespace keel {
class engine;
}

namespace keel::http::detail {

using request = boost::beast::http::request<boost::beast::http::string_body>;
using response = boost::beast::http::response<boost::beast::http::string_body>;

/// Routes `req` to the engine and answers it; never throws (an unexpected exception is a 500).
boost::asio::awaitable<response> handle(engine& e, const request& req);

/// `body` as JSON with `status`.
response json_response(boost::beast::http::status status, const boost::json::value& body);
/// `{"error":{"code":…,"message":…}}` with `status`.
response error_response(boost::beast::http::status status, std::string_view code, std::string_view message);
/// The answer to an engine or storage error (errors.cpp's table).
response from_error(error_code ec);
/// 405 naming the method the path takes.
response method_not_allowed(boost::beast::http::verb allowed);
/// 405 naming the methods the path takes (`Allow: GET, PUT, DELETE`).
response method_not_allowed(const std::vector<boost::beast::http::verb>& allowed);

/// A request the API cannot take (answered 400): the text says what is wrong; the code is invalid_request
/// unless a more precise one applies (invalid_cron_expression, unknown_time_zone).
struct bad_request {
  std::string message;
  std::string code = "invalid_request";
};

/// A known path asked with another method than its own (answered 405).
struct wrong_method {
  std::vector<boost::beast::http::verb> allowed;
};

/// Throws wrong_method unless `method` is `allowed` (HEAD counts as GET).
void allow_only(boost::beast::http::verb method, boost::beast::http::verb allowed);
/// Throws wrong_method unless `method` is one of `allowed` (HEAD counts as GET).
void allow_only(boost::beast::http::verb method, const std::vector<boost::beast::http::verb>& allowed);

/// A request target, percent-decoded.
struct target {
  std::vector<std::string> path;  ///< its segments
  std::vector<std::pair<std::string, std::string>> query;
  std::string decoded_path;
};
/// Throws bad_request for a target that is not a valid origin-form path (or that decodes to a NUL).
target parse_target(std::string_view text);

}  // namespace keel::http::detail
