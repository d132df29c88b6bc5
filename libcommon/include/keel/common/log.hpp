// Minimal leveled logging to stderr, safe from any thread.
#pragma once

#include <functional>
#include <string_view>

namespace keel::log {

enum class level { debug, info, warn, error };

/// Lines below this level are dropped. Default: info, or KEEL_LOG_LEVEL (debug|info|warn|error) if set.
void set_level(level l) noexcept;
[[nodiscard]] bool enabled(level l) noexcept;

/// Where log lines go instead of stderr (e.g. the service's own logger). Called from any thread, one line at
/// a time; must not block for long. An empty function restores stderr.
using sink = std::function<void(level, std::string_view component, std::string_view message)>;
void set_sink(sink s);

/// Writes one line "<time> <level> <component>: <message>" atomically with respect to other log lines (to the
/// sink, if one is set).
void write(level l, std::string_view component, std::string_view message);

inline void debug(std::string_view c, std::string_view m) {
  if (enabled(level::debug)) write(level::debug, c, m);
}
inline void info(std::string_view c, std::string_view m) {
  write(level::info, c, m);
}
inline void warn(std::string_view c, std::string_view m) {
  write(level::warn, c, m);
}
inline void error(std::string_view c, std::string_view m) {
  write(level::error, c, m);
}

}  // namespace keel::log
