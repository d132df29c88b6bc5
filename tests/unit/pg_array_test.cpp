// PostgreSQL's text form of arrays, as the run log's follower reads it (libstorage/src/pg_array.hpp).
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include "pg_array.hpp"

using keel::storage::detail::parse_text_array;
using elements = std::vector<std::optional<std::string>>;

BOOST_AUTO_TEST_SUITE(pg_array)

BOOST_AUTO_TEST_CASE(plain_quoted_and_null_elements) {
  BOOST_TEST((parse_text_array("{}") == elements{}));
  BOOST_TEST((parse_text_array("{run_started,step_completed}") == elements{"run_started", "step_completed"}));
  BOOST_TEST((parse_text_array("{1,NULL,-3}") == elements{"1", std::nullopt, "-3"}));
  BOOST_TEST((parse_text_array(R"({"{\"i\": 1}",NULL,"a \\ b","NULL",""})") ==
              elements{R"({"i": 1})", std::nullopt, R"(a \ b)", "NULL", ""}));
  BOOST_TEST((parse_text_array(R"({"{\"q\": \"say \\\"hi\\\", {x}\"}"})") ==
              elements{R"({"q": "say \"hi\", {x}"})"}));
  // How array_out prints a jsonb null, an element with spaces, multibyte UTF-8; explicit bounds.
  BOOST_TEST(
      (parse_text_array("{\"null\",\"a b\",\"\u00e9t\u00e9\"}") == elements{"null", "a b", "\u00e9t\u00e9"}));
  BOOST_TEST((parse_text_array("{\xc3\xa9t\xc3\xa9,x}") == elements{"\xc3\xa9t\xc3\xa9", "x"}));
  BOOST_TEST((parse_text_array("[0:1]={a,b}") == elements{"a", "b"}));
}

BOOST_AUTO_TEST_CASE(what_is_not_a_one_dimensional_array_is_refused) {
  for (const char* bad : {"", "{", "}", "1,2", "{1,}", "{,1}", "{\"a}", "{{1,2},{3,4}}",
                          "[0:1][1:2]={{1,2},{3,4}}", "[0:1]=", "{\"a\"b}", "{a\"b}", "{\"a\\\"}"}) {
    BOOST_TEST_INFO(bad);
    BOOST_TEST(!parse_text_array(bad).has_value());
  }
}

BOOST_AUTO_TEST_SUITE_END()
