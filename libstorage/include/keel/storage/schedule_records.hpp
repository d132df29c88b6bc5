// Cron schedules as stored (keel.schedules), and what firing one writes.
#pragma once

#include <boost/json/value.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keel/common/run_id.hpp"

namespace keel::storage {

/// Longest schedule name, in bytes: its runs' idempotency keys (`schedule:<name>@<instant>`) stay within
/// the 255 bytes of a key.
inline constexpr std::size_t k_max_schedule_name_bytes = 200;
/// Most missed occurrences a schedule replays (schedule_record::catch_up).
inline constexpr int k_max_catch_up = 1000;

/// A schedule's name is 1 to k_max_schedule_name_bytes of ASCII letters, digits and `-_.:` (it is a URL path
/// segment and part of its runs' idempotency keys).
[[nodiscard]] bool is_valid_schedule_name(std::string_view name) noexcept;

/// A cron schedule: runs of `workflow` with `input` at the firings of `cron` in `time_zone`.
struct schedule_record {
  std::string name;
  std::string workflow;
  /// The version its runs run; none: the newest the firing worker has registered.
  std::optional<int> version;
  /// A 5-field cron expression or an alias (keel::cron_schedule's syntax).
  std::string cron;
  /// An IANA time zone name.
  std::string time_zone = "UTC";
  boost::json::value input;
  int priority = 0;
  /// How many occurrences missed while no worker could fire them (the newest ones) are replayed when one
  /// can again; 0: none.
  int catch_up = 0;
  /// Paused schedules fire nothing; resuming one skips the occurrences it was paused for.
  bool paused = false;
  /// The next occurrence to fire (also kept while paused); none: the expression never fires again.
  std::optional<std::chrono::system_clock::time_point> next_fire_at;
  /// The newest occurrence fired, and its run.
  std::optional<std::chrono::system_clock::time_point> last_fired_at;
  std::optional<run_id> last_run;
  /// Grows with every change, firings included: the compare-and-set that makes each firing happen once.
  std::int64_t revision = 0;
  std::chrono::system_clock::time_point created_at;
  std::chrono::system_clock::time_point updated_at;
  /// The next firings after now (computed by the engine for callers; the store leaves it empty).
  std::vector<std::chrono::system_clock::time_point> upcoming;
};

/// What store::put_schedule did.
struct schedule_put {
  schedule_record schedule;
  bool created = false;
  /// false: the schedule existed with the same definition, and nothing was written.
  bool changed = false;
};

/// Which schedules store::list_schedules returns, by name.
struct schedule_query {
  /// Only this workflow's.
  std::optional<std::string> workflow;
  /// The page after this name (the previous page's `next`).
  std::optional<std::string> after;
  /// Schedules per page, 1 to 1,000.
  std::size_t limit = 100;
};

struct schedule_list {
  std::vector<schedule_record> schedules;
  std::optional<std::string> next;
};

/// Schedules whose next occurrence is due (store::due_schedules), by the database's clock.
struct schedules_due {
  std::chrono::system_clock::time_point now;
  /// Due now, oldest occurrence first.
  std::vector<schedule_record> due;
  /// The soonest occurrence after now among the others (none: nothing is scheduled).
  std::optional<std::chrono::system_clock::time_point> soonest;
};

/// One occurrence a firing starts a run for.
struct schedule_occurrence {
  run_id id;
  std::chrono::system_clock::time_point at;
};

/// A firing of schedule `name` (store::fire_schedule): applied only if the schedule is still at `revision`
/// with `expected_next` as its next occurrence, so that of several workers reading the same due schedule
/// exactly one fires it.
struct schedule_firing {
  std::string name;
  std::int64_t revision = 0;
  std::chrono::system_clock::time_point expected_next;
  /// Its next occurrence from now on; none: it never fires again.
  std::optional<std::chrono::system_clock::time_point> next;
  /// The version the runs run.
  int version = 1;
  /// The occurrences to run, oldest first (empty: all were missed and skipped).
  std::vector<schedule_occurrence> occurrences;
};

/// The idempotency key of the run a schedule starts for the occurrence at `at`:
/// `schedule:<name>@<UTC instant, RFC 3339 with microseconds>`.
[[nodiscard]] std::string schedule_run_key(std::string_view name, std::chrono::system_clock::time_point at);

}  // namespace keel::storage
