// The durable run log against a real PostgreSQL: every lifecycle event appended in the transaction of the
// change it describes, and read back in an order that no later commit breaks (no gap, no duplicate), across
// workers.
#define BOOST_TEST_MODULE run_log
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "engine_fixture.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

namespace {

/// Every event of `run` (or of all runs), read page by page.
std::vector<log_event> whole_log(engine& e, std::optional<run_id> run = std::nullopt) {
  std::vector<log_event> out;
  std::int64_t after = 0;
  read_log_options o;
  o.run = std::move(run);
  o.limit = 100;
  for (;;) {
    auto page = e.read_log_blocking(after, o);
    BOOST_REQUIRE_MESSAGE(page, page.error().message());
    if (page->events.empty()) return out;
    after = page->events.back().pos;
    for (auto& ev : page->events)
      out.push_back(std::move(ev));
  }
}

std::string kinds(const std::vector<log_event>& events) {
  std::string out;
  for (const auto& e : events) {
    if (!out.empty()) out += ',';
    out += e.kind;
    // Appended piece by piece: g++ 12 at -O3 reports a false -Wrestrict in `"literal" + std::string&&`.
    if (e.kind == "step_completed" || e.kind == "step_failed")
      out.append(":").append(e.data.at("name").as_string());
    if (e.kind == "run_resumed") out.append(":").append(e.data.at("by").as_string());
  }
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(a_runs_lifecycle_is_logged_in_order_with_what_woke_it_each_time, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "child", [](context& ctx, json::value in) -> asio::awaitable<json::value> {
    auto twice = [&] { return 2 * in.as_int64(); };
    co_return json::value(co_await ctx.step("twice", twice));
  });
  add_workflow(e, "parent", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto first = [] { return 1; };
    co_await ctx.step("first", first);
    co_await ctx.sleep(50ms);
    auto got = co_await ctx.wait_for_event("go");
    json::value input(21);
    auto child = co_await ctx.child<int>("child", input);
    co_return json::value{{"event", *got}, {"child", child}};
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("parent", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, id) == "waiting"; }, 10s));
  BOOST_REQUIRE(e.send_event_blocking(id, "go", json::value("yes")));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");

  const auto log = whole_log(e, id);
  BOOST_TEST(
      kinds(log) ==
      "run_enqueued,run_started,step_started,step_completed:first,step_completed:keel.sleep,run_sleeping,"
      "run_resumed:timer,run_started,run_waiting,run_resumed:event,step_completed:keel.event:go,"
      "run_started,run_waiting,run_resumed:child,run_started,step_completed:keel.child:child,"
      "run_completed");
  for (std::size_t i = 1; i < log.size(); ++i)
    BOOST_TEST(log[i].pos > log[i - 1].pos);
  // Each execution says which one it is and on which worker; the end carries the output.
  int execution = 0;
  for (const auto& ev : log) {
    BOOST_TEST(ev.run == id);
    if (ev.kind != "run_started") continue;
    BOOST_TEST(ev.data.at("execution").as_int64() == ++execution);
    BOOST_TEST(ev.data.at("worker").as_string() == e.worker_id());
  }
  BOOST_TEST(log.back().data.at("output").at("child").as_int64() == 42);
  BOOST_TEST(log.front().data.at("workflow").as_string() == "parent");
  // The child's own log, and its enqueue naming its parent.
  const auto all = whole_log(e);
  std::size_t child_events = 0;
  for (const auto& ev : all) {
    if (ev.run == id) continue;
    ++child_events;
    if (ev.kind == "run_enqueued") BOOST_TEST(ev.data.at("parent").as_string() == id);
  }
  BOOST_TEST(child_events == 5u);  // enqueued, started, its step's start and end, completed
  BOOST_TEST(all.size() == log.size() + child_events);
}

BOOST_AUTO_TEST_CASE(failures_cancels_and_operator_actions_are_logged, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<bool> fail{true};
  add_workflow(e, "flaky", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto once = [&] {
      if (fail) throw non_retriable_error("the partner is down");
      return 1;
    };
    co_await ctx.step("call", once);
    co_return json::value("ok");
  });
  add_workflow(e, "waiter", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    co_await ctx.wait_for_event("never");
    co_return json::value("no");
  });
  BOOST_REQUIRE(e.start_blocking());
  auto flaky = e.enqueue_blocking("flaky", json::object{}).value();
  BOOST_REQUIRE(e.wait_blocking(flaky, 10s));
  fail = false;
  BOOST_REQUIRE(e.retry_blocking(flaky));
  auto done = e.wait_blocking(flaky, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(kinds(whole_log(e, flaky)) ==
             "run_enqueued,run_started,step_started,step_failed:call,run_failed,run_retried,run_started,step_"
             "started,"
             "step_completed:call,run_completed");
  const auto log = whole_log(e, flaky);
  BOOST_TEST(log[3].data.at("error").at("message").as_string() == "the partner is down");

  auto waiter = e.enqueue_blocking("waiter", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, waiter) == "waiting"; }, 10s));
  BOOST_REQUIRE(e.cancel_blocking(waiter));  // parked: woken to see it, then ends cancelled
  BOOST_REQUIRE(e.wait_blocking(waiter, 10s));
  BOOST_TEST(kinds(whole_log(e, waiter)) ==
             "run_enqueued,run_started,run_waiting,run_resumed:cancel,run_cancel_requested,run_started,"
             "run_cancelled");
}

BOOST_AUTO_TEST_CASE(readers_following_the_log_while_two_workers_write_miss_nothing_and_see_nothing_twice,
                     *utf::timeout(120)) {
  auto db = fresh_database();
  auto setup = [](engine& e) {
    add_workflow(e, "three", [](context& ctx, json::value) -> asio::awaitable<json::value> {
      for (int i = 0; i < 3; ++i) {
        auto step = [i] { return i; };
        co_await ctx.step("s", step);
      }
      co_return json::value(true);
    });
  };
  engine a(options_for(db)), b(options_for(db));
  setup(a);
  setup(b);
  BOOST_REQUIRE(a.start_blocking());
  BOOST_REQUIRE(b.start_blocking());
  // Readers page through the log with small pages from the moment the first run starts.
  std::atomic<bool> writing{true};
  auto follow = [&](std::size_t page_size, std::vector<std::int64_t>& seen) {
    std::int64_t after = 0;
    read_log_options o;
    o.limit = page_size;
    while (true) {
      const bool last_round = !writing.load();
      auto page = a.read_log_blocking(after, o);
      if (!page) continue;
      for (const auto& ev : page->events)
        seen.push_back(ev.pos);
      if (!page->events.empty()) after = page->events.back().pos;
      if (last_round && page->events.empty()) return;
    }
  };
  std::vector<std::int64_t> small, large;
  std::thread r1([&] { follow(3, small); });
  std::thread r2([&] { follow(500, large); });
  // Enqueued from several threads at once, into both workers.
  std::vector<run_id> ids;
  std::mutex m;
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < 60; ++i) {
        auto id = (t % 2 ? a : b).enqueue_blocking("three", json::object{});
        std::lock_guard lock(m);
        ids.push_back(id.value());
      }
    });
  }
  for (auto& c : clients)
    c.join();
  for (const auto& id : ids)
    BOOST_REQUIRE(a.wait_blocking(id, 30s));
  writing = false;
  r1.join();
  r2.join();
  std::vector<std::int64_t> all;
  for (const auto& ev : whole_log(a))
    all.push_back(ev.pos);
  BOOST_TEST(all.size() == ids.size() * 9);  // enqueued, started, three steps, completed
  BOOST_TEST(std::set<std::int64_t>(all.begin(), all.end()).size() == all.size());
  BOOST_TEST(small.size() == all.size());
  BOOST_TEST(large.size() == all.size());
  for (std::size_t i = 0; i < std::min(small.size(), all.size()); ++i) {
    if (small[i] != all[i]) {
      BOOST_TEST_MESSAGE("first difference at " << i << ": " << small[i] << " vs " << all[i]);
      break;
    }
  }
  BOOST_TEST(small == all);  // every event, once, in order
  BOOST_TEST(large == all);
}

BOOST_AUTO_TEST_CASE(retention_removes_finished_runs_logs_and_readers_are_told_what_they_missed,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "quick", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto one = [] { return 1; };
    co_return json::value(co_await ctx.step("one", one));
  });
  add_workflow(e, "waiter", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto got = co_await ctx.wait_for_event("go");
    co_return *got;
  });
  BOOST_REQUIRE(e.start_blocking());
  auto waiter = e.enqueue_blocking("waiter", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, waiter) == "waiting"; }, 10s));
  std::vector<run_id> quick;
  for (int i = 0; i < 5; ++i)
    quick.push_back(e.enqueue_blocking("quick", json::object{}).value());
  for (const auto& id : quick)
    BOOST_REQUIRE(e.wait_blocking(id, 10s));
  std::this_thread::sleep_for(100ms);

  auto removed = e.trim_log_blocking(50ms);
  BOOST_REQUIRE_MESSAGE(removed, removed.error().message());
  BOOST_TEST(*removed > 0);
  BOOST_TEST(*e.trim_log_blocking(50ms) == 0);  // nothing left to remove now
  // A reader from the start is told that events went; the waiting run's own log is whole.
  auto from_start = e.read_log_blocking(0);
  BOOST_REQUIRE(from_start);
  BOOST_REQUIRE(from_start->gap_until.has_value());
  read_log_options after_gap;
  auto resumed = e.read_log_blocking(*from_start->gap_until, after_gap);
  BOOST_REQUIRE(resumed);
  BOOST_TEST(!resumed->gap_until.has_value());
  read_log_options finished_run;
  finished_run.run = quick.front();
  auto trimmed = e.read_log_blocking(0, finished_run);
  BOOST_REQUIRE(trimmed);
  BOOST_TEST(trimmed->gap_until.has_value());
  BOOST_TEST(kinds(whole_log(e, waiter)) == "run_enqueued,run_started,run_waiting");
  read_log_options live;
  live.run = waiter;
  BOOST_TEST(!e.read_log_blocking(0, live)->gap_until.has_value());
  // The live run goes on, and its log with it.
  BOOST_REQUIRE(e.send_event_blocking(waiter, "go", json::value(1)));
  BOOST_REQUIRE(e.wait_blocking(waiter, 10s));
  BOOST_TEST(
      kinds(whole_log(e, waiter)) ==
      "run_enqueued,run_started,run_waiting,run_resumed:event,step_completed:keel.event:go,run_started,"
      "run_completed");
}

BOOST_AUTO_TEST_CASE(bad_reads_get_typed_errors, *utf::timeout(30)) {
  auto db = fresh_database();
  engine e(options_for(db));
  BOOST_REQUIRE(e.start_blocking());
  read_log_options none;
  none.limit = 0;
  auto zero = e.read_log_blocking(0, none);
  BOOST_REQUIRE(!zero);
  BOOST_TEST((zero.error() == storage::errc::invalid_argument));
  read_log_options bad;
  bad.run = "not-a-uuid";
  auto wrong = e.read_log_blocking(0, bad);
  BOOST_REQUIRE(!wrong);
  BOOST_TEST((wrong.error() == errc::invalid_run_id));
  auto negative = e.read_log_blocking(-1);
  BOOST_REQUIRE(!negative);
  BOOST_TEST((negative.error() == storage::errc::invalid_argument));
}

BOOST_AUTO_TEST_SUITE_END()
