// The HTTP front end's fuzz target: bytes as a client sends them, read by Beast's request parser set up as
// the server sets it up, then every decoding step the server takes before a request reaches the engine. Each
// outcome must be a value or a typed refusal (a Beast parse error, bad_request, wrong_method): any other
// exception aborts here, and a crash, undefined behaviour or a leak is the sanitizers' to report.
// libFuzzer calls LLVMFuzzerTestOneInput directly; without clang, mutation_driver.cpp does.
#include <algorithm>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/system/system_error.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "access.hpp"
#include "api.hpp"
#include "dashboard.hpp"
#include "keel/engine/cron.hpp"
#include "keel/storage/error.hpp"
#include "keel/storage/json_limits.hpp"
#include "keel/storage/schedule_records.hpp"
#include "metrics.hpp"
#include "request_decoding.hpp"
#include "request_parser.hpp"
#include "sse.hpp"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace beast_http = boost::beast::http;
namespace json = boost::json;
using namespace keel::http::detail;

/// Requests read from one input at most (a keep-alive pipeline): bounds the work per input.
constexpr int k_max_requests = 8;
/// The depth body_json takes (api.cpp's k_max_json_depth): a value it returned must parse again with it.
constexpr std::size_t k_server_json_depth = 128;

[[noreturn]] void finding(std::string_view where, std::string_view what) {
  std::fprintf(stderr, "fuzz_http: FINDING in %.*s: %.*s\n", static_cast<int>(where.size()), where.data(),
               static_cast<int>(what.size()), what.data());
  std::abort();
}

/// A SyncReadStream over the input: the first `first` bytes arrive in one read, the rest `step` bytes a read,
/// then end of file: the same bytes in other packets, as a socket may deliver them.
class byte_stream {
 public:
  byte_stream(std::string_view data, std::size_t first, std::size_t step)
      : data_(data), first_(first), step_(step == 0 ? 1 : step) {}

  template <class MutableBuffers>
  std::size_t read_some(const MutableBuffers& buffers, boost::system::error_code& ec) {
    ec = {};
    if (pos_ == data_.size()) {
      ec = asio::error::eof;
      return 0;
    }
    std::size_t want = pos_ < first_ ? first_ - pos_ : step_;
    want = std::min(want, data_.size() - pos_);
    const auto n = asio::buffer_copy(buffers, asio::buffer(data_.data() + pos_, want));
    pos_ += n;
    return n;
  }

  template <class MutableBuffers>
  std::size_t read_some(const MutableBuffers& buffers) {
    boost::system::error_code ec;
    const auto n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

 private:
  std::string_view data_;
  std::size_t first_;
  std::size_t step_;
  std::size_t pos_ = 0;
};

/// Keys and origins configured, as a production server has them; and the open configuration.
const access_policy& keyed_policy() {
  static const access_policy p{{"k-current-0123456789", "k-previous"}, {"https://app.example", "null"}};
  return p;
}
const access_policy& open_policy() {
  static const access_policy p{{}, {"*"}};
  return p;
}

/// What handle() would answer for a refusal must itself be JSON a client can parse (valid UTF-8 included).
void check_answer(std::string_view where, const response& res) {
  boost::system::error_code ec;
  auto v = json::parse(res.body(), ec);
  if (ec) finding(where, "the answer's body is not valid JSON (" + ec.message() + "): " + res.body());
  if (!v.is_object() || !v.as_object().contains("error"))
    finding(where, "the answer has no {\"error\":…}: " + res.body());
}

/// Runs `f`; a bad_request or wrong_method is a typed refusal (its answer checked), anything else thrown a
/// finding. Appends the outcome to `trace`.
template <class F>
void expect_typed(std::string& trace, std::string_view where, F&& f) {
  try {
    f();
    trace += where;
    trace += ": ok\n";
  } catch (const bad_request& b) {
    // The codes a refusal of the decoding may carry (errors.cpp's table lists them).
    if (b.code != "invalid_request" && b.code != "invalid_cron_expression" && b.code != "unknown_time_zone")
      finding(where, "a refusal with the code " + b.code);
    check_answer(where, error_response(beast_http::status::bad_request, b.code, b.message));
    trace += where;
    trace += ": bad_request ";
    trace += b.code;
    trace += ' ';
    trace += b.message;
    trace += '\n';
  } catch (const wrong_method& w) {
    check_answer(where, method_not_allowed(w.allowed));
    trace += where;
    trace += ": wrong_method\n";
  } catch (const std::exception& e) {
    finding(where, std::string("an exception that is not a typed refusal: ") + e.what());
  } catch (...) {
    finding(where, "a non-standard exception");
  }
}

/// Runs `f`, which must not throw at all (the server calls it outside the handler that answers refusals).
template <class F>
void must_not_throw(std::string_view where, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    finding(where, std::string("threw: ") + e.what());
  } catch (...) {
    finding(where, "threw something that is not even a std::exception");
  }
}

/// A value body_json returned: the engine's own checks take it, and it survives a round trip.
void check_json_value(const json::value& v) {
  std::string why;
  const auto checked = keel::storage::check_json(v, keel::storage::json_limits{}, &why);
  if (!checked && checked.error() == keel::storage::errc::payload_too_deep)
    finding("check_json", "a value body_json took is deeper than the engine's limit");
  json::parse_options opts;
  opts.max_depth = k_server_json_depth;
  boost::system::error_code ec;
  const auto text = json::serialize(v);
  const auto again = json::parse(text, ec, {}, opts);
  if (ec) finding("json round trip", "serialized body does not parse again: " + ec.message());
  if (again != v) finding("json round trip", "serialized body parses to another value");
}

/// The access decisions under `policy`.
void check_access(std::string& trace, const access_policy& policy, const request& req) {
  const bool ok = authorised(policy, req);
  trace += ok ? "authorised " : "unauthorised ";
  if (ok && !policy.api_keys.empty()) {
    // Allowed without a key only on the open paths; else the header must carry one of the keys.
    // The dashboard's page and files (`/`, `/ui/…`) hold no data: open, whatever the query.
    const auto raw_path = req.target().substr(0, req.target().find('?'));
    bool open = raw_path == "/" || raw_path.starts_with("/ui/");
    try {
      const auto t = parse_target(req.target());
      const auto& p = t.path;
      open = open || (p.size() == 1 && (p[0] == "healthz" || p[0] == "readyz")) ||
             (p.size() >= 3 && p[0] == "v1" && p[1] == "hooks");
    } catch (const bad_request&) {
    }
    const auto header = req[beast_http::field::authorization];
    bool keyed = false;
    for (const auto& k : policy.api_keys)
      keyed |= header.size() == k.size() + 7 && header.substr(7) == k;
    if (!open && !keyed) finding("authorised", "a request without a valid key was let in");
  }
  const auto origin = allowed_origin(policy, req);
  trace += origin;
  if (auto pre = preflight(policy, req)) {
    allow_origin(*pre, origin);
    trace += " preflight";
  }
  trace += '\n';
}

/// Every decoding step the server may take on `req`, whatever its path (so that the fuzzer need not find a
/// route to reach its decoder); returns what each did, to compare between deliveries.
std::string decode_all(const request& req) {
  std::string trace(req.method_string());
  trace += ' ';
  trace += req.target();
  trace += " v" + std::to_string(req.version()) + (req.keep_alive() ? " keep-alive\n" : " close\n");
  for (const auto& f : req) {
    trace += f.name_string();
    trace += ": ";
    trace += f.value();
    trace += '\n';
  }
  trace += "body " + std::to_string(req.body().size()) + ": " + req.body() + '\n';

  must_not_throw("access", [&] {
    check_access(trace, keyed_policy(), req);
    check_access(trace, open_policy(), req);
    trace += is_metrics(req) ? "metrics\n" : "";
  });
  must_not_throw("dashboard", [&] {
    if (!is_dashboard(req.target())) return;
    const auto res = dashboard(req);
    const auto code = res.result_int();
    if (code != 200 && code != 304 && code != 404 && code != 405)
      finding("dashboard", "an answer other than 200, 304, 404 or 405: " + std::to_string(code));
    if (code >= 400) check_answer("dashboard", res);
    if (code < 300 && res["Content-Security-Policy"].empty()) finding("dashboard", "a file without its CSP");
    trace += "dashboard " + std::to_string(code) + '\n';
  });
  must_not_throw("sse_route", [&] {
    auto sse = sse_route(req);
    if (!sse) return;
    if (const auto* refused = std::get_if<response>(&*sse)) {
      check_answer("sse_route", *refused);
      trace += "sse refused\n";
      return;
    }
    const auto& r = std::get<sse_request>(*sse);
    if ((r.after && *r.after < 0) || r.from < 0) finding("sse_route", "a negative position");
    trace += "sse " + r.run + ' ' + r.stream + ' ' + std::to_string(r.from) + '\n';
  });

  expect_typed(trace, "parse_target", [&] {
    const auto t = parse_target(req.target());
    for (const auto& s : t.path)
      if (s.find('\0') != std::string::npos) finding("parse_target", "a NUL in a path segment");
    expect_typed(trace, "decode_run_query", [&] {
      const auto q = decode_run_query(t);
      if (q.limit < 1 || q.limit > 1000) finding("decode_run_query", "a limit out of range");
      if (q.workflow && !keel::storage::is_valid_utf8(*q.workflow))
        finding("decode_run_query", "a workflow name that is not UTF-8");
      if (q.parent && !keel::is_valid_run_id(*q.parent))
        finding("decode_run_query", "a parent that is no id");
    });
    expect_typed(trace, "decode_schedule_query", [&] {
      const auto q = decode_schedule_query(t);
      if (q.limit < 1 || q.limit > 1000) finding("decode_schedule_query", "a limit out of range");
      if (q.workflow && !keel::storage::is_valid_utf8(*q.workflow))
        finding("decode_schedule_query", "a workflow name that is not UTF-8");
      if (q.after && !keel::storage::is_valid_schedule_name(*q.after))
        finding("decode_schedule_query", "a cursor that is no schedule name");
    });
    // A schedule's name is the path's third segment (/v1/schedules/{name}); any segment will do here.
    expect_typed(trace, "decode_schedule_put", [&] {
      const auto spec = decode_schedule_put(req, t.path.size() > 2 ? t.path[2] : std::string("nightly"));
      if (!keel::storage::is_valid_schedule_name(spec.name))
        finding("decode_schedule_put", "a schedule name of another shape");
      if (spec.workflow.empty() || !keel::storage::is_valid_utf8(spec.workflow))
        finding("decode_schedule_put", "a workflow name that is empty or not UTF-8");
      if (spec.catch_up < 0 || spec.catch_up > keel::storage::k_max_catch_up)
        finding("decode_schedule_put", "a catch_up out of range");
      if (spec.version && *spec.version < 1) finding("decode_schedule_put", "a version below 1");
      // What it took must parse again as the engine will parse it.
      if (!keel::cron_schedule::parse(spec.cron, spec.time_zone))
        finding("decode_schedule_put", "an expression the engine would refuse");
      check_json_value(spec.input);
    });
    expect_typed(trace, "decode_hook_query", [&] {
      const auto q = decode_hook_query(t);
      if (q.limit < 1 || q.limit > 1000) finding("decode_hook_query", "a limit out of range");
      if (q.workflow && !keel::storage::is_valid_utf8(*q.workflow))
        finding("decode_hook_query", "a workflow name that is not UTF-8");
      if (q.after && !keel::storage::is_valid_hook_cursor(*q.after))
        finding("decode_hook_query", "a cursor of another shape");
    });
  });
  expect_typed(trace, "body_json", [&] { check_json_value(body_json(req)); });
  expect_typed(trace, "decode_start_run", [&] {
    const auto s = decode_start_run(req);
    check_json_value(s.input);
  });
  expect_typed(trace, "decode_rewind_step", [&] {
    if (decode_rewind_step(req) < 0) finding("decode_rewind_step", "a negative step");
  });
  return trace;
}

/// What a connection that sent `bytes` led to: each request read, decoded; and whether reading ended in an
/// error (rather than the client closing between requests).
struct connection_outcome {
  std::vector<std::string> requests;
  bool failed = false;
};

/// The server's read loop (server.cpp's serve()) over `bytes`, arriving as byte_stream delivers them.
connection_outcome serve_bytes(std::string_view bytes, std::size_t first, std::size_t step,
                               const keel::http::server_options& o) {
  byte_stream s(bytes, first, step);
  beast::flat_buffer buffer;
  connection_outcome out;
  for (int i = 0; i < k_max_requests; ++i) {
    request_parser parser;
    configure_parser(parser, o);
    boost::system::error_code ec;
    if (buffer.size() == 0) {
      // As the server: the first byte decides whether a request comes at all.
      const auto got = s.read_some(buffer.prepare(4096), ec);
      if (ec) break;
      buffer.commit(got);
    }
    beast_http::read_header(s, buffer, parser, ec);
    if (!ec && !parser.is_done()) beast_http::read(s, buffer, parser, ec);
    if (ec) {
      out.failed = true;
      break;
    }
    auto req = parser.release();
    out.requests.push_back(decode_all(req));
    if (!req.keep_alive()) break;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const keel::http::server_options defaults;
  // Whole, then split at a point and in pieces that the input itself picks: the incremental parser must read
  // the same requests either way.
  const auto whole = serve_bytes(bytes, size, 65536, defaults);
  if (size > 0) {
    const std::size_t mix = static_cast<std::size_t>(data[0]) * 131 + data[size - 1];
    const auto split = serve_bytes(bytes, mix % (size + 1), 1 + mix % 61, defaults);
    if (split.requests != whole.requests || split.failed != whole.failed)
      finding("request parser", "the same bytes in other pieces read differently");
  }
  // Tight limits: the header and body limit refusals (a fuzz input is rarely larger than the defaults).
  keel::http::server_options tight;
  tight.max_header_bytes = 256;
  tight.max_body_bytes = 128;
  serve_bytes(bytes, size / 2, 7, tight);
  return 0;
}
