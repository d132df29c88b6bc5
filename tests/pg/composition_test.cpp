// Composition against a real PostgreSQL: waiting for the first of several alternatives (hooks, events,
// timers) or for all of them, durably, with the losers cancelled; child runs, their retries and cancels;
// continue_as_new. Parallel branches: composition_branches_test.cpp; compensation and cooperative cancel:
// composition_cancel_test.cpp (one test binary).
#define BOOST_TEST_MODULE composition
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <libpq-fe.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "engine_fixture.hpp"
#include "example_workflows.hpp"
#include "token_box.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

namespace {

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

BOOST_AUTO_TEST_CASE(a_parent_waits_for_its_child_without_a_worker_and_replays_without_starting_another,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  auto o = options_for(db);
  o.poll_interval = 10s;  // the child's end must wake the parent
  engine e(o);
  std::atomic<int> parent_executions{0}, child_executions{0};
  std::atomic<bool> release{false};
  add_workflow(e, "child", [&](context& ctx, json::value in) -> asio::awaitable<json::value> {
    ++child_executions;
    auto work = [&]() -> asio::awaitable<std::int64_t> {
      while (!release)
        co_await async_sleep(5ms);
      co_return in.at("n").as_int64() * 2;
    };
    co_return co_await ctx.step("double", work);
  });
  add_workflow(e, "parent", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    ++parent_executions;
    const json::value input{{"n", 21}};
    auto doubled = co_await ctx.child<std::int64_t>("child", input);
    co_return json::value{{"doubled", doubled}};
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("parent", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, id) == "waiting"; }, 10s));
  auto run = e.get_blocking(id).value();
  BOOST_TEST(run.waiting_for.at("kind").as_string() == "child");
  BOOST_TEST(run.waiting_for.at("workflow").as_string() == "child");
  const std::string child_id(run.waiting_for.at("child").as_string());
  BOOST_TEST(query_value(db, "SELECT parent_id::text || '/' || parent_step FROM keel.runs WHERE id = '" +
                                 child_id + "'") == id + "/0");
  release = true;
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(done->output.at("doubled").as_int64() == 42);
  BOOST_TEST(parent_executions == 2);  // started, then woken by the child's end (and replayed)
  BOOST_TEST(child_executions == 1);
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.runs WHERE parent_id IS NOT NULL") == "1");
  BOOST_REQUIRE_EQUAL(done->steps.size(), 1u);
  BOOST_TEST(done->steps[0].name == "keel.child:child");
}

BOOST_AUTO_TEST_CASE(a_failed_child_is_retried_as_a_new_run_and_then_fails_the_parents_step,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<int> child_runs{0};
  add_workflow(e, "flaky", [&](context& ctx, json::value in) -> asio::awaitable<json::value> {
    auto attempt = [&]() -> std::int64_t {
      const int n = ++child_runs;
      if (n <= in.at("fail_first").as_int64())
        throw non_retriable_error("flaky: run " + std::to_string(n) + " fails");
      return n;
    };
    co_return co_await ctx.step("attempt", attempt);
  });
  add_workflow(e, "parent", [&](context& ctx, json::value in) -> asio::awaitable<json::value> {
    child_options twice;
    twice.retry.max_attempts = 2;
    twice.retry.initial_delay = 300ms;  // the second child is queued to start this long after the first
    twice.retry.jitter = 0;
    try {
      auto n = co_await ctx.child("flaky", in, twice);
      co_return json::value{{"child_run", n}};
    } catch (const step_failed_error& failed) {
      co_return json::value{{"caught", failed.error()}};
    }
  });
  BOOST_REQUIRE(e.start_blocking());
  // The first child fails, the second (a new run) succeeds.
  auto second_wins = e.enqueue_blocking("parent", json::value{{"fail_first", 1}}).value();
  auto done = e.wait_blocking(second_wins, 20s);
  BOOST_REQUIRE(done);
  BOOST_TEST(done->output.at("child_run").as_int64() == 2);
  BOOST_TEST(query_value(
                 db, "SELECT string_agg(status, ',' ORDER BY created_at) FROM keel.runs WHERE parent_id = '" +
                         second_wins + "'") == "failed,completed");
  // The retry's delay: the second child started no sooner than 300 ms after the first ended.
  BOOST_TEST(query_value(db, "SELECT (SELECT started_at FROM keel.runs WHERE parent_id = '" + second_wins +
                                 "' AND status = 'completed') - (SELECT finished_at FROM keel.runs WHERE "
                                 "parent_id = '" +
                                 second_wins + "' AND status = 'failed') >= interval '290 ms'") == "t");
  // Both attempts fail: the parent's step fails with the last child's error, and the parent may catch it.
  child_runs = 0;
  auto both_fail = e.enqueue_blocking("parent", json::value{{"fail_first", 5}}).value();
  done = e.wait_blocking(both_fail, 20s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  const auto& caught = done->output.at("caught");
  BOOST_TEST(caught.at("code").as_string() == "child_failed");
  BOOST_TEST(caught.at("attempts").as_int64() == 2);
  BOOST_TEST(caught.at("child_status").as_string() == "failed");
  BOOST_TEST(caught.at("child_error").at("code").as_string() == "step_failed");
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.runs WHERE parent_id = '" + both_fail + "'") == "2");
}

BOOST_AUTO_TEST_CASE(cancelling_a_parent_cancels_its_children_and_grandchildren, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "leaf", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    co_await ctx.wait_for_event("never");
    co_return nullptr;
  });
  add_workflow(e, "middle", [&](context& ctx, json::value in) -> asio::awaitable<json::value> {
    co_return co_await ctx.child("leaf", in);
  });
  add_workflow(e, "top", [&](context& ctx, json::value in) -> asio::awaitable<json::value> {
    co_return co_await ctx.child("middle", in);
  });
  add_workflow(e, "unrelated", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    co_await ctx.wait_for_event("never");
    co_return nullptr;
  });
  BOOST_REQUIRE(e.start_blocking());
  auto top = e.enqueue_blocking("top", json::object{}).value();
  auto other = e.enqueue_blocking("unrelated", json::object{}).value();
  BOOST_REQUIRE(wait_until(
      [&] { return query_value(db, "SELECT count(*) FROM keel.runs WHERE status = 'waiting'") == "4"; },
      10s));
  cancel_options at_once;
  at_once.grace = 0ms;  // fenced now, the whole tree in the cancel's transaction
  auto cancelled = e.cancel_blocking(top, at_once);
  BOOST_REQUIRE(cancelled);
  BOOST_TEST(to_string(*cancelled) == "cancelled");
  BOOST_TEST(
      query_value(db, "SELECT string_agg(workflow || '=' || status, ',' ORDER BY workflow) FROM keel.runs") ==
      "leaf=cancelled,middle=cancelled,top=cancelled,unrelated=waiting");
  BOOST_TEST(query_value(db, "SELECT error->>'cancelled_with' FROM keel.runs WHERE workflow = 'leaf'") ==
             top);
  BOOST_TEST(status_of(e, other) == "waiting");
  // Cancelled means over: an event to the grandchild is refused.
  const std::string leaf = query_value(db, "SELECT id FROM keel.runs WHERE workflow = 'leaf'");
  auto refused = e.send_event_blocking(leaf, "never", json::value(1));
  BOOST_REQUIRE(!refused);
  BOOST_TEST((refused.error() == errc::run_finished));
}

BOOST_AUTO_TEST_CASE(parents_and_instant_children_racing_to_park_and_finish_lose_no_wake_up,
                     *utf::timeout(120)) {
  // Children that end about when their parent parks, on two engines (two writer connections, so the
  // parent's park and the child's finish are concurrent transactions): the parent's row lock and the
  // child's trigger must never both miss each other. A lost wake-up leaves a parent waiting past the test.
  auto db = fresh_database();
  auto o = options_for(db);
  o.poll_interval = 60s;  // only wake-ups move parents on
  auto register_both = [](engine& e) {
    add_workflow(e, "instant",
                 [](context&, json::value in) -> asio::awaitable<json::value> { co_return in; });
    add_workflow(e, "fan", [](context& ctx, json::value) -> asio::awaitable<json::value> {
      std::int64_t sum = 0;
      for (int i = 0; i < 5; ++i) {
        const json::value n(i);
        sum += co_await ctx.child<std::int64_t>("instant", n);
      }
      co_return json::value(sum);
    });
  };
  engine a(o), b(o);
  register_both(a);
  register_both(b);
  BOOST_REQUIRE(a.start_blocking());
  BOOST_REQUIRE(b.start_blocking());
  std::vector<std::string> ids;
  for (int i = 0; i < 60; ++i)
    ids.push_back((i % 2 ? a : b).enqueue_blocking("fan", json::object{}).value());
  for (const auto& id : ids) {
    auto done = a.wait_blocking(id, 30s);
    BOOST_REQUIRE(done);
    BOOST_TEST(done->output.as_int64() == 10);
  }
  BOOST_TEST(
      query_value(db, "SELECT count(*) FROM keel.runs WHERE workflow = 'instant' AND status = 'completed'") ==
      "300");
}

BOOST_AUTO_TEST_CASE(a_parent_that_parks_while_its_child_is_finishing_is_woken_by_that_finish,
                     *utf::timeout(60)) {
  // The interleaving the race test above can only hope to hit, forced: the child's finish has run its
  // statement (and its wake-up trigger, which found the parent still running) but not committed when the
  // parent reaches its wait. The parent's wait must not read the child as unfinished and park for good.
  auto db = fresh_database();
  auto o = options_for(db);
  o.poll_interval = 60s;  // only the wake-up can move the parent on
  engine e(o);
  std::atomic<bool> gate{false};
  add_workflow(e, "parent", [&](context& ctx, json::value in) -> asio::awaitable<json::value> {
    auto wait_for_gate = [&]() -> asio::awaitable<int> {
      while (!gate)
        co_await async_sleep(5ms);
      co_return 0;
    };
    co_await ctx.step("gate", wait_for_gate);
    child_options elsewhere;
    elsewhere.version = 1;  // "external" runs on no worker here: the test finishes it by hand
    co_return co_await ctx.child("external", in, elsewhere);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("parent", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, id) == "running"; }, 10s));
  // The child the parent's ctx.child will find (its key is the parent's id and step position), running.
  const std::string child = query_value(
      db,
      "INSERT INTO keel.runs (id, workflow, version, status, input, idempotency_key, parent_id, parent_step, "
      "due_at) VALUES (gen_random_uuid(), 'external', 1, 'running', '{}', 'keel.child:" +
          id + ":1', '" + id + "', 1, now() + interval '1 hour') RETURNING id");
  BOOST_REQUIRE(!child.empty());
  PGconn* finisher = PQconnectdb(db.c_str());
  BOOST_REQUIRE(PQstatus(finisher) == CONNECTION_OK);
  auto exec = [&](const std::string& sql) {
    PGresult* r = PQexec(finisher, sql.c_str());
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok;
  };
  BOOST_REQUIRE(exec("BEGIN"));
  BOOST_REQUIRE(
      exec("UPDATE keel.runs SET status = 'completed', output = '7', finished_at = now() WHERE id = '" +
           child + "'"));
  gate = true;  // the parent goes on to its ctx.child while the finish is uncommitted
  std::this_thread::sleep_for(500ms);
  BOOST_REQUIRE(exec("COMMIT"));
  PQfinish(finisher);
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(json::serialize(done->output) == "7");
  BOOST_TEST(json::serialize(done->error) == "null");
}

BOOST_AUTO_TEST_CASE(a_child_of_an_unknown_workflow_fails_the_step_with_a_typed_error, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "parent", [&](context& ctx, json::value in) -> asio::awaitable<json::value> {
    co_return co_await ctx.child("nowhere", in);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("parent", json::object{}).value();
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "failed");
  BOOST_TEST(done->error.at("code").as_string() == "unknown_workflow");
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.runs") == "1");
}

BOOST_AUTO_TEST_CASE(continue_as_new_starts_afresh_with_a_bounded_history_and_keeps_pending_events,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<int> executions{0};
  // An entity that handles one "tick" per generation, forever in principle; here until its count is 3.
  add_workflow(e, "counter", [&](context& ctx, json::value in) -> asio::awaitable<json::value> {
    ++executions;
    const std::int64_t count = in.at("count").as_int64();
    auto tick = co_await ctx.wait_for_event("tick");
    auto add = [&] { return count + tick->as_int64(); };
    const std::int64_t next = co_await ctx.step("add", add);
    if (next >= 3) co_return json::value{{"count", next}, {"generation", ctx.generation()}};
    const json::value again{{"count", next}};
    co_await ctx.continue_as_new(again);
    co_return nullptr;  // not reached
  });
  BOOST_REQUIRE(e.start_blocking());
  const json::value start{{"count", 0}};
  auto id = e.enqueue_blocking("counter", start).value();
  // Sent at once: the ticks the first generation does not consume wait for the next ones.
  for (int i = 0; i < 3; ++i)
    BOOST_REQUIRE(e.send_event_blocking(id, "tick", json::value(1)));
  auto done = e.wait_blocking(id, 20s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(done->output.at("count").as_int64() == 3);
  BOOST_TEST(done->output.at("generation").as_int64() == 2);
  // Only the last generation's history is kept; each fresh start is in the run's history.
  BOOST_TEST(done->steps.size() == 2u);
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.run_history WHERE what = 'continued_as_new'") == "2");
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.events") == "1");  // the last one, consumed
  BOOST_TEST(query_value(db, "SELECT input->>'count' FROM keel.runs") == "2");
  BOOST_TEST(executions >= 3);
}

BOOST_AUTO_TEST_CASE(a_hook_link_from_an_earlier_generation_never_resumes_a_later_one, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  token_box tokens;
  add_workflow(e, "renewal", [&](context& ctx, json::value in) -> asio::awaitable<json::value> {
    // Each generation creates the same hook at the same position.
    auto approve = co_await ctx.create_hook("approve");
    tokens.put(approve);
    if (in.at("round").as_int64() == 0) {
      const json::value next{{"round", 1}};
      co_await ctx.continue_as_new(next);
    }
    auto answer = co_await approve.wait();
    co_return *answer;
  });
  BOOST_REQUIRE(e.start_blocking());
  const json::value first{{"round", 0}};
  auto id = e.enqueue_blocking("renewal", first).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, id) == "waiting"; }, 10s));
  const std::string first_token = tokens.first("approve"), second_token = tokens.get("approve");
  BOOST_REQUIRE(!first_token.empty());
  BOOST_TEST(first_token != second_token);
  auto stale = e.resume_hook_blocking(first_token, json::value("old link"));
  BOOST_REQUIRE(!stale);
  BOOST_TEST((stale.error() == errc::hook_not_found));
  BOOST_REQUIRE(e.resume_hook_blocking(second_token, json::value("current link")));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(done->output.as_string() == "current link");
}

BOOST_AUTO_TEST_CASE(a_started_child_races_a_timer_in_any_and_is_waited_for_later, *utf::timeout(60)) {
  auto db = fresh_database();
  auto o = options_for(db);
  o.poll_interval = 10s;  // the child's end and the timer must wake the parent
  engine e(o);
  add_workflow(e, "quick", [](context&, json::value in) -> asio::awaitable<json::value> { co_return in; });
  add_workflow(e, "slow", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto go = co_await ctx.wait_for_event("go");
    co_return *go;
  });
  std::string slow_id;
  std::mutex m;
  add_workflow(e, "parent", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    const json::value seven(7), none = json::object{};
    auto quick = co_await ctx.start_child("quick", seven);
    auto first = co_await ctx.any(quick, keel::timer(10s));  // the child ends first
    auto slow = co_await ctx.start_child("slow", none);
    {
      std::lock_guard lock(m);
      slow_id = slow.id();
    }
    auto second = co_await ctx.any(slow, keel::timer(300ms));  // the timer fires first
    auto late = co_await slow.wait();                          // and the child is waited for after all
    co_return json::value{{"first", first.index},
                          {"first_output", first.payload->at("output")},
                          {"first_status", first.payload->at("status")},
                          {"second", second.index},
                          {"late", late}};
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("parent", json::object{}).value();
  BOOST_REQUIRE(wait_until(
      [&] {
        std::lock_guard lock(m);
        return !slow_id.empty();
      },
      10s));
  std::string slow;
  {
    std::lock_guard lock(m);
    slow = slow_id;
  }
  // Past the timer: the parent now waits for the slow child alone.
  BOOST_REQUIRE(wait_until(
      [&] {
        auto r = e.get_blocking(id);
        return r && r->waiting_for.is_object() && r->waiting_for.as_object().contains("child");
      },
      10s));
  BOOST_REQUIRE(e.send_event_blocking(slow, "go", json::value("went")));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(done->output.at("first").as_int64() == 0);
  BOOST_TEST(done->output.at("first_output").as_int64() == 7);
  BOOST_TEST(done->output.at("first_status").as_string() == "completed");
  BOOST_TEST(done->output.at("second").as_int64() == 1);
  BOOST_TEST(done->output.at("late").as_string() == "went");
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.runs WHERE parent_id IS NOT NULL") == "2");
}

BOOST_AUTO_TEST_CASE(map_children_runs_a_bounded_number_at_once_and_holds_no_worker, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<int> running{0}, widest{0};
  add_workflow(e, "square", [&](context& ctx, json::value in) -> asio::awaitable<json::value> {
    auto work = [&]() -> asio::awaitable<std::int64_t> {
      widest = std::max(widest.load(), ++running);
      co_await async_sleep(50ms);
      --running;
      const auto x = in.as_int64();
      if (x == 4) throw non_retriable_error("four is not welcome");
      co_return x* x;
    };
    co_return json::value(co_await ctx.step("work", work));
  });
  std::atomic<int> parent_executions{0};
  add_workflow(e, "fan", [&](context& ctx, json::value in) -> asio::awaitable<json::value> {
    ++parent_executions;
    std::vector<json::value> inputs;
    for (const auto& x : in.as_array())
      inputs.push_back(x);
    map_options three;
    three.concurrency = 3;
    try {
      auto squares = co_await ctx.map_children("square", inputs, three);
      co_return json::value(json::array(squares.begin(), squares.end()));
    } catch (const step_failed_error& failed) {
      co_return failed.error();
    }
  });
  BOOST_REQUIRE(e.start_blocking());
  auto ok = e.enqueue_blocking("fan", json::array{1, 2, 3, 5, 6, 7, 8}).value();
  auto done = e.wait_blocking(ok, 20s);
  BOOST_REQUIRE(done);
  BOOST_TEST(json::serialize(done->output) == "[1,4,9,25,36,49,64]");
  BOOST_TEST(widest.load() <= 3);
  BOOST_TEST(widest.load() >= 2);
  BOOST_TEST(parent_executions >= 3);  // it parked between children, holding no worker
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.runs WHERE parent_id = '" + ok + "'") == "7");

  auto failing = e.enqueue_blocking("fan", json::array{1, 4, 9}).value();
  done = e.wait_blocking(failing, 20s);
  BOOST_REQUIRE(done);
  BOOST_TEST(done->output.at("code").as_string() == "child_failed");
  BOOST_TEST(done->output.at("input").as_int64() == 1);
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.runs WHERE parent_id = '" + failing +
                                 "' AND status IN ('completed', 'failed')") == "3");  // all ran to their end
}

BOOST_AUTO_TEST_CASE(each_generation_starts_its_own_child_at_the_same_position, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "echo", [](context&, json::value in) -> asio::awaitable<json::value> { co_return in; });
  add_workflow(e, "loop", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    const json::value round(ctx.generation());
    auto echoed = co_await ctx.child("echo", round);  // position 0 in every generation
    if (ctx.generation() < 2) {
      const json::value next = json::object{};
      co_await ctx.continue_as_new(next);
    }
    co_return echoed;
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("loop", json::object{}).value();
  auto done = e.wait_blocking(id, 20s);
  BOOST_REQUIRE(done);
  BOOST_TEST(done->output.as_int64() == 2);  // the last generation's own child, not the first one's
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.runs WHERE parent_id = '" + id + "'") == "3");
}

BOOST_AUTO_TEST_SUITE_END()
