#include "keel/common/log.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>

namespace keel::log {
namespace {

level initial_level() {
  const char* env = std::getenv("KEEL_LOG_LEVEL");
  if (env == nullptr) return level::info;
  if (std::strcmp(env, "debug") == 0) return level::debug;
  if (std::strcmp(env, "warn") == 0) return level::warn;
  if (std::strcmp(env, "error") == 0) return level::error;
  return level::info;
}

std::atomic<level>& current() {
  static std::atomic<level> l{initial_level()};
  return l;
}

const char* name(level l) {
  switch (l) {
    case level::debug:
      return "DEBUG";
    case level::info:
      return "INFO";
    case level::warn:
      return "WARN";
    case level::error:
      return "ERROR";
  }
  return "?";
}

}  // namespace

void set_level(level l) noexcept {
  current().store(l, std::memory_order_relaxed);
}

bool enabled(level l) noexcept {
  return l >= current().load(std::memory_order_relaxed);
}

namespace {

std::mutex& sink_mutex() {
  static std::mutex m;
  return m;
}

sink& current_sink() {
  static sink s;
  return s;
}

}  // namespace

void set_sink(sink s) {
  std::lock_guard lock(sink_mutex());
  current_sink() = std::move(s);
}

void write(level l, std::string_view component, std::string_view message) {
  if (!enabled(l)) return;
  {
    std::lock_guard lock(sink_mutex());
    if (current_sink()) {
      current_sink()(l, component, message);
      return;
    }
  }
  auto now = std::chrono::system_clock::now();
  auto t = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
  std::string line;
  line.reserve(message.size() + component.size() + 32);
  line.append(stamp).append(".");
  char msbuf[8];
  std::snprintf(msbuf, sizeof msbuf, "%03d", static_cast<int>(ms));
  line.append(msbuf).append(" ").append(name(l)).append(" ").append(component).append(": ").append(message);
  line.push_back('\n');
  // One fwrite per line keeps lines whole when several threads log at once.
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace keel::log
