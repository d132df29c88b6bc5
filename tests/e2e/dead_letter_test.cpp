// A run that kills every worker that runs it is dead-lettered by real worker processes, not run forever.
#define BOOST_TEST_MODULE dead_letter
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "engine_fixture.hpp"
#include "worker_process.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;

namespace {}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(a_run_that_loses_its_worker_past_max_recoveries_is_dead_lettered_not_rerun,
                     *boost::unit_test::timeout(240)) {
  auto db = fresh_database();
  temp_dir dir;
  const std::string effects = dir.path() + "/effects", marker = dir.path() + "/marker";
  // Only migrates and enqueues: the workflow's body lives in the worker processes.
  engine producer(options_for(db));
  add_workflow(producer, "crashable",
               [](context&, json::value) -> asio::awaitable<json::value> { co_return nullptr; });
  BOOST_REQUIRE(producer.tick_blocking());
  auto id = producer.enqueue_blocking("crashable", json::object{}).value();

  const std::vector<std::string> args{
      "--db",      db,      "--effects",        effects, "--lease-ms", "500",
      "--hold-ms", "60000", "--max-recoveries", "2",     "--marker",   marker};
  // Killed inside step s2 three times: the first execution, then two recoveries (max_recoveries = 2).
  for (int kill = 1; kill <= 3; ++kill) {
    BOOST_TEST_CONTEXT("kill " << kill) {
      spawned_worker w(args);
      BOOST_REQUIRE(wait_until([&] { return !read_lines(marker).empty(); }, 30s));
      w.kill_hard();
      std::filesystem::remove(marker);
      BOOST_TEST(query_value(db, "SELECT status FROM keel.runs") == "running");
      BOOST_TEST(count_lines(effects)[id + " s2"] == kill);
    }
  }

  // A third loss is past the limit: the next claim fails the run instead of running s2 a fourth time.
  spawned_worker last(args);
  auto run = producer.wait_blocking(id, 30s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "failed");
  BOOST_REQUIRE(run->error.is_object());
  BOOST_TEST(run->error.at("code").as_string() == "dead_lettered");
  BOOST_TEST(run->error.at("recoveries").to_number<int>() == 3);
  BOOST_TEST(!run->owner.has_value());
  BOOST_TEST(run->claims == 3);
  BOOST_REQUIRE_EQUAL(run->steps.size(), 1u);  // s1 only: s2 never completed
  auto counts = count_lines(effects);
  BOOST_TEST(counts[id + " s1"] == 1);
  BOOST_TEST(counts[id + " s2"] == 3);
  BOOST_TEST(counts[id + " s3"] == 0);
  BOOST_TEST(counts[id + " completed"] == 0);
  BOOST_TEST(read_lines(marker).empty());

  // The listing of dead-lettered runs shows it, with its recoveries; of its workflow only.
  run_query q;
  q.filter = run_filter::dead_lettered;
  auto listed = producer.list_runs_blocking(q);
  BOOST_REQUIRE(listed);
  BOOST_REQUIRE_EQUAL(listed->runs.size(), 1u);
  BOOST_TEST(listed->runs[0].id == id);
  BOOST_TEST(listed->runs[0].error.at("recoveries").to_number<int>() == 3);
  BOOST_TEST(!listed->next.has_value());
  q.workflow = "crashable";
  BOOST_TEST(producer.list_runs_blocking(q).value().runs.size() == 1u);
  q.workflow = "other";
  BOOST_TEST(producer.list_runs_blocking(q).value().runs.empty());
  BOOST_TEST(last.terminate() == 0);
}

BOOST_AUTO_TEST_SUITE_END()
