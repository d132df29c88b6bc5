// keeld end to end, as a real process on its embedded PostgreSQL: the README's main job, and the HTTP API
// with its example workflows, across a SIGKILL and a restart.
#define BOOST_TEST_MODULE keeld
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "http_client.hpp"
#include "keeld_process.hpp"
#include "pg_harness.hpp"

namespace {

struct outcome {
  int status = -1;
  std::string output;
};

/// Runs a shell command, capturing stdout and stderr together.
outcome run(const std::string& command) {
  outcome o;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  BOOST_REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  while (std::fgets(buf.data(), buf.size(), p) != nullptr)
    o.output += buf.data();
  const int st = ::pclose(p);
  o.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return o;
}

/// Lines of `text` that contain every one of `parts`. (No std::regex: GCC 12 warns inside it under -O1.)
std::size_t count_lines(const std::string& text, std::initializer_list<std::string_view> parts) {
  std::istringstream in(text);
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);) {
    bool all = true;
    for (auto p : parts)
      all = all && line.find(p) != std::string::npos;
    if (all) ++n;
  }
  return n;
}

std::string json_text(const boost::json::value& v) {
  return boost::json::serialize(v);
}

std::vector<std::int64_t> ids_of(const std::vector<keel::test::sse_event>& events) {
  std::vector<std::int64_t> out;
  for (const auto& ev : events)
    if (ev.id) out.push_back(std::stoll(*ev.id));
  return out;
}

bool is_kind(const keel::test::sse_event& ev, std::string_view kind) {
  return ev.event.empty() && ev.json().at("kind").as_string() == kind;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(an_event_stream_resumes_without_gap_after_keeld_is_killed_and_restarted,
                     *boost::unit_test::timeout(240)) {
  using keel::test::sse_event;
  using keel::test::sse_reader;
  namespace bhttp = boost::beast::http;
  keel::test::temp_dir dir;
  const auto port = keel::test::free_port();
  std::string id;
  std::vector<sse_event> before;
  {
    keel::test::keeld_process keeld(KEEL_KEELD_PATH, dir.path(), port);
    keel::test::client c(port);
    auto started =
        c.send(bhttp::verb::post, "/v1/workflows/countdown/runs", R"({"input":{"n":8,"delay_ms":300}})");
    BOOST_REQUIRE(started.status == 201);
    id = std::string(started.body.at("id").as_string());
    sse_reader live(port, "/v1/runs/" + id + "/events");
    int ticks = 0;
    before =
        live.read_until([&](const sse_event& ev) { return is_kind(ev, "step_completed") && ++ticks == 3; });
    BOOST_REQUIRE(ticks == 3);
    BOOST_TEST(keeld.stop(SIGKILL) == -1);  // no goodbye: its connections just drop
  }
  std::string last;
  for (const auto& ev : before)
    if (ev.id) last = *ev.id;

  keel::test::keeld_process keeld(KEEL_KEELD_PATH, dir.path(), port);
  sse_reader resumed(port, "/v1/runs/" + id + "/events?frames=false", {{"Last-Event-ID", last}});
  auto after = resumed.read_until([](const sse_event& ev) { return is_kind(ev, "run_completed"); });
  BOOST_REQUIRE(!after.empty());
  BOOST_TEST(after.back().json().at("data").at("output").at("done") == 8);
  // Before the kill and after the restart together: the run's whole log, no gap, no duplicate.
  sse_reader whole(port, "/v1/runs/" + id + "/events?frames=false");
  auto all = whole.read_until([](const sse_event& ev) { return is_kind(ev, "run_completed"); });
  auto seen = ids_of(before);
  const auto rest = ids_of(after);
  seen.insert(seen.end(), rest.begin(), rest.end());
  BOOST_TEST(seen == ids_of(all), boost::test_tools::per_element());

  // The order saga over HTTP: a declined card fails the charge at once, and the compensation releases.
  keel::test::client c(port);
  auto order = c.send(bhttp::verb::post, "/v1/workflows/order/runs", R"({"input":{"card":"declined"}})");
  BOOST_REQUIRE(order.status == 201);
  const std::string order_id(order.body.at("id").as_string());
  sse_reader o(port, "/v1/runs/" + order_id + "/events?frames=false");
  auto ended = o.read_until([](const sse_event& ev) { return is_kind(ev, "run_failed"); });
  BOOST_REQUIRE(!ended.empty());
  const auto run = c.send(bhttp::verb::get, "/v1/runs/" + order_id);
  BOOST_TEST(run.body.at("status") == "failed");
  BOOST_TEST(json_text(run.body.at("error")).find("release") != std::string::npos);
  // A retry runs the steps the compensation undid again (a rewind to the reservation); the same card is
  // declined again.
  BOOST_TEST(c.send(bhttp::verb::post, "/v1/runs/" + order_id + "/retry").status == 202);
  BOOST_REQUIRE(keel::test::wait_until(
      [&] {
        const auto again = c.send(bhttp::verb::get, "/v1/runs/" + order_id);
        return again.body.at("status") == "failed" && !again.body.at("history").as_array().empty();
      },
      std::chrono::seconds(30)));
  const auto retried = c.send(bhttp::verb::get, "/v1/runs/" + order_id);
  BOOST_TEST(retried.body.at("history").as_array().back().at("what") == "rewound");

  // The examples say what they take.
  const auto workflows = c.send(bhttp::verb::get, "/v1/workflows");
  bool found = false;
  for (const auto& w : workflows.body.at("workflows").as_array()) {
    if (w.at("name") != "approval") continue;
    found = true;
    BOOST_TEST(w.at("input_example").at("amount") == 1200);
    BOOST_TEST(!w.at("description").as_string().empty());
  }
  BOOST_TEST(found);
  BOOST_TEST(keeld.stop(SIGTERM) == 0);
}

BOOST_AUTO_TEST_CASE(keeld_deletes_old_finished_runs_when_told_to_and_counts_them) {
  namespace bhttp = boost::beast::http;
  keel::test::temp_dir dir;
  const auto port = keel::test::free_port();
  keel::test::keeld_process keeld(KEEL_KEELD_PATH, dir.path(), port,
                                  {"--retain-finished", "1s", "--retention-interval", "200ms"});
  keel::test::client c(port);
  auto started = c.send(bhttp::verb::post, "/v1/workflows/noop3/runs", R"({"input":{}})");
  BOOST_REQUIRE(started.status == 201);
  const std::string id(started.body.at("id").as_string());
  BOOST_REQUIRE(keel::test::wait_until(
      [&] { return c.send(bhttp::verb::get, "/v1/runs/" + id).body.at("status") == "completed"; },
      std::chrono::seconds(10)));
  // Finished more than a second ago, found by a pass: gone.
  BOOST_REQUIRE(keel::test::wait_until(
      [&] { return c.send(bhttp::verb::get, "/v1/runs/" + id).status == 404; }, std::chrono::seconds(10)));
  const auto metrics = c.send(bhttp::verb::get, "/metrics").raw.body();
  BOOST_TEST(metrics.find("\nkeel_retention_runs_removed_total 1\n") != std::string::npos);
  // The run, its three steps, and its run log events (enqueued, started, steps, completed) at least.
  const auto rows_at = metrics.find("\nkeel_retention_rows_removed_total ");
  BOOST_REQUIRE(rows_at != std::string::npos);
  BOOST_TEST(std::stol(metrics.substr(rows_at + 35)) >= 4);
  BOOST_TEST(keeld.stop(SIGTERM) == 0);
  // Durations it cannot read are refused before anything starts.
  for (const char* bad : {"--retain-finished=30x", "--retain-finished=0s", "--retention-interval=soon",
                          "--retention-batch=0"}) {
    const auto r = run(std::string(KEEL_KEELD_PATH) + " " + bad);
    BOOST_TEST(r.status == 2, bad);
    BOOST_TEST((r.output.find("keeld: --retention") != std::string::npos ||
                r.output.find("keeld: --retain-finished") != std::string::npos),
               r.output);
  }
}

BOOST_AUTO_TEST_CASE(keeld_runs_its_demonstration_batch_on_an_embedded_postgres_and_exits) {
  keel::test::temp_dir dir;
  const std::string cmd = std::string("cd ") + dir.path() + " && " + KEEL_KEELD_PATH;
  auto first = run(cmd + " --once --demo-runs 4");
  BOOST_TEST_INFO(first.output);
  BOOST_TEST(first.status == 0);
  BOOST_TEST(count_lines(first.output, {" order_fulfillment completed: {"}) == 2u);
  BOOST_TEST(count_lines(first.output, {" user_onboarding completed: {"}) == 2u);
  BOOST_TEST(first.output.find("demonstration batch of 4 runs finished") != std::string::npos);
  // The retrying payment step shows its retry (every third order fails its first attempt).
  BOOST_TEST(count_lines(first.output, {"step_retrying charge_payment"}) >= 1u);

  // A second start reuses the same data directory: the cluster and its runs are still there.
  auto second = run(cmd + " --once --demo-runs 1");
  BOOST_TEST_INFO(second.output);
  BOOST_TEST(second.status == 0);
  BOOST_TEST(second.output.find("initializing a new cluster") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(keeld_rejects_an_unknown_option_with_usage) {
  auto r = run(std::string(KEEL_KEELD_PATH) + " --no-such-flag");
  BOOST_TEST(r.status == 2);
  BOOST_TEST(r.output.find("--database-url") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
