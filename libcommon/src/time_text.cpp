#include "keel/common/time_text.hpp"

#include <cctype>
#include <cstdio>
#include <ctime>

namespace keel {

using namespace std::chrono;

std::string rfc3339(system_clock::time_point t) {
  const auto us = duration_cast<microseconds>(t.time_since_epoch()).count();
  auto secs = static_cast<std::time_t>(us / 1'000'000);
  auto frac = us % 1'000'000;
  if (frac < 0) {
    frac += 1'000'000;
    --secs;
  }
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];  // room for any int the compiler cannot rule out
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(frac));
  return buf;
}

namespace {

/// `n` digits at `s[at]`, or -1.
int digits(std::string_view s, std::size_t at, int n) {
  if (at + static_cast<std::size_t>(n) > s.size()) return -1;
  int v = 0;
  for (int i = 0; i < n; ++i) {
    const char c = s[at + static_cast<std::size_t>(i)];
    if (!std::isdigit(static_cast<unsigned char>(c))) return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

}  // namespace

std::optional<system_clock::time_point> parse_rfc3339(std::string_view s) {
  const int year = digits(s, 0, 4), month = digits(s, 5, 2), day = digits(s, 8, 2);
  const int hour = digits(s, 11, 2), minute = digits(s, 14, 2), second = digits(s, 17, 2);
  if (year < 1970 || month < 1 || month > 12 || day < 1 || day > 31 || hour < 0 || hour > 23 || minute < 0 ||
      minute > 59 || second < 0 || second > 60 || s[4] != '-' || s[7] != '-' ||
      (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || s[13] != ':' || s[16] != ':')
    return std::nullopt;
  std::size_t at = 19;
  microseconds frac{0};
  if (at < s.size() && s[at] == '.') {
    ++at;
    long long scale = 100'000;
    const std::size_t first = at;
    while (at < s.size() && std::isdigit(static_cast<unsigned char>(s[at]))) {
      frac += microseconds((s[at] - '0') * scale);
      scale /= 10;
      ++at;
    }
    if (at == first) return std::nullopt;
  }
  int offset_minutes = 0;
  if (at < s.size() && (s[at] == 'Z' || s[at] == 'z')) {
    ++at;
  } else if (at < s.size() && (s[at] == '+' || s[at] == '-')) {
    const int oh = digits(s, at + 1, 2), om = digits(s, at + 4, 2);
    if (oh < 0 || oh > 23 || om < 0 || om > 59 || at + 3 >= s.size() || s[at + 3] != ':') return std::nullopt;
    offset_minutes = (s[at] == '+' ? 1 : -1) * (oh * 60 + om);
    at += 6;
  } else {
    return std::nullopt;
  }
  if (at != s.size()) return std::nullopt;
  const auto ymd = year_month_day{std::chrono::year(year), std::chrono::month(static_cast<unsigned>(month)),
                                  std::chrono::day(static_cast<unsigned>(day))};
  if (!ymd.ok()) return std::nullopt;
  const auto t =
      sys_days(ymd) + hours(hour) + minutes(minute) + seconds(second) + frac - minutes(offset_minutes);
  // system_clock counts nanoseconds in 64 bits (up to 2262-04-11): a later time does not fit, and
  // converting it would overflow (undefined behaviour).
  constexpr auto k_latest = duration_cast<microseconds>(system_clock::time_point::max().time_since_epoch());
  if (t.time_since_epoch() > k_latest) return std::nullopt;
  return time_point_cast<system_clock::duration>(t);
}

}  // namespace keel
