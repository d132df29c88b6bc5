// Concurrency keys on a real PostgreSQL: at most `limit` runs per key hold a worker at once, the others
// wait parked in order and start as slots free up; sleeping runs hold no slot; an enqueue can give its own
// key and limit. The limit across worker processes is tested in e2e/process_test.cpp.
#define BOOST_TEST_MODULE concurrency_keys
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "engine_fixture.hpp"
#include "keel/storage/error.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;

namespace {

long count_of(const std::string& db, const std::string& sql) {
  return std::stol(query_value(db, sql));
}

/// How many runs of each key are inside their step at once, at most.
struct overlap_meter {
  std::mutex m;
  std::map<std::string, int> now, most;
  std::vector<std::string> starts;  // run ids, in the order their step began

  void enter(const std::string& key, const std::string& id) {
    std::lock_guard lock(m);
    most[key] = std::max(most[key], ++now[key]);
    starts.push_back(id);
  }
  void leave(const std::string& key) {
    std::lock_guard lock(m);
    --now[key];
  }
  int most_of(const std::string& key) {
    std::lock_guard lock(m);
    return most[key];
  }
};

/// A workflow whose one step takes `step_time`, measured by `meter` under the key `/tenant` (or "-").
workflow_definition metered(std::string name, std::optional<concurrency_rule> rule, overlap_meter& meter,
                            std::chrono::milliseconds step_time) {
  workflow_definition def{
      std::move(name), 1, {}, nullptr, {}, {}, {}, std::nullopt, std::move(rule), std::nullopt, std::nullopt};
  def.body = [&meter, step_time](context& ctx, json::value in) -> asio::awaitable<json::value> {
    const auto* tenant = in.as_object().if_contains("tenant");
    const std::string key = tenant ? std::string(tenant->as_string()) : "-";
    auto work = [&meter, &ctx, key, step_time]() -> asio::awaitable<int> {
      meter.enter(key, ctx.id());
      co_await async_sleep(step_time);
      meter.leave(key);
      co_return 1;
    };
    co_await ctx.step("work", work);
    co_return in;
  };
  return def;
}

/// Options for `db` whose sweep of parked runs comes every 200 ms.
engine_options swept_often(const std::string& db) {
  auto o = options_for(db);
  o.concurrency_sweep_interval = 200ms;
  return o;
}

/// An enqueue of its own key "k", one run at a time.
enqueue_options one_at_a_time() {
  enqueue_options keyed;
  keyed.concurrency_key = "k";
  keyed.concurrency_limit = 1;
  return keyed;
}

}  // namespace

BOOST_AUTO_TEST_CASE(at_most_limit_runs_of_a_key_run_at_once_and_every_run_finishes) {
  auto db = fresh_database();
  overlap_meter meter;
  auto o = options_for(db);
  o.concurrency = 32;  // the worker could run every run at once: only the keys hold them back
  engine e(o);
  e.register_workflow(metered("call", concurrency_rule{2, "/tenant"}, meter, 30ms));
  BOOST_REQUIRE(e.start_blocking());
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    for (const char* tenant : {"a", "b"}) {
      auto id = e.enqueue_blocking("call", json::value{{"tenant", tenant}, {"i", i}});
      BOOST_REQUIRE(id);
      ids.push_back(*id);
    }
  }
  auto lone = e.enqueue_blocking("call", json::value{{"tenant", "c"}});
  BOOST_REQUIRE(lone);
  ids.push_back(*lone);
  for (const auto& id : ids) {
    auto r = e.wait_blocking(id, 60s);
    BOOST_REQUIRE(r);
    BOOST_TEST(to_string(r->status) == "completed");
  }
  BOOST_TEST(meter.most_of("a") == 2);
  BOOST_TEST(meter.most_of("b") == 2);
  BOOST_TEST(meter.most_of("c") == 1);
  // The keys are stored on the runs; every slot is free again and no run is left parked.
  BOOST_TEST(
      count_of(db, "SELECT count(*) FROM keel.runs WHERE concurrency_key = 'a' AND concurrency_limit = 2") ==
      20);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.concurrency_slots") == 6);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.concurrency_slots WHERE holder IS NOT NULL") == 0);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs WHERE due_at = 'infinity'") == 0);
  // Runs that waited for their key said so once each, in the run log.
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.run_log, unnest(kinds) k WHERE k = 'run_blocked'") > 0);
  e.stop_blocking();
}

BOOST_AUTO_TEST_CASE(runs_waiting_for_their_key_start_in_the_order_they_were_enqueued) {
  auto db = fresh_database();
  overlap_meter meter;
  auto o = options_for(db);
  o.concurrency = 16;
  engine e(o);
  e.register_workflow(metered("serial", concurrency_rule{1, ""}, meter, 10ms));
  BOOST_REQUIRE(e.start_blocking());
  std::vector<std::string> ids;
  for (int i = 0; i < 8; ++i) {
    auto id = e.enqueue_blocking("serial", json::value{{"i", i}});
    BOOST_REQUIRE(id);
    ids.push_back(*id);
  }
  for (const auto& id : ids)
    BOOST_REQUIRE(e.wait_blocking(id, 30s));
  BOOST_TEST(meter.most_of("-") == 1);
  std::lock_guard lock(meter.m);
  BOOST_TEST(meter.starts == ids, boost::test_tools::per_element());
  e.stop_blocking();
}

BOOST_AUTO_TEST_CASE(a_sleeping_run_holds_no_slot) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<bool> slept{false};
  workflow_definition napper{
      "napper",     1,           {}, nullptr, {}, {}, {}, std::nullopt, concurrency_rule{1, "/k"},
      std::nullopt, std::nullopt};
  napper.body = [&](context& ctx, json::value in) -> asio::awaitable<json::value> {
    if (in.as_object().contains("nap")) {
      co_await ctx.sleep(1500ms);
      slept = true;
    }
    co_return in;
  };
  e.register_workflow(napper);
  BOOST_REQUIRE(e.start_blocking());
  auto sleeper = e.enqueue_blocking("napper", json::value{{"k", "x"}, {"nap", true}});
  BOOST_REQUIRE(sleeper);
  BOOST_REQUIRE(wait_until([&] { return status_of(e, *sleeper) == "sleeping"; }, 10s));
  // Same key, limit 1: it runs while the other sleeps.
  auto quick = e.enqueue_blocking("napper", json::value{{"k", "x"}});
  BOOST_REQUIRE(quick);
  auto done = e.wait_blocking(*quick, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(!slept.load());  // it finished while the sleeper still slept
  auto woke = e.wait_blocking(*sleeper, 10s);
  BOOST_REQUIRE(woke);
  BOOST_TEST(to_string(woke->status) == "completed");
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.concurrency_slots WHERE holder IS NOT NULL") == 0);
  e.stop_blocking();
}

BOOST_AUTO_TEST_CASE(an_enqueue_gives_its_own_key_and_limit) {
  auto db = fresh_database();
  overlap_meter meter;
  auto o = options_for(db);
  o.concurrency = 16;
  engine e(o);
  e.register_workflow(metered("free", std::nullopt, meter, 30ms));
  BOOST_REQUIRE(e.start_blocking());
  enqueue_options keyed;
  keyed.concurrency_key = "partner-api";
  keyed.concurrency_limit = 1;
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    auto id = e.enqueue_blocking("free", json::value{{"tenant", "p"}, {"i", i}}, keyed);
    BOOST_REQUIRE(id);
    ids.push_back(*id);
  }
  for (const auto& id : ids)
    BOOST_REQUIRE(e.wait_blocking(id, 30s));
  BOOST_TEST(meter.most_of("p") == 1);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs WHERE concurrency_key = 'partner-api'") == 6);
  // A key needs a limit: this workflow declares none.
  enqueue_options no_limit;
  no_limit.concurrency_key = "partner-api";
  auto bad = e.enqueue_blocking("free", json::object{}, no_limit);
  BOOST_REQUIRE(!bad);
  BOOST_TEST((bad.error() == storage::errc::invalid_argument));
  enqueue_options zero;
  zero.concurrency_key = "k";
  zero.concurrency_limit = 0;
  auto refused = e.enqueue_blocking("free", json::object{}, zero);
  BOOST_REQUIRE(!refused);
  BOOST_TEST((refused.error() == storage::errc::invalid_argument));
  // A rule that cannot hold is refused at registration.
  BOOST_CHECK_THROW(e.register_workflow(metered("bad", concurrency_rule{0, "/tenant"}, meter, 1ms)),
                    std::invalid_argument);
  BOOST_CHECK_THROW(e.register_workflow(metered("bad", concurrency_rule{2, "tenant"}, meter, 1ms)),
                    std::invalid_argument);
  e.stop_blocking();
}

BOOST_AUTO_TEST_CASE(a_run_parked_while_its_slot_was_freed_is_started_by_the_sweep) {
  auto db = fresh_database();
  engine e(swept_often(db));
  add_workflow(e, "plain", [](context&, json::value in) -> asio::awaitable<json::value> { co_return in; });
  BOOST_REQUIRE(e.tick_blocking());
  auto keyed = one_at_a_time();
  keyed.run_at = std::chrono::system_clock::now() + 1h;  // not claimed before the test parks it
  auto id = e.enqueue_blocking("plain", json::object{}, keyed);
  BOOST_REQUIRE(id);
  // What a claim leaves when it read the slot as held just before its release committed: parked, with the
  // slot free, and no release left to wake it.
  query_value(db, "UPDATE keel.runs SET due_at = 'infinity', key_parked_at = now() WHERE id = '" + *id + "'");
  BOOST_REQUIRE(e.start_blocking());
  auto r = e.wait_blocking(*id, 10s);
  BOOST_REQUIRE(r);
  BOOST_TEST(to_string(r->status) == "completed");
  e.stop_blocking();
}

BOOST_AUTO_TEST_CASE(a_slot_whose_holder_stopped_running_without_freeing_it_is_freed_by_the_sweep) {
  auto db = fresh_database();
  engine e(swept_often(db));
  add_workflow(e, "plain", [](context&, json::value in) -> asio::awaitable<json::value> { co_return in; });
  BOOST_REQUIRE(e.tick_blocking());
  auto keyed = one_at_a_time();
  auto first = e.enqueue_blocking("plain", json::object{}, keyed);
  BOOST_REQUIRE(first);
  BOOST_REQUIRE(e.tick_blocking());
  BOOST_TEST(status_of(e, *first) == "completed");
  // The key's only slot, held by a run that finished (a way out of running that freed nothing) and by one
  // that no longer exists: the next run of the key would wait for ever.
  query_value(db, "UPDATE keel.concurrency_slots SET holder = '" + *first + "'");
  auto second = e.enqueue_blocking("plain", json::object{}, keyed);
  BOOST_REQUIRE(second);
  BOOST_REQUIRE(e.tick_blocking());
  BOOST_TEST(status_of(e, *second) == "queued");  // parked: no free slot
  BOOST_REQUIRE(e.start_blocking());
  auto r = e.wait_blocking(*second, 10s);
  BOOST_REQUIRE(r);
  BOOST_TEST(to_string(r->status) == "completed");
  query_value(db, "UPDATE keel.concurrency_slots SET holder = gen_random_uuid()");
  auto third = e.enqueue_blocking("plain", json::object{}, keyed);
  BOOST_REQUIRE(third);
  auto t = e.wait_blocking(*third, 10s);
  BOOST_REQUIRE(t);
  BOOST_TEST(to_string(t->status) == "completed");
  e.stop_blocking();
}

BOOST_AUTO_TEST_CASE(a_run_parked_for_its_key_can_be_cancelled) {
  auto db = fresh_database();
  engine e(options_for(db));
  workflow_definition gate{
      "gate", 1, {}, nullptr, {}, {}, {}, std::nullopt, concurrency_rule{1, ""}, std::nullopt, std::nullopt};
  gate.body = [](context& ctx, json::value in) -> asio::awaitable<json::value> {
    auto hold = []() -> asio::awaitable<int> {
      co_await async_sleep(1500ms);
      co_return 1;
    };
    co_await ctx.step("hold", hold);
    co_return in;
  };
  e.register_workflow(gate);
  BOOST_REQUIRE(e.start_blocking());
  auto first = e.enqueue_blocking("gate", json::object{});
  BOOST_REQUIRE(first);
  BOOST_REQUIRE(wait_until([&] { return status_of(e, *first) == "running"; }, 10s));
  auto second = e.enqueue_blocking("gate", json::object{});
  BOOST_REQUIRE(second);
  BOOST_REQUIRE(wait_until(
      [&] {
        return count_of(db, "SELECT count(*) FROM keel.runs WHERE due_at = 'infinity' AND id = '" + *second +
                                "'") == 1;
      },
      10s));
  auto cancelled = e.cancel_blocking(*second);
  BOOST_REQUIRE(cancelled);
  auto r = e.wait_blocking(*second, 10s);
  BOOST_REQUIRE(r);
  BOOST_TEST(to_string(r->status) == "cancelled");
  auto f = e.wait_blocking(*first, 10s);
  BOOST_REQUIRE(f);
  BOOST_TEST(to_string(f->status) == "completed");
  e.stop_blocking();
}

namespace {

/// The start times of the runs of `workflow` with input /tenant = `tenant`, in ms since the first, sorted.
std::vector<long> starts_ms(const std::string& db, const std::string& workflow, const std::string& tenant) {
  const auto text = query_value(db, "WITH r AS (SELECT started_at FROM keel.runs WHERE workflow = '" +
                                        workflow + "' AND input->>'tenant' = '" + tenant +
                                        "') SELECT string_agg((extract(epoch FROM started_at - (SELECT "
                                        "min(started_at) FROM r)) * 1000)::bigint::text, ',' ORDER BY "
                                        "started_at) FROM r");
  std::vector<long> out;
  std::size_t from = 0;
  while (from < text.size()) {
    const auto comma = text.find(',', from);
    out.push_back(std::stol(text.substr(from, comma - from)));
    if (comma == std::string::npos) break;
    from = comma + 1;
  }
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_throttle_lets_at_most_limit_runs_of_a_key_start_in_any_window) {
  auto db = fresh_database();
  overlap_meter meter;
  auto o = options_for(db);
  o.concurrency = 32;
  engine e(o);
  auto def = metered("paced", std::nullopt, meter, 1ms);
  def.throttle = throttle_rule{2, 600ms, "/tenant"};
  e.register_workflow(def);
  BOOST_REQUIRE(e.start_blocking());
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) {
    auto id = e.enqueue_blocking("paced", json::value{{"tenant", "a"}, {"i", i}});
    BOOST_REQUIRE(id);
    ids.push_back(*id);
  }
  auto other = e.enqueue_blocking("paced", json::value{{"tenant", "b"}});
  BOOST_REQUIRE(other);
  ids.push_back(*other);
  for (const auto& id : ids) {
    auto r = e.wait_blocking(id, 30s);
    BOOST_REQUIRE(r);
    BOOST_TEST(to_string(r->status) == "completed");
  }
  // By the runs' start times: any two starts two apart are a window apart, so no window holds three.
  const auto a = starts_ms(db, "paced", "a");
  BOOST_REQUIRE_EQUAL(a.size(), 7u);
  for (std::size_t i = 2; i < a.size(); ++i)
    BOOST_TEST(a[i] - a[i - 2] >= 600,
               "starts " << i - 2 << " and " << i << ": " << a[i - 2] << " ms, " << a[i]);
  BOOST_TEST(a.back() < 6000);  // and they did start as the window moved (3 windows' wait, ~1.8 s)
  // Another key is not held back by this one.
  auto b = e.get_blocking(*other);
  BOOST_REQUIRE(b);
  BOOST_TEST(count_of(db,
                      "SELECT count(*) FROM keel.runs WHERE throttle_key = 'a' AND throttle_limit = 2 AND "
                      "throttle_window_ms = 600") == 7);
  BOOST_TEST(count_of(db,
                      "SELECT count(*) FROM keel.run_log l, unnest(l.kinds, l.data) AS e(kind, data) "
                      "WHERE e.kind = 'run_blocked' AND e.data->>'reason' = 'throttle'") >= 5);
  e.stop_blocking();
}

BOOST_AUTO_TEST_CASE(an_enqueue_gives_its_own_throttle) {
  auto db = fresh_database();
  overlap_meter meter;
  engine e(options_for(db));
  e.register_workflow(metered("free", std::nullopt, meter, 1ms));
  BOOST_REQUIRE(e.start_blocking());
  enqueue_options paced;
  paced.throttle_key = "partner";
  paced.throttle_limit = 1;
  paced.throttle_window = 400ms;
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto id = e.enqueue_blocking("free", json::value{{"tenant", "p"}, {"i", i}}, paced);
    BOOST_REQUIRE(id);
    ids.push_back(*id);
  }
  for (const auto& id : ids)
    BOOST_REQUIRE(e.wait_blocking(id, 30s));
  const auto p = starts_ms(db, "free", "p");
  BOOST_REQUIRE_EQUAL(p.size(), 3u);
  BOOST_TEST(p[1] - p[0] >= 400);
  BOOST_TEST(p[2] - p[1] >= 400);
  enqueue_options no_window;
  no_window.throttle_key = "partner";
  no_window.throttle_limit = 1;
  auto bad = e.enqueue_blocking("free", json::object{}, no_window);
  BOOST_REQUIRE(!bad);
  BOOST_TEST((bad.error() == storage::errc::invalid_argument));
  auto zero_window = metered("bad", std::nullopt, meter, 1ms);
  zero_window.throttle = throttle_rule{1, 0ms, ""};
  BOOST_CHECK_THROW(e.register_workflow(zero_window), std::invalid_argument);
  e.stop_blocking();
}
