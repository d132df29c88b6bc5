// keel::testing on its own embedded PostgreSQL: time skipping makes week-long sleeps, three-day deadlines,
// hook expiries and delayed starts due at once, and a killed worker's runs come back on a restarted one.
#define BOOST_TEST_MODULE testing_kit
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <thread>

#include "example_workflows.hpp"
#include "keel/engine/alternatives.hpp"
#include "keel/testing/environment.hpp"

using namespace keel;
using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace json = boost::json;
namespace utf = boost::unit_test;

namespace {

using days = std::chrono::days;

/// Polls `pred` until it holds or `timeout` passes.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

std::string status_of(testing::environment& env, const std::string& id) {
  auto run = env.engine().get_blocking(id);
  return run ? std::string(storage::to_string(run->status)) : run.error().message();
}

std::function<asio::awaitable<json::value>(context&, json::value)> as_body(
    std::function<asio::awaitable<json::value>(context&, json::value)> f) {
  return f;
}

void register_flows(engine& e) {
  // Sends a reminder, sleeps a week, sends another.
  e.register_workflow<json::value, json::value>(
      "weekly", 1, as_body([](context& ctx, json::value) -> asio::awaitable<json::value> {
        auto first = []() -> asio::awaitable<int> { co_return 1; };
        co_await ctx.step("remind", first);
        co_await ctx.sleep(days(7));
        auto second = []() -> asio::awaitable<int> { co_return 2; };
        co_await ctx.step("remind_again", second);
        co_return json::value("done");
      }));
  // Waits three days for an approval, then escalates.
  e.register_workflow<json::value, json::value>(
      "approval", 1, as_body([](context& ctx, json::value) -> asio::awaitable<json::value> {
        auto answer = co_await ctx.wait_for_event(
            "approved", std::chrono::duration_cast<std::chrono::milliseconds>(days(3)));
        if (answer) co_return json::value("approved");
        auto escalate = []() -> asio::awaitable<std::string> { co_return "escalated"; };
        co_return json::value(co_await ctx.step("escalate", escalate));
      }));
  // A hook that lasts a day, or a timer of two days, whichever comes first.
  e.register_workflow<json::value, json::value>(
      "sign_off", 1, as_body([](context& ctx, json::value) -> asio::awaitable<json::value> {
        hook_options o;
        o.ttl = std::chrono::duration_cast<std::chrono::milliseconds>(days(1));
        auto h = co_await ctx.create_hook("sign", o);
        auto token = [t = h.token()]() -> asio::awaitable<std::string> { co_return t; };
        co_await ctx.step("publish_token", token);
        auto signed_off = co_await h.wait();
        co_return json::value(signed_off ? "signed" : "expired");
      }));
}

/// Workflows whose deadlines are counted from a recorded ctx.now(): two sleeps a day apart, ctx.all's timers,
/// and waits with timeouts inside parallel branches.
void register_relative_deadlines(engine& e) {
  e.register_workflow<json::value, json::value>(
      "two_days", 1, as_body([](context& ctx, json::value) -> asio::awaitable<json::value> {
        co_await ctx.sleep(days(1));
        auto between = []() -> asio::awaitable<int> { co_return 1; };
        co_await ctx.step("between", between);
        co_await ctx.sleep(days(1));
        co_return json::value("both");
      }));
  e.register_workflow<json::value, json::value>(
      "all_timers", 1, as_body([](context& ctx, json::value) -> asio::awaitable<json::value> {
        const keel::timer one(std::chrono::duration_cast<std::chrono::milliseconds>(days(1)));
        const keel::timer two(std::chrono::duration_cast<std::chrono::milliseconds>(days(2)));
        auto both = co_await ctx.all(one, two);
        co_return json::value(static_cast<std::int64_t>(both.size()));
      }));
  e.register_workflow<json::value, json::value>(
      "branch_deadlines", 1, as_body([](context& ctx, json::value) -> asio::awaitable<json::value> {
        auto waits = [](context& b) -> asio::awaitable<bool> {
          auto answer = co_await b.wait_for_event(
              "reply", std::chrono::duration_cast<std::chrono::milliseconds>(days(3)));
          co_return answer.has_value();
        };
        auto sleeps = [](context& b) -> asio::awaitable<bool> {
          co_await b.sleep(days(2));
          co_return true;
        };
        auto [replied, slept] = co_await ctx.parallel(waits, sleeps);
        co_return json::value{{"replied", replied}, {"slept", slept}};
      }));
}

}  // namespace

BOOST_AUTO_TEST_CASE(skips_back_to_back_each_move_what_the_last_one_left_waiting, *utf::timeout(120)) {
  testing::environment_options o;
  o.register_workflows = register_relative_deadlines;
  testing::environment env(std::move(o));
  auto twice = env.engine().enqueue_blocking("two_days", json::object{}).value();
  auto all = env.engine().enqueue_blocking("all_timers", json::object{}).value();
  auto branches = env.engine().enqueue_blocking("branch_deadlines", json::object{}).value();
  // The first skip makes the first sleep due; the second must wait for the run to reach its second sleep.
  env.advance_blocking(days(1) + 1min);
  env.advance_blocking(days(1) + 1min);
  BOOST_TEST(env.wait_blocking(twice).output == json::value("both"));
  BOOST_TEST(env.wait_blocking(all).output == json::value(2));
  // The branches' deadlines count from a ctx.now() recorded at their first execution: moved too.
  env.advance_blocking(days(1));
  BOOST_TEST(env.wait_blocking(branches).output == (json::value{{"replied", false}, {"slept", true}}));
}

BOOST_AUTO_TEST_CASE(a_week_long_sleep_ends_when_a_week_is_skipped, *utf::timeout(120)) {
  testing::environment_options o;
  o.register_workflows = register_flows;
  testing::environment env(std::move(o));
  auto id = env.engine().enqueue_blocking("weekly", json::object{}).value();
  BOOST_REQUIRE(eventually([&] { return status_of(env, id) == "sleeping"; }));
  // Six days are not enough, in two steps: the remaining day stays.
  env.advance_blocking(days(2));
  env.advance_blocking(days(4));
  std::this_thread::sleep_for(300ms);
  BOOST_TEST(status_of(env, id) == "sleeping");
  const auto t0 = std::chrono::steady_clock::now();
  env.advance_blocking(days(1));
  auto run = env.wait_blocking(id, 10s);
  const auto took = std::chrono::steady_clock::now() - t0;
  BOOST_TEST(run.output == json::value("done"));
  BOOST_TEST_MESSAGE("the week's last day took " << std::chrono::duration<double>(took).count() << " s");
  // Each step ran once; the sleep in between.
  const auto history = env.history_blocking(id);
  BOOST_TEST(std::count(history.begin(), history.end(), "step_completed:remind") == 1);
  BOOST_TEST(std::count(history.begin(), history.end(), "step_completed:remind_again") == 1);
  BOOST_TEST(std::count(history.begin(), history.end(), "run_sleeping") == 1);
}

BOOST_AUTO_TEST_CASE(time_skipped_right_after_an_enqueue_waits_for_the_run_to_reach_its_sleep,
                     *utf::timeout(120)) {
  testing::environment_options o;
  o.register_workflows = register_flows;
  testing::environment env(std::move(o));
  auto id = env.engine().enqueue_blocking("weekly", json::object{}).value();
  env.advance_blocking(days(7));
  BOOST_TEST(env.wait_blocking(id).output == json::value("done"));
}

BOOST_AUTO_TEST_CASE(an_approval_that_never_comes_times_out_after_three_skipped_days, *utf::timeout(120)) {
  testing::environment_options o;
  o.register_workflows = register_flows;
  testing::environment env(std::move(o));
  auto late = env.engine().enqueue_blocking("approval", json::object{}).value();
  auto answered = env.engine().enqueue_blocking("approval", json::object{}).value();
  BOOST_REQUIRE(
      eventually([&] { return status_of(env, late) == "waiting" && status_of(env, answered) == "waiting"; }));
  BOOST_REQUIRE(env.engine().send_event_blocking(answered, "approved", json::value(true)));
  BOOST_TEST(env.wait_blocking(answered).output == json::value("approved"));
  env.advance_blocking(days(3) + 1min);
  BOOST_TEST(env.wait_blocking(late).output == json::value("escalated"));
}

BOOST_AUTO_TEST_CASE(a_hook_expires_when_its_time_to_live_is_skipped, *utf::timeout(120)) {
  testing::environment_options o;
  o.register_workflows = register_flows;
  testing::environment env(std::move(o));
  auto id = env.engine().enqueue_blocking("sign_off", json::object{}).value();
  BOOST_REQUIRE(eventually([&] { return status_of(env, id) == "waiting"; }));
  auto run = env.engine().get_blocking(id).value();
  std::string token;
  for (const auto& s : run.steps)
    if (s.name == "publish_token") token = std::string(s.output.as_string());
  BOOST_REQUIRE(!token.empty());
  env.advance_blocking(days(2));
  BOOST_TEST(env.wait_blocking(id).output == json::value("expired"));
  auto late = env.engine().resume_hook_blocking(token, json::value(true));
  BOOST_REQUIRE(!late);
  BOOST_TEST((late.error() == errc::hook_expired || late.error() == errc::hook_closed),
             late.error().message());
}

BOOST_AUTO_TEST_CASE(a_start_delayed_by_two_days_runs_when_they_are_skipped, *utf::timeout(120)) {
  testing::environment_options o;
  o.register_workflows = register_flows;
  testing::environment env(std::move(o));
  enqueue_options later;
  later.run_at = std::chrono::system_clock::now() + days(2);
  auto id = env.engine().enqueue_blocking("approval", json::object{}, later).value();
  std::this_thread::sleep_for(300ms);
  BOOST_TEST(status_of(env, id) == "queued");
  env.advance_blocking(days(2));
  BOOST_REQUIRE(eventually([&] { return status_of(env, id) == "waiting"; }));
  // Time moves forward only.
  BOOST_CHECK_THROW(env.advance_blocking(-1ms), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(a_killed_workers_run_resumes_on_a_restarted_one, *utf::timeout(120)) {
  static std::atomic<int> attempts{0};
  static std::atomic<bool> hold{true};
  testing::environment_options o;
  o.settle_timeout = 300ms;
  o.register_workflows = [](engine& e) {
    e.register_workflow<json::value, json::value>(
        "crashy", 1, as_body([](context& ctx, json::value) -> asio::awaitable<json::value> {
          auto once = []() -> asio::awaitable<int> { co_return 1; };
          co_await ctx.step("before", once);
          auto slow = []() -> asio::awaitable<int> {
            ++attempts;
            while (hold.load()) {
              asio::steady_timer t(co_await asio::this_coro::executor, 20ms);
              co_await t.async_wait(asio::use_awaitable);
            }
            co_return 2;
          };
          co_await ctx.step("slow", slow);
          co_return json::value("finished");
        }));
  };
  testing::environment env(std::move(o));
  auto id = env.engine().enqueue_blocking("crashy", json::object{}).value();
  BOOST_REQUIRE(eventually([&] { return attempts.load() == 1; }));
  // A run in the middle of a step: time cannot be skipped under it.
  BOOST_CHECK_THROW(env.advance_blocking(1h), std::runtime_error);
  env.kill_worker_blocking();
  hold = false;
  env.restart_worker_blocking();
  BOOST_TEST(env.wait_blocking(id).output == json::value("finished"));
  // The step the crash interrupted ran again; the one before it did not.
  BOOST_TEST(attempts.load() == 2);
  const auto history = env.history_blocking(id);
  BOOST_TEST(std::count(history.begin(), history.end(), "step_completed:before") == 1);
  BOOST_TEST(std::count(history.begin(), history.end(), "run_started") == 2);
}

BOOST_AUTO_TEST_CASE(the_example_expense_approval_escalates_once_a_day_is_skipped, *utf::timeout(120)) {
  testing::environment_options o;
  o.register_workflows = examples::register_example_workflows;
  testing::environment env(std::move(o));
  auto id = env.engine().enqueue_blocking("expense_approval", json::value{{"amount_cents", 12000}}).value();
  // The link each approver was sent (the notify step's record), once the run waits for that approver.
  auto link_for = [&](const std::string& who) {
    std::string link;
    eventually([&] {
      auto run = env.engine().get_blocking(id);
      if (!run || run->status != storage::run_status::waiting) return false;
      for (const auto& s : run->steps)
        if (s.name == "notify_" + who) link = std::string(s.output.at("link").as_string());
      return !link.empty();
    });
    return link.substr(link.rfind('/') + 1);
  };
  const auto manager = link_for("manager");
  BOOST_REQUIRE(!manager.empty());
  env.advance_blocking(std::chrono::hours(25));  // the manager's 24 hours pass unanswered
  const auto director = link_for("director");
  BOOST_REQUIRE(!director.empty());
  auto stale = env.engine().resume_hook_blocking(manager, json::value("approved"));
  BOOST_TEST(!stale.has_value(), "the manager's link stopped working once the request escalated");
  BOOST_REQUIRE(env.engine().resume_hook_blocking(director, json::value("approved")));
  const auto run = env.wait_blocking(id);
  BOOST_TEST(run.output.at("decided_by") == json::value("director"));
}
