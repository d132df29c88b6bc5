// Parallel branches against a real PostgreSQL (part of the composition test binary): each branch checkpoints
// and replays on its own, waits durably, and the run parks only once every branch is blocked.
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "engine_fixture.hpp"
#include "token_box.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(parallel_branches_checkpoint_as_they_finish_and_replay_exactly_in_any_order,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::mutex m;
  std::map<std::string, int> ran;  // step executions by "branch/step"
  auto note = [&](const std::string& what) {
    std::lock_guard lock(m);
    ++ran[what];
  };
  std::atomic<int> running{0}, widest{0};  // map steps in progress at once
  add_workflow(e, "fan", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto before = [] { return 1; };
    co_await ctx.step("before", before);
    // Branches that finish in an order unlike their own: the slow one first.
    auto branch = [&](std::string label, int delay_ms) {
      return [&, label, delay_ms](context& b) -> asio::awaitable<std::string> {
        auto first = [&, label, delay_ms]() -> asio::awaitable<int> {
          note(label + "/first");
          co_await async_sleep(std::chrono::milliseconds(delay_ms));
          co_return delay_ms;
        };
        const int waited = co_await b.step("first", first);
        auto second = [&, label] {
          note(label + "/second");
          return label;
        };
        const std::string out = co_await b.step("second", second);
        co_return out + std::to_string(waited);
      };
    };
    auto slow = branch("slow", 60), quick = branch("quick", 1), middle = branch("middle", 20);
    auto [a, b, c] = co_await ctx.parallel(slow, quick, middle);
    // ctx.map, two at a time.
    const std::vector<int> items{1, 2, 3, 4, 5};
    auto square = [&](context& bc, const int& x) -> asio::awaitable<int> {
      auto work = [&, x]() -> asio::awaitable<int> {
        note("map/" + std::to_string(x));
        widest = std::max(widest.load(), ++running);
        co_await async_sleep(std::chrono::milliseconds(10 * (6 - x)));
        --running;
        co_return x* x;
      };
      co_return co_await bc.step("square", work);
    };
    map_options two;
    two.concurrency = 2;
    auto squares = co_await ctx.map(items, square, two);
    // A wait on the main line: the resumed execution replays everything above from its records.
    co_await ctx.wait_for_event("go");
    auto after = [] { return 2; };
    co_await ctx.step("after", after);
    json::array sq;
    for (int v : squares)
      sq.push_back(v);
    co_return json::value{{"a", a}, {"b", b}, {"c", c}, {"squares", sq}};
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("fan", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, id) == "waiting"; }, 10s));
  BOOST_REQUIRE(e.send_event_blocking(id, "go", json::value(true)));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(done->output.at("a").as_string() == "slow60");
  BOOST_TEST(done->output.at("b").as_string() == "quick1");
  BOOST_TEST(done->output.at("c").as_string() == "middle20");
  BOOST_TEST(json::serialize(done->output.at("squares")) == "[1,4,9,16,25]");
  BOOST_TEST(widest == 2);  // two at a time, never more
  {
    std::lock_guard lock(m);
    for (const auto& [what, n] : ran)
      BOOST_TEST(n == 1, what << " ran " << n << " times");  // the replay ran none again
    BOOST_TEST(ran.size() == 11u);
  }
  // Seqs stay dense and unique; branch steps say where they belong.
  BOOST_TEST(query_value(db, "SELECT count(*) = max(seq) + 1 FROM keel.steps") == "t");
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.steps WHERE branch IS NOT NULL") == "11");
  BOOST_TEST(query_value(db,
                         "SELECT string_agg(DISTINCT branch, ',' ORDER BY branch) FROM keel.steps WHERE "
                         "name = 'first'") == "1:0,1:1,1:2");
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.steps WHERE name = 'keel.parallel'") == "2");
  // The branches ran side by side: the quick one had finished both its steps before the slow one's first.
  BOOST_TEST(query_value(db,
                         "SELECT (SELECT finished_at FROM keel.steps WHERE branch = '1:1' AND name = "
                         "'second') < (SELECT finished_at FROM keel.steps WHERE branch = '1:0' AND name = "
                         "'first')") == "t");
}

BOOST_AUTO_TEST_CASE(a_failing_branch_lets_the_others_finish_and_its_failure_reaches_the_main_line,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<int> others{0};
  add_workflow(e, "fan", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto fails = [](context& b) -> asio::awaitable<int> {
      auto boom = []() -> int { throw non_retriable_error("branch 0 gives up"); };
      co_return co_await b.step("boom", boom);
    };
    auto works = [&](context& b) -> asio::awaitable<int> {
      auto slow = [&]() -> asio::awaitable<int> {
        co_await async_sleep(50ms);
        co_return ++others;
      };
      co_return co_await b.step("slow", slow);
    };
    json::value caught;
    try {
      co_await ctx.parallel(fails, works);
      co_return json::value("not reached");
    } catch (const step_failed_error& failed) {
      caught = failed.error();
    }
    auto next = [] { return 3; };
    co_await ctx.step("after", next);
    co_return caught;
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("fan", json::object{}).value();
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(done->output.at("message").as_string() == "branch 0 gives up");
  BOOST_TEST(others == 1);  // the other branch ran to its end, and its step is recorded
  BOOST_TEST(query_value(db, "SELECT status FROM keel.steps WHERE name = 'slow'") == "completed");
  BOOST_TEST(query_value(db, "SELECT count(*) = max(seq) + 1 FROM keel.steps") == "t");
}

BOOST_AUTO_TEST_CASE(branches_wait_durably_and_the_run_parks_only_once_every_branch_is_blocked,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  token_box tokens;
  std::mutex m;
  std::map<std::string, int> ran;
  auto note = [&](const std::string& what) {
    std::lock_guard lock(m);
    ++ran[what];
  };
  std::atomic<int> executions{0};
  add_workflow(e, "fan", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    ++executions;
    auto sleeper = [&](context& b) -> asio::awaitable<std::string> {
      co_await b.sleep(300ms);
      auto after_sleep = [&] {
        note("after_sleep");
        return std::string("slept");
      };
      co_return co_await b.step("after_sleep", after_sleep);
    };
    auto listener = [&](context& b) -> asio::awaitable<std::string> {
      auto got = co_await b.wait_for_event("go", 30s);
      co_return got ? std::string(got->as_string()) : std::string("timed out");
    };
    auto approver = [&](context& b) -> asio::awaitable<std::string> {
      auto h = co_await b.create_hook("approve");
      tokens.put(h);
      auto answer = co_await h.wait();
      co_return answer ? std::string(answer->as_string()) : std::string("none");
    };
    auto worker = [&](context& b) -> asio::awaitable<int> {
      auto work = [&]() -> asio::awaitable<int> {
        note("work");
        co_await async_sleep(100ms);
        co_return 7;
      };
      co_return co_await b.step("work", work);
    };
    auto [a, b, c, d] = co_await ctx.parallel(sleeper, listener, approver, worker);
    auto after = [&] {
      note("after");
      return 1;
    };
    co_await ctx.step("after", after);
    co_return json::value{{"a", a}, {"b", b}, {"c", c}, {"d", d}};
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("fan", json::object{}).value();
  // The sleeper's timer, then the worker's step, end; the listener and the approver stay blocked: the run
  // parks on their waits together, holding no worker.
  BOOST_REQUIRE(wait_until(
      [&] {
        return query_value(db, "SELECT count(*) FROM keel.steps WHERE name = 'after_sleep'") == "1" &&
               status_of(e, id) == "waiting";
      },
      10s));
  BOOST_TEST(query_value(db, "SELECT waiting_for->>'branches' FROM keel.runs") == "true");
  BOOST_TEST(query_value(db, "SELECT jsonb_array_length(waiting_for->'arms') FROM keel.runs") == "3");
  BOOST_REQUIRE(e.send_event_blocking(id, "go", json::value("yes")));
  BOOST_REQUIRE(wait_until(
      [&] {
        return query_value(db, "SELECT count(*) FROM keel.steps WHERE name = 'keel.event:go'") == "1" &&
               status_of(e, id) == "waiting";
      },
      10s));
  BOOST_REQUIRE(e.resume_hook_blocking(tokens.first("approve"), json::value("ok")));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(json::serialize(done->output) == R"({"a":"slept","b":"yes","c":"ok","d":7})");
  BOOST_TEST(executions.load() >= 3);  // parked between, replayed each time
  {
    std::lock_guard lock(m);
    for (const auto& [what, n] : ran)
      BOOST_TEST(n == 1, what << " ran " << n << " times");
    BOOST_TEST(ran.size() == 3u);
  }
  // Every replay handed out the same hook; each wait is recorded in its branch.
  std::lock_guard lock(tokens.m);
  for (const auto& t : tokens.by_name["approve"])
    BOOST_TEST(t == tokens.by_name["approve"].front());
  BOOST_TEST(query_value(db,
                         "SELECT string_agg(name || '@' || branch, ',' ORDER BY branch, branch_seq) FROM "
                         "keel.steps WHERE branch IS NOT NULL") ==
             "keel.sleep@0:0,after_sleep@0:0,keel.now@0:1,keel.event:go@0:1,keel.hook:approve@0:2,"
             "keel.hook_wait:approve@0:2,work@0:3");
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.steps WHERE branch IS NULL") == "2");
}

BOOST_AUTO_TEST_CASE(branches_run_child_runs_once_each_with_retries_and_across_a_worker_restart,
                     *utf::timeout(90)) {
  auto db = fresh_database();
  std::atomic<int> fives{0};
  auto setup = [&](engine& e) {
    add_workflow(e, "double", [&](context& ctx, json::value in) -> asio::awaitable<json::value> {
      auto work = [&]() -> asio::awaitable<std::int64_t> {
        co_await async_sleep(60ms);
        const auto x = in.as_int64();
        if (x == 5 && ++fives == 1) throw non_retriable_error("five fails the first time");
        co_return 2 * x;
      };
      co_return json::value(co_await ctx.step("work", work));
    });
    add_workflow(e, "fan", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
      const std::vector<int> items{1, 2, 3, 4, 5, 6};
      auto each = [&](context& b, const int& x) -> asio::awaitable<int> {
        json::value input(x);
        child_options twice;
        twice.retry.max_attempts = 2;
        const int doubled = co_await b.child<int>("double", input, twice);
        co_return doubled;
      };
      map_options three;
      three.concurrency = 3;
      auto doubled = co_await ctx.map(items, each, three);
      // A handle started in a branch, raced against a timer there.
      auto racer = [&](context& b) -> asio::awaitable<std::string> {
        json::value input(50);
        auto child = co_await b.start_child("double", input);
        auto first = co_await b.any(child, keel::timer(30s));
        if (first.index != 0) co_return std::string("timer");
        const auto out = co_await child.wait();
        co_return std::to_string(out.as_int64()) + "/" + std::string(first.payload->at("status").as_string());
      };
      auto [raced] = co_await ctx.parallel(racer);
      json::array out(doubled.begin(), doubled.end());
      co_return json::value{{"doubled", out}, {"raced", raced}};
    });
  };
  std::string id;
  {
    engine first(options_for(db));
    setup(first);
    BOOST_REQUIRE(first.start_blocking());
    id = first.enqueue_blocking("fan", json::object{}).value();
    BOOST_REQUIRE(wait_until(
        [&] {
          return query_value(db,
                             "SELECT count(*) >= 2 FROM keel.runs WHERE parent_id IS NOT NULL AND "
                             "status = 'completed'") == "t";
        },
        20s));
    first.stop_blocking();  // children and parent alike go on elsewhere
  }
  engine second(options_for(db));
  setup(second);
  BOOST_REQUIRE(second.start_blocking());
  auto done = second.wait_blocking(id, 30s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(json::serialize(done->output.at("doubled")) == "[2,4,6,8,10,12]");
  BOOST_TEST(done->output.at("raced").as_string() == "100/completed");
  // One child per item, a second for the one that failed, one for the racer: none started twice.
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.runs WHERE parent_id = '" + id + "'") == "8");
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.runs WHERE parent_id = '" + id +
                                 "' AND status = 'failed'") == "1");
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.runs WHERE idempotency_key LIKE 'keel.child:" + id +
                                 ":b0:%@0:2'") == "1");  // the retry's key: its branch, position and attempt
}

BOOST_AUTO_TEST_CASE(a_due_timer_of_one_branch_does_not_refuse_the_resume_of_another_branchs_hook,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  token_box tokens;
  auto setup = [&](engine& e) {
    add_workflow(e, "fan", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
      auto sleeper = [](context& b) -> asio::awaitable<int> {
        co_await b.sleep(200ms);
        co_return 1;
      };
      auto approver = [&](context& b) -> asio::awaitable<std::string> {
        auto h = co_await b.create_hook("approve");
        tokens.put(h);
        auto answer = co_await h.wait();
        co_return answer ? std::string(answer->as_string()) : std::string("none");
      };
      auto [slept, answer] = co_await ctx.parallel(sleeper, approver);
      co_return json::value{{"slept", slept}, {"answer", answer}};
    });
  };
  std::string id;
  {
    engine first(options_for(db));
    setup(first);
    BOOST_REQUIRE(first.start_blocking());
    id = first.enqueue_blocking("fan", json::object{}).value();
    BOOST_REQUIRE(wait_until([&] { return status_of(first, id) == "waiting"; }, 10s));
    first.stop_blocking();  // no worker left to take the run when the sleeper's timer is due
  }
  std::this_thread::sleep_for(400ms);
  BOOST_TEST(query_value(db, "SELECT due_at < now() FROM keel.runs") == "t");
  engine resumer(options_for(db));  // runs no workflow
  BOOST_REQUIRE(resumer.start_blocking());
  auto resumed = resumer.resume_hook_blocking(tokens.first("approve"), json::value("ok"));
  BOOST_REQUIRE_MESSAGE(resumed, resumed.error().message());
  engine second(options_for(db));
  setup(second);
  BOOST_REQUIRE(second.start_blocking());
  auto done = second.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(json::serialize(done->output) == R"({"slept":1,"answer":"ok"})");
}

BOOST_AUTO_TEST_CASE(a_cancel_reaches_branches_blocked_in_their_waits, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<bool> started{false}, caught{false};
  add_workflow(e, "fan", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto waiter = [&](context& b) -> asio::awaitable<int> {
      try {
        co_await b.wait_for_event("never");
      } catch (const cancelled_error&) {
        caught = true;
        throw;
      }
      co_return 1;
    };
    auto busy = [&](context& b) -> asio::awaitable<int> {
      auto work = [&]() -> asio::awaitable<int> {
        started = true;
        co_await async_sleep(300ms);
        co_return 2;
      };
      co_return co_await b.step("work", work);
    };
    auto [x, y] = co_await ctx.parallel(waiter, busy);
    co_return json::value(x + y);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("fan", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return started.load(); }, 10s));
  auto asked = e.cancel_blocking(id);
  BOOST_REQUIRE(asked);
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "cancelled");
  BOOST_TEST(caught.load());
}

BOOST_AUTO_TEST_CASE(branches_that_only_sleep_park_the_run_sleeping_and_nested_branches_wait_too,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<int> executions{0};
  add_workflow(e, "fan", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    ++executions;
    auto nap = [](context& b) -> asio::awaitable<int> {
      co_await b.sleep(300ms);
      co_return 1;
    };
    auto longer = [](context& b) -> asio::awaitable<int> {
      co_await b.sleep(600ms);
      co_return 2;
    };
    auto [x, y] = co_await ctx.parallel(nap, longer);
    // Nested: a branch whose own branches wait for events, beside one that runs a step.
    auto events = [](context& b) -> asio::awaitable<std::string> {
      auto first = [](context& n) -> asio::awaitable<std::string> {
        auto got = co_await n.wait_for_event("a");
        co_return std::string(got->as_string());
      };
      auto second = [](context& n) -> asio::awaitable<std::string> {
        auto got = co_await n.wait_for_event("b");
        co_return std::string(got->as_string());
      };
      auto [p, q] = co_await b.parallel(first, second);
      co_return p + q;
    };
    auto stepper = [](context& b) -> asio::awaitable<int> {
      auto three = [] { return 3; };
      co_return co_await b.step("three", three);
    };
    auto [both, z] = co_await ctx.parallel(events, stepper);
    co_return json::value{{"sum", x + y + z}, {"events", both}};
  });
  BOOST_REQUIRE(e.start_blocking());
  const auto began = std::chrono::steady_clock::now();
  auto id = e.enqueue_blocking("fan", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, id) == "sleeping"; }, 10s));
  BOOST_REQUIRE(wait_until(
      [&] {
        return query_value(db, "SELECT count(*) FROM keel.steps WHERE name = 'three'") == "1" &&
               status_of(e, id) == "waiting";
      },
      10s));
  BOOST_TEST((std::chrono::steady_clock::now() - began >= 600ms));  // each sleep ran its full time
  BOOST_REQUIRE(e.send_event_blocking(id, "b", json::value("B")));
  BOOST_REQUIRE(e.send_event_blocking(id, "a", json::value("A")));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(done->output.at("sum").as_int64() == 6);
  BOOST_TEST(done->output.at("events").as_string() == "AB");
  BOOST_TEST(executions.load() >= 3);
  BOOST_TEST(query_value(db,
                         "SELECT string_agg(DISTINCT branch, ',' ORDER BY branch) FROM keel.steps WHERE name "
                         "LIKE 'keel.event:%'") == "3:0/0:0,3:0/0:1");  // the second parallel sits at seq 3
}

BOOST_AUTO_TEST_CASE(two_branches_waiting_for_one_event_name_each_consume_a_different_event,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "fan", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    co_await ctx.wait_for_event("go");  // the slots are sent first: both branches find them pending
    auto taker = [](context& b) -> asio::awaitable<std::string> {
      auto got = co_await b.wait_for_event("slot");
      co_return std::string(got->as_string());
    };
    auto first = taker, second = taker;
    auto [x, y] = co_await ctx.parallel(first, second);
    co_return json::value{{"x", x}, {"y", y}};
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("fan", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, id) == "waiting"; }, 10s));
  BOOST_REQUIRE(e.send_event_blocking(id, "slot", json::value("one")));
  BOOST_REQUIRE(e.send_event_blocking(id, "slot", json::value("two")));
  BOOST_REQUIRE(e.send_event_blocking(id, "go", json::value(true)));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  const std::string x(done->output.at("x").as_string()), y(done->output.at("y").as_string());
  BOOST_TEST(x != y);
  BOOST_TEST((x == "one" || x == "two"));
  BOOST_TEST((y == "one" || y == "two"));
  BOOST_TEST(query_value(db, "SELECT count(DISTINCT consumed_seq) FROM keel.events WHERE name = 'slot'") ==
             "2");
}

BOOST_AUTO_TEST_CASE(a_hook_made_in_a_branch_and_waited_for_after_it_fails_the_run_with_a_clear_error,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "fan", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    std::optional<hook> kept;
    auto maker = [&kept](context& b) -> asio::awaitable<int> {
      kept = co_await b.create_hook("approve");
      co_return 1;
    };
    co_await ctx.parallel(maker);
    co_await kept->wait();  // its branch, and its context, are gone
    co_return json::value("not reached");
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("fan", json::object{}).value();
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "failed");
  const std::string message(done->error.at("message").as_string());
  BOOST_TEST(message.find("branch that has ended") != std::string::npos, message);
}

BOOST_AUTO_TEST_CASE(continue_as_new_inside_a_branch_fails_the_run_with_a_clear_error, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "fan", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto again = [](context& b) -> asio::awaitable<int> {
      json::value next(1);
      co_await b.continue_as_new(next);
      co_return 1;
    };
    auto [x] = co_await ctx.parallel(again);
    co_return json::value(x);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("fan", json::object{}).value();
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "failed");
  const std::string message(done->error.at("message").as_string());
  BOOST_TEST(message.find("ctx.continue_as_new inside a ctx.parallel") != std::string::npos, message);
}

BOOST_AUTO_TEST_SUITE_END()
