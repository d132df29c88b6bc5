// Weighted fair claims on a real PostgreSQL (028_fair_claims.sql): a key with a burst of queued runs does
// not hold back another key's runs, weights share claims in proportion, a key gets no credit for having been
// idle and no debt for what it ran before, and runs without a key take turns with the fair queue. Claims are
// made one batch at a time (engine::tick_blocking), so what each batch takes is exact. The `fairness` bench
// workload measures the same under load.
#define BOOST_TEST_MODULE fair_claims
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <map>
#include <mutex>
#include <thread>
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

/// The keys of the runs each batch started, batch by batch (a run's key is its input's "/tenant", or "-").
struct batches {
  std::mutex m;
  std::vector<std::vector<std::string>> taken{{}};

  void started(const std::string& key) {
    std::lock_guard lock(m);
    taken.back().push_back(key);
  }
  void next_batch() {
    std::lock_guard lock(m);
    taken.emplace_back();
  }
  /// How many runs of `key` the first `n` batches started.
  long in_first(std::size_t n, const std::string& key) {
    std::lock_guard lock(m);
    long count = 0;
    for (std::size_t i = 0; i < n && i < taken.size(); ++i)
      count += std::count(taken[i].begin(), taken[i].end(), key);
    return count;
  }
  /// The batch (from 0) that started the last run of `key`.
  std::size_t last_batch_of(const std::string& key) {
    std::lock_guard lock(m);
    std::size_t last = 0;
    for (std::size_t i = 0; i < taken.size(); ++i)
      if (std::count(taken[i].begin(), taken[i].end(), key) > 0) last = i;
    return last;
  }
};

/// A workflow of one step that records its run's key in `seen`; fair by `/tenant` when `fair`.
workflow_definition recorded(std::string name, batches& seen, bool fair = true) {
  workflow_definition def{std::move(name), 1,           {}, nullptr, {}, {}, {}, std::nullopt, std::nullopt,
                          std::nullopt,    std::nullopt};
  if (fair) def.fairness = fairness_rule{"/tenant"};
  def.body = [&seen](context& ctx, json::value in) -> asio::awaitable<json::value> {
    const auto* tenant = in.as_object().if_contains("tenant");
    const std::string key = tenant ? std::string(tenant->as_string()) : "-";
    auto record = [&seen, key] {
      seen.started(key);
      return 1;
    };
    co_await ctx.step("record", record);
    co_return in;
  };
  return def;
}

engine_options batches_of(const std::string& db, std::size_t n) {
  auto o = options_for(db);
  o.concurrency = n;
  return o;
}

void enqueue_n(engine& e, const std::string& workflow, const std::string& tenant, int n,
               const enqueue_options& options = {}) {
  for (int i = 0; i < n; ++i)
    BOOST_REQUIRE(e.enqueue_blocking(workflow, json::value{{"tenant", tenant}, {"i", i}}, options));
}

/// Claims and runs batches until none is left; each batch's keys land in `seen`.
void drain(engine& e, batches& seen) {
  for (;;) {
    auto n = e.tick_blocking();
    BOOST_REQUIRE(n);
    if (*n == 0) return;
    seen.next_batch();
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_burst_of_one_key_does_not_hold_back_the_runs_of_other_keys) {
  auto db = fresh_database();
  batches seen;
  engine e(batches_of(db, 8));
  e.register_workflow(recorded("call", seen));
  BOOST_REQUIRE(e.tick_blocking());  // migrates and declares the workflows: nothing to claim yet
  // 400 runs of one tenant, then 3 runs each of three others: first come, first served would start those
  // after the 50th batch.
  enqueue_n(e, "call", "big", 400);
  for (const char* small : {"s1", "s2", "s3"})
    enqueue_n(e, "call", small, 3);
  drain(e, seen);
  // Each batch of 8 takes one run of each of the four keys in turn: the small tenants are done in the
  // first three batches, and the big one still got its turn in each of them.
  for (const char* small : {"s1", "s2", "s3"}) {
    BOOST_TEST_INFO("tenant " << small);
    BOOST_TEST(seen.last_batch_of(small) <= 2u);
  }
  BOOST_TEST(seen.in_first(1, "big") >= 2);
  BOOST_TEST(seen.in_first(1000, "big") == 400);
  // Nothing is left in the fair queue, nor out of the due range.
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs WHERE status <> 'completed'") == 0);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs WHERE fair_vtime IS NOT NULL") == 0);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs WHERE fair_key = 'big' AND fair_weight = 1") ==
             400);
}

BOOST_AUTO_TEST_CASE(a_key_arriving_while_a_burst_is_being_worked_through_starts_in_the_next_batch) {
  auto db = fresh_database();
  batches seen;
  engine e(batches_of(db, 4));
  e.register_workflow(recorded("call", seen));
  BOOST_REQUIRE(e.tick_blocking());  // migrates and declares the workflows: nothing to claim yet
  enqueue_n(e, "call", "big", 200);
  for (int i = 0; i < 10; ++i) {
    BOOST_REQUIRE(e.tick_blocking());
    seen.next_batch();
  }
  // 40 of the burst ran; the clock moved with them, so the newcomer lands level with the burst's next run.
  enqueue_n(e, "call", "late", 2);
  drain(e, seen);
  BOOST_TEST(seen.in_first(11, "late") >= 1);
  BOOST_TEST(seen.in_first(12, "late") == 2);
}

BOOST_AUTO_TEST_CASE(weights_share_the_claims_in_proportion) {
  auto db = fresh_database();
  batches seen;
  engine e(batches_of(db, 10));
  e.register_workflow(recorded("call", seen));
  BOOST_REQUIRE(e.tick_blocking());  // migrates and declares the workflows: nothing to claim yet
  enqueue_options heavy;
  heavy.fairness_weight = 3;
  // The light tenant enqueues first: the order of the claims is the weights', not the enqueues'.
  enqueue_n(e, "call", "light", 150);
  enqueue_n(e, "call", "heavy", 150, heavy);
  drain(e, seen);
  const auto heavy_runs = seen.in_first(10, "heavy"), light_runs = seen.in_first(10, "light");
  BOOST_TEST(heavy_runs + light_runs == 100);
  BOOST_TEST(heavy_runs >= 72);
  BOOST_TEST(heavy_runs <= 78);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs WHERE fair_key = 'heavy' AND fair_weight = 3") ==
             150);
}

BOOST_AUTO_TEST_CASE(a_key_has_no_debt_for_what_it_ran_before_and_no_credit_for_being_idle) {
  auto db = fresh_database();
  batches seen;
  engine e(batches_of(db, 5));
  e.register_workflow(recorded("call", seen));
  BOOST_REQUIRE(e.tick_blocking());  // migrates and declares the workflows: nothing to claim yet
  // A tenant that ran a burst yesterday...
  enqueue_n(e, "call", "busy", 100);
  drain(e, seen);
  seen.taken.assign(1, {});
  // ...is level today with one that just arrived with a burst of its own.
  enqueue_n(e, "call", "fresh", 100);
  enqueue_n(e, "call", "busy", 1);
  // And one idle all along gets no more than its turn.
  enqueue_n(e, "call", "idle", 20);
  drain(e, seen);
  BOOST_TEST(seen.in_first(1, "busy") == 1);
  // Level with the fresh burst, it gets half of each batch: 20 runs take about eight batches of five.
  BOOST_TEST(seen.last_batch_of("idle") >= 6u);
  BOOST_TEST(seen.in_first(4, "idle") <= 11);
}

BOOST_AUTO_TEST_CASE(runs_without_a_key_take_turns_with_the_fair_queue_and_priority_comes_first) {
  auto db = fresh_database();
  batches seen;
  engine e(batches_of(db, 6));
  e.register_workflow(recorded("call", seen));
  e.register_workflow(recorded("plain", seen, false));
  BOOST_REQUIRE(e.tick_blocking());  // migrates and declares the workflows: nothing to claim yet
  enqueue_n(e, "call", "big", 120);
  for (int i = 0; i < 9; ++i)
    BOOST_REQUIRE(e.enqueue_blocking("plain", json::value{{"i", i}}));
  enqueue_options urgent;
  urgent.priority = 5;
  enqueue_n(e, "call", "vip", 2, urgent);
  drain(e, seen);
  BOOST_TEST(seen.in_first(1, "vip") == 2);
  // Unkeyed runs count as one key: they get every other run of a batch.
  BOOST_TEST(seen.in_first(4, "-") == 9);
  BOOST_TEST(seen.in_first(1, "big") >= 2);
}

BOOST_AUTO_TEST_CASE(a_key_s_urgent_run_neither_waits_for_its_backlog_nor_pushes_the_others_back) {
  auto db = fresh_database();
  batches seen;
  engine e(batches_of(db, 4));
  e.register_workflow(recorded("call", seen));
  BOOST_REQUIRE(e.tick_blocking());  // migrates and declares the workflows: nothing to claim yet
  enqueue_n(e, "call", "a", 100);
  enqueue_options urgent;
  urgent.priority = 5;
  enqueue_n(e, "call", "a", 1, urgent);
  enqueue_n(e, "call", "b", 3);
  drain(e, seen);
  // The urgent run goes first; b's runs still take turns with a's backlog at priority 0.
  BOOST_TEST(seen.in_first(1, "a") >= 1);
  BOOST_TEST(seen.last_batch_of("b") <= 2u);
}

BOOST_AUTO_TEST_CASE(claims_of_one_run_starve_neither_the_fair_queue_nor_the_runs_without_a_key) {
  auto db = fresh_database();
  batches seen;
  engine e(batches_of(db, 1));
  e.register_workflow(recorded("call", seen));
  e.register_workflow(recorded("plain", seen, false));
  BOOST_REQUIRE(e.tick_blocking());  // migrates and declares the workflows: nothing to claim yet
  enqueue_n(e, "call", "big", 60);
  for (int i = 0; i < 60; ++i)
    BOOST_REQUIRE(e.enqueue_blocking("plain", json::value{{"i", i}}));
  for (int i = 0; i < 40; ++i) {
    BOOST_REQUIRE(e.tick_blocking());
    seen.next_batch();
  }
  // Each claim's first run is a coin toss between the queues: both get about half, and a queue starved
  // would get none (fewer than 6 of 40 by chance: odds of about 1 in 1.4 million for each).
  BOOST_TEST(seen.in_first(40, "big") >= 6);
  BOOST_TEST(seen.in_first(40, "-") >= 6);
  drain(e, seen);
}

BOOST_AUTO_TEST_CASE(a_fair_run_that_waits_for_its_concurrency_key_leaves_the_fair_queue_and_completes) {
  auto db = fresh_database();
  batches seen;
  engine e(batches_of(db, 8));
  auto def = recorded("gated", seen);
  def.concurrency = concurrency_rule{1, "/tenant"};
  e.register_workflow(std::move(def));
  BOOST_REQUIRE(e.tick_blocking());  // migrates and declares the workflows: nothing to claim yet
  enqueue_n(e, "gated", "a", 5);
  enqueue_n(e, "gated", "b", 5);
  drain(e, seen);
  // One of each key per batch: the others were parked (out of the fair queue) and woken as slots freed.
  BOOST_TEST(seen.in_first(1, "a") == 1);
  BOOST_TEST(seen.in_first(1, "b") == 1);
  BOOST_TEST(seen.in_first(100, "a") == 5);
  BOOST_TEST(seen.in_first(100, "b") == 5);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs WHERE status <> 'completed'") == 0);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs WHERE due_at IS NOT NULL") == 0);
}

BOOST_AUTO_TEST_CASE(a_queued_fair_run_can_be_cancelled_and_runs_delayed_start_when_due) {
  auto db = fresh_database();
  batches seen;
  engine e(batches_of(db, 4));
  e.register_workflow(recorded("call", seen));
  BOOST_REQUIRE(e.tick_blocking());  // migrates and declares the workflows: nothing to claim yet
  auto doomed = e.enqueue_blocking("call", json::value{{"tenant", "t"}});
  BOOST_REQUIRE(doomed);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs WHERE fair_vtime IS NOT NULL") == 1);
  BOOST_REQUIRE(e.cancel_blocking(*doomed));
  BOOST_TEST(status_of(e, *doomed) == "cancelled");
  // A run that starts later waits in due order, outside the fair queue.
  enqueue_options later;
  later.run_at = std::chrono::system_clock::now() + 300ms;
  auto delayed = e.enqueue_blocking("call", json::value{{"tenant", "t"}}, later);
  BOOST_REQUIRE(delayed);
  BOOST_TEST(
      count_of(db, "SELECT count(*) FROM keel.runs WHERE fair_vtime IS NOT NULL AND status = 'queued'") == 0);
  std::this_thread::sleep_for(400ms);
  drain(e, seen);
  BOOST_TEST(status_of(e, *delayed) == "completed");
  auto info = e.get_blocking(*delayed);
  BOOST_REQUIRE(info);
  BOOST_REQUIRE(info->fairness_key.has_value());
  BOOST_TEST(*info->fairness_key == "t");
  BOOST_TEST(info->fairness_weight == 1);
}

BOOST_AUTO_TEST_CASE(bad_fairness_options_and_rules_are_refused) {
  auto db = fresh_database();
  batches seen;
  engine e(batches_of(db, 4));
  e.register_workflow(recorded("plain", seen, false));
  BOOST_REQUIRE(e.tick_blocking());  // migrates and declares the workflows: nothing to claim yet
  enqueue_options no_key;
  no_key.fairness_weight = 2;
  auto r = e.enqueue_blocking("plain", json::value{{"i", 1}}, no_key);
  BOOST_REQUIRE(!r);
  BOOST_TEST((r.error() == storage::errc::invalid_argument));
  enqueue_options too_heavy;
  too_heavy.fairness_key = "t";
  too_heavy.fairness_weight = 1001;
  r = e.enqueue_blocking("plain", json::value{{"i", 1}}, too_heavy);
  BOOST_REQUIRE(!r);
  BOOST_TEST((r.error() == storage::errc::invalid_argument));
  enqueue_options long_key;
  long_key.fairness_key = std::string(300, 'k');
  r = e.enqueue_blocking("plain", json::value{{"i", 1}}, long_key);
  BOOST_REQUIRE(!r);
  BOOST_TEST((r.error() == storage::errc::invalid_argument));
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs") == 0);
  auto def = recorded("whole", seen);
  def.fairness = fairness_rule{""};
  BOOST_CHECK_THROW(e.register_workflow(std::move(def)), std::invalid_argument);
}
