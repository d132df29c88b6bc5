// The REST API: one request in, one response out (the connection handling is server.cpp's).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <string_view>

namespace keel {
class engine;
}

namespace keel::http::detail {

using request = boost::beast::http::request<boost::beast::http::string_body>;
using response = boost::beast::http::response<boost::beast::http::string_body>;

/// Routes `req` to the engine and answers it; never throws (an unexpected exception is a 500).
boost::asio::awaitable<response> handle(engine& e, const request& req);

/// `{"error":{"code":…,"message":…}}` with `status`.
response error_response(boost::beast::http::status status, std::string_view code, std::string_view message);

}  // namespace keel::http::detail
