// Pure unit tests: run ids, retry delays, error mapping. No database.
#define BOOST_TEST_MODULE unit
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>
#include <set>

#include "keel/common/run_id.hpp"
#include "keel/engine/error.hpp"
#include "keel/engine/step_options.hpp"
#include "keel/storage/error.hpp"

using namespace std::chrono_literals;

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(run_ids_are_unique_time_ordered_uuid_v7) {
  std::set<std::string> seen;
  std::string prev;
  for (int i = 0; i < 10000; ++i) {
    auto id = keel::new_run_id();
    BOOST_REQUIRE(keel::is_valid_run_id(id));
    BOOST_TEST(id[14] == '7');
    BOOST_TEST(seen.insert(id).second);
    BOOST_TEST(id.substr(0, 13) >= prev.substr(0, std::min<std::size_t>(13, prev.size())));
    prev = id;
  }
  BOOST_TEST(!keel::is_valid_run_id("0190a7c2-8d1e-7abc-8def-0123456789a"));
  BOOST_TEST(!keel::is_valid_run_id("0190a7c2x8d1e-7abc-8def-0123456789ab"));
}

BOOST_AUTO_TEST_CASE(retry_delays_grow_exponentially_within_jitter_and_cap) {
  keel::retry_policy p;
  p.initial_delay = 100ms;
  p.multiplier = 2;
  p.max_delay = 1000ms;
  p.jitter = 0.0;
  BOOST_TEST(p.delay_after(1, 0.5).count() == 100);
  BOOST_TEST(p.delay_after(2, 0.5).count() == 200);
  BOOST_TEST(p.delay_after(3, 0.5).count() == 400);
  BOOST_TEST(p.delay_after(10, 0.5).count() == 1000);
  p.jitter = 0.2;
  BOOST_TEST(p.delay_after(1, 0.0).count() == 80);
  BOOST_TEST(p.delay_after(1, 0.999).count() >= 119);
}

BOOST_AUTO_TEST_CASE(sqlstates_map_to_storage_errors) {
  using keel::storage::errc;
  BOOST_TEST((keel::storage::errc_from_sqlstate("40001") == errc::retryable));
  BOOST_TEST((keel::storage::errc_from_sqlstate("40P01") == errc::retryable));
  BOOST_TEST((keel::storage::errc_from_sqlstate("23505") == errc::unique_violation));
  BOOST_TEST((keel::storage::errc_from_sqlstate("08006") == errc::connection_lost));
  BOOST_TEST((keel::storage::errc_from_sqlstate("57P01") == errc::connection_lost));
  BOOST_TEST((keel::storage::errc_from_sqlstate("42601") == errc::query_failed));
  BOOST_TEST((keel::storage::errc_from_sqlstate("22P05") == errc::data_rejected));  // \u0000 in jsonb
  BOOST_TEST((keel::storage::errc_from_sqlstate("23502") == errc::data_rejected));
  BOOST_TEST((keel::storage::errc_from_sqlstate("57014") == errc::query_failed));  // statement timeout
}

BOOST_AUTO_TEST_CASE(engine_errors_have_stable_codes_and_messages) {
  BOOST_TEST(keel::code_name(keel::errc::idempotency_conflict) == "idempotency_conflict");
  auto ec = make_error_code(keel::errc::unknown_workflow);
  BOOST_TEST(ec.message() == "unknown workflow");
  BOOST_TEST(std::string(ec.category().name()) == "keel");
}

BOOST_AUTO_TEST_SUITE_END()
