// GET /metrics: what the engine, its store and this server measure, in Prometheus' text format.
#pragma once

#include <boost/asio/awaitable.hpp>

#include "api.hpp"
#include "keel/http/server.hpp"

namespace keel::http::detail {

/// True for a request to /metrics (any method: the answer to another is 405).
bool is_metrics(const request& req);

/// The exposition (text format 0.0.4). Run counts come from the database; when it does not answer within
/// 2 s they are left out and keel_database_up is 0, and the rest is still served.
boost::asio::awaitable<response> metrics(engine& e, const request& req, server_stats http);

}  // namespace keel::http::detail
