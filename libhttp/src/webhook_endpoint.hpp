// The endpoint third parties call a webhook at (ctx.create_webhook).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <string>

#include "api.hpp"

namespace keel::http::detail {

/// Delivers `req` (any method) to the webhook with `token` and answers with what its run answers.
boost::asio::awaitable<response> deliver_webhook(engine& e, const request& req, const std::string& token);

}  // namespace keel::http::detail
