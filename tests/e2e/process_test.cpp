// Real worker processes on one database: SIGKILL mid-step, lease takeover, multi-process drain, DB restart
// and crash.
#define BOOST_TEST_MODULE processes
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "engine_fixture.hpp"
#include "scripted_http_server.hpp"
#include "worker_process.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;

namespace {

/// An engine used only to migrate and enqueue (workflow bodies live in the worker processes).
struct producer {
  engine e;
  explicit producer(const std::string& db) : e(options_for(db)) {
    for (const char* name :
         {"crashable", "noop3", "sleepy", "napper", "family", "looper", "branches", "fetch_then_hold"}) {
      add_workflow(e, name, [](context&, json::value) -> asio::awaitable<json::value> { co_return nullptr; });
    }
    // Declared as the workers declare it (an enqueue records what its engine registered).
    auto keyed = make_workflow<json::value, json::value>(
        "keyed", 1, [](context&, json::value) -> asio::awaitable<json::value> { co_return nullptr; });
    keyed.concurrency = concurrency_rule{3, "/tenant"};
    e.register_workflow(std::move(keyed));
    auto paced = make_workflow<json::value, json::value>(
        "paced", 1, [](context&, json::value) -> asio::awaitable<json::value> { co_return nullptr; });
    paced.throttle = throttle_rule{3, 500ms, "/tenant"};
    e.register_workflow(std::move(paced));
    auto shared = make_workflow<json::value, json::value>(
        "shared", 1, [](context&, json::value) -> asio::awaitable<json::value> { co_return nullptr; });
    shared.fairness = fairness_rule{"/tenant"};
    e.register_workflow(std::move(shared));
    BOOST_REQUIRE(e.tick_blocking());
  }
};

long count_of(const std::string& db, const std::string& sql) {
  return std::stol(query_value(db, sql));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(a_run_killed_mid_step_is_reclaimed_and_completed_without_rerunning_earlier_steps) {
  auto db = fresh_database();
  temp_dir dir;
  const std::string effects = dir.path() + "/effects", marker = dir.path() + "/marker";
  producer p(db);
  auto id = p.e.enqueue_blocking("crashable", json::object{}).value();

  spawned_worker first(
      {"--db", db, "--effects", effects, "--lease-ms", "1000", "--hold-ms", "60000", "--marker", marker});
  BOOST_REQUIRE(wait_until([&] { return !read_lines(marker).empty(); }, 30s));
  first.kill_hard();  // SIGKILL in the middle of step s2
  BOOST_TEST(query_value(db, "SELECT status FROM keel.runs") == "running");
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.steps") == 1);

  spawned_worker second({"--db", db, "--effects", effects, "--lease-ms", "1000"});
  auto run = p.e.wait_blocking(id, 60s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "completed");
  BOOST_TEST(run->claims == 2);
  BOOST_REQUIRE_EQUAL(run->steps.size(), 3u);
  // The second worker took the run only once the killed worker's lease (1 s) had lapsed.
  BOOST_TEST((run->steps[1].started_at - run->steps[0].finished_at) >= 900ms);
  // The worker notes a completion after the commit the wait above saw: it may come a moment later.
  BOOST_REQUIRE(wait_until([&] { return count_lines(effects)[id + " completed"] >= 1; }, 20s));
  auto counts = count_lines(effects);
  BOOST_TEST(counts[id + " s1"] == 1);  // completed before the kill: never run again
  BOOST_TEST(counts[id + " s2"] == 2);  // interrupted: run again by the second worker
  BOOST_TEST(counts[id + " s3"] == 1);
  BOOST_TEST(counts[id + " completed"] == 1);
  BOOST_TEST(second.terminate() == 0);
}

BOOST_AUTO_TEST_CASE(a_sleeping_run_outlives_the_killed_worker_that_parked_it) {
  auto db = fresh_database();
  temp_dir dir;
  const std::string effects = dir.path() + "/effects";
  producer p(db);
  const auto enqueued = std::chrono::system_clock::now();
  auto id = p.e.enqueue_blocking("napper", json::object{}).value();

  spawned_worker first({"--db", db, "--effects", effects, "--step-ms", "3000"});
  BOOST_REQUIRE(
      wait_until([&] { return query_value(db, "SELECT status FROM keel.runs") == "sleeping"; }, 30s));
  first.kill_hard();  // SIGKILL while the run sleeps: it held nothing there, so nothing is lost
  BOOST_TEST(query_value(db, "SELECT owner IS NULL FROM keel.runs") == "t");

  spawned_worker second({"--db", db, "--effects", effects, "--step-ms", "3000"});
  auto run = p.e.wait_blocking(id, 60s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "completed");
  BOOST_TEST(run->recoveries == 0);  // a resume, not a recovery: no lease lapsed
  BOOST_TEST((*run->finished_at - enqueued) >= 3s);
  // The worker notes a completion after the commit the wait above saw: it may come a moment later.
  BOOST_REQUIRE(wait_until([&] { return count_lines(effects)[id + " completed"] >= 1; }, 20s));
  auto counts = count_lines(effects);
  BOOST_TEST(counts[id + " before"] == 1);
  BOOST_TEST(counts[id + " after"] == 1);
  BOOST_TEST(counts[id + " completed"] == 1);
  BOOST_TEST(second.terminate() == 0);
}

BOOST_AUTO_TEST_CASE(a_child_killed_mid_step_is_recovered_and_wakes_its_waiting_parent) {
  auto db = fresh_database();
  temp_dir dir;
  const std::string effects = dir.path() + "/effects", marker = dir.path() + "/marker";
  producer p(db);
  auto id = p.e.enqueue_blocking("family", json::object{}).value();

  spawned_worker first(
      {"--db", db, "--effects", effects, "--lease-ms", "1000", "--hold-ms", "60000", "--marker", marker});
  BOOST_REQUIRE(wait_until([&] { return !read_lines(marker).empty(); }, 30s));
  const std::string child = read_lines(marker).at(0);
  first.kill_hard();  // SIGKILL inside the child's step s2; the parent waits for the child, holding nothing
  BOOST_TEST(query_value(db, "SELECT status FROM keel.runs WHERE id = '" + id + "'") == "waiting");
  BOOST_TEST(query_value(db, "SELECT parent_id FROM keel.runs WHERE id = '" + child + "'") == id);

  spawned_worker second({"--db", db, "--effects", effects, "--lease-ms", "1000"});
  auto run = p.e.wait_blocking(id, 60s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "completed");
  BOOST_TEST(run->output.at("child").at("done").as_bool());
  BOOST_TEST(run->recoveries == 0);  // the parent was parked, not lost
  BOOST_TEST(query_value(db, "SELECT recoveries FROM keel.runs WHERE id = '" + child + "'") == "1");
  BOOST_REQUIRE(wait_until([&] { return count_lines(effects)[id + " completed"] >= 1; }, 20s));
  auto counts = count_lines(effects);
  BOOST_TEST(counts[id + " p1"] == 1);
  BOOST_TEST(counts[id + " p2"] == 1);
  BOOST_TEST(counts[child + " s1"] == 1);
  BOOST_TEST(counts[child + " s2"] == 2);  // interrupted by the kill, run again after the takeover
  BOOST_TEST(counts[child + " s3"] == 1);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs") == 2);  // the replayed parent started no other
  BOOST_TEST(second.terminate() == 0);
}

BOOST_AUTO_TEST_CASE(a_thousand_iteration_loop_resumes_at_its_last_committed_iteration_after_sigkill) {
  auto db = fresh_database();
  temp_dir dir;
  const std::string effects = dir.path() + "/effects", marker = dir.path() + "/marker";
  producer p(db);
  auto id = p.e.enqueue_blocking("looper", json::object{}).value();

  spawned_worker first({"--db", db, "--effects", effects, "--lease-ms", "1000", "--hold-ms", "60000",
                        "--marker", marker, "--iterations", "1000", "--hold-at", "700"});
  BOOST_REQUIRE(wait_until([&] { return !read_lines(marker).empty(); }, 60s));
  first.kill_hard();  // SIGKILL inside iteration 700
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.steps") == 700);

  spawned_worker second({"--db", db, "--effects", effects, "--lease-ms", "1000", "--iterations", "1000"});
  auto run = p.e.wait_blocking(id, 60s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "completed");
  BOOST_TEST(run->output.at("total").as_int64() == 999 * 1000 / 2);
  BOOST_REQUIRE(wait_until([&] { return count_lines(effects)[id + " completed"] >= 1; }, 20s));
  auto counts = count_lines(effects);
  int rerun = 0, missing = 0;
  for (int i = 0; i < 1000; ++i) {
    const int n = counts[id + " i" + std::to_string(i)];
    if (n == 0) ++missing;
    if (n > 1) ++rerun;
  }
  BOOST_TEST(missing == 0);
  BOOST_TEST(rerun == 1);  // only the iteration the kill interrupted
  BOOST_TEST(counts[id + " i700"] == 2);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.steps") == 1000);
  BOOST_TEST(second.terminate() == 0);
}

BOOST_AUTO_TEST_CASE(parallel_branches_killed_mid_way_rerun_only_their_unfinished_steps) {
  auto db = fresh_database();
  temp_dir dir;
  const std::string effects = dir.path() + "/effects", marker = dir.path() + "/marker";
  producer p(db);
  auto id = p.e.enqueue_blocking("branches", json::object{}).value();

  spawned_worker first(
      {"--db", db, "--effects", effects, "--lease-ms", "1000", "--hold-ms", "60000", "--marker", marker});
  BOOST_REQUIRE(wait_until([&] { return !read_lines(marker).empty(); }, 30s));
  first.kill_hard();  // SIGKILL inside branch 1's second step; branches 0 and 2 have finished
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.steps WHERE branch IS NOT NULL") == 5);

  spawned_worker second({"--db", db, "--effects", effects, "--lease-ms", "1000"});
  auto run = p.e.wait_blocking(id, 60s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "completed");
  BOOST_TEST(run->output.at("sum").as_int64() == 30);
  BOOST_REQUIRE(wait_until([&] { return count_lines(effects)[id + " completed"] >= 1; }, 20s));
  auto counts = count_lines(effects);
  for (const char* once : {" b0a", " b0b", " b1a", " b2a", " b2b"})
    BOOST_TEST(counts[id + once] == 1, once << " ran " << counts[id + once] << " times");
  BOOST_TEST(counts[id + " b1b"] == 2);  // interrupted by the kill: the only step run again
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.steps") == 7);  // the parallel (seq 0), 6 branch steps
  BOOST_TEST(query_value(db, "SELECT max(seq) FROM keel.steps") == "6");
  BOOST_TEST(second.terminate() == 0);
}

BOOST_AUTO_TEST_CASE(a_fetch_recorded_before_a_sigkill_is_replayed_without_a_second_request) {
  auto db = fresh_database();
  temp_dir dir;
  const std::string effects = dir.path() + "/effects", marker = dir.path() + "/marker";
  scripted_http_server server;
  server.script("/charge", [](const seen_request&, int n) {
    return scripted_reply{200, {}, "response #" + std::to_string(n), 0ms};
  });
  producer p(db);
  const json::value input{{"url", server.base("127.0.0.1") + "/charge"}};
  auto id = p.e.enqueue_blocking("fetch_then_hold", input).value();

  spawned_worker first(
      {"--db", db, "--effects", effects, "--lease-ms", "1000", "--hold-ms", "60000", "--marker", marker});
  BOOST_REQUIRE(wait_until([&] { return !read_lines(marker).empty(); }, 30s));
  first.kill_hard();  // SIGKILL in step "hold", after the fetch's record committed
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.steps WHERE name LIKE 'keel.fetch:%'") == 1);

  spawned_worker second({"--db", db, "--effects", effects, "--lease-ms", "1000"});
  auto run = p.e.wait_blocking(id, 60s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "completed");
  BOOST_TEST(run->recoveries == 1);
  BOOST_TEST(run->output.at("body").as_string() == "response #1");
  BOOST_TEST(server.count() == 1u);  // the second worker replayed the record: no request
  auto counts = count_lines(effects);
  BOOST_TEST(counts[id + " saw response #1"] == 2);  // both executions got the same response
  BOOST_TEST(counts[id + " hold"] == 2);
  BOOST_TEST(second.terminate() == 0);
}

BOOST_AUTO_TEST_CASE(a_fetch_cut_short_by_a_sigkill_is_sent_again_with_the_same_idempotency_key) {
  auto db = fresh_database();
  temp_dir dir;
  const std::string effects = dir.path() + "/effects";
  scripted_http_server server;
  // The first request is answered only after the worker that sent it was killed.
  server.script("/charge", [](const seen_request&, int n) {
    const std::chrono::milliseconds delay = n == 1 ? 60s : 0ms;
    return scripted_reply{200, {}, "response #" + std::to_string(n), delay};
  });
  producer p(db);
  const json::value input{{"url", server.base("127.0.0.1") + "/charge"}};
  auto id = p.e.enqueue_blocking("fetch_then_hold", input).value();

  spawned_worker first({"--db", db, "--effects", effects, "--lease-ms", "1000"});
  BOOST_REQUIRE(wait_until([&] { return server.count() == 1; }, 30s));
  first.kill_hard();  // SIGKILL while the request is in flight: nothing recorded
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.steps") == 0);

  spawned_worker second({"--db", db, "--effects", effects, "--lease-ms", "1000"});
  auto run = p.e.wait_blocking(id, 60s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "completed");
  BOOST_TEST(run->output.at("body").as_string() == "response #2");
  // Sent again, as the server may never have acted on it; the same key lets it tell a repeat from a new
  // request.
  const auto seen = server.requests();
  BOOST_REQUIRE_EQUAL(seen.size(), 2u);
  BOOST_TEST(!seen[0].header("idempotency-key").empty());
  BOOST_TEST(seen[0].header("idempotency-key") == seen[1].header("idempotency-key"));
  BOOST_TEST(second.terminate() == 0);
}

BOOST_AUTO_TEST_CASE(a_worker_whose_lease_was_taken_over_cannot_write) {
  auto db = fresh_database();
  producer p(db);
  auto id = p.e.enqueue_blocking("crashable", json::object{}).value();
  asio::io_context ioc;  // outlives the store (see store.hpp)
  storage::store s({db});
  auto run_co = [&](auto aw) {
    auto f = asio::co_spawn(ioc, std::move(aw), asio::use_future);
    ioc.restart();
    ioc.run();
    return f.get();
  };
  const std::vector<storage::workflow_version> crashable{{"crashable", 1}};
  const storage::claim_request claim_a{"worker-a", crashable, 10, 50ms};
  auto a = run_co(s.claim(claim_a)).value().runs;
  BOOST_REQUIRE_EQUAL(a.size(), 1u);
  std::this_thread::sleep_for(100ms);  // a's lease lapses
  const storage::claim_request claim_b{"worker-b", crashable, 10, 30s};
  auto b = run_co(s.claim(claim_b)).value().runs;
  BOOST_REQUIRE_EQUAL(b.size(), 1u);
  BOOST_TEST(b[0].epoch == a[0].epoch + 1);

  const auto now = std::chrono::system_clock::now();
  storage::step_checkpoint late{{id, "worker-a", a[0].epoch},
                                {0, "s1", false, json::value(1), nullptr, 1, now, now, {}, 0}};
  auto rejected = run_co(s.checkpoint(late));
  BOOST_REQUIRE(!rejected);
  BOOST_TEST(rejected.error() == make_error_code(storage::errc::fenced));
  storage::run_finish late_finish{
      {id, "worker-a", a[0].epoch}, storage::run_status::completed, json::value(1), nullptr};
  BOOST_TEST(run_co(s.finish(late_finish)).error() == make_error_code(storage::errc::fenced));
  auto late_heartbeat = run_co(s.heartbeat({{id, "worker-a", a[0].epoch}}, 30s)).value();
  BOOST_TEST(late_heartbeat.size() == 1u);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.steps") == 0);

  storage::step_checkpoint current{{id, "worker-b", b[0].epoch},
                                   {0, "s1", false, json::value(2), nullptr, 1, now, now, {}, 0}};
  BOOST_TEST(bool(run_co(s.checkpoint(current))));
  BOOST_TEST(query_value(db, "SELECT output::text FROM keel.steps") == "2");
  BOOST_TEST(query_value(db, "SELECT owner FROM keel.runs") == "worker-b");
  s.stop_blocking();
}

BOOST_AUTO_TEST_CASE(a_frozen_workers_late_checkpoint_is_rejected_after_takeover) {
  // The first worker is frozen (SIGSTOP) inside step s2: its heartbeats stop, its lease lapses and a second
  // worker takes the run over and completes it. Thawed, the first worker finishes s2; its checkpoint is
  // fenced, it abandons the run and writes nothing.
  auto db = fresh_database();
  temp_dir dir;
  const std::string effects = dir.path() + "/effects", marker = dir.path() + "/marker";
  producer p(db);
  auto id = p.e.enqueue_blocking("crashable", json::object{}).value();
  spawned_worker first(
      {"--db", db, "--effects", effects, "--lease-ms", "600", "--hold-ms", "1500", "--marker", marker});
  BOOST_REQUIRE(wait_until([&] { return !read_lines(marker).empty(); }, 30s));
  first.signal(SIGSTOP);
  spawned_worker second({"--db", db, "--effects", effects, "--lease-ms", "600"});
  auto run = p.e.wait_blocking(id, 60s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "completed");
  const auto owner = *run->owner;
  first.signal(SIGCONT);
  BOOST_REQUIRE(wait_until([&] { return count_lines(effects)[id + " abandoned"] == 1; }, 30s));
  auto after = p.e.get_blocking(id).value();
  BOOST_TEST(to_string(after.status) == "completed");
  BOOST_TEST(*after.owner == owner);
  BOOST_TEST(after.epoch == run->epoch);
  BOOST_REQUIRE_EQUAL(after.steps.size(), 3u);
  BOOST_TEST(json::serialize(after.output) == json::serialize(run->output));
  // The worker notes a completion after the commit the wait above saw: it may come a moment later.
  BOOST_REQUIRE(wait_until([&] { return count_lines(effects)[id + " completed"] >= 1; }, 20s));
  auto counts = count_lines(effects);
  BOOST_TEST(counts[id + " s1"] == 1);
  BOOST_TEST(counts[id + " s2"] == 2);
  BOOST_TEST(counts[id + " completed"] == 1);
  BOOST_TEST(first.terminate() == 0);
  BOOST_TEST(second.terminate() == 0);
}

BOOST_AUTO_TEST_CASE(three_worker_processes_drain_a_thousand_runs_exactly_once) {
  auto db = fresh_database();
  temp_dir dir;
  const std::string effects = dir.path() + "/effects";
  producer p(db);
  std::vector<std::future<result<run_id>>> pending;
  for (int i = 0; i < 1000; ++i) {
    pending.push_back(
        asio::co_spawn(p.e.get_executor(), p.e.enqueue("noop3", json::value{{"i", i}}), asio::use_future));
  }
  std::vector<std::string> ids;
  for (auto& f : pending)
    ids.push_back(f.get().value());

  std::vector<std::unique_ptr<spawned_worker>> workers;
  for (int w = 0; w < 3; ++w) {
    workers.push_back(std::make_unique<spawned_worker>(
        std::vector<std::string>{"--db", db, "--effects", effects, "--concurrency", "32"}));
  }
  BOOST_REQUIRE(wait_until(
      [&] { return count_of(db, "SELECT count(*) FROM keel.runs WHERE status = 'completed'") == 1000; },
      120s));
  for (auto& w : workers)
    BOOST_TEST(w->terminate() == 0);

  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.steps") == 3000);
  BOOST_TEST(
      count_of(
          db,
          "SELECT count(*) FROM (SELECT run_id FROM keel.steps GROUP BY run_id HAVING count(*) <> 3) x") ==
      0);
  BOOST_TEST(count_of(db, "SELECT count(DISTINCT owner) FROM keel.runs") >= 2);  // the work was shared
  auto counts = count_lines(effects);
  BOOST_TEST(counts.size() == 4000u);  // 3 steps + 1 completion for each of 1000 runs
  for (const auto& id : ids) {
    for (const char* what : {" s1", " s2", " s3", " completed"}) {
      if (counts[id + what] != 1) BOOST_ERROR(id << what << " happened " << counts[id + what] << " times");
    }
  }
}

BOOST_AUTO_TEST_CASE(three_worker_processes_fire_each_occurrence_of_a_schedule_exactly_once) {
  auto db = fresh_database();
  temp_dir dir;
  const std::string effects = dir.path() + "/effects";
  producer p(db);
  schedule_spec spec;
  spec.name = "catch-up";
  spec.workflow = "noop3";
  spec.cron = "* * * * *";
  spec.catch_up = 1000;
  BOOST_REQUIRE(p.e.put_schedule_blocking(spec));
  std::vector<std::unique_ptr<spawned_worker>> workers;
  for (int w = 0; w < 3; ++w) {
    workers.push_back(std::make_unique<spawned_worker>(
        std::vector<std::string>{"--db", db, "--effects", effects, "--concurrency", "32"}));
  }
  BOOST_REQUIRE(wait_until([&] { return count_of(db, "SELECT count(*) FROM keel.workers") == 3; }, 30s));
  // Five hours missed, all caught up: 300 occurrences and this minute's, due at once on three workers that
  // each look for due schedules every second.
  query_value(db,
              "UPDATE keel.schedules SET next_fire_at = date_trunc('minute', now()) - interval '5 hours'");
  const auto key_of_run =
      "SELECT idempotency_key FROM keel.runs WHERE idempotency_key LIKE 'schedule:catch-up@%'";
  BOOST_REQUIRE(wait_until(
      [&] { return count_of(db, "SELECT count(*) FROM (" + std::string(key_of_run) + ") k") >= 301; }, 30s));
  BOOST_REQUIRE(wait_until(
      [&] { return count_of(db, "SELECT count(*) FROM keel.runs WHERE status <> 'completed'") == 0; }, 60s));
  for (auto& w : workers)
    BOOST_TEST(w->terminate() == 0);
  const auto runs = count_of(db, "SELECT count(*) FROM keel.runs");
  BOOST_TEST((runs == 301 || runs == 302));  // a minute may have begun meanwhile
  // One per minute, none missing: the newest minus the oldest spans one minute fewer than there are runs.
  BOOST_TEST(
      count_of(db, "SELECT extract(epoch FROM max(created_at) - min(created_at))::int FROM keel.runs") < 60);
  BOOST_TEST(count_of(db,
                      "SELECT (extract(epoch FROM max(to_timestamp(split_part(idempotency_key, '@', 2), "
                      "'YYYY-MM-DD\"T\"HH24:MI:SS')) - min(to_timestamp(split_part(idempotency_key, '@', 2), "
                      "'YYYY-MM-DD\"T\"HH24:MI:SS'))) / 60)::int FROM keel.runs") == runs - 1);
  auto counts = count_lines(effects);
  BOOST_TEST(counts.size() == static_cast<std::size_t>(runs) * 4);  // 3 steps and a completion each, once
  for (const auto& [line, n] : counts) {
    if (n != 1) BOOST_ERROR(line << " happened " << n << " times");
  }
}

BOOST_AUTO_TEST_CASE(three_worker_processes_never_run_more_than_a_keys_limit_at_once) {
  auto db = fresh_database();
  temp_dir dir;
  const std::string effects = dir.path() + "/effects";
  producer p(db);
  std::vector<std::unique_ptr<spawned_worker>> workers;
  for (int w = 0; w < 3; ++w) {
    workers.push_back(std::make_unique<spawned_worker>(std::vector<std::string>{
        "--db", db, "--effects", effects, "--concurrency", "32", "--step-ms", "20"}));
  }
  // Each worker declares the rule (3 per /tenant) as it starts; the burst comes after all have.
  BOOST_REQUIRE(wait_until([&] { return count_of(db, "SELECT count(*) FROM keel.workers") == 3; }, 30s));
  // Sampled while the burst drains: the most runs of one key that are running at one instant.
  std::atomic<bool> sampling{true};
  std::atomic<long> most_running{0};
  std::thread sampler([&] {
    while (sampling) {
      const long n = count_of(db,
                              "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM keel.runs "
                              "WHERE status = 'running' GROUP BY concurrency_key) x");
      if (n > most_running) most_running = n;
      std::this_thread::sleep_for(2ms);
    }
  });
  std::vector<std::future<result<run_id>>> pending;
  for (int i = 0; i < 300; ++i) {
    const std::string tenant =
        i % 10 == 0 ? std::string("small") : std::string("t").append(std::to_string(i % 4));
    pending.push_back(asio::co_spawn(p.e.get_executor(),
                                     p.e.enqueue("keyed", json::value{{"tenant", tenant}, {"i", i}}),
                                     asio::use_future));
  }
  for (auto& f : pending)
    BOOST_REQUIRE(f.get());
  const bool drained = wait_until(
      [&] { return count_of(db, "SELECT count(*) FROM keel.runs WHERE status = 'completed'") == 300; }, 120s);
  sampling = false;
  sampler.join();
  BOOST_REQUIRE(drained);
  for (auto& w : workers)
    BOOST_TEST(w->terminate() == 0);
  BOOST_TEST(most_running.load() <= 3);
  // The same from the steps' own times: no instant inside more than 3 steps of one key. Each run's step
  // lies inside the time it held its slot, so this is a lower bound of what the slots allowed.
  const long most_overlap = count_of(db, R"sql(
    WITH s AS (SELECT r.concurrency_key AS k, s.started_at, s.finished_at
               FROM keel.steps s JOIN keel.runs r ON r.id = s.run_id)
    SELECT max((SELECT count(*) FROM s b
                WHERE b.k = a.k AND b.started_at <= a.started_at AND b.finished_at > a.started_at))
    FROM s a)sql");
  BOOST_TEST_MESSAGE("most running of one key: " << most_running.load() << " sampled, " << most_overlap
                                                 << " from the steps' times");
  BOOST_TEST(most_overlap <= 3);
  BOOST_TEST(most_overlap >= 2);  // and the keys did run side by side
  BOOST_TEST(count_of(db, "SELECT count(DISTINCT owner) FROM keel.runs") >= 2);  // on several workers
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.concurrency_slots WHERE holder IS NOT NULL") == 0);
  auto counts = count_lines(effects);
  BOOST_TEST(counts.size() == 600u);  // a step and a completion for each of 300 runs, once each
  for (const auto& [line, n] : counts) {
    if (n != 1) BOOST_ERROR(line << " happened " << n << " times");
  }
}

BOOST_AUTO_TEST_CASE(three_worker_processes_never_start_more_than_a_throttles_limit_in_a_window) {
  auto db = fresh_database();
  temp_dir dir;
  const std::string effects = dir.path() + "/effects";
  producer p(db);
  std::vector<std::unique_ptr<spawned_worker>> workers;
  for (int w = 0; w < 3; ++w) {
    workers.push_back(std::make_unique<spawned_worker>(
        std::vector<std::string>{"--db", db, "--effects", effects, "--concurrency", "32"}));
  }
  BOOST_REQUIRE(wait_until([&] { return count_of(db, "SELECT count(*) FROM keel.workers") == 3; }, 30s));
  std::vector<std::future<result<run_id>>> pending;
  for (int i = 0; i < 40; ++i) {
    pending.push_back(asio::co_spawn(
        p.e.get_executor(), p.e.enqueue("paced", json::value{{"tenant", i % 2 ? "x" : "y"}, {"i", i}}),
        asio::use_future));
  }
  for (auto& f : pending)
    BOOST_REQUIRE(f.get());
  BOOST_REQUIRE(wait_until(
      [&] { return count_of(db, "SELECT count(*) FROM keel.runs WHERE status = 'completed'") == 40; }, 60s));
  for (auto& w : workers)
    BOOST_TEST(w->terminate() == 0);
  // Any two starts of one key three apart are at least a window apart: no 500 ms holds four.
  BOOST_TEST(count_of(db, R"sql(
    SELECT count(*) FROM (
      SELECT started_at - lag(started_at, 3) OVER (PARTITION BY input->>'tenant' ORDER BY started_at) AS gap
      FROM keel.runs) g
    WHERE gap < interval '500 milliseconds')sql") == 0);
  // And the windows were used: 20 runs of a key start within about 7 windows, not one at a time.
  BOOST_TEST(count_of(db,
                      "SELECT extract(epoch FROM max(started_at) - min(started_at)) * 1000 FROM keel.runs "
                      "WHERE input->>'tenant' = 'x'") < 6000);
  BOOST_TEST(count_of(db, "SELECT count(DISTINCT owner) FROM keel.runs") >= 2);
  auto counts = count_lines(effects);
  BOOST_TEST(counts.size() == 80u);  // a step and a completion for each of 40 runs, once each
}

BOOST_AUTO_TEST_CASE(three_worker_processes_take_tenants_in_turn_while_one_has_a_burst_queued) {
  auto db = fresh_database();
  temp_dir dir;
  producer p(db);
  // The burst first: 1,500 runs of one tenant, queued before any worker starts.
  std::vector<std::future<result<run_id>>> pending;
  for (int i = 0; i < 1500; ++i) {
    pending.push_back(asio::co_spawn(p.e.get_executor(),
                                     p.e.enqueue("shared", json::value{{"tenant", "big"}, {"i", i}}),
                                     asio::use_future));
  }
  for (auto& f : pending)
    BOOST_REQUIRE(f.get());
  pending.clear();
  std::vector<std::unique_ptr<spawned_worker>> workers;
  for (int w = 0; w < 3; ++w) {
    workers.push_back(std::make_unique<spawned_worker>(std::vector<std::string>{
        "--db", db, "--effects", dir.path() + "/effects", "--concurrency", "8", "--step-ms", "10"}));
  }
  BOOST_REQUIRE(wait_until(
      [&] { return count_of(db, "SELECT count(*) FROM keel.runs WHERE started_at IS NOT NULL") >= 100; },
      60s));
  // Three more tenants arrive while the burst is being worked through.
  for (int i = 0; i < 15; ++i) {
    pending.push_back(asio::co_spawn(
        p.e.get_executor(),
        p.e.enqueue("shared",
                    json::value{{"tenant", std::string("s").append(std::to_string(i % 3))}, {"i", i}}),
        asio::use_future));
  }
  for (auto& f : pending)
    BOOST_REQUIRE(f.get());
  BOOST_REQUIRE(wait_until(
      [&] {
        return count_of(db,
                        "SELECT count(*) FROM keel.runs WHERE input->>'tenant' <> 'big' AND status = "
                        "'completed'") == 15;
      },
      60s));
  for (auto& w : workers)
    BOOST_TEST(w->terminate() == 0);
  // Between the newcomers' enqueue and the last of them starting, the burst got its turns (about one per
  // newcomer's run each) and the claims in flight: not the 1,400 runs first come, first served would give.
  const long burst_meanwhile = count_of(db, R"sql(
    WITH small AS (SELECT max(created_at) AS queued, max(started_at) AS started FROM keel.runs
                   WHERE input->>'tenant' <> 'big')
    SELECT count(*) FROM keel.runs, small
    WHERE input->>'tenant' = 'big' AND started_at > small.queued AND started_at < small.started)sql");
  BOOST_TEST_MESSAGE("burst runs started while the newcomers waited: " << burst_meanwhile);
  BOOST_TEST(burst_meanwhile <= 60);
  const long burst_left =
      count_of(db, "SELECT count(*) FROM keel.runs WHERE input->>'tenant' = 'big' AND started_at IS NULL");
  BOOST_TEST_MESSAGE("burst runs never started: " << burst_left);
  BOOST_TEST(burst_left > 500);  // the newcomers did come while most of the burst was queued
  BOOST_TEST(count_of(db, "SELECT count(DISTINCT owner) FROM keel.runs WHERE owner IS NOT NULL") >= 2);
}

BOOST_AUTO_TEST_CASE(runs_continue_after_the_database_restarts_under_load) {
  auto db = fresh_database();
  auto o = options_for(db);
  o.concurrency = 32;
  engine e(o);
  std::atomic<int> steps_run{0};
  add_workflow(e, "sleepy", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    for (const char* name : {"s1", "s2", "s3"}) {
      co_await ctx.step(name, [&]() -> asio::awaitable<int> {
        ++steps_run;
        co_await async_sleep(5ms);
        co_return 1;
      });
    }
    co_return nullptr;
  });
  BOOST_REQUIRE(e.start_blocking());
  std::vector<std::string> ids;
  for (int i = 0; i < 300; ++i)
    ids.push_back(e.enqueue_blocking("sleepy", json::object{}).value());
  BOOST_REQUIRE(wait_until([&] { return steps_run.load() > 150; }, 60s));
  stop_cluster();  // fast shutdown: every connection is cut
  std::this_thread::sleep_for(1s);
  start_cluster();
  BOOST_REQUIRE(wait_until(
      [&] { return count_of(db, "SELECT count(*) FROM keel.runs WHERE status = 'completed'") == 300; },
      120s));
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.steps") == 900);
  for (const auto& id : ids)
    BOOST_TEST(to_string(e.get_blocking(id).value().status) == "completed");
}

BOOST_AUTO_TEST_CASE(runs_complete_exactly_once_after_the_database_crashes_under_load) {
  // An immediate shutdown kills every server process mid-transaction, as a crash would, and the restart runs
  // crash recovery. Commits acknowledged before the crash must survive it (hence synchronous_commit on for
  // this database), and what the workers retry afterwards must neither lose nor repeat anything.
  auto db = fresh_database();
  make_commits_crash_safe(db);
  temp_dir dir;
  const std::string effects = dir.path() + "/effects";
  producer p(db);
  constexpr int k_runs = 300;
  std::vector<std::future<result<run_id>>> pending;
  for (int i = 0; i < k_runs; ++i) {
    pending.push_back(
        asio::co_spawn(p.e.get_executor(), p.e.enqueue("sleepy", json::value{{"i", i}}), asio::use_future));
  }
  std::vector<std::string> ids;
  for (auto& f : pending)
    ids.push_back(f.get().value());

  // 32 runs in flight and 50 ms steps: the drain takes a couple of seconds, so the crash lands inside it.
  std::vector<std::unique_ptr<spawned_worker>> workers;
  for (int w = 0; w < 2; ++w) {
    workers.push_back(std::make_unique<spawned_worker>(std::vector<std::string>{
        "--db", db, "--effects", effects, "--concurrency", "16", "--step-ms", "50"}));
  }
  BOOST_REQUIRE(wait_until([&] { return read_lines(effects).size() > k_runs; }, 60s));
  stop_cluster(stop_mode::immediate);
  const auto lines_at_crash = read_lines(effects);
  const auto completed_at_crash =
      std::count_if(lines_at_crash.begin(), lines_at_crash.end(),
                    [](const std::string& l) { return l.ends_with(" completed"); });
  BOOST_TEST_MESSAGE("crashed the server with " << completed_at_crash << " runs completed");
  BOOST_REQUIRE(completed_at_crash < k_runs);  // otherwise the crash tested nothing
  start_cluster();
  BOOST_REQUIRE(wait_until(
      [&] { return count_of(db, "SELECT count(*) FROM keel.runs WHERE status = 'completed'") == k_runs; },
      120s));
  for (auto& w : workers)
    BOOST_TEST(w->terminate() == 0);

  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.steps") == 3 * k_runs);
  auto counts = count_lines(effects);
  BOOST_TEST(counts.size() == 4u * k_runs);
  for (const auto& id : ids) {
    for (const char* what : {" s1", " s2", " s3", " completed"}) {
      if (counts[id + what] != 1) BOOST_ERROR(id << what << " happened " << counts[id + what] << " times");
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()
