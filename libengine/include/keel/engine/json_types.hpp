// JSON forms of the standard types workflow data uses that Boost.JSON leaves out: time points (RFC 3339 text,
// UTC, microseconds), durations (ISO 8601 "PT1.5S") and bytes (std::vector<std::byte> as base64). Boost.JSON
// itself converts described structs and enums (BOOST_DESCRIBE_STRUCT / BOOST_DESCRIBE_ENUM: enums by
// name), std::optional, std::variant, containers and maps. Included by every Keel header that converts
// workflow data, so inputs, outputs, step results and event payloads of these types just work.
#pragma once

#include <boost/json/conversion.hpp>
#include <boost/json/error.hpp>
#include <boost/json/value.hpp>
#include <boost/system/error_category.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel {

/// Standard base64 (RFC 4648 §4, padded).
[[nodiscard]] std::string to_base64(const std::vector<std::byte>& bytes);
/// nullopt for anything but standard, padded base64.
[[nodiscard]] std::optional<std::vector<std::byte>> from_base64(std::string_view text);

/// "PT0.25S", "PT604800S": the duration in seconds, to the microsecond.
[[nodiscard]] std::string iso8601_duration(std::chrono::microseconds d);
/// "P7D", "PT1H30M", "P1DT0.5S", "-PT2S" (days, hours, minutes, seconds; no years or months, whose length
/// varies); nullopt for anything else or finer than a microsecond.
[[nodiscard]] std::optional<std::chrono::microseconds> parse_iso8601_duration(std::string_view text);

/// Why a JSON value did not convert to one of these types.
enum class json_type_error { not_a_time = 1, not_a_duration, not_base64 };
const boost::system::error_category& json_type_category() noexcept;
inline boost::system::error_code make_error_code(json_type_error e) noexcept {
  return {static_cast<int>(e), json_type_category()};
}

namespace detail {
[[nodiscard]] std::optional<std::chrono::system_clock::time_point> json_time(const boost::json::value& v);
[[nodiscard]] boost::json::value json_time_text(std::chrono::system_clock::time_point t);
}  // namespace detail

}  // namespace keel

// Boost.JSON finds conversions by argument-dependent lookup on its tag types, whose namespace is this one:
// the standard types' own namespace is not ours to add to.
namespace boost::json {

template <class Duration>
void tag_invoke(value_from_tag, value& jv,
                const std::chrono::time_point<std::chrono::system_clock, Duration>& t) {
  jv = keel::detail::json_time_text(std::chrono::time_point_cast<std::chrono::system_clock::duration>(t));
}

template <class Duration>
boost::system::result<std::chrono::time_point<std::chrono::system_clock, Duration>> tag_invoke(
    try_value_to_tag<std::chrono::time_point<std::chrono::system_clock, Duration>>, const value& jv) {
  auto t = keel::detail::json_time(jv);
  if (!t) return keel::make_error_code(keel::json_type_error::not_a_time);
  return std::chrono::time_point_cast<Duration>(*t);
}

template <class Rep, class Period>
void tag_invoke(value_from_tag, value& jv, const std::chrono::duration<Rep, Period>& d) {
  jv = keel::iso8601_duration(std::chrono::duration_cast<std::chrono::microseconds>(d));
}

template <class Rep, class Period>
boost::system::result<std::chrono::duration<Rep, Period>> tag_invoke(
    try_value_to_tag<std::chrono::duration<Rep, Period>>, const value& jv) {
  const auto* s = jv.if_string();
  auto d = s != nullptr ? keel::parse_iso8601_duration(std::string_view(*s)) : std::nullopt;
  if (!d) return keel::make_error_code(keel::json_type_error::not_a_duration);
  return std::chrono::duration_cast<std::chrono::duration<Rep, Period>>(*d);
}

inline void tag_invoke(value_from_tag, value& jv, const std::vector<std::byte>& bytes) {
  jv = keel::to_base64(bytes);
}

inline boost::system::result<std::vector<std::byte>> tag_invoke(try_value_to_tag<std::vector<std::byte>>,
                                                                const value& jv) {
  const auto* s = jv.if_string();
  auto bytes = s != nullptr ? keel::from_base64(std::string_view(*s)) : std::nullopt;
  if (!bytes) return keel::make_error_code(keel::json_type_error::not_base64);
  return std::move(*bytes);
}

}  // namespace boost::json
