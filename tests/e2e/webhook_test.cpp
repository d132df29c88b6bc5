// Webhooks that receive whole requests (ctx.create_webhook), over keeld's HTTP front end with a real client:
// a Stripe-style signed request verified by the workflow itself, answers from a step, static answers, the
// 202 after the response timeout, a sender's retry, and a typed error for every request a webhook refuses.
#define BOOST_TEST_MODULE webhooks
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <boost/json.hpp>
#include <chrono>
#include <string>
#include <thread>

#include "engine_fixture.hpp"
#include "http_client.hpp"
#include "keel/engine/webhook_signature.hpp"
#include "keel/http/server.hpp"
#include "served_engine.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;
namespace bhttp = boost::beast::http;

namespace {

constexpr std::string_view k_stripe_secret = "whsec_test_5f1c0e";

/// A Stripe-style payment flow: the webhook's URL is handed to the payment provider; its event comes back
/// signed (Stripe-Signature), the workflow verifies the signature over the exact bytes, answers 200 (or 400
/// for a forgery, and stops) and goes on with the event.
asio::awaitable<json::value> payment(context& ctx, json::value) {
  webhook_options options;
  options.response_timeout = 10s;
  auto paid = co_await ctx.create_webhook("payment", options);
  auto request = co_await paid.wait();
  if (!request) co_return json::value("expired");
  auto verify = [&request]() -> json::value {
    const auto header = request->header("stripe-signature");  // names compare case-insensitively
    if (!header) return "unsigned";
    auto ok = verify_webhook_signature(*header, request->body, k_stripe_secret);
    return ok ? json::value("valid") : json::value(ok.error().message());
  };
  const json::value verdict = co_await ctx.step("verify", verify);
  webhook_response answer;
  answer.status = verdict == "valid" ? 200 : 400;
  answer.headers = {{"Content-Type", "application/json"}};
  answer.body = verdict == "valid" ? R"({"received":true})" : R"({"error":"bad signature"})";
  co_await paid.respond(answer);
  if (verdict != "valid") co_return json::object{{"rejected", verdict}};
  const auto event = request->json();
  co_return json::object{{"method", request->method}, {"type", event ? event->at("type") : json::value()}};
}

/// A webhook answered at once with a fixed response: the workflow records what came.
asio::awaitable<json::value> inbound(context& ctx, json::value) {
  webhook_options options;
  options.respond_with = webhook_response{204, {{"X-Ack", "yes"}}, ""};
  auto inbox = co_await ctx.create_webhook("inbox", options);
  auto request = co_await inbox.wait();
  const auto& r = *request;
  std::string bytes;
  for (const unsigned char c : r.body)
    bytes += std::to_string(c) + " ";
  co_return json::object{
      {"method", r.method},
      {"path", r.path},
      {"query", r.query},
      {"custom", r.header("x-custom") ? json::value(*r.header("x-custom")) : json::value()},
      {"bytes", bytes}};
}

/// A webhook whose answer comes only after an event: the first request gets 202 after the timeout; a retry
/// of the same request, once the run answered, gets the answer.
asio::awaitable<json::value> slow_answer(context& ctx, json::value) {
  webhook_options options;
  options.response_timeout = 300ms;
  auto slow = co_await ctx.create_webhook("slow", options);
  auto request = co_await slow.wait();
  co_await ctx.wait_for_event("go");
  webhook_response answer{201, {}, "done: " + request->body};
  co_await slow.respond(answer);
  co_await ctx.wait_for_event("finish");
  co_return json::value("answered");
}

/// An answer HTTP cannot carry (a body on 204) is the workflow's mistake: refused when the webhook is made.
asio::awaitable<json::value> bad_answer(context& ctx, json::value) {
  webhook_options options;
  options.respond_with = webhook_response{204, {}, "no body allowed"};
  auto never = co_await ctx.create_webhook("never", options);
  co_return json::value(never.path());
}

/// A webhook whose run answers late: a request waits for up to a minute.
asio::awaitable<json::value> late_answer(context& ctx, json::value) {
  webhook_options options;
  options.response_timeout = std::chrono::minutes(1);
  auto late = co_await ctx.create_webhook("late", options);
  auto request = co_await late.wait();
  co_await ctx.wait_for_event("answer");
  co_return json::value(request->body);
}

asio::awaitable<json::value> plain_hook(context& ctx, json::value) {
  auto h = co_await ctx.create_hook("approve");
  auto payload = co_await h.wait();
  co_return payload ? *payload : json::value();
}

struct served : served_engine {
  served() : served_engine(register_workflows, http::server_options{}) {}
  static void register_workflows(engine& e) {
    add_workflow(e, "payment", payment);
    add_workflow(e, "inbound", inbound);
    add_workflow(e, "slow_answer", slow_answer);
    add_workflow(e, "plain_hook", plain_hook);
    add_workflow(e, "bad_answer", bad_answer);
    add_workflow(e, "late_answer", late_answer);
  }
};

json::value run_of(client& c, const std::string& id) {
  return c.send(bhttp::verb::get, "/v1/runs/" + id).body;
}

std::string start(client& c, const std::string& workflow) {
  return std::string(
      c.send(bhttp::verb::post, "/v1/workflows/" + workflow + "/runs", "{}").body.at("id").as_string());
}

/// The path of the run's open (web)hook, once the run waits on it.
std::string hook_path(client& c, const std::string& id) {
  std::string path;
  BOOST_REQUIRE(wait_until(
      [&] {
        const auto run = run_of(c, id);
        if (run.at("status") != "waiting" || run.at("hooks").as_array().empty()) return false;
        path = std::string(run.at("hooks").at(0).at("path").as_string());
        return true;
      },
      10s));
  return path;
}

json::value output_when_done(client& c, const std::string& id) {
  BOOST_REQUIRE(wait_until([&] { return run_of(c, id).at("status") == "completed"; }, 10s));
  return run_of(c, id).at("output");
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(a_stripe_signed_request_is_verified_by_the_workflow_and_answered_from_a_step,
                     *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  const std::string body =
      R"({"id":"evt_1Q","object":"event","type":"payment_intent.succeeded","data":{"object":{"amount":2000}}})";

  const auto good = start(c, "payment");
  const auto path = hook_path(c, good);
  BOOST_TEST(path.starts_with("/v1/webhooks/"));
  const auto signature = webhook_signature(k_stripe_secret, body, unix_now());
  auto answered = c.send(bhttp::verb::post, path, body, {{"Stripe-Signature", signature}});
  BOOST_TEST(answered.status == 200);
  BOOST_TEST(answered.raw[bhttp::field::content_type] == "application/json");
  BOOST_TEST(answered.body == json::parse(R"({"received":true})"));
  BOOST_TEST(output_when_done(c, good) ==
             json::parse(R"({"method":"POST","type":"payment_intent.succeeded"})"));

  // A forgery: the same signature over a changed body. The workflow sees it does not verify.
  const auto forged = start(c, "payment");
  const auto forged_path = hook_path(c, forged);
  std::string tampered = body;
  tampered.replace(tampered.find("2000"), 4, "9999");
  auto refused = c.send(bhttp::verb::post, forged_path, tampered, {{"Stripe-Signature", signature}});
  BOOST_TEST(refused.status == 400);
  BOOST_TEST(refused.body == json::parse(R"({"error":"bad signature"})"));
  BOOST_TEST(output_when_done(c, forged).at("rejected") ==
             "the signature header is malformed or matches no secret");

  // A signature older than the tolerance is refused too.
  const auto stale = start(c, "payment");
  auto old = c.send(bhttp::verb::post, hook_path(c, stale), body,
                    {{"Stripe-Signature", webhook_signature(k_stripe_secret, body, unix_now() - 3600)}});
  BOOST_TEST(old.status == 400);
  BOOST_TEST(output_when_done(c, stale).at("rejected") ==
             "the signature's timestamp is outside the tolerance");
}

BOOST_AUTO_TEST_CASE(any_method_path_query_headers_and_binary_body_reach_the_run, *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  const auto id = start(c, "inbound");
  const auto path = hook_path(c, id);
  const std::string binary("\x00\xff\x10 ok", 6);
  auto r = c.send(bhttp::verb::put, path + "/orders/7?x=1&y=%20", binary,
                  {{"Content-Type", "application/octet-stream"}, {"X-Custom", "42"}});
  BOOST_TEST(r.status == 204);  // respond_with, at once
  BOOST_TEST(r.raw["X-Ack"] == "yes");
  const auto out = output_when_done(c, id);
  BOOST_TEST(out.at("method") == "PUT");
  BOOST_TEST(out.at("path") == "/orders/7");
  BOOST_TEST(out.at("query") == "x=1&y=%20");
  BOOST_TEST(out.at("custom") == "42");
  BOOST_TEST(out.at("bytes") == "0 255 16 32 111 107 ");
  // The token is never stored: the recorded request holds only what followed it.
  const auto run = run_of(c, id);
  const auto token = path.substr(std::string("/v1/webhooks/").size());
  BOOST_TEST(json::serialize(run).find(token) == std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_request_the_run_does_not_answer_in_time_gets_202_and_its_retry_the_answer,
                     *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  const auto id = start(c, "slow_answer");
  const auto path = hook_path(c, id);
  const auto began = std::chrono::steady_clock::now();
  auto first = c.send(bhttp::verb::post, path, R"({"n":1})");
  BOOST_TEST(first.status == 202);
  BOOST_TEST(first.body.at("run_id").as_string() == id);
  BOOST_TEST((std::chrono::steady_clock::now() - began >= 300ms));
  // Another request to a webhook that took one: refused, whatever it holds.
  auto other = c.send(bhttp::verb::post, path, R"({"n":2})");
  BOOST_TEST(other.status == 409);
  BOOST_TEST(other.code() == "hook_already_resumed");
  BOOST_TEST(c.send(bhttp::verb::post, "/v1/runs/" + id + "/events/go", "{}").status == 202);
  BOOST_REQUIRE(wait_until(
      [&] {
        const auto run = run_of(c, id);  // named: a range-for does not keep a temporary's member alive
        for (const auto& step : run.at("steps").as_array())
          if (step.at("name") == "keel.webhook_respond:slow") return true;
        return false;
      },
      10s));
  // The sender's retry of the first request gets the answer the run sent meanwhile, at once — its headers
  // may differ (a retry counter, a new signature timestamp): the method, path, query and body are the same.
  auto retry = c.send(bhttp::verb::post, path, R"({"n":1})", {{"X-Retry-Num", "1"}});
  BOOST_TEST(retry.status == 201);
  BOOST_TEST(retry.raw.body() == R"(done: {"n":1})");
  BOOST_TEST(c.send(bhttp::verb::post, "/v1/runs/" + id + "/events/finish", "{}").status == 202);
  BOOST_TEST(output_when_done(c, id) == "answered");
  // Once the run finished, a retry still gets the same answer; another request is refused.
  auto late = c.send(bhttp::verb::post, path, R"({"n":1})");
  BOOST_TEST(late.status == 201);
  BOOST_TEST(late.raw.body() == R"(done: {"n":1})");
  BOOST_TEST(c.send(bhttp::verb::post, path, R"({"n":3})").status == 409);
}

BOOST_AUTO_TEST_CASE(requests_a_webhook_cannot_take_get_typed_errors, *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  auto unknown = c.send(bhttp::verb::post, "/v1/webhooks/no-such-token", "{}");
  BOOST_TEST(unknown.status == 404);
  BOOST_TEST(unknown.code() == "hook_not_found");
  // An answer HTTP cannot carry fails the run that would give it, with what is wrong.
  const auto bad = start(c, "bad_answer");
  BOOST_REQUIRE(wait_until([&] { return run_of(c, bad).at("status") == "failed"; }, 10s));
  const auto error = run_of(c, bad).at("error");
  BOOST_TEST(error.at("code") == "invalid_argument");
  BOOST_TEST(error.at("message").as_string().find("a 204 answer has no body") != std::string::npos, error);
  // A plain hook's token does not make a webhook, nor a webhook's a hook.
  const auto approval = start(c, "plain_hook");
  const auto hook = hook_path(c, approval);
  const auto hook_token = hook.substr(std::string("/v1/hooks/").size());
  BOOST_TEST(c.send(bhttp::verb::post, "/v1/webhooks/" + hook_token, "{}").code() == "hook_not_found");
  const auto pay = start(c, "payment");
  const auto webhook = hook_path(c, pay);
  const auto webhook_token = webhook.substr(std::string("/v1/webhooks/").size());
  BOOST_TEST(c.send(bhttp::verb::post, "/v1/hooks/" + webhook_token, "{}").code() == "hook_not_found");
  // A webhook is a machine's endpoint: not in the inbox of decisions for people.
  const auto inbox = c.send(bhttp::verb::get, "/v1/hooks").body.at("hooks").as_array();
  BOOST_TEST(inbox.size() == 1u);
  BOOST_TEST(inbox.at(0).at("run_id").as_string() == approval);
  // Over the server's body limit: refused before it reaches the run, which still takes a good request.
  auto huge = c.send(bhttp::verb::post, webhook, std::string(2 * 1024 * 1024, 'x'));
  BOOST_TEST(huge.status == 413);
  client again(srv.s->port());
  const std::string body = R"({"type":"ok"})";
  auto ok = again.send(bhttp::verb::post, webhook, body,
                       {{"Stripe-Signature", webhook_signature(k_stripe_secret, body, unix_now())}});
  BOOST_TEST(ok.status == 200);
}

BOOST_AUTO_TEST_CASE(a_server_stopping_answers_waiting_requests_202_at_once, *utf::timeout(60)) {
  std::optional<served> srv(std::in_place);
  client c(srv->s->port());
  const auto id = start(c, "late_answer");
  const auto path = hook_path(c, id);
  client waiting(srv->s->port());
  std::optional<reply> answered;
  std::thread sender([&] { answered = waiting.send(bhttp::verb::post, path, "kept"); });
  // The run took the request (it waits for its event now), and the sender waits for the answer.
  BOOST_REQUIRE(wait_until(
      [&] {
        const auto run = run_of(c, id);
        return run.at("status") == "waiting" && run.at("waiting_for").at("kind") == "event";
      },
      10s));
  const auto began = std::chrono::steady_clock::now();
  srv->s->stop_blocking();
  sender.join();
  BOOST_TEST((std::chrono::steady_clock::now() - began < 10s));  // not the minute the request could wait
  BOOST_REQUIRE(answered);
  BOOST_TEST(answered->status == 202);
  BOOST_TEST(answered->body.at("run_id").as_string() == id);
}

BOOST_AUTO_TEST_SUITE_END()
