// Published events and debounced starts over the HTTP API with a real client on loopback: POST
// /v1/events/{name} starts each workflow that declares the event (once per Idempotency-Key) and cancels the
// runs a cancel_on rule matches; a start with debounce_key and debounce_ms collapses into the queued run; a
// start with a concurrency key waits while its key is full, and shows so.
#define BOOST_TEST_MODULE http_events
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <string>

#include "http_client.hpp"
#include "served_engine.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;
namespace bhttp = boost::beast::http;

namespace {

struct served : served_engine {
  explicit served(http::server_options o = {}) : served_engine(register_workflows, std::move(o)) {}
  static void register_workflows(engine& e) {
    workflow_definition fulfil{"fulfil",         1,  {},           nullptr,      {},
                               {"order.placed"}, {}, std::nullopt, std::nullopt, std::nullopt,
                               std::nullopt};
    fulfil.body = [](context& ctx, json::value in) -> asio::awaitable<json::value> {
      auto step = [in] { return in; };
      co_return co_await ctx.step("ship", step);
    };
    e.register_workflow(fulfil);
    workflow_definition onboarding{"onboarding",
                                   1,
                                   {},
                                   nullptr,
                                   {},
                                   {},
                                   {{"user.deleted", "/user_id", ""}},
                                   std::nullopt,
                                   std::nullopt,
                                   std::nullopt,
                                   std::nullopt};
    onboarding.body = [](context& ctx, json::value) -> asio::awaitable<json::value> {
      auto verified = co_await ctx.wait_for_event("verified");
      co_return verified ? *verified : json::value(nullptr);
    };
    e.register_workflow(onboarding);
    workflow_definition gate{
        "gate",       1,           {}, nullptr, {}, {}, {}, std::nullopt, concurrency_rule{1, "/account"},
        std::nullopt, std::nullopt};
    gate.body = [](context& ctx, json::value in) -> asio::awaitable<json::value> {
      auto hold = []() -> asio::awaitable<int> {
        co_await async_sleep(1500ms);
        co_return 1;
      };
      co_await ctx.step("hold", hold);
      co_return in;
    };
    e.register_workflow(gate);
  }
};

std::string text(const json::value& v) {
  return std::string(v.as_string());
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(an_event_starts_its_subscribers_once_per_key_and_cancels_matching_runs,
                     *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  const auto first = c.send(bhttp::verb::post, "/v1/events/order.placed", R"({"order":1})",
                            {{"Idempotency-Key", "order-1"}});
  BOOST_TEST_INFO(first.raw.body());
  BOOST_REQUIRE(first.status == 202);
  BOOST_TEST(first.body.at("event") == "order.placed");
  const auto& started = first.body.at("started").as_array();
  BOOST_REQUIRE_EQUAL(started.size(), 1u);
  BOOST_TEST(started[0].at("workflow") == "fulfil");
  BOOST_TEST(started[0].at("created") == true);
  const auto run = text(started[0].at("run_id"));
  BOOST_REQUIRE(wait_until(
      [&] { return c.send(bhttp::verb::get, "/v1/runs/" + run).body.at("status") == "completed"; }, 10s));
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/runs/" + run).body.at("output").at("order") == 1);
  // A sender's retry: the same run, nothing new.
  const auto again = c.send(bhttp::verb::post, "/v1/events/order.placed", R"({"order":1})",
                            {{"Idempotency-Key", "order-1"}});
  BOOST_REQUIRE(again.status == 200);
  BOOST_TEST(text(again.body.at("started").at(0).at("run_id")) == run);
  BOOST_TEST(again.body.at("started").at(0).at("created") == false);
  const auto conflict = c.send(bhttp::verb::post, "/v1/events/order.placed", R"({"order":2})",
                               {{"Idempotency-Key", "order-1"}});
  BOOST_TEST(conflict.status == 409);
  BOOST_TEST(conflict.body.at("error").at("code") == "idempotency_conflict");

  // cancel_on: the run of user 7 goes, user 8's stays.
  auto start = [&](int user) {
    const auto r = c.send(bhttp::verb::post, "/v1/workflows/onboarding/runs",
                          R"({"input":{"user_id":)" + std::to_string(user) + "}}");
    BOOST_REQUIRE(r.status == 201);
    return text(r.body.at("id"));
  };
  const auto seven = start(7), eight = start(8);
  BOOST_REQUIRE(wait_until(
      [&] {
        return c.send(bhttp::verb::get, "/v1/runs/" + seven).body.at("status") == "waiting" &&
               c.send(bhttp::verb::get, "/v1/runs/" + eight).body.at("status") == "waiting";
      },
      10s));
  const auto deleted = c.send(bhttp::verb::post, "/v1/events/user.deleted", R"({"user_id":7})");
  BOOST_REQUIRE(deleted.status == 202);
  BOOST_TEST(deleted.body.at("started").as_array().empty());
  BOOST_REQUIRE_EQUAL(deleted.body.at("cancelled").as_array().size(), 1u);
  BOOST_TEST(text(deleted.body.at("cancelled").at(0)) == seven);
  BOOST_REQUIRE(wait_until(
      [&] { return c.send(bhttp::verb::get, "/v1/runs/" + seven).body.at("status") == "cancelled"; }, 10s));
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/runs/" + eight).body.at("status") == "waiting");
}

BOOST_AUTO_TEST_CASE(bad_event_requests_get_typed_errors, *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  const auto too_long = c.send(bhttp::verb::post, "/v1/events/" + std::string(256, 'e'), "{}");
  BOOST_TEST(too_long.status == 400);
  BOOST_TEST(too_long.body.at("error").at("code") == "invalid_request");
  const auto not_json = c.send(bhttp::verb::post, "/v1/events/order.placed", "{not json");
  BOOST_TEST(not_json.status == 400);
  const auto long_key = c.send(bhttp::verb::post, "/v1/events/order.placed", "{}",
                               {{"Idempotency-Key", std::string(300, 'k')}});
  BOOST_TEST(long_key.status == 400);
  const auto get = c.send(bhttp::verb::get, "/v1/events/order.placed");
  BOOST_TEST(get.status == 405);
  // Nobody declares it: accepted, nothing to do.
  const auto nobody = c.send(bhttp::verb::post, "/v1/events/nobody.listens", "null");
  BOOST_TEST(nobody.status == 202);
  BOOST_TEST(nobody.body.at("started").as_array().empty());
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/runs").body.at("runs").as_array().empty());
}

BOOST_AUTO_TEST_CASE(debounced_starts_collapse_into_the_queued_run, *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  const auto first = c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs",
                            R"({"input":{"n":1},"debounce_key":"cart-9","debounce_ms":60000})");
  BOOST_REQUIRE(first.status == 201);
  const auto second = c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs",
                             R"({"input":{"n":2},"debounce_key":"cart-9","debounce_ms":60000})");
  BOOST_REQUIRE(second.status == 200);
  BOOST_TEST(second.body.at("id") == first.body.at("id"));
  BOOST_TEST(second.body.at("input").at("n") == 2);
  BOOST_TEST(second.body.at("status") == "queued");
  for (const char* bad : {R"({"input":{},"debounce_key":"k","debounce_ms":0})",
                          R"({"input":{},"debounce_key":"k","debounce_ms":"soon"})",
                          R"({"input":{},"debounce_key":7,"debounce_ms":1000})",
                          R"({"input":{},"debounce_key":"k"})", R"({"input":{},"debounce_ms":1000})",
                          R"({"input":{},"debounce_key":"k","debounce_ms":1000,"idempotency_key":"x"})"}) {
    const auto r = c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs", bad);
    BOOST_TEST(r.status == 400, bad);
    BOOST_TEST(r.body.at("error").at("code") == "invalid_request", bad);
  }
}

BOOST_AUTO_TEST_CASE(a_start_waits_for_its_concurrency_key_and_shows_it, *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  const auto first = c.send(bhttp::verb::post, "/v1/workflows/gate/runs", R"({"input":{"account":"a-1"}})");
  BOOST_REQUIRE(first.status == 201);
  const std::string first_path = "/v1/runs/" + text(first.body.at("id"));
  BOOST_REQUIRE(
      wait_until([&] { return c.send(bhttp::verb::get, first_path).body.at("status") == "running"; }, 10s));
  const auto second = c.send(bhttp::verb::post, "/v1/workflows/gate/runs", R"({"input":{"account":"a-1"}})");
  BOOST_REQUIRE(second.status == 201);
  const std::string second_path = "/v1/runs/" + text(second.body.at("id"));
  // The key is full (limit 1): the second run is parked until the first frees its slot, and says so.
  BOOST_REQUIRE(wait_until(
      [&] {
        const auto r = c.send(bhttp::verb::get, second_path);
        return r.body.at("concurrency").is_object() && r.body.at("concurrency").at("waiting") == true;
      },
      10s));
  const auto waiting = c.send(bhttp::verb::get, second_path).body;
  BOOST_TEST(waiting.at("status") == "queued");
  BOOST_TEST(waiting.at("concurrency").at("key") == "a-1");
  BOOST_TEST(waiting.at("concurrency").at("limit") == 1);
  BOOST_REQUIRE(wait_until(
      [&] { return c.send(bhttp::verb::get, second_path).body.at("status") == "completed"; }, 20s));
  BOOST_TEST(c.send(bhttp::verb::get, second_path).body.at("concurrency").at("waiting") == false);
  // A key and limit given by the start, on a workflow without a rule.
  const auto own = c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs",
                          R"({"input":{},"concurrency_key":"partner","concurrency_limit":2})");
  BOOST_REQUIRE(own.status == 201);
  BOOST_TEST(own.body.at("concurrency").at("key") == "partner");
  BOOST_TEST(own.body.at("concurrency").at("limit") == 2);
  BOOST_TEST(c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs", "{}").body.at("concurrency").is_null());
  for (const char* bad : {R"({"input":{},"concurrency_key":"k","concurrency_limit":0})",
                          R"({"input":{},"concurrency_key":"k","concurrency_limit":10001})",
                          R"({"input":{},"concurrency_key":"k","concurrency_limit":"2"})",
                          R"({"input":{},"concurrency_key":7,"concurrency_limit":2})",
                          R"({"input":{},"concurrency_key":"no limit, no rule"})"}) {
    const auto r = c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs", bad);
    BOOST_TEST(r.status == 400, bad);
    BOOST_TEST(r.body.at("error").at("code") == "invalid_request", bad);
  }
}

BOOST_AUTO_TEST_CASE(a_throttled_start_waits_for_its_window_and_shows_it, *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  const std::string paced =
      R"({"input":{},"throttle_key":"api","throttle_limit":1,"throttle_window_ms":60000})";
  const auto first = c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs", paced);
  BOOST_REQUIRE(first.status == 201);
  BOOST_TEST(first.body.at("throttle").at("key") == "api");
  BOOST_TEST(first.body.at("throttle").at("window_ms") == 60000);
  const std::string first_path = "/v1/runs/" + text(first.body.at("id"));
  BOOST_REQUIRE(
      wait_until([&] { return c.send(bhttp::verb::get, first_path).body.at("status") == "completed"; }, 10s));
  // One start a minute: the second waits for the window to move, and says so.
  const auto second = c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs", paced);
  BOOST_REQUIRE(second.status == 201);
  const std::string second_path = "/v1/runs/" + text(second.body.at("id"));
  BOOST_REQUIRE(wait_until(
      [&] { return c.send(bhttp::verb::get, second_path).body.at("throttle").at("waiting") == true; }, 10s));
  BOOST_TEST(c.send(bhttp::verb::get, second_path).body.at("status") == "queued");
  for (const char* bad : {R"({"throttle_key":"k","throttle_limit":1})",
                          R"({"throttle_key":"k","throttle_limit":0,"throttle_window_ms":10})",
                          R"({"throttle_key":"k","throttle_limit":1,"throttle_window_ms":0})",
                          R"({"throttle_key":"k","throttle_limit":1,"throttle_window_ms":"1s"})"}) {
    const auto r = c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs", bad);
    BOOST_TEST(r.status == 400, bad);
    BOOST_TEST(r.body.at("error").at("code") == "invalid_request", bad);
  }
}

BOOST_AUTO_TEST_CASE(a_start_may_give_its_fairness_key_and_weight_and_bad_ones_are_refused,
                     *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  const auto started = c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs",
                              R"({"input":{"n":1},"fairness_key":"acme","fairness_weight":3})");
  BOOST_REQUIRE(started.status == 201);
  BOOST_TEST(started.body.at("fairness").at("key") == "acme");
  BOOST_TEST(started.body.at("fairness").at("weight") == 3);
  const std::string path = "/v1/runs/" + text(started.body.at("id"));
  BOOST_REQUIRE(
      wait_until([&] { return c.send(bhttp::verb::get, path).body.at("status") == "completed"; }, 10s));
  // The key alone: weight 1. No key: no fairness.
  const auto plain =
      c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs", R"({"input":{},"fairness_key":"b"})");
  BOOST_REQUIRE(plain.status == 201);
  BOOST_TEST(plain.body.at("fairness").at("weight") == 1);
  const auto none = c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs", R"({"input":{}})");
  BOOST_REQUIRE(none.status == 201);
  BOOST_TEST(none.body.at("fairness").is_null());
  for (const char* bad :
       {R"({"fairness_key":7})", R"({"fairness_key":"k","fairness_weight":0})",
        R"({"fairness_key":"k","fairness_weight":1001})", R"({"fairness_key":"k","fairness_weight":"2"})"}) {
    const auto r = c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs", bad);
    BOOST_TEST(r.status == 400, bad);
    BOOST_TEST(r.body.at("error").at("code") == "invalid_request", bad);
  }
  // A weight without a key (and no rule on the workflow) is refused, as is an oversize key.
  const auto weight_alone =
      c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs", R"({"input":{},"fairness_weight":2})");
  BOOST_TEST(weight_alone.status == 400);
  const auto long_key =
      c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs",
             std::string(R"({"input":{},"fairness_key":")").append(300, 'k').append(R"("})"));
  BOOST_TEST(long_key.status == 400);
}

BOOST_AUTO_TEST_CASE(a_start_carries_the_callers_traceparent_and_a_malformed_one_is_refused,
                     *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  const std::string tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const auto started =
      c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs", R"({"input":{}})", {{"traceparent", tp}});
  BOOST_REQUIRE(started.status == 201);
  BOOST_TEST(started.body.at("traceparent") == json::value(tp));
  const auto plain = c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs", R"({"input":{}})");
  BOOST_REQUIRE(plain.status == 201);
  BOOST_TEST(plain.body.at("traceparent").is_null());
  for (const std::string bad : {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "hello"}) {
    const auto r =
        c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs", R"({"input":{}})", {{"traceparent", bad}});
    BOOST_TEST(r.status == 400, bad);
    BOOST_TEST(r.body.at("error").at("code") == "invalid_traceparent", bad);
  }
}

BOOST_AUTO_TEST_CASE(a_page_of_another_origin_changes_nothing_but_its_own_and_allowed_ones_do,
                     *utf::timeout(60)) {
  http::server_options o;
  o.cors_origins = {"https://app.example"};
  served srv(o);
  client c(srv.s->port());
  const std::string host = "127.0.0.1:" + std::to_string(srv.s->port());
  // Another site's page (a simple cross-site POST needs no preflight): refused, nothing written.
  for (const char* origin : {"https://evil.example", "null", "http://127.0.0.1:1"}) {
    const auto event =
        c.send(bhttp::verb::post, "/v1/events/order.placed", "{}", {{"Origin", origin}, {"Host", host}});
    BOOST_TEST(event.status == 403, origin);
    BOOST_TEST(event.body.at("error").at("code") == "forbidden_origin", origin);
    const auto start =
        c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs", "{}", {{"Origin", origin}, {"Host", host}});
    BOOST_TEST(start.status == 403, origin);
  }
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/runs").body.at("runs").as_array().empty());
  // Reading is no change (the browser keeps the answer from the page without CORS headers); a hook's token
  // is its own authorisation.
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/runs", "", {{"Origin", "https://evil.example"}}).status == 200);
  BOOST_TEST(
      c.send(bhttp::verb::post, "/v1/hooks/not-a-token", "{}", {{"Origin", "https://evil.example"}}).status ==
      404);
  // The server's own pages (the dashboard) and the allowed origin may.
  const auto own = c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs", "{}",
                          {{"Origin", "http://" + host}, {"Host", host}});
  BOOST_TEST(own.status == 201);
  const auto allowed = c.send(bhttp::verb::post, "/v1/workflows/fulfil/runs", "{}",
                              {{"Origin", "https://app.example"}, {"Host", host}});
  BOOST_TEST(allowed.status == 201);
  BOOST_TEST(allowed.raw[bhttp::field::access_control_allow_origin] == "https://app.example");
}

BOOST_AUTO_TEST_SUITE_END()
