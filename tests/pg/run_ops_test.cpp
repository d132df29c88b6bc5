// Operating on runs against a real PostgreSQL: retry a failed run from its failed step, rewind a run to an
// earlier step; both recorded in the run's history.
#define BOOST_TEST_MODULE run_ops
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <atomic>

#include "engine_fixture.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

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

BOOST_AUTO_TEST_SUITE_END()
