// Durable waits against a real PostgreSQL: sleeps that hold no worker and survive a worker restart, events
// kept until their wait, consumed once and in order, timeouts, and recorded values that replay unchanged.
#define BOOST_TEST_MODULE waits
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

namespace {

/// Counts the run events an engine reports, by kind.
struct event_counts {
  std::mutex m;
  std::map<std::string, int> n;
  std::function<void(const run_event&)> observer() {
    return [this](const run_event& ev) {
      std::lock_guard lock(m);
      ++n[std::string(to_string(ev.what))];
    };
  }
  int operator[](const std::string& kind) {
    std::lock_guard lock(m);
    return n[kind];
  }
};

/// Applies the migrations, so that runs can be enqueued (and sent events) before any engine starts.
void migrate(const std::string& db) {
  storage::store_options so;
  so.conninfo = db;
  BOOST_REQUIRE(storage::store(so).migrate_blocking());
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(a_sleeping_run_holds_no_worker_and_wakes_on_another_after_a_restart, *utf::timeout(60)) {
  auto db = fresh_database();
  std::atomic<int> before{0}, after{0};
  auto body = [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto first = [&] { return ++before; };
    co_await ctx.step("before", first);
    co_await ctx.sleep(1500ms);
    auto second = [&] { return ++after; };
    co_await ctx.step("after", second);
    co_return json::value("woke");
  };
  std::string id;
  const auto enqueued = std::chrono::system_clock::now();
  {
    event_counts seen;
    auto o = options_for(db);
    o.on_event = seen.observer();
    engine first(o);
    add_workflow(first, "nap", body);
    BOOST_REQUIRE(first.start_blocking());
    id = first.enqueue_blocking("nap", json::object{}).value();
    BOOST_REQUIRE(wait_until([&] { return seen["sleeping"] == 1; }, 10s));
    // Parked in the database: no owner, due at the wake time, and its record says what it waits for.
    auto run = first.get_blocking(id).value();
    BOOST_TEST(to_string(run.status) == "sleeping");
    BOOST_TEST(!run.owner.has_value());
    BOOST_TEST(run.waiting_for.at("kind").as_string() == "sleep");
    BOOST_TEST(run.waiting_for.at("until").as_int64() > 0);
    first.stop_blocking();
  }
  // Another worker, started after the first one is gone, picks it up when it is due.
  engine second(options_for(db));
  add_workflow(second, "nap", body);
  BOOST_REQUIRE(second.start_blocking());
  auto done = second.wait_blocking(id, 20s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(done->output.as_string() == "woke");
  BOOST_TEST(before == 1);
  BOOST_TEST(after == 1);
  BOOST_TEST(done->claims == 2);
  BOOST_TEST(done->recoveries == 0);  // a resume, not a recovery
  BOOST_TEST((*done->finished_at - enqueued) >= 1500ms);
  BOOST_REQUIRE_EQUAL(done->steps.size(), 3u);
  BOOST_TEST(done->steps[1].name == "keel.sleep");
  BOOST_TEST(done->waiting_for.is_null());
}

BOOST_AUTO_TEST_CASE(a_sleep_ends_soon_after_its_wake_time_on_the_worker_that_parked_it, *utf::timeout(60)) {
  auto db = fresh_database();
  auto o = options_for(db);
  o.poll_interval = 10s;  // only the wake-up timer can resume it in time
  engine e(o);
  std::mutex m;
  std::vector<std::chrono::system_clock::time_point> resumed;
  add_workflow(e, "nap", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    co_await ctx.sleep(300ms);
    auto note = [&] {
      std::lock_guard lock(m);
      resumed.push_back(std::chrono::system_clock::now());
      return 0;
    };
    co_await ctx.step("after", note);
    co_return nullptr;
  });
  BOOST_REQUIRE(e.start_blocking());
  const auto started = std::chrono::system_clock::now();
  auto id = e.enqueue_blocking("nap", json::object{}).value();
  BOOST_REQUIRE(e.wait_blocking(id, 10s));
  std::lock_guard lock(m);
  BOOST_REQUIRE_EQUAL(resumed.size(), 1u);
  const auto took = resumed[0] - started;
  BOOST_TEST(took >= 300ms);
  BOOST_TEST(took < 1500ms);  // far below the 10 s poll: the timer claimed it
  // Never early: the worker claims a sleeping run just ahead of its wake time and waits out the rest.
  BOOST_TEST(
      query_value(db,
                  "SELECT (extract(epoch FROM a.started_at) * 1e6)::bigint >= (s.output->>'wake_at')::bigint "
                  "FROM keel.steps s JOIN keel.steps a ON a.run_id = s.run_id AND a.name = 'after' "
                  "WHERE s.name = 'keel.sleep'") == "t");
}

BOOST_AUTO_TEST_CASE(events_sent_before_the_wait_are_kept_and_consumed_once_in_order, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "collect", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    json::array got;
    for (int i = 0; i < 2; ++i) {
      auto ev = co_await ctx.wait_for_event("item");
      got.push_back(ev ? *ev : json::value("none"));
    }
    // A third wait finds nothing left and times out: each event was consumed once.
    auto third = co_await ctx.wait_for_event("item", 200ms);
    got.push_back(third ? *third : json::value("timed out"));
    co_return got;
  });
  // Not started yet: the events reach the run long before its waits.
  migrate(db);
  auto id = e.enqueue_blocking("collect", json::object{}).value();
  BOOST_REQUIRE(e.send_event_blocking(id, "item", json::value(1)));
  BOOST_REQUIRE(e.send_event_blocking(id, "other", json::value("ignored")));
  BOOST_REQUIRE(e.send_event_blocking(id, "item", json::value(2)));
  BOOST_REQUIRE(e.start_blocking());
  auto done = e.wait_blocking(id, 20s);
  if (!done) {
    auto r = e.get_blocking(id).value();
    BOOST_TEST_MESSAGE("status " << to_string(r.status) << " waiting_for " << json::serialize(r.waiting_for)
                                 << " steps " << r.steps.size() << " claims " << r.claims);
  }
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(json::serialize(done->output) == R"([1,2,"timed out"])");
}

BOOST_AUTO_TEST_CASE(a_waiting_run_is_woken_by_its_event_and_says_what_it_waits_for, *utf::timeout(60)) {
  auto db = fresh_database();
  event_counts seen;
  auto o = options_for(db);
  o.poll_interval = 10s;  // the event's notification must wake the worker, not a poll
  o.on_event = seen.observer();
  engine e(o);
  add_workflow(e, "approval", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto decision = co_await ctx.wait_for_event("approved");
    co_return decision ? *decision : json::value("no decision");
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("approval", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return seen["waiting"] == 1; }, 10s));
  auto run = e.get_blocking(id).value();
  BOOST_TEST(to_string(run.status) == "waiting");
  BOOST_TEST(!run.owner.has_value());
  BOOST_TEST(run.waiting_for.at("kind").as_string() == "event");
  BOOST_TEST(run.waiting_for.at("event").as_string() == "approved");
  BOOST_TEST(!run.waiting_for.as_object().contains("until"));  // no timeout: it waits as long as it takes

  // Another process sends it: a second engine on the same database, which does not run the workflow.
  engine sender(options_for(db));
  const auto sent = std::chrono::steady_clock::now();
  BOOST_REQUIRE(sender.send_event_blocking(id, "approved", json::value{{"by", "ada"}}));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(done->output.at("by").as_string() == "ada");
  BOOST_TEST((std::chrono::steady_clock::now() - sent) < 5s);
}

BOOST_AUTO_TEST_CASE(an_event_wait_times_out_durably_and_a_repeated_key_is_a_no_op, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "deadline", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto first = co_await ctx.wait_for_event("ping", 5s);
    auto second = co_await ctx.wait_for_event("ping", 300ms);
    co_return json::value{{"first", first ? *first : json::value("timed out")},
                          {"second", second ? *second : json::value("timed out")}};
  });
  migrate(db);
  auto id = e.enqueue_blocking("deadline", json::object{}).value();
  event_options once;
  once.idempotency_key = "ping-1";
  BOOST_REQUIRE(e.send_event_blocking(id, "ping", json::value("a"), once));
  BOOST_REQUIRE(e.send_event_blocking(id, "ping", json::value("a again"), once));  // same key: nothing added
  BOOST_REQUIRE(e.start_blocking());
  auto done = e.wait_blocking(id, 20s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(json::serialize(done->output) == R"({"first":"a","second":"timed out"})");
  BOOST_REQUIRE_EQUAL(done->steps.size(), 2u);
  BOOST_TEST(json::serialize(done->steps[1].output) == R"({"timed_out":true})");
}

BOOST_AUTO_TEST_CASE(events_for_finished_unknown_or_malformed_runs_are_typed_errors, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "quick", [](context&, json::value) -> asio::awaitable<json::value> { co_return 1; });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("quick", json::object{}).value();
  BOOST_REQUIRE(e.wait_blocking(id, 10s));
  auto finished = e.send_event_blocking(id, "late", json::value(1));
  BOOST_REQUIRE(!finished);
  BOOST_TEST((finished.error() == errc::run_finished));
  auto unknown = e.send_event_blocking(new_run_id(), "x", json::value(1));
  BOOST_REQUIRE(!unknown);
  BOOST_TEST((unknown.error() == errc::run_not_found));
  auto malformed = e.send_event_blocking("not-a-uuid", "x", json::value(1));
  BOOST_REQUIRE(!malformed);
  BOOST_TEST((malformed.error() == errc::invalid_run_id));
  auto nameless = e.send_event_blocking(id, "", json::value(1));
  BOOST_REQUIRE(!nameless);
  BOOST_TEST((nameless.error() == storage::errc::invalid_argument));
  std::string huge(2 << 20, 'x');
  auto oversize = e.send_event_blocking(id, "big", json::value(huge));
  BOOST_REQUIRE(!oversize);
  BOOST_TEST((oversize.error() == storage::errc::payload_too_large));
}

BOOST_AUTO_TEST_CASE(recorded_values_replay_unchanged_after_a_resume, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::mutex m;
  std::vector<std::string> seen;  // what each execution observed, before its sleep
  add_workflow(e, "values", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    const auto t = co_await ctx.now();
    const double r = co_await ctx.random();
    const std::string u = co_await ctx.uuid();
    {
      std::lock_guard lock(m);
      seen.push_back(std::to_string(t.time_since_epoch().count()) + "/" + std::to_string(r) + "/" + u);
    }
    co_await ctx.sleep(100ms);  // the run resumes in a second execution, which replays the values
    std::lock_guard lock(m);
    co_return json::value(seen.size());
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("values", json::object{}).value();
  auto done = e.wait_blocking(id, 20s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  std::lock_guard lock(m);
  BOOST_REQUIRE_EQUAL(seen.size(), 2u);
  BOOST_TEST(seen[0] == seen[1]);
  BOOST_TEST(done->claims == 2);
}

BOOST_AUTO_TEST_CASE(a_cancelled_sleeping_run_never_resumes, *utf::timeout(60)) {
  auto db = fresh_database();
  event_counts seen;
  auto o = options_for(db);
  o.on_event = seen.observer();
  engine e(o);
  std::atomic<int> after{0};
  add_workflow(e, "nap", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    co_await ctx.sleep(500ms);
    auto note = [&] { return ++after; };
    co_await ctx.step("after", note);
    co_return nullptr;
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("nap", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return seen["sleeping"] == 1; }, 10s));
  cancel_options at_once;
  at_once.grace = 0ms;
  auto c = e.cancel_blocking(id, at_once);
  BOOST_REQUIRE(c);
  BOOST_TEST(to_string(*c) == "cancelled");
  std::this_thread::sleep_for(1s);  // past the wake time
  BOOST_TEST(status_of(e, id) == "cancelled");
  BOOST_TEST(after == 0);
  auto late = e.send_event_blocking(id, "x", json::value(1));
  BOOST_REQUIRE(!late);
  BOOST_TEST((late.error() == errc::run_finished));
}

BOOST_AUTO_TEST_CASE(a_hook_resumed_before_its_wait_keeps_the_payload_and_repeats_are_idempotent,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  event_counts seen;
  auto o = options_for(db);
  o.on_event = seen.observer();
  engine e(o);
  std::mutex m;
  std::string token;
  std::atomic<bool> resumed{false};
  add_workflow(e, "approval", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto h = co_await ctx.create_hook("approve");
    auto hand_out = [&]() -> asio::awaitable<std::string> {
      {
        std::lock_guard lock(m);
        token = h.token();
      }
      // Whoever got the link answers before the run reaches its wait.
      const auto give_up = std::chrono::steady_clock::now() + 20s;
      while (!resumed && std::chrono::steady_clock::now() < give_up)
        co_await async_sleep(5ms);
      co_return h.path();
    };
    const std::string path = co_await ctx.step("hand out", hand_out);
    auto answer = co_await h.wait();
    co_return json::value{{"path", path}, {"answer", answer ? *answer : json::value("expired")}};
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("approval", json::object{}).value();
  BOOST_REQUIRE(wait_until(
      [&] {
        std::lock_guard lock(m);
        return !token.empty();
      },
      10s));
  std::string t;
  {
    std::lock_guard lock(m);
    t = token;
  }
  BOOST_TEST(t.size() == 43u);
  resume_options who;
  who.resumed_by = "ada@example.com";
  const json::value yes{{"approved", true}};
  BOOST_REQUIRE(e.resume_hook_blocking(t, yes, who));
  BOOST_REQUIRE(e.resume_hook_blocking(t, yes, who));  // the same answer again: an idempotent success
  const json::value no{{"approved", false}};
  auto conflicting = e.resume_hook_blocking(t, no);
  BOOST_REQUIRE(!conflicting);
  BOOST_TEST((conflicting.error() == errc::hook_already_resumed));
  resumed = true;
  auto done = e.wait_blocking(id, 20s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(done->output.at("answer").at("approved").as_bool());
  BOOST_TEST(done->output.at("path").as_string() == "/v1/hooks/" + t);
  BOOST_TEST(seen["waiting"] == 0);  // the payload was there when the run reached its wait
  // Only the token's hash is stored; the audit says who resumed it.
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.hooks h WHERE h::text LIKE '%" + t + "%'") == "0");
  BOOST_TEST(query_value(db, "SELECT resumed_by FROM keel.hooks") == "ada@example.com");
  BOOST_TEST(query_value(db, "SELECT payload_hash IS NOT NULL AND resumed_at IS NOT NULL FROM keel.hooks") ==
             "t");
  // The run has finished: its hooks take no more resumes.
  auto late = e.resume_hook_blocking(t, yes);
  BOOST_REQUIRE(late);  // still the same payload: the same answer
}

BOOST_AUTO_TEST_CASE(a_waiting_hook_is_resumed_from_another_engine_and_keeps_its_token_on_replay,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  event_counts seen;
  auto o = options_for(db);
  o.poll_interval = 10s;  // the resume's notification must wake the worker
  o.on_event = seen.observer();
  engine e(o);
  std::mutex m;
  std::vector<std::string> tokens;  // per execution
  add_workflow(e, "approval", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto h = co_await ctx.create_hook("approve");
    {
      std::lock_guard lock(m);
      tokens.push_back(h.token());
    }
    auto answer = co_await h.wait();
    co_return answer ? *answer : json::value("expired");
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("approval", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return seen["waiting"] == 1; }, 10s));
  auto run = e.get_blocking(id).value();
  BOOST_TEST(to_string(run.status) == "waiting");
  BOOST_TEST(run.waiting_for.at("kind").as_string() == "hook");
  BOOST_TEST(run.waiting_for.at("hook").as_string() == "approve");
  std::string t;
  {
    std::lock_guard lock(m);
    t = tokens.at(0);
  }
  engine other(options_for(db));
  BOOST_REQUIRE(other.resume_hook_blocking(t, json::value("yes")));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(done->output.as_string() == "yes");
  std::lock_guard lock(m);
  BOOST_REQUIRE_EQUAL(tokens.size(), 2u);  // the resumed execution replayed create_hook
  BOOST_TEST(tokens[0] == tokens[1]);
}

BOOST_AUTO_TEST_CASE(expired_unknown_and_closed_hooks_are_typed_errors, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::mutex m;
  std::map<std::string, std::string> tokens;  // by workflow
  add_workflow(e, "short", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    hook_options brief;
    brief.ttl = 300ms;
    auto h = co_await ctx.create_hook("brief", brief);
    {
      std::lock_guard lock(m);
      tokens["short"] = h.token();
    }
    auto answer = co_await h.wait();
    co_return answer ? *answer : json::value("expired");
  });
  add_workflow(e, "forgets", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto h = co_await ctx.create_hook("unused");
    std::lock_guard lock(m);
    tokens["forgets"] = h.token();
    co_return json::value("done without waiting");
  });
  BOOST_REQUIRE(e.start_blocking());
  auto short_id = e.enqueue_blocking("short", json::object{}).value();
  auto forgets_id = e.enqueue_blocking("forgets", json::object{}).value();
  auto expired_run = e.wait_blocking(short_id, 20s);
  BOOST_REQUIRE(expired_run);
  BOOST_TEST(expired_run->output.as_string() == "expired");  // wait() ended with the hook's expiry
  BOOST_REQUIRE(e.wait_blocking(forgets_id, 20s));
  std::map<std::string, std::string> t;
  {
    std::lock_guard lock(m);
    t = tokens;
  }
  auto expired = e.resume_hook_blocking(t["short"], json::value(1));
  BOOST_REQUIRE(!expired);
  BOOST_TEST((expired.error() == errc::hook_expired));
  auto closed = e.resume_hook_blocking(t["forgets"], json::value(1));
  BOOST_REQUIRE(!closed);
  BOOST_TEST((closed.error() == errc::hook_closed));
  std::string unknown(43, 'A');
  auto missing = e.resume_hook_blocking(unknown, json::value(1));
  BOOST_REQUIRE(!missing);
  BOOST_TEST((missing.error() == errc::hook_not_found));
  auto malformed = e.resume_hook_blocking("../../etc/passwd", json::value(1));
  BOOST_REQUIRE(!malformed);
  BOOST_TEST((malformed.error() == errc::hook_not_found));
}

BOOST_AUTO_TEST_CASE(an_event_or_resume_for_a_parked_wait_is_recorded_at_that_wait_in_the_same_transaction,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  std::mutex m;
  std::string token;
  auto body = [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto h = co_await ctx.create_hook("approve");
    {
      std::lock_guard lock(m);
      token = h.token();
    }
    auto answer = co_await h.wait();
    auto event = co_await ctx.wait_for_event("shipped");
    co_return json::value{{"answer", *answer}, {"event", *event}};
  };
  auto parked = [&](const std::string& id) {
    return query_value(db, "SELECT status FROM keel.runs WHERE id = '" + id + "'") == "waiting";
  };
  std::string id;
  {
    engine first(options_for(db));
    add_workflow(first, "deliver", body);
    BOOST_REQUIRE(first.start_blocking());
    id = first.enqueue_blocking("deliver", json::object{}).value();
    BOOST_REQUIRE(wait_until([&] { return parked(id); }, 10s));
    first.stop_blocking();  // nobody runs it now: what the resume wrote is all there is
  }
  engine outside(options_for(db));
  std::string t;
  {
    std::lock_guard lock(m);
    t = token;
  }
  BOOST_REQUIRE(outside.resume_hook_blocking(t, json::value("yes")));
  // The wait's step (position 1) holds the payload already, and the run is due.
  BOOST_TEST(
      query_value(db, "SELECT name || ' ' || (output->'payload')::text FROM keel.steps WHERE seq = 1") ==
      "keel.hook_wait:approve \"yes\"");
  BOOST_TEST(query_value(db, "SELECT status FROM keel.runs") == "queued");
  {
    engine second(options_for(db));
    add_workflow(second, "deliver", body);
    BOOST_REQUIRE(second.start_blocking());
    BOOST_REQUIRE(wait_until([&] { return parked(id); }, 10s));
    second.stop_blocking();
  }
  BOOST_REQUIRE(outside.send_event_blocking(id, "shipped", json::value(7)));
  BOOST_TEST(query_value(db, "SELECT (output->'payload')::text FROM keel.steps WHERE seq = 2") == "7");
  BOOST_TEST(query_value(db, "SELECT consumed_seq FROM keel.events") == "2");
  // A repeat of the same resume changes nothing.
  BOOST_REQUIRE(outside.resume_hook_blocking(t, json::value("yes")));
  engine third(options_for(db));
  add_workflow(third, "deliver", body);
  BOOST_REQUIRE(third.start_blocking());
  auto done = third.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(done->output.at("answer").as_string() == "yes");
  BOOST_TEST(done->output.at("event").as_int64() == 7);
  BOOST_TEST(done->steps.size() == 3u);
}

BOOST_AUTO_TEST_CASE(a_repeated_event_key_neither_adds_an_event_nor_wakes_the_run, *utf::timeout(60)) {
  auto db = fresh_database();
  event_counts seen;
  auto o = options_for(db);
  o.on_event = seen.observer();
  engine e(o);
  add_workflow(e, "twice", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto first = co_await ctx.wait_for_event("x");
    auto second = co_await ctx.wait_for_event("x");
    co_return json::value{{"first", first ? *first : json::value(nullptr)},
                          {"second", second ? *second : json::value(nullptr)}};
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("twice", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return seen["waiting"] == 1; }, 10s));
  event_options k1;
  k1.idempotency_key = "k1";
  BOOST_REQUIRE(e.send_event_blocking(id, "x", json::value(1), k1));
  BOOST_REQUIRE(wait_until([&] { return seen["waiting"] == 2; }, 10s));  // the second wait parked
  const int claims_before = e.get_blocking(id).value().claims;
  BOOST_REQUIRE(e.send_event_blocking(id, "x", json::value("repeat"), k1));  // no-op
  std::this_thread::sleep_for(300ms);
  auto run = e.get_blocking(id).value();
  BOOST_TEST(to_string(run.status) == "waiting");  // not woken by the repeat
  BOOST_TEST(run.claims == claims_before);
  event_options k2;
  k2.idempotency_key = "k2";
  BOOST_REQUIRE(e.send_event_blocking(id, "x", json::value(2), k2));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(json::serialize(done->output) == R"({"first":1,"second":2})");
}

BOOST_AUTO_TEST_SUITE_END()
