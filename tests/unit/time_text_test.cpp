// RFC 3339 times as the API reads them. No database.
#include <boost/test/unit_test.hpp>

#include "keel/common/time_text.hpp"
#include "keel/common/trace_context.hpp"

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

BOOST_AUTO_TEST_CASE(a_traceparent_is_read_by_the_w3c_rules) {
  const auto t = keel::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  BOOST_REQUIRE(t.has_value());
  BOOST_TEST(t->trace_id == "4bf92f3577b34da6a3ce929d0e0e4736");
  BOOST_TEST(t->parent_id == "00f067aa0ba902b7");
  BOOST_TEST(t->flags == 1);
  BOOST_TEST(t->traceparent() == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  BOOST_TEST(t->traceparent_from("1111111111111111") ==
             "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01");
  // A later version may add fields after a '-'; version 00 may not.
  BOOST_TEST(
      keel::parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-later").has_value());
  for (const char* bad : {"", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                          "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                          "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                          "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                          "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                          "00-4bf92f3577b34da6a3ce929d0e0e473G-00f067aa0ba902b7-01",
                          "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                          "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00x"})
    BOOST_TEST(!keel::parse_traceparent(bad).has_value(), bad);
  // Span ids: 16 lowercase hex digits, the same for the same seed.
  const auto a = keel::span_id_for("run/0/3"), b = keel::span_id_for("run/0/3"),
             c = keel::span_id_for("run/0/4");
  BOOST_TEST(a == b);
  BOOST_TEST(a != c);
  BOOST_TEST(a.size() == 16u);
  BOOST_TEST(a.find_first_not_of("0123456789abcdef") == std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
