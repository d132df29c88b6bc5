#include "step_details_cache.hpp"

#include <cmath>
#include <limits>
#include <vector>

#include "store_impl.hpp"

namespace keel::storage::detail {
namespace {
/// How long details are kept after the follower's last read.
constexpr std::chrono::seconds k_follow_grace{10};
/// How long an untaken entry lives, at least (and at most twice as long): a follower further behind reads
/// the step rows instead.
constexpr std::chrono::seconds k_rotation{5};
/// Most entries and bytes (records as written) per generation: memory stays bounded however fast steps
/// complete and however far the follower falls behind.
constexpr std::size_t k_max_entries = 200'000;
constexpr std::size_t k_max_bytes = 64u << 20;
}  // namespace

void as_jsonb_reads_back(boost::json::value& root) {
  std::vector<boost::json::value*> todo{&root};
  while (!todo.empty()) {
    auto* v = todo.back();
    todo.pop_back();
    switch (v->kind()) {
      case boost::json::kind::double_: {
        const double d = v->get_double();
        // jsonb keeps the decimal; Boost.JSON reads a decimal without fraction or exponent as an integer.
        if (std::isfinite(d) && d == std::trunc(d)) {
          if (d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
            *v = static_cast<std::int64_t>(d);
          } else if (d >= 0 && d < 18446744073709551616.0) {
            *v = static_cast<std::uint64_t>(d);
          }
        }
        break;
      }
      case boost::json::kind::uint64:
        if (v->get_uint64() <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
          *v = static_cast<std::int64_t>(v->get_uint64());
        break;
      case boost::json::kind::array:
        for (auto& e : v->get_array())
          todo.push_back(&e);
        break;
      case boost::json::kind::object:
        for (auto& kv : v->get_object())
          todo.push_back(&kv.value());
        break;
      default:
        break;
    }
  }
}

boost::json::object step_document(std::int64_t seq, std::string_view name, boost::json::value output,
                                  boost::json::value error, std::int64_t attempts, std::int64_t started_us,
                                  std::int64_t finished_us, std::optional<std::string_view> branch,
                                  std::int64_t branch_seq) {
  boost::json::object d;
  d["seq"] = seq;
  d["name"] = name;
  d["output"] = std::move(output);
  d["error"] = std::move(error);
  d["attempts"] = attempts;
  d["started_at"] = started_us;
  d["duration_us"] = finished_us - started_us;
  if (branch) {
    d["branch"] = *branch;
    d["branch_seq"] = branch_seq;
  }
  return d;
}

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
  current_ = generation{};
  rotated_at_ = now;
}

void step_details_cache::followed() {
  followed_until_.store((steady::now() + k_follow_grace).time_since_epoch().count(),
                        std::memory_order_relaxed);
}

void step_details_cache::put(std::string_view run, std::int64_t epoch, const step_record& step,
                             std::string_view name, const std::optional<std::string>& branch,
                             std::size_t bytes) {
  const auto now = steady::now();
  if (now.time_since_epoch().count() >= followed_until_.load(std::memory_order_relaxed)) {
    // Nobody follows: nothing to keep, and what was kept goes (once).
    if (holding_.exchange(false, std::memory_order_relaxed)) {
      std::lock_guard lock(m_);
      current_ = previous_ = generation{};
    }
    return;
  }
  {
    std::lock_guard lock(m_);
    rotate_locked(now);
    if (current_.entries.size() >= k_max_entries || current_.bytes + bytes > k_max_bytes) return;
  }
  // Built outside the lock: the output is copied.
  auto output = step.output;
  as_jsonb_reads_back(output);
  auto error = step.error;
  as_jsonb_reads_back(error);
  auto d = step_document(step.seq, name, std::move(output), std::move(error), step.attempts,
                         to_micros(step.started_at), to_micros(step.finished_at),
                         branch ? std::optional<std::string_view>(*branch) : std::nullopt, step.branch_seq);
  auto k = key(run, epoch, step.seq);
  std::lock_guard lock(m_);
  (void)erase_locked(k);
  current_.bytes += bytes;
  current_.entries.insert_or_assign(std::move(k), entry{std::move(d), bytes});
  holding_.store(true, std::memory_order_relaxed);
}

std::optional<boost::json::object> step_details_cache::erase_locked(const std::string& k) {
  for (auto* g : {&current_, &previous_}) {
    if (auto it = g->entries.find(k); it != g->entries.end()) {
      auto d = std::move(it->second.details);
      g->bytes -= it->second.bytes;
      g->entries.erase(it);
      return d;
    }
  }
  return std::nullopt;
}

void step_details_cache::drop(std::string_view run, std::int64_t epoch, int seq) {
  const auto k = key(run, epoch, seq);
  std::lock_guard lock(m_);
  (void)erase_locked(k);
}

std::optional<boost::json::object> step_details_cache::take(std::string_view run, std::int64_t epoch,
                                                            int seq) {
  const auto k = key(run, epoch, seq);
  std::lock_guard lock(m_);
  return erase_locked(k);
}

}  // namespace keel::storage::detail
