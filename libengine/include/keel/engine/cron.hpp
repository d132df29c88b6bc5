// Cron schedules: 5-field cron expressions and their firings in an IANA time zone.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keel/common/result.hpp"

// The time zone lives in Howard Hinnant's date library; its header (date/tz.h) stays out of this one.
namespace date {
class time_zone;
}  // namespace date

namespace keel {

/// Why cron_schedule::parse refused its arguments.
struct cron_error {
  /// errc::invalid_cron_expression or errc::unknown_time_zone.
  error_code code;
  /// Exactly what is wrong, for people: "minute field '61' is out of range 0-59", "unknown time zone
  /// 'Mars/Base'". Parts of the input it quotes have control and non-ASCII bytes written as \xNN.
  std::string message;
};

/// What `value()` of a cron_schedule::parse result throws on an error: boost::system::system_error carrying
/// the code and the message.
[[noreturn]] void throw_exception_from_error(const cron_error& e, const boost::source_location& loc);

/// A 5-field cron expression (minute hour day-of-month month day-of-week) read in an IANA time zone, and the
/// instants at which it fires. An immutable value: copy it freely and use it from any thread.
///
/// Syntax: per field `*`, numbers, lists `a,b`, ranges `a-b`, steps `*/n`, `a-b/n` and `a/n` (a to the end of
/// the field's range); month names jan-dec and day names sun-sat (case-insensitive, also in ranges); day of
/// week 0 and 7 are both Sunday. Aliases: @yearly and @annually (`0 0 1 1 *`), @monthly (`0 0 1 * *`),
/// @weekly (`0 0 * * 0`), @daily and @midnight (`0 0 * * *`), @hourly (`0 * * * *`). Days, as Vixie cron
/// and cronie: when both day-of-month and day-of-week are restricted, a day matches if either matches
/// (`0 0 1,15 * mon`: the 1st, the 15th and every Monday); a field written starting with `*` (`*`, `*/2`)
/// counts as unrestricted, and then a day must match both (`0 0 */2 * mon`: Mondays on odd days).
///
/// Time zones: the fields are local wall-clock times in the schedule's zone (`0 9 * * *` in America/New_York
/// fires at 09:00 there: 14:00 UTC in winter, 13:00 UTC in summer). Daylight-saving changes, as cronie:
/// - A schedule whose minute or hour field is written starting with `*` (`*/15 * * * *`, `0 * * * *`,
///   `* 1 * * *`) follows elapsed time: it fires at every instant whose local reading matches. In the hour
///   repeated when clocks go back it fires in both passes; local times skipped when clocks go forward do not
///   occur, so it does not fire for them (`30 * * * *` fires 01:30 EST, then 03:30 EDT, an hour later).
/// - Any other schedule fires at fixed wall-clock times: once per matching local time. A repeated local time
///   fires at its first occurrence only (01:30 on 2026-11-01 in New York: 05:30 UTC, EDT). A local time that
///   does not exist fires at the instant the clocks jump (02:30 on 2026-03-08 in New York: 07:00 UTC, 03:00
///   EDT), once, however many nonexistent times of that gap match.
/// The zone's rules come from the system's tzdata (Debian's `tzdata`), read once; nothing is downloaded.
/// Debian's zone files list transitions up to 2037: later instants keep the offset in force after the last
/// one listed (standard time for zones with daylight saving).
class cron_schedule {
 public:
  /// Longest expression parse accepts, in bytes.
  static constexpr std::size_t k_max_expression_length = 256;
  /// Longest time zone name parse accepts, in bytes (IANA names are shorter than 40).
  static constexpr std::size_t k_max_time_zone_length = 128;
  /// next_after looks this far past its argument (in local years) before giving up: "0 0 30 2 *" never fires.
  static constexpr int k_horizon_years = 100;

  /// Parses `expression` (leading and trailing blanks ignored; fields separated by spaces or tabs) for
  /// `time_zone`, an IANA name such as "America/New_York" or "UTC". Errors: errc::invalid_cron_expression
  /// (empty, longer than k_max_expression_length, not 5 fields, a value out of range, a reversed range, a
  /// step of 0, an unknown name or alias, anything else), errc::unknown_time_zone (empty, not in the system's
  /// time zone database, or that database cannot be read); the cron_error's message says which and where.
  static boost::system::result<cron_schedule, cron_error> parse(std::string_view expression,
                                                                std::string_view time_zone);

  /// The first firing strictly after `t`; nullopt when there is none within k_horizon_years of `t`, or the
  /// next one lies beyond what a system_clock::time_point holds (the year 2262).
  [[nodiscard]] std::optional<std::chrono::system_clock::time_point> next_after(
      std::chrono::system_clock::time_point t) const;

  /// The next `n` firings after `t` in order (fewer when next_after runs out).
  [[nodiscard]] std::vector<std::chrono::system_clock::time_point> next_n(
      std::chrono::system_clock::time_point t, std::size_t n) const;

  /// The expression as given to parse, without its leading and trailing blanks.
  [[nodiscard]] std::string_view expression() const noexcept { return expression_; }
  /// The time zone's name as given to parse.
  [[nodiscard]] std::string_view time_zone() const noexcept { return time_zone_; }

 private:
  cron_schedule() = default;

  std::string expression_;
  std::string time_zone_;
  /// An entry of the process-wide tzdb, which lives until the process ends.
  const date::time_zone* zone_ = nullptr;
  std::uint64_t minutes_ = 0;   // bits 0-59
  std::uint32_t hours_ = 0;     // bits 0-23
  std::uint32_t days_ = 0;      // bits 1-31
  std::uint16_t months_ = 0;    // bits 1-12
  std::uint8_t weekdays_ = 0;   // bits 0-6, Sunday = 0
  bool days_star_ = false;      // day-of-month written starting with '*'
  bool weekdays_star_ = false;  // day-of-week written starting with '*'
  bool elapsed_time_ = false;   // minute or hour written starting with '*': follows elapsed time across DST
  bool never_ = false;          // no date matches ("0 0 30 2 *"): next_after need not search its horizon
};

}  // namespace keel
