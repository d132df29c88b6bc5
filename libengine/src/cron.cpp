#include "keel/engine/cron.hpp"

#include <date/tz.h>

#include <algorithm>
#include <array>
#include <bit>
#include <boost/system/system_error.hpp>
#include <boost/throw_exception.hpp>
#include <exception>

#include "keel/engine/error.hpp"

// Debian builds libdate-tz against the system's zoneinfo (USE_OS_TZDB): no download code, no tzdata copy.
static_assert(
    USE_OS_TZDB == 1 && HAS_REMOTE_API == 0,
    "Keel needs date/tz built with USE_OS_TZDB=1 (the system tzdata), never the downloading variant");

namespace keel {

void throw_exception_from_error(const cron_error& e, const boost::source_location& loc) {
  boost::throw_with_location(boost::system::system_error(e.code, e.message), loc);
}

namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;
using local_seconds = date::local_seconds;
using sys_seconds = date::sys_seconds;

constexpr std::array<std::string_view, 12> k_month_names{"jan", "feb", "mar", "apr", "may", "jun",
                                                         "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr std::array<std::string_view, 7> k_day_names{"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

struct field_spec {
  std::string_view name;
  int min;
  int max;
  /// Where `a/n` and `*` end: 6 for day-of-week, whose 7 (Sunday again) only a number or range names.
  int open_max;
  /// Names for min, min+1, ... (empty when the field takes numbers only).
  const std::string_view* names;
  std::size_t name_count;
  std::string_view names_hint;
};

constexpr std::array<field_spec, 5> k_fields{{
    {"minute", 0, 59, 59, nullptr, 0, ""},
    {"hour", 0, 23, 23, nullptr, 0, ""},
    {"day-of-month", 1, 31, 31, nullptr, 0, ""},
    {"month", 1, 12, 12, k_month_names.data(), k_month_names.size(), "a month name (jan-dec)"},
    {"day-of-week", 0, 7, 6, k_day_names.data(), k_day_names.size(), "a day name (sun-sat)"},
}};

struct alias {
  std::string_view name;
  std::string_view expansion;
};
constexpr std::array<alias, 7> k_aliases{{
    {"@yearly", "0 0 1 1 *"},
    {"@annually", "0 0 1 1 *"},
    {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"},
    {"@daily", "0 0 * * *"},
    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
}};

bool is_blank(char c) {
  return c == ' ' || c == '\t';
}

char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower(x) == lower(y); });
}

/// `s` in single quotes, for messages: control and non-ASCII bytes (and the quote) as \xNN, so a message
/// stays printable, valid UTF-8 whatever the input was.
std::string quoted(std::string_view s) {
  static constexpr char k_hex[] = "0123456789abcdef";
  std::string out = "'";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      out += ch;
    } else {
      out += "\\x";
      out += k_hex[c >> 4];
      out += k_hex[c & 0xf];
    }
  }
  out += '\'';
  return out;
}

cron_error expression_error(std::string message) {
  return cron_error{make_error_code(errc::invalid_cron_expression), std::move(message)};
}

std::string range_text(int lo, int hi) {
  return std::to_string(lo) + "-" + std::to_string(hi);
}

/// A decimal number of at most 4 digits (longer ones are out of range anyway), or -1.
int parse_digits(std::string_view s) {
  if (s.empty() || s.size() > 4) return -1;
  int v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/// One value of a field: a number in range or, where the field has them, a name.
boost::system::result<int, cron_error> parse_value(std::string_view s, std::string_view element,
                                                   const field_spec& f) {
  if (s.empty())
    return expression_error(std::string(f.name) + " field " + quoted(element) + " is missing a number");
  if (all_digits(s)) {
    const int v = parse_digits(s);
    if (v < f.min || v > f.max) {
      return expression_error(std::string(f.name) + " field " + quoted(s) + " is out of range " +
                              range_text(f.min, f.max));
    }
    return v;
  }
  for (std::size_t i = 0; i < f.name_count; ++i) {
    if (iequals(s, f.names[i])) return f.min + static_cast<int>(i);
  }
  if (f.name_count > 0) {
    return expression_error(std::string(f.name) + " field " + quoted(s) + " is neither a number nor " +
                            std::string(f.names_hint));
  }
  return expression_error(std::string(f.name) + " field " + quoted(s) + " is not a number");
}

/// Sets in `bits` the values one field's text names.
std::optional<cron_error> parse_field(std::string_view text, const field_spec& f, std::uint64_t& bits) {
  const std::string field = std::string(f.name) + " field ";
  std::size_t pos = 0;
  while (true) {
    const auto comma = text.find(',', pos);
    const auto element =
        text.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    if (element.empty()) return expression_error(field + quoted(text) + " has an empty list element");

    const auto slash = element.find('/');
    const auto base = element.substr(0, slash);
    int lo = 0;
    int hi = 0;
    if (base == "*") {
      lo = f.min;
      hi = f.open_max;
    } else {
      const auto dash = base.find('-');
      auto first = parse_value(base.substr(0, dash), element, f);
      if (!first) return first.error();
      lo = hi = *first;
      if (dash != std::string_view::npos) {
        auto last = parse_value(base.substr(dash + 1), element, f);
        if (!last) return last.error();
        hi = *last;
        // `fri-sun`: a range ending in Sunday by name means 7, not 0.
        if (f.max == 7 && hi == 0 && lo > 0 && !all_digits(base.substr(dash + 1))) hi = 7;
        if (lo > hi) {
          return expression_error(field + "range " + quoted(base) + " is reversed: " + std::to_string(lo) +
                                  " comes after " + std::to_string(hi));
        }
      } else if (slash != std::string_view::npos) {
        hi = std::max(lo, f.open_max);  // `a/n`: from a to the end of the field's range
      }
    }

    int step = 1;
    if (slash != std::string_view::npos) {
      const auto step_text = element.substr(slash + 1);
      const int count = f.open_max - f.min + 1;
      if (!all_digits(step_text)) {
        return expression_error(field + "step " + quoted(step_text) + " in " + quoted(element) +
                                " is not a number");
      }
      step = parse_digits(step_text);
      if (step < 1 || step > count) {
        return expression_error(field + "step " + quoted(step_text) + " in " + quoted(element) +
                                " is out of range " + range_text(1, count));
      }
    }
    for (int v = lo; v <= hi; v += step)
      bits |= std::uint64_t{1} << v;

    if (comma == std::string_view::npos) return std::nullopt;
    pos = comma + 1;
  }
}

/// The lowest set bit of `mask` at or above `from`, or -1.
int next_bit(std::uint64_t mask, int from) {
  if (from >= 64) return -1;
  const auto rest = mask >> from;
  return rest == 0 ? -1 : from + std::countr_zero(rest);
}

struct fields {
  std::uint64_t minute_mask;
  std::uint64_t hour_mask;
  std::uint64_t day_mask;
  std::uint64_t month_mask;
  std::uint64_t weekday_mask;
  bool days_star;
  bool weekdays_star;

  bool day_matches(const date::year_month_day& ymd, date::weekday wd) const {
    const bool dom = (day_mask >> static_cast<unsigned>(ymd.day())) & 1U;
    const bool dow = (weekday_mask >> wd.c_encoding()) & 1U;
    // Vixie cron: both restricted → either; otherwise both (the unrestricted one matches every day anyway,
    // except a stepped `*/n`, which cron also treats as unrestricted here).
    return days_star || weekdays_star ? dom && dow : dom || dow;
  }

  /// The first local time at or after `from` (a whole minute) and before `limit` that the fields match. Jumps
  /// by month, day, hour and minute: a call costs at most a few dozen steps per month searched.
  std::optional<local_seconds> next_match(local_seconds from, local_seconds limit) const {
    auto day = std::chrono::floor<date::days>(from);
    const auto since_midnight = from - day;
    int hour = static_cast<int>(std::chrono::floor<hours>(since_midnight).count());
    int minute = static_cast<int>(std::chrono::floor<minutes>(since_midnight - hours(hour)).count());
    while (local_seconds(day) < limit) {
      const date::year_month_day ymd(day);
      if (!((month_mask >> static_cast<unsigned>(ymd.month())) & 1U)) {
        day = date::local_days((ymd.year() / ymd.month() / 1) + date::months(1));
        hour = minute = 0;
        continue;
      }
      if (!day_matches(ymd, date::weekday(day))) {
        day += date::days(1);
        hour = minute = 0;
        continue;
      }
      const int h = next_bit(hour_mask, hour);
      if (h < 0) {
        day += date::days(1);
        hour = minute = 0;
        continue;
      }
      if (h != hour) {
        hour = h;
        minute = 0;
      }
      const int m = next_bit(minute_mask, minute);
      if (m < 0) {
        minute = 0;
        if (++hour == 24) {
          day += date::days(1);
          hour = 0;
        }
        continue;
      }
      const auto found = local_seconds(day) + hours(hour) + std::chrono::minutes(m);
      if (found >= limit) return std::nullopt;
      return found;
    }
    return std::nullopt;
  }
};

local_seconds to_local(sys_seconds t, seconds offset) {
  return local_seconds(t.time_since_epoch() + offset);
}
sys_seconds to_sys(local_seconds t, seconds offset) {
  return sys_seconds(t.time_since_epoch() - offset);
}

/// The schedule's first firing strictly after `t`. Walks the zone's offset periods (date::sys_info) from the
/// one holding `t`: inside one, local time is `instant + offset`, a bijection, so the next matching local
/// time gives the next firing there; between two, the DST rules in cron.hpp decide about the local times a
/// change repeats or skips.
std::optional<sys_seconds> next_firing(const fields& f, bool elapsed_time, const date::time_zone& zone,
                                       sys_seconds t) {
  auto info = zone.get_info(t);
  // The offset before this period: when it was larger, the clocks went back and this period repeats the local
  // times [begin + offset, begin + previous offset).
  auto previous_offset = zone.get_info(info.begin - seconds(1)).offset;
  const auto horizon = to_local(t, info.offset) + date::years(cron_schedule::k_horizon_years);
  while (true) {
    const auto offset = info.offset;
    // Strictly after t, and inside this period.
    auto from = std::chrono::floor<minutes>(to_local(t, offset)) + minutes(1);
    from = std::max(from, std::chrono::ceil<minutes>(to_local(info.begin, offset)));
    if (!elapsed_time && previous_offset > offset) {
      // A fixed-time schedule fired for the repeated local times in their first pass.
      from = std::max(from, std::chrono::ceil<minutes>(to_local(info.begin, previous_offset)));
    }
    const auto period_end = to_local(info.end, offset);
    const auto limit = std::min(period_end, horizon);
    if (from < limit) {
      if (const auto found = f.next_match(from, limit)) return to_sys(*found, offset);
    }
    if (period_end >= horizon) return std::nullopt;

    auto next = zone.get_info(info.end);
    if (!elapsed_time && next.offset > offset) {
      // The clocks jump forward at info.end: the local times [period_end, period_end + jump) do not exist. A
      // fixed-time schedule matching any of them fires once, as the clocks jump.
      const auto gap_end = to_local(info.end, next.offset);
      if (f.next_match(std::chrono::ceil<minutes>(period_end), gap_end)) return info.end;
    }
    previous_offset = offset;
    info = std::move(next);
  }
}

}  // namespace

boost::system::result<cron_schedule, cron_error> cron_schedule::parse(std::string_view expression,
                                                                      std::string_view time_zone) {
  if (expression.size() > k_max_expression_length) {
    return expression_error("cron expression is longer than " + std::to_string(k_max_expression_length) +
                            " bytes");
  }
  while (!expression.empty() && is_blank(expression.front()))
    expression.remove_prefix(1);
  while (!expression.empty() && is_blank(expression.back()))
    expression.remove_suffix(1);
  if (expression.empty()) return expression_error("cron expression is empty");

  std::string_view text = expression;
  if (text.front() == '@') {
    const auto found = std::find_if(k_aliases.begin(), k_aliases.end(),
                                    [&](const alias& a) { return iequals(a.name, text); });
    if (found == k_aliases.end()) {
      return expression_error(
          "unknown cron alias " + quoted(text) +
          " (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)");
    }
    text = found->expansion;
  }

  std::array<std::string_view, 5> parts{};
  std::size_t count = 0;
  for (std::size_t i = 0; i < text.size();) {
    if (is_blank(text[i])) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < text.size() && !is_blank(text[j]))
      ++j;
    if (count < parts.size()) parts[count] = text.substr(i, j - i);
    ++count;
    i = j;
  }
  if (count != parts.size()) {
    return expression_error("cron expression has " + std::to_string(count) +
                            (count == 1 ? " field" : " fields") +
                            "; expected 5: minute hour day-of-month month day-of-week");
  }

  cron_schedule s;
  std::array<std::uint64_t, 5> bits{};
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (auto e = parse_field(parts[i], k_fields[i], bits[i])) return std::move(*e);
  }
  s.minutes_ = bits[0];
  s.hours_ = static_cast<std::uint32_t>(bits[1]);
  s.days_ = static_cast<std::uint32_t>(bits[2]);
  s.months_ = static_cast<std::uint16_t>(bits[3]);
  // Day of week 7 is Sunday, as 0.
  s.weekdays_ = static_cast<std::uint8_t>((bits[4] | (bits[4] >> 7)) & 0x7f);
  s.days_star_ = parts[2].front() == '*';
  s.weekdays_star_ = parts[4].front() == '*';
  s.elapsed_time_ = parts[0].front() == '*' || parts[1].front() == '*';
  if (s.days_star_ || s.weekdays_star_) {
    // Both day fields must match: a day-of-month that no listed month has never comes (every weekday falls
    // on every day of every month sooner or later; February 29 within 40 years).
    static constexpr std::array<int, 13> k_longest_month{0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    s.never_ = true;
    for (int m = 1; m <= 12; ++m) {
      if (((s.months_ >> m) & 1U) && next_bit(s.days_, 1) <= k_longest_month[static_cast<std::size_t>(m)]) {
        s.never_ = false;
      }
    }
  }

  if (time_zone.empty()) {
    return cron_error{make_error_code(errc::unknown_time_zone),
                      "time zone is empty; expected an IANA name such as 'UTC' or 'America/New_York'"};
  }
  if (time_zone.size() > k_max_time_zone_length) {
    return cron_error{make_error_code(errc::unknown_time_zone),
                      "time zone name is longer than " + std::to_string(k_max_time_zone_length) + " bytes"};
  }
  try {
    date::get_tzdb();
  } catch (const std::exception& e) {
    return cron_error{make_error_code(errc::unknown_time_zone),
                      std::string("the system's time zone database cannot be read: ") + e.what()};
  }
  try {
    s.zone_ = date::locate_zone(time_zone);
    // Zone files load on first use: load it now, so that a file in the zoneinfo directory that is not a zone
    // fails here and not in next_after.
    (void)s.zone_->get_info(sys_seconds(seconds(0)));
  } catch (const std::exception&) {
    return cron_error{make_error_code(errc::unknown_time_zone), "unknown time zone " + quoted(time_zone)};
  }
  s.expression_ = std::string(expression);
  s.time_zone_ = std::string(time_zone);
  return s;
}

std::optional<std::chrono::system_clock::time_point> cron_schedule::next_after(
    std::chrono::system_clock::time_point t) const {
  using clock = std::chrono::system_clock;
  if (never_) return std::nullopt;
  const fields f{minutes_, hours_, days_, months_, weekdays_, days_star_, weekdays_star_};
  // Firings are whole seconds, so "after t" is "after t rounded down to the second". Seconds hold any year
  // the date library does; a time_point in nanoseconds ends in 2262.
  const auto found = next_firing(f, elapsed_time_, *zone_, std::chrono::floor<seconds>(t));
  if (!found || *found > std::chrono::floor<seconds>(clock::time_point::max())) return std::nullopt;
  return clock::time_point(std::chrono::duration_cast<clock::duration>(found->time_since_epoch()));
}

std::vector<std::chrono::system_clock::time_point> cron_schedule::next_n(
    std::chrono::system_clock::time_point t, std::size_t n) const {
  std::vector<std::chrono::system_clock::time_point> out;
  out.reserve(std::min<std::size_t>(n, 1024));
  while (out.size() < n) {
    const auto next = next_after(t);
    if (!next) break;
    out.push_back(*next);
    t = *next;
  }
  return out;
}

}  // namespace keel
