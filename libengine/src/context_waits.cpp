// Durable waits (ctx.sleep, ctx.wait_for_event, hooks, ctx.any / ctx.all) and recorded values (ctx.now,
// ctx.random, ctx.uuid).
#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/value.hpp>

#include "engine_impl.hpp"
#include "hook_token.hpp"
#include "keel/common/log.hpp"
#include "keel/engine/context.hpp"
#include "keel/storage/json_limits.hpp"
#include "output_state.hpp"

namespace keel {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using std::chrono::system_clock;

constexpr std::string_view k_sleep_step = "keel.sleep";
/// A replayed sleep this close to its wake time waits in memory instead of parking again.
constexpr std::chrono::milliseconds k_sleep_held_in_memory{5};
constexpr std::string_view k_event_step_prefix = "keel.event:";
constexpr std::string_view k_hook_step_prefix = "keel.hook:";
constexpr std::string_view k_hook_wait_prefix = "keel.hook_wait:";
constexpr std::string_view k_webhook_step_prefix = "keel.webhook:";
constexpr std::string_view k_any_step_prefix = "keel.any:";
constexpr std::string_view k_all_step_prefix = "keel.all:";
constexpr int k_sleep = 0, k_event = 1, k_hook = 2, k_any = 3;

std::optional<json::value> payload_of(json::value record) {
  if (auto* o = record.if_object()) {
    if (auto* p = o->if_contains("payload")) return std::move(*p);
  }
  return std::nullopt;
}

std::int64_t to_micros(system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

/// The alternatives of a wait for any as the store takes them.
std::vector<storage::wait_arm> to_arms(std::vector<detail::wait_alternative> alternatives) {
  std::vector<storage::wait_arm> arms;
  arms.reserve(alternatives.size());
  for (auto& a : alternatives) {
    using what = detail::wait_alternative::what;
    const auto arm_kind = a.kind == what::timer   ? storage::wait_kind::sleep
                          : a.kind == what::event ? storage::wait_kind::event
                          : a.kind == what::hook  ? storage::wait_kind::hook
                                                  : storage::wait_kind::child;
    arms.push_back({arm_kind, std::move(a.name), a.hook_seq, a.until});
  }
  return arms;
}

system_clock::time_point from_micros(std::int64_t us) {
  return system_clock::time_point(
      std::chrono::duration_cast<system_clock::duration>(std::chrono::microseconds(us)));
}

/// The wake time a sleep's record holds, if it holds one.
std::optional<system_clock::time_point> recorded_wake(const json::value& record) {
  const auto* o = record.if_object();
  const auto* w = o ? o->if_contains("wake_at") : nullptr;
  if (w == nullptr || !w->is_int64()) return std::nullopt;
  return from_micros(w->as_int64());
}

}  // namespace

asio::awaitable<void> context::sleep_until(system_clock::time_point wake) {
  // Named, not temporaries inside the co_await expression (GCC 12 destroys those twice).
  std::string step(k_sleep_step), none;
  co_await run_wait(k_sleep, std::move(step), std::move(none), 0, wake);
}

asio::awaitable<void> context::sleep(std::chrono::milliseconds duration) {
  // On replay the recorded wake time wins; this one only counts on the first execution.
  std::string step(k_sleep_step), none;
  const auto wake = system_clock::now() + duration;
  co_await run_wait(k_sleep, std::move(step), std::move(none), 0, wake);
}

asio::awaitable<std::optional<json::value>> context::wait_for_event(
    std::string_view name, std::optional<std::chrono::milliseconds> timeout) {
  std::optional<system_clock::time_point> until;
  if (timeout && branch_ != nullptr) {
    // A branch's wait may be decided by a later execution: its timeout counts from a recorded start.
    const auto start = co_await now();
    until = start + *timeout;
  } else if (timeout) {
    until = system_clock::now() + *timeout;
  }
  std::string event(name);
  std::string step = std::string(k_event_step_prefix) + event;
  auto record = co_await run_wait(k_event, std::move(step), std::move(event), 0, until);
  co_return payload_of(std::move(record));
}

asio::awaitable<hook> context::create_hook(std::string_view name) {
  const hook_options none;
  co_return co_await create_hook(name, none);
}

asio::awaitable<hook> context::create_hook(std::string_view name, const hook_options& options) {
  // Copied before the first suspension.
  std::string named(name);
  hook_options copied = options;
  std::optional<json::value> plain;
  co_return co_await make_hook(std::move(named), std::move(copied), std::move(plain));
}

asio::awaitable<hook> context::make_hook(std::string name, hook_options options,
                                         std::optional<json::value> webhook) {
  const auto ttl = options.ttl;
  json::value metadata = std::move(options.metadata);
  auto signature_key = std::move(options.signature_key);
  const std::string_view what = webhook ? "create_webhook" : "create_hook";
  auto& st = *state_;
  const bool bad_name =
      name.empty() || name.size() > storage::k_max_key_bytes || !storage::is_valid_utf8(name);
  // A key this engine does not know would make the hook impossible to resume: a mistake to report now.
  const bool bad_key = signature_key && !st.engine.options_.webhook_secrets.contains(*signature_key);
  if (bad_name || bad_key) {
    json::object error;
    error["code"] = "invalid_argument";
    error["message"] = bad_name
                           ? std::string(what) + ": the name must be 1 to 255 bytes of UTF-8"
                           : std::string(what) + ": signature_key '" + storage::valid_utf8(*signature_key) +
                                 "' is not in engine_options::webhook_secrets";
    st.poisoned = std::make_exception_ptr(step_failed_error(json::value(std::move(error))));
    std::rethrow_exception(st.poisoned);
  }
  auto secret = co_await st.engine.hook_secret();
  if (!secret) {
    // The database cannot be read now: not the workflow's fault. The run is handed back and tried again.
    log::warn("engine", "run " + st.claim.id + ": cannot read the hook secret (" + secret.error().message() +
                            "); releasing the run");
    st.poisoned = std::make_exception_ptr(detail::run_interrupted{detail::run_interrupted::why::released});
    std::rethrow_exception(st.poisoned);
  }
  if (branch_ != nullptr) {
    co_return co_await branch_create_hook(std::move(name), std::move(*secret), ttl, std::move(metadata),
                                          std::move(signature_key), std::move(webhook));
  }
  const int seq = st.next_seq;  // the position the step below takes
  hook h;
  h.ctx_ = this;
  h.run_ = state_;
  h.made_in_ = branch_;
  h.name_ = name;
  h.seq_ = seq;
  h.token_ = detail::hook_token(*secret, st.claim.id, st.claim.generation, seq, name);
  const std::string hash = detail::hook_token_hash(h.token_);
  // First execution: the hook row, then the step's record (its expiry). A crash between the two replays
  // this step: the same token finds its row (a no-op) and the record follows.
  auto create = [&st, &name, &metadata, &hash, &signature_key, &webhook, ttl,
                 seq]() -> asio::awaitable<json::value> {
    std::optional<system_clock::time_point> expires;
    if (ttl) expires = system_clock::now() + *ttl;
    const storage::hook_record rec{st.lease(), seq,          name,          hash,   metadata,
                                   expires,    std::nullopt, signature_key, webhook};
    auto created = co_await st.engine.store_.create_hook(rec);
    if (!created && created.error() == storage::errc::fenced) detail::lose_lease(st);
    if (!created && storage::is_transient(created.error())) {
      // The database is out of reach: retried by another execution, not counted against the step.
      throw detail::run_interrupted{detail::run_interrupted::why::released};
    }
    if (!created) throw std::runtime_error("cannot create hook '" + name + "': " + created.error().message());
    json::object out;
    out["hook"] = name;
    if (expires) out["expires_at"] = to_micros(*expires);
    co_return json::value(std::move(out));
  };
  const std::string step_name = std::string(webhook ? k_webhook_step_prefix : k_hook_step_prefix) + name;
  const json::value record = co_await step(step_name, create);
  if (const auto* o = record.if_object()) {
    if (const auto* e = o->if_contains("expires_at"); e && e->is_int64())
      h.expires_at_ = from_micros(e->as_int64());
  }
  co_return h;
}

asio::awaitable<std::optional<json::value>> hook::wait() {
  if (run_ != nullptr) detail::check_handle(*run_, made_in_, "hook::wait of hook '" + name_ + "'");
  std::string step = std::string(k_hook_wait_prefix) + name_;
  std::string hook_name = name_;
  auto record = co_await ctx_->run_wait(k_hook, std::move(step), std::move(hook_name), seq_, expires_at_);
  co_return payload_of(std::move(record));
}

detail::wait_alternative context::alternative_of(const hook& h) {
  return {detail::wait_alternative::what::hook, h.name_, h.seq_, std::nullopt, h.expires_at_};
}

detail::wait_alternative context::alternative_of(const timer& t) {
  return {detail::wait_alternative::what::timer, {}, 0, t.at ? std::nullopt : std::optional(t.after), t.at};
}

detail::wait_alternative context::alternative_of(const event_wait& e) {
  return {detail::wait_alternative::what::event, std::string(e.name), 0, std::nullopt, std::nullopt};
}

namespace {

/// The step name of a wait for any or all: its alternatives, so that a replay against a changed list is
/// caught as nondeterminism. E.g. "keel.any:hook=approve,timer".
std::string alternatives_step(std::string_view prefix, const std::vector<detail::wait_alternative>& alts) {
  std::string name(prefix);
  for (std::size_t i = 0; i < alts.size(); ++i) {
    if (i != 0) name += ',';
    switch (alts[i].kind) {
      case detail::wait_alternative::what::timer:
        name += "timer";
        break;
      case detail::wait_alternative::what::event:
        name += "event=" + alts[i].name;
        break;
      case detail::wait_alternative::what::hook:
        name += "hook=" + alts[i].name;
        break;
      case detail::wait_alternative::what::child:
        name += "child";
        break;
    }
  }
  // Step names are capped like keys; the tail of a very long list is still checked by its arms' count.
  if (name.size() > storage::k_max_key_bytes) {
    name.resize(storage::k_max_key_bytes - 16);
    name.append("~").append(std::to_string(alts.size()));
  }
  return storage::valid_utf8(name);
}

}  // namespace

asio::awaitable<any_result> context::run_any(std::vector<detail::wait_alternative> alternatives) {
  auto started = system_clock::now();
  const bool relative = std::any_of(alternatives.begin(), alternatives.end(),
                                    [](const auto& a) { return a.after.has_value(); });
  // A branch's wait may be decided by a later execution: its timers count from a recorded start.
  if (relative && branch_ != nullptr) started = co_await now();
  for (auto& a : alternatives) {
    if (a.after) a.until = started + *a.after;
  }
  std::string step = alternatives_step(k_any_step_prefix, alternatives);
  std::string none;
  const auto count = alternatives.size();
  auto record =
      co_await run_wait(k_any, std::move(step), std::move(none), 0, std::nullopt, std::move(alternatives));
  any_result out;
  if (auto* o = record.if_object()) {
    if (auto* i = o->if_contains("index"); i && i->is_int64() && i->as_int64() >= 0)
      out.index = static_cast<std::size_t>(i->as_int64());
  }
  if (out.index >= count) {
    // Recorded by another version of the workflow with more alternatives at this position.
    auto& st = *state_;
    st.poisoned = std::make_exception_ptr(nondeterminism_error(
        "run " + st.claim.id + ": the wait for any at this position was won by alternative " +
        std::to_string(out.index) + ", but the workflow now gives " + std::to_string(count)));
    std::rethrow_exception(st.poisoned);
  }
  out.payload = payload_of(std::move(record));
  co_return out;
}

asio::awaitable<std::vector<std::optional<json::value>>> context::run_all(
    std::vector<detail::wait_alternative> alternatives) {
  // Timers count from the first execution that reached the call: that time is recorded first.
  bool relative = false;
  for (const auto& a : alternatives)
    relative = relative || a.after.has_value();
  if (relative) {
    const auto start = co_await now();
    for (auto& a : alternatives) {
      if (a.after) a.until = start + *a.after;
      a.after.reset();
    }
  }
  std::vector<std::optional<json::value>> payloads;
  payloads.reserve(alternatives.size());
  for (auto& a : alternatives) {
    // Each one in turn, as a wait for any of one: events and hook payloads are kept until consumed, so
    // waiting for them one after another misses none, and a timer's due time is already fixed.
    std::vector<detail::wait_alternative> one{std::move(a)};
    std::string step = alternatives_step(k_all_step_prefix, one);
    std::string none;
    auto record = co_await run_wait(k_any, std::move(step), std::move(none), 0, std::nullopt, std::move(one));
    payloads.push_back(payload_of(std::move(record)));
  }
  co_return payloads;
}

asio::awaitable<system_clock::time_point> context::now() {
  auto read = [] { return to_micros(system_clock::now()); };
  const std::int64_t us = co_await step("keel.now", read);
  co_return from_micros(us);
}

asio::awaitable<double> context::random() {
  auto draw = [this] { return state_->engine.random_unit(); };
  co_return co_await step("keel.random", draw);
}

asio::awaitable<std::string> context::uuid() {
  auto make = [] { return new_run_id(); };
  co_return co_await step("keel.uuid", make);
}

asio::awaitable<json::value> context::run_wait(int kind, std::string name, std::string event, int hook_seq,
                                               std::optional<system_clock::time_point> until,
                                               std::vector<detail::wait_alternative> alternatives) {
  const bool sleep = kind == k_sleep;
  if (branch_ != nullptr) {
    using what = detail::wait_alternative::what;
    if (sleep) {
      const auto wake = until.value_or(system_clock::now());  // named (GCC 12)
      co_await branch_sleep(std::move(name), wake);
      co_return json::value();
    }
    if (kind == k_event) {
      alternatives.push_back({what::event, std::move(event), 0, std::nullopt, std::nullopt});
      if (until) alternatives.push_back({what::timer, {}, 0, std::nullopt, until});
    } else if (kind == k_hook) {
      alternatives.push_back({what::hook, std::move(event), hook_seq, std::nullopt, until});
    }
    co_return co_await branch_wait(std::move(name), std::move(alternatives));
  }
  auto& st = *state_;
  auto& engine = st.engine;
  const detail::step_slot slot(st, st.in_step, name);
  const int seq = st.next_seq++;

  if (const auto* rec = detail::replayed_step(st, seq, name)) {
    if (!sleep) co_return rec->output;
    // A sleep recorded with its wake time: over once that time came. Claimed just before it (the wake-up
    // timer claims ahead, see wakeups.cpp), the rest is waited out here; claimed earlier, it parks again.
    const auto wake = recorded_wake(rec->output);
    const auto now = system_clock::now();
    if (!wake || *wake <= now) co_return rec->output;
    if (*wake - now <= k_sleep_held_in_memory) {
      asio::steady_timer rest(st.strand, *wake - now);
      co_await rest.async_wait(asio::as_tuple(asio::use_awaitable));
      co_return rec->output;
    }
    until = wake;
  }
  detail::check_interrupt(st);

  const auto started = system_clock::now();
  if (sleep && until && *until <= started) {
    // Nothing to wait for: recorded as an ordinary step.
    json::object record;
    record["wake_at"] = to_micros(*until);
    storage::step_checkpoint cp{
        st.lease(), {seq, name, false, json::value(std::move(record)), nullptr, 1, started, started, {}, 0}};
    co_await detail::flush_outputs(st);  // the record commits after what the run wrote before it
    auto written = co_await engine.store_.checkpoint(cp);
    if (!written) detail::lose_lease(st);
    co_return std::move(cp.step.output);
  }

  // Named, not a temporary inside the co_await expression: GCC 12 destroys such temporaries twice.
  const auto wait_kind = sleep             ? storage::wait_kind::sleep
                         : kind == k_event ? storage::wait_kind::event
                         : kind == k_hook  ? storage::wait_kind::hook
                                           : storage::wait_kind::any;
  storage::wait_request request{st.lease(),
                                seq,
                                name,
                                wait_kind,
                                event,
                                hook_seq,
                                until,
                                started,
                                {},
                                st.cancel_seen,
                                storage::wait_mode::decide,
                                std::nullopt,
                                0};
  request.arms = to_arms(std::move(alternatives));
  co_await detail::flush_outputs(st);  // what the run wrote is durable before it parks
  auto decided = co_await engine.store_.wait(request);
  if (!decided) {
    if (decided.error() == storage::errc::invalid_argument) {
      // The event name itself cannot be stored (empty, over 255 bytes, not UTF-8): a bug in the workflow.
      json::object error;
      error["code"] = "invalid_argument";
      error["message"] = kind == k_any
                             ? "any/all: 1 to 64 alternatives; event names of 1 to 255 bytes of UTF-8"
                             : "wait_for_event: the event name must be 1 to 255 bytes of UTF-8";
      error["step"] = storage::valid_utf8(name);
      st.poisoned = std::make_exception_ptr(step_failed_error(json::value(std::move(error))));
      std::rethrow_exception(st.poisoned);
    }
    detail::lose_lease(st);
  }
  if (decided->outcome == storage::wait_outcome::what::cancel) {
    // Asked to cancel since the check above: seen here, instead of parking.
    st.cancel_requested.store(true, std::memory_order_release);
    detail::check_interrupt(st);
  }
  if (decided->outcome != storage::wait_outcome::what::parked) co_return std::move(decided->output);
  // Parked: the run sleeps or waits in the database; this execution ends here, holding nothing. The
  // deadline is the one the database kept (a resumed wait keeps its first deadline).
  std::optional<system_clock::time_point> due;
  if (auto* o = decided->output.if_object()) {
    for (const auto* key : {"wake_at", "until"}) {
      if (auto* v = o->if_contains(key); v && v->is_int64()) due = from_micros(v->as_int64());
    }
  }
  st.parked = detail::run_state::parked_wait{request.kind, kind == k_any ? name : event, due};
  st.poisoned = std::make_exception_ptr(detail::run_interrupted{detail::run_interrupted::why::parked});
  std::rethrow_exception(st.poisoned);
}

asio::awaitable<json::value> context::branch_wait(std::string name,
                                                  std::vector<detail::wait_alternative> alternatives) {
  auto& st = *state_;
  const detail::step_slot slot(st, branch_->in_step, name);
  const int local = branch_->next_local++;
  if (const auto* rec = detail::replayed_branch_step(st, branch_->path, local, name)) co_return rec->output;
  auto arms = to_arms(std::move(alternatives));
  co_return co_await detail::decide_branch_wait(st, *branch_, local, std::move(name), std::move(arms));
}

asio::awaitable<void> context::branch_sleep(std::string name, system_clock::time_point wake) {
  auto& st = *state_;
  const detail::step_slot slot(st, branch_->in_step, name);
  const int local = branch_->next_local++;
  if (const auto* rec = detail::replayed_branch_step(st, branch_->path, local, name)) {
    const auto recorded = recorded_wake(rec->output);
    if (!recorded) co_return;
    wake = *recorded;
  } else {
    detail::check_branch_interrupt(st, *branch_);
    // The wake time is recorded first: every later execution of the branch sleeps until the same time.
    json::object record;
    record["wake_at"] = to_micros(wake);
    const auto now = system_clock::now();
    storage::step_checkpoint cp{st.lease(),
                                {st.take_branch_seq(), name, false, json::value(std::move(record)), nullptr,
                                 1, now, now, branch_->path, local}};
    auto written = co_await st.engine.store_.checkpoint(cp);
    if (!written) detail::lose_lease(st);
  }
  const auto left = wake - system_clock::now();
  if (left <= system_clock::duration::zero()) co_return;
  if (left <= k_sleep_held_in_memory) {
    asio::steady_timer rest(st.strand, left);
    co_await rest.async_wait(asio::as_tuple(asio::use_awaitable));
    co_return;
  }
  std::vector<storage::wait_arm> timer{{storage::wait_kind::sleep, {}, 0, wake}};
  std::string no_record;  // the sleep's record is made; its end is not recorded
  co_await detail::decide_branch_wait(st, *branch_, local, std::move(no_record), std::move(timer));
}

asio::awaitable<hook> context::branch_create_hook(std::string name, std::string secret,
                                                  std::optional<std::chrono::milliseconds> ttl,
                                                  json::value metadata,
                                                  std::optional<std::string> signature_key,
                                                  std::optional<json::value> webhook) {
  auto& st = *state_;
  const std::string step_name = std::string(webhook ? k_webhook_step_prefix : k_hook_step_prefix) + name;
  const detail::step_slot slot(st, branch_->in_step, step_name);
  const int local = branch_->next_local++;
  hook h;
  h.ctx_ = this;
  h.run_ = state_;
  h.made_in_ = branch_;
  h.name_ = name;
  if (const auto* rec = detail::replayed_branch_step(st, branch_->path, local, step_name)) {
    // The hook's position is the seq its record took: the same token on every replay.
    h.seq_ = rec->seq;
    h.token_ = detail::hook_token(secret, st.claim.id, st.claim.generation, rec->seq, name);
    if (const auto* o = rec->output.if_object()) {
      if (const auto* e = o->if_contains("expires_at"); e && e->is_int64())
        h.expires_at_ = from_micros(e->as_int64());
    }
    co_return h;
  }
  detail::check_branch_interrupt(st, *branch_);
  // A seq taken now is the hook's position: the hook and its record commit together, so a crash leaves
  // neither, and the next execution may take another seq.
  const int seq = st.take_branch_seq();
  h.seq_ = seq;
  h.token_ = detail::hook_token(secret, st.claim.id, st.claim.generation, seq, name);
  const auto now = system_clock::now();
  std::optional<system_clock::time_point> expires;
  if (ttl) expires = now + *ttl;
  json::object out;
  out["hook"] = name;
  if (expires) out["expires_at"] = to_micros(*expires);
  storage::hook_record rec{st.lease(),          seq,     name,         detail::hook_token_hash(h.token_),
                           std::move(metadata), expires, std::nullopt, std::move(signature_key),
                           std::move(webhook)};
  rec.step = storage::step_record{seq, step_name,     false, json::value(std::move(out)), nullptr, 1, now,
                                  now, branch_->path, local};
  auto created = co_await st.engine.store_.create_hook(rec);
  if (!created) {
    st.spare_seqs.push_back(seq);
    if (created.error() == storage::errc::fenced) detail::lose_lease(st);
    if (storage::is_transient(created.error())) {
      st.poisoned = std::make_exception_ptr(detail::run_interrupted{detail::run_interrupted::why::released});
      std::rethrow_exception(st.poisoned);
    }
    json::object error;
    error["code"] = "invalid_argument";
    error["message"] = "cannot create hook '" + name + "': " + created.error().message();
    error["step"] = storage::valid_utf8(step_name);
    throw step_failed_error(json::value(std::move(error)));
  }
  h.expires_at_ = expires;
  co_return h;
}

}  // namespace keel
