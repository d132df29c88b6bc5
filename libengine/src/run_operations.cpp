// What callers do to runs from outside their execution: cancel (cooperative or at once), retry, rewind,
// send events and resume hooks; and how a run in flight here learns that its epoch moved on or that it
// was asked to cancel.
#include <algorithm>
#include <boost/asio/post.hpp>
#include <limits>

#include "engine_impl.hpp"
#include "hook_signature.hpp"
#include "hook_token.hpp"
#include "keel/common/log.hpp"

namespace keel::detail {

namespace asio = boost::asio;

asio::awaitable<result<run_status>> engine_impl::cancel(run_id id, cancel_options options) {
  if (!is_valid_run_id(id)) co_return errc::invalid_run_id;
  auto r = co_await store_.cancel(id, options.grace);
  if (!r) co_return engine_error(r.error());
  if (*r == run_status::cancelled) {
    fence_local(id, std::numeric_limits<std::int64_t>::max());
  } else if (!storage::is_terminal(*r)) {
    cancel_requested(id);  // at once if it runs here (others hear the notification)
    wake_claimer();        // a parked run was queued to see it
  }
  co_return *r;
}

void engine_impl::cancel_requested(const run_id& id) {
  asio::post(ctl_, [this, id] {
    auto it = inflight_.find(id);
    if (it == inflight_.end()) {
      // Perhaps claimed here a moment before the request (the claim said nothing of it) and not launched
      // yet: launch looks here. Kept briefly; a claim made after the request reports it itself.
      const auto now = std::chrono::steady_clock::now();
      std::erase_if(recent_cancels_,
                    [now](const auto& c) { return now - c.second > std::chrono::seconds(10); });
      recent_cancels_.emplace_back(id, now);
      return;
    }
    auto st = it->second;
    st->cancel_requested.store(true, std::memory_order_release);
    asio::post(st->strand, [st] { st->cancel_backoffs(); });  // a retry backoff ends now, to see it
  });
}

void engine_impl::fence_local(const run_id& id, std::int64_t epoch) {
  // A run in flight here stops at its next step boundary (its writes are fenced by the new epoch).
  asio::post(ctl_, [this, id, epoch] {
    if (auto it = inflight_.find(id); it != inflight_.end() && it->second->claim.epoch < epoch) {
      auto st = it->second;
      st->lost.store(true, std::memory_order_release);
      asio::post(st->strand, [st] { st->cancel_backoffs(); });
    }
  });
}

asio::awaitable<result<void>> engine_impl::retry(run_id id) {
  if (!is_valid_run_id(id)) co_return errc::invalid_run_id;
  auto r = co_await store_.retry(id);
  if (!r) co_return engine_error(r.error());
  if (*r == storage::retry_outcome::not_failed) co_return errc::run_not_failed;
  wake_claimer();
  co_return result<void>{};
}

asio::awaitable<result<void>> engine_impl::rewind(run_id id, int from_step) {
  if (!is_valid_run_id(id)) co_return errc::invalid_run_id;
  auto r = co_await store_.rewind(id, from_step);
  if (!r) co_return engine_error(r.error());
  fence_local(id, *r);
  wake_claimer();
  co_return result<void>{};
}

asio::awaitable<result<std::string>> engine_impl::hook_secret() {
  if (!options_.hook_secret.empty()) co_return options_.hook_secret;
  {
    std::lock_guard lock(secret_mutex_);
    if (!database_hook_secret_.empty()) co_return database_hook_secret_;
  }
  auto s = co_await store_.hook_secret();
  if (!s) co_return s.error();
  std::lock_guard lock(secret_mutex_);
  database_hook_secret_ = *s;
  co_return std::move(*s);
}

result<storage::hook_resume> engine_impl::signed_resume(const boost::json::value& payload,
                                                        const resume_options& options) const {
  storage::hook_resume resume{{}, payload, options.resumed_by, {}, std::nullopt, 0};
  if (!options.signature) return resume;
  const auto now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  auto verified = verify_signature(*options.signature, options.signed_body, options_.webhook_secrets,
                                   now.count(), options_.signature_tolerance);
  if (!verified) return verified.error();
  resume.signature_keys = std::move(verified->keys);
  resume.signature = std::move(verified->message_digest);
  resume.signed_at = verified->signed_at;
  // Kept while a replay could still pass the tolerance check (either side of now), and then some.
  resume.replay_window =
      std::max(std::chrono::seconds(900), 2 * options_.signature_tolerance + std::chrono::seconds(60));
  return resume;
}

asio::awaitable<result<hook_resumption>> engine_impl::resume_hook(
    std::string token, storage::hook_resume resume, std::optional<boost::json::value>* webhook_rule) {
  // A token is 43 URL-safe characters; anything else names no hook (and never reaches SQL).
  const bool well_formed = token.size() == 43 && std::all_of(token.begin(), token.end(), [](char c) {
                             return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                                    (c >= '0' && c <= '9') || c == '-' || c == '_';
                           });
  if (!well_formed) co_return errc::hook_not_found;
  resume.token_hash = hook_token_hash(token);
  auto r = co_await store_.resume_hook(resume);
  if (!r) co_return r.error();
  if (webhook_rule != nullptr) *webhook_rule = std::move(r->webhook);
  switch (r->outcome) {
    case storage::hook_resume_outcome::resumed:
    case storage::hook_resume_outcome::repeated:
      wake_claimer();  // the run may be due now
      co_return hook_resumption{std::move(r->run), r->outcome == storage::hook_resume_outcome::repeated};
    case storage::hook_resume_outcome::not_found:
      co_return errc::hook_not_found;
    case storage::hook_resume_outcome::expired:
      co_return errc::hook_expired;
    case storage::hook_resume_outcome::already_resumed:
      co_return errc::hook_already_resumed;
    case storage::hook_resume_outcome::closed:
      co_return errc::hook_closed;
    case storage::hook_resume_outcome::not_signed:
      co_return errc::signature_required;
    case storage::hook_resume_outcome::replayed:
      co_return errc::signature_replayed;
  }
  co_return errc::hook_not_found;
}

asio::awaitable<result<void>> engine_impl::send_event(storage::event_delivery event) {
  if (!is_valid_run_id(event.run)) co_return errc::invalid_run_id;
  auto r = co_await store_.send_event(event);
  if (!r) {
    if (r.error() == storage::errc::run_finished) co_return errc::run_finished;
    co_return engine_error(r.error());
  }
  // The run may be due now; this worker may have room for it (other workers hear the notification).
  wake_claimer();
  co_return result<void>{};
}

}  // namespace keel::detail
