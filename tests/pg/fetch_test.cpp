// ctx.fetch against a local HTTP(S) server and a real PostgreSQL: TLS verified against a test CA made here
// with the openssl CLI (SNI, host names), the headers a fetch adds, retries of 5xx and 429 that honour
// Retry-After, connection failures and timeouts, recorded responses (text and binary) that replay without a
// request, and the requests refused before anything is sent.
#define BOOST_TEST_MODULE fetch
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <boost/json/value_from.hpp>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <memory>

#include "engine_fixture.hpp"
#include "keel/storage/json_limits.hpp"
#include "scripted_http_server.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

namespace {

/// A test CA, a server certificate it signed for localhost and 127.0.0.1, and one for another name: made once
/// per process with the openssl CLI.
struct test_pki {
  temp_dir dir;
  std::string ca, server_cert, server_key, wrong_cert, wrong_key;
};

void run_openssl(const std::string& args) {
  const std::string command = "openssl " + args + " >/dev/null 2>&1";
  if (std::system(command.c_str()) != 0) throw std::runtime_error("failed: " + command);
}

/// A key and a certificate for `names` (subjectAltName entries) signed by the CA in `d`.
void issue(const std::string& d, const std::string& stem, const std::string& common_name,
           const std::string& names) {
  std::ofstream(d + "/" + stem + ".ext")
      << "subjectAltName=" << names << "\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n";
  run_openssl("req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " + d + "/" + stem +
              ".key -out " + d + "/" + stem + ".csr -subj /CN=" + common_name);
  run_openssl("x509 -req -in " + d + "/" + stem + ".csr -CA " + d + "/ca.pem -CAkey " + d +
              "/ca.key -CAcreateserial -days 2 -out " + d + "/" + stem + ".pem -extfile " + d + "/" + stem +
              ".ext");
}

const test_pki& pki() {
  static const std::unique_ptr<test_pki> made = [] {
    auto p = std::make_unique<test_pki>();
    const std::string& d = p->dir.path();
    run_openssl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " + d +
                "/ca.key -out " + d +
                "/ca.pem -days 2 -subj '/CN=keel fetch test CA' -addext basicConstraints=critical,CA:TRUE "
                "-addext keyUsage=critical,keyCertSign,cRLSign");
    issue(d, "server", "localhost", "DNS:localhost,IP:127.0.0.1");
    issue(d, "wrong", "wrong.example", "DNS:wrong.example");
    p->ca = d + "/ca.pem";
    p->server_cert = d + "/server.pem";
    p->server_key = d + "/server.key";
    p->wrong_cert = d + "/wrong.pem";
    p->wrong_key = d + "/wrong.key";
    return p;
  }();
  return *made;
}

tls_files server_files() {
  return {pki().server_cert, pki().server_key};
}

/// The request and step options a test workflow reads from its input.
fetch_request request_from(const json::object& in) {
  fetch_request r;
  r.url = std::string(in.at("url").as_string());
  if (const auto* m = in.if_contains("method")) r.method = std::string(m->as_string());
  if (const auto* n = in.if_contains("name")) r.name = std::string(n->as_string());
  if (const auto* b = in.if_contains("body")) r.body = std::string(b->as_string());
  if (const auto* h = in.if_contains("headers")) {
    for (const auto& f : h->as_array())
      r.headers.emplace_back(std::string(f.at(0).as_string()), std::string(f.at(1).as_string()));
  }
  if (const auto* t = in.if_contains("timeout_ms"))
    r.timeout = std::chrono::milliseconds(t->to_number<int>());
  if (const auto* m = in.if_contains("max_response_bytes"))
    r.max_response_bytes = m->to_number<std::size_t>();
  return r;
}

step_options options_from(const json::object& in) {
  step_options o;
  o.retry.initial_delay = 10ms;
  if (const auto* a = in.if_contains("max_attempts")) o.retry.max_attempts = a->to_number<int>();
  if (const auto* t = in.if_contains("step_timeout_ms"))
    o.timeout = std::chrono::milliseconds(t->to_number<int>());
  return o;
}

/// What a test workflow returns of a response.
json::value response_json(const context& ctx, const fetch_response& r) {
  json::object o;
  o["status"] = r.status;
  if (storage::is_valid_utf8(r.body)) o["body"] = r.body;
  const auto* first = reinterpret_cast<const std::byte*>(r.body.data());
  o["body_base64"] = json::value_from(std::vector<std::byte>(first, first + r.body.size()));
  o["x_test"] = std::string(r.header("x-TEST").value_or("-"));
  o["execution"] = ctx.execution();
  if (auto parsed = r.json()) o["json"] = *parsed;
  return o;
}

/// An engine on a fresh database with the test workflows: "fetch" (one fetch, its response) and
/// "fetch_then_wait" (a fetch, then a wait for the event "go": the response is returned by the execution
/// that replays the fetch).
struct fetching_engine {
  explicit fetching_engine(const std::string& ca_file = pki().ca) : e(options(ca_file)) {
    add_workflow(e, "fetch", [](context& ctx, json::value in) -> asio::awaitable<json::value> {
      const auto request = request_from(in.as_object());
      const auto opts = options_from(in.as_object());
      const auto r = co_await ctx.fetch(request, opts);
      co_return response_json(ctx, r);
    });
    add_workflow(e, "fetch_then_wait", [](context& ctx, json::value in) -> asio::awaitable<json::value> {
      const auto request = request_from(in.as_object());
      const auto opts = options_from(in.as_object());
      const auto r = co_await ctx.fetch(request, opts);
      co_await ctx.wait_for_event("go");
      co_return response_json(ctx, r);
    });
    BOOST_REQUIRE(e.start_blocking());
  }
  static engine_options options(const std::string& ca_file) {
    auto o = options_for(fresh_database());
    o.fetch_ca_file = ca_file;
    return o;
  }
  /// Runs "fetch" with `input` to its end.
  run_info run(const json::value& input, const enqueue_options& eo = {}) {
    auto id = e.enqueue_blocking("fetch", input, eo);
    BOOST_REQUIRE(id);
    auto info = e.wait_blocking(*id, 60s);
    BOOST_REQUIRE(info);
    return *info;
  }
  engine e;
};

std::string error_code_of(const run_info& run) {
  const auto* o = run.error.if_object();
  const auto* c = o ? o->if_contains("code") : nullptr;
  return c && c->is_string() ? std::string(c->as_string()) : "";
}
std::string error_message_of(const run_info& run) {
  return std::string(run.error.at("message").as_string());
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
unsigned short closed_port() {
  asio::io_context io;
  asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

/// "Sun, 06 Nov 1994 08:49:37 GMT" for `t`.
std::string http_date(std::chrono::system_clock::time_point t) {
  const std::time_t c = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&c, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buf;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(an_https_get_and_post_return_the_response_and_carry_key_trace_and_sni,
                     *utf::timeout(120)) {
  scripted_http_server server(server_files());
  server.script("/hello",
                {{200, {{"X-Test", "yes"}, {"Content-Type", "application/json"}}, R"({"hi":1})", 0ms}});
  server.script("/echo", [](const seen_request& req, int) {
    return scripted_reply{201, {{"X-Test", req.method}}, "got " + req.body, 0ms};
  });
  fetching_engine f;
  enqueue_options traced;
  traced.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

  auto get = f.run(json::value{{"url", server.base() + "/hello?x=1"}}, traced);
  BOOST_REQUIRE_MESSAGE(to_string(get.status) == std::string("completed"), json::serialize(get.error));
  BOOST_TEST(get.output.at("status").as_int64() == 200);
  BOOST_TEST(get.output.at("x_test").as_string() == "yes");
  BOOST_TEST(get.output.at("json") == (json::value{{"hi", 1}}));
  BOOST_REQUIRE_EQUAL(get.steps.size(), 1u);
  BOOST_TEST(get.steps[0].name == "keel.fetch:GET " + server.base() + "/hello");  // the query is not shown

  json::value post_in{{"url", server.base() + "/echo"},
                      {"method", "POST"},
                      {"body", "some data"},
                      {"headers", json::array{json::array{"Content-Type", "text/plain"}}}};
  auto post = f.run(post_in, traced);
  BOOST_REQUIRE_MESSAGE(to_string(post.status) == std::string("completed"), json::serialize(post.error));
  BOOST_TEST(post.output.at("status").as_int64() == 201);
  BOOST_TEST(post.output.at("body").as_string() == "got some data");
  BOOST_TEST(post.output.at("x_test").as_string() == "POST");

  // A URL whose path holds a secret: the step is named by the caller, and the path shows nowhere.
  auto secret = f.run(
      json::value{{"url", server.base() + "/hello/bot-s3cr3t"}, {"name", "telegram sendMessage"}}, traced);
  BOOST_REQUIRE_EQUAL(secret.steps.size(), 1u);
  BOOST_TEST(secret.steps[0].name == "keel.fetch:telegram sendMessage");
  BOOST_TEST(json::serialize(secret.output).find("s3cr3t") == std::string::npos);

  auto seen = server.requests();
  BOOST_REQUIRE_EQUAL(seen.size(), 3u);
  seen.pop_back();
  for (const auto& r : seen) {
    BOOST_TEST(r.sni == "localhost");
    BOOST_TEST(r.header("host") == "localhost:" + std::to_string(server.port()));
    BOOST_TEST(r.header("user-agent").starts_with("keel/"));
    BOOST_TEST(r.header("idempotency-key").starts_with("keel:"));
    // The caller's trace, with a span of the run's own.
    BOOST_TEST(r.header("traceparent").starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    BOOST_TEST(r.header("traceparent").find("00f067aa0ba902b7") == std::string::npos);
  }
  BOOST_TEST(seen[0].target == "/hello?x=1");
  BOOST_TEST(seen[1].method == "POST");
  BOOST_TEST(seen[1].header("content-length") == "9");
  BOOST_TEST(seen[1].header("content-type") == "text/plain");
  BOOST_TEST(seen[0].header("idempotency-key") != seen[1].header("idempotency-key"));  // other runs
  BOOST_TEST(seen[0].header("idempotency-key").find(get.id) != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_server_the_ca_does_not_vouch_for_fails_the_fetch, *utf::timeout(120)) {
  scripted_http_server server(server_files());
  server.script("/", {{200, {}, "ok", 0ms}});
  scripted_http_server wrong_name(tls_files{pki().wrong_cert, pki().wrong_key});
  wrong_name.script("/", {{200, {}, "ok", 0ms}});

  {
    // Without the test CA: the system's CAs do not know it.
    fetching_engine f("");
    auto run = f.run(json::value{{"url", server.base() + "/"}, {"max_attempts", 1}});
    BOOST_TEST(to_string(run.status) == std::string("failed"));
    BOOST_TEST(error_code_of(run) == "fetch_failed");
    BOOST_TEST(error_message_of(run).find("certificate") != std::string::npos, error_message_of(run));
  }
  fetching_engine f;
  // Signed by the CA, but for another name.
  auto run = f.run(json::value{{"url", wrong_name.base() + "/"}, {"max_attempts", 1}});
  BOOST_TEST(to_string(run.status) == std::string("failed"));
  BOOST_TEST(error_code_of(run) == "fetch_failed");
  BOOST_TEST(error_message_of(run).find("hostname mismatch") != std::string::npos, error_message_of(run));
  // The right name by its address: the certificate names 127.0.0.1 too (no SNI for an address).
  auto by_address = f.run(json::value{{"url", server.base("127.0.0.1") + "/"}});
  BOOST_TEST(to_string(by_address.status) == std::string("completed"), json::serialize(by_address.error));
  BOOST_REQUIRE_EQUAL(server.count(), 1u);
  BOOST_TEST(server.requests()[0].sni.empty());
  BOOST_TEST(wrong_name.count() == 0u);
}

BOOST_AUTO_TEST_CASE(a_503_or_429_is_retried_after_its_retry_after_with_the_same_key, *utf::timeout(120)) {
  scripted_http_server server(server_files());
  server.script("/busy", {{503, {{"Retry-After", "1"}}, "busy", 0ms}, {200, {}, "done", 0ms}});
  server.script("/limited", [](const seen_request&, int n) {
    if (n > 1) return scripted_reply{200, {}, "done", 0ms};
    // An HTTP-date two seconds ahead (whole seconds: one to two seconds from now).
    return scripted_reply{
        429, {{"Retry-After", http_date(std::chrono::system_clock::now() + 2s)}}, "slow down", 0ms};
  });
  server.script("/broken", {{500, {}, "broken", 0ms}});
  fetching_engine f;

  auto busy = f.run(json::value{{"url", server.base() + "/busy"}});
  BOOST_TEST(busy.output.at("status").as_int64() == 200);
  auto limited = f.run(json::value{{"url", server.base() + "/limited"}});
  BOOST_TEST(limited.output.at("status").as_int64() == 200);
  // Attempts run out: the last 5xx is the response (the workflow decides what it means).
  auto broken = f.run(json::value{{"url", server.base() + "/broken"}, {"max_attempts", 3}});
  BOOST_TEST(to_string(broken.status) == std::string("completed"));
  BOOST_TEST(broken.output.at("status").as_int64() == 500);
  BOOST_TEST(broken.output.at("body").as_string() == "broken");

  const auto seen = server.requests();
  BOOST_REQUIRE_EQUAL(seen.size(), 7u);
  for (std::size_t first : {0u, 2u}) {
    BOOST_TEST(seen[first].target == seen[first + 1].target);
    BOOST_TEST(seen[first].header("idempotency-key") == seen[first + 1].header("idempotency-key"));
    BOOST_TEST((seen[first + 1].at - seen[first].at) >= 900ms);
    BOOST_TEST((seen[first + 1].at - seen[first].at) < 5s);
  }
  BOOST_TEST(seen[4].header("idempotency-key") == seen[6].header("idempotency-key"));
}

BOOST_AUTO_TEST_CASE(a_refused_connection_or_a_silent_server_fails_the_fetch_after_its_attempts,
                     *utf::timeout(120)) {
  scripted_http_server silent(server_files());
  silent.script("/", {{200, {}, "too late", 10s}});
  fetching_engine f;

  auto refused = f.run(
      json::value{{"url", "http://127.0.0.1:" + std::to_string(closed_port()) + "/x"}, {"max_attempts", 2}});
  BOOST_TEST(to_string(refused.status) == std::string("failed"));
  BOOST_TEST(error_code_of(refused) == "fetch_failed");
  BOOST_TEST(error_message_of(refused).find("refused") != std::string::npos, error_message_of(refused));
  BOOST_TEST(refused.error.at("attempts").as_int64() == 2);

  auto timed_out = f.run(json::value{{"url", silent.base() + "/"}, {"max_attempts", 2}, {"timeout_ms", 300}});
  BOOST_TEST(to_string(timed_out.status) == std::string("failed"));
  BOOST_TEST(error_code_of(timed_out) == "fetch_failed");
  BOOST_TEST(error_message_of(timed_out).find("timed out after 300ms") != std::string::npos,
             error_message_of(timed_out));
  BOOST_TEST(silent.count() == 2u);
}

BOOST_AUTO_TEST_CASE(the_steps_timeout_caps_all_the_attempts_of_a_fetch, *utf::timeout(120)) {
  scripted_http_server silent(server_files());
  silent.script("/", {{200, {}, "too late", 10s}});
  fetching_engine f;
  const auto started = std::chrono::steady_clock::now();
  auto run = f.run(json::value{
      {"url", silent.base() + "/"}, {"max_attempts", 3}, {"timeout_ms", 5000}, {"step_timeout_ms", 300}});
  BOOST_TEST(to_string(run.status) == std::string("failed"));
  BOOST_TEST(error_code_of(run) == "step_timeout", json::serialize(run.error));
  // The request in flight was abandoned at once, and no other attempt started.
  BOOST_TEST((std::chrono::steady_clock::now() - started) < 4s);
  BOOST_TEST(silent.count() == 1u);
}

BOOST_AUTO_TEST_CASE(a_replayed_fetch_returns_the_recorded_response_without_a_request, *utf::timeout(120)) {
  scripted_http_server server(server_files());
  server.script("/n", [](const seen_request&, int n) {
    return scripted_reply{200, {{"X-Test", std::to_string(n)}}, "response #" + std::to_string(n), 0ms};
  });
  fetching_engine f;
  auto id = f.e.enqueue_blocking("fetch_then_wait", json::value{{"url", server.base() + "/n"}}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(f.e, id) == "waiting"; }, 30s));
  BOOST_REQUIRE(f.e.send_event_blocking(id, "go", nullptr));
  auto run = f.e.wait_blocking(id, 30s);
  BOOST_REQUIRE(run);
  BOOST_REQUIRE_MESSAGE(to_string(run->status) == std::string("completed"), json::serialize(run->error));
  BOOST_TEST(run->output.at("execution").as_int64() == 2);  // the one that replayed the fetch
  BOOST_TEST(run->output.at("body").as_string() == "response #1");
  BOOST_TEST(run->output.at("x_test").as_string() == "1");
  BOOST_TEST(server.count() == 1u);
}

BOOST_AUTO_TEST_CASE(a_binary_body_is_recorded_as_base64_and_replays_byte_for_byte, *utf::timeout(120)) {
  std::string bytes;
  for (int i = 0; i < 256; ++i)
    bytes.push_back(static_cast<char>(i));
  scripted_http_server server(server_files());
  server.script("/bin", {{200, {{"Content-Type", "application/octet-stream"}}, bytes, 0ms}});
  fetching_engine f;
  auto id = f.e.enqueue_blocking("fetch_then_wait", json::value{{"url", server.base() + "/bin"}}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(f.e, id) == "waiting"; }, 30s));
  BOOST_REQUIRE(f.e.send_event_blocking(id, "go", nullptr));
  auto run = f.e.wait_blocking(id, 30s);
  BOOST_REQUIRE(run);
  BOOST_REQUIRE_MESSAGE(to_string(run->status) == std::string("completed"), json::serialize(run->error));
  const auto* first = reinterpret_cast<const std::byte*>(bytes.data());
  BOOST_TEST(run->output.at("body_base64") ==
             json::value_from(std::vector<std::byte>(first, first + bytes.size())));
  BOOST_TEST(!run->output.as_object().contains("body"));
  const auto& record = run->steps.at(0).output.as_object();
  BOOST_TEST(record.contains("body_base64"));
  BOOST_TEST(!record.contains("body"));
  BOOST_TEST(server.count() == 1u);
}

BOOST_AUTO_TEST_CASE(an_invalid_request_fails_before_sending_and_a_large_response_is_refused,
                     *utf::timeout(120)) {
  scripted_http_server server(server_files());
  server.script("/big", {{200, {}, std::string(100, 'x'), 0ms}});
  fetching_engine f;
  const std::vector<json::value> invalid{
      json::value{{"url", server.base() + "/"}, {"method", "GE T"}},
      json::value{{"url", server.base() + "/"}, {"headers", json::array{json::array{"X-A", "1\r\nX-B: 2"}}}},
      json::value{{"url", "ftp://localhost/file"}},
      json::value{{"url", "https://user:secret@localhost/"}},
      json::value{{"url", "not a url"}},
  };
  for (const auto& in : invalid) {
    auto run = f.run(in);
    BOOST_TEST(to_string(run.status) == std::string("failed"));
    BOOST_TEST(error_code_of(run) == "invalid_argument", json::serialize(run.error));
    BOOST_TEST(run.steps.empty());
  }
  BOOST_TEST(server.count() == 0u);

  auto big =
      f.run(json::value{{"url", server.base() + "/big"}, {"max_response_bytes", 10}, {"max_attempts", 3}});
  BOOST_TEST(to_string(big.status) == std::string("failed"));
  BOOST_TEST(error_code_of(big) == "response_too_large", json::serialize(big.error));
  BOOST_TEST(server.count() == 1u);  // not retried
}

BOOST_AUTO_TEST_SUITE_END()
