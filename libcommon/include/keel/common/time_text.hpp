// Times as the API writes and reads them: RFC 3339, UTC.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace keel {

/// "2026-11-26T09:00:00.123456Z".
std::string rfc3339(std::chrono::system_clock::time_point t);

/// "2026-11-26T09:00:00Z", with optional fractional seconds and a "Z" or "+hh:mm" / "-hh:mm" offset;
/// nullopt for anything else.
std::optional<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view s);

}  // namespace keel
