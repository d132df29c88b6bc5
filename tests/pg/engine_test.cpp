// Engine behaviour against a real PostgreSQL: replay, idempotency, retries, timeouts, cancel, errors.
#define BOOST_TEST_MODULE engine
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "engine_fixture.hpp"
#include "keel/common/log.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;

namespace {

/// A workflow of three steps counting how often each step's function really runs. Step "b" can be held open
/// so that the test can stop the engine in the middle of it.
struct three_steps {
  std::atomic<int> a{0}, b{0}, c{0};
  std::atomic<bool> in_b{false};
  std::chrono::milliseconds hold_b{0};

  wf_fn body() {
    return [this](context& ctx, json::value in) -> asio::awaitable<json::value> {
      auto x = co_await ctx.step("a", [&] {
        ++a;
        return in.at("n").as_int64() + 1;
      });
      auto y = co_await ctx.step("b", [&]() -> asio::awaitable<std::int64_t> {
        ++b;
        in_b = true;
        co_await async_sleep(hold_b);
        co_return x * 10;
      });
      auto z = co_await ctx.step("c", [&] {
        ++c;
        return json::value{{"sum", x + y}};
      });
      co_return z;
    };
  }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(runs_a_workflow_to_completion_and_records_each_step) {
  auto db = fresh_database();
  engine e(options_for(db));
  three_steps wf;
  add_workflow(e, "three", wf.body());
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("three", json::value{{"n", 1}});
  BOOST_REQUIRE(id);
  auto run = e.wait_blocking(*id, 20s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "completed");
  BOOST_TEST(json::serialize(run->output) == R"({"sum":22})");
  BOOST_REQUIRE_EQUAL(run->steps.size(), 3u);
  BOOST_TEST(run->steps[0].name == "a");
  BOOST_TEST(run->steps[1].output.as_int64() == 20);
  BOOST_TEST(run->steps[2].attempts == 1);
  BOOST_TEST((run->steps[0].started_at <= run->steps[0].finished_at));
  BOOST_TEST((wf.a == 1 && wf.b == 1 && wf.c == 1));
}

BOOST_AUTO_TEST_CASE(replays_completed_steps_without_rerunning_them) {
  auto db = fresh_database();
  three_steps wf;
  wf.hold_b = 300ms;
  run_id id;
  {
    // First worker: stopped while step b runs; b finishes and is checkpointed, then the run is released.
    engine first(options_for(db));
    add_workflow(first, "three", wf.body());
    BOOST_REQUIRE(first.start_blocking());
    id = first.enqueue_blocking("three", json::value{{"n", 4}}).value();
    BOOST_REQUIRE(wait_until([&] { return wf.in_b.load(); }, 10s));
    first.stop_blocking();
  }
  BOOST_TEST((wf.a == 1 && wf.b == 1 && wf.c == 0));
  BOOST_TEST(query_value(db, "SELECT status FROM keel.runs") == "queued");
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.steps") == "2");

  std::atomic<int> execution{0};
  engine second(options_for(db));
  second.register_workflow<json::value, json::value>(
      "three", 1, [&, body = wf.body()](context& ctx, json::value in) -> asio::awaitable<json::value> {
        execution = ctx.execution();
        co_return co_await body(ctx, std::move(in));
      });
  BOOST_REQUIRE(second.tick_blocking());
  auto run = second.get_blocking(id).value();
  BOOST_TEST(to_string(run.status) == "completed");
  BOOST_TEST(json::serialize(run.output) == R"({"sum":55})");
  BOOST_TEST((wf.a == 1 && wf.b == 1 && wf.c == 1));
  BOOST_TEST(execution == 2);
}

BOOST_AUTO_TEST_CASE(fails_the_run_when_a_recorded_step_has_another_name) {
  auto db = fresh_database();
  std::atomic<bool> in_first{false};
  run_id id;
  {
    engine first(options_for(db));
    add_workflow(first, "nd", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
      co_await ctx.step("charge", [&]() -> asio::awaitable<int> {
        in_first = true;
        co_await async_sleep(200ms);
        co_return 1;
      });
      co_await ctx.step("ship", [] { return 2; });
      co_return nullptr;
    });
    BOOST_REQUIRE(first.start_blocking());
    id = first.enqueue_blocking("nd", json::object{}).value();
    BOOST_REQUIRE(wait_until([&] { return in_first.load(); }, 10s));
    first.stop_blocking();
  }
  std::atomic<int> renamed_ran{0};
  engine second(options_for(db));
  add_workflow(second, "nd", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    co_await ctx.step("authorize", [&] { return ++renamed_ran; });
    co_return nullptr;
  });
  BOOST_REQUIRE(second.tick_blocking());
  auto run = second.get_blocking(id).value();
  BOOST_TEST(to_string(run.status) == "failed");
  BOOST_TEST(run.error.at("code").as_string() == "nondeterminism");
  BOOST_TEST(std::string(run.error.at("message").as_string()).find("'charge'") != std::string::npos);
  BOOST_TEST(renamed_ran == 0);
}

BOOST_AUTO_TEST_CASE(fails_the_run_when_the_workflow_now_ends_before_its_recorded_steps) {
  auto db = fresh_database();
  std::atomic<bool> in_second{false};
  run_id id;
  {
    engine first(options_for(db));
    add_workflow(first, "shrinking", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
      co_await ctx.step("one", [] { return 1; });
      co_await ctx.step("two", [&]() -> asio::awaitable<int> {
        in_second = true;
        co_await async_sleep(200ms);
        co_return 2;
      });
      co_await ctx.step("three", [] { return 3; });
      co_return nullptr;
    });
    BOOST_REQUIRE(first.start_blocking());
    id = first.enqueue_blocking("shrinking", json::object{}).value();
    BOOST_REQUIRE(wait_until([&] { return in_second.load(); }, 10s));
    first.stop_blocking();
  }
  engine second(options_for(db));
  add_workflow(second, "shrinking", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    co_await ctx.step("one", [] { return 1; });
    co_return nullptr;
  });
  BOOST_REQUIRE(second.tick_blocking());
  auto run = second.get_blocking(id).value();
  BOOST_TEST(to_string(run.status) == "failed");
  BOOST_TEST(run.error.at("code").as_string() == "nondeterminism");
}

BOOST_AUTO_TEST_CASE(same_idempotency_key_and_input_return_the_same_run) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "wf", [](context&, json::value v) -> asio::awaitable<json::value> { co_return v; });
  BOOST_REQUIRE(e.tick_blocking());  // migrates
  enqueue_options o;
  o.idempotency_key = "order-42";
  auto first = e.enqueue_blocking("wf", json::value{{"amount", 10}}, o);
  auto second = e.enqueue_blocking("wf", json::value{{"amount", 10}}, o);
  BOOST_REQUIRE(first);
  BOOST_REQUIRE(second);
  BOOST_TEST(*first == *second);
  auto conflict = e.enqueue_blocking("wf", json::value{{"amount", 11}}, o);
  BOOST_REQUIRE(!conflict);
  BOOST_TEST(conflict.error() == make_error_code(errc::idempotency_conflict));
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.runs") == "1");
}

BOOST_AUTO_TEST_CASE(concurrent_enqueues_with_one_key_create_one_run) {
  auto db = fresh_database();
  engine a(options_for(db)), b(options_for(db));
  for (auto* e : {&a, &b})
    add_workflow(*e, "wf", [](context&, json::value v) -> asio::awaitable<json::value> { co_return v; });
  BOOST_REQUIRE(a.tick_blocking());
  std::vector<std::thread> threads;
  std::vector<result<run_id>> ids(16, result<run_id>(errc::run_not_found));
  for (std::size_t i = 0; i < ids.size(); ++i) {
    threads.emplace_back([&, i] {
      enqueue_options o;
      o.idempotency_key = "same-key";
      ids[i] = (i % 2 ? a : b).enqueue_blocking("wf", json::value{{"x", 1}}, o);
    });
  }
  for (auto& t : threads)
    t.join();
  for (auto& r : ids) {
    BOOST_REQUIRE(r);
    BOOST_TEST(*r == *ids[0]);
  }
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.runs") == "1");
}

BOOST_AUTO_TEST_CASE(unknown_workflows_and_bad_ids_are_typed_errors) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "wf", [](context&, json::value v) -> asio::awaitable<json::value> { co_return v; });
  BOOST_REQUIRE(e.tick_blocking());
  auto r = e.enqueue_blocking("nope", json::object{});
  BOOST_TEST(r.error() == make_error_code(errc::unknown_workflow));
  BOOST_TEST(e.get_blocking("not-a-uuid").error() == make_error_code(errc::invalid_run_id));
  BOOST_TEST(e.get_blocking(new_run_id()).error() == make_error_code(errc::run_not_found));
  BOOST_TEST(e.cancel_blocking(new_run_id()).error() == make_error_code(errc::run_not_found));
}

BOOST_AUTO_TEST_CASE(fails_a_run_whose_input_does_not_convert) {
  auto db = fresh_database();
  engine e(options_for(db));
  e.register_workflow<int, int>("typed", 1, [](context&, int v) -> asio::awaitable<int> { co_return v + 1; });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("typed", json::value("not a number")).value();
  auto run = e.wait_blocking(id, 20s).value();
  BOOST_TEST(to_string(run.status) == "failed");
  BOOST_TEST(run.error.at("code").as_string() == "invalid_input");
  auto ok = e.enqueue_blocking("typed", json::value(41)).value();
  BOOST_TEST(e.wait_blocking(ok, 20s).value().output.as_int64() == 42);
}

BOOST_AUTO_TEST_CASE(retries_a_failing_step_with_backoff_then_succeeds) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<int> calls{0};
  add_workflow(e, "flaky", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    step_options so;
    so.retry.max_attempts = 3;
    so.retry.initial_delay = 50ms;
    so.retry.jitter = 0.0;
    auto v = co_await ctx.step(
        "call",
        [&] {
          if (++calls < 3) throw std::runtime_error("upstream 503");
          return std::string("ok");
        },
        so);
    co_return json::value(v);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("flaky", json::object{}).value();
  auto run = e.wait_blocking(id, 20s).value();
  BOOST_TEST(to_string(run.status) == "completed");
  BOOST_TEST(calls == 3);
  BOOST_REQUIRE_EQUAL(run.steps.size(), 1u);
  BOOST_TEST(run.steps[0].attempts == 3);
  // Backoff of 50 ms then 100 ms (no jitter) separates the attempts.
  BOOST_TEST((run.steps[0].finished_at - run.steps[0].started_at) >= 150ms);
}

BOOST_AUTO_TEST_CASE(records_a_structured_error_when_retries_are_exhausted) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<int> calls{0};
  add_workflow(e, "doomed", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    step_options so;
    so.retry.max_attempts = 2;
    so.retry.initial_delay = 1ms;
    co_await ctx.step(
        "pay",
        [&]() -> int {
          ++calls;
          throw std::runtime_error("card declined");
        },
        so);
    co_return nullptr;
  });
  BOOST_REQUIRE(e.start_blocking());
  auto run = e.wait_blocking(e.enqueue_blocking("doomed", json::object{}).value(), 20s).value();
  BOOST_TEST(to_string(run.status) == "failed");
  BOOST_TEST(calls == 2);
  BOOST_TEST(run.error.at("code").as_string() == "step_failed");
  BOOST_TEST(run.error.at("message").as_string() == "card declined");
  BOOST_TEST(run.error.at("step").as_string() == "pay");
  BOOST_TEST(run.error.at("attempts").as_int64() == 2);
  BOOST_REQUIRE_EQUAL(run.steps.size(), 1u);
  BOOST_TEST(run.steps[0].failed);
}

BOOST_AUTO_TEST_CASE(exceptions_not_derived_from_std_exception_fail_the_step_and_the_run) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "odd_step", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    step_options so;
    so.retry.max_attempts = 1;
    co_await ctx.step(
        "throws_int", []() -> int { throw 42; }, so);
    co_return nullptr;
  });
  add_workflow(e, "odd_body", [&](context&, json::value) -> asio::awaitable<json::value> {
    throw 7;
    co_return nullptr;
  });
  BOOST_REQUIRE(e.start_blocking());
  auto step_run = e.wait_blocking(e.enqueue_blocking("odd_step", json::object{}).value(), 20s).value();
  BOOST_TEST(to_string(step_run.status) == "failed");
  BOOST_TEST(step_run.error.at("code").as_string() == "step_failed");
  BOOST_TEST(step_run.error.at("step").as_string() == "throws_int");
  auto body_run = e.wait_blocking(e.enqueue_blocking("odd_body", json::object{}).value(), 20s).value();
  BOOST_TEST(to_string(body_run.status) == "failed");
  BOOST_TEST(body_run.error.at("code").as_string() == "workflow_error");
}

BOOST_AUTO_TEST_CASE(outputs_and_inputs_the_database_cannot_store_fail_with_typed_errors) {
  // jsonb cannot hold "\u0000": the step, the run and the enqueue each fail for good instead of looping.
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<int> calls{0};
  add_workflow(e, "nul_step", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    co_await ctx.step("emit", [&] {
      ++calls;
      return std::string("a\0b", 3);
    });
    co_return nullptr;
  });
  add_workflow(e, "nul_output", [&](context&, json::value) -> asio::awaitable<json::value> {
    co_return json::value(std::string("x\0y", 3));
  });
  BOOST_REQUIRE(e.start_blocking());
  auto step_run = e.wait_blocking(e.enqueue_blocking("nul_step", json::object{}).value(), 20s).value();
  BOOST_TEST(to_string(step_run.status) == "failed");
  BOOST_TEST(step_run.error.at("step").as_string() == "emit");
  BOOST_TEST(calls == 1);
  auto out_run = e.wait_blocking(e.enqueue_blocking("nul_output", json::object{}).value(), 20s).value();
  BOOST_TEST(to_string(out_run.status) == "failed");
  BOOST_TEST(out_run.error.at("code").as_string() == "output_rejected");
  // Bad and good enqueues at once, so that they would share a batch if the bad one reached the writer: the
  // bad one is refused with a typed error, and none of the good ones is held back by it.
  std::vector<std::future<result<run_id>>> good;
  auto bad = std::async(std::launch::async,
                        [&] { return e.enqueue_blocking("nul_output", json::value(std::string("\0", 1))); });
  for (int i = 0; i < 20; ++i)
    good.push_back(
        std::async(std::launch::async, [&] { return e.enqueue_blocking("nul_step", json::object{}); }));
  BOOST_TEST(bad.get().error() == make_error_code(storage::errc::invalid_argument));
  for (auto& g : good)
    BOOST_TEST(bool(g.get()));
}

BOOST_AUTO_TEST_CASE(a_non_retriable_error_fails_the_step_at_once) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<int> calls{0};
  add_workflow(e, "permanent", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    step_options so;
    so.retry.max_attempts = 5;
    co_await ctx.step(
        "validate",
        [&]() -> int {
          ++calls;
          throw non_retriable_error("bad account number");
        },
        so);
    co_return nullptr;
  });
  BOOST_REQUIRE(e.start_blocking());
  auto run = e.wait_blocking(e.enqueue_blocking("permanent", json::object{}).value(), 20s).value();
  BOOST_TEST(to_string(run.status) == "failed");
  BOOST_TEST(calls == 1);
  BOOST_TEST(run.error.at("attempts").as_int64() == 1);
  BOOST_TEST(run.error.at("retriable").as_bool() == false);
}

BOOST_AUTO_TEST_CASE(a_caught_step_failure_replays_as_the_same_failure) {
  auto db = fresh_database();
  std::atomic<int> calls{0};
  std::atomic<bool> in_after{false};
  auto body = [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    step_options so;
    so.retry.max_attempts = 1;
    std::string outcome;
    try {
      co_await ctx.step(
          "risky",
          [&]() -> int {
            ++calls;
            throw std::runtime_error("nope");
          },
          so);
    } catch (const step_failed_error& e) {
      outcome = std::string("compensated: ") + e.what();
    }
    co_await ctx.step("after", [&]() -> asio::awaitable<int> {
      in_after = true;
      co_await async_sleep(200ms);
      co_return 1;
    });
    co_await ctx.step("last", [] { return 0; });
    co_return json::value(outcome);
  };
  run_id id;
  {
    engine first(options_for(db));
    add_workflow(first, "compensate", body);
    BOOST_REQUIRE(first.start_blocking());
    id = first.enqueue_blocking("compensate", json::object{}).value();
    BOOST_REQUIRE(wait_until([&] { return in_after.load(); }, 10s));
    first.stop_blocking();
  }
  engine second(options_for(db));
  add_workflow(second, "compensate", body);
  BOOST_REQUIRE(second.tick_blocking());
  auto run = second.get_blocking(id).value();
  BOOST_TEST(to_string(run.status) == "completed");
  BOOST_TEST(run.output.as_string() == "compensated: nope");
  BOOST_TEST(calls == 1);
}

BOOST_AUTO_TEST_CASE(a_step_that_outlives_its_timeout_fails_with_step_timeout) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "slow", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    step_options so;
    so.retry.max_attempts = 2;
    so.retry.initial_delay = 1ms;
    so.timeout = 50ms;
    co_await ctx.step(
        "hang",
        []() -> asio::awaitable<int> {
          co_await async_sleep(10s);
          co_return 1;
        },
        so);
    co_return nullptr;
  });
  BOOST_REQUIRE(e.start_blocking());
  const auto t0 = std::chrono::steady_clock::now();
  auto run = e.wait_blocking(e.enqueue_blocking("slow", json::object{}).value(), 20s).value();
  BOOST_TEST(to_string(run.status) == "failed");
  BOOST_TEST(run.error.at("code").as_string() == "step_timeout");
  BOOST_TEST(run.error.at("attempts").as_int64() == 2);
  BOOST_TEST((std::chrono::steady_clock::now() - t0) < 5s);
}

BOOST_AUTO_TEST_CASE(cancel_stops_a_queued_run_and_fences_a_running_one) {
  auto db = fresh_database();
  auto o = options_for(db);
  std::mutex m;
  std::set<std::string> abandoned;
  o.on_event = [&](const run_event& ev) {
    std::lock_guard lock(m);
    if (ev.what == run_event::kind::abandoned) abandoned.insert(ev.id);
  };
  engine e(o);
  std::atomic<bool> in_step{false};
  std::atomic<int> after{0};
  add_workflow(e, "long", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    co_await ctx.step("wait", [&]() -> asio::awaitable<int> {
      in_step = true;
      co_await async_sleep(300ms);
      co_return 1;
    });
    co_await ctx.step("after", [&] { return ++after; });
    co_return nullptr;
  });
  BOOST_REQUIRE(e.tick_blocking());
  enqueue_options later;
  later.run_at = std::chrono::system_clock::now() + 1h;
  auto queued = e.enqueue_blocking("long", json::object{}, later).value();
  BOOST_TEST(to_string(e.cancel_blocking(queued).value()) == "cancelled");
  BOOST_TEST(to_string(e.get_blocking(queued).value().status) == "cancelled");

  BOOST_REQUIRE(e.start_blocking());
  auto running = e.enqueue_blocking("long", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return in_step.load(); }, 10s));
  cancel_options at_once;
  at_once.grace = 0ms;  // no cooperative phase: fenced now
  BOOST_TEST(to_string(e.cancel_blocking(running, at_once).value()) == "cancelled");
  auto run = e.wait_blocking(running, 10s).value();
  BOOST_TEST(to_string(run.status) == "cancelled");
  // The in-flight step's late checkpoint was fenced, the execution gave up, and nothing after it ran.
  BOOST_REQUIRE(wait_until(
      [&] {
        std::lock_guard lock(m);
        return abandoned.contains(running);
      },
      10s));
  BOOST_TEST(after == 0);
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.steps WHERE run_id = '" + running + "'") == "0");
  BOOST_TEST(to_string(e.cancel_blocking(running).value()) == "cancelled");
}

BOOST_AUTO_TEST_CASE(stop_cuts_a_retry_backoff_short_and_hands_the_run_back) {
  auto db = fresh_database();
  std::atomic<int> calls{0};
  run_id id;
  {
    engine e(options_for(db));
    add_workflow(e, "backoff", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
      step_options so;
      so.retry.max_attempts = 5;
      so.retry.initial_delay = 60s;
      co_await ctx.step(
          "flaky",
          [&]() -> int {
            ++calls;
            throw std::runtime_error("not yet");
          },
          so);
      co_return nullptr;
    });
    BOOST_REQUIRE(e.start_blocking());
    id = e.enqueue_blocking("backoff", json::object{}).value();
    BOOST_REQUIRE(wait_until([&] { return calls.load() == 1; }, 10s));
    const auto t0 = std::chrono::steady_clock::now();
    e.stop_blocking();
    BOOST_TEST((std::chrono::steady_clock::now() - t0) < 5s);  // not the 60 s backoff
  }
  BOOST_TEST(calls == 1);
  BOOST_TEST(query_value(db, "SELECT status || ' ' || (owner IS NULL) FROM keel.runs") == "queued true");
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.steps") == "0");
}

BOOST_AUTO_TEST_CASE(a_run_due_later_is_not_claimed_before_its_time) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "later", [](context&, json::value v) -> asio::awaitable<json::value> { co_return v; });
  BOOST_REQUIRE(e.start_blocking());
  enqueue_options o;
  o.run_at = std::chrono::system_clock::now() + 400ms;
  auto id = e.enqueue_blocking("later", json::value(1), o).value();
  auto run = e.wait_blocking(id, 20s).value();
  BOOST_TEST(to_string(run.status) == "completed");
  BOOST_TEST((*run.started_at - run.created_at) >= 350ms);
}

BOOST_AUTO_TEST_CASE(tick_keeps_the_lease_of_a_run_longer_than_the_lease) {
  auto db = fresh_database();
  engine e(options_for(db, 400ms));
  add_workflow(e, "slow", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    co_await ctx.step("long", []() -> asio::awaitable<int> {
      co_await async_sleep(1200ms);
      co_return 1;
    });
    co_await ctx.step("after", [] { return 2; });
    co_return nullptr;
  });
  BOOST_REQUIRE(e.tick_blocking());
  auto id = e.enqueue_blocking("slow", json::object{}).value();
  BOOST_TEST(e.tick_blocking().value() == 1u);
  auto run = e.get_blocking(id).value();
  BOOST_TEST(to_string(run.status) == "completed");
  BOOST_TEST(run.claims == 1);  // heartbeats kept it: never reclaimed, never abandoned
}

BOOST_AUTO_TEST_CASE(the_watchdog_warns_when_step_code_blocks_the_io_threads) {
  std::mutex m;
  std::vector<std::string> warnings;
  keel::log::set_sink([&](keel::log::level l, std::string_view component, std::string_view message) {
    std::lock_guard lock(m);
    if (l == keel::log::level::warn && component == "engine") warnings.emplace_back(message);
  });
  // Counts warnings of a stall of at least 300 ms: the rude step blocks for 400 ms, while a loaded machine
  // may delay an idle thread by some tens of milliseconds, never by that much.
  auto blocked_warnings = [&] {
    std::lock_guard lock(m);
    return std::count_if(warnings.begin(), warnings.end(), [](const std::string& w) {
      const auto at = w.find("blocked for ");
      return at != std::string::npos && std::stol(w.substr(at + 12)) >= 300;
    });
  };
  auto db = fresh_database();
  auto o = options_for(db);
  o.threads = 1;
  o.lag_warning = 100ms;
  engine e(o);
  add_workflow(e, "polite", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    co_await ctx.step("waits", []() -> asio::awaitable<int> {
      co_await async_sleep(400ms);  // awaits: the thread stays free
      co_return 1;
    });
    co_return nullptr;
  });
  add_workflow(e, "rude", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    co_await ctx.step("sleeps", [] {
      std::this_thread::sleep_for(400ms);  // blocks the only io thread
      return 1;
    });
    co_return nullptr;
  });
  BOOST_REQUIRE(e.start_blocking());
  BOOST_REQUIRE(e.wait_blocking(e.enqueue_blocking("polite", json::object{}).value(), 20s));
  BOOST_TEST(blocked_warnings() == 0);
  BOOST_REQUIRE(e.wait_blocking(e.enqueue_blocking("rude", json::object{}).value(), 20s));
  BOOST_TEST(wait_until([&] { return blocked_warnings() >= 1; }, 5s));
  e.stop_blocking();
  keel::log::set_sink({});
}

BOOST_AUTO_TEST_CASE(an_enqueue_in_another_engine_wakes_an_idle_worker_at_once) {
  auto db = fresh_database();
  auto wf = [](context&, json::value v) -> asio::awaitable<json::value> { co_return v; };
  engine producer(options_for(db));
  add_workflow(producer, "wf", wf);
  BOOST_REQUIRE(producer.tick_blocking());  // migrates; never started: it only enqueues
  auto o = options_for(db);
  o.poll_interval = 60s;  // without a notification the worker would not look again for a minute
  engine worker(o);
  add_workflow(worker, "wf", wf);
  BOOST_REQUIRE(worker.start_blocking());
  std::this_thread::sleep_for(200ms);  // let the worker go idle
  const auto t0 = std::chrono::steady_clock::now();
  auto id = producer.enqueue_blocking("wf", json::value(5)).value();
  auto run = producer.wait_blocking(id, 20s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "completed");
  BOOST_TEST((std::chrono::steady_clock::now() - t0) < 10s);
}

BOOST_AUTO_TEST_CASE(wait_times_out_with_a_typed_error) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "wf", [](context&, json::value v) -> asio::awaitable<json::value> { co_return v; });
  BOOST_REQUIRE(e.tick_blocking());
  auto id = e.enqueue_blocking("wf", json::object{}).value();  // nobody runs it: not started
  BOOST_TEST(e.wait_blocking(id, 100ms).error() == make_error_code(errc::wait_timeout));
}

BOOST_AUTO_TEST_CASE(higher_priority_runs_are_claimed_first) {
  auto db = fresh_database();
  auto o = options_for(db);
  o.concurrency = 1;
  engine e(o);
  std::vector<std::int64_t> order;
  std::mutex m;
  add_workflow(e, "p", [&](context&, json::value v) -> asio::awaitable<json::value> {
    std::lock_guard lock(m);
    order.push_back(v.as_int64());
    co_return nullptr;
  });
  BOOST_REQUIRE(e.tick_blocking());
  for (int p : {1, 5, 3}) {
    enqueue_options eo;
    eo.priority = p;
    BOOST_REQUIRE(e.enqueue_blocking("p", json::value(p), eo));
  }
  for (int i = 0; i < 3; ++i)
    BOOST_REQUIRE(e.tick_blocking());
  BOOST_TEST((order == std::vector<std::int64_t>{5, 3, 1}));
}

BOOST_AUTO_TEST_CASE(an_unreachable_database_gives_typed_errors_after_the_request_timeout) {
  // Nothing listens on this socket directory: every connection attempt fails.
  temp_dir nowhere;
  auto o = options_for("host=" + nowhere.path() + " port=1 user=postgres dbname=none connect_timeout=1");
  o.store.request_timeout = 300ms;
  engine e(o);
  add_workflow(e, "wf", [](context&, json::value v) -> asio::awaitable<json::value> { co_return v; });
  const auto t0 = std::chrono::steady_clock::now();
  auto r = e.enqueue_blocking("wf", json::object{});
  BOOST_REQUIRE(!r);
  BOOST_TEST(r.error() == make_error_code(storage::errc::connection_lost));
  BOOST_TEST(e.get_blocking(new_run_id()).error() == make_error_code(storage::errc::connection_lost));
  BOOST_TEST((std::chrono::steady_clock::now() - t0) < 10s);
  BOOST_TEST(!e.start_blocking());  // the migration cannot run: start reports it
}

BOOST_AUTO_TEST_SUITE_END()
