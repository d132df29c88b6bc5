// The HTTP front end over loopback with a real client (Boost.Beast, one connection per test unless said):
// starting, reading and listing runs, events and hooks resuming waiting runs, the readiness probe and the
// metrics. Malformed, hostile and guarded requests: http_protocol_test.cpp.
#define BOOST_TEST_MODULE http
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json.hpp>
#include <cctype>
#include <map>
#include <sstream>

#include "engine_fixture.hpp"
#include "http_client.hpp"
#include "keel/common/time_text.hpp"
#include "keel/http/server.hpp"
#include "served_engine.hpp"
#include "tcp_proxy.hpp"

#include "http_served.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using asio::ip::tcp;

namespace {

std::string status_of_run(client& c, const std::string& id) {
  auto r = c.send(bhttp::verb::get, "/v1/runs/" + id);
  return r.status == 200 ? std::string(r.body.at("status").as_string()) : "?";
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(a_run_is_started_and_read_back_over_one_kept_alive_connection, *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  BOOST_TEST(c.send(bhttp::verb::get, "/healthz").status == 200);
  auto started = c.send(bhttp::verb::post, "/v1/workflows/echo/runs", R"({"input":{"x":1}})");
  BOOST_TEST(started.status == 201);
  const std::string id(started.body.at("id").as_string());
  BOOST_TEST(started.raw[bhttp::field::location] == "/v1/runs/" + id);
  BOOST_TEST(started.body.at("workflow").as_string() == "echo");
  BOOST_REQUIRE(wait_until([&] { return status_of_run(c, id) == "completed"; }, 10s));
  auto run = c.send(bhttp::verb::get, "/v1/runs/" + id);
  BOOST_TEST(run.status == 200);
  BOOST_TEST(run.body.at("output") == json::parse(R"({"x":1})"));
  BOOST_TEST(run.body.at("steps").as_array().size() == 1u);
  BOOST_TEST(run.body.at("steps").at(0).at("name").as_string() == "echo");
  BOOST_TEST(run.body.at("created_at").as_string().ends_with("Z"));
  // The same idempotency key (body or header) gives the same run.
  auto k1 = c.send(bhttp::verb::post, "/v1/workflows/echo/runs", R"({"input":2,"idempotency_key":"k"})");
  auto k2 =
      c.send(bhttp::verb::post, "/v1/workflows/echo/runs", R"({"input":2})", {{"Idempotency-Key", "k"}});
  BOOST_TEST(k1.status == 201);
  BOOST_TEST(k2.status == 200);  // the repeat gets the run it started
  BOOST_TEST(k1.body.at("id") == k2.body.at("id"));
  // What this server runs.
  auto workflows = c.send(bhttp::verb::get, "/v1/workflows");
  BOOST_TEST(workflows.status == 200);
  BOOST_TEST(json::serialize(workflows.body) ==
             R"({"workflows":[{"name":"approval","versions":[1],"input_example":null,"description":""},)"
             R"({"name":"echo","versions":[1],"input_example":null,"description":""},)"
             R"({"name":"sum","versions":[1],"input_example":null,"description":""},)"
             R"({"name":"waits","versions":[1],"input_example":null,"description":""}]})");
  auto conflict =
      c.send(bhttp::verb::post, "/v1/workflows/echo/runs", R"({"input":3,"idempotency_key":"k"})");
  BOOST_TEST(conflict.status == 409);
  BOOST_TEST(conflict.code() == "idempotency_conflict");
  // A typed workflow's input that does not convert is refused with where it is wrong; no run starts.
  auto wrong = c.send(bhttp::verb::post, "/v1/workflows/sum/runs", R"({"input":[1,"two",3]})");
  BOOST_TEST(wrong.status == 400);
  BOOST_TEST(wrong.code() == "invalid_input");
  BOOST_TEST(
      wrong.body.at("error").at("message").as_string().starts_with("the input does not convert: at /1: "),
      wrong.body);
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/runs?workflow=sum").body.at("runs").as_array().empty());
  const std::string sum(
      c.send(bhttp::verb::post, "/v1/workflows/sum/runs", R"({"input":[1,2,3]})").body.at("id").as_string());
  BOOST_REQUIRE(wait_until([&] { return status_of_run(c, sum) == "completed"; }, 10s));
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/runs/" + sum).body.at("output") == json::value(6));
}

BOOST_AUTO_TEST_CASE(events_and_hooks_resume_waiting_runs, *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  const std::string waiting(
      c.send(bhttp::verb::post, "/v1/workflows/waits/runs", "{}").body.at("id").as_string());
  BOOST_REQUIRE(wait_until([&] { return status_of_run(c, waiting) == "waiting"; }, 10s));
  auto sent = c.send(bhttp::verb::post, "/v1/runs/" + waiting + "/events/go", R"({"ok":true})");
  BOOST_TEST(sent.status == 202);
  BOOST_REQUIRE(wait_until([&] { return status_of_run(c, waiting) == "completed"; }, 10s));
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/runs/" + waiting).body.at("output") ==
             json::parse(R"({"ok":true})"));
  auto late = c.send(bhttp::verb::post, "/v1/runs/" + waiting + "/events/go", "1");
  BOOST_TEST(late.status == 409);
  BOOST_TEST(late.code() == "run_finished");

  const std::string approval(
      c.send(bhttp::verb::post, "/v1/workflows/approval/runs", "{}").body.at("id").as_string());
  BOOST_REQUIRE(wait_until([&] { return status_of_run(c, approval) == "waiting"; }, 10s));
  std::string token;
  const auto waiting_run = c.send(bhttp::verb::get, "/v1/runs/" + approval);
  for (const auto& step : waiting_run.body.at("steps").as_array()) {
    if (step.at("name") == "announce") token = std::string(step.at("output").as_string());
  }
  BOOST_REQUIRE(!token.empty());
  // The waiting run shows its open hook and the link that resumes it (the token is derived, never stored).
  const auto& hooks = waiting_run.body.at("hooks").as_array();
  BOOST_REQUIRE(hooks.size() == 1u);
  BOOST_TEST(hooks[0].at("name").as_string() == "decision");
  BOOST_TEST(hooks[0].at("path").as_string() == "/v1/hooks/" + token);
  BOOST_TEST(hooks[0].at("expires_at").is_null());
  // What it waits for shows its times as RFC 3339, like every time the API shows.
  const auto& waiting_for = waiting_run.body.at("waiting_for").as_object();
  BOOST_TEST(waiting_for.at("kind") == "hook");
  BOOST_REQUIRE(waiting_for.contains("started"));
  BOOST_TEST(parse_rfc3339(waiting_for.at("started").as_string()).has_value());
  auto resumed = c.send(bhttp::verb::post, "/v1/hooks/" + token, R"({"approved":true,"by":"ann"})");
  BOOST_TEST(resumed.status == 202);
  BOOST_TEST(resumed.body.at("run_id").as_string() == approval);
  // A webhook sender's retry of the same delivery: 200 with the same run, nothing changed.
  auto repeat = c.send(bhttp::verb::post, "/v1/hooks/" + token, R"({"by":"ann","approved":true})");
  BOOST_TEST(repeat.status == 200);
  BOOST_TEST(repeat.body.at("run_id").as_string() == approval);
  BOOST_REQUIRE(wait_until([&] { return status_of_run(c, approval) == "completed"; }, 10s));
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/runs/" + approval).body.at("hooks").as_array().empty());
  auto other = c.send(bhttp::verb::post, "/v1/hooks/" + token, R"({"approved":false})");
  BOOST_TEST(other.status >= 409);
  BOOST_TEST((other.code() == "hook_already_resumed" || other.code() == "hook_closed"));
  auto unknown = c.send(bhttp::verb::post, "/v1/hooks/no-such-token", "{}");
  BOOST_TEST(unknown.status == 404);
  BOOST_TEST(unknown.code() == "hook_not_found");
  auto cancelled = c.send(bhttp::verb::post, "/v1/runs/" + approval + "/cancel");
  BOOST_TEST(cancelled.status == 200);
  BOOST_TEST(cancelled.body.at("status").as_string() == "completed");
}

BOOST_AUTO_TEST_CASE(runs_are_listed_newest_first_a_page_at_a_time_with_filters, *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  std::vector<std::string> started;  // oldest first
  for (int i = 0; i < 7; ++i)
    started.push_back(std::string(
        c.send(bhttp::verb::post, "/v1/workflows/echo/runs", R"({"input":1})").body.at("id").as_string()));
  for (int i = 0; i < 3; ++i)
    started.push_back(
        std::string(c.send(bhttp::verb::post, "/v1/workflows/waits/runs", "{}").body.at("id").as_string()));
  for (const auto& id : started)
    BOOST_REQUIRE(wait_until(
        [&] {
          auto s = status_of_run(c, id);
          return s == "completed" || s == "waiting";
        },
        10s));
  // Pages of 3: every run once, newest first, then no cursor.
  std::vector<std::string> listed;
  std::string cursor;
  for (int page = 0; page < 10; ++page) {
    auto r = c.send(bhttp::verb::get, "/v1/runs?limit=3" + (cursor.empty() ? "" : "&cursor=" + cursor));
    BOOST_REQUIRE(r.status == 200);
    for (const auto& run : r.body.at("runs").as_array()) {
      listed.push_back(std::string(run.at("id").as_string()));
      BOOST_TEST(run.at("created_at").as_string().ends_with("Z"));
      BOOST_TEST(!run.as_object().contains("input"));  // a listing is a summary
    }
    if (r.body.at("next_cursor").is_null()) break;
    cursor = std::string(r.body.at("next_cursor").as_string());
  }
  // Newest first is by id (UUIDv7: creation time to the millisecond; runs of one millisecond by their
  // random bits).
  std::vector<std::string> newest_first = started;
  std::sort(newest_first.begin(), newest_first.end(), std::greater<>());
  BOOST_TEST(listed == newest_first, boost::test_tools::per_element());
  auto waits = c.send(bhttp::verb::get, "/v1/runs?workflow=waits");
  BOOST_TEST(waits.body.at("runs").as_array().size() == 3u);
  auto waiting = c.send(bhttp::verb::get, "/v1/runs?status=waiting&limit=2");
  BOOST_TEST(waiting.body.at("runs").as_array().size() == 2u);
  BOOST_TEST(waiting.body.at("runs").at(0).at("id").as_string() ==
             *std::max_element(started.end() - 3, started.end()));
  auto rest = c.send(bhttp::verb::get, "/v1/runs?status=waiting&workflow=waits&cursor=" +
                                           std::string(waiting.body.at("next_cursor").as_string()));
  BOOST_TEST(rest.body.at("runs").as_array().size() == 1u);
  BOOST_TEST(rest.body.at("next_cursor").is_null());
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/runs?status=completed&workflow=waits")
                 .body.at("runs")
                 .as_array()
                 .empty());
  auto count = [&](const std::string& target) {
    return c.send(bhttp::verb::get, target).body.at("runs").as_array().size();
  };
  BOOST_TEST(count("/v1/runs?status=running") == 0u);
  BOOST_TEST(count("/v1/runs?status=queued&workflow=echo") == 0u);
  BOOST_TEST(count("/v1/runs?status=completed") == 7u);
  for (const std::string bad :
       {"/v1/runs?limit=0", "/v1/runs?limit=1001", "/v1/runs?limit=x", "/v1/runs?status=done",
        "/v1/runs?cursor=abc", "/v1/runs?sort=asc", "/v1/runs?limit=1&limit=2", "/v1/runs?workflow="}) {
    auto r = c.send(bhttp::verb::get, bad);
    BOOST_TEST(r.status == 400, bad);
    BOOST_TEST(r.code() == "invalid_request", bad);
  }
}

BOOST_AUTO_TEST_CASE(the_status_filter_lists_dead_lettered_and_unclaimable_runs_with_their_reasons,
                     *utf::timeout(60)) {
  const auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "echo", [](context&, json::value in) -> asio::awaitable<json::value> { co_return in; });
  BOOST_REQUIRE(e.start_blocking());
  http::server_options so;
  so.port = 0;
  http::server s(e, so);
  BOOST_REQUIRE(s.start());
  client c(s.port());
  // A newer deployment enqueues echo version 2, which no live worker runs (it never starts its own).
  engine newer(options_for(db));
  add_workflow(
      newer, "echo", [](context&, json::value in) -> asio::awaitable<json::value> { co_return in; }, 2);
  std::vector<std::string> v2;  // oldest first
  for (int i = 0; i < 3; ++i)
    v2.push_back(newer.enqueue_blocking("echo", json::object{}).value());
  std::vector<std::string> done;
  for (int i = 0; i < 3; ++i) {
    auto id = e.enqueue_blocking("echo", json::value(i)).value();
    BOOST_REQUIRE(e.wait_blocking(id, 10s));
    done.push_back(id);
  }
  // Two of the completed runs as a claim leaves a dead-lettered one (tests/pg/run_ops_test.cpp and
  // tests/e2e/dead_letter_test.cpp dead-letter runs for real; this checks what HTTP makes of them).
  for (const auto& id : {done[0], done[2]}) {
    query_value(db,
                "UPDATE keel.runs SET status = 'failed', output = NULL, error = jsonb_build_object("
                "'code', 'dead_lettered', 'message', 'lost', 'recoveries', 6) WHERE id = '" +
                    id + "' RETURNING id");
  }

  auto dead = c.send(bhttp::verb::get, "/v1/runs?status=dead_lettered&limit=1");
  BOOST_REQUIRE(dead.status == 200);
  BOOST_REQUIRE(dead.body.at("runs").as_array().size() == 1u);
  BOOST_TEST(dead.body.at("runs").at(0).at("id").as_string() == done[2]);
  BOOST_TEST(dead.body.at("runs").at(0).at("status").as_string() == "failed");
  BOOST_TEST(dead.body.at("runs").at(0).at("error").at("code").as_string() == "dead_lettered");
  BOOST_TEST(dead.body.at("runs").at(0).at("error").at("recoveries").to_number<int>() == 6);
  BOOST_TEST(dead.body.at("runs").at(0).at("unclaimable").is_null());
  auto dead_rest = c.send(bhttp::verb::get, "/v1/runs?status=dead_lettered&workflow=echo&limit=1&cursor=" +
                                                std::string(dead.body.at("next_cursor").as_string()));
  BOOST_REQUIRE(dead_rest.status == 200);
  BOOST_REQUIRE(dead_rest.body.at("runs").as_array().size() == 1u);
  BOOST_TEST(dead_rest.body.at("runs").at(0).at("id").as_string() == done[0]);
  BOOST_TEST(dead_rest.body.at("next_cursor").is_null());

  // Unclaimable: the version-2 runs, newest first, two pages, each saying why it waits.
  std::vector<std::string> listed;
  std::string cursor;
  for (int page = 0; page < 5; ++page) {
    auto r = c.send(bhttp::verb::get, "/v1/runs?workflow=echo&status=unclaimable&limit=2" +
                                          (cursor.empty() ? "" : "&cursor=" + cursor));
    BOOST_REQUIRE(r.status == 200);
    for (const auto& run : r.body.at("runs").as_array()) {
      listed.push_back(std::string(run.at("id").as_string()));
      BOOST_TEST(run.at("status").as_string() == "queued");
      BOOST_TEST(run.at("version").to_number<int>() == 2);
      BOOST_TEST(run.at("unclaimable").as_string() ==
                 "no live worker has registered workflow 'echo' version 2");
    }
    if (r.body.at("next_cursor").is_null()) break;
    cursor = std::string(r.body.at("next_cursor").as_string());
  }
  std::vector<std::string> newest_first = v2;
  std::sort(newest_first.begin(), newest_first.end(), std::greater<>());
  BOOST_TEST(listed == newest_first, boost::test_tools::per_element());
  // The unfiltered listing says why too, for those runs only.
  auto all = c.send(bhttp::verb::get, "/v1/runs");
  for (const auto& run : all.body.at("runs").as_array())
    BOOST_TEST(run.at("unclaimable").is_null() == (run.at("version").to_number<int>() == 1));
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/runs?status=unclaimable&workflow=other")
                 .body.at("runs")
                 .as_array()
                 .empty());
  // A status that is neither a stored one nor a filter: a typed 400 that names them all.
  auto bad = c.send(bhttp::verb::get, "/v1/runs?status=dead-lettered");
  BOOST_TEST(bad.status == 400);
  BOOST_TEST(bad.code() == "invalid_request");
  BOOST_TEST(bad.body.at("error").at("message").as_string().find("unclaimable") != std::string::npos);
  s.stop_blocking();
  e.stop_blocking();
}

BOOST_AUTO_TEST_CASE(readyz_answers_within_two_seconds_whether_the_database_can_serve, *utf::timeout(60)) {
  auto db = fresh_database();
  tcp_proxy proxy(db);  // between the engine and PostgreSQL: holds the readiness query on demand
  engine e(options_for(proxy.conninfo()));
  BOOST_REQUIRE(e.start_blocking());
  http::server_options o;
  o.port = 0;
  http::server s(e, o);
  BOOST_REQUIRE(s.start());
  client c(s.port());
  auto ready = c.send(bhttp::verb::get, "/readyz");
  BOOST_TEST(ready.status == 200);
  BOOST_TEST(ready.body.at("status") == "ready");
  BOOST_TEST(ready.body.at("migrations").as_int64() >= 18);
  // A database that does not answer: not ready, said within the probe's 2 s, and the server goes on.
  proxy.hold("keel_readiness");
  const auto t0 = std::chrono::steady_clock::now();
  auto hung = c.send(bhttp::verb::get, "/readyz");
  const auto took = std::chrono::steady_clock::now() - t0;
  BOOST_TEST(hung.status == 503);
  BOOST_TEST(hung.code() == "not_ready");
  BOOST_TEST((took < 5s));
  BOOST_TEST(c.send(bhttp::verb::get, "/healthz").status == 200);
  proxy.release();
  BOOST_TEST(c.send(bhttp::verb::get, "/readyz").status == 200);
  s.stop_blocking();
  e.stop_blocking();
}

namespace {

/// Whether `key` is a sample's name and labels as the text format writes them: name{label="value",...},
/// the values quoted with \\, \" and \n escapes. (Scanned by hand: std::regex trips GCC 12's
/// maybe-uninitialized warning under ASan.)
bool valid_sample_key(std::string_view key) {
  auto name_char = [](char c, bool first) {
    return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':' ||
           (!first && std::isdigit(static_cast<unsigned char>(c)));
  };
  std::size_t i = 0;
  if (key.empty() || !name_char(key[0], true)) return false;
  while (i < key.size() && name_char(key[i], i == 0))
    ++i;
  if (i == key.size()) return true;
  if (key[i] != '{' || key.back() != '}') return false;
  ++i;
  while (i < key.size() - 1) {
    const std::size_t label_start = i;
    while (i < key.size() && key[i] != '=' && name_char(key[i], i == label_start) && key[i] != ':')
      ++i;
    if (i == label_start || i + 1 >= key.size() || key[i] != '=' || key[i + 1] != '"') return false;
    i += 2;
    while (i < key.size() && key[i] != '"') {
      if (key[i] == '\\') {
        if (i + 1 >= key.size() || (key[i + 1] != '\\' && key[i + 1] != '"' && key[i + 1] != 'n'))
          return false;
        ++i;
      }
      ++i;
    }
    if (i >= key.size()) return false;
    ++i;  // the closing quote
    if (key[i] == ',') ++i;
  }
  return i == key.size() - 1;
}

/// A Prometheus text exposition: each sample's value by its name and labels as written.
std::map<std::string, double> samples_of(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ")) continue;
    BOOST_TEST_INFO(line);
    const auto space = line.rfind(' ');
    BOOST_REQUIRE(space != std::string::npos);
    const auto key = line.substr(0, space);
    BOOST_REQUIRE(valid_sample_key(key));
    std::size_t used = 0;
    const double value = std::stod(line.substr(space + 1), &used);
    BOOST_REQUIRE(used == line.size() - space - 1);
    out[key] = value;
  }
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(metrics_report_runs_steps_latencies_and_event_streams_even_when_the_database_hangs,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  tcp_proxy proxy(db);  // between the engine and PostgreSQL: holds the count query on demand
  engine e(options_for(proxy.conninfo()));
  add_workflow(e, "echo", [](context& ctx, json::value in) -> asio::awaitable<json::value> {
    auto step = [in] { return in; };
    co_return co_await ctx.step("echo", step);
  });
  add_workflow(e, "waits", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto go = co_await ctx.wait_for_event("go");
    co_return go ? *go : json::value("timed out");
  });
  BOOST_REQUIRE(e.start_blocking());
  http::server_options o;
  o.port = 0;
  http::server s(e, o);
  BOOST_REQUIRE(s.start());
  client c(s.port());
  for (int i = 0; i < 2; ++i) {
    const auto id = *e.enqueue_blocking("echo", json::value(i));
    BOOST_REQUIRE(e.wait_blocking(id, 10s));
  }
  const auto waiting = *e.enqueue_blocking("waits", json::value(nullptr));
  BOOST_REQUIRE(wait_until([&] { return e.get_blocking(waiting)->status == run_status::waiting; }, 10s));
  sse_reader stream(s.port(), "/v1/runs/" + waiting + "/events");
  BOOST_REQUIRE(wait_until([&] { return s.stats().event_streams == 1; }, 10s));

  const auto r = c.send(bhttp::verb::get, "/metrics");
  BOOST_TEST(r.status == 200);
  BOOST_TEST(r.raw[bhttp::field::content_type] == "text/plain; version=0.0.4; charset=utf-8");
  const auto m = samples_of(r.raw.body());
  auto at = [&](const std::string& key) {
    BOOST_TEST_INFO(key);
    BOOST_REQUIRE(m.contains(key));
    return m.at(key);
  };
  BOOST_TEST(at("keel_database_up") == 1);
  BOOST_TEST(at(R"(keel_runs{workflow="waits",status="waiting"})") == 1);
  BOOST_TEST(at(R"(keel_runs{workflow="echo",status="queued"})") == 0);  // zeros are reported, not left out
  BOOST_TEST(at(R"(keel_queue_depth{workflow="echo"})") == 0);
  BOOST_TEST(at(R"(keel_runs_finished_total{workflow="echo",status="completed"})") == 2);
  BOOST_TEST(at(R"(keel_runs_finished_total{workflow="echo",status="failed"})") == 0);
  BOOST_TEST(at(R"(keel_step_duration_seconds_count{workflow="echo"})") == 2);
  BOOST_TEST(at(R"(keel_step_duration_seconds_bucket{workflow="echo",le="+Inf"})") == 2);
  BOOST_TEST(at(R"(keel_step_duration_seconds_bucket{workflow="echo",le="10"})") == 2);
  BOOST_TEST(at("keel_claim_duration_seconds_count") >= 2);
  BOOST_TEST(at("keel_commit_duration_seconds_count") >= 1);
  BOOST_TEST(at("keel_commit_batch_writes_sum") >= at("keel_commit_batch_writes_count"));
  BOOST_TEST(at("keel_sse_clients") == 1);
  BOOST_TEST(at("keel_sse_dropped_frames_total") == 0);
  // Buckets are cumulative: never smaller than the one before.
  double previous = 0;
  for (const auto& [key, value] : m) {
    if (!key.starts_with("keel_commit_batch_writes_bucket")) continue;
    BOOST_TEST(value >= 0);
    previous = std::max(previous, value);
  }
  BOOST_TEST(previous == at(R"(keel_commit_batch_writes_bucket{le="+Inf"})"));
  BOOST_TEST(c.send(bhttp::verb::post, "/metrics").status == 405);

  // A database that does not answer: the scrape still answers within its 2 s, without the run counts.
  proxy.hold("keel_count_unfinished_runs");
  const auto t0 = std::chrono::steady_clock::now();
  const auto hung = c.send(bhttp::verb::get, "/metrics");
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < 5s));
  BOOST_TEST(hung.status == 200);
  const auto h = samples_of(hung.raw.body());
  BOOST_TEST(h.at("keel_database_up") == 0);
  BOOST_TEST(!h.contains(R"(keel_runs{workflow="waits",status="waiting"})"));
  BOOST_TEST(h.at(R"(keel_runs_finished_total{workflow="echo",status="completed"})") == 2);
  proxy.release();
  s.stop_blocking();
  e.stop_blocking();
}

BOOST_AUTO_TEST_SUITE_END()
