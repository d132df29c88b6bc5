// Every error the API reports: its stable code and HTTP status, in one table (docs/http.md lists it).
#pragma once

#include <boost/beast/http/status.hpp>
#include <string>

#include "keel/common/result.hpp"

namespace keel::http::detail {

struct http_error {
  boost::beast::http::status status;
  std::string code;
};

/// The status and code for an engine or storage error.
http_error to_http(error_code ec);

}  // namespace keel::http::detail
