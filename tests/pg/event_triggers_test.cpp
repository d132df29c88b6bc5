// Event triggers and cancel-on on a real PostgreSQL: an event starts one run of each workflow that declares
// it (once per idempotency key), and cancels the unfinished runs whose input matches it, compensations and
// all.
#define BOOST_TEST_MODULE event_triggers
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <stdexcept>

#include "engine_fixture.hpp"
#include "keel/storage/error.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;

namespace {

workflow_definition echo(std::string name, std::vector<std::string> triggers, int version = 1) {
  workflow_definition def{std::move(name),     version, {},           nullptr,      {},
                          std::move(triggers), {},      std::nullopt, std::nullopt, std::nullopt,
                          std::nullopt};
  def.body = [](context&, json::value in) -> asio::awaitable<json::value> { co_return in; };
  return def;
}

long count_of(const std::string& db, const std::string& sql) {
  return std::stol(query_value(db, sql));
}

}  // namespace

BOOST_AUTO_TEST_CASE(an_event_starts_one_run_of_each_workflow_that_declares_it_once_per_key) {
  auto db = fresh_database();
  engine worker(options_for(db));
  worker.register_workflow(echo("fulfil", {"order.placed"}));
  worker.register_workflow(echo("invoice", {"order.placed", "order.amended"}));
  worker.register_workflow(echo("unrelated", {}));
  BOOST_REQUIRE(worker.start_blocking());
  // Another process publishes: it registers none of these workflows.
  engine publisher(options_for(db));
  BOOST_REQUIRE(publisher.tick_blocking());

  publish_options keyed;
  keyed.idempotency_key = "order-1";
  const json::value order{{"order", 1}};
  auto first = publisher.publish_event_blocking("order.placed", order, keyed);
  BOOST_REQUIRE(first);
  BOOST_REQUIRE_EQUAL(first->started.size(), 2u);
  BOOST_TEST(first->started[0].workflow == "fulfil");
  BOOST_TEST(first->started[1].workflow == "invoice");
  BOOST_TEST(first->started[0].created);
  BOOST_TEST(first->cancelled.empty());
  for (const auto& r : first->started) {
    auto done = worker.wait_blocking(r.id, 10s);
    BOOST_REQUIRE(done);
    BOOST_TEST(to_string(done->status) == "completed");
    BOOST_TEST(json::serialize(done->output) == R"({"order":1})");
  }
  // The same key again: the same runs, nothing new.
  auto again = publisher.publish_event_blocking("order.placed", order, keyed);
  BOOST_REQUIRE(again);
  BOOST_REQUIRE_EQUAL(again->started.size(), 2u);
  BOOST_TEST(again->started[0].id == first->started[0].id);
  BOOST_TEST(!again->started[0].created);
  // The same key with another payload is refused, and starts nothing.
  const json::value other{{"order", 2}};
  BOOST_TEST(
      (publisher.publish_event_blocking("order.placed", other, keyed).error() == errc::idempotency_conflict));
  // The key is the event's: another event may use it.
  auto amended = publisher.publish_event_blocking("order.amended", order, keyed);
  BOOST_REQUIRE(amended);
  BOOST_REQUIRE_EQUAL(amended->started.size(), 1u);
  BOOST_TEST(amended->started[0].workflow == "invoice");
  BOOST_TEST(amended->started[0].created);
  // Without a key, each publish starts runs.
  auto unkeyed1 = publisher.publish_event_blocking("order.placed", order);
  auto unkeyed2 = publisher.publish_event_blocking("order.placed", order);
  BOOST_REQUIRE(unkeyed1);
  BOOST_REQUIRE(unkeyed2);
  BOOST_TEST(unkeyed1->started[0].id != unkeyed2->started[0].id);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs") == 2 + 1 + 4);
  // An event nobody declared starts nothing, and is no error.
  auto nobody = publisher.publish_event_blocking("order.shipped", order);
  BOOST_REQUIRE(nobody);
  BOOST_TEST(nobody->started.empty());
  // Bad input: typed errors, nothing written.
  BOOST_TEST((publisher.publish_event_blocking("", order).error() == storage::errc::invalid_argument));
  BOOST_TEST((publisher.publish_event_blocking(std::string(256, 'e'), order).error() ==
              storage::errc::invalid_argument));
  publish_options long_key;
  long_key.idempotency_key = std::string(256, 'k');
  BOOST_TEST((publisher.publish_event_blocking("order.placed", order, long_key).error() ==
              storage::errc::invalid_argument));
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs") == 7);
  worker.stop_blocking();
}

BOOST_AUTO_TEST_CASE(the_newest_version_of_a_workflow_decides_what_starts_it) {
  auto db = fresh_database();
  engine worker(options_for(db));
  worker.register_workflow(echo("report", {"day.closed"}, 1));
  worker.register_workflow(echo("report", {"week.closed"}, 2));
  BOOST_REQUIRE(worker.start_blocking());
  auto day = worker.publish_event_blocking("day.closed", json::object{});
  BOOST_REQUIRE(day);
  BOOST_TEST(day->started.empty());
  auto week = worker.publish_event_blocking("week.closed", json::object{});
  BOOST_REQUIRE(week);
  BOOST_REQUIRE_EQUAL(week->started.size(), 1u);
  auto run = worker.get_blocking(week->started[0].id);
  BOOST_REQUIRE(run);
  BOOST_TEST(run->version == 2);
  worker.stop_blocking();
}

BOOST_AUTO_TEST_CASE(an_event_cancels_the_matching_runs_and_their_compensations_run) {
  auto db = fresh_database();
  engine worker(options_for(db));
  std::atomic<int> undone{0};
  workflow_definition onboarding{
      "onboarding", 1, {}, nullptr, {}, {}, {}, std::nullopt, std::nullopt, std::nullopt, std::nullopt};
  onboarding.cancel_on = {{"user.deleted", "/user_id", ""}, {"account.closed", "/account", "/user/account"}};
  onboarding.body = [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    co_await ctx.step("create account", [] { return 1; });
    ctx.compensate("delete account", [&] {
      ++undone;
      return 1;
    });
    co_await ctx.wait_for_event("verified");
    co_return nullptr;
  };
  worker.register_workflow(onboarding);
  BOOST_REQUIRE(worker.start_blocking());
  auto user1 =
      worker.enqueue_blocking("onboarding", json::value{{"user_id", 1}, {"user", {{"account", "a1"}}}});
  auto user2 =
      worker.enqueue_blocking("onboarding", json::value{{"user_id", 2}, {"user", {{"account", "a2"}}}});
  auto user3 =
      worker.enqueue_blocking("onboarding", json::value{{"user_id", 3}, {"user", {{"account", "a3"}}}});
  BOOST_REQUIRE(user1 && user2 && user3);
  BOOST_REQUIRE(wait_until(
      [&] { return count_of(db, "SELECT count(*) FROM keel.runs WHERE status = 'waiting'") == 3; }, 10s));

  // A payload without the matched value cancels nothing.
  auto vague = worker.publish_event_blocking("user.deleted", json::object{{"name", "x"}});
  BOOST_REQUIRE(vague);
  BOOST_TEST(vague->cancelled.empty());
  auto deleted = worker.publish_event_blocking("user.deleted", json::object{{"user_id", 1}});
  BOOST_REQUIRE(deleted);
  BOOST_REQUIRE_EQUAL(deleted->cancelled.size(), 1u);
  BOOST_TEST(deleted->cancelled[0] == *user1);
  auto ended = worker.wait_blocking(*user1, 10s);
  BOOST_REQUIRE(ended);
  BOOST_TEST(to_string(ended->status) == "cancelled");
  BOOST_TEST(undone.load() == 1);  // its compensation ran, as for any cancel
  // Another pointer into the input than into the payload.
  auto closed = worker.publish_event_blocking("account.closed", json::object{{"account", "a3"}});
  BOOST_REQUIRE(closed);
  BOOST_REQUIRE_EQUAL(closed->cancelled.size(), 1u);
  BOOST_TEST(closed->cancelled[0] == *user3);
  BOOST_REQUIRE(worker.wait_blocking(*user3, 10s));
  BOOST_TEST(status_of(worker, *user2) == "waiting");
  // Again: the runs have ended, nothing more to cancel.
  auto repeat = worker.publish_event_blocking("user.deleted", json::object{{"user_id", 1}});
  BOOST_REQUIRE(repeat);
  BOOST_TEST(repeat->cancelled.empty());
  worker.stop_blocking();
}

BOOST_AUTO_TEST_CASE(a_workflow_restarted_by_its_own_event_is_not_cancelled_by_a_repeat) {
  auto db = fresh_database();
  engine worker(options_for(db));
  // The "latest wins" pattern: each signup of a user starts a run and cancels the user's earlier one.
  workflow_definition w{"welcome",
                        1,
                        {},
                        nullptr,
                        {},
                        {"signup"},
                        {{"signup", "/user", ""}},
                        std::nullopt,
                        std::nullopt,
                        std::nullopt,
                        std::nullopt};
  w.body = [](context& ctx, json::value in) -> asio::awaitable<json::value> {
    co_await ctx.wait_for_event("never");
    co_return in;
  };
  worker.register_workflow(w);
  BOOST_REQUIRE(worker.start_blocking());
  publish_options first_key;
  first_key.idempotency_key = "signup-1";
  const json::value user{{"user", 1}};
  auto first = worker.publish_event_blocking("signup", user, first_key);
  BOOST_REQUIRE(first);
  BOOST_REQUIRE_EQUAL(first->started.size(), 1u);
  const auto run = first->started[0].id;
  BOOST_TEST(first->cancelled.empty());
  BOOST_REQUIRE(wait_until([&] { return status_of(worker, run) == "waiting"; }, 10s));
  // A sender's retry with the key returns that run, and leaves it alone.
  auto repeat = worker.publish_event_blocking("signup", user, first_key);
  BOOST_REQUIRE(repeat);
  BOOST_TEST(repeat->started[0].id == run);
  BOOST_TEST(repeat->cancelled.empty());
  BOOST_TEST(status_of(worker, run) == "waiting");
  // A new signup of the same user: a new run, and the earlier one cancelled.
  publish_options second_key;
  second_key.idempotency_key = "signup-2";
  auto second = worker.publish_event_blocking("signup", user, second_key);
  BOOST_REQUIRE(second);
  BOOST_REQUIRE_EQUAL(second->cancelled.size(), 1u);
  BOOST_TEST(second->cancelled[0] == run);
  BOOST_TEST(second->started[0].id != run);
  BOOST_REQUIRE(wait_until([&] { return status_of(worker, run) == "cancelled"; }, 10s));
  BOOST_TEST(status_of(worker, second->started[0].id) != "cancelled");
  worker.stop_blocking();
}

BOOST_AUTO_TEST_CASE(malformed_declarations_are_refused_at_registration) {
  engine e(options_for("host=/nonexistent"));
  auto bad_pointer = echo("w", {});
  bad_pointer.cancel_on = {{"user.deleted", "user_id", ""}};
  BOOST_CHECK_THROW(e.register_workflow(bad_pointer), std::invalid_argument);
  auto bad_escape = echo("w", {});
  bad_escape.cancel_on = {{"user.deleted", "/a~2", ""}};
  BOOST_CHECK_THROW(e.register_workflow(bad_escape), std::invalid_argument);
  BOOST_CHECK_THROW(e.register_workflow(echo("w", {""})), std::invalid_argument);
  BOOST_CHECK_NO_THROW(e.register_workflow(echo("w", {"ok"})));
}
