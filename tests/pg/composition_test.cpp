// Composition against a real PostgreSQL: waiting for the first of several alternatives (hooks, events,
// timers) or for all of them, durably, with the losers cancelled; child runs, their retries and cancels;
// continue_as_new; parallel branches; compensation; cooperative cancel.
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

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

namespace {

/// Tokens a workflow handed out, by hook name, in the order they were handed out.
struct token_box {
  std::mutex m;
  std::map<std::string, std::vector<std::string>> by_name;
  void put(const hook& h) {
    std::lock_guard lock(m);
    by_name[h.name()].push_back(h.token());
  }
  /// The latest ("" if none).
  std::string get(const std::string& name) {
    std::lock_guard lock(m);
    auto it = by_name.find(name);
    return it == by_name.end() ? std::string() : it->second.back();
  }
  /// The first ("" if none).
  std::string first(const std::string& name) {
    std::lock_guard lock(m);
    auto it = by_name.find(name);
    return it == by_name.end() ? std::string() : it->second.front();
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
