// Webhooks that receive whole requests: a webhook is a hook (same token, same durable wait) whose payload is
// the request and whose sender waits for an answer the run sends from a step (or a static one).
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include "engine_impl.hpp"
#include "hook_token.hpp"
#include "http_client.hpp"
#include "http_message_json.hpp"
#include "keel/common/log.hpp"
#include "keel/engine/context.hpp"
#include "keel/engine/engine.hpp"
#include "keel/storage/json_limits.hpp"
#include "run_state.hpp"

namespace keel {

namespace asio = boost::asio;
namespace json = boost::json;

namespace {

constexpr std::string_view k_respond_step_prefix = "keel.webhook_respond:";
/// A request waiting for its run's answer reads it when told (keel_webhooks), and at least this often in
/// case a notification was lost while the listener reconnected.
constexpr std::chrono::milliseconds k_answer_poll{2'000};

/// Why `r` cannot be sent as an HTTP response; empty when it can.
std::string invalid_response(const webhook_response& r) {
  if (r.status < 200 || r.status > 599) return "the status must be 200 to 599";
  if ((r.status == 204 || r.status == 304) && !r.body.empty())
    return "a " + std::to_string(r.status) + " answer has no body";
  for (const auto& [name, value] : r.headers) {
    if (!detail::is_http_token(name))
      return "a header's name is not an HTTP token: '" + storage::valid_utf8(name) + "'";
    if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
      return "header '" + name + "' holds CR, LF or NUL";
    // Framing is the server's; a cookie would be set for keeld's own origin (the dashboard's).
    for (const std::string_view framing : {"content-length", "transfer-encoding", "connection", "keep-alive",
                                           "upgrade", "te", "trailer", "set-cookie"}) {
      if (detail::iequals(name, framing)) return "header '" + name + "' is the server's to set";
    }
  }
  return {};
}

/// Fails the run (a mistake in the workflow, not something to retry), as create_hook does.
[[noreturn]] void refuse(detail::run_state& st, const std::string& message) {
  json::object error;
  error["code"] = "invalid_argument";
  error["message"] = storage::valid_utf8(message);
  st.poisoned = std::make_exception_ptr(step_failed_error(json::value(std::move(error))));
  std::rethrow_exception(st.poisoned);
}

}  // namespace

std::optional<std::string_view> webhook_request::header(std::string_view name) const {
  return detail::find_field(headers, name);
}

std::optional<json::value> webhook_request::json() const {
  return detail::parse_json_body(body);
}

void tag_invoke(json::value_from_tag, json::value& v, const webhook_request& r) {
  json::object o;
  o["method"] = storage::valid_utf8(r.method);
  o["path"] = storage::valid_utf8(r.path);
  o["query"] = storage::valid_utf8(r.query);
  o["headers"] = detail::fields_json(r.headers);
  detail::put_body(o, r.body);
  v = std::move(o);
}

webhook_request tag_invoke(json::value_to_tag<webhook_request>, const json::value& v) {
  const auto& o = v.as_object();
  webhook_request r;
  r.method = std::string(o.at("method").as_string());
  r.path = std::string(o.at("path").as_string());
  r.query = std::string(o.at("query").as_string());
  r.headers = detail::fields_of(o.at("headers"));
  r.body = detail::body_of(o);
  return r;
}

void tag_invoke(json::value_from_tag, json::value& v, const webhook_response& r) {
  json::object o;
  o["status"] = r.status;
  o["headers"] = detail::fields_json(r.headers);
  detail::put_body(o, r.body);
  v = std::move(o);
}

webhook_response tag_invoke(json::value_to_tag<webhook_response>, const json::value& v) {
  const auto& o = v.as_object();
  webhook_response r;
  r.status = json::value_to<unsigned>(o.at("status"));
  r.headers = detail::fields_of(o.at("headers"));
  r.body = detail::body_of(o);
  return r;
}

asio::awaitable<webhook> context::create_webhook(std::string_view name, const webhook_options& options) {
  // Copied before the first suspension.
  std::string named(name);
  hook_options hook;
  hook.ttl = options.ttl;
  hook.metadata = options.metadata;
  json::object rule;
  if (options.respond_with) {
    if (auto why = invalid_response(*options.respond_with); !why.empty())
      refuse(*state_, "create_webhook '" + named + "': respond_with: " + why);
    rule["respond_with"] = json::value_from(*options.respond_with);
  } else {
    if (options.response_timeout < std::chrono::milliseconds::zero() ||
        options.response_timeout > std::chrono::minutes(5))
      refuse(*state_, "create_webhook '" + named + "': response_timeout must be 0 to 5 minutes");
    rule["response_timeout_ms"] = options.response_timeout.count();
  }
  std::optional<json::value> webhook_rule(json::value(std::move(rule)));
  webhook w;
  w.hook_ = co_await make_hook(std::move(named), std::move(hook), std::move(webhook_rule));
  co_return w;
}

asio::awaitable<std::optional<webhook_request>> webhook::wait() {
  auto payload = co_await hook_.wait();
  if (!payload) co_return std::nullopt;
  co_return json::value_to<webhook_request>(*payload);
}

asio::awaitable<void> webhook::respond(const webhook_response& response) {
  auto& st = *hook_.run_;
  detail::check_handle(st, hook_.made_in_, "webhook::respond of webhook '" + hook_.name_ + "'");
  if (auto why = invalid_response(response); !why.empty())
    refuse(st, "webhook::respond of webhook '" + hook_.name_ + "': " + why);
  json::value answer = json::value_from(response);
  const int seq = hook_.seq_;
  auto send = [&st, &answer, seq]() -> asio::awaitable<json::value> {
    auto set = co_await st.engine.store_.set_webhook_response(st.lease(), seq, answer);
    if (!set && set.error() == storage::errc::fenced) detail::lose_lease(st);
    if (!set && storage::is_transient(set.error()))
      throw detail::run_interrupted{detail::run_interrupted::why::released};
    // Over the payload limits: the same answer would be refused again.
    if (!set) throw non_retriable_error("cannot answer the webhook: " + set.error().message());
    co_return json::value(json::object{{"status", answer.at("status")}});
  };
  const std::string step_name = std::string(k_respond_step_prefix) + hook_.name_;
  co_await hook_.ctx_->step(step_name, send);
}

asio::awaitable<result<webhook_delivery>> engine::deliver_webhook(std::string_view token,
                                                                  const webhook_request& request) {
  std::string copied(token);
  json::value payload = json::value_from(request);
  co_return co_await impl_->deliver_webhook(std::move(copied), std::move(payload));
}

void engine::end_webhook_waits() noexcept {
  impl_->webhook_waits_ended_.store(true, std::memory_order_release);
  try {
    impl_->wake_webhook_waiters();
  } catch (...) {
    // (A post that cannot allocate: the waits end at their next poll instead.)
  }
}

namespace detail {

struct engine_impl::webhook_waiter {
  explicit webhook_waiter(asio::io_context& ioc) : strand(asio::make_strand(ioc)), timer(strand) {}
  asio::strand<asio::io_context::executor_type> strand;
  asio::steady_timer timer;
  bool answered = false;  ///< on the strand
};

asio::awaitable<result<webhook_delivery>> engine_impl::deliver_webhook(std::string token,
                                                                       json::value request) {
  storage::hook_resume resume{{}, std::move(request), std::nullopt, {}, std::nullopt, 0};
  resume.webhook = true;
  std::optional<json::value> rule;
  auto r = co_await resume_hook(token, std::move(resume), &rule);
  if (!r) co_return r.error();
  webhook_delivery out{r->run, r->repeated, std::nullopt};
  const auto* o = rule ? rule->if_object() : nullptr;
  if (o == nullptr) co_return out;
  if (const auto* fixed = o->if_contains("respond_with")) {
    out.response = json::value_to<webhook_response>(*fixed);
    co_return out;
  }
  std::chrono::milliseconds timeout{0};
  if (const auto* t = o->if_contains("response_timeout_ms"); t && t->is_int64())
    timeout = std::chrono::milliseconds(t->as_int64());
  out.response = co_await await_webhook_answer(hook_token_hash(token), timeout);
  co_return out;
}

asio::awaitable<std::optional<webhook_response>> engine_impl::await_webhook_answer(
    std::string token_hash, std::chrono::milliseconds timeout) {
  auto waiter = std::make_shared<webhook_waiter>(ioc_);
  {
    std::lock_guard lock(webhook_mutex_);
    webhook_waiters_.emplace(token_hash, waiter);
  }
  // On the waiter's strand, where webhook_answered wakes it.
  auto wait = [this, waiter, token_hash, timeout]() -> asio::awaitable<std::optional<webhook_response>> {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      waiter->answered = false;
      auto answer = co_await store_.webhook_response(token_hash);
      if (answer && *answer) {
        try {
          co_return json::value_to<webhook_response>(**answer);
        } catch (const std::exception& e) {
          log::error("engine", std::string("a webhook's answer does not read back: ") + e.what());
          co_return std::nullopt;
        }
      }
      if (!answer) log::warn("engine", "cannot read a webhook's answer: " + answer.error().message());
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline || webhook_waits_ended_.load(std::memory_order_acquire))
        co_return std::nullopt;  // 202: the run has the request
      if (waiter->answered) continue;
      waiter->timer.expires_after(
          std::min<std::chrono::steady_clock::duration>(deadline - now, k_answer_poll));
      co_await waiter->timer.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  };
  auto waiting = asio::co_spawn(waiter->strand, std::move(wait), asio::use_awaitable);
  std::optional<webhook_response> answer;
  std::exception_ptr failed;
  try {
    answer = co_await std::move(waiting);
  } catch (...) {
    failed = std::current_exception();
  }
  {
    std::lock_guard lock(webhook_mutex_);
    auto [first, last] = webhook_waiters_.equal_range(token_hash);
    for (auto it = first; it != last; ++it) {
      if (it->second == waiter) {
        webhook_waiters_.erase(it);
        break;
      }
    }
  }
  if (failed) std::rethrow_exception(failed);
  co_return answer;
}

void engine_impl::wake_webhook_waiters() {
  std::lock_guard lock(webhook_mutex_);
  for (const auto& [hash, waiter] : webhook_waiters_) {
    asio::post(waiter->strand, [w = waiter] {
      w->answered = true;
      w->timer.cancel();
    });
  }
}

void engine_impl::webhook_answered(std::string_view token_hash) {
  std::lock_guard lock(webhook_mutex_);
  auto [first, last] = webhook_waiters_.equal_range(token_hash);
  for (auto it = first; it != last; ++it) {
    asio::post(it->second->strand, [w = it->second] {
      w->answered = true;
      w->timer.cancel();
    });
  }
}

}  // namespace detail
}  // namespace keel
