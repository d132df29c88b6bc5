// Server-Sent Events over loopback with real clients (a Beast reader, and curl): a run's events from its
// start and resumed after a disconnect with Last-Event-ID (no gap, no duplicate: checked against the
// durable log), every run's events filtered by workflow, output streams resumed by chunk index, a client
// that never reads (runs go on; it loses frames only), heartbeats, a stop that ends streams at once, and
// typed errors for bad stream requests.
#define BOOST_TEST_MODULE sse
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <array>
#include <cstdio>
#include <optional>
#include <set>
#include <thread>

#include "engine_fixture.hpp"
#include "http_client.hpp"
#include "keel/http/server.hpp"
#include "served_engine.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

namespace {

/// An engine with the test workflows and a server on a free port.
struct served : served_engine {
  explicit served(http::server_options o = {}) : served_engine(register_workflows, std::move(o)) {}

  std::string start(const std::string& workflow, const std::string& body) {
    client c(s->port());
    auto r = c.send(bhttp::verb::post, "/v1/workflows/" + workflow + "/runs", body);
    BOOST_REQUIRE(r.status == 201);
    return std::string(r.body.at("id").as_string());
  }

  static void register_workflows(engine& e) {
    // n steps, each publishing a frame, then a wait for the event "go".
    add_workflow(e, "steps", [](context& ctx, json::value in) -> asio::awaitable<json::value> {
      const auto n = in.at("n").to_number<int>();
      for (int k = 0; k < n; ++k) {
        auto step = [k] { return json::value(k); };
        const std::string name = "s" + std::to_string(k);  // named: no class temporary inside co_await
        co_await ctx.step(name, step);
        ctx.emit(json::object{{"left", n - k - 1}});
      }
      auto go = co_await ctx.wait_for_event("go");
      co_return go ? *go : json::value(nullptr);
    });
    // A child run, then done.
    add_workflow(e, "parent", [](context& ctx, json::value) -> asio::awaitable<json::value> {
      const child_options options;  // named: GCC 12 destroys a defaulted temporary in co_await twice
      auto out = co_await ctx.child<json::value>("leaf", json::value(7), options);
      co_return out;
    });
    add_workflow(e, "leaf", [](context& ctx, json::value in) -> asio::awaitable<json::value> {
      auto step = [in] { return in; };
      co_return co_await ctx.step("leaf", step);
    });
    // Output stream "out": chunks 0-4, then (after the event "more") 5-7, closed.
    add_workflow(e, "writer", [](context& ctx, json::value) -> asio::awaitable<json::value> {
      auto out = ctx.stream("out");
      for (int i = 0; i < 5; ++i) {
        const json::value chunk(json::string("c" + std::to_string(i)));
        co_await out.write(chunk);
      }
      co_await out.flush();
      co_await ctx.wait_for_event("more");
      for (int i = 5; i < 8; ++i) {
        const json::value chunk(json::string("c" + std::to_string(i)));
        co_await out.write(chunk);
      }
      co_await out.close();
      co_return json::value(8);
    });
    // Many frames, fast.
    add_workflow(e, "chatty", [](context& ctx, json::value) -> asio::awaitable<json::value> {
      for (int k = 0; k < 200; ++k)
        ctx.emit(json::object{{"k", k}, {"pad", std::string(4096, 'x')}});
      auto step = [] { return json::value("done"); };
      co_return co_await ctx.step("done", step);
    });
  }
};

std::string kind_of(const sse_event& ev) {
  return std::string(ev.json().at("kind").as_string());
}

bool is_terminal(const sse_event& ev) {
  if (!ev.event.empty()) return false;
  const auto k = kind_of(ev);
  return k == "run_completed" || k == "run_failed" || k == "run_cancelled";
}

/// The positions of the run's (and its children's) events in the durable log.
std::vector<std::int64_t> log_positions(engine& e, const std::string& run) {
  read_log_options o;
  o.run = run;
  o.descendants = true;
  auto page = e.read_log_blocking(0, o);
  BOOST_REQUIRE(page);
  std::vector<std::int64_t> out;
  for (const auto& ev : page->events)
    out.push_back(ev.pos);
  return out;
}

std::vector<std::int64_t> ids_of(const std::vector<sse_event>& events) {
  std::vector<std::int64_t> out;
  for (const auto& ev : events)
    if (ev.event.empty()) out.push_back(std::stoll(*ev.id));
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(a_run_stream_starts_with_its_history_and_resumes_after_a_disconnect_without_gap,
                     *utf::timeout(60)) {
  served srv;
  const auto id = srv.start("steps", R"({"input":{"n":3}})");
  BOOST_REQUIRE(wait_until([&] { return status_of(srv.e, id) == "waiting"; }, 10s));

  std::vector<sse_event> first;
  {
    sse_reader r(srv.s->port(), "/v1/runs/" + id + "/events");
    BOOST_TEST(r.status == 200);
    BOOST_TEST(r.content_type == "text/event-stream");
    first =
        r.read_until([](const sse_event& ev) { return ev.event.empty() && kind_of(ev) == "run_waiting"; });
    BOOST_TEST(r.retry_ms.value_or(0) > 0);
    r.close();  // a forced disconnect
  }
  BOOST_REQUIRE(!first.empty());
  BOOST_TEST(kind_of(first.front()) == "run_enqueued");
  std::set<std::string> kinds;
  for (const auto& ev : first) {
    BOOST_TEST(ev.event.empty());  // history: lifecycle events only (frames are live, never durable)
    kinds.insert(kind_of(ev));
    BOOST_TEST(ev.json().at("run_id").as_string() == id);
    BOOST_TEST(ev.json().at("at").as_string().ends_with("Z"));
  }
  BOOST_TEST(kinds.count("run_started") == 1u);
  BOOST_TEST(kinds.count("step_completed") == 1u);
  const auto last = *first.back().id;

  // While nobody listens the run goes on; the client comes back with the last id it saw.
  client c(srv.s->port());
  BOOST_TEST(c.send(bhttp::verb::post, "/v1/runs/" + id + "/events/go", R"("yes")").status == 202);
  BOOST_REQUIRE(wait_until([&] { return status_of(srv.e, id) == "completed"; }, 10s));
  sse_reader again(srv.s->port(), "/v1/runs/" + id + "/events", {{"Last-Event-ID", last}});
  auto rest = again.read_until(is_terminal);
  BOOST_REQUIRE(!rest.empty());
  BOOST_TEST(kind_of(rest.front()) == "run_resumed");
  BOOST_TEST(rest.back().json().at("data").at("output") == json::value("yes"));

  // Together, exactly the durable log: no gap, no duplicate, in order.
  auto seen = ids_of(first);
  const auto after = ids_of(rest);
  seen.insert(seen.end(), after.begin(), after.end());
  BOOST_TEST(seen == log_positions(srv.e, id), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_client_resuming_while_the_run_goes_on_misses_nothing_and_sees_nothing_twice,
                     *utf::timeout(120)) {
  // Reconnects land while the run writes events: the log read and the live stream overlap, and the ids
  // seen over all the connections are exactly the run's log.
  served srv;
  const auto id = srv.start("steps", R"({"input":{"n":400}})");
  std::vector<sse_event> seen;
  std::optional<std::string> last;
  for (int round = 0; round < 100; ++round) {
    std::vector<std::pair<std::string, std::string>> headers;
    if (last) headers.emplace_back("Last-Event-ID", *last);
    sse_reader r(srv.s->port(), "/v1/runs/" + id + "/events?frames=false", headers);
    int taken = 0;
    auto got =
        r.read_until([&](const sse_event& ev) { return ++taken == 40 || kind_of(ev) == "run_waiting"; });
    r.close();
    BOOST_REQUIRE(!got.empty());
    seen.insert(seen.end(), got.begin(), got.end());
    last = *got.back().id;
    if (kind_of(got.back()) == "run_waiting") break;
  }
  BOOST_REQUIRE(kind_of(seen.back()) == "run_waiting");
  BOOST_TEST(ids_of(seen) == log_positions(srv.e, id), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(head_and_http_1_0_get_what_get_and_http_1_1_do, *utf::timeout(60)) {
  served srv;
  const auto id = srv.start("writer", "{}");
  BOOST_REQUIRE(wait_until([&] { return status_of(srv.e, id) == "waiting"; }, 10s));
  client c(srv.s->port());
  c.send(bhttp::verb::post, "/v1/runs/" + id + "/events/more", "1");
  BOOST_REQUIRE(wait_until([&] { return status_of(srv.e, id) == "completed"; }, 10s));
  auto raw = [&](const std::string& request) {
    asio::io_context io;
    tcp::socket s(io);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), srv.s->port()));
    asio::write(s, asio::buffer(request));
    std::string out;
    std::array<char, 4096> buf;
    boost::system::error_code ec;
    for (;;) {
      const auto n = s.read_some(asio::buffer(buf), ec);
      if (ec) break;
      out.append(buf.data(), n);
    }
    return out;  // the server closed the connection
  };
  const auto head = raw("HEAD /v1/runs/" + id + "/streams/out HTTP/1.1\r\nHost: x\r\n\r\n");
  BOOST_TEST(head.starts_with("HTTP/1.1 200 OK\r\n"));
  BOOST_TEST(head.find("Content-Type: text/event-stream\r\n") != std::string::npos);
  BOOST_TEST(head.find("Transfer-Encoding: chunked\r\n") != std::string::npos);
  BOOST_TEST(head.ends_with("\r\n\r\n"));  // the head alone
  const auto missing =
      raw("HEAD /v1/runs/00000000-0000-4000-8000-000000000000/events HTTP/1.1\r\nHost: x\r\nConnection: "
          "close\r\n\r\n");
  BOOST_TEST(missing.starts_with("HTTP/1.1 404 Not Found\r\n"));
  const auto old = raw("GET /v1/runs/" + id + "/streams/out?from=6 HTTP/1.0\r\n\r\n");
  BOOST_TEST(old.starts_with("HTTP/1.0 200 OK\r\n"));
  BOOST_TEST(old.find("Transfer-Encoding") == std::string::npos);
  BOOST_TEST(old.ends_with(
      "\r\n\r\nretry: 1000\n\nid: 6\ndata: \"c6\"\n\nid: 7\ndata: \"c7\"\n\nevent: end\ndata: {}\n\n"));
}

BOOST_AUTO_TEST_CASE(live_events_bring_frames_and_follow_child_runs, *utf::timeout(60)) {
  served srv;
  // Subscribed from the log's end (?after=<a position past everything>) before the runs start: live only.
  auto top = srv.e.read_log_blocking(0);
  BOOST_REQUIRE(top);
  const auto past = top->events.empty() ? 0 : top->events.back().pos;
  sse_reader all(srv.s->port(), "/v1/events?workflow=steps&after=" + std::to_string(past));
  const auto id = srv.start("steps", R"({"input":{"n":4}})");
  srv.start("parent", "{}");  // another workflow: filtered out
  auto seen =
      all.read_until([](const sse_event& ev) { return ev.event.empty() && kind_of(ev) == "run_waiting"; });
  int frames = 0;
  for (const auto& ev : seen) {
    BOOST_TEST(ev.json().at("workflow").as_string() == "steps");
    if (ev.event == "frame") {
      ++frames;
      BOOST_TEST(!ev.id.has_value());  // frames are not durable: no position to resume from
      BOOST_TEST(ev.json().at("data").at("frame").at("left").is_int64());
    }
  }
  BOOST_TEST(frames == 4);
  client c(srv.s->port());
  c.send(bhttp::verb::post, "/v1/runs/" + id + "/events/go", "1");
  BOOST_TEST(!all.read_until(is_terminal).empty());

  // A parent's stream holds its child's events too.
  const auto parent = srv.start("parent", "{}");
  BOOST_REQUIRE(wait_until([&] { return status_of(srv.e, parent) == "completed"; }, 10s));
  sse_reader tree(srv.s->port(), "/v1/runs/" + parent + "/events");
  auto events = tree.read_until([&](const sse_event& ev) {
    return ev.event.empty() && kind_of(ev) == "run_completed" && ev.json().at("run_id").as_string() == parent;
  });
  std::set<std::string> runs;
  for (const auto& ev : events)
    runs.insert(std::string(ev.json().at("run_id").as_string()));
  BOOST_TEST(runs.size() == 2u);
  BOOST_TEST(ids_of(events) == log_positions(srv.e, parent), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(an_output_stream_resumes_at_the_next_chunk_and_ends_when_closed, *utf::timeout(60)) {
  served srv;
  const auto id = srv.start("writer", "{}");
  BOOST_REQUIRE(wait_until([&] { return status_of(srv.e, id) == "waiting"; }, 10s));
  {
    sse_reader r(srv.s->port(), "/v1/runs/" + id + "/streams/out?from=1");
    BOOST_TEST(r.status == 200);
    auto got = r.read_until([](const sse_event& ev) { return ev.id == "4"; });
    BOOST_REQUIRE(got.size() == 4u);
    BOOST_TEST(got.front().id.value_or("") == "1");
    BOOST_TEST(got.front().json() == json::value("c1"));
  }
  sse_reader r(srv.s->port(), "/v1/runs/" + id + "/streams/out", {{"Last-Event-ID", "2"}});
  auto before = r.read_until([](const sse_event& ev) { return ev.id == "4"; });
  BOOST_REQUIRE(before.size() == 2u);
  BOOST_TEST(before.front().id.value_or("") == "3");
  client c(srv.s->port());
  c.send(bhttp::verb::post, "/v1/runs/" + id + "/events/more", "1");
  auto after = r.read_until([](const sse_event& ev) { return ev.event == "end"; });
  BOOST_REQUIRE(after.size() == 4u);
  BOOST_TEST(after[0].id.value_or("") == "5");
  BOOST_TEST(after[2].json() == json::value("c7"));
  BOOST_TEST(after[3].event == "end");
  BOOST_TEST(!r.read().has_value());  // and the response ends
}

BOOST_AUTO_TEST_CASE(curl_follows_a_stream_with_last_event_id, *utf::timeout(60)) {
  served srv;
  const auto id = srv.start("writer", "{}");
  BOOST_REQUIRE(wait_until([&] { return status_of(srv.e, id) == "waiting"; }, 10s));
  client c(srv.s->port());
  c.send(bhttp::verb::post, "/v1/runs/" + id + "/events/more", "1");
  BOOST_REQUIRE(wait_until([&] { return status_of(srv.e, id) == "completed"; }, 10s));
  const std::string cmd =
      "curl -sN --max-time 10 -H 'Last-Event-ID: 5' http://127.0.0.1:" + std::to_string(srv.s->port()) +
      "/v1/runs/" + id + "/streams/out";
  std::FILE* p = popen(cmd.c_str(), "r");
  BOOST_REQUIRE(p != nullptr);
  std::string out;
  char buf[4096];
  while (auto n = std::fread(buf, 1, sizeof buf, p))
    out.append(buf, n);
  BOOST_TEST(pclose(p) == 0);
  BOOST_TEST(out == "retry: 1000\n\nid: 6\ndata: \"c6\"\n\nid: 7\ndata: \"c7\"\n\nevent: end\ndata: {}\n\n");
}

BOOST_AUTO_TEST_CASE(a_stalled_client_slows_no_run_and_loses_only_frames, *utf::timeout(120)) {
  http::server_options o;
  o.max_queued_events = 50;
  served srv(o);
  // A client that asks for every event from the start, and stops reading (a small receive window).
  sse_reader stalled(srv.s->port(), "/v1/events?workflow=chatty&after=0", {}, 4096);
  std::vector<std::string> ids;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i)
    ids.push_back(srv.start("chatty", "{}"));
  for (const auto& id : ids)
    BOOST_REQUIRE(wait_until([&] { return status_of(srv.e, id) == "completed"; }, 30s));
  const auto took = std::chrono::steady_clock::now() - t0;
  BOOST_TEST_MESSAGE("20 runs of 200 frames of 4 KiB with a stalled client: "
                     << std::chrono::duration<double>(took).count() << " s");
  BOOST_TEST((took < 30s));

  // The client reads again: every lifecycle event, in log order, once; frames it was too slow for are gone.
  read_log_options lo;
  lo.workflow = "chatty";
  auto log = srv.e.read_log_blocking(0, lo);
  BOOST_REQUIRE(log);
  std::vector<std::int64_t> expected;
  for (const auto& ev : log->events)
    expected.push_back(ev.pos);
  BOOST_REQUIRE(!expected.empty());
  std::vector<std::int64_t> ids_seen;
  int frames = 0;
  stalled.read_until([&](const sse_event& ev) {
    if (ev.event == "frame") ++frames;
    if (ev.id) ids_seen.push_back(std::stoll(*ev.id));
    return !ids_seen.empty() && ids_seen.back() >= expected.back();
  });
  BOOST_TEST_MESSAGE(
      "frames delivered: " << frames << " of 4000; counted as dropped: " << srv.s->stats().dropped_frames);
  BOOST_TEST(srv.s->stats().dropped_frames > 0);
  BOOST_TEST(ids_seen == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(an_idle_stream_gets_heartbeats_and_a_stop_ends_it_at_once, *utf::timeout(60)) {
  http::server_options o;
  o.heartbeat_interval = 200ms;
  served srv(o);
  sse_reader r(srv.s->port(), "/v1/events");
  std::thread reader([&] {
    while (r.read()) {
    }
  });
  std::this_thread::sleep_for(1s);
  const auto t0 = std::chrono::steady_clock::now();
  srv.s->stop_blocking(10s);
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < 2s));  // not the deadline
  reader.join();
  BOOST_TEST(r.comments >= 3);
}

BOOST_AUTO_TEST_CASE(bad_stream_requests_get_typed_errors, *utf::timeout(60)) {
  served srv;
  const auto id = srv.start("leaf", R"({"input":1})");
  struct bad {
    std::string target;
    std::vector<std::pair<std::string, std::string>> headers;
    int status;
    std::string code;
  };
  const std::vector<bad> cases{
      {"/v1/runs/" + id + "/events", {{"Last-Event-ID", "x1"}}, 400, "invalid_request"},
      {"/v1/runs/" + id + "/events?after=-1", {}, 400, "invalid_request"},
      {"/v1/runs/" + id + "/events?bogus=1", {}, 400, "invalid_request"},
      {"/v1/events?after=1&after=2", {}, 400, "invalid_request"},
      {"/v1/events?frames=maybe", {}, 400, "invalid_request"},
      {"/v1/events?workflow=" + std::string(300, 'w'), {}, 400, "invalid_request"},
      {"/v1/events?workflow=%FF", {}, 400, "invalid_request"},
      {"/v1/runs/" + id + "/streams/out", {{"Last-Event-ID", "9223372036854775807"}}, 400, "invalid_request"},
      {"/v1/runs/not-a-uuid/events", {}, 400, "invalid_run_id"},
      {"/v1/runs/00000000-0000-4000-8000-000000000000/events", {}, 404, "run_not_found"},
      {"/v1/runs/00000000-0000-4000-8000-000000000000/streams/out", {}, 404, "run_not_found"},
      {"/v1/runs/" + id + "/streams/out?from=x", {}, 400, "invalid_request"},
      {"/v1/runs/" + id + "/streams/" + std::string(300, 's'), {}, 400, "invalid_request"},
  };
  for (const auto& b : cases) {
    BOOST_TEST_CONTEXT(b.target) {
      sse_reader r(srv.s->port(), b.target, b.headers);
      BOOST_TEST(r.status == b.status);
      auto body = r.error_body();
      BOOST_TEST(body.at("error").at("code").as_string() == b.code);
    }
  }
  client c(srv.s->port());
  auto post = c.send(bhttp::verb::post, "/v1/events");
  BOOST_TEST(post.status == 405);
  BOOST_TEST(post.raw[bhttp::field::allow] == "GET");
}

BOOST_AUTO_TEST_SUITE_END()
