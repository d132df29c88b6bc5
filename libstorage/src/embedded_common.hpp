// What the embedded server's pieces share: how they report a failure, and small text helpers.
#pragma once

#include <cerrno>
#include <string>
#include <string_view>
#include <system_error>

#include "keel/common/log.hpp"
#include "keel/common/result.hpp"
#include "keel/storage/error.hpp"

namespace keel::storage::detail {

/// The log component of everything the embedded server does.
inline constexpr std::string_view k_embedded_component = "embedded_postgres";

/// Logs `message` (the detail an operator needs) and returns the code the caller passes up.
inline error_code server_failed(const std::string& message) {
  log::error(k_embedded_component, message);
  return errc::server_failed;
}

inline std::string errno_text(int e) {
  return std::error_code(e, std::generic_category()).message();
}

/// `s` without leading spaces and trailing spaces and line ends.
inline std::string trim(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r' || s.back() == '\n'))
    s.pop_back();
  std::size_t start = s.find_first_not_of(' ');
  return start == std::string::npos ? std::string{} : s.substr(start);
}

}  // namespace keel::storage::detail
