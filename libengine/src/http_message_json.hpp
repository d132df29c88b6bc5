// HTTP messages as the engine records them (ctx.fetch's responses, webhooks' requests and answers): header
// fields as [[name, value], ...] in order, and a body as text, or as base64 when it is not UTF-8 without NULs
// (which jsonb cannot hold).
#pragma once

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "keel/engine/fetch.hpp"

namespace keel::detail {

/// ASCII case-insensitive equality, as header names compare.
[[nodiscard]] bool iequals(std::string_view a, std::string_view b) noexcept;
/// The first field named `name` (case-insensitive), if any.
[[nodiscard]] std::optional<std::string_view> find_field(const http_fields& fields, std::string_view name);

/// Fields as JSON; names or values that are not UTF-8 (obsolete octets) get U+FFFD in place of bad bytes.
[[nodiscard]] boost::json::array fields_json(const http_fields& fields);
/// Throws (boost::system::system_error, std::out_of_range) for JSON that fields_json did not make.
[[nodiscard]] http_fields fields_of(const boost::json::value& v);

/// Sets `o["body"]` (text) or `o["body_base64"]`.
void put_body(boost::json::object& o, const std::string& body);
/// The body put_body stored (empty when none); throws for a malformed one.
[[nodiscard]] std::string body_of(const boost::json::object& o);

/// `body` parsed as JSON; nullopt when it does not parse.
[[nodiscard]] std::optional<boost::json::value> parse_json_body(const std::string& body);

}  // namespace keel::detail
