// Retention of finished runs on a real PostgreSQL: what finished long enough ago goes with every row it
// owned, what has not finished (or finished since) stays, and a retention loop under load deletes no run in
// flight.
#define BOOST_TEST_MODULE retention
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <mutex>
#include <set>
#include <thread>

#include "engine_fixture.hpp"
#include "keel/storage/error.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;

namespace {

long count_of(const std::string& db, const std::string& sql) {
  return std::stol(query_value(db, sql));
}

/// Every table that holds a run's rows, and how many rows each holds.
std::string rows_by_table(const std::string& db) {
  std::string out;
  for (const char* table :
       {"runs", "steps", "events", "hooks", "run_history", "output_streams", "output_chunks"})
    out +=
        std::string(table) + "=" + query_value(db, std::string("SELECT count(*) FROM keel.") + table) + " ";
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(old_finished_runs_go_with_everything_they_own_and_the_rest_stays) {
  auto db = fresh_database();
  engine e(options_for(db));
  // A run that uses every kind of row: steps, an event, a hook, an output stream; failing once, then retried
  // (history).
  std::atomic<int> attempts{0};
  add_workflow(e, "busy", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    co_await ctx.step("one", [] { return 1; });
    auto out = ctx.stream("log");
    const json::value line{{"line", 1}};
    co_await out.write(line);
    co_await out.close();
    auto h = co_await ctx.create_hook("approval");
    (void)h;
    co_await ctx.wait_for_event("go");
    co_await ctx.step("flaky", [&] {
      if (attempts.fetch_add(1) == 0) throw non_retriable_error("first time");
      return 2;
    });
    co_return nullptr;
  });
  add_workflow(e, "parked", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    co_await ctx.wait_for_event("never");
    co_return nullptr;
  });
  BOOST_REQUIRE(e.start_blocking());
  enqueue_options keyed;
  keyed.idempotency_key = "once";
  auto busy = e.enqueue_blocking("busy", json::object{}, keyed).value();
  auto parked = e.enqueue_blocking("parked", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, busy) == "waiting"; }, 10s));
  BOOST_REQUIRE(e.send_event_blocking(busy, "go", json::object{}));
  BOOST_REQUIRE(wait_until([&] { return status_of(e, busy) == "failed"; }, 10s));
  BOOST_REQUIRE(e.retry_blocking(busy));
  BOOST_REQUIRE(e.wait_blocking(busy, 10s));
  BOOST_TEST(status_of(e, busy) == "completed");
  BOOST_REQUIRE(wait_until([&] { return status_of(e, parked) == "waiting"; }, 10s));
  const auto before = rows_by_table(db);
  BOOST_TEST_MESSAGE("before: " << before);
  for (const char* table : {"steps", "events", "hooks", "run_history", "output_streams", "output_chunks"})
    BOOST_TEST(count_of(db, std::string("SELECT count(*) FROM keel.") + table + " WHERE run_id = '" + busy +
                                "'") > 0,
               table);

  // Too young yet: nothing goes.
  auto young = e.purge_finished_runs_blocking(1h);
  BOOST_REQUIRE(young);
  BOOST_TEST(young->runs == 0);
  BOOST_TEST(rows_by_table(db) == before);

  std::this_thread::sleep_for(1200ms);
  auto fresh = e.enqueue_blocking("parked", json::object{}).value();  // begun now: stays whatever happens
  BOOST_REQUIRE(wait_until([&] { return status_of(e, fresh) == "waiting"; }, 10s));
  BOOST_TEST((e.cancel_blocking(fresh, cancel_options{0ms}).value() == run_status::cancelled));
  auto purged = e.purge_finished_runs_blocking(1s);
  BOOST_REQUIRE(purged);
  BOOST_TEST(purged->runs == 1);
  BOOST_TEST(purged->rows > 6);
  BOOST_TEST((e.get_blocking(busy).error() == errc::run_not_found));
  for (const char* table : {"steps", "events", "hooks", "run_history", "output_streams", "output_chunks"})
    BOOST_TEST(count_of(db, std::string("SELECT count(*) FROM keel.") + table + " WHERE run_id = '" + busy +
                                "'") == 0,
               table);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.run_log WHERE '" + busy + "' = ANY(runs)") == 0);
  // The parked run (old, unfinished) and the one that finished just now stay, with their rows.
  BOOST_TEST(status_of(e, parked) == "waiting");
  BOOST_TEST(status_of(e, fresh) == "cancelled");
  // Its idempotency key is free again.
  auto again = e.enqueue_blocking("busy", json::object{}, keyed);
  BOOST_REQUIRE(again);
  BOOST_TEST(*again != busy);
  BOOST_TEST((e.purge_finished_runs_blocking(0ms).error() == storage::errc::invalid_argument));
  const auto m = e.metrics();
  BOOST_TEST(m.retention_runs_removed == 1u);
  BOOST_TEST(m.retention_rows_removed >= static_cast<std::uint64_t>(purged->rows));
  e.stop_blocking();
}

BOOST_AUTO_TEST_CASE(a_finished_child_stays_while_its_parent_has_not_finished) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "leaf", [](context&, json::value in) -> asio::awaitable<json::value> { co_return in; });
  add_workflow(e, "parent", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    const json::value input{{"x", 1}};
    const child_options options;  // named: GCC 12 destroys a defaulted temporary in co_await twice
    co_await ctx.child<json::value>("leaf", input, options);
    co_await ctx.wait_for_event("never");
    co_return nullptr;
  });
  BOOST_REQUIRE(e.start_blocking());
  auto parent = e.enqueue_blocking("parent", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, parent) == "waiting"; }, 10s));
  const auto child = query_value(db, "SELECT id FROM keel.runs WHERE parent_id IS NOT NULL");
  BOOST_TEST(status_of(e, child) == "completed");
  std::this_thread::sleep_for(1200ms);
  // The parent may still look for it (by its key or id): it stays.
  auto kept = e.purge_finished_runs_blocking(1s);
  BOOST_REQUIRE(kept);
  BOOST_TEST(kept->runs == 0);
  BOOST_TEST(status_of(e, child) == "completed");
  // Once the parent has finished (and aged), both go.
  BOOST_REQUIRE(e.cancel_blocking(parent, cancel_options{0ms}));
  std::this_thread::sleep_for(1200ms);
  auto gone = e.purge_finished_runs_blocking(1s);
  BOOST_REQUIRE(gone);
  BOOST_TEST(gone->runs == 2);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs") == 0);
  BOOST_TEST((e.purge_finished_runs_blocking(std::chrono::hours(24 * 40'000)).error() ==
              storage::errc::invalid_argument));
  e.stop_blocking();
}

BOOST_AUTO_TEST_CASE(a_retention_loop_under_load_deletes_no_run_in_flight) {
  auto db = fresh_database();
  auto o = options_for(db);
  o.retention.keep_finished = 300ms;
  o.retention.interval = 100ms;
  o.retention.batch = 50;
  o.max_recoveries = 0;  // a run whose rows vanished under it would fail, not be retried
  std::mutex m;
  std::set<std::string> completed, failed;
  o.on_event = [&](const run_event& ev) {
    std::lock_guard lock(m);
    if (ev.what == run_event::kind::completed) completed.insert(ev.id);
    if (ev.what == run_event::kind::failed || ev.what == run_event::kind::abandoned) failed.insert(ev.id);
  };
  engine e(o);
  add_workflow(e, "slow", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    for (int i = 0; i < 5; ++i) {
      co_await ctx.step("s" + std::to_string(i), [] { return 1; });
      co_await async_sleep(30ms);  // in flight across several retention passes
    }
    co_await ctx.sleep(200ms);  // parked, holding no worker
    co_return nullptr;
  });
  BOOST_REQUIRE(e.start_blocking());
  std::vector<std::string> ids;
  for (int wave = 0; wave < 10; ++wave) {
    for (int i = 0; i < 40; ++i)
      ids.push_back(e.enqueue_blocking("slow", json::object{{"i", i}}).value());
    std::this_thread::sleep_for(150ms);
  }
  BOOST_REQUIRE(wait_until(
      [&] {
        std::lock_guard lock(m);
        return completed.size() + failed.size() == ids.size();
      },
      60s));
  BOOST_TEST(failed.empty());
  BOOST_TEST(completed.size() == ids.size());
  // And retention caught up with them: the old ones are gone.
  BOOST_REQUIRE(wait_until([&] { return count_of(db, "SELECT count(*) FROM keel.runs") == 0; }, 10s));
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.steps") == 0);
  BOOST_TEST(e.metrics().retention_runs_removed == ids.size());
  e.stop_blocking();
}
