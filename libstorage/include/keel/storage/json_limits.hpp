// Limits on JSON payloads, checked before any SQL and before any recursive copy of the value.
#pragma once

#include <boost/json/value.hpp>
#include <cstddef>
#include <string>
#include <string_view>

#include "keel/common/result.hpp"

namespace keel::storage {

/// How large and how deep a JSON payload (a run's input or output, a step's output or error) may be.
struct json_limits {
  /// Serialized size in bytes.
  std::size_t max_bytes = 1024 * 1024;
  /// Nesting depth: a scalar is 0, `[]` and `{}` are 1, `[[1]]` is 2.
  std::size_t max_depth = 512;
};

/// Checks `v` without recursion (a value nested a million deep is measured, not followed down the stack):
/// its serialized size, its depth, and that every string and key is valid UTF-8 without NUL characters
/// (PostgreSQL's jsonb refuses both). Errors: errc::payload_too_large, errc::payload_too_deep,
/// errc::invalid_argument; `why`, when given, receives what was wrong and where (a JSON pointer).
result<void> check_json(const boost::json::value& v, const json_limits& limits, std::string* why = nullptr);

/// `text` with every invalid UTF-8 sequence and every NUL replaced by U+FFFD: safe for any text column.
[[nodiscard]] std::string valid_utf8(std::string_view text);

/// True when `text` is valid UTF-8 without NUL characters.
[[nodiscard]] bool is_valid_utf8(std::string_view text) noexcept;

/// Destroys `v` without recursion. Destroying a value nested deeper than the stack allows would overflow it;
/// use this for values that failed check_json with payload_too_deep.
void destroy_deep(boost::json::value&& v) noexcept;

}  // namespace keel::storage
