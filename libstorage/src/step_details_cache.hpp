// The details of steps this process is checkpointing, kept briefly for the run log's follower: a followed
// log row refers to its steps' rows (keel.steps) rather than copying them, and joining them back costs the
// database more than reading the log itself.
#pragma once

#include <atomic>
#include <boost/json/object.hpp>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "keel/storage/records.hpp"

namespace keel::storage::detail {

/// A step row is written once per (run, seq, epoch) and never changed (a rewind or retention that removes it
/// copies its details into the log first), so a checkpoint's own record is what the log row refers to once
/// it committed. Entries are put before the write is sent (so the follower, woken by its commit, finds
/// them), dropped when the write fails, and taken by the follower; untaken ones expire within seconds.
/// Only kept while someone follows the log, within a budget of entries and bytes. Thread-safe.
class step_details_cache {
 public:
  /// The follower read the log: keep details for a while.
  void followed();
  /// Keeps `step` of run `run` at `epoch`, with its name and branch as stored (`name`, `branch`), if someone
  /// follows the log and there is room for `bytes` (the record's size as written). Its output and error
  /// are kept as the database hands them back (jsonb stores numbers as decimals: a whole double reads back
  /// as an integer).
  void put(std::string_view run, std::int64_t epoch, const step_record& step, std::string_view name,
           const std::optional<std::string>& branch, std::size_t bytes);
  /// Forgets a write that did not commit.
  void drop(std::string_view run, std::int64_t epoch, int seq);
  /// The step's details as the log shows them (see keel.run_log: seq, name, output, error, attempts,
  /// started_at, duration_us, branch, branch_seq), taken out of the cache.
  std::optional<boost::json::object> take(std::string_view run, std::int64_t epoch, int seq);

 private:
  using steady = std::chrono::steady_clock;
  struct entry {
    boost::json::object details;
    std::size_t bytes = 0;
  };
  struct generation {
    std::unordered_map<std::string, entry> entries;
    std::size_t bytes = 0;
  };
  static std::string key(std::string_view run, std::int64_t epoch, int seq);
  void rotate_locked(steady::time_point now);
  std::optional<boost::json::object> erase_locked(const std::string& k);

  /// Until when to keep details (steady clock ticks): read without the lock on every checkpoint.
  std::atomic<steady::rep> followed_until_{0};
  /// Whether a generation may hold entries (cleared once nobody follows).
  std::atomic<bool> holding_{false};
  std::mutex m_;
  steady::time_point rotated_at_{};
  /// Two generations: entries live one to two rotation periods.
  generation current_, previous_;
};

/// A checkpointed step's details as the log shows them (keel.run_log; read_log builds the same in SQL):
/// seq, name, output, error, attempts, started_at, duration_us, and branch and branch_seq inside a branch.
boost::json::object step_document(std::int64_t seq, std::string_view name, boost::json::value output,
                                  boost::json::value error, std::int64_t attempts, std::int64_t started_us,
                                  std::int64_t finished_us, std::optional<std::string_view> branch,
                                  std::int64_t branch_seq);

/// `v` as it reads back from a jsonb column: whole doubles become integers (int64, or uint64 past its
/// range), unsigned integers within int64's range become int64. Other values are unchanged. Iterative:
/// payloads may nest as deep as the limits allow.
void as_jsonb_reads_back(boost::json::value& v);

}  // namespace keel::storage::detail
