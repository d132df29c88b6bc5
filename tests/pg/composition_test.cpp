// Composition against a real PostgreSQL: waiting for the first of several alternatives (hooks, events,
// timers) or for all of them, durably, with the losers cancelled.
#define BOOST_TEST_MODULE composition
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "engine_fixture.hpp"
#include "example_workflows.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

namespace {

/// Tokens a workflow handed out, by hook name.
struct token_box {
  std::mutex m;
  std::map<std::string, std::string> by_name;
  void put(const hook& h) {
    std::lock_guard lock(m);
    by_name[h.name()] = h.token();
  }
  std::string get(const std::string& name) {
    std::lock_guard lock(m);
    auto it = by_name.find(name);
    return it == by_name.end() ? std::string() : it->second;
  }
};

/// The token in the link a notify step of the example recorded ("" if it has not run yet).
std::string token_in_link(const run_info& run, const std::string& step) {
  for (const auto& s : run.steps) {
    if (s.name != step) continue;
    const std::string link(s.output.at("link").as_string());
    return link.substr(link.rfind('/') + 1);
  }
  return {};
}

/// The classic: a manager approves within `deadline`, or the request escalates to a director's hook.
wf_fn approval_or_escalation(token_box& tokens, std::chrono::milliseconds deadline) {
  return [&tokens, deadline](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto manager = co_await ctx.create_hook("manager");
    tokens.put(manager);
    auto first = co_await ctx.any(manager, keel::timer(deadline));
    if (first.index == 0) co_return json::value{{"approved_by", "manager"}, {"answer", *first.payload}};
    auto director = co_await ctx.create_hook("director");
    tokens.put(director);
    auto answer = co_await director.wait();
    co_return json::value{{"approved_by", "director"}, {"answer", answer ? *answer : json::value()}};
  };
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(the_timer_wins_escalates_and_a_late_resume_of_the_losing_hook_is_closed,
                     *utf::timeout(60)) {
  // The shipped example (examples/example_workflows.cpp), its approvers' links read from its run.
  auto db = fresh_database();
  engine e(options_for(db));
  examples::register_example_workflows(e);
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("expense_approval", json::value{{"approve_within_ms", 700}}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, id) == "waiting"; }, 10s));
  // While it waits, its record says for what: both alternatives, and the soonest deadline.
  auto run = e.get_blocking(id).value();
  BOOST_TEST(run.waiting_for.at("kind").as_string() == "any");
  BOOST_REQUIRE_EQUAL(run.waiting_for.at("arms").as_array().size(), 2u);
  BOOST_TEST(run.waiting_for.at("arms").at(0).at("kind").as_string() == "hook");
  BOOST_TEST(run.waiting_for.at("arms").at(1).at("kind").as_string() == "sleep");
  BOOST_TEST(run.waiting_for.at("until").as_int64() > 0);
  const std::string manager = token_in_link(run, "notify_manager");
  BOOST_REQUIRE(!manager.empty());
  // The deadline passes: the run escalates to the director, and the manager's link is closed.
  std::string director;
  BOOST_REQUIRE(wait_until(
      [&] {
        auto r = e.get_blocking(id);
        if (r) director = token_in_link(*r, "notify_director");
        return !director.empty();
      },
      10s));
  auto late = e.resume_hook_blocking(manager, json::value("approved"));
  BOOST_REQUIRE(!late);
  BOOST_TEST((late.error() == errc::hook_closed));
  BOOST_REQUIRE(e.resume_hook_blocking(director, json::value("approved")));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(done->output.at("decided_by").as_string() == "director");
  BOOST_TEST(done->output.at("decision").as_string() == "approved");
  BOOST_TEST(query_value(db, "SELECT status FROM keel.hooks WHERE name = 'manager'") == "closed");
  BOOST_TEST(query_value(db, "SELECT output->>'index' FROM keel.steps WHERE name LIKE 'keel.any:%'") == "1");
}

BOOST_AUTO_TEST_CASE(the_hook_wins_and_the_timer_never_fires, *utf::timeout(60)) {
  auto db = fresh_database();
  auto o = options_for(db);
  o.poll_interval = 50ms;  // a timer left behind would be found at once
  engine e(o);
  token_box tokens;
  std::atomic<int> executions{0};
  auto inner = approval_or_escalation(tokens, 1500ms);
  add_workflow(e, "approval", [&](context& ctx, json::value in) -> asio::awaitable<json::value> {
    ++executions;
    co_return co_await inner(ctx, std::move(in));
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("approval", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, id) == "waiting"; }, 10s));
  BOOST_REQUIRE(e.resume_hook_blocking(tokens.get("manager"), json::value("yes")));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(done->output.at("approved_by").as_string() == "manager");
  BOOST_TEST(done->output.at("answer").as_string() == "yes");
  // Well past the timer's due time: the run was not claimed or executed again.
  std::this_thread::sleep_for(2s);
  auto after = e.get_blocking(id).value();
  BOOST_TEST(to_string(after.status) == "completed");
  BOOST_TEST(after.claims == 2);  // the start, and the resume
  BOOST_TEST(executions == 2);
  BOOST_TEST(tokens.get("director").empty());
}

BOOST_AUTO_TEST_CASE(a_resume_after_the_timer_is_due_is_refused_even_before_the_run_decides,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  token_box tokens;
  std::string id;
  {
    engine first(options_for(db));
    add_workflow(first, "approval", approval_or_escalation(tokens, 300ms));
    BOOST_REQUIRE(first.start_blocking());
    id = first.enqueue_blocking("approval", json::object{}).value();
    BOOST_REQUIRE(wait_until([&] { return status_of(first, id) == "waiting"; }, 10s));
    first.stop_blocking();  // no worker left to notice the deadline
  }
  std::this_thread::sleep_for(600ms);
  engine e(options_for(db));
  add_workflow(e, "approval", approval_or_escalation(tokens, 300ms));
  auto late = e.resume_hook_blocking(tokens.get("manager"), json::value("yes"));
  BOOST_REQUIRE(!late);
  BOOST_TEST((late.error() == errc::hook_closed));
  // A worker comes back: the run replays (the same manager token) and escalates.
  const std::string manager = tokens.get("manager");
  BOOST_REQUIRE(e.start_blocking());
  BOOST_REQUIRE(wait_until([&] { return !tokens.get("director").empty(); }, 10s));
  BOOST_TEST(tokens.get("manager") == manager);
  BOOST_REQUIRE(e.resume_hook_blocking(tokens.get("director"), json::value("ok")));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(done->output.at("approved_by").as_string() == "director");
}

BOOST_AUTO_TEST_CASE(the_earliest_event_wins_and_the_loser_consumes_nothing, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<bool> go{false};
  add_workflow(e, "race", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto hold = [&]() -> asio::awaitable<int> {
      while (!go)
        co_await async_sleep(5ms);
      co_return 0;
    };
    co_await ctx.step("hold", hold);
    const std::string paid = "paid";
    auto first = co_await ctx.any(keel::event_wait("cancelled"), keel::event_wait(paid), keel::timer(1h));
    // The losing event stays pending for a later wait.
    auto later = co_await ctx.wait_for_event("cancelled", 5s);
    co_return json::value{{"index", first.index},
                          {"payload", *first.payload},
                          {"later", later ? *later : json::value("timeout")}};
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("race", json::object{}).value();
  // Both events are there before the run reaches its wait: the one sent first wins, whatever the order of
  // the alternatives.
  BOOST_REQUIRE(e.send_event_blocking(id, "paid", json::value(1)));
  BOOST_REQUIRE(e.send_event_blocking(id, "cancelled", json::value(2)));
  go = true;
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(done->output.at("index").as_int64() == 1);
  BOOST_TEST(done->output.at("payload").as_int64() == 1);
  BOOST_TEST(done->output.at("later").as_int64() == 2);
}

BOOST_AUTO_TEST_CASE(a_waiting_any_is_woken_by_an_event_sent_to_one_of_its_alternatives, *utf::timeout(60)) {
  auto db = fresh_database();
  auto o = options_for(db);
  o.poll_interval = 10s;  // the event's notification must wake the worker
  engine e(o);
  add_workflow(e, "race", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto first = co_await ctx.any(keel::event_wait("a"), keel::event_wait("b"));
    co_return json::value{{"index", first.index}, {"payload", *first.payload}};
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("race", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, id) == "waiting"; }, 10s));
  const auto sent = std::chrono::steady_clock::now();
  BOOST_REQUIRE(e.send_event_blocking(id, "b", json::value("B")));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST((std::chrono::steady_clock::now() - sent < 5s));
  BOOST_TEST(done->output.at("index").as_int64() == 1);
  BOOST_TEST(done->output.at("payload").as_string() == "B");
}

BOOST_AUTO_TEST_CASE(all_waits_for_every_alternative_and_returns_their_payloads_in_order, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  token_box tokens;
  add_workflow(e, "both", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto sign = co_await ctx.create_hook("sign");
    tokens.put(sign);
    auto every = co_await ctx.all(sign, keel::event_wait("funded"), keel::timer(300ms));
    json::array out;
    for (auto& p : every)
      out.push_back(p ? *p : json::value("timer"));
    co_return json::value(std::move(out));
  });
  BOOST_REQUIRE(e.start_blocking());
  const auto started = std::chrono::steady_clock::now();
  auto id = e.enqueue_blocking("both", json::object{}).value();
  BOOST_REQUIRE(e.send_event_blocking(id, "funded", json::value("F")));
  BOOST_REQUIRE(wait_until([&] { return status_of(e, id) == "waiting"; }, 10s));
  BOOST_REQUIRE(e.resume_hook_blocking(tokens.get("sign"), json::value("S")));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST((std::chrono::steady_clock::now() - started >= 300ms));
  BOOST_TEST(json::serialize(done->output) == R"(["S","F","timer"])");
}

BOOST_AUTO_TEST_CASE(a_wait_for_any_with_an_invalid_event_name_fails_the_run_with_a_typed_error,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "bad", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    const std::string huge(300, 'x');
    co_await ctx.any(keel::event_wait(huge), keel::timer(1s));
    co_return nullptr;
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("bad", json::object{}).value();
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "failed");
  BOOST_TEST(done->error.at("code").as_string() == "invalid_argument");
}

BOOST_AUTO_TEST_SUITE_END()
