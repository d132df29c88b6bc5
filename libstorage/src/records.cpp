#include "keel/storage/records.hpp"

#include <array>
#include <utility>

namespace keel::storage {
namespace {

constexpr std::array<std::pair<run_status, std::string_view>, 7> k_names{{
    {run_status::queued, "queued"},
    {run_status::running, "running"},
    {run_status::sleeping, "sleeping"},
    {run_status::waiting, "waiting"},
    {run_status::completed, "completed"},
    {run_status::failed, "failed"},
    {run_status::cancelled, "cancelled"},
}};

}  // namespace

std::string_view to_string(run_status s) noexcept {
  for (const auto& [v, n] : k_names) {
    if (v == s) return n;
  }
  return "unknown";
}

std::optional<run_status> run_status_from(std::string_view s) noexcept {
  for (const auto& [v, n] : k_names) {
    if (n == s) return v;
  }
  return std::nullopt;
}

std::string_view to_string(run_filter f) noexcept {
  return f == run_filter::dead_lettered ? "dead_lettered" : "unclaimable";
}

std::optional<run_filter> run_filter_from(std::string_view s) noexcept {
  if (s == "dead_lettered") return run_filter::dead_lettered;
  if (s == "unclaimable") return run_filter::unclaimable;
  return std::nullopt;
}

run_status status_of(run_filter f) noexcept {
  return f == run_filter::dead_lettered ? run_status::failed : run_status::queued;
}

}  // namespace keel::storage
