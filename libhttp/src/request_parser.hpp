// The request parser as the server sets it up for each request: one definition, so that the fuzzer
// (tests/fuzz) parses exactly as the server does.
#pragma once

#include <algorithm>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstdint>
#include <limits>

#include "keel/http/server.hpp"

namespace keel::http::detail {

using request_parser = boost::beast::http::request_parser<boost::beast::http::string_body>;

/// Sets `parser`'s limits from `o`, before its first byte: a longer request line and headers fail with
/// beast::http::error::header_limit, a larger body with error::body_limit (chunked bodies too).
inline void configure_parser(request_parser& parser, const server_options& o) {
  // Beast's header limit is 32-bit: a larger option means "no tighter than that", not its low bits.
  parser.header_limit(static_cast<std::uint32_t>(
      std::min<std::size_t>(o.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
  parser.body_limit(o.max_body_bytes);
}

}  // namespace keel::http::detail
