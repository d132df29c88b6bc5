#include "step_details_cache.hpp"

#include "store_impl.hpp"

namespace keel::storage::detail {
namespace {
/// How long details are kept after the follower's last read.
constexpr std::chrono::seconds k_follow_grace{10};
/// How long an untaken entry lives, at least (and at most twice as long): a follower further behind reads
/// the step rows instead.
constexpr std::chrono::seconds k_rotation{5};
/// Most entries per generation: memory stays bounded however fast steps complete.
constexpr std::size_t k_max_entries = 200'000;
}  // namespace

std::string step_details_cache::key(std::string_view run, std::int64_t epoch, int seq) {
  std::string k;
  k.reserve(run.size() + 24);
  k.append(run).push_back('/');
  k.append(std::to_string(epoch)).push_back('/');
  k.append(std::to_string(seq));
  return k;
}

void step_details_cache::rotate_locked(steady::time_point now) {
  if (now - rotated_at_ < k_rotation) return;
  previous_ = std::move(current_);
  current_ = map{};
  rotated_at_ = now;
}

void step_details_cache::followed() {
  std::lock_guard lock(m_);
  followed_until_ = steady::now() + k_follow_grace;
}

void step_details_cache::put(std::string_view run, std::int64_t epoch, const step_record& step,
                             std::string_view name) {
  const auto now = steady::now();
  {
    std::lock_guard lock(m_);
    if (now >= followed_until_) {
      if (!current_.empty() || !previous_.empty()) current_ = previous_ = map{};
      return;
    }
    rotate_locked(now);
    if (current_.size() >= k_max_entries) return;
  }
  // Built outside the lock: the output is copied.
  boost::json::object d;
  d["seq"] = step.seq;
  d["name"] = name;
  d["output"] = step.output;
  d["error"] = step.error;
  d["attempts"] = step.attempts;
  const auto started = to_micros(step.started_at);
  d["started_at"] = started;
  d["duration_us"] = to_micros(step.finished_at) - started;
  if (step.branch) {
    d["branch"] = *step.branch;
    d["branch_seq"] = step.branch_seq;
  }
  auto k = key(run, epoch, step.seq);
  std::lock_guard lock(m_);
  current_.insert_or_assign(std::move(k), std::move(d));
}

void step_details_cache::drop(std::string_view run, std::int64_t epoch, int seq) {
  const auto k = key(run, epoch, seq);
  std::lock_guard lock(m_);
  current_.erase(k);
  previous_.erase(k);
}

std::optional<boost::json::object> step_details_cache::take(std::string_view run, std::int64_t epoch,
                                                            int seq) {
  const auto k = key(run, epoch, seq);
  std::lock_guard lock(m_);
  for (auto* m : {&current_, &previous_}) {
    if (auto it = m->find(k); it != m->end()) {
      auto d = std::move(it->second);
      m->erase(it);
      return d;
    }
  }
  return std::nullopt;
}

}  // namespace keel::storage::detail
