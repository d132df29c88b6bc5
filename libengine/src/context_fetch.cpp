// ctx.fetch: an outbound HTTP/1.1 request as one checkpointed step. The step's body makes the attempts itself
// (so that a 5xx or 429 can be retried and still be returned, and Retry-After honoured), and its record is
// the response, which every replay returns.
#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>
#include <cstdio>

#include "coded_step_failure.hpp"
#include "engine_impl.hpp"
#include "http_client.hpp"
#include "http_message_json.hpp"
#include "keel/common/log.hpp"
#include "keel/engine/context.hpp"
#include "keel/engine/json_types.hpp"
#include "keel/storage/json_limits.hpp"

namespace keel {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using std::chrono::system_clock;

constexpr std::string_view k_fetch_step_prefix = "keel.fetch:";
/// The codes a fetch step fails with (its record's and step_failed_error's "code").
constexpr std::string_view k_fetch_failed = "fetch_failed";
constexpr std::string_view k_response_too_large = "response_too_large";

bool has_header(const http_fields& headers, std::string_view name) {
  return detail::find_field(headers, name).has_value();
}

/// What is wrong with `request`, if anything (and its URL taken apart into `target` when that much is right).
std::optional<std::string> invalid_request(const fetch_request& request,
                                           std::optional<detail::http_target>& target) {
  if (!detail::is_http_token(request.method)) return "the method must be an HTTP token (GET, POST, ...)";
  std::string why;
  target = detail::parse_http_url(request.url, why);
  if (!target) return why;
  for (const auto& [name, value] : request.headers) {
    if (!detail::is_http_token(name))
      return "header name '" + storage::valid_utf8(name) + "' is not an HTTP token";
    // CR or LF would let a value start a header (or a request) of its own.
    if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
      return "the value of header '" + name + "' contains CR, LF or NUL";
  }
  if (request.timeout <= std::chrono::milliseconds::zero()) return "the timeout must be positive";
  return std::nullopt;
}

/// "keel.fetch:GET https://api.example.com/v1/charges": at most 255 bytes (the URL is ASCII once parsed).
std::string step_name(const std::string& shown) {
  std::string name(k_fetch_step_prefix);
  name.append(storage::valid_utf8(shown));
  if (name.size() > storage::k_max_key_bytes) name.resize(storage::k_max_key_bytes);
  return name;
}

/// The step's record: {"status", "headers": [[name, value], ...], "body"} (or "body_base64" for a body that
/// is not UTF-8 text without NULs, which jsonb cannot hold).
json::value record_of(const fetch_response& r) {
  json::object o;
  o["status"] = r.status;
  o["headers"] = detail::fields_json(r.headers);
  detail::put_body(o, r.body);
  return o;
}

fetch_response response_of(const json::value& record) {
  fetch_response r;
  const auto& o = record.as_object();
  r.status = static_cast<unsigned>(o.at("status").to_number<std::int64_t>());
  r.headers = detail::fields_of(o.at("headers"));
  r.body = detail::body_of(o);
  return r;
}

/// An HTTP-date (RFC 9110 section 5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime forms), in UTC.
std::optional<system_clock::time_point> parse_http_date(std::string_view text) {
  static constexpr std::string_view k_months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::string s(text);
  char month[4] = {};
  int day = 0, year = 0, hour = 0, minute = 0, second = 0;
  const auto comma = s.find(',');
  const char* rest = comma == std::string::npos ? nullptr : s.c_str() + comma + 1;
  bool parsed = false;
  if (rest &&
      std::sscanf(rest, " %2d %3s %4d %2d:%2d:%2d GMT", &day, month, &year, &hour, &minute, &second) == 6) {
    parsed = true;  // Sun, 06 Nov 1994 08:49:37 GMT
  } else if (rest && std::sscanf(rest, " %2d-%3s-%2d %2d:%2d:%2d GMT", &day, month, &year, &hour, &minute,
                                 &second) == 6) {
    year += year < 70 ? 2000 : 1900;  // Sunday, 06-Nov-94 08:49:37 GMT
    parsed = true;
  } else if (const auto space = s.find(' ');
             space != std::string::npos && std::sscanf(s.c_str() + space, " %3s %2d %2d:%2d:%2d %4d", month,
                                                       &day, &hour, &minute, &second, &year) == 6) {
    parsed = true;  // Sun Nov  6 08:49:37 1994
  }
  if (!parsed) return std::nullopt;
  const auto m = std::find(std::begin(k_months), std::end(k_months), std::string_view(month));
  if (m == std::end(k_months) || hour > 23 || minute > 59 || second > 60) return std::nullopt;
  const std::chrono::year_month_day date{
      std::chrono::year(year), std::chrono::month(static_cast<unsigned>(m - std::begin(k_months) + 1)),
      std::chrono::day(static_cast<unsigned>(day))};
  if (!date.ok()) return std::nullopt;
  return std::chrono::sys_days(date) + std::chrono::hours(hour) + std::chrono::minutes(minute) +
         std::chrono::seconds(second);
}

/// How long a 429 or 5xx asks to wait (Retry-After: delta seconds or an HTTP-date), if it says.
std::optional<std::chrono::milliseconds> retry_after(const fetch_response& r) {
  const auto value = r.header("Retry-After");
  if (!value || value->empty()) return std::nullopt;
  if (std::all_of(value->begin(), value->end(), [](char c) { return c >= '0' && c <= '9'; })) {
    // Nine digits are over 31 years: anything longer is capped by retry.max_delay anyway.
    if (value->size() > 9) return std::chrono::milliseconds::max();
    return std::chrono::seconds(std::stol(std::string(*value)));
  }
  const auto at = parse_http_date(*value);
  if (!at) return std::nullopt;
  const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(*at - system_clock::now());
  return std::max(wait, std::chrono::milliseconds::zero());
}

bool worth_another_attempt(unsigned status) {
  return status == 429 || (status >= 500 && status <= 599);
}

}  // namespace

std::optional<std::string_view> fetch_response::header(std::string_view name) const {
  return detail::find_field(headers, name);
}

std::optional<json::value> fetch_response::json() const {
  return detail::parse_json_body(body);
}

asio::awaitable<fetch_response> context::fetch(const fetch_request& request, const step_options& options) {
  auto& st = *state_;
  std::optional<detail::http_target> target;
  if (auto why = invalid_request(request, target)) {
    // A request that cannot be sent is a bug in the workflow: failing the run beats retrying it.
    json::object error;
    error["code"] = "invalid_argument";
    error["message"] = "ctx.fetch: " + *why;
    st.poisoned = std::make_exception_ptr(step_failed_error(json::value(std::move(error))));
    std::rethrow_exception(st.poisoned);
  }
  // Copied before the first suspension: the caller's request may be a temporary of its own frame.
  const std::string method = request.method;
  const std::string body = request.body;
  const auto timeout = request.timeout;
  const auto max_body = request.max_response_bytes;
  const retry_policy retry = options.retry;

  // The key and the span are this step position's (taken before the step takes it): the same on every
  // attempt and on every execution of this generation, so a server can tell a repeat from a new request.
  std::string position;
  if (branch_ != nullptr) {
    position.append("b").append(branch_->path).append("@").append(std::to_string(branch_->next_local));
  } else {
    position = std::to_string(st.next_seq);
  }
  http_fields headers = request.headers;
  if (!has_header(headers, "Host")) headers.emplace_back("Host", target->authority);
  if (!has_header(headers, "User-Agent")) headers.emplace_back("User-Agent", detail::user_agent());
  if (!has_header(headers, "Idempotency-Key")) {
    std::string key = "keel:";
    key.append(st.claim.id)
        .append(":")
        .append(std::to_string(st.claim.generation))
        .append(":")
        .append(position);
    headers.emplace_back("Idempotency-Key", std::move(key));
  }
  if (!has_header(headers, "traceparent")) {
    if (auto trace = this->trace()) headers.emplace_back("traceparent", trace->traceparent());
  }
  // One connection per attempt (no pool): say so, and the server need not wait for another request.
  if (!has_header(headers, "Connection")) headers.emplace_back("Connection", "close");

  // What the history, errors and logs show of the call: the URL can carry a secret in its path.
  const std::string shown = request.name.empty() ? method + " " + target->without_query : request.name;
  const std::string name = step_name(shown);
  auto attempts = [&]() -> asio::awaitable<json::value> {
    std::shared_ptr<asio::ssl::context> tls;
    if (target->tls) {
      try {
        tls = detail::tls_client_context(st.engine.options_.fetch_ca_file);
      } catch (const std::exception& e) {
        throw detail::coded_step_failure(std::string(k_fetch_failed), e.what(), 0);
      }
    }
    const detail::http_exchange_options exchange{method, &headers, &body, timeout, max_body, tls.get()};
    const int max_attempts = std::max(1, retry.max_attempts);
    // The step itself makes one attempt: its backoff timer is free, and cut short like a step's when the
    // engine stops, the lease is lost or the run is asked to cancel.
    auto& backoff = branch_ != nullptr ? branch_->backoff : st.backoff;
    // ctx.step's timeout (options.timeout) cancels this coroutine: its pending operation ends at once, and no
    // further attempt may start (the step has failed with step_timeout; what is thrown here is not recorded).
    auto end_if_timed_out = [&](int attempt) -> asio::awaitable<void> {
      const auto state = co_await asio::this_coro::cancellation_state;
      if (state.cancelled() != asio::cancellation_type::none)
        throw detail::coded_step_failure(std::string(k_fetch_failed), "cancelled by the step's timeout",
                                         attempt);
    };
    for (int attempt = 1;; ++attempt) {
      auto outcome = co_await detail::http_exchange(*target, exchange);
      co_await end_if_timed_out(attempt);
      if (outcome.too_large)
        throw detail::coded_step_failure(std::string(k_response_too_large), shown + ": " + outcome.error,
                                         attempt);
      if (outcome.response && !worth_another_attempt(outcome.response->status))
        co_return record_of(*outcome.response);
      auto give_up = [&]() -> json::value {
        if (outcome.response) return record_of(*outcome.response);
        std::string message = shown + ": " + outcome.error;
        message.append("; gave up after ")
            .append(std::to_string(attempt))
            .append(attempt == 1 ? " attempt" : " attempts");
        throw detail::coded_step_failure(std::string(k_fetch_failed), message, attempt);
      };
      if (attempt >= max_attempts || st.cancel_requested.load(std::memory_order_acquire)) co_return give_up();

      auto delay = retry.delay_after(attempt, st.engine.random_unit());
      if (outcome.response) {
        if (auto asked = retry_after(*outcome.response)) {
          // Asked to wait longer than the policy allows: retrying sooner would be refused again.
          if (*asked > retry.max_delay) co_return give_up();
          delay = *asked;
        }
      }
      delay = std::min(delay, retry.max_delay);
      const std::string failure =
          outcome.response ? "HTTP " + std::to_string(outcome.response->status) : outcome.error;
      log::info("engine", "run " + st.claim.id + ": " + shown + " attempt " + std::to_string(attempt) +
                              " failed (" + failure + "); next in " + detail::duration_text(delay));
      st.engine.emit(run_event::kind::step_retrying, st, name, attempt, failure);
      // A stop or lost lease that came during the attempt found no wait to cut short: seen before waiting.
      detail::check_interrupt(st, false);
      backoff.expires_after(delay);
      co_await backoff.async_wait(asio::as_tuple(asio::use_awaitable));
      co_await end_if_timed_out(attempt);
      // A stop or a lost lease hands the run back (the request is made again by the next execution, with the
      // same key); a cancel ends the attempts with what the last one gave.
      detail::check_interrupt(st, false);
      if (st.cancel_requested.load(std::memory_order_acquire)) co_return give_up();
    }
  };
  step_options once;
  once.retry.max_attempts = 1;
  once.timeout = options.timeout;
  const json::value record = co_await step(name, attempts, once);
  co_return response_of(record);
}

}  // namespace keel
