// The HTTP front end against what clients get wrong or try: a typed error for every bad request, garbage and
// silent clients, broken requests over a raw socket, signed hooks, API keys and CORS, 100-continue, HEAD,
// and a stop with connections open. Over loopback with real clients (Boost.Beast and raw sockets).
#define BOOST_TEST_MODULE http_protocol
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json.hpp>
#include <thread>

#include "engine_fixture.hpp"
#include "http_client.hpp"
#include "keel/http/server.hpp"
#include "served_engine.hpp"

#include "http_served.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using asio::ip::tcp;

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(every_bad_request_gets_a_typed_error_and_the_connection_stays_usable,
                     *utf::timeout(60)) {
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
  };
  const std::vector<bad> table{
      {bhttp::verb::post, "/v1/workflows/nope/runs", "{}", 404, "unknown_workflow"},
      {bhttp::verb::post, "/v1/workflows/echo/runs", "{\"input\":", 400, "invalid_request"},
      {bhttp::verb::post, "/v1/workflows/echo/runs", "[1]", 400, "invalid_request"},
      {bhttp::verb::post, "/v1/workflows/echo/runs", R"({"inptu":1})", 400, "invalid_request"},
      {bhttp::verb::post, "/v1/workflows/echo/runs", R"({"priority":"high"})", 400, "invalid_request"},
      {bhttp::verb::post, "/v1/workflows/echo/runs", R"({"run_at":"tomorrow"})", 400, "invalid_request"},
      {bhttp::verb::post, "/v1/workflows/echo/runs", R"({"idempotency_key":5})", 400, "invalid_request"},
      {bhttp::verb::post, "/v1/workflows/echo/runs", std::string(200, '[') + std::string(200, ']'), 400,
       "invalid_request"},
      {bhttp::verb::post, "/v1/workflows/echo/runs", "{\"input\":\"\xff\xfe\"}", 400, "invalid_request"},
      {bhttp::verb::get, "/v1/runs/not-a-uuid", "", 400, "invalid_run_id"},
      {bhttp::verb::get, "/v1/runs/0190d4a2-0000-7000-8000-000000000000", "", 404, "run_not_found"},
      {bhttp::verb::get, "/v1/nothing", "", 404, "not_found"},
      {bhttp::verb::get, "/v1/workflows/echo/runs", "", 405, "method_not_allowed"},
      {bhttp::verb::delete_, "/v1/runs/x", "", 405, "method_not_allowed"},
      {bhttp::verb::post, "/v1/runs/0190d4a2-0000-7000-8000-000000000000/rewind", R"({"step":"x"})", 400,
       "invalid_request"},
      {bhttp::verb::post, "/v1/runs/0190d4a2-0000-7000-8000-000000000000/retry", "", 404, "run_not_found"},
      {bhttp::verb::get, "/v1/runs/%zz", "", 400, "invalid_request"},
  };
  for (const auto& b : table) {
    auto r = c.send(b.method, b.target, b.body);
    BOOST_TEST_CONTEXT(bhttp::to_string(b.method) << " " << b.target << " " << b.body.substr(0, 40)) {
      BOOST_TEST(r.status == b.status);
      BOOST_TEST(r.code() == b.code);
      BOOST_TEST(!r.body.at("error").at("message").as_string().empty());
    }
  }
  // Still serving on the same connection.
  BOOST_TEST(c.send(bhttp::verb::get, "/healthz").status == 200);
  // An oversize body is refused before it is read, and that connection closes.
  auto big =
      c.send(bhttp::verb::post, "/v1/workflows/echo/runs", "{\"input\":\"" + std::string(8000, 'x') + "\"}");
  BOOST_TEST(big.status == 413);
  BOOST_TEST(big.code() == "payload_too_large");
  BOOST_TEST(!big.raw.keep_alive());
}

BOOST_AUTO_TEST_CASE(garbage_and_silent_clients_are_answered_or_dropped_without_harm, *utf::timeout(60)) {
  http::server_options o;
  o.request_timeout = 300ms;
  o.idle_timeout = 1500ms;
  served srv(o);
  {
    // Not HTTP at all: 400, then closed.
    client c(srv.s->port());
    asio::write(c.socket(), asio::buffer(std::string("HELLO THERE\r\n\r\n")));
    auto r = c.read();
    BOOST_TEST(r.status == 400);
    BOOST_TEST(r.code() == "malformed_request");
  }
  {
    // Headers over the limit: 431.
    client c(srv.s->port());
    std::string req = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n";
    asio::write(c.socket(), asio::buffer(req));
    auto r = c.read();
    BOOST_TEST(r.status == 431);
  }
  for (const std::string start : {"GET /healthz HTTP/1.1\r\nHo", ""}) {
    // Half a request then silence: closed once the request timeout passes. Nothing at all (an idle
    // connection): closed once the longer idle timeout passes.
    client c(srv.s->port());
    if (!start.empty()) asio::write(c.socket(), asio::buffer(start));
    const auto t0 = std::chrono::steady_clock::now();
    char byte;
    boost::system::error_code ec;
    c.socket().read_some(asio::buffer(&byte, 1), ec);
    const auto waited = std::chrono::steady_clock::now() - t0;
    BOOST_TEST_INFO("request started: " << !start.empty());
    BOOST_TEST((ec == asio::error::eof || ec == asio::error::connection_reset));
    if (start.empty()) {
      BOOST_TEST((waited >= 1400ms && waited < 5s));
    } else {
      BOOST_TEST((waited < 1400ms));
    }
  }
  {
    // A kept-alive connection idles between requests for the idle timeout, not the request timeout.
    client c(srv.s->port());
    BOOST_TEST(c.send(bhttp::verb::get, "/healthz").status == 200);
    std::this_thread::sleep_for(700ms);  // longer than a request may take, shorter than idling may
    BOOST_TEST(c.send(bhttp::verb::get, "/healthz").status == 200);
  }
  // And the server still serves.
  client c(srv.s->port());
  BOOST_TEST(c.send(bhttp::verb::get, "/healthz").status == 200);
}

BOOST_AUTO_TEST_CASE(a_signed_hook_takes_each_valid_signature_once_from_any_current_secret,
                     *utf::timeout(60)) {
  auto o = options_for(fresh_database());
  o.webhook_secrets = {{"payments", {"old-secret", "new-secret"}}, {"other", {"other-secret"}}};
  engine e(o);
  add_workflow(e, "signed", [](context& ctx, json::value in) -> asio::awaitable<json::value> {
    hook_options options;
    if (in.is_string()) options.signature_key = std::string(in.as_string());
    auto hook = co_await ctx.create_hook("paid", options);
    auto announce = [path = hook.path()] { return json::value(path); };
    co_await ctx.step("announce", announce);
    auto paid = co_await hook.wait();
    co_return paid ? *paid : json::value("expired");
  });
  BOOST_REQUIRE(e.start_blocking());
  http::server_options so;
  so.port = 0;
  http::server s(e, so);
  BOOST_REQUIRE(s.start());
  client c(s.port());
  auto path_of = [&](const std::string& id) {
    std::string path;
    BOOST_REQUIRE(wait_until(
        [&] {
          const auto run = c.send(bhttp::verb::get, "/v1/runs/" + id);
          if (run.body.at("hooks").as_array().empty()) return false;
          path = std::string(run.body.at("hooks").as_array()[0].at("path").as_string());
          return true;
        },
        10s));
    return path;
  };
  const auto now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  const std::string body = R"({"amount":1200,"event":"evt_1"})";
  auto post = [&](const std::string& path, const std::string& payload, const std::string& signature) {
    std::vector<std::pair<std::string, std::string>> headers;
    if (!signature.empty()) headers.emplace_back("Keel-Signature", signature);
    return c.send(bhttp::verb::post, path, payload, headers);
  };

  const auto id = *e.enqueue_blocking("signed", json::value("payments"));
  const auto path = path_of(id);
  BOOST_REQUIRE(wait_until([&] { return e.get_blocking(id)->status == run_status::waiting; }, 10s));
  // The token alone is not enough, nor a wrong, malformed or stale signature; each says why.
  const std::vector<std::pair<std::string, std::string>> refused{
      {"", "signature_required"},
      {webhook_signature("guessed-secret", body, now), "invalid_signature"},
      {webhook_signature("other-secret", body, now), "signature_required"},  // another key's secret
      {webhook_signature("old-secret", R"({"amount":9999,"event":"evt_1"})", now), "invalid_signature"},
      {"t=" + std::to_string(now) + ",v1=zz", "invalid_signature"},
      {"v1=" + std::string(64, 'a'), "invalid_signature"},
      {"garbage", "invalid_signature"},
      {webhook_signature("old-secret", body, now - 600), "signature_expired"},
      {webhook_signature("old-secret", body, now + 600), "signature_expired"}};
  for (const auto& [signature, code] : refused) {
    BOOST_TEST_INFO(signature);
    const auto r = post(path, body, signature);
    BOOST_TEST(r.status == 401);
    BOOST_TEST(r.code() == code);
  }
  BOOST_TEST((e.get_blocking(id)->status == run_status::waiting));
  // Signed with a current secret: resumed. The same request again is a replay: refused, changing nothing.
  const auto signature = webhook_signature("old-secret", body, now);
  const auto accepted = post(path, body, signature);
  BOOST_TEST(accepted.status == 202);
  const auto replayed = post(path, body, signature);
  BOOST_TEST(replayed.status == 409);
  BOOST_TEST(replayed.code() == "signature_replayed");
  const auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(done->output == json::parse(body));

  // Rotation: the new secret works too, as does a header carrying one v1 per secret (a sender mid-rotation).
  const auto second = *e.enqueue_blocking("signed", json::value("payments"));
  const auto both = webhook_signature("new-secret", body, now) + "," +
                    webhook_signature("old-secret", body, now).substr(std::to_string(now).size() + 3);
  BOOST_TEST(post(path_of(second), body, both).status == 202);
  BOOST_REQUIRE(e.wait_blocking(second, 10s));
  // The same signed body may resume another hook (replays are told apart by hook).
  const auto third = *e.enqueue_blocking("signed", json::value("payments"));
  BOOST_TEST(post(path_of(third), body, signature).status == 202);

  // A hook without a key takes unsigned resumes; a signature sent to it must still verify.
  const auto open = *e.enqueue_blocking("signed", json::value(nullptr));
  const auto open_path = path_of(open);
  BOOST_TEST(post(open_path, body, webhook_signature("guessed-secret", body, now)).status == 401);
  BOOST_TEST(post(open_path, body, "").status == 202);

  // A key the engine does not know fails the run at once, instead of leaving a hook nobody can resume.
  const auto unknown = *e.enqueue_blocking("signed", json::value("no-such-key"));
  const auto failed = e.wait_blocking(unknown, 10s);
  BOOST_REQUIRE(failed);
  BOOST_TEST((failed->status == run_status::failed));
  BOOST_TEST(json::serialize(failed->error).find("webhook_secrets") != std::string::npos);
  s.stop_blocking();
  e.stop_blocking();
}

BOOST_AUTO_TEST_CASE(api_keys_guard_the_api_but_not_hooks_or_probes_and_cors_answers_allowed_origins,
                     *utf::timeout(60)) {
  http::server_options o;
  o.api_keys = {"old-key", "new-key"};  // two at once: a key rotation in progress
  o.cors_origins = {"https://app.example"};
  served srv(o);
  client c(srv.s->port());
  const std::vector<std::pair<std::string, std::string>> authorised{{"Authorization", "Bearer new-key"}};
  for (const auto& target : {"/v1/workflows", "/v1/runs", "/v1/runs/0190b3c2-0000-7000-8000-000000000000",
                             "/v1/events", "/no/such/path", "/v1/hooks"}) {
    BOOST_TEST_INFO(target);
    const auto r = c.send(bhttp::verb::get, target);
    BOOST_TEST(r.status == 401);
    BOOST_TEST(r.code() == "unauthorized");
    BOOST_TEST(r.raw[bhttp::field::www_authenticate] == "Bearer");
  }
  for (const auto& wrong :
       {"Bearer new-ke", "Bearer new-keyy", "Bearer ", "Basic bmV3LWtleQ==", "new-key", "Bearer NEW-KEY"}) {
    BOOST_TEST_INFO(wrong);
    BOOST_TEST(c.send(bhttp::verb::get, "/v1/workflows", "", {{"Authorization", wrong}}).status == 401);
  }
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/workflows", "", {{"Authorization", "Bearer old-key"}}).status ==
             200);
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/workflows", "", {{"Authorization", "bearer new-key"}}).status ==
             200);
  // Probes need no key.
  BOOST_TEST(c.send(bhttp::verb::get, "/healthz").status == 200);
  BOOST_TEST(c.send(bhttp::verb::get, "/readyz").status == 200);
  // Starting a run needs one; resuming its hook does not: the token is the authorisation.
  BOOST_TEST(c.send(bhttp::verb::post, "/v1/workflows/approval/runs", "{}").status == 401);
  const auto started = c.send(bhttp::verb::post, "/v1/workflows/approval/runs", "{}", authorised);
  BOOST_REQUIRE(started.status == 201);
  const std::string id(started.body.at("id").as_string());
  std::string path;
  BOOST_REQUIRE(wait_until(
      [&] {
        const auto run = c.send(bhttp::verb::get, "/v1/runs/" + id, "", authorised);
        if (run.status != 200 || run.body.at("hooks").as_array().empty()) return false;
        path = std::string(run.body.at("hooks").as_array()[0].at("path").as_string());
        return true;
      },
      10s));
  BOOST_TEST(c.send(bhttp::verb::post, path, R"({"approved":true})").status == 202);
  {
    // A caller without a key that asks for 100 Continue is refused before it sends its body.
    client raw(srv.s->port());
    asio::write(raw.socket(),
                asio::buffer(std::string("POST /v1/workflows/approval/runs HTTP/1.1\r\nHost: x\r\n"
                                         "Content-Length: 2\r\nExpect: 100-continue\r\n\r\n")));
    const auto r = raw.read();
    BOOST_TEST(r.status == 401);
  }
  // Event streams need a key too.
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/runs/" + id + "/events").status == 401);

  // CORS: an allowed origin is echoed (on errors too, so that the page can read them); another is not.
  const auto allowed = c.send(bhttp::verb::get, "/v1/workflows", "",
                              {{"Authorization", "Bearer new-key"}, {"Origin", "https://app.example"}});
  BOOST_TEST(allowed.raw[bhttp::field::access_control_allow_origin] == "https://app.example");
  BOOST_TEST(allowed.raw[bhttp::field::vary] == "Origin");
  const auto refused = c.send(bhttp::verb::get, "/v1/workflows", "", {{"Origin", "https://app.example"}});
  BOOST_TEST(refused.status == 401);
  BOOST_TEST(refused.raw[bhttp::field::access_control_allow_origin] == "https://app.example");
  const auto other = c.send(bhttp::verb::get, "/v1/workflows", "",
                            {{"Authorization", "Bearer new-key"}, {"Origin", "https://evil.example"}});
  BOOST_TEST(other.status == 200);
  BOOST_TEST(other.raw.count(bhttp::field::access_control_allow_origin) == 0u);
  // A preflight needs no key (browsers send none) and names what the API takes.
  const auto pre = c.send(bhttp::verb::options, "/v1/workflows/approval/runs", "",
                          {{"Origin", "https://app.example"},
                           {"Access-Control-Request-Method", "POST"},
                           {"Access-Control-Request-Headers", "authorization, content-type"}});
  BOOST_TEST(pre.status == 204);
  BOOST_TEST(pre.raw[bhttp::field::access_control_allow_origin] == "https://app.example");
  BOOST_TEST(std::string(pre.raw[bhttp::field::access_control_allow_headers]).find("Authorization") !=
             std::string::npos);
  const auto pre_other =
      c.send(bhttp::verb::options, "/v1/workflows/approval/runs", "",
             {{"Origin", "https://evil.example"}, {"Access-Control-Request-Method", "POST"}});
  BOOST_TEST(pre_other.raw.count(bhttp::field::access_control_allow_origin) == 0u);
}

BOOST_AUTO_TEST_CASE(a_client_expecting_100_continue_gets_it_or_an_early_413, *utf::timeout(60)) {
  http::server_options o;
  o.max_body_bytes = 4096;
  served srv(o);
  const std::string body = R"({"input":")" + std::string(2000, 'x') + R"("})";
  auto head = [](std::size_t length) {
    return "POST /v1/workflows/echo/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           "Content-Length: " +
           std::to_string(length) + "\r\nExpect: 100-continue\r\n\r\n";
  };
  {
    client c(srv.s->port());
    asio::write(c.socket(), asio::buffer(head(body.size())));
    // The go-ahead comes before any byte of the body is sent.
    std::string interim;
    boost::system::error_code ec;
    asio::read_until(c.socket(), asio::dynamic_buffer(interim), "\r\n\r\n", ec);
    BOOST_REQUIRE(!ec);
    BOOST_TEST(interim == "HTTP/1.1 100 Continue\r\n\r\n");
    asio::write(c.socket(), asio::buffer(body));
    const auto r = c.read();
    BOOST_TEST(r.status == 201);
  }
  {
    // Over the limit: refused at once, the body never asked for.
    client c(srv.s->port());
    asio::write(c.socket(), asio::buffer(head(100'000)));
    const auto r = c.read();
    BOOST_TEST(r.status == 413);
    BOOST_TEST(r.code() == "payload_too_large");
  }
}

BOOST_AUTO_TEST_CASE(a_head_request_gets_the_headers_of_a_get_without_its_body, *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  bhttp::request<bhttp::empty_body> req{bhttp::verb::head, "/healthz", 11};
  req.set(bhttp::field::host, "127.0.0.1");
  bhttp::write(c.socket(), req);
  bhttp::response_parser<bhttp::empty_body> head;
  head.skip(true);  // a response to HEAD has no body, whatever its Content-Length says
  beast::flat_buffer buffer;
  bhttp::read(c.socket(), buffer, head);
  BOOST_TEST(head.get().result_int() == 200u);
  BOOST_TEST(head.get()[bhttp::field::content_length] == "15");
  BOOST_TEST(buffer.size() == 0u);  // nothing after the headers
  // The connection goes on with the next request.
  BOOST_TEST(c.send(bhttp::verb::get, "/healthz").status == 200);
}

BOOST_AUTO_TEST_CASE(a_table_of_broken_requests_over_a_raw_socket_gets_4xx_or_a_close_never_a_5xx,
                     *utf::timeout(120)) {
  http::server_options o;
  o.request_timeout = 1s;
  served srv(o);
  using namespace std::string_literals;
  const std::string host = "Host: x\r\n";
  const std::string deep(20000, '[');
  const std::vector<std::string> requests{
      "GET /healthz HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",  // bad chunk size
      "POST /v1/workflows/echo/runs HTTP/1.1\r\n" + host +
          "Transfer-Encoding: chunked\r\n\r\n5\r\nabc",  // cut
      "POST /v1/workflows/echo/runs HTTP/1.1\r\n" + host +
          "Transfer-Encoding: chunked\r\n\r\n3;ext=\"unterminated\r\nabc\r\n0\r\n\r\n",
      "POST /v1/workflows/echo/runs HTTP/1.1\r\n" + host +
          "Content-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
      "POST /v1/workflows/echo/runs HTTP/1.1\r\n" + host + "Content-Length: -1\r\n\r\n",
      "POST /v1/workflows/echo/runs HTTP/1.1\r\n" + host + "Content-Length: 99999999999999999999\r\n\r\n",
      "POST /v1/workflows/echo/runs HTTP/1.1\r\n" + host + "Content-Length: 10\r\n\r\n{\"in",  // short body
      "BREW /v1/runs HTTP/1.1\r\n" + host + "\r\n",
      "DELETE /v1/runs HTTP/1.1\r\n" + host + "\r\n",
      "GET /v1/runs/%ff%fe HTTP/1.1\r\n" + host + "\r\n",
      "GET /v1/runs/%00 HTTP/1.1\r\n" + host + "\r\n",
      "GET /v1/../../etc/passwd HTTP/1.1\r\n" + host + "\r\n",
      "GET /v1/runs?limit=%zz HTTP/1.1\r\n" + host + "\r\n",
      "GET http://x/healthz HTTP/1.1\r\n" + host + "\r\n",  // absolute form
      "GET * HTTP/1.1\r\n" + host + "\r\n",
      "GET /healthz HTTP/9.9\r\n" + host + "\r\n",
      "GET /healthz\r\n\r\n",  // HTTP/0.9
      "GET\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nX-A: b\0c\r\n\r\n"s,  // a NUL in a header
      "GET /healthz HTTP/1.1\r\n: no-name\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nNo-Colon\r\n\r\n",
      "\r\n\r\n\r\n",
      std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11),  // a TLS ClientHello
      "POST /v1/workflows/echo/runs HTTP/1.1\r\n" + host + "Content-Length: " + std::to_string(deep.size()) +
          "\r\n\r\n" + deep,  // deep JSON
      "POST /v1/workflows/echo/runs HTTP/1.1\r\n" + host +
          "Content-Length: 14\r\n\r\n{\"input\":\"\xc0\xaf\"}",
      "POST /v1/hooks/" + std::string(5000, 'a') + " HTTP/1.1\r\n" + host + "\r\n",
      "POST /v1/runs/0190b3c2-0000-7000-8000-000000000000/events/" + std::string(300, 'e') + " HTTP/1.1\r\n" +
          host + "Content-Length: 2\r\n\r\n{}",
  };
  int answered = 0, closed = 0;
  for (const auto& raw : requests) {
    BOOST_TEST_INFO("request: " << json::serialize(json::value(storage::valid_utf8(raw.substr(0, 80)))));
    client c(srv.s->port());
    boost::system::error_code ec;
    asio::write(c.socket(), asio::buffer(raw), ec);
    c.socket().shutdown(tcp::socket::shutdown_send, ec);  // nothing more comes: the server must decide
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::string_body> parser;
    bhttp::read(c.socket(), buffer, parser, ec);
    if (ec) {
      ++closed;  // dropped without an answer: allowed for what is not HTTP at all
      continue;
    }
    ++answered;
    const int status = parser.get().result_int();
    BOOST_TEST(status >= 400);
    BOOST_TEST(status < 500);
    BOOST_TEST(!json::parse(parser.get().body()).at("error").at("code").as_string().empty());
  }
  BOOST_TEST(answered >= 20);  // most get a typed answer
  BOOST_TEST_MESSAGE(answered << " answered, " << closed << " closed");
  // The server still serves, and runs still run.
  client c(srv.s->port());
  BOOST_TEST(c.send(bhttp::verb::get, "/healthz").status == 200);
  const auto started = c.send(bhttp::verb::post, "/v1/workflows/echo/runs", R"({"input":7})");
  BOOST_REQUIRE(started.status == 201);
  const auto done = srv.e.wait_blocking(std::string(started.body.at("id").as_string()), 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(done->output == json::value(7));
}

BOOST_AUTO_TEST_CASE(a_stop_closes_idle_connections_and_lets_a_request_in_progress_finish,
                     *utf::timeout(60)) {
  served srv;
  client idle(srv.s->port());
  BOOST_TEST(idle.send(bhttp::verb::get, "/healthz").status == 200);
  // A request whose body is still on its way when the stop comes is read whole and answered.
  client uploading(srv.s->port());
  const std::string body = R"({"input":{"half":"way"}})";
  const std::string head =
      "POST /v1/workflows/echo/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\n\r\n";
  asio::write(uploading.socket(), asio::buffer(head + body.substr(0, 10)));
  std::this_thread::sleep_for(200ms);
  std::thread stopper([&] { srv.s->stop_blocking(5s); });
  std::this_thread::sleep_for(300ms);
  asio::write(uploading.socket(), asio::buffer(body.substr(10)));
  auto answered = uploading.read();
  BOOST_TEST(answered.status == 201);
  BOOST_TEST(!answered.raw.keep_alive());  // stopping: the connection closes after it
  stopper.join();
  char byte;
  boost::system::error_code ec;
  idle.socket().read_some(asio::buffer(&byte, 1), ec);
  BOOST_TEST(ec == asio::error::eof);
  tcp::socket fresh(srv.e.get_executor());
  fresh.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), srv.s->port()), ec);
  BOOST_TEST(ec);  // no longer listening
}

BOOST_AUTO_TEST_SUITE_END()
