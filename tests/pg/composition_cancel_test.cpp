// Compensation and cooperative cancel against a real PostgreSQL (part of the composition test binary): a
// failing or cancelled run undoes its steps newest first; a cancel reaches a run wherever it is.
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "engine_fixture.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(compensations_run_newest_first_when_the_run_fails_each_as_a_retried_step,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::mutex m;
  std::vector<std::string> effects;
  auto did = [&](const std::string& what) {
    std::lock_guard lock(m);
    effects.push_back(what);
  };
  std::atomic<int> refund_attempts{0};
  add_workflow(e, "order", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto reserve = [&] {
      did("reserve");
      return 1;
    };
    co_await ctx.step("reserve", reserve);
    auto release = [&] { did("release"); };
    ctx.compensate("release", release);
    auto charge = [&] {
      did("charge");
      return 2;
    };
    co_await ctx.step("charge", charge);
    step_options retried;
    retried.retry.max_attempts = 3;
    retried.retry.initial_delay = 10ms;
    auto refund = [&] {
      if (++refund_attempts == 1) throw std::runtime_error("payment provider: 503");
      did("refund");
    };
    ctx.compensate("refund", refund, retried);
    auto ship = []() -> int { throw non_retriable_error("no courier for that address"); };
    co_await ctx.step("ship", ship);
    co_return json::value("shipped");
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("order", json::object{}).value();
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "failed");
  BOOST_TEST(done->error.at("message").as_string() == "no courier for that address");
  const auto& compensation = done->error.at("compensation").as_array();
  BOOST_REQUIRE_EQUAL(compensation.size(), 2u);
  BOOST_TEST(compensation.at(0).at("step").as_string() == "keel.compensate:refund");
  BOOST_TEST(compensation.at(0).at("status").as_string() == "completed");
  BOOST_TEST(compensation.at(1).at("step").as_string() == "keel.compensate:release");
  {
    std::lock_guard lock(m);
    BOOST_TEST((effects == std::vector<std::string>{"reserve", "charge", "refund", "release"}));
  }
  BOOST_TEST(refund_attempts == 2);  // retried per its options
  BOOST_TEST(query_value(db, "SELECT string_agg(name, ',' ORDER BY seq) FROM keel.steps") ==
             "reserve,charge,ship,keel.compensate:refund,keel.compensate:release");
}

BOOST_AUTO_TEST_CASE(a_cancelled_run_sees_it_at_its_next_step_compensates_and_ends_cancelled,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<bool> charged{false}, refunded{false}, shipped{false};
  add_workflow(e, "order", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto charge = [&]() -> asio::awaitable<int> {
      charged = true;
      co_await async_sleep(300ms);  // the cancel arrives meanwhile: this step still completes
      co_return 1;
    };
    co_await ctx.step("charge", charge);
    auto refund = [&] { refunded = true; };
    ctx.compensate("refund", refund);
    auto ship = [&] {
      shipped = true;
      return 2;
    };
    co_await ctx.step("ship", ship);  // never runs: the cancel is seen here
    co_return json::value("shipped");
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("order", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return charged.load(); }, 10s));
  auto asked = e.cancel_blocking(id);  // the default grace: cooperative
  BOOST_REQUIRE(asked);
  BOOST_TEST(to_string(*asked) == "running");
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "cancelled");
  BOOST_TEST(done->error.at("code").as_string() == "cancelled");
  BOOST_TEST(done->error.at("compensation").at(0).at("status").as_string() == "completed");
  BOOST_TEST(refunded.load());
  BOOST_TEST(!shipped.load());
  BOOST_TEST(query_value(db, "SELECT string_agg(name, ',' ORDER BY seq) FROM keel.steps") ==
             "charge,keel.compensate:refund");
}

BOOST_AUTO_TEST_CASE(a_parked_run_asked_to_cancel_is_woken_to_see_it_on_another_worker, *utf::timeout(60)) {
  auto db = fresh_database();
  auto o = options_for(db);
  o.poll_interval = 10s;  // the cancel's notification must wake the worker
  engine e(o);
  std::atomic<bool> caught{false}, after{false};
  add_workflow(e, "waiter", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    try {
      co_await ctx.wait_for_event("never");
    } catch (const cancelled_error&) {
      caught = true;  // handled: its cleanup steps still run
    }
    auto cleanup = [&] {
      after = true;
      return 0;
    };
    co_await ctx.step("cleanup", cleanup);
    co_return json::value("handled");
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("waiter", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, id) == "waiting"; }, 10s));
  engine other(options_for(db));  // runs nothing: the request travels through the database
  auto asked = other.cancel_blocking(id);
  BOOST_REQUIRE(asked);
  BOOST_TEST(to_string(*asked) == "queued");
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "cancelled");
  BOOST_TEST(caught.load());
  BOOST_TEST(after.load());
}

BOOST_AUTO_TEST_CASE(a_run_that_outlasts_its_cancel_grace_is_fenced_off, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<bool> started{false}, finished{false};
  add_workflow(e, "stubborn", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto slow = [&]() -> asio::awaitable<int> {
      started = true;
      co_await async_sleep(3s);  // ignores the cancel for longer than its grace
      finished = true;
      co_return 1;
    };
    co_await ctx.step("slow", slow);
    co_return json::value("done");
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("stubborn", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return started.load(); }, 10s));
  cancel_options brief;
  brief.grace = 300ms;
  BOOST_REQUIRE(e.cancel_blocking(id, brief));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "cancelled");
  BOOST_TEST(!finished.load());  // fenced off while its step was still running
  BOOST_TEST(std::string(done->error.at("message").as_string()).find("grace") != std::string::npos);
  BOOST_REQUIRE(wait_until([&] { return finished.load(); }, 10s));
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.steps") == "0");  // its late checkpoint was fenced
}

BOOST_AUTO_TEST_CASE(a_cancel_its_worker_has_not_heard_of_is_seen_by_the_next_wait_instead_of_parking,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<bool> gate{false}, in_gate{false}, caught{false};
  add_workflow(e, "waiter", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto hold = [&]() -> asio::awaitable<int> {
      in_gate = true;
      while (!gate)
        co_await async_sleep(5ms);
      co_return 0;
    };
    co_await ctx.step("gate", hold);
    try {
      co_await ctx.wait_for_event("never");  // no timeout: parked, it would wait for ever
    } catch (const cancelled_error&) {
      caught = true;
      throw;
    }
    co_return nullptr;
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("waiter", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return in_gate.load(); }, 10s));
  // A request the worker never hears of (as if its notification were lost): only the database knows.
  query_value(db,
              "UPDATE keel.runs SET cancel_deadline = now() + interval '30 seconds' WHERE id = '" + id + "'");
  gate = true;
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "cancelled");
  BOOST_TEST(caught.load());
}

BOOST_AUTO_TEST_CASE(a_running_run_hears_of_a_missed_cancel_from_its_heartbeat, *utf::timeout(60)) {
  auto db = fresh_database();
  auto o = options_for(db);
  o.heartbeat = 100ms;
  engine e(o);
  std::atomic<int> steps{0};
  add_workflow(e, "busy", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    for (int i = 0; i < 500; ++i) {
      auto work = [&]() -> asio::awaitable<int> {
        co_await async_sleep(10ms);
        co_return ++steps;
      };
      co_await ctx.step("work", work);
    }
    co_return json::value("all done");
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("busy", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return steps.load() >= 3; }, 10s));
  // Only the database knows (as if the notification were lost); the run only runs steps, never waits.
  query_value(db,
              "UPDATE keel.runs SET cancel_deadline = now() + interval '30 seconds' WHERE id = '" + id + "'");
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "cancelled");
  BOOST_TEST(steps.load() < 400);  // it stopped at a step boundary soon after a heartbeat told it
  // A run nobody asked to cancel goes through many heartbeats untouched.
  steps = 0;
  auto untouched = e.enqueue_blocking("busy", json::object{}).value();
  done = e.wait_blocking(untouched, 30s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
}

BOOST_AUTO_TEST_SUITE_END()
