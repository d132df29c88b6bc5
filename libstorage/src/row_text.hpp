// Rows for the batched statements, written as JSON text on the caller's thread (no DOM, no copy of the
// payload), and the parsing of what PostgreSQL hands back.
#pragma once

#include <libpq-fe.h>

#include <boost/json/value.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace keel::storage::detail {

/// Builds one JSON object. Keys are literals; string values must be valid UTF-8 (the store checks or
/// repairs them first).
class row_text {
 public:
  row_text() {
    text_.reserve(256);  // a checkpoint row of a small step fits: one allocation
    text_.push_back('{');
  }
  row_text& str(std::string_view key, std::string_view value);
  row_text& num(std::string_view key, std::int64_t value);
  row_text& null(std::string_view key);
  /// A JSON value, serialized in place.
  row_text& value(std::string_view key, const boost::json::value& v);
  /// A JSON array of `vs`, serialized in place.
  row_text& values(std::string_view key, const std::vector<boost::json::value>& vs);
  std::string finish() &&;

 private:
  void key(std::string_view k);
  void serialize(const boost::json::value& v);
  std::string text_;
};

/// Appends `s` as a JSON string literal.
void append_quoted(std::string& out, std::string_view s);

/// The string value of `"key":"..."` in a row built by row_text (for fields without escapes, like ids).
std::string_view row_field(std::string_view row, std::string_view key);

/// Parses JSON that PostgreSQL produced from a jsonb column. Never throws: what the store wrote was checked
/// against the limits, and the depth allowed here is far beyond them. Returns null (and logs) otherwise.
boost::json::value parse_stored_json(std::string_view text);

int to_int(std::string_view s);
std::int64_t to_int64(std::string_view s);

}  // namespace keel::storage::detail
