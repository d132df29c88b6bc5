// RFC 3339 times as the API reads them. No database.
#include <boost/test/unit_test.hpp>

#include "keel/common/time_text.hpp"

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(a_time_later_than_the_system_clock_holds_is_refused_not_overflowed) {
  // Found by fuzz_http (a start-run body's run_at): 9197 overflowed the conversion to nanoseconds.
  BOOST_TEST(!keel::parse_rfc3339("9197-11-26T09:00:00.123456Z").has_value());
  BOOST_TEST(!keel::parse_rfc3339("9999-12-31T23:59:59Z").has_value());
  BOOST_TEST(!keel::parse_rfc3339("2262-04-12T00:00:00Z").has_value());
  const auto latest = keel::parse_rfc3339("2262-04-11T00:00:00Z");
  BOOST_REQUIRE(latest.has_value());
  BOOST_TEST(keel::rfc3339(*latest) == "2262-04-11T00:00:00.000000Z");
}

BOOST_AUTO_TEST_SUITE_END()
