// Debounce on a real PostgreSQL: enqueues with one key collapse into one queued run that starts a window
// after the last of them with the last input, whatever the number of concurrent callers.
#define BOOST_TEST_MODULE debounce
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>
#include <future>
#include <set>
#include <stdexcept>
#include <thread>

#include "engine_fixture.hpp"
#include "keel/storage/error.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;

namespace {

workflow_definition echo(std::string name, std::optional<debounce_rule> debounce) {
  workflow_definition def{
      std::move(name), 1,           {}, nullptr, {}, {}, {}, std::move(debounce), std::nullopt,
      std::nullopt,    std::nullopt};
  def.body = [](context&, json::value in) -> asio::awaitable<json::value> { co_return in; };
  return def;
}

long count_of(const std::string& db, const std::string& sql) {
  return std::stol(query_value(db, sql));
}

}  // namespace

BOOST_AUTO_TEST_CASE(enqueues_with_one_key_collapse_into_one_run_with_the_last_input) {
  auto db = fresh_database();
  engine e(options_for(db));
  e.register_workflow(echo("sync", debounce_rule{1500ms, "/user"}));
  BOOST_REQUIRE(e.start_blocking());
  std::set<std::string> ids;
  auto before_last = std::chrono::system_clock::now();
  for (int i = 0; i < 5; ++i) {
    if (i > 0) std::this_thread::sleep_for(100ms);   // each well within the window of the one before
    before_last = std::chrono::system_clock::now();  // the last one's window starts after this
    auto id = e.enqueue_blocking("sync", json::value{{"user", "a"}, {"n", i}});
    BOOST_REQUIRE(id);
    ids.insert(*id);
  }
  BOOST_REQUIRE_EQUAL(ids.size(), 1u);
  const auto a = *ids.begin();
  auto b = e.enqueue_blocking("sync", json::value{{"user", "b"}, {"n", 0}});
  BOOST_REQUIRE(b);
  BOOST_TEST(*b != a);
  BOOST_TEST(status_of(e, a) == "queued");  // its window (1.5 s from the last enqueue) has not passed
  auto run = e.wait_blocking(a, 10s);
  BOOST_REQUIRE(run);
  BOOST_TEST(run->output == (json::value{{"user", "a"}, {"n", 4}}));
  BOOST_REQUIRE(run->started_at.has_value());
  // Not before a window after the last enqueue (one clock: the database's, on this machine).
  BOOST_TEST((*run->started_at >= before_last + 1490ms));
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs") == 2);
  // Each collapse is in the run log, in the same statement as the change.
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.run_log, unnest(kinds) k WHERE k = 'run_debounced'") ==
             4);
  // Started: the next enqueue with the key opens a new window, with a new run.
  auto next = e.enqueue_blocking("sync", json::value{{"user", "a"}, {"n", 5}});
  BOOST_REQUIRE(next);
  BOOST_TEST(*next != a);
  e.stop_blocking();
}

BOOST_AUTO_TEST_CASE(a_run_queued_again_after_it_started_holds_its_key_no_more) {
  auto db = fresh_database();
  engine e(options_for(db));
  workflow_definition waits{
      "waits",      1,           {}, nullptr, {}, {}, {}, debounce_rule{100ms, "/user"}, std::nullopt,
      std::nullopt, std::nullopt};
  waits.body = [](context& ctx, json::value in) -> asio::awaitable<json::value> {
    co_await ctx.wait_for_event("go");
    co_return in;
  };
  e.register_workflow(waits);
  BOOST_REQUIRE(e.start_blocking());
  auto first = e.enqueue_blocking("waits", json::value{{"user", "a"}, {"n", 1}});
  BOOST_REQUIRE(first);
  BOOST_REQUIRE(wait_until([&] { return status_of(e, *first) == "waiting"; }, 10s));
  // Started, parked: the next enqueue opens a new window with a new run, queued for a while.
  enqueue_options long_window;
  long_window.debounce_window = 60s;
  auto second = e.enqueue_blocking("waits", json::value{{"user", "a"}, {"n", 2}}, long_window);
  BOOST_REQUIRE(second);
  BOOST_TEST(*second != *first);
  // The first is woken (queued again, with claims > 0) while the second holds the key: no collision, and a
  // third enqueue collapses into the second, never into the first.
  BOOST_REQUIRE(e.send_event_blocking(*first, "go", json::object{}));
  auto done = e.wait_blocking(*first, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(done->output == (json::value{{"user", "a"}, {"n", 1}}));  // its own input, untouched
  auto third = e.enqueue_blocking("waits", json::value{{"user", "a"}, {"n", 3}}, long_window);
  BOOST_REQUIRE(third);
  BOOST_TEST(*third == *second);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs") == 2);
  e.stop_blocking();
}

BOOST_AUTO_TEST_CASE(concurrent_callers_all_get_the_one_run) {
  auto db = fresh_database();
  engine e(options_for(db));
  e.register_workflow(echo("sync", debounce_rule{3s, "/user"}));
  BOOST_REQUIRE(e.tick_blocking());  // migrates; no worker: the run stays queued
  std::vector<std::future<result<enqueued>>> pending;
  for (int i = 0; i < 150; ++i) {
    const json::value input{{"user", 42}, {"n", i}};
    pending.push_back(asio::co_spawn(e.get_executor(), e.submit("sync", input), asio::use_future));
  }
  std::set<std::string> ids;
  int created = 0;
  for (auto& f : pending) {
    auto r = f.get();
    BOOST_REQUIRE(r);
    ids.insert(r->id);
    created += r->created ? 1 : 0;
  }
  BOOST_TEST(ids.size() == 1u);
  BOOST_TEST(created == 1);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs") == 1);
  // A number key is its JSON text.
  BOOST_TEST(query_value(db, "SELECT debounce_key FROM keel.runs") == "42");
}

BOOST_AUTO_TEST_CASE(the_enqueue_may_give_the_key_or_the_window_and_bad_combinations_are_refused) {
  auto db = fresh_database();
  engine e(options_for(db));
  e.register_workflow(echo("plain", std::nullopt));
  e.register_workflow(echo("ruled", debounce_rule{5s, "/user"}));
  BOOST_REQUIRE(e.tick_blocking());
  enqueue_options keyed;
  keyed.debounce_key = "k";
  keyed.debounce_window = 5s;
  auto first = e.enqueue_blocking("plain", json::object{{"n", 1}}, keyed);
  auto second = e.enqueue_blocking("plain", json::object{{"n", 2}}, keyed);
  BOOST_REQUIRE(first && second);
  BOOST_TEST(*first == *second);
  // The enqueue's key wins over the rule's.
  enqueue_options override_key;
  override_key.debounce_key = "everyone";
  auto x = e.enqueue_blocking("ruled", json::object{{"user", "x"}}, override_key);
  auto y = e.enqueue_blocking("ruled", json::object{{"user", "y"}}, override_key);
  BOOST_REQUIRE(x && y);
  BOOST_TEST(*x == *y);
  // An input without the rule's value is not debounced.
  auto n1 = e.enqueue_blocking("ruled", json::object{{"other", 1}});
  auto n2 = e.enqueue_blocking("ruled", json::object{{"other", 1}});
  BOOST_REQUIRE(n1 && n2);
  BOOST_TEST(*n1 != *n2);
  // A key without a window, a window without a key, a debounce with an idempotency key or a start time.
  enqueue_options no_window;
  no_window.debounce_key = "k";
  BOOST_TEST(
      (e.enqueue_blocking("plain", json::object{}, no_window).error() == storage::errc::invalid_argument));
  enqueue_options no_key;
  no_key.debounce_window = 1s;
  BOOST_TEST(
      (e.enqueue_blocking("plain", json::object{}, no_key).error() == storage::errc::invalid_argument));
  enqueue_options with_idempotency = keyed;
  with_idempotency.idempotency_key = "once";
  BOOST_TEST((e.enqueue_blocking("plain", json::object{}, with_idempotency).error() ==
              storage::errc::invalid_argument));
  enqueue_options with_run_at = keyed;
  with_run_at.run_at = std::chrono::system_clock::now() + 1h;
  BOOST_TEST(
      (e.enqueue_blocking("plain", json::object{}, with_run_at).error() == storage::errc::invalid_argument));
  enqueue_options long_key;
  long_key.debounce_key = std::string(256, 'k');
  long_key.debounce_window = 1s;
  BOOST_TEST(
      (e.enqueue_blocking("plain", json::object{}, long_key).error() == storage::errc::invalid_argument));
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs") == 4);
  // Malformed rules are refused at registration.
  BOOST_CHECK_THROW(e.register_workflow(echo("bad", debounce_rule{0ms, "/user"})), std::invalid_argument);
  BOOST_CHECK_THROW(e.register_workflow(echo("bad", debounce_rule{1s, "user"})), std::invalid_argument);
}
