// Operating on runs against a real PostgreSQL: retry a failed run from its failed step, rewind a run to an
// earlier step; both recorded in the run's history; list the runs that need an operator (dead-lettered,
// unclaimable).
#define BOOST_TEST_MODULE run_ops
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <set>

#include "engine_fixture.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

namespace {

template <class T>
T run_on(asio::io_context& ioc, asio::awaitable<T> aw) {
  auto f = asio::co_spawn(ioc, std::move(aw), asio::use_future);
  ioc.restart();
  ioc.run();
  return f.get();
}

/// Every page of `q` (limit as given), following `next`; the ids newest first.
std::vector<std::string> all_pages(asio::io_context& ioc, storage::store& s, storage::run_query q,
                                   std::vector<storage::run_summary>* summaries = nullptr) {
  std::vector<std::string> ids;
  for (int page = 0; page < 100; ++page) {
    auto got = run_on(ioc, s.list_runs(q));
    BOOST_REQUIRE(got);
    BOOST_TEST(got->runs.size() <= q.limit);
    for (const auto& r : got->runs) {
      ids.push_back(r.id);
      if (summaries != nullptr) summaries->push_back(r);
    }
    if (!got->next) return ids;
    BOOST_TEST(got->runs.size() == q.limit);  // a page before the last is full
    q.after = got->next;
  }
  BOOST_FAIL("the pages never ended");
  return ids;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(a_retried_run_continues_from_its_failed_step, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<int> a{0}, b{0}, c{0};
  std::atomic<bool> b_fails{true};
  add_workflow(e, "flaky", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto first = [&] { return ++a; };
    co_await ctx.step("a", first);
    auto second = [&] {
      ++b;
      if (b_fails) throw non_retriable_error("the partner is down");
      return 2;
    };
    co_await ctx.step("b", second);
    auto third = [&] { return ++c; };
    co_await ctx.step("c", third);
    co_return json::value("done");
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("flaky", json::object{}).value();
  auto failed = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(failed);
  BOOST_TEST(to_string(failed->status) == "failed");

  BOOST_TEST(b == 1);
  b_fails = false;  // the partner is back
  BOOST_REQUIRE(e.retry_blocking(id));
  BOOST_REQUIRE(wait_until([&] { return c == 1; }, 10s));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(a == 1);  // replayed from its checkpoint, never run again
  BOOST_TEST(b == 2);
  BOOST_TEST(c == 1);
  BOOST_REQUIRE_EQUAL(done->steps.size(), 3u);
  BOOST_TEST(!done->steps[1].failed);
  BOOST_REQUIRE(done->history.is_array());
  BOOST_TEST(done->history.as_array().at(0).at("what").as_string() == "retried");

  auto again = e.retry_blocking(id);  // completed: nothing to retry
  BOOST_REQUIRE(!again);
  BOOST_TEST((again.error() == errc::run_not_failed));
  auto unknown = e.retry_blocking(new_run_id());
  BOOST_REQUIRE(!unknown);
  BOOST_TEST((unknown.error() == errc::run_not_found));
}

BOOST_AUTO_TEST_CASE(a_rewound_run_runs_again_from_the_chosen_step_and_says_so, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<int> a{0}, b{0}, c{0};
  add_workflow(e, "three", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto first = [&] { return ++a; };
    co_await ctx.step("a", first);
    auto second = [&] { return ++b; };
    const int second_run = co_await ctx.step("b", second);
    auto event = co_await ctx.wait_for_event("go", 5s);
    auto third = [&] { return ++c; };
    co_await ctx.step("c", third);
    co_return json::value{{"b", second_run}, {"event", event ? *event : json::value(nullptr)}};
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("three", json::object{}).value();
  BOOST_REQUIRE(e.send_event_blocking(id, "go", json::value("first")));
  auto first = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(first);
  BOOST_TEST(to_string(first->status) == "completed");
  BOOST_TEST(first->output.at("b").as_int64() == 1);

  // Back to step "b" (position 1): b, the event wait and c run again; a is replayed.
  BOOST_REQUIRE(e.rewind_blocking(id, 1));
  BOOST_REQUIRE(wait_until([&] { return c == 2; }, 10s));
  auto second = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(second);
  BOOST_TEST(to_string(second->status) == "completed");
  BOOST_TEST(a == 1);
  BOOST_TEST(b == 2);
  BOOST_TEST(second->output.at("b").as_int64() == 2);
  BOOST_TEST(second->output.at("event").as_string() == "first");  // the consumed event was delivered again
  const auto& entry = second->history.as_array().at(0);
  BOOST_TEST(entry.at("what").as_string() == "rewound");
  BOOST_TEST(entry.at("detail").at("from_step").as_int64() == 1);
  BOOST_TEST(entry.at("detail").at("discarded").as_array().size() == 3u);

  auto negative = e.rewind_blocking(id, -1);
  BOOST_REQUIRE(!negative);
  BOOST_TEST((negative.error() == storage::errc::invalid_argument));
  auto unknown = e.rewind_blocking(new_run_id(), 0);
  BOOST_REQUIRE(!unknown);
  BOOST_TEST((unknown.error() == errc::run_not_found));
}

BOOST_AUTO_TEST_CASE(a_retry_of_a_compensated_run_runs_the_undone_steps_again, *utf::timeout(60)) {
  // A saga: the reservation is released when the charge fails. A retry must reserve again, not replay a
  // reservation that no longer holds.
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<int> notes{0}, reserved{0}, released{0}, charged{0};
  std::atomic<bool> declined{true};
  add_workflow(e, "saga", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto note = [&] { return ++notes; };  // before anything to undo: kept
    co_await ctx.step("note", note);
    auto reserve = [&] { return ++reserved; };
    co_await ctx.step("reserve", reserve);
    co_await ctx.now();  // a record of the engine's between the step and its compensation
    auto release = [&] { return ++released; };
    ctx.compensate("release", release);
    auto charge = [&] {
      ++charged;
      if (declined) throw non_retriable_error("card declined");
      return 1;
    };
    co_await ctx.step("charge", charge);
    co_return json::value(reserved.load());
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("saga", json::object{}).value();
  auto failed = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(failed);
  BOOST_TEST(to_string(failed->status) == "failed");
  BOOST_TEST(released == 1);
  BOOST_TEST(failed->error.at("compensation").at(0).at("from_step").as_int64() == 1);

  declined = false;  // another card
  BOOST_REQUIRE(e.retry_blocking(id));
  BOOST_REQUIRE(wait_until([&] { return e.get_blocking(id)->status == run_status::completed; }, 10s));
  const auto done = e.get_blocking(id);
  BOOST_TEST(notes == 1);     // before the undone steps: replayed
  BOOST_TEST(reserved == 2);  // undone by the compensation: run again
  BOOST_TEST(charged == 2);
  BOOST_TEST(released == 1);  // no failure this time: no compensation
  BOOST_TEST(done->output == json::value(2));
  BOOST_REQUIRE_EQUAL(done->steps.size(), 4u);  // note, reserve, now, charge: the compensation's went
  BOOST_TEST(done->history.as_array().back().at("what").as_string() == "rewound");
}

BOOST_AUTO_TEST_CASE(a_retry_keeps_a_failure_the_workflow_caught_earlier, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<int> probe{0}, last{0};
  std::atomic<bool> last_fails{true};
  add_workflow(e, "careful", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    bool probed = true;
    auto try_partner = [&]() -> int {
      ++probe;
      throw non_retriable_error("the partner is down");
    };
    try {
      co_await ctx.step("probe", try_partner);
    } catch (const step_failed_error&) {
      probed = false;  // recorded as a failure, and the workflow goes on without the partner
    }
    auto finish = [&] {
      ++last;
      if (last_fails) throw non_retriable_error("not yet");
      return 1;
    };
    co_await ctx.step("finish", finish);
    co_return json::value(probed);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("careful", json::object{}).value();
  auto failed = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(failed);
  BOOST_TEST(to_string(failed->status) == "failed");
  last_fails = false;
  BOOST_REQUIRE(e.retry_blocking(id));
  BOOST_REQUIRE(wait_until([&] { return last == 2; }, 10s));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(probe == 1);  // the caught failure replayed from its record: the probe did not run again
  BOOST_TEST(done->output.as_bool() == false);
  BOOST_REQUIRE_EQUAL(done->steps.size(), 2u);
  BOOST_TEST(done->steps[0].failed);
}

BOOST_AUTO_TEST_CASE(a_retry_of_a_run_failed_by_a_parallel_branch_runs_that_branch_step_again,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<int> flaky_runs{0}, steady_runs{0};
  std::atomic<bool> fails{true};
  add_workflow(e, "fan", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto flaky = [&](context& b) -> asio::awaitable<int> {
      auto call = [&] {
        ++flaky_runs;
        if (fails) throw non_retriable_error("the partner is down");
        return 1;
      };
      co_return co_await b.step("call", call);
    };
    auto steady = [&](context& b) -> asio::awaitable<int> {
      auto call = [&]() -> asio::awaitable<int> {
        co_await async_sleep(30ms);  // finishes (and is recorded) after the flaky branch failed
        co_return ++steady_runs;
      };
      co_return co_await b.step("call", call);
    };
    auto [x, y] = co_await ctx.parallel(flaky, steady);
    co_return json::value(x + y);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("fan", json::object{}).value();
  auto failed = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(failed);
  BOOST_TEST(to_string(failed->status) == "failed");
  fails = false;
  BOOST_REQUIRE(e.retry_blocking(id));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(done->output.as_int64() == 2);
  BOOST_TEST(flaky_runs == 2);
  BOOST_TEST(steady_runs == 1);  // its record replayed
}

BOOST_AUTO_TEST_CASE(a_retry_keeps_a_failure_a_branch_caught_and_went_on_from, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<int> charges{0}, fallbacks{0}, partner_calls{0};
  std::atomic<bool> partner_down{true};
  add_workflow(e, "fan", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto careful = [&](context& b) -> asio::awaitable<int> {
      auto charge = [&]() -> int {
        ++charges;
        throw non_retriable_error("card declined");
      };
      try {
        co_await b.step("charge", charge);
      } catch (const step_failed_error&) {
      }
      auto fallback = [&] { return ++fallbacks; };
      co_return co_await b.step("fallback", fallback);
    };
    auto partner = [&](context& b) -> asio::awaitable<int> {
      auto call = [&]() -> asio::awaitable<int> {
        co_await async_sleep(50ms);  // after the careful branch's steps
        ++partner_calls;
        if (partner_down) throw non_retriable_error("partner down");
        co_return 10;
      };
      co_return co_await b.step("call", call);
    };
    auto [x, y] = co_await ctx.parallel(careful, partner);
    co_return json::value(x + y);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("fan", json::object{}).value();
  auto failed = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(failed);
  BOOST_TEST(to_string(failed->status) == "failed");
  partner_down = false;
  BOOST_REQUIRE(e.retry_blocking(id));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(done->output.as_int64() == 11);
  BOOST_TEST(charges == 1);    // the caught failure replayed, not run again
  BOOST_TEST(fallbacks == 1);  // and what the branch did after it
  BOOST_TEST(partner_calls == 2);
}

BOOST_AUTO_TEST_CASE(listings_filter_dead_lettered_and_unclaimable_runs_a_page_at_a_time, *utf::timeout(60)) {
  auto db = fresh_database();
  asio::io_context ioc;  // outlives the store (see store.hpp)
  storage::store s({db});
  BOOST_REQUIRE(s.migrate_blocking());
  auto enqueue = [&](const std::string& workflow, int version) {
    const storage::new_run run{
        new_run_id(), workflow,     version,      json::object{}, std::nullopt, 0,
        std::nullopt, std::nullopt, std::nullopt, std::nullopt,   std::nullopt, std::nullopt,
        std::nullopt, std::nullopt, std::nullopt};
    BOOST_REQUIRE(run_on(ioc, s.enqueue(run)));
    return run.id;
  };
  // Dead-lettered for real: claimed with a short lease that lapses, then claimed again past
  // max_recoveries (0). Three of "wf", two of "other"; in between, runs that failed otherwise, completed,
  // or are queued and claimable, which no filter must show.
  std::vector<std::string> dead_wf, dead_other;
  std::string early_v2;
  for (int i = 0; i < 3; ++i) {
    dead_wf.push_back(enqueue("wf", 1));
    if (i < 2)
      dead_other.push_back(enqueue("other", 1));
    else
      early_v2 = enqueue("wf", 2);
  }
  const std::vector<storage::workflow_version> held{{"wf", 1}, {"other", 1}};
  const storage::claim_request lapsing{"crasher", held, 10, 50ms, 5};
  BOOST_REQUIRE_EQUAL(run_on(ioc, s.claim(lapsing)).value().runs.size(), 5u);
  const storage::claim_request strict{"successor", held, 10, 30s, 0};
  std::set<std::string> dead;
  BOOST_REQUIRE(wait_until(
      [&] {
        for (const auto& id : run_on(ioc, s.claim(strict)).value().dead_lettered)
          dead.insert(id);
        return dead.size() == 5;
      },
      10s));
  // A version-2 run of wf (enqueued above, between them) and one of "third" no worker has: unclaimable
  // once a worker registers wf 1 and other 1 only. A queued wf 1 run stays claimable.
  const auto claimable = enqueue("wf", 1);
  const auto third = enqueue("third", 1);
  BOOST_REQUIRE(run_on(ioc, s.register_worker("live", held, 60s)));
  const std::vector<storage::workflow_version> wf2{{"wf", 2}};
  std::vector<std::string> unclaimable_wf;
  for (int i = 0; i < 4; ++i)
    unclaimable_wf.push_back(enqueue("wf", 2));
  (void)claimable;

  // Newest first: the ids are UUIDv7, in enqueue order.
  auto newest_first = [](std::vector<std::string> ids) {
    std::sort(ids.rbegin(), ids.rend());
    return ids;
  };
  std::vector<std::string> all_dead = dead_wf;
  all_dead.insert(all_dead.end(), dead_other.begin(), dead_other.end());
  BOOST_TEST(std::set<std::string>(all_dead.begin(), all_dead.end()) == dead);

  storage::run_query q;
  q.filter = storage::run_filter::dead_lettered;
  q.limit = 2;
  std::vector<storage::run_summary> summaries;
  BOOST_TEST(all_pages(ioc, s, q, &summaries) == newest_first(all_dead), boost::test_tools::per_element());
  for (const auto& r : summaries) {
    BOOST_TEST(to_string(r.status) == "failed");
    BOOST_TEST(r.error.at("code").as_string() == "dead_lettered");
    BOOST_TEST(r.error.at("recoveries").to_number<int>() == 1);
    BOOST_TEST(!r.unclaimable.has_value());
  }
  q.workflow = "wf";
  BOOST_TEST(all_pages(ioc, s, q) == newest_first(dead_wf), boost::test_tools::per_element());
  q.status = run_status::failed;  // the filter's own status: the same
  BOOST_TEST(all_pages(ioc, s, q) == newest_first(dead_wf), boost::test_tools::per_element());
  q.status = run_status::queued;  // another: refused
  BOOST_TEST(!run_on(ioc, s.list_runs(q)));

  // Unclaimable: the version-2 runs of wf (the first enqueued among the dead-lettered ones too) and third's.
  storage::run_query u;
  u.filter = storage::run_filter::unclaimable;
  u.limit = 2;
  summaries.clear();
  const auto listed = all_pages(ioc, s, u, &summaries);
  std::vector<std::string> expected = unclaimable_wf;
  expected.push_back(early_v2);
  expected.push_back(third);
  BOOST_TEST(listed == newest_first(expected), boost::test_tools::per_element());
  BOOST_TEST((std::find(listed.begin(), listed.end(), claimable) == listed.end()));
  for (const auto& r : summaries) {
    BOOST_TEST(to_string(r.status) == "queued");
    BOOST_REQUIRE(r.unclaimable.has_value());
    BOOST_TEST(r.unclaimable->find("version " + std::to_string(r.version)) != std::string::npos);
  }
  u.workflow = "wf";
  const auto of_wf = all_pages(ioc, s, u);
  BOOST_TEST(of_wf.size() == 5u);
  BOOST_TEST((std::find(of_wf.begin(), of_wf.end(), third) == of_wf.end()));
  for (const auto& id : unclaimable_wf)
    BOOST_TEST((std::find(of_wf.begin(), of_wf.end(), id) != of_wf.end()));

  // An unfiltered listing says why the unclaimable ones wait, and nothing for the claimable one.
  storage::run_query everything;
  everything.limit = 1000;
  summaries.clear();
  (void)all_pages(ioc, s, everything, &summaries);
  for (const auto& r : summaries) {
    BOOST_TEST_CONTEXT(r.id) {
      const bool expect = std::find(listed.begin(), listed.end(), r.id) != listed.end();
      BOOST_TEST(r.unclaimable.has_value() == expect);
    }
  }

  // A worker that registers wf 2 makes those claimable: the filter then shows third's only.
  BOOST_REQUIRE(run_on(ioc, s.register_worker("newer", wf2, 60s)));
  u.workflow.reset();
  BOOST_TEST(all_pages(ioc, s, u) == std::vector<std::string>{third}, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()
