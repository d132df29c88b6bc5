// The REST API's routes. Each handler validates what it got before the engine sees it, and answers every
// failure with a typed error (errors.cpp maps engine and storage errors; the rest are named here).
#include "api.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/url/parse.hpp>
#include <charconv>
#include <cmath>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "errors.hpp"
#include "keel/common/log.hpp"
#include "keel/common/time_text.hpp"
#include "keel/common/trace_context.hpp"
#include "keel/engine.hpp"
#include "keel/storage/json_limits.hpp"
#include "keel/storage/schedule_records.hpp"
#include "request_decoding.hpp"
#include "webhook_endpoint.hpp"
#include "within.hpp"

namespace keel::http::detail {
namespace {

namespace beast_http = boost::beast::http;
namespace json = boost::json;
using beast_http::status;
using beast_http::verb;

/// Deeper request JSON is refused before it reaches the engine (whose own limits still apply).
constexpr std::size_t k_max_json_depth = 128;

/// Whether `v` holds a number beyond a double's range: Boost.JSON reads 1e999 as infinity and would write it
/// back as `Infinity`, which is not JSON (PostgreSQL refuses it). Iterative, as the value may be wide.
bool has_non_finite_number(const json::value& v) {
  std::vector<const json::value*> todo{&v};
  while (!todo.empty()) {
    const auto* x = todo.back();
    todo.pop_back();
    if (x->is_double() && !std::isfinite(x->get_double())) return true;
    if (const auto* a = x->if_array()) {
      for (const auto& e : *a)
        todo.push_back(&e);
    } else if (const auto* o = x->if_object()) {
      for (const auto& kv : *o)
        todo.push_back(&kv.value());
    }
  }
  return false;
}

}  // namespace

json::value body_json(const request& req) {
  if (req.body().empty()) return nullptr;
  json::parse_options opts;
  opts.max_depth = k_max_json_depth;
  error_code ec;
  auto v = json::parse(req.body(), ec, {}, opts);
  if (ec) throw bad_request{"the body is not valid JSON: " + ec.message()};
  if (has_non_finite_number(v)) throw bad_request{"the body holds a number beyond the range of a double"};
  return v;
}

namespace {

bool is_time_field(std::string_view key) {
  return key == "until" || key == "started" || key == "at" || key == "wake_at" || key == "expires_at";
}

/// The engine's own records keep times as microseconds since the epoch; the API shows RFC 3339. Converts
/// the time fields of such a record: its own (`deep`: and its nested records'). Never applied where a
/// workflow's data may sit (a payload, an output), which is the workflow's to shape.
json::value with_rfc3339_times(json::value v, bool deep) {
  if (auto* o = v.if_object()) {
    for (auto& [key, field] : *o) {
      if (is_time_field(key) && field.is_int64()) {
        field = rfc3339(std::chrono::system_clock::time_point(std::chrono::microseconds(field.get_int64())));
      } else if (deep) {
        field = with_rfc3339_times(std::move(field), deep);
      }
    }
  } else if (auto* a = v.if_array()) {
    for (auto& item : *a)
      item = with_rfc3339_times(std::move(item), deep);
  }
  return v;
}

json::value step_json(const storage::step_record& s) {
  json::object o;
  o["seq"] = s.seq;
  o["name"] = s.name;
  o["status"] = s.failed ? "failed" : "completed";
  o["attempts"] = s.attempts;
  // The engine's steps (a hook's creation, a sleep, a wait: named "keel.…") record times of their own
  // beside the payloads they hold; a compensation's output is the workflow's.
  const bool engine_record = s.name.starts_with("keel.") && !s.name.starts_with("keel.compensate:");
  o["output"] = engine_record && s.output.is_object() ? with_rfc3339_times(s.output, false) : s.output;
  o["error"] = s.error;
  o["started_at"] = rfc3339(s.started_at);
  o["finished_at"] = rfc3339(s.finished_at);
  if (s.branch) o["branch"] = *s.branch;
  return o;
}

/// What a run and a listing's run summary both show.
template <class Run>
json::object run_fields(const Run& r) {
  json::object o;
  o["id"] = r.id;
  o["workflow"] = r.workflow;
  o["version"] = r.version;
  o["status"] = to_string(r.status);
  o["error"] = r.error;
  o["idempotency_key"] = r.idempotency_key ? json::value(*r.idempotency_key) : json::value(nullptr);
  o["priority"] = r.priority;
  o["created_at"] = rfc3339(r.created_at);
  o["started_at"] = r.started_at ? json::value(rfc3339(*r.started_at)) : json::value(nullptr);
  o["finished_at"] = r.finished_at ? json::value(rfc3339(*r.finished_at)) : json::value(nullptr);
  return o;
}

json::value run_json(const run_info& r) {
  auto o = run_fields(r);
  o["parent_id"] = r.parent ? json::value(*r.parent) : json::value(nullptr);
  o["unclaimable"] = r.unclaimable ? json::value(*r.unclaimable) : json::value(nullptr);
  if (r.concurrency_key) {
    o["concurrency"] = json::object{
        {"key", *r.concurrency_key}, {"limit", r.concurrency_limit}, {"waiting", r.waits_for_key}};
  } else {
    o["concurrency"] = nullptr;
  }
  if (r.throttle_key) {
    o["throttle"] = json::object{{"key", *r.throttle_key},
                                 {"limit", r.throttle_limit},
                                 {"window_ms", r.throttle_window.count()},
                                 {"waiting", r.waits_for_key}};
  } else {
    o["throttle"] = nullptr;
  }
  if (r.fairness_key) {
    o["fairness"] = json::object{{"key", *r.fairness_key}, {"weight", r.fairness_weight}};
  } else {
    o["fairness"] = nullptr;
  }
  o["traceparent"] = r.traceparent ? json::value(*r.traceparent) : json::value(nullptr);
  o["input"] = r.input;
  o["output"] = r.output;
  o["claims"] = r.claims;
  o["recoveries"] = r.recoveries;
  o["waiting_for"] = with_rfc3339_times(r.waiting_for, true);  // the engine's alone, arms included
  o["history"] = with_rfc3339_times(r.history, false);         // each entry's time, not its details
  json::array hooks;
  for (const auto& h : r.hooks) {
    hooks.push_back(
        json::object{{"name", h.name},
                     {"path", h.path},
                     {"kind", h.webhook ? "webhook" : "hook"},
                     {"created_at", rfc3339(h.created_at)},
                     {"expires_at", h.expires_at ? json::value(rfc3339(*h.expires_at)) : json::value()},
                     {"metadata", h.metadata}});
  }
  o["hooks"] = std::move(hooks);
  json::array steps;
  for (const auto& s : r.steps)
    steps.push_back(step_json(s));
  o["steps"] = std::move(steps);
  return o;
}

}  // namespace

/// The longest debounce window a request may ask for: 30 days.
constexpr std::int64_t k_max_debounce_ms = 30LL * 24 * 3600 * 1000;
/// The largest concurrency limit a request may give (the engine's own bound: a slot row per unit).
constexpr std::int64_t k_max_concurrency_limit = 10'000;
/// The longest throttle window a request may give: a year.
constexpr std::int64_t k_max_throttle_window_ms = 366LL * 24 * 3600 * 1000;

start_run_request decode_start_run(const request& req) {
  auto body = body_json(req);
  if (!body.is_object() && !body.is_null()) throw bad_request{"the body must be a JSON object"};
  enqueue_options options;
  json::value input;
  if (body.is_object()) {
    for (const auto& [key, value] : body.get_object()) {
      if (key == "input") {
        input = value;
      } else if (key == "idempotency_key") {
        if (!value.is_string()) throw bad_request{"idempotency_key must be a string"};
        options.idempotency_key = std::string(value.get_string());
      } else if (key == "priority") {
        if (!value.is_int64() || value.get_int64() < INT32_MIN || value.get_int64() > INT32_MAX)
          throw bad_request{"priority must be a 32-bit integer"};
        options.priority = static_cast<int>(value.get_int64());
      } else if (key == "run_at") {
        std::optional<std::chrono::system_clock::time_point> at;
        if (value.is_string()) at = parse_rfc3339(value.get_string());
        if (!at) throw bad_request{"run_at must be an RFC 3339 time, e.g. 2026-11-26T09:00:00Z"};
        options.run_at = at;
      } else if (key == "debounce_key") {
        if (!value.is_string()) throw bad_request{"debounce_key must be a string"};
        options.debounce_key = std::string(value.get_string());
      } else if (key == "debounce_ms") {
        if (!value.is_int64() || value.get_int64() < 1 || value.get_int64() > k_max_debounce_ms)
          throw bad_request{"debounce_ms must be an integer from 1 to " + std::to_string(k_max_debounce_ms)};
        options.debounce_window = std::chrono::milliseconds(value.get_int64());
      } else if (key == "concurrency_key") {
        if (!value.is_string()) throw bad_request{"concurrency_key must be a string"};
        options.concurrency_key = std::string(value.get_string());
      } else if (key == "concurrency_limit") {
        if (!value.is_int64() || value.get_int64() < 1 || value.get_int64() > k_max_concurrency_limit)
          throw bad_request{"concurrency_limit must be an integer from 1 to " +
                            std::to_string(k_max_concurrency_limit)};
        options.concurrency_limit = static_cast<int>(value.get_int64());
      } else if (key == "throttle_key") {
        if (!value.is_string()) throw bad_request{"throttle_key must be a string"};
        options.throttle_key = std::string(value.get_string());
      } else if (key == "throttle_limit") {
        if (!value.is_int64() || value.get_int64() < 1 || value.get_int64() > k_max_concurrency_limit)
          throw bad_request{"throttle_limit must be an integer from 1 to " +
                            std::to_string(k_max_concurrency_limit)};
        options.throttle_limit = static_cast<int>(value.get_int64());
      } else if (key == "throttle_window_ms") {
        if (!value.is_int64() || value.get_int64() < 1 || value.get_int64() > k_max_throttle_window_ms)
          throw bad_request{"throttle_window_ms must be an integer from 1 to " +
                            std::to_string(k_max_throttle_window_ms)};
        options.throttle_window = std::chrono::milliseconds(value.get_int64());
      } else if (key == "fairness_key") {
        if (!value.is_string()) throw bad_request{"fairness_key must be a string"};
        options.fairness_key = std::string(value.get_string());
      } else if (key == "fairness_weight") {
        if (!value.is_int64() || value.get_int64() < 1 || value.get_int64() > storage::k_max_fairness_weight)
          throw bad_request{std::string("fairness_weight must be an integer from 1 to ")
                                .append(std::to_string(storage::k_max_fairness_weight))};
        options.fairness_weight = static_cast<int>(value.get_int64());
      } else {
        throw bad_request{
            "unknown field '" + std::string(key) +
            "' (input, idempotency_key, priority, run_at, debounce_key, debounce_ms, "
            "concurrency_key, concurrency_limit, throttle_key, throttle_limit, throttle_window_ms, "
            "fairness_key, fairness_weight)"};
      }
    }
  }
  if (auto it = req.find("Idempotency-Key"); it != req.end()) {
    const std::string header(it->value());
    if (options.idempotency_key && *options.idempotency_key != header)
      throw bad_request{"the Idempotency-Key header and the body's idempotency_key differ"};
    options.idempotency_key = header;
  }
  // The caller's W3C trace context goes on with the run. One that does not parse is refused rather than
  // dropped (the spec lets a service start a new trace instead, but a caller that meant to pass one would
  // never learn why its trace broke).
  if (auto it = req.find("traceparent"); it != req.end()) {
    const std::string header(it->value());
    if (!parse_traceparent(header))
      throw bad_request{"the traceparent header is not a W3C trace context (version-traceid-parentid-flags)",
                        "invalid_traceparent"};
    options.traceparent = header;
  }
  return {std::move(input), std::move(options)};
}

namespace {

/// POST /v1/workflows/{name}/runs: {"input":…, "idempotency_key"?:…, "priority"?:…, "run_at"?:RFC3339}, or
/// the key in an Idempotency-Key header.
boost::asio::awaitable<response> start_run(engine& e, const request& req, const std::string& workflow) {
  const auto decoded = decode_start_run(req);
  // A typed workflow's input that would not convert fails the request, not a run started with it.
  if (auto why = e.input_error(workflow, decoded.options.version, decoded.input))
    co_return error_response(status::bad_request, "invalid_input", *why);
  auto submitted = co_await e.submit(workflow, decoded.input, decoded.options);
  if (!submitted) co_return from_error(submitted.error());
  auto run = co_await e.get(submitted->id);
  if (!run) co_return from_error(run.error());
  // A repeat with the same key and input gets the run it started the first time.
  auto res = json_response(submitted->created ? status::created : status::ok, run_json(*run));
  res.set(beast_http::field::location, "/v1/runs/" + submitted->id);
  co_return res;
}

/// POST /v1/events/{name}: the body is the payload; an Idempotency-Key header makes repeats start nothing
/// more. 202 with the runs started and cancelled; 200 when a repeat found every run it would start.
boost::asio::awaitable<response> publish(engine& e, const request& req, const std::string& name) {
  auto payload = body_json(req);
  publish_options options;  // named: GCC 12 destroys a temporary inside a co_await expression twice
  if (auto it = req.find("Idempotency-Key"); it != req.end())
    options.idempotency_key = std::string(it->value());
  auto r = co_await e.publish_event(name, payload, options);
  if (!r) co_return from_error(r.error());
  json::array started, cancelled;
  bool any_new = r->started.empty();
  for (const auto& s : r->started) {
    started.push_back(json::object{{"workflow", s.workflow}, {"run_id", s.id}, {"created", s.created}});
    any_new = any_new || s.created;
  }
  for (const auto& id : r->cancelled)
    cancelled.push_back(json::value(id));
  co_return json_response(
      any_new || !r->cancelled.empty() ? status::accepted : status::ok,
      json::object{{"event", name}, {"started", std::move(started)}, {"cancelled", std::move(cancelled)}});
}

/// How long /readyz waits for the database: probes give up soon, and a hung connection must not hang them.
constexpr std::chrono::seconds k_ready_within{2};

json::value summary_json(const run_summary& r) {
  auto o = run_fields(r);
  o["parent_id"] = r.parent ? json::value(*r.parent) : json::value(nullptr);
  o["waiting_for"] = with_rfc3339_times(r.waiting_for, true);  // as the run shows it
  o["unclaimable"] = r.unclaimable ? json::value(*r.unclaimable) : json::value(nullptr);
  return o;
}

json::value inbox_hook_json(const inbox_hook& h) {
  return json::object{
      {"run_id", h.run},
      {"workflow", h.workflow},
      {"name", h.hook.name},
      {"path", h.hook.path},
      {"created_at", rfc3339(h.hook.created_at)},
      {"expires_at", h.hook.expires_at ? json::value(rfc3339(*h.hook.expires_at)) : json::value()},
      {"metadata", h.hook.metadata},
      {"run_created_at", rfc3339(h.run_created_at)}};
}

/// A page size from a query parameter: 1 to 1,000.
std::size_t decode_limit(const std::string& value) {
  std::size_t limit = 0;
  const auto* end = value.data() + value.size();
  auto [p, ec] = std::from_chars(value.data(), end, limit);
  if (ec != std::errc() || p != end || limit < 1 || limit > 1000)
    throw bad_request{"limit must be an integer from 1 to 1000"};
  return limit;
}

/// A workflow name from a query parameter.
std::string decode_workflow(const std::string& value) {
  if (value.empty() || value.size() > 255 || !storage::is_valid_utf8(value))
    throw bad_request{"workflow must be a workflow name (1 to 255 bytes of UTF-8)"};
  return value;
}

}  // namespace

run_query decode_run_query(const target& t) {
  run_query q;
  bool seen[5] = {false, false, false, false, false};
  for (const auto& [key, value] : t.query) {
    const int k = key == "workflow" ? 0
                  : key == "status" ? 1
                  : key == "limit"  ? 2
                  : key == "cursor" ? 3
                  : key == "parent" ? 4
                                    : -1;
    if (k < 0)
      throw bad_request{"unknown query parameter '" + key + "' (workflow, status, parent, limit, cursor)"};
    if (seen[k]) throw bad_request{"query parameter '" + key + "' given twice"};
    seen[k] = true;
    if (k == 0) {
      q.workflow = decode_workflow(value);
    } else if (k == 1) {
      // Besides the stored statuses, the filters of runs an operator must act on (run_filter).
      q.status = storage::run_status_from(value);
      if (!q.status) q.filter = storage::run_filter_from(value);
      if (!q.status && !q.filter)
        throw bad_request{
            "status must be one of queued, running, sleeping, waiting, completed, failed, "
            "cancelled, dead_lettered, unclaimable"};
    } else if (k == 2) {
      q.limit = decode_limit(value);
    } else if (k == 3) {
      if (!is_valid_run_id(value)) throw bad_request{"cursor must be a next_cursor this endpoint returned"};
      q.after = value;
    } else {
      if (!is_valid_run_id(value)) throw bad_request{"parent must be a run id (a UUID)"};
      q.parent = value;
    }
  }
  return q;
}

namespace {

/// `?workflow=&limit=&cursor=` of a listing a page at a time, each at most once; `valid_cursor` tells a
/// cursor this endpoint returned.
template <class Query>
Query decode_page_query(const target& t, bool (*valid_cursor)(std::string_view) noexcept) {
  Query q;
  bool seen[3] = {false, false, false};
  for (const auto& [key, value] : t.query) {
    const int k = key == "workflow" ? 0 : key == "limit" ? 1 : key == "cursor" ? 2 : -1;
    if (k < 0) throw bad_request{"unknown query parameter '" + key + "' (workflow, limit, cursor)"};
    if (seen[k]) throw bad_request{"query parameter '" + key + "' given twice"};
    seen[k] = true;
    if (k == 0) {
      q.workflow = decode_workflow(value);
    } else if (k == 1) {
      q.limit = decode_limit(value);
    } else {
      if (!valid_cursor(value)) throw bad_request{"cursor must be a next_cursor this endpoint returned"};
      q.after = value;
    }
  }
  return q;
}

}  // namespace

hook_query decode_hook_query(const target& t) {
  return decode_page_query<hook_query>(t, storage::is_valid_hook_cursor);
}

int decode_rewind_step(const request& req) {
  auto body = body_json(req);
  const json::value* step = body.is_object() ? body.get_object().if_contains("step") : nullptr;
  if (step == nullptr || !step->is_int64() || step->get_int64() < 0 || step->get_int64() > INT32_MAX ||
      body.get_object().size() != 1)
    throw bad_request{"the body must be {\"step\": <step position, from 0>}"};
  return static_cast<int>(step->get_int64());
}

std::string decode_schedule_name(std::string_view segment) {
  if (!storage::is_valid_schedule_name(segment))
    throw bad_request{"a schedule name is 1 to " + std::to_string(storage::k_max_schedule_name_bytes) +
                      " ASCII letters, digits and '-', '_', '.', ':'"};
  return std::string(segment);
}

namespace {

/// A 32-bit integer field of a request body, from `min` to `max`.
int int_field(const json::value& value, std::string_view key, std::int64_t min, std::int64_t max) {
  if (!value.is_int64() || value.get_int64() < min || value.get_int64() > max)
    throw bad_request{std::string(key) + " must be an integer from " + std::to_string(min) + " to " +
                      std::to_string(max)};
  return static_cast<int>(value.get_int64());
}

}  // namespace

schedule_spec decode_schedule_put(const request& req, std::string_view name) {
  schedule_spec spec;
  spec.name = decode_schedule_name(name);
  const auto body = body_json(req);
  if (!body.is_object())
    throw bad_request{
        "the body must be a JSON object: {\"workflow\", \"cron\", \"time_zone\"?, \"input\"?, ...}"};
  bool has_workflow = false;
  bool has_cron = false;
  for (const auto& [key, value] : body.get_object()) {
    if (key == "workflow") {
      if (!value.is_string() || value.get_string().empty() || value.get_string().size() > 255 ||
          value.get_string().find('\0') != json::string::npos)
        throw bad_request{"workflow must be a workflow name (1 to 255 bytes of UTF-8)"};
      spec.workflow = std::string(value.get_string());
      has_workflow = true;
    } else if (key == "cron") {
      if (!value.is_string())
        throw bad_request{"cron must be a string: 5 fields (\"0 9 * * mon-fri\") or an alias (\"@hourly\")"};
      spec.cron = std::string(value.get_string());
      has_cron = true;
    } else if (key == "time_zone") {
      if (!value.is_string())
        throw bad_request{"time_zone must be an IANA time zone name, e.g. \"Europe/Paris\""};
      spec.time_zone = std::string(value.get_string());
    } else if (key == "input") {
      spec.input = value;
    } else if (key == "version") {
      if (!value.is_null()) spec.version = int_field(value, key, 1, INT32_MAX);
    } else if (key == "priority") {
      spec.priority = int_field(value, key, INT32_MIN, INT32_MAX);
    } else if (key == "catch_up") {
      spec.catch_up = int_field(value, key, 0, storage::k_max_catch_up);
    } else {
      throw bad_request{"unknown field '" + std::string(key) +
                        "' (workflow, cron, time_zone, input, version, priority, catch_up)"};
    }
  }
  if (!has_workflow) throw bad_request{"the body needs workflow: the workflow each firing starts a run of"};
  if (!has_cron) throw bad_request{"the body needs cron: a 5-field cron expression or an alias"};
  // Parsed here, so that a mistake is answered with exactly what is wrong and where (the engine would only
  // say which kind of mistake).
  auto parsed = cron_schedule::parse(spec.cron, spec.time_zone);
  if (!parsed) throw bad_request{parsed.error().message, to_http(parsed.error().code).code};
  return spec;
}

schedule_query decode_schedule_query(const target& t) {
  return decode_page_query<schedule_query>(t, storage::is_valid_schedule_name);
}

namespace {

/// GET /v1/runs?workflow=&status=&limit=&cursor=: newest first; `next_cursor` continues. `status` may be
/// dead_lettered or unclaimable too.
boost::asio::awaitable<response> list_runs(engine& e, const target& t) {
  const auto q = decode_run_query(t);
  auto page = co_await e.list_runs(q);
  if (!page) co_return from_error(page.error());
  json::array runs;
  for (const auto& r : page->runs)
    runs.push_back(summary_json(r));
  co_return json_response(
      status::ok, json::object{{"runs", std::move(runs)},
                               {"next_cursor", page->next ? json::value(*page->next) : json::value()}});
}

/// GET /v1/hooks?workflow=&limit=&cursor=: the hooks that take a resume now, soonest expiry first.
boost::asio::awaitable<response> list_hooks(engine& e, const target& t) {
  const auto q = decode_hook_query(t);
  auto page = co_await e.list_hooks(q);
  if (!page) co_return from_error(page.error());
  json::array hooks;
  for (const auto& h : page->hooks)
    hooks.push_back(inbox_hook_json(h));
  co_return json_response(
      status::ok, json::object{{"hooks", std::move(hooks)},
                               {"next_cursor", page->next ? json::value(*page->next) : json::value()}});
}

json::value time_or_null(const std::optional<std::chrono::system_clock::time_point>& t) {
  return t ? json::value(rfc3339(*t)) : json::value(nullptr);
}

json::object schedule_json(const schedule_info& s) {
  json::array upcoming;
  for (const auto& t : s.upcoming)
    upcoming.push_back(json::value(rfc3339(t)));
  return json::object{{"name", s.name},
                      {"workflow", s.workflow},
                      {"version", s.version ? json::value(*s.version) : json::value(nullptr)},
                      {"cron", s.cron},
                      {"time_zone", s.time_zone},
                      {"input", s.input},
                      {"priority", s.priority},
                      {"catch_up", s.catch_up},
                      {"paused", s.paused},
                      {"next_fire_at", time_or_null(s.next_fire_at)},
                      {"last_fired_at", time_or_null(s.last_fired_at)},
                      {"last_run", s.last_run ? json::value(*s.last_run) : json::value(nullptr)},
                      {"created_at", rfc3339(s.created_at)},
                      {"updated_at", rfc3339(s.updated_at)},
                      {"upcoming", std::move(upcoming)}};
}

/// GET /v1/schedules?workflow=&limit=&cursor=: by name; `next_cursor` continues.
boost::asio::awaitable<response> list_schedules(engine& e, const target& t) {
  const auto q = decode_schedule_query(t);
  auto page = co_await e.list_schedules(q);
  if (!page) co_return from_error(page.error());
  json::array schedules;
  for (const auto& s : page->schedules)
    schedules.push_back(schedule_json(s));
  co_return json_response(
      status::ok, json::object{{"schedules", std::move(schedules)},
                               {"next_cursor", page->next ? json::value(*page->next) : json::value()}});
}

/// PUT /v1/schedules/{name}: 201 when created, 200 when it existed (`changed` says whether this put changed
/// it).
boost::asio::awaitable<response> put_schedule(engine& e, const request& req, const std::string& name) {
  const auto spec = decode_schedule_put(req, name);
  auto put = co_await e.put_schedule(spec);
  if (!put) co_return from_error(put.error());
  auto body = schedule_json(put->schedule);
  body["changed"] = put->changed;
  auto res = json_response(put->created ? status::created : status::ok, body);
  if (put->created) res.set(beast_http::field::location, "/v1/schedules/" + spec.name);
  co_return res;
}

/// GET, PUT and DELETE /v1/schedules/{name}.
boost::asio::awaitable<response> schedule(engine& e, const request& req, const std::string& segment) {
  allow_only(req.method(), {verb::get, verb::put, verb::delete_});
  if (req.method() == verb::put) co_return co_await put_schedule(e, req, segment);
  const auto name = decode_schedule_name(segment);
  if (req.method() == verb::delete_) {
    auto r = co_await e.delete_schedule(name);
    if (!r) co_return from_error(r.error());
    co_return response{status::no_content, 11};
  }
  auto s = co_await e.get_schedule(name);
  if (!s) co_return from_error(s.error());
  co_return json_response(status::ok, schedule_json(*s));
}

/// POST /v1/schedules/{name}/pause and /resume: 200 with the schedule.
boost::asio::awaitable<response> pause_or_resume(engine& e, const std::string& segment, bool pause) {
  const auto name = decode_schedule_name(segment);
  result<schedule_info> s = errc::schedule_not_found;
  if (pause) {
    s = co_await e.pause_schedule(name);
  } else {
    s = co_await e.resume_schedule(name);
  }
  if (!s) co_return from_error(s.error());
  co_return json_response(status::ok, schedule_json(*s));
}

/// How long GET /v1/stats waits for the database, as a /metrics scrape does.
constexpr std::chrono::milliseconds k_stats_within{2000};
/// Failed and cancelled runs and open hooks are counted up to this many.
constexpr std::int64_t k_stats_cap = 10'000;

json::value stats_json(const run_overview& o) {
  json::object runs{{"queued", 0}, {"running", 0}, {"sleeping", 0}, {"waiting", 0}};
  std::int64_t queue_depth = 0;
  for (const auto& c : o.unfinished) {
    runs[to_string(c.status)] = runs[to_string(c.status)].as_int64() + c.runs;
    if (c.status == storage::run_status::queued) queue_depth += c.due;
  }
  return json::object{{"at", rfc3339(o.at)},
                      {"runs", std::move(runs)},
                      {"queue_depth", queue_depth},
                      {"failed", o.failed.n},
                      {"failed_capped", o.failed.capped},
                      {"cancelled", o.cancelled.n},
                      {"cancelled_capped", o.cancelled.capped},
                      {"waiting_on_hooks", o.open_hooks.n},
                      {"waiting_on_hooks_capped", o.open_hooks.capped},
                      {"count_cap", k_stats_cap},
                      {"steps_last_minute", o.steps_last_minute},
                      {"steps_per_s", static_cast<double>(o.steps_last_minute) / 60.0}};
}

/// GET /v1/stats: a dashboard's counters, or 503 when the database does not answer within 2 s.
boost::asio::awaitable<response> stats(engine& e, const target& t) {
  if (!t.query.empty()) throw bad_request{"GET /v1/stats takes no query parameters"};
  auto count = [e = &e] { return e->overview(k_stats_cap, k_stats_within); };
  auto answer = co_await answer_within<result<run_overview>>(k_stats_within, count);
  if (!answer)
    co_return error_response(status::service_unavailable, "unavailable",
                             "the database did not answer within 2 s");
  if (!*answer) co_return from_error(answer->error());
  co_return json_response(status::ok, stats_json(**answer));
}

boost::asio::awaitable<response> route(engine& e, const request& req) {
  const auto t = parse_target(req.target());
  const auto& path = t.path;
  const auto method = req.method();
  auto only = [&](verb v) { allow_only(method, v); };
  const auto n = path.size();
  try {
    if (n == 1 && path[0] == "healthz") {
      only(verb::get);
      co_return json_response(status::ok, json::object{{"status", "ok"}});
    }
    if (n == 1 && path[0] == "readyz") {
      // The process is up (healthz) and can do its work: the database answers, the schema is this build's.
      only(verb::get);
      auto probe = [e = &e] { return e->readiness(k_ready_within); };
      auto answer = co_await answer_within<result<storage::readiness>>(k_ready_within, probe);
      if (!answer)
        co_return error_response(status::service_unavailable, "not_ready",
                                 "the database did not answer within 2 s");
      auto& r = *answer;
      if (!r)
        co_return error_response(status::service_unavailable, "not_ready",
                                 "the database does not answer: " + r.error().message());
      if (!r->migrated())
        co_return error_response(status::service_unavailable, "not_ready",
                                 "the database has " + std::to_string(r->applied) + " of this server's " +
                                     std::to_string(r->expected) + " migrations");
      co_return json_response(status::ok, json::object{{"status", "ready"}, {"migrations", r->applied}});
    }
    if (n == 2 && path[0] == "v1" && path[1] == "workflows") {
      only(verb::get);
      json::array list;
      for (const auto& w : e.workflows()) {
        if (list.empty() || list.back().at("name").as_string() != w.name)
          list.push_back(json::object{{"name", w.name}, {"versions", json::array{}}});
        auto& entry = list.back().as_object();
        entry["versions"].as_array().push_back(w.version);
        // The newest version's (the one a new run gets).
        entry["input_example"] = w.input_example;
        entry["description"] = w.description;
      }
      co_return json_response(status::ok, json::object{{"workflows", std::move(list)}});
    }
    if (n == 2 && path[0] == "v1" && path[1] == "runs") {
      only(verb::get);
      co_return co_await list_runs(e, t);
    }
    if (n == 2 && path[0] == "v1" && path[1] == "hooks") {
      only(verb::get);
      co_return co_await list_hooks(e, t);
    }
    if (n == 2 && path[0] == "v1" && path[1] == "schedules") {
      only(verb::get);
      co_return co_await list_schedules(e, t);
    }
    if (n == 2 && path[0] == "v1" && path[1] == "stats") {
      only(verb::get);
      co_return co_await stats(e, t);
    }
    if (n >= 3 && path[0] == "v1" && path[1] == "webhooks")
      co_return co_await deliver_webhook(e, req, path[2]);
    if (n >= 2 && path[0] == "v1") {
      if (n == 4 && path[1] == "workflows" && path[3] == "runs") {
        only(verb::post);
        co_return co_await start_run(e, req, path[2]);
      }
      if (n == 3 && path[1] == "schedules") co_return co_await schedule(e, req, path[2]);
      if (n == 4 && path[1] == "schedules" && (path[3] == "pause" || path[3] == "resume")) {
        only(verb::post);
        co_return co_await pause_or_resume(e, path[2], path[3] == "pause");
      }
      if (n == 3 && path[1] == "runs") {
        only(verb::get);
        auto run = co_await e.get(path[2]);
        if (!run) co_return from_error(run.error());
        co_return json_response(status::ok, run_json(*run));
      }
      if (n == 4 && path[1] == "runs" && path[3] == "cancel") {
        only(verb::post);
        const cancel_options options;  // named, as above
        auto s = co_await e.cancel(path[2], options);
        if (!s) co_return from_error(s.error());
        co_return json_response(status::ok, json::object{{"run_id", path[2]}, {"status", to_string(*s)}});
      }
      if (n == 4 && path[1] == "runs" && path[3] == "retry") {
        only(verb::post);
        auto r = co_await e.retry(path[2]);
        if (!r) co_return from_error(r.error());
        co_return json_response(status::accepted, json::object{{"run_id", path[2]}});
      }
      if (n == 4 && path[1] == "runs" && path[3] == "rewind") {
        only(verb::post);
        const int step = decode_rewind_step(req);
        auto r = co_await e.rewind(path[2], step);
        if (!r) co_return from_error(r.error());
        co_return json_response(status::accepted, json::object{{"run_id", path[2]}});
      }
      if (n == 5 && path[1] == "runs" && path[3] == "events") {
        only(verb::post);
        auto payload = body_json(req);
        const event_options options;  // named: GCC 12 destroys a defaulted temporary in co_await twice
        auto r = co_await e.send_event(path[2], path[4], payload, options);
        if (!r) co_return from_error(r.error());
        co_return json_response(status::accepted, json::object{{"run_id", path[2]}, {"event", path[4]}});
      }
      if (n == 3 && path[1] == "events") {
        only(verb::post);
        co_return co_await publish(e, req, path[2]);
      }
      if (n == 3 && path[1] == "hooks") {
        only(verb::post);
        auto payload = body_json(req);
        resume_options options;  // named, as above
        if (const auto it = req.find("Keel-Signature"); it != req.end()) {
          options.signature = std::string(it->value());
          options.signed_body = req.body();
        }
        auto r = co_await e.resume_hook(path[2], payload, options);
        if (!r) co_return from_error(r.error());
        // A repeat with the same payload (a webhook sender's retry) changed nothing: 200, not 202.
        co_return json_response(r->repeated ? status::ok : status::accepted,
                                json::object{{"run_id", r->run}});
      }
    }
  } catch (const wrong_method& w) {
    co_return method_not_allowed(w.allowed);
  }
  co_return error_response(status::not_found, "not_found", "no such endpoint: " + t.decoded_path);
}

}  // namespace

response json_response(status s, const json::value& body) {
  response res{s, 11};
  res.set(beast_http::field::content_type, "application/json");
  res.body() = json::serialize(body);
  return res;
}

response error_response(status s, std::string_view code, std::string_view message) {
  // A message may quote the request (a query parameter's name, a path) and a JSON string must be UTF-8:
  // a client's JSON parser would otherwise refuse the error itself.
  return json_response(
      s, json::object{{"error", json::object{{"code", code}, {"message", storage::valid_utf8(message)}}}});
}

response from_error(error_code ec) {
  auto e = to_http(ec);
  return error_response(e.status, e.code, ec.message());
}

response method_not_allowed(verb allowed) {
  return method_not_allowed(std::vector<verb>{allowed});
}

response method_not_allowed(const std::vector<verb>& allowed) {
  std::string list;    // "GET, PUT, DELETE"
  std::string phrase;  // "GET, PUT or DELETE"
  for (std::size_t i = 0; i < allowed.size(); ++i) {
    const auto name = beast_http::to_string(allowed[i]);
    if (i > 0) {
      list += ", ";
      phrase += i + 1 == allowed.size() ? " or " : ", ";
    }
    list += name;
    phrase += name;
  }
  auto res = error_response(status::method_not_allowed, "method_not_allowed", "use " + phrase + " here");
  res.set(beast_http::field::allow, list);
  return res;
}

void allow_only(verb method, verb allowed) {
  if (method != allowed && !(allowed == verb::get && method == verb::head)) throw wrong_method{{allowed}};
}

void allow_only(verb method, const std::vector<verb>& allowed) {
  for (const auto v : allowed)
    if (method == v || (v == verb::get && method == verb::head)) return;
  throw wrong_method{allowed};
}

target parse_target(std::string_view text) {
  auto parsed = boost::urls::parse_origin_form(text);
  if (!parsed) throw bad_request{"the request target is not a valid path"};
  target t;
  t.decoded_path = std::string(parsed->path());
  for (auto s : parsed->segments()) {
    if (s.find('\0') != std::string::npos) throw bad_request{"a path segment holds a NUL character"};
    t.path.push_back(std::move(s));
  }
  for (auto p : parsed->params()) {
    if (p.key.find('\0') != std::string::npos || p.value.find('\0') != std::string::npos)
      throw bad_request{"a query parameter holds a NUL character"};
    t.query.emplace_back(std::move(p.key), std::move(p.value));
  }
  return t;
}

namespace {

/// The target as a log may show it: a (web)hook's token is its authorisation, so it is left out.
std::string loggable_target(std::string_view target) {
  for (const std::string_view prefix : {"/v1/hooks/", "/v1/webhooks/"}) {
    if (target.substr(0, prefix.size()) != prefix) continue;
    const auto rest = target.substr(prefix.size());
    const auto end = rest.find_first_of("/?");
    return std::string(prefix) + "<token>" +
           std::string(end == std::string_view::npos ? "" : rest.substr(end));
  }
  return std::string(target);
}

}  // namespace

boost::asio::awaitable<response> handle(engine& e, const request& req) {
  std::optional<response> out;
  try {
    out = co_await route(e, req);
  } catch (const bad_request& b) {
    out = error_response(status::bad_request, b.code, b.message);
  } catch (const std::exception& ex) {
    log::error("http", std::string(req.method_string()) + " " + loggable_target(req.target()) +
                           " failed: " + ex.what());
    out = error_response(status::internal_server_error, "internal", "the server failed to answer");
  }
  co_return std::move(*out);
}

}  // namespace keel::http::detail
