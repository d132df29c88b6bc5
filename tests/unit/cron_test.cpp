// Cron schedules: parsing, and firings in UTC and across daylight-saving changes in several zones. No
// database.
#include <boost/system/system_error.hpp>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "keel/common/time_text.hpp"
#include "keel/engine/cron.hpp"
#include "keel/engine/error.hpp"

using namespace std::chrono_literals;
using clock_type = std::chrono::system_clock;

namespace {

clock_type::time_point at(std::string_view rfc3339) {
  const auto t = keel::parse_rfc3339(rfc3339);
  BOOST_REQUIRE_MESSAGE(t.has_value(), "bad time in test: " << rfc3339);
  return *t;
}

/// "2026-03-08T07:00:00Z" (whole seconds: every firing is one).
std::string text(clock_type::time_point t) {
  auto s = keel::rfc3339(t);
  const auto dot = s.find('.');
  if (dot != std::string::npos && s.compare(dot, std::string::npos, ".000000Z") == 0)
    s = s.substr(0, dot) + "Z";
  return s;
}

keel::cron_schedule schedule(std::string_view expression, std::string_view zone = "UTC") {
  auto s = keel::cron_schedule::parse(expression, zone);
  BOOST_REQUIRE_MESSAGE(s.has_value(), "'" << expression << "' in " << zone << ": "
                                           << (s.has_value() ? std::string() : s.error().message));
  return *s;
}

std::vector<std::string> firings(std::string_view expression, std::string_view zone, std::string_view from,
                                 std::size_t n) {
  std::vector<std::string> out;
  for (const auto t : schedule(expression, zone).next_n(at(from), n))
    out.push_back(text(t));
  return out;
}

std::vector<std::string> firings(std::string_view expression, std::string_view from, std::size_t n) {
  return firings(expression, "UTC", from, n);
}

using strings = std::vector<std::string>;

/// The message parse gives for `expression` in UTC (empty when it parses).
std::string refusal(std::string_view expression, std::string_view zone = "UTC") {
  auto s = keel::cron_schedule::parse(expression, zone);
  return s.has_value() ? std::string() : s.error().message;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

// ---- Parsing ----

BOOST_AUTO_TEST_CASE(cron_parse_keeps_the_expression_without_surrounding_blanks_and_the_zone) {
  const auto s = schedule(" \t0 9 * * mon-fri  ", "America/New_York");
  BOOST_TEST(s.expression() == "0 9 * * mon-fri");
  BOOST_TEST(s.time_zone() == "America/New_York");
  const auto copy = s;
  BOOST_TEST(text(*copy.next_after(at("2026-11-27T15:00:00Z"))) == "2026-11-30T14:00:00Z");
}

BOOST_AUTO_TEST_CASE(cron_parse_refuses_malformed_expressions_saying_exactly_what_is_wrong) {
  struct refused {
    std::string_view expression;
    std::string_view message;
  };
  const refused table[] = {
      {"", "cron expression is empty"},
      {" \t ", "cron expression is empty"},
      {"* * * *", "cron expression has 4 fields; expected 5: minute hour day-of-month month day-of-week"},
      {"0 * * * * *", "cron expression has 6 fields; expected 5: minute hour day-of-month month day-of-week"},
      {"hourly", "cron expression has 1 field; expected 5: minute hour day-of-month month day-of-week"},
      {"61 * * * *", "minute field '61' is out of range 0-59"},
      {"0 24 * * *", "hour field '24' is out of range 0-23"},
      {"0 0 0 * *", "day-of-month field '0' is out of range 1-31"},
      {"0 0 32 * *", "day-of-month field '32' is out of range 1-31"},
      {"0 0 * 13 *", "month field '13' is out of range 1-12"},
      {"0 0 * 0 *", "month field '0' is out of range 1-12"},
      {"0 0 * * 8", "day-of-week field '8' is out of range 0-7"},
      {"99999999999 * * * *", "minute field '99999999999' is out of range 0-59"},
      {"1,61 * * * *", "minute field '61' is out of range 0-59"},
      {"30-10 * * * *", "minute field range '30-10' is reversed: 30 comes after 10"},
      {"0 0 * * fri-mon", "day-of-week field range 'fri-mon' is reversed: 5 comes after 1"},
      {"*/0 * * * *", "minute field step '0' in '*/0' is out of range 1-60"},
      {"0 */25 * * *", "hour field step '25' in '*/25' is out of range 1-24"},
      {"1-5/0 * * * *", "minute field step '0' in '1-5/0' is out of range 1-60"},
      {"*/x * * * *", "minute field step 'x' in '*/x' is not a number"},
      {"*/ * * * *", "minute field step '' in '*/' is not a number"},
      {"*/2/3 * * * *", "minute field step '2/3' in '*/2/3' is not a number"},
      {"1,,2 * * * *", "minute field '1,,2' has an empty list element"},
      {"1, * * * *", "minute field '1,' has an empty list element"},
      {"-5 * * * *", "minute field '-5' is missing a number"},
      {"5- * * * *", "minute field '5-' is missing a number"},
      {"1-2-3 * * * *", "minute field '2-3' is not a number"},
      {"*-5 * * * *", "minute field '*' is not a number"},
      {"x * * * *", "minute field 'x' is not a number"},
      {"jan * * * *", "minute field 'jan' is not a number"},
      {"0 0 L * *", "day-of-month field 'L' is not a number"},
      {"0 0 ? * *", "day-of-month field '?' is not a number"},
      {"0 0 * * 1#2", "day-of-week field '1#2' is neither a number nor a day name (sun-sat)"},
      {"0 0 * january *", "month field 'january' is neither a number nor a month name (jan-dec)"},
      {"0 0 * * monday", "day-of-week field 'monday' is neither a number nor a day name (sun-sat)"},
      {"0 0 * * sun,", "day-of-week field 'sun,' has an empty list element"},
      {"0\x01 * * * *", "minute field '0\\x01' is not a number"},
      {"\xc3\xa9 * * * *", "minute field '\\xc3\\xa9' is not a number"},
      {"@reboot",
       "unknown cron alias '@reboot' (expected @yearly, @annually, @monthly, @weekly, @daily, "
       "@midnight or @hourly)"},
      {"@daily 5",
       "unknown cron alias '@daily 5' (expected @yearly, @annually, @monthly, @weekly, @daily, "
       "@midnight or @hourly)"},
  };
  for (const auto& r : table) {
    auto s = keel::cron_schedule::parse(r.expression, "UTC");
    BOOST_TEST_CONTEXT("expression '" << r.expression << "'") {
      BOOST_REQUIRE(!s.has_value());
      BOOST_TEST(s.error().code == keel::make_error_code(keel::errc::invalid_cron_expression));
      BOOST_TEST(s.error().message == r.message);
    }
  }
}

BOOST_AUTO_TEST_CASE(cron_parse_refuses_expressions_longer_than_256_bytes) {
  const std::string longest = "0" + std::string(248, ' ') + "* * * *";
  BOOST_REQUIRE(longest.size() == keel::cron_schedule::k_max_expression_length);
  BOOST_TEST(refusal(longest).empty());
  BOOST_TEST(refusal(longest + " ") == "cron expression is longer than 256 bytes");
  BOOST_TEST(refusal(std::string(100000, '1')) == "cron expression is longer than 256 bytes");
}

BOOST_AUTO_TEST_CASE(cron_parse_refuses_unknown_time_zones_by_name) {
  struct refused {
    std::string_view zone;
    std::string_view message;
  };
  const refused table[] = {
      {"Mars/Base", "unknown time zone 'Mars/Base'"},
      {"", "time zone is empty; expected an IANA name such as 'UTC' or 'America/New_York'"},
      {"america/new_york", "unknown time zone 'america/new_york'"},
      {"../../../etc/passwd", "unknown time zone '../../../etc/passwd'"},
      {"/usr/share/zoneinfo/UTC", "unknown time zone '/usr/share/zoneinfo/UTC'"},
      {"zone.tab", "unknown time zone 'zone.tab'"},
      {"UTC\n", "unknown time zone 'UTC\\x0a'"},
      {std::string_view("UTC\0", 4), "unknown time zone 'UTC\\x00'"},
  };
  for (const auto& r : table) {
    auto s = keel::cron_schedule::parse("0 9 * * *", r.zone);
    BOOST_TEST_CONTEXT("zone '" << r.zone << "'") {
      BOOST_REQUIRE(!s.has_value());
      BOOST_TEST(s.error().code == keel::make_error_code(keel::errc::unknown_time_zone));
      BOOST_TEST(s.error().message == r.message);
    }
  }
  BOOST_TEST(refusal("0 9 * * *", std::string(129, 'A')) == "time zone name is longer than 128 bytes");
  // A malformed expression is reported before the zone.
  BOOST_TEST(refusal("61 * * * *", "Mars/Base") == "minute field '61' is out of range 0-59");
  for (const auto* zone : {"UTC", "Etc/UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe",
                           "Asia/Kolkata", "US/Eastern", "America/Argentina/Buenos_Aires"}) {
    BOOST_TEST(refusal("0 9 * * *", zone).empty(), zone);
  }
}

BOOST_AUTO_TEST_CASE(cron_parse_value_of_a_refusal_throws_a_system_error_with_the_message) {
  const auto s = keel::cron_schedule::parse("0 0 32 * *", "UTC");
  BOOST_REQUIRE(!s.has_value());
  try {
    (void)s.value();
    BOOST_FAIL("value() did not throw");
  } catch (const boost::system::system_error& e) {
    BOOST_TEST(e.code() == keel::make_error_code(keel::errc::invalid_cron_expression));
    BOOST_TEST(std::string(e.what()).find("day-of-month field '32' is out of range 1-31") !=
               std::string::npos);
  }
  BOOST_TEST(keel::code_name(keel::errc::invalid_cron_expression) == "invalid_cron_expression");
  BOOST_TEST(keel::code_name(keel::errc::unknown_time_zone) == "unknown_time_zone");
}

BOOST_AUTO_TEST_CASE(cron_aliases_fire_as_their_expansions_in_any_case) {
  const std::pair<std::string_view, std::string_view> aliases[] = {
      {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
      {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
      {"@hourly", "0 * * * *"}, {"@HOURLY", "0 * * * *"},   {" @Daily ", "0 0 * * *"},
  };
  for (const auto& [alias, expansion] : aliases) {
    BOOST_TEST_CONTEXT(alias) {
      BOOST_TEST(firings(alias, "America/New_York", "2026-03-01T00:00:00Z", 40) ==
                     firings(expansion, "America/New_York", "2026-03-01T00:00:00Z", 40),
                 boost::test_tools::per_element());
      BOOST_TEST(firings(alias, "America/New_York", "2026-10-30T00:00:00Z", 40) ==
                     firings(expansion, "America/New_York", "2026-10-30T00:00:00Z", 40),
                 boost::test_tools::per_element());
    }
  }
  BOOST_TEST(firings("@weekly", "2026-11-25T00:00:00Z", 2) ==
                 (strings{"2026-11-29T00:00:00Z", "2026-12-06T00:00:00Z"}),
             boost::test_tools::per_element());
}

// ---- Fields, in UTC ----

BOOST_AUTO_TEST_CASE(cron_fires_strictly_after_the_given_instant) {
  const auto s = schedule("0 9 * * *");
  BOOST_TEST(text(*s.next_after(at("2026-11-26T08:59:59.999999Z"))) == "2026-11-26T09:00:00Z");
  BOOST_TEST(text(*s.next_after(at("2026-11-26T09:00:00Z"))) == "2026-11-27T09:00:00Z");
  BOOST_TEST(text(*s.next_after(at("2026-11-26T09:00:00.5Z"))) == "2026-11-27T09:00:00Z");
  BOOST_TEST(firings("* * * * *", "2026-11-26T09:00:30Z", 3) ==
                 (strings{"2026-11-26T09:01:00Z", "2026-11-26T09:02:00Z", "2026-11-26T09:03:00Z"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cron_lists_ranges_and_steps_select_minutes_and_hours) {
  BOOST_TEST(firings("*/20 * * * *", "2026-01-01T00:00:00Z", 4) ==
                 (strings{"2026-01-01T00:20:00Z", "2026-01-01T00:40:00Z", "2026-01-01T01:00:00Z",
                          "2026-01-01T01:20:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("5,10-12,50-59/4 * * * *", "2026-01-01T00:00:00Z", 8) ==
                 (strings{"2026-01-01T00:05:00Z", "2026-01-01T00:10:00Z", "2026-01-01T00:11:00Z",
                          "2026-01-01T00:12:00Z", "2026-01-01T00:50:00Z", "2026-01-01T00:54:00Z",
                          "2026-01-01T00:58:00Z", "2026-01-01T01:05:00Z"}),
             boost::test_tools::per_element());
  // `a/n` runs from a to the end of the field.
  BOOST_TEST(firings("0 20/2 * * *", "2026-01-01T00:00:00Z", 3) ==
                 (strings{"2026-01-01T20:00:00Z", "2026-01-01T22:00:00Z", "2026-01-02T20:00:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("0 9-17/4 * * *", "2026-01-01T10:00:00Z", 3) ==
                 (strings{"2026-01-01T13:00:00Z", "2026-01-01T17:00:00Z", "2026-01-02T09:00:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("59 23 * * *", "2026-01-01T00:00:00Z", 1) == (strings{"2026-01-01T23:59:00Z"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cron_restricted_day_of_month_and_day_of_week_match_either_as_vixie_cron) {
  // 2026-11: Sunday the 1st. Monday the 2nd, 9th, 16th...; and the 13th (a Friday).
  BOOST_TEST(firings("0 0 13 * mon", "2026-11-01T00:00:00Z", 5) ==
                 (strings{"2026-11-02T00:00:00Z", "2026-11-09T00:00:00Z", "2026-11-13T00:00:00Z",
                          "2026-11-16T00:00:00Z", "2026-11-23T00:00:00Z"}),
             boost::test_tools::per_element());
  // Only the other counts when one is `*`.
  BOOST_TEST(firings("0 0 13 * *", "2026-11-01T00:00:00Z", 2) ==
                 (strings{"2026-11-13T00:00:00Z", "2026-12-13T00:00:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("0 0 * * fri", "2026-11-01T00:00:00Z", 2) ==
                 (strings{"2026-11-06T00:00:00Z", "2026-11-13T00:00:00Z"}),
             boost::test_tools::per_element());
  // Friday the 13th cannot be written in cron: "13 * fri" is the 13th or any Friday.
  BOOST_TEST(firings("0 0 13 * fri", "2026-11-01T00:00:00Z", 3) ==
                 (strings{"2026-11-06T00:00:00Z", "2026-11-13T00:00:00Z", "2026-11-20T00:00:00Z"}),
             boost::test_tools::per_element());
  // A field written from `*` counts as unrestricted even with a step (cronie): then a day must match both.
  // Odd days of November 2026 that are Mondays: the 9th, 23rd; then Nov 30 is even; Dec 7, 21.
  BOOST_TEST(firings("0 0 */2 * mon", "2026-11-01T00:00:00Z", 4) ==
                 (strings{"2026-11-09T00:00:00Z", "2026-11-23T00:00:00Z", "2026-12-07T00:00:00Z",
                          "2026-12-21T00:00:00Z"}),
             boost::test_tools::per_element());
  // Written as a range, the same days are restricted: either.
  BOOST_TEST(firings("0 0 1-31/2 * mon", "2026-10-31T12:00:00Z", 4) ==
                 (strings{"2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z",
                          "2026-11-05T00:00:00Z"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cron_day_and_month_names_are_case_insensitive_and_7_is_sunday) {
  // 2026-11-29 is a Sunday.
  const strings sundays{"2026-11-29T00:00:00Z", "2026-12-06T00:00:00Z"};
  for (const auto* e :
       {"0 0 * * 0", "0 0 * * 7", "0 0 * * sun", "0 0 * * SUN", "0 0 * * Sun", "0 0 * * 0,7"}) {
    BOOST_TEST_CONTEXT(e) {
      BOOST_TEST(firings(e, "2026-11-25T00:00:00Z", 2) == sundays, boost::test_tools::per_element());
    }
  }
  // A range may end on Sunday as 7 or by name.
  const strings weekend{"2026-11-27T00:00:00Z", "2026-11-28T00:00:00Z", "2026-11-29T00:00:00Z",
                        "2026-12-04T00:00:00Z"};
  for (const auto* e : {"0 0 * * 5-7", "0 0 * * fri-sun", "0 0 * * FRI-7", "0 0 * * 5,6,0"}) {
    BOOST_TEST_CONTEXT(e) {
      BOOST_TEST(firings(e, "2026-11-25T00:00:00Z", 4) == weekend, boost::test_tools::per_element());
    }
  }
  BOOST_TEST(firings("0 0 * * mon-fri/2", "2026-11-25T00:00:00Z", 3) ==
                 (strings{"2026-11-27T00:00:00Z", "2026-11-30T00:00:00Z", "2026-12-02T00:00:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("0 0 1 JAN,jul,Dec *", "2026-11-25T00:00:00Z", 3) ==
                 (strings{"2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", "2027-07-01T00:00:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("0 0 1 mar-may *", "2026-11-25T00:00:00Z", 4) ==
                 (strings{"2027-03-01T00:00:00Z", "2027-04-01T00:00:00Z", "2027-05-01T00:00:00Z",
                          "2028-03-01T00:00:00Z"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cron_february_29_fires_in_leap_years_only) {
  BOOST_TEST(firings("0 0 29 2 *", "2026-01-01T00:00:00Z", 3) ==
                 (strings{"2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z", "2036-02-29T00:00:00Z"}),
             boost::test_tools::per_element());
  // 2100 is not a leap year: eight years from 2096 to 2104.
  BOOST_TEST(firings("0 0 29 2 *", "2096-03-01T00:00:00Z", 1) == (strings{"2104-02-29T00:00:00Z"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cron_the_31st_skips_the_months_without_one) {
  BOOST_TEST(firings("0 12 31 * *", "2026-01-01T00:00:00Z", 8) ==
                 (strings{"2026-01-31T12:00:00Z", "2026-03-31T12:00:00Z", "2026-05-31T12:00:00Z",
                          "2026-07-31T12:00:00Z", "2026-08-31T12:00:00Z", "2026-10-31T12:00:00Z",
                          "2026-12-31T12:00:00Z", "2027-01-31T12:00:00Z"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cron_rolls_over_into_the_next_year) {
  BOOST_TEST(firings("59 23 31 12 *", "2026-12-31T23:59:00Z", 1) == (strings{"2027-12-31T23:59:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("0 0 1 1 *", "2026-12-31T23:59:59Z", 2) ==
                 (strings{"2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("*/30 * * * *", "2026-12-31T23:15:00Z", 3) ==
                 (strings{"2026-12-31T23:30:00Z", "2027-01-01T00:00:00Z", "2027-01-01T00:30:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("0 0 * * mon", "2026-12-29T00:00:00Z", 1) == (strings{"2027-01-04T00:00:00Z"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cron_a_date_that_never_comes_gives_no_firing) {
  for (const auto* e : {"0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 2 *"}) {
    const auto s = schedule(e);
    BOOST_TEST(!s.next_after(at("2026-01-01T00:00:00Z")).has_value(), e);
    BOOST_TEST(s.next_n(at("2026-01-01T00:00:00Z"), 5).empty(), e);
  }
  // With day-of-week restricted too, either matches: Mondays in February.
  BOOST_TEST(firings("0 0 30 2 mon", "2026-01-01T00:00:00Z", 1) == (strings{"2026-02-02T00:00:00Z"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cron_a_firing_past_the_range_of_system_clock_is_none) {
  const auto s = schedule("0 0 1 1 *");
  BOOST_TEST(text(*s.next_after(at("2261-06-01T00:00:00Z"))) == "2262-01-01T00:00:00Z");
  BOOST_TEST(!s.next_after(at("2262-01-01T00:00:00Z")).has_value());
  BOOST_TEST(!s.next_after(clock_type::time_point::max()).has_value());
  BOOST_TEST(text(*schedule("0 0 1 1 *", "America/New_York").next_after(clock_type::time_point::min())) ==
             "1678-01-01T04:56:02Z");  // local mean time before 1883: UTC-4:56:02
}

BOOST_AUTO_TEST_CASE(cron_next_n_is_increasing_and_chains_next_after) {
  for (const auto* zone : {"UTC", "America/New_York", "Australia/Lord_Howe"}) {
    for (const auto* e :
         {"*/7 * * * *", "30 1 * * *", "0,30 2 * * *", "0 0 13 * fri", "@hourly", "15 */3 1-10 * mon-wed"}) {
      const auto s = schedule(e, zone);
      const auto from = at("2026-01-01T00:00:00Z");
      const auto all = s.next_n(from, 3000);
      BOOST_TEST_CONTEXT(e << " in " << zone) {
        BOOST_TEST(all.size() == 3000U);
        auto previous = from;
        for (const auto t : all) {
          BOOST_TEST_REQUIRE((t > previous));
          BOOST_TEST_REQUIRE((s.next_after(previous) == t));
          previous = t;
        }
      }
    }
  }
  BOOST_TEST(schedule("* * * * *").next_n(at("2026-01-01T00:00:00Z"), 0).empty());
}

// Every minute of a window, checked against a plain reading of the fields.
BOOST_AUTO_TEST_CASE(cron_field_jumping_agrees_with_checking_every_minute) {
  using namespace std::chrono;
  struct reference {
    std::string_view expression;
    bool (*matches)(int minute, int hour, unsigned day, unsigned month, unsigned weekday);
  };
  const reference table[] = {
      {"* * * * *", [](int, int, unsigned, unsigned, unsigned) { return true; }},
      {"*/13 */5 * * *",
       [](int m, int h, unsigned, unsigned, unsigned) { return m % 13 == 0 && h % 5 == 0; }},
      {"0 12 1,15 * fri", [](int m, int h, unsigned d, unsigned,
                             unsigned wd) { return m == 0 && h == 12 && (d == 1 || d == 15 || wd == 5); }},
      {"30 6 */3 * sat", [](int m, int h, unsigned d, unsigned,
                            unsigned wd) { return m == 30 && h == 6 && d % 3 == 1 && wd == 6; }},
      {"5 4 * 2-3 *", [](int m, int h, unsigned, unsigned mo,
                         unsigned) { return m == 5 && h == 4 && (mo == 2 || mo == 3); }},
      {"0 0 29-31 * *",
       [](int m, int h, unsigned d, unsigned, unsigned) { return m == 0 && h == 0 && d >= 29; }},
      {"10-20/5 22-23,0-1 * * 0",
       [](int m, int h, unsigned, unsigned, unsigned wd) {
         return m >= 10 && m <= 20 && m % 5 == 0 && (h >= 22 || h <= 1) && wd == 0;
       }},
  };
  const auto start = sys_days(year(2027) / January / 20);
  const auto end = sys_days(year(2027) / April / 10);
  for (const auto& r : table) {
    std::vector<clock_type::time_point> expected;
    for (auto t = time_point_cast<minutes>(start); t < end; t += minutes(1)) {
      const auto day = floor<days>(t);
      const year_month_day ymd(day);
      const hh_mm_ss hms(t - day);
      if (r.matches(static_cast<int>(hms.minutes().count()), static_cast<int>(hms.hours().count()),
                    static_cast<unsigned>(ymd.day()), static_cast<unsigned>(ymd.month()),
                    weekday(day).c_encoding())) {
        expected.push_back(t);
      }
    }
    std::vector<clock_type::time_point> got;
    const auto s = schedule(r.expression);
    for (auto t = s.next_after(clock_type::time_point(start) - 1s); t && *t < end; t = s.next_after(*t)) {
      got.push_back(*t);
    }
    BOOST_TEST_CONTEXT(r.expression) {
      BOOST_TEST(got.size() == expected.size());
      BOOST_TEST((got == expected));
    }
  }
}

// ---- Time zones and daylight saving ----
// America/New_York 2026: clocks go forward at 07:00 UTC on March 8 (02:00 EST → 03:00 EDT) and back at
// 06:00 UTC on November 1 (02:00 EDT → 01:00 EST).

BOOST_AUTO_TEST_CASE(cron_new_york_nine_am_is_14_utc_in_winter_and_13_utc_in_summer) {
  BOOST_TEST(firings("0 9 * * *", "America/New_York", "2026-03-06T00:00:00Z", 4) ==
                 (strings{"2026-03-06T14:00:00Z", "2026-03-07T14:00:00Z", "2026-03-08T13:00:00Z",
                          "2026-03-09T13:00:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("0 9 * * *", "America/New_York", "2026-10-30T00:00:00Z", 4) ==
                 (strings{"2026-10-30T13:00:00Z", "2026-10-31T13:00:00Z", "2026-11-01T14:00:00Z",
                          "2026-11-02T14:00:00Z"}),
             boost::test_tools::per_element());
  // Midnight exists on both change days.
  BOOST_TEST(firings("@daily", "America/New_York", "2026-03-07T00:00:00Z", 3) ==
                 (strings{"2026-03-07T05:00:00Z", "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("@daily", "America/New_York", "2026-10-31T00:00:00Z", 3) ==
                 (strings{"2026-10-31T04:00:00Z", "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cron_new_york_a_daily_time_the_clocks_skip_fires_once_as_they_jump) {
  // 02:30 on March 8 does not exist: it fires at 07:00 UTC (03:00 EDT).
  BOOST_TEST(firings("30 2 * * *", "America/New_York", "2026-03-07T00:00:00Z", 3) ==
                 (strings{"2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"}),
             boost::test_tools::per_element());
  // Asked just before the jump, and at it.
  const auto s = schedule("30 2 * * *", "America/New_York");
  BOOST_TEST(text(*s.next_after(at("2026-03-08T06:59:59Z"))) == "2026-03-08T07:00:00Z");
  BOOST_TEST(text(*s.next_after(at("2026-03-08T07:00:00Z"))) == "2026-03-09T06:30:00Z");
  // Several nonexistent times of one gap collapse into that one firing...
  BOOST_TEST(firings("0,15,30,45 2 * * *", "America/New_York", "2026-03-08T06:00:00Z", 2) ==
                 (strings{"2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z"}),
             boost::test_tools::per_element());
  // ...and with a real 03:00 at the same instant.
  BOOST_TEST(firings("0,30 2,3 * * *", "America/New_York", "2026-03-08T06:00:00Z", 3) ==
                 (strings{"2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z", "2026-03-09T06:00:00Z"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cron_new_york_a_daily_time_the_clocks_repeat_fires_at_its_first_occurrence_only) {
  // 01:30 on November 1 happens at 05:30 UTC (EDT) and again at 06:30 UTC (EST): it fires at the first.
  BOOST_TEST(firings("30 1 * * *", "America/New_York", "2026-10-31T00:00:00Z", 3) ==
                 (strings{"2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"}),
             boost::test_tools::per_element());
  // Asked between the two passes, it waits for the next day.
  const auto s = schedule("30 1 * * *", "America/New_York");
  BOOST_TEST(text(*s.next_after(at("2026-11-01T05:45:00Z"))) == "2026-11-02T06:30:00Z");
  BOOST_TEST(text(*s.next_after(at("2026-11-01T06:10:00Z"))) == "2026-11-02T06:30:00Z");
  // The whole repeated hour: once per minute listed.
  BOOST_TEST(firings("0,59 1 * * *", "America/New_York", "2026-11-01T04:00:00Z", 3) ==
                 (strings{"2026-11-01T05:00:00Z", "2026-11-01T05:59:00Z", "2026-11-02T06:00:00Z"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cron_new_york_hourly_follows_elapsed_time_across_both_changes) {
  BOOST_TEST(firings("0 * * * *", "America/New_York", "2026-03-08T05:30:00Z", 3) ==
                 (strings{"2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z"}),
             boost::test_tools::per_element());
  // 01:00 EDT, 01:00 EST, 02:00 EST: both passes of the repeated hour.
  BOOST_TEST(firings("0 * * * *", "America/New_York", "2026-11-01T04:30:00Z", 3) ==
                 (strings{"2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z"}),
             boost::test_tools::per_element());
  // A minute the clocks skip is skipped: 01:30 EST, then 03:30 EDT, one hour later.
  BOOST_TEST(firings("30 * * * *", "America/New_York", "2026-03-08T06:00:00Z", 3) ==
                 (strings{"2026-03-08T06:30:00Z", "2026-03-08T07:30:00Z", "2026-03-08T08:30:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("30 * * * *", "America/New_York", "2026-11-01T05:00:00Z", 3) ==
                 (strings{"2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z", "2026-11-01T07:30:00Z"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cron_new_york_every_15_minutes_follows_elapsed_time_across_both_changes) {
  BOOST_TEST(firings("*/15 * * * *", "America/New_York", "2026-03-08T06:40:00Z", 3) ==
                 (strings{"2026-03-08T06:45:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:15:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("*/15 * * * *", "America/New_York", "2026-11-01T05:40:00Z", 4) ==
                 (strings{"2026-11-01T05:45:00Z", "2026-11-01T06:00:00Z", "2026-11-01T06:15:00Z",
                          "2026-11-01T06:30:00Z"}),
             boost::test_tools::per_element());
  // A minute field written from `*` follows elapsed time too: every minute of both passes of 01:00-01:59.
  const auto s = schedule("* 1 * * *", "America/New_York");
  const auto day = s.next_n(at("2026-11-01T04:00:00Z"), 121);
  BOOST_REQUIRE(day.size() == 121U);
  BOOST_TEST(text(day.front()) == "2026-11-01T05:00:00Z");
  BOOST_TEST(text(day[119]) == "2026-11-01T06:59:00Z");
  BOOST_TEST(text(day[120]) == "2026-11-02T06:00:00Z");
}

BOOST_AUTO_TEST_CASE(cron_new_york_a_year_of_every_5_minutes_is_evenly_spaced_and_nine_am_daily_is_local) {
  // From 2026-01-01 to 2027-01-01, local midnight to local midnight: 365 days of elapsed time.
  const auto from = at("2026-01-01T05:00:00Z");
  const auto to = at("2027-01-01T05:00:00Z");
  const auto every5 = schedule("*/5 * * * *", "America/New_York");
  std::size_t count = 0;
  auto previous = from;
  for (auto t = every5.next_after(from); t && *t <= to; t = every5.next_after(*t)) {
    BOOST_TEST_REQUIRE((*t - previous == 5min), text(*t));
    previous = *t;
    ++count;
  }
  BOOST_TEST(count == 365U * 24 * 12);

  const auto nine = schedule("0 9 * * *", "America/New_York");
  const auto all = nine.next_n(from, 366);
  BOOST_REQUIRE(all.size() == 366U);
  BOOST_TEST(text(all[364]) == "2026-12-31T14:00:00Z");
  std::size_t summer = 0;
  for (const auto t : all) {
    const auto hour = text(t).substr(11, 8);
    BOOST_TEST_REQUIRE((hour == "13:00:00" || hour == "14:00:00"), text(t));
    summer += hour == "13:00:00";
  }
  BOOST_TEST(summer == 238U);  // March 8 to October 31 inclusive
}

BOOST_AUTO_TEST_CASE(cron_london_changes_an_hour_at_01_00_utc) {
  // March 29: 01:00 GMT → 02:00 BST. 01:30 does not exist and fires as the clocks jump.
  BOOST_TEST(firings("30 1 * * *", "Europe/London", "2026-03-28T00:00:00Z", 3) ==
                 (strings{"2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"}),
             boost::test_tools::per_element());
  // October 25: 02:00 BST → 01:00 GMT. 01:30 BST (00:30 UTC) only.
  BOOST_TEST(firings("30 1 * * *", "Europe/London", "2026-10-24T00:00:00Z", 3) ==
                 (strings{"2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("0 9 * * *", "Europe/London", "2026-03-28T00:00:00Z", 2) ==
                 (strings{"2026-03-28T09:00:00Z", "2026-03-29T08:00:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("*/30 * * * *", "Europe/London", "2026-10-25T00:00:00Z", 4) ==
                 (strings{"2026-10-25T00:30:00Z", "2026-10-25T01:00:00Z", "2026-10-25T01:30:00Z",
                          "2026-10-25T02:00:00Z"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cron_lord_howe_shifts_by_thirty_minutes) {
  // April 5: 02:00 +11 → 01:30 +10:30 at 15:00 UTC on April 4; 01:30-01:59 happen twice.
  BOOST_TEST(firings("45 1 * * *", "Australia/Lord_Howe", "2026-04-03T00:00:00Z", 3) ==
                 (strings{"2026-04-03T14:45:00Z", "2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("*/15 * * * *", "Australia/Lord_Howe", "2026-04-04T14:20:00Z", 5) ==
                 (strings{"2026-04-04T14:30:00Z", "2026-04-04T14:45:00Z", "2026-04-04T15:00:00Z",
                          "2026-04-04T15:15:00Z", "2026-04-04T15:30:00Z"}),
             boost::test_tools::per_element());
  // October 4: 02:00 +10:30 → 02:30 +11 at 15:30 UTC on October 3; 02:00-02:29 do not exist.
  BOOST_TEST(firings("15 2 * * *", "Australia/Lord_Howe", "2026-10-02T00:00:00Z", 3) ==
                 (strings{"2026-10-02T15:45:00Z", "2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("*/15 * * * *", "Australia/Lord_Howe", "2026-10-03T15:10:00Z", 3) ==
                 (strings{"2026-10-03T15:15:00Z", "2026-10-03T15:30:00Z", "2026-10-03T15:45:00Z"}),
             boost::test_tools::per_element());
  // 02:45 exists on October 4 (+11): a time after the gap is not pulled into it.
  BOOST_TEST(firings("45 2 * * *", "Australia/Lord_Howe", "2026-10-03T00:00:00Z", 2) ==
                 (strings{"2026-10-03T15:45:00Z", "2026-10-04T15:45:00Z"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cron_kolkata_is_five_and_a_half_hours_ahead_all_year) {
  BOOST_TEST(firings("0 9 * * *", "Asia/Kolkata", "2026-03-07T00:00:00Z", 2) ==
                 (strings{"2026-03-07T03:30:00Z", "2026-03-08T03:30:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(
      firings("0 9 * * *", "Asia/Kolkata", "2026-11-01T00:00:00Z", 1) == (strings{"2026-11-01T03:30:00Z"}),
      boost::test_tools::per_element());
  BOOST_TEST(firings("30 * * * *", "Asia/Kolkata", "2026-11-01T00:00:00Z", 2) ==
                 (strings{"2026-11-01T01:00:00Z", "2026-11-01T02:00:00Z"}),
             boost::test_tools::per_element());
  // Local midnight of January 1 is 18:30 UTC on December 31.
  BOOST_TEST(
      firings("@yearly", "Asia/Kolkata", "2026-06-01T00:00:00Z", 1) == (strings{"2026-12-31T18:30:00Z"}),
      boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cron_santiago_midnight_that_does_not_exist_fires_as_the_clocks_jump) {
  // Chile moves its clocks at midnight: September 6 starts at 01:00 (-03), at 04:00 UTC.
  BOOST_TEST(firings("@daily", "America/Santiago", "2026-09-04T12:00:00Z", 3) ==
                 (strings{"2026-09-05T04:00:00Z", "2026-09-06T04:00:00Z", "2026-09-07T03:00:00Z"}),
             boost::test_tools::per_element());
  // April 4: 24:00 -03 → 23:00 -04, so 23:30 happens twice; the first counts.
  BOOST_TEST(firings("30 23 * * *", "America/Santiago", "2026-04-04T12:00:00Z", 2) ==
                 (strings{"2026-04-05T02:30:00Z", "2026-04-06T03:30:00Z"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cron_utc_has_no_changes) {
  BOOST_TEST(firings("30 2 * * *", "UTC", "2026-03-07T00:00:00Z", 3) ==
                 (strings{"2026-03-07T02:30:00Z", "2026-03-08T02:30:00Z", "2026-03-09T02:30:00Z"}),
             boost::test_tools::per_element());
  BOOST_TEST(firings("0 9 * * *", "Etc/UTC", "2026-10-31T10:00:00Z", 2) ==
                 (strings{"2026-11-01T09:00:00Z", "2026-11-02T09:00:00Z"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()
