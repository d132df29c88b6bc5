// Workflow data as JSON: described structs, enums by name, optionals, variants, time points, durations and
// bytes convert both ways, and a document that does not convert says where (a JSON pointer). No database.
#include <boost/describe/class.hpp>
#include <boost/describe/enum.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>
#include <boost/test/unit_test.hpp>
#include <map>
#include <variant>

#include "keel/common/time_text.hpp"
#include "keel/engine/conversion_error.hpp"
#include "keel/engine/json_types.hpp"

namespace json = boost::json;
using namespace std::chrono_literals;

namespace shop {
enum class color { red, green, blue };
BOOST_DESCRIBE_ENUM(color, red, green, blue)

struct line {
  std::string sku;
  int quantity = 0;
};
BOOST_DESCRIBE_STRUCT(line, (), (sku, quantity))

struct order {
  std::string id;
  color wrapping = color::red;
  std::optional<std::string> note;
  std::variant<int, std::string> reference;
  std::chrono::system_clock::time_point placed;
  std::chrono::seconds hold;
  std::vector<std::byte> signature;
  std::vector<line> lines;
  std::map<std::string, int> tags;
};
BOOST_DESCRIBE_STRUCT(order, (), (id, wrapping, note, reference, placed, hold, signature, lines, tags))
}  // namespace shop

namespace {

std::vector<std::byte> bytes_of(std::string_view s) {
  std::vector<std::byte> out;
  for (const char c : s)
    out.push_back(static_cast<std::byte>(c));
  return out;
}

shop::order sample() {
  shop::order o;
  o.id = "A-1";
  o.wrapping = shop::color::green;
  o.reference = std::string("PO-7");
  o.placed = *keel::parse_rfc3339("2026-11-27T09:30:00.250000Z");
  o.hold = std::chrono::hours(36);
  o.signature = bytes_of("sig\xff");
  o.lines = {{"tea", 2}, {"mug", 1}};
  o.tags = {{"gift", 1}};
  return o;
}

std::string where(const std::string& text) {
  return keel::detail::conversion_error<shop::order>(json::parse(text)).value_or("converts");
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(base64_follows_rfc_4648_and_refuses_anything_else) {
  const std::pair<const char*, const char*> vectors[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    BOOST_TEST(keel::to_base64(bytes_of(plain)) == encoded);
    const auto decoded = keel::from_base64(encoded);
    BOOST_REQUIRE(decoded.has_value());
    BOOST_TEST((*decoded == bytes_of(plain)));
  }
  for (const char* bad : {"Zg=", "Z===", "Zh==", "Zm9=", "Zm9v!A==", "Zg==Zg==", "Zm=v", "====", "Zm9v Zg=="})
    BOOST_TEST(!keel::from_base64(bad).has_value(), bad);
}

BOOST_AUTO_TEST_CASE(durations_are_iso_8601_in_days_hours_minutes_and_seconds) {
  BOOST_TEST(keel::iso8601_duration(250ms) == "PT0.25S");
  BOOST_TEST(keel::iso8601_duration(std::chrono::days(7)) == "PT604800S");
  BOOST_TEST(keel::iso8601_duration(-2s) == "-PT2S");
  BOOST_TEST(keel::iso8601_duration(1us) == "PT0.000001S");
  BOOST_TEST(keel::parse_iso8601_duration("P7D").value() == std::chrono::days(7));
  BOOST_TEST(keel::parse_iso8601_duration("PT1H30M").value() == 90min);
  BOOST_TEST(keel::parse_iso8601_duration("P1DT0.5S").value() == std::chrono::days(1) + 500ms);
  BOOST_TEST(keel::parse_iso8601_duration("-PT2S").value() == -2s);
  BOOST_TEST(keel::parse_iso8601_duration("PT604800S").value() == std::chrono::days(7));
  // The extremes read back (the most negative count is written one microsecond short of itself).
  BOOST_TEST(keel::parse_iso8601_duration(keel::iso8601_duration(std::chrono::microseconds::max())).value() ==
             std::chrono::microseconds::max());
  BOOST_TEST(keel::parse_iso8601_duration(keel::iso8601_duration(std::chrono::microseconds::min())).value() ==
             std::chrono::microseconds::min() + 1us);
  for (const char* bad :
       {"", "P", "PT", "P1H", "PT1D", "PT1.5M", "PT0.0000001S", "P1Y", "P1M", "PT1S1M", "PT1H1H", "1S", "PT1",
        "PT.5S", "P99999999999999999D", "PT9223372036854.999999S", "PT9223372036855S", "P106751991DT27H"})
    BOOST_TEST(!keel::parse_iso8601_duration(bad).has_value(), bad);
}

BOOST_AUTO_TEST_CASE(workflow_data_of_every_common_type_converts_both_ways) {
  const auto o = sample();
  const json::value v = json::value_from(o);
  BOOST_TEST(json::serialize(v) ==
             R"({"id":"A-1","wrapping":"green","note":null,"reference":"PO-7",)"
             R"("placed":"2026-11-27T09:30:00.250000Z","hold":"PT129600S","signature":"c2ln/w==",)"
             R"("lines":[{"sku":"tea","quantity":2},{"sku":"mug","quantity":1}],"tags":{"gift":1}})");
  const auto back = json::value_to<shop::order>(v);
  BOOST_TEST(back.id == o.id);
  BOOST_TEST((back.wrapping == shop::color::green));
  BOOST_TEST(!back.note.has_value());
  BOOST_TEST(std::get<std::string>(back.reference) == "PO-7");
  BOOST_TEST((back.placed == o.placed));
  BOOST_TEST((back.hold == o.hold));
  BOOST_TEST((back.signature == o.signature));
  BOOST_TEST(back.lines.size() == 2u);
  BOOST_TEST(back.tags.at("gift") == 1);
  BOOST_TEST(!keel::detail::conversion_error<shop::order>(v).has_value());
}

BOOST_AUTO_TEST_CASE(a_document_that_does_not_convert_says_where) {
  const std::string good = json::serialize(json::value_from(sample()));
  auto with = [&](const std::string& from, const std::string& to) {
    auto text = good;
    text.replace(text.find(from), from.size(), to);
    return text;
  };
  BOOST_TEST(where(good) == "converts");
  BOOST_TEST(where(with(R"("quantity":1)", R"("quantity":"one")")).rfind("at /lines/1/quantity: ", 0) == 0u,
             where(with(R"("quantity":1)", R"("quantity":"one")")));
  BOOST_TEST(where(with(R"("wrapping":"green")", R"("wrapping":"purple")")).rfind("at /wrapping: ", 0) == 0u);
  BOOST_TEST(where(with(R"("placed":"2026-11-27T09:30:00.250000Z")", R"("placed":"yesterday")")) ==
             R"(at /placed: not an RFC 3339 time ("2026-11-27T09:30:00Z"))");
  BOOST_TEST(where(with(R"("hold":"PT129600S")", R"("hold":36)")) ==
             R"(at /hold: not an ISO 8601 duration ("PT1.5S", "P7D"))");
  BOOST_TEST(
      where(with(R"("signature":"c2ln/w==")", R"("signature":"c2ln/w=")")).rfind("at /signature: ", 0) == 0u);
  BOOST_TEST(where(with(R"("gift":1)", R"("gift":true)")).rfind("at /tags/gift: ", 0) == 0u);
  BOOST_TEST(where(with(R"("reference":"PO-7")", R"("reference":[1])")).rfind("at /reference: ", 0) == 0u);
  BOOST_TEST(where(with(R"("id":"A-1",)", "")) == "at /id: missing");
  BOOST_TEST(where(with(R"("id":"A-1")", R"("id":"A-1","i/d~":2)")) ==
             "at /i~1d~0: not a member of the type");
  BOOST_TEST(where(R"([1,2])") == "at the top: an object is expected");
  BOOST_TEST(where(with(R"("lines":[{"sku":"tea","quantity":2},{"sku":"mug","quantity":1}])",
                        R"("lines":7)")) == "at /lines: an array is expected");
}

BOOST_AUTO_TEST_SUITE_END()
