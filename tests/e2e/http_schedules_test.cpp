// Cron schedules over the HTTP API with a real client on loopback: create, repeat, change, read, list a page
// at a time, pause, resume, delete, and a typed error for every bad request (the cron parser's own message
// for a bad expression or zone). Firing is the engine's (tests/pg/schedules_test.cpp, process_test).
#define BOOST_TEST_MODULE http_schedules
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <boost/json.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "engine_fixture.hpp"
#include "http_client.hpp"
#include "keel/common/time_text.hpp"
#include "keel/http/server.hpp"
#include "served_engine.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;
namespace bhttp = boost::beast::http;

namespace {

/// An engine with two workflows (neither ever runs here: the schedules tested fire at most daily) and a
/// server on a free port.
struct served : served_engine {
  explicit served(http::server_options o = {}) : served_engine(register_workflows, std::move(o)) {}
  static void register_workflows(engine& e) {
    const wf_fn echo = [](context& ctx, json::value in) -> asio::awaitable<json::value> {
      auto step = [in] { return in; };
      co_return co_await ctx.step("echo", step);
    };
    add_workflow(e, "echo", echo);
    add_workflow(e, "report", echo);
  }
};

std::string text(const json::value& v) {
  return std::string(v.as_string());
}

std::chrono::system_clock::time_point time_of(const json::value& v) {
  const auto t = parse_rfc3339(v.as_string());
  BOOST_REQUIRE_MESSAGE(t.has_value(), "not an RFC 3339 time: " << json::serialize(v));
  return *t;
}

/// The message of the cron parser's refusal of `expression` in `zone`.
std::string cron_message(std::string_view expression, std::string_view zone) {
  auto parsed = cron_schedule::parse(expression, zone);
  BOOST_REQUIRE(!parsed);
  return parsed.error().message;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(a_schedule_is_created_repeated_changed_paused_resumed_and_deleted, *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  const std::string body =
      R"({"workflow":"echo","cron":" 0 3 * * * ","time_zone":"Europe/Paris","input":{"x":1}})";
  const auto before = std::chrono::system_clock::now();
  auto created = c.send(bhttp::verb::put, "/v1/schedules/nightly.echo:1", body);
  BOOST_TEST_INFO(created.raw.body());
  BOOST_REQUIRE(created.status == 201);
  BOOST_TEST(created.raw[bhttp::field::location] == "/v1/schedules/nightly.echo:1");
  const auto& s = created.body.as_object();
  BOOST_TEST(s.at("name") == "nightly.echo:1");
  BOOST_TEST(s.at("workflow") == "echo");
  BOOST_TEST(s.at("version").is_null());
  BOOST_TEST(s.at("cron") == "0 3 * * *");  // without its blanks, as the engine keeps it
  BOOST_TEST(s.at("time_zone") == "Europe/Paris");
  BOOST_TEST(s.at("input") == json::parse(R"({"x":1})"));
  BOOST_TEST(s.at("priority") == 0);
  BOOST_TEST(s.at("catch_up") == 0);
  BOOST_TEST(s.at("paused") == false);
  BOOST_TEST(s.at("changed") == true);
  BOOST_TEST(s.at("last_fired_at").is_null());
  BOOST_TEST(s.at("last_run").is_null());
  // Times as the run JSON shows them (RFC 3339, UTC, microseconds); the next five firings, from the next.
  BOOST_TEST(text(s.at("created_at")).ends_with("Z"));
  BOOST_TEST(text(s.at("created_at")).size() == std::string("2026-11-26T09:00:00.123456Z").size());
  time_of(s.at("updated_at"));
  const auto next = time_of(s.at("next_fire_at"));
  BOOST_TEST((next > before && next <= before + 25h));
  const auto& upcoming = s.at("upcoming").as_array();
  BOOST_REQUIRE(upcoming.size() == 5u);
  BOOST_TEST(upcoming[0] == s.at("next_fire_at"));
  const auto expected = cron_schedule::parse("0 3 * * *", "Europe/Paris")->next_n(next - 1us, 5);
  for (std::size_t i = 0; i < 5; ++i)
    BOOST_TEST(text(upcoming[i]) == rfc3339(expected[i]));

  // The same definition again: 200, nothing changed (a deploy that puts its schedules on every start).
  auto repeat = c.send(bhttp::verb::put, "/v1/schedules/nightly.echo:1", body);
  BOOST_TEST(repeat.status == 200);
  BOOST_TEST(repeat.body.at("changed") == false);
  BOOST_TEST(repeat.body.at("updated_at") == s.at("updated_at"));
  BOOST_TEST(repeat.raw.count(bhttp::field::location) == 0u);
  // Another definition: 200, changed. Every optional field given.
  auto changed =
      c.send(bhttp::verb::put, "/v1/schedules/nightly.echo:1",
             R"({"workflow":"echo","cron":"@hourly","input":[2],"version":1,"priority":-3,"catch_up":1000})");
  BOOST_TEST_INFO(changed.raw.body());
  BOOST_TEST(changed.status == 200);
  BOOST_TEST(changed.body.at("changed") == true);
  BOOST_TEST(changed.body.at("cron") == "@hourly");
  BOOST_TEST(changed.body.at("time_zone") == "UTC");  // the default
  BOOST_TEST(changed.body.at("version") == 1);
  BOOST_TEST(changed.body.at("priority") == -3);
  BOOST_TEST(changed.body.at("catch_up") == 1000);
  BOOST_TEST(changed.body.at("input") == json::parse("[2]"));
  BOOST_TEST((time_of(changed.body.at("next_fire_at")) <= std::chrono::system_clock::now() + 1h));

  auto got = c.send(bhttp::verb::get, "/v1/schedules/nightly.echo:1");
  BOOST_TEST(got.status == 200);
  BOOST_TEST(got.body.at("cron") == "@hourly");
  BOOST_TEST(!got.body.as_object().contains("changed"));
  BOOST_TEST(got.body.at("upcoming").as_array().size() == 5u);

  auto paused = c.send(bhttp::verb::post, "/v1/schedules/nightly.echo:1/pause");
  BOOST_TEST(paused.status == 200);
  BOOST_TEST(paused.body.at("paused") == true);
  BOOST_TEST(paused.body.at("upcoming").as_array().empty());
  BOOST_TEST(c.send(bhttp::verb::post, "/v1/schedules/nightly.echo:1/pause").body.at("paused") == true);
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/schedules/nightly.echo:1").body.at("paused") == true);
  // A put leaves paused as it was.
  BOOST_TEST(c.send(bhttp::verb::put, "/v1/schedules/nightly.echo:1", body).body.at("paused") == true);
  auto resumed = c.send(bhttp::verb::post, "/v1/schedules/nightly.echo:1/resume");
  BOOST_TEST(resumed.status == 200);
  BOOST_TEST(resumed.body.at("paused") == false);
  BOOST_TEST(resumed.body.at("upcoming").as_array().size() == 5u);
  BOOST_TEST((time_of(resumed.body.at("next_fire_at")) > std::chrono::system_clock::now()));

  auto deleted = c.send(bhttp::verb::delete_, "/v1/schedules/nightly.echo:1");
  BOOST_TEST(deleted.status == 204);
  BOOST_TEST(deleted.raw.body().empty());
  for (const auto& [method, target] : std::vector<std::pair<bhttp::verb, std::string>>{
           {bhttp::verb::get, "/v1/schedules/nightly.echo:1"},
           {bhttp::verb::delete_, "/v1/schedules/nightly.echo:1"},
           {bhttp::verb::post, "/v1/schedules/nightly.echo:1/pause"},
           {bhttp::verb::post, "/v1/schedules/nightly.echo:1/resume"}}) {
    BOOST_TEST_INFO(target);
    auto gone = c.send(method, target);
    BOOST_TEST(gone.status == 404);
    BOOST_TEST(gone.code() == "schedule_not_found");
  }
  // The connection served every answer, the 204 included.
  BOOST_TEST(c.send(bhttp::verb::get, "/healthz").status == 200);
}

BOOST_AUTO_TEST_CASE(schedules_are_listed_by_name_a_page_at_a_time_and_by_workflow, *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  const std::vector<std::string> names{"a-daily", "b.hourly", "c:weekly", "d_monthly", "e"};
  for (std::size_t i = 0; i < names.size(); ++i) {
    const std::string workflow = i % 2 == 0 ? "echo" : "report";
    const auto r = c.send(bhttp::verb::put, "/v1/schedules/" + names[i],
                          R"({"workflow":")" + workflow + R"(","cron":"0 0 1 1 *"})");
    BOOST_REQUIRE(r.status == 201);
  }
  std::vector<std::string> listed;
  std::string cursor;
  int pages = 0;
  for (; pages < 10; ++pages) {
    auto r = c.send(bhttp::verb::get, "/v1/schedules?limit=2" + (cursor.empty() ? "" : "&cursor=" + cursor));
    BOOST_REQUIRE(r.status == 200);
    const auto& page = r.body.at("schedules").as_array();
    BOOST_TEST(page.size() <= 2u);
    for (const auto& s : page) {
      listed.push_back(text(s.at("name")));
      BOOST_TEST(s.at("upcoming").as_array().size() == 5u);  // each with its next firings
      BOOST_TEST(s.at("cron") == "0 0 1 1 *");
    }
    if (r.body.at("next_cursor").is_null()) break;
    cursor = text(r.body.at("next_cursor"));
  }
  BOOST_TEST(pages == 2);
  BOOST_TEST(listed == names, boost::test_tools::per_element());
  // One workflow's.
  auto reports = c.send(bhttp::verb::get, "/v1/schedules?workflow=report");
  BOOST_REQUIRE(reports.status == 200);
  std::vector<std::string> report_names;
  for (const auto& s : reports.body.at("schedules").as_array())
    report_names.push_back(text(s.at("name")));
  BOOST_TEST(report_names == (std::vector<std::string>{"b.hourly", "d_monthly"}),
             boost::test_tools::per_element());
  BOOST_TEST(reports.body.at("next_cursor").is_null());
  auto none = c.send(bhttp::verb::get, "/v1/schedules?workflow=nothing");
  BOOST_TEST(none.status == 200);
  BOOST_TEST(none.body.at("schedules").as_array().empty());
  // The query parameters, checked as GET /v1/runs checks its own.
  for (const auto* bad : {"?limit=0", "?limit=1001", "?limit=x", "?cursor=a%20b",
                          "?cursor=", "?workflow=", "?limit=2&limit=3", "?status=paused"}) {
    BOOST_TEST_INFO(bad);
    auto r = c.send(bhttp::verb::get, std::string("/v1/schedules") + bad);
    BOOST_TEST(r.status == 400);
    BOOST_TEST(r.code() == "invalid_request");
  }
}

BOOST_AUTO_TEST_CASE(every_bad_schedule_request_gets_a_typed_error_with_what_is_wrong, *utf::timeout(60)) {
  http::server_options o;
  o.max_body_bytes = 4096;
  served srv(o);
  client c(srv.s->port());
  struct bad {
    bhttp::verb method;
    std::string target;
    std::string body;
    int status;
    std::string code;
    std::string message;  ///< the whole message ("" : only that there is one)
  };
  const std::string put = "/v1/schedules/ok";
  const std::vector<bad> table{
      // The cron parser's own words: which field, what value, what range.
      {bhttp::verb::put, put, R"({"workflow":"echo","cron":"61 * * * *"})", 400, "invalid_cron_expression",
       cron_message("61 * * * *", "UTC")},
      {bhttp::verb::put, put, R"({"workflow":"echo","cron":"0 9 * * mon-fri *"})", 400,
       "invalid_cron_expression", cron_message("0 9 * * mon-fri *", "UTC")},
      {bhttp::verb::put, put, R"({"workflow":"echo","cron":"@fortnightly"})", 400, "invalid_cron_expression",
       cron_message("@fortnightly", "UTC")},
      {bhttp::verb::put, put, R"({"workflow":"echo","cron":""})", 400, "invalid_cron_expression",
       cron_message("", "UTC")},
      {bhttp::verb::put, put, R"({"workflow":"echo","cron":"0 9 * * *","time_zone":"Mars/Base"})", 400,
       "unknown_time_zone", cron_message("0 9 * * *", "Mars/Base")},
      {bhttp::verb::put, put, R"({"workflow":"echo","cron":"0 9 * * *","time_zone":""})", 400,
       "unknown_time_zone", cron_message("0 9 * * *", "")},
      // The engine's checks.
      {bhttp::verb::put, put, R"({"workflow":"nope","cron":"0 9 * * *"})", 404, "unknown_workflow", ""},
      {bhttp::verb::put, put, R"({"workflow":"echo","cron":"0 9 * * *","version":7})", 404,
       "unknown_workflow", ""},
      // Names.
      {bhttp::verb::put, "/v1/schedules/bad%20name", R"({"workflow":"echo","cron":"0 9 * * *"})", 400,
       "invalid_request", "a schedule name is 1 to 200 ASCII letters, digits and '-', '_', '.', ':'"},
      {bhttp::verb::put, "/v1/schedules/a%2Fb", R"({"workflow":"echo","cron":"0 9 * * *"})", 400,
       "invalid_request", ""},
      {bhttp::verb::put, "/v1/schedules/" + std::string(201, 'n'),
       R"({"workflow":"echo","cron":"0 9 * * *"})", 400, "invalid_request", ""},
      {bhttp::verb::put, "/v1/schedules/caf%C3%A9", R"({"workflow":"echo","cron":"0 9 * * *"})", 400,
       "invalid_request", ""},
      {bhttp::verb::get, "/v1/schedules/bad%20name", "", 400, "invalid_request", ""},
      {bhttp::verb::delete_, "/v1/schedules/bad%20name", "", 400, "invalid_request", ""},
      {bhttp::verb::post, "/v1/schedules/bad%20name/pause", "", 400, "invalid_request", ""},
      // The body.
      {bhttp::verb::put, put, "", 400, "invalid_request", ""},
      {bhttp::verb::put, put, "[1]", 400, "invalid_request", ""},
      {bhttp::verb::put, put, "{\"workflow\":", 400, "invalid_request", ""},
      {bhttp::verb::put, put, R"({"workflow":"echo","cron":"0 9 * * *","paused":true})", 400,
       "invalid_request",
       "unknown field 'paused' (workflow, cron, time_zone, input, version, priority, catch_up)"},
      {bhttp::verb::put, put, R"({"cron":"0 9 * * *"})", 400, "invalid_request", ""},
      {bhttp::verb::put, put, R"({"workflow":"echo"})", 400, "invalid_request", ""},
      {bhttp::verb::put, put, R"({"workflow":"","cron":"0 9 * * *"})", 400, "invalid_request", ""},
      {bhttp::verb::put, put, R"({"workflow":"echo","cron":5})", 400, "invalid_request", ""},
      {bhttp::verb::put, put, R"({"workflow":"echo","cron":"0 9 * * *","time_zone":1})", 400,
       "invalid_request", ""},
      {bhttp::verb::put, put, R"({"workflow":"echo","cron":"0 9 * * *","catch_up":1001})", 400,
       "invalid_request", "catch_up must be an integer from 0 to 1000"},
      {bhttp::verb::put, put, R"({"workflow":"echo","cron":"0 9 * * *","catch_up":-1})", 400,
       "invalid_request", ""},
      {bhttp::verb::put, put, R"({"workflow":"echo","cron":"0 9 * * *","version":0})", 400, "invalid_request",
       ""},
      {bhttp::verb::put, put, R"({"workflow":"echo","cron":"0 9 * * *","priority":"high"})", 400,
       "invalid_request", ""},
      {bhttp::verb::put, put, R"({"workflow":"echo","cron":"0 9 * * *","priority":2147483648})", 400,
       "invalid_request", ""},
      // Paths and methods.
      {bhttp::verb::get, "/v1/schedules/none", "", 404, "schedule_not_found", ""},
      {bhttp::verb::post, "/v1/schedules/none", "", 405, "method_not_allowed", "use GET, PUT or DELETE here"},
      {bhttp::verb::put, "/v1/schedules", "{}", 405, "method_not_allowed", ""},
      {bhttp::verb::get, "/v1/schedules/none/pause", "", 405, "method_not_allowed", ""},
      {bhttp::verb::post, "/v1/schedules/none/stop", "", 404, "not_found", ""},
  };
  for (const auto& b : table) {
    auto r = c.send(b.method, b.target, b.body);
    BOOST_TEST_CONTEXT(bhttp::to_string(b.method) << " " << b.target << " " << b.body) {
      BOOST_TEST(r.status == b.status);
      BOOST_TEST(r.code() == b.code);
      const std::string message(r.body.at("error").at("message").as_string());
      BOOST_TEST(!message.empty());
      if (!b.message.empty()) BOOST_TEST(message == b.message);
    }
  }
  // Precise, and in words: the refused field and value are named.
  const auto minute = cron_message("61 * * * *", "UTC");
  BOOST_TEST(minute.find("minute") != std::string::npos);
  BOOST_TEST(minute.find("61") != std::string::npos);
  BOOST_TEST(cron_message("0 9 * * *", "Mars/Base").find("Mars/Base") != std::string::npos);
  // The 405 says which methods the path takes.
  auto wrong = c.send(bhttp::verb::post, "/v1/schedules/none");
  BOOST_TEST(wrong.raw[bhttp::field::allow] == "GET, PUT, DELETE");
  // Nothing was created by any of it.
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/schedules").body.at("schedules").as_array().empty());
  // An oversize body is refused before it is read, as everywhere, and that connection closes.
  auto big = c.send(bhttp::verb::put, put,
                    R"({"workflow":"echo","cron":"0 9 * * *","input":")" + std::string(8000, 'x') + "\"}");
  BOOST_TEST(big.status == 413);
  BOOST_TEST(big.code() == "payload_too_large");
  BOOST_TEST(!big.raw.keep_alive());
}

BOOST_AUTO_TEST_CASE(schedules_need_an_api_key_and_browsers_may_put_and_delete_them, *utf::timeout(60)) {
  http::server_options o;
  o.api_keys = {"a-key-for-schedules"};
  o.cors_origins = {"https://app.example"};
  served srv(o);
  client c(srv.s->port());
  const std::vector<std::pair<std::string, std::string>> key{{"Authorization", "Bearer a-key-for-schedules"}};
  const std::string body = R"({"workflow":"echo","cron":"*/5 * * * *"})";
  for (const auto& [method, target] :
       std::vector<std::pair<bhttp::verb, std::string>>{{bhttp::verb::get, "/v1/schedules"},
                                                        {bhttp::verb::put, "/v1/schedules/keyed"},
                                                        {bhttp::verb::get, "/v1/schedules/keyed"},
                                                        {bhttp::verb::post, "/v1/schedules/keyed/pause"},
                                                        {bhttp::verb::delete_, "/v1/schedules/keyed"}}) {
    BOOST_TEST_INFO(target);
    auto r = c.send(method, target, method == bhttp::verb::put ? body : "");
    BOOST_TEST(r.status == 401);
    BOOST_TEST(r.code() == "unauthorized");
  }
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/schedules", "", key).body.at("schedules").as_array().empty());
  BOOST_TEST(c.send(bhttp::verb::put, "/v1/schedules/keyed", body, key).status == 201);
  BOOST_TEST(c.send(bhttp::verb::post, "/v1/schedules/keyed/pause", "", key).status == 200);
  BOOST_TEST(c.send(bhttp::verb::delete_, "/v1/schedules/keyed", "", key).status == 204);
  // A page of another origin may PUT and DELETE once its preflight says so.
  for (const auto* method : {"PUT", "DELETE"}) {
    BOOST_TEST_INFO(method);
    const auto pre = c.send(bhttp::verb::options, "/v1/schedules/keyed", "",
                            {{"Origin", "https://app.example"}, {"Access-Control-Request-Method", method}});
    BOOST_TEST(pre.status == 204);
    BOOST_TEST(pre.raw[bhttp::field::access_control_allow_origin] == "https://app.example");
    BOOST_TEST(std::string(pre.raw[bhttp::field::access_control_allow_methods]).find(method) !=
               std::string::npos);
  }
}

BOOST_AUTO_TEST_SUITE_END()
