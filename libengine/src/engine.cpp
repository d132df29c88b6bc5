#include "keel/engine/engine.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>

#include "engine_impl.hpp"
#include "event_hooks.hpp"
#include "event_triggers.hpp"
#include "hook_token.hpp"
#include "keel/common/log.hpp"
#include "keel/storage/json_limits.hpp"
#include "output_state.hpp"

namespace keel {
namespace detail {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::use_awaitable;

std::string default_worker_id() {
  std::array<char, 256> host{};
  if (::gethostname(host.data(), host.size() - 1) != 0) host[0] = '\0';
  std::random_device rd;
  char suffix[16];
  std::snprintf(suffix, sizeof suffix, "%06x", static_cast<unsigned>(rd() & 0xFFFFFF));
  return std::string(host.data()) + ":" + std::to_string(::getpid()) + ":" + suffix;
}

/// Longest message stored in a run's error: an exception's what() may be anything, and a failure must
/// always be recordable.
constexpr std::size_t k_max_message_bytes = 8192;

json::value error_json(std::string_view code, std::string_view message) {
  json::object o;
  o["code"] = code;
  o["message"] = storage::valid_utf8(message.substr(0, k_max_message_bytes));
  return o;
}

/// A completion handler for a control coroutine: logs how it ended, if it ended by an exception.
auto log_failure(const char* what) {
  return [what](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log::error("engine", std::string(what) + " stopped: " + ex.what());
    } catch (...) {
      log::error("engine", std::string(what) + " stopped");
    }
  };
}

}  // namespace

error_code engine_error(error_code ec) {
  if (ec == storage::errc::not_found) return errc::run_not_found;
  return ec;
}

storage::lease_token run_state::lease() const {
  return storage::lease_token{claim.id, engine.worker_id_, claim.epoch};
}

engine_impl::engine_impl(engine_options options)
    : options_(std::move(options)),
      worker_id_(options_.worker_id.empty() ? default_worker_id() : options_.worker_id),
      store_(options_.store),
      hub_(std::make_shared<event_hub>(ioc_, store_, worker_id_, options_.stream_poll_interval,
                                       [this] { wake_claimer(); })),
      ctl_(asio::make_strand(ioc_)),
      changed_(ctl_, asio::steady_timer::time_point::max()),
      claim_wait_(ctl_),
      heartbeat_wait_(ctl_),
      step_watch_wait_(ctl_),
      wakeup_timer_(ctl_),
      schedule_wait_(ctl_),
      retention_wait_(ctl_),
      key_sweep_wait_(ctl_),
      rng_(std::random_device{}()) {
  store_.outlived_by(ioc_);  // destroyed after the store (declared before it)
  if (options_.concurrency == 0) options_.concurrency = 1;
  if (options_.heartbeat.count() <= 0) options_.heartbeat = options_.lease / 3;
  std::size_t n = options_.threads;
  if (n == 0) n = std::max(1u, std::thread::hardware_concurrency());
  // This worker's own log appends wake its streams at once (other workers' come by LISTEN/NOTIFY).
  store_.on_local_commit([hub = std::weak_ptr<event_hub>(hub_)] {
    if (auto h = hub.lock()) h->log_appended();
  });
  work_.emplace(ioc_.get_executor());
  threads_.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    threads_.emplace_back([this] { ioc_.run(); });
}

engine_impl::~engine_impl() {
  work_.reset();
  ioc_.stop();
  for (auto& t : threads_)
    t.join();
  store_.stop_blocking();
}

double engine_impl::random_unit() {
  std::lock_guard lock(rng_mutex_);
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
}

void engine_impl::emit(run_event::kind what, const run_state& st, std::string step, int attempt,
                       std::string detail) const {
  log_step(what, st, step, attempt, detail);
  if (!options_.on_event) return;
  emit(run_event{what, st.claim.id, st.claim.workflow, std::move(step), attempt, std::move(detail)});
}

void engine_impl::log_step(run_event::kind what, const run_state& st, std::string_view step, int attempt,
                           std::string_view detail) {
  const bool failed = what == run_event::kind::step_failed;
  const bool ended =
      failed || what == run_event::kind::step_completed || what == run_event::kind::step_retrying;
  if (!ended || !log::enabled(failed ? log::level::info : log::level::debug)) return;
  // With the run's trace id, so that a step is found from the trace of the request that started its run
  // (and the calls it made with ctx.trace() or ctx.fetch, which carry the same id).
  std::string line = "run " + st.claim.id + " (" + st.claim.workflow + ") step '" +
                     storage::valid_utf8(step) + "' " + std::string(to_string(what)) + ", attempt " +
                     std::to_string(attempt);
  if (st.claim.traceparent) {
    if (const auto trace = parse_traceparent(*st.claim.traceparent)) line += ", trace_id " + trace->trace_id;
  }
  if (!detail.empty()) line += ": " + storage::valid_utf8(detail.substr(0, 500));
  if (failed) {
    log::info("engine", line);
  } else {
    log::debug("engine", line);
  }
}

void engine_impl::emit(run_event event) const {
  if (!options_.on_event) return;
  try {
    options_.on_event(event);
  } catch (const std::exception& e) {
    log::warn("engine", std::string("on_event threw: ") + e.what());
  }
}

result<void> engine_impl::migrate_blocking() {
  if (migrated_ || !options_.migrate) return {};
  auto r = store_.migrate_blocking();
  if (r) migrated_ = true;
  return r;
}

result<void> engine_impl::declare_blocking() {
  if (declared_) return {};
  auto r = block_on(store_.declare_workflows(declarations_of(workflows_)));
  if (r) declared_ = true;
  return r;
}

std::vector<storage::workflow_version> engine_impl::workflow_versions() const {
  std::vector<storage::workflow_version> out;
  for (const auto& [name, versions] : workflows_) {
    for (const auto& [version, def] : versions)
      out.push_back({name, version});
  }
  return out;
}

std::chrono::milliseconds engine_impl::worker_ttl() const {
  // Three missed refreshes, and never less than a lease: a worker that stopped answering is gone by then.
  return std::max(options_.heartbeat * 3, options_.lease);
}

const workflow_definition* engine_impl::find_workflow(const std::string& name, int version) const {
  auto it = workflows_.find(name);
  if (it == workflows_.end()) return nullptr;
  auto v = it->second.find(version);
  return v == it->second.end() ? nullptr : &v->second;
}

void engine_impl::notify_changed() {
  changed_.cancel();
}

asio::awaitable<void> engine_impl::wait_changed() {
  co_await changed_.async_wait(asio::as_tuple(use_awaitable));
}

void engine_impl::wake_claimer() {
  asio::dispatch(ctl_, [this] {
    if (claim_waiting_) {
      claim_wait_.cancel();
    } else {
      wake_pending_ = true;
    }
  });
}

result<void> engine_impl::start() {
  if (auto m = migrate_blocking(); !m) return m;
  // Announce what this worker runs, so that a run of a version registered nowhere says so.
  if (auto r = block_on(store_.register_worker(worker_id_, workflow_versions(), worker_ttl())); !r)
    log::warn("engine", "cannot register this worker: " + r.error().message());
  // What its workflows declare (triggers, cancel_on, concurrency, throttle), for every engine's inserts.
  if (auto r = block_on(store_.declare_workflows(declarations_of(workflows_))); !r) {
    log::warn("engine", "cannot record what the workflows declare: " + r.error().message());
  } else {
    declared_ = true;
  }
  // Runs enqueued by other processes wake the claim loop at once instead of at its next poll.
  if (!started_once_.exchange(true)) {
    store_.listen(storage::store_listeners{
        [this] { wake_claimer(); }, [this](const run_id& id) { cancel_requested(id); },
        [this] { hub_->log_appended(); }, [this](std::string_view frame) { hub_->remote_frame(frame); },
        [this](std::string_view token_hash) { webhook_answered(token_hash); }});
  }
  if (!options_.hooks.empty() && !hooks_started_.exchange(true)) {
    // The hooks' feed: a stream of this engine's own, from now until stop() ends it.
    auto hooks = std::make_shared<hook_dispatcher>(ioc_, options_.hooks);
    auto feed = [this, hooks]() -> asio::awaitable<void> {
      const stream_options everything;
      auto s = co_await stream(everything);
      if (!s) {
        log::error("engine", "event hooks: cannot open their stream: " + s.error().message());
        co_return;
      }
      co_await hooks->run(std::move(*s));
    };
    asio::co_spawn(ioc_, std::move(feed), log_failure("event hooks"));
  }
  asio::post(ctl_, [this] {
    if (started_ || stopping()) return;
    started_ = true;
    claim_loop_active_ = true;
    asio::co_spawn(ctl_, claim_loop(), log_failure("claim loop"));
    wakeup_active_ = true;
    asio::co_spawn(ctl_, wakeup_loop(), log_failure("wakeup loop"));
    ensure_heartbeat();
    step_watch_active_ = true;
    asio::co_spawn(ctl_, step_watch_loop(), log_failure("step watch"));
    schedule_loop_active_ = true;
    asio::co_spawn(ctl_, schedule_loop(), log_failure("schedule loop"));
    key_sweep_active_ = true;
    asio::co_spawn(ctl_, key_sweep_loop(), log_failure("concurrency key sweep"));
    if (options_.retention.keep_finished.count() > 0) {
      retention_active_ = true;
      asio::co_spawn(ctl_, retention_loop(), log_failure("retention"));
    }
    if (options_.lag_warning.count() > 0) {
      watchdog_active_ = true;
      // On its own strand: it measures whether any pool thread is free, not whether ctl_ is busy.
      asio::co_spawn(asio::make_strand(ioc_), watchdog_loop(), log_failure("watchdog"));
    }
  });
  return {};
}

asio::awaitable<engine_impl::claim_tally> engine_impl::claim_batch(std::size_t max) {
  // Runs on ctl_: storage completions resume a coroutine on its own executor, which is ctl_ here.
  storage::claim_request request{worker_id_, workflow_versions(), max, options_.lease,
                                 options_.max_recoveries};
  const auto lease_until = std::chrono::steady_clock::now() + options_.lease;  // counted from the request
  auto claimed = co_await store_.claim(request);
  if (!claimed) {
    log::warn("engine", "claim failed: " + claimed.error().message());
    co_return claim_tally{};
  }
  for (const auto& id : claimed->dead_lettered) {
    log::warn("engine", "run " + id + " lost its worker more than " +
                            std::to_string(options_.max_recoveries) + " times: failed as dead_lettered");
    emit(run_event{run_event::kind::dead_lettered, id, {}, {}, 0, {}});
  }
  const claim_tally tally{claimed->runs.size(), claimed->parked};
  const bool throttled = claimed->parked_for_throttle > 0;
  // Runs parked for a throttle start when its window moves: the sweep learns when that is (at most ten
  // times a second: under a burst, most claims park some runs).
  if (throttled && std::chrono::steady_clock::now() - last_sweep_nudge_ >= std::chrono::milliseconds(100)) {
    last_sweep_nudge_ = std::chrono::steady_clock::now();
    key_sweep_wait_.cancel();
  }
  co_await launch_claimed(std::move(claimed->runs), lease_until);
  co_return tally;
}

asio::awaitable<void> engine_impl::launch_claimed(std::vector<storage::claimed_run> runs,
                                                  std::chrono::steady_clock::time_point lease_until) {
  for (auto& c : runs) {
    if (stopping()) {
      // Claimed while stopping: hand it straight back.
      storage::lease_token lease{c.id, worker_id_, c.epoch};
      auto r = co_await store_.release(std::move(lease));
      if (!r) log::warn("engine", "release of " + c.id + " failed: " + r.error().message());
      continue;
    }
    launch(std::move(c), lease_until);
  }
}

asio::awaitable<void> engine_impl::compensate(run_state& st, storage::run_finish& fin,
                                              std::optional<run_interrupted>& interrupted) {
  // Not after nondeterminism or overlapping steps: the replay that registered them cannot be trusted.
  const auto* code = fin.error.is_object() ? fin.error.as_object().if_contains("code") : nullptr;
  if (code && code->is_string() &&
      (code->as_string() == code_name(errc::nondeterminism) ||
       code->as_string() == code_name(errc::concurrent_step))) {
    co_return;
  }
  // A failure that poisoned the context (a refused name, say) is the run's; compensations may still run.
  if (st.poisoned) {
    try {
      std::rethrow_exception(st.poisoned);
    } catch (const step_failed_error&) {
      st.poisoned = nullptr;
    } catch (...) {
      co_return;
    }
  }
  st.in_step = false;
  // A cancel arriving now must not cut the undo short: it would have nothing left to say.
  st.cancel_seen = true;
  context ctx(st);
  try {
    auto done = co_await ctx.run_compensations();
    if (!fin.error.is_object()) fin.error = json::object{};
    fin.error.as_object()["compensation"] = std::move(done);
  } catch (const run_interrupted& i) {
    interrupted = i;
  } catch (const std::exception& e) {
    log::error("engine", "run " + st.claim.id + ": compensation stopped: " + e.what());
    if (st.poisoned) {
      try {
        std::rethrow_exception(st.poisoned);
      } catch (const run_interrupted& i) {
        interrupted = i;
      } catch (...) {
      }
    }
  }
}

std::size_t engine_impl::free_slots() const {
  const std::size_t busy = inflight_.size() - std::min(inflight_.size(), finishing_.load()) + direct_claims_;
  return options_.concurrency - std::min(options_.concurrency, busy);
}

asio::awaitable<void> engine_impl::claim_loop() {
  while (!stopping()) {
    // A run whose finish is on its way to the writer no longer needs its slot: claiming for it now lets the
    // claim share the finish's transaction instead of waiting for the next one.
    const std::size_t free = free_slots();
    if (free == 0) {
      co_await wait_changed();
      continue;
    }
    if (hub_->paused()) {
      // A bounded stream is full: no new work until its consumer pulls (the gate wakes this loop).
      claim_wait_.expires_after(options_.poll_interval);
      claim_waiting_ = true;
      co_await claim_wait_.async_wait(asio::as_tuple(use_awaitable));
      claim_waiting_ = false;
      wake_pending_ = false;
      continue;
    }
    // A claim that parked runs made room in the due range: what follows them may be claimable now.
    const auto got = co_await claim_batch(free);
    if (got.claimed > 0 || got.parked > 0 || stopping()) continue;
    // Nothing due: sleep until a local enqueue, a freed slot or the poll interval.
    if (wake_pending_) {
      wake_pending_ = false;
      continue;
    }
    claim_wait_.expires_after(options_.poll_interval);
    claim_waiting_ = true;
    co_await claim_wait_.async_wait(asio::as_tuple(use_awaitable));
    claim_waiting_ = false;
    wake_pending_ = false;
  }
  claim_loop_active_ = false;
  notify_changed();
}

asio::awaitable<void> engine_impl::step_watch_loop() {
  /// A step running this long has its start logged while it runs; a faster one's is logged with its end.
  constexpr std::chrono::milliseconds k_slow_step{50};
  std::vector<std::shared_ptr<run_state>> runs;
  while (!stopping()) {
    step_watch_wait_.expires_after(k_slow_step / 2);
    co_await step_watch_wait_.async_wait(asio::as_tuple(use_awaitable));
    runs.clear();
    for (const auto& [id, st] : inflight_)
      runs.push_back(st);
    log_slow_steps(runs, k_slow_step);
  }
  step_watch_active_ = false;
  notify_changed();
}

asio::awaitable<void> engine_impl::watchdog_loop() {
  const auto period = std::chrono::milliseconds(50);
  asio::steady_timer timer(co_await asio::this_coro::executor);
  auto last_warning = std::chrono::steady_clock::time_point{};
  while (!stopping()) {
    const auto due = std::chrono::steady_clock::now() + period;
    timer.expires_at(due);
    co_await timer.async_wait(asio::as_tuple(use_awaitable));
    const auto now = std::chrono::steady_clock::now();
    const auto late = std::chrono::duration_cast<std::chrono::milliseconds>(now - due);
    if (late > options_.lag_warning && now - last_warning > std::chrono::seconds(5)) {
      last_warning = now;
      log::warn("engine",
                "the io_context threads were blocked for " + std::to_string(late.count()) +
                    " ms: step code or a callback is blocking them (run blocking work in a coroutine "
                    "step that awaits it, or on another thread)");
    }
  }
  asio::post(ctl_, [this] {
    watchdog_active_ = false;
    notify_changed();
  });
}

void engine_impl::ensure_heartbeat() {
  if (heartbeat_active_) return;
  heartbeat_active_ = true;
  asio::co_spawn(ctl_, heartbeat_loop(), log_failure("heartbeat loop"));
}

asio::awaitable<void> engine_impl::heartbeat_loop() {
  // Runs while the engine is started, and otherwise (tick) while runs are in flight.
  while (!((stopping() || !started_) && inflight_.empty())) {
    heartbeat_wait_.expires_after(options_.heartbeat);
    co_await heartbeat_wait_.async_wait(asio::as_tuple(use_awaitable));
    if (started_ && !stopping()) {
      auto r = co_await store_.register_worker(worker_id_, workflow_versions(), worker_ttl());
      if (!r) log::warn("engine", "worker registry refresh failed: " + r.error().message());
    }
    if (inflight_.empty()) continue;
    std::vector<storage::lease_token> held;
    held.reserve(inflight_.size());
    for (const auto& [id, st] : inflight_)
      held.push_back(st->lease());
    const auto sent = std::chrono::steady_clock::now();
    const auto lease_until = sent + options_.lease;  // counted from the request
    std::vector<storage::cancel_notice> cancelling;
    auto lost = co_await store_.heartbeat(held, options_.lease, &cancelling);
    if (!lost) {
      log::warn("engine", "heartbeat failed: " + lost.error().message());
      continue;
    }
    auto is_lost = [&](const storage::lease_token& l) {
      return std::any_of(lost->begin(), lost->end(),
                         [&](const storage::lease_token& x) { return x.id == l.id && x.epoch == l.epoch; });
    };
    for (const auto& lease : held) {
      auto it = inflight_.find(lease.id);
      // Matched by epoch: the reply may be about an execution that a newer one of the same run replaced.
      if (it == inflight_.end() || it->second->claim.epoch != lease.epoch) continue;
      auto st = it->second;
      if (!is_lost(lease)) {
        auto until = lease_until;
        for (const auto& c : cancelling) {
          if (c.id != lease.id || c.epoch != lease.epoch) continue;
          // Asked to cancel: heard of here even if the notification was missed, and nothing new starts past
          // the moment the claim may fence it.
          until = std::min(until, sent + c.left);
          if (!st->cancel_requested.exchange(true, std::memory_order_acq_rel)) {
            asio::post(st->strand, [st] { st->cancel_backoffs(); });
          }
        }
        st->lease_deadline.store(until, std::memory_order_release);
        continue;
      }
      if (st->lost.exchange(true, std::memory_order_acq_rel)) continue;  // already known
      log::warn("engine", "lease lost for run " + lease.id + "; abandoning it");
      asio::post(st->strand, [st] { st->cancel_backoffs(); });
    }
  }
  heartbeat_active_ = false;
  notify_changed();
}

void engine_impl::launch(storage::claimed_run claim, std::chrono::steady_clock::time_point lease_until) {
  if (auto c = std::find_if(recent_cancels_.begin(), recent_cancels_.end(),
                            [&](const auto& r) { return r.first == claim.id; });
      c != recent_cancels_.end()) {
    claim.cancel_requested = true;
    recent_cancels_.erase(c);
  }
  auto st = std::make_shared<run_state>(*this, std::move(claim), asio::make_strand(ioc_), lease_until);
  auto [it, inserted] = inflight_.try_emplace(st->claim.id, st);
  if (!inserted) {
    // This worker reclaimed a run it was still executing (its own lease had lapsed, e.g. through a database
    // outage longer than the lease): the older execution is fenced already; make it stop and track the new
    // one.
    auto old = it->second;
    old->lost.store(true, std::memory_order_release);
    asio::post(old->strand, [old] { old->cancel_backoffs(); });
    it->second = st;
  }
  asio::co_spawn(st->strand, execute(st), [this, st](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log::error("engine", "run " + st->claim.id + " crashed the executor: " + ex.what());
      } catch (...) {
        log::error("engine", "run " + st->claim.id + " crashed the executor");
      }
    }
    asio::post(ctl_, [this, st] {
      if (st->finishing) finishing_.fetch_sub(1);
      // Only this execution's entry: a newer execution of the same run may have replaced it.
      if (auto it = inflight_.find(st->claim.id); it != inflight_.end() && it->second == st)
        inflight_.erase(it);
      notify_changed();
      wake_claimer();
    });
  });
}

asio::awaitable<void> engine_impl::execute(std::shared_ptr<run_state> st) {
  emit(run_event::kind::claimed, *st, {}, st->claim.claims);
  storage::run_finish fin{st->lease(), storage::run_status::completed, nullptr, nullptr};
  const auto* def = find_workflow(st->claim.workflow, st->claim.version);
  std::optional<run_interrupted> interrupted;
  if (def == nullptr) {
    // Claims ask only for registered versions; this is a defence, not a path.
    fin.status = storage::run_status::failed;
    fin.error =
        error_json(code_name(errc::unknown_workflow), "no workflow named '" + st->claim.workflow +
                                                          "' version " + std::to_string(st->claim.version));
  } else {
    context ctx(*st);
    try {
      auto body = def->body(ctx, st->claim.input);  // called outside the co_await (GCC 12)
      fin.output = co_await std::move(body);
      if (static_cast<std::size_t>(st->next_seq) < st->claim.steps.size() && !st->poisoned) {
        throw nondeterminism_error("the workflow finished after " + std::to_string(st->next_seq) +
                                   " steps but the run recorded " + std::to_string(st->claim.steps.size()) +
                                   ": the workflow code changed or is not deterministic");
      }
    } catch (const run_interrupted& i) {
      interrupted = i;
    } catch (const cancelled_error&) {
      fin.status = storage::run_status::cancelled;  // set below, with the rest of a cancel's outcome
    } catch (const step_failed_error& e) {
      fin.status = storage::run_status::failed;
      fin.error = e.error();
    } catch (const nondeterminism_error& e) {
      fin.status = storage::run_status::failed;
      fin.error = error_json(code_name(errc::nondeterminism), e.what());
    } catch (const concurrent_step_error& e) {
      fin.status = storage::run_status::failed;
      fin.error = error_json(code_name(errc::concurrent_step), e.what());
    } catch (const invalid_input_error& e) {
      fin.status = storage::run_status::failed;
      fin.error = error_json(code_name(errc::invalid_input), e.what());
    } catch (const std::exception& e) {
      fin.status = storage::run_status::failed;
      fin.error = error_json("workflow_error", e.what());
    } catch (...) {
      fin.status = storage::run_status::failed;
      fin.error =
          error_json("workflow_error", "the workflow threw an exception not derived from std::exception");
    }
    if (!interrupted) {
      // What the run wrote to its output streams is durable before it ends, however it ends.
      try {
        co_await flush_outputs(*st);
      } catch (const run_interrupted& i) {
        interrupted = i;
      } catch (const std::exception& e) {
        // The database refused chunks the run wrote: the run fails rather than end as if they were there.
        fin.status = storage::run_status::failed;
        fin.output = nullptr;
        fin.error = error_json(code_name(errc::output_rejected), e.what());
      }
    }
  }
  if (!interrupted && st->poisoned) {
    // What ctx.step recorded as fatal decides the outcome, however the body ended: workflow code may have
    // swallowed it (catch (...)), or it may have come back wrapped (an `&&` of two steps throws
    // multiple_exceptions when one side hit concurrent_step and the other was cancelled).
    try {
      std::rethrow_exception(st->poisoned);
    } catch (const run_interrupted& i) {
      interrupted = i;
    } catch (const step_failed_error& e) {
      fin.status = storage::run_status::failed;
      fin.output = nullptr;
      fin.error = e.error();
    } catch (const nondeterminism_error& e) {
      fin.status = storage::run_status::failed;
      fin.output = nullptr;
      fin.error = error_json(code_name(errc::nondeterminism), e.what());
    } catch (const concurrent_step_error& e) {
      fin.status = storage::run_status::failed;
      fin.output = nullptr;
      fin.error = error_json(code_name(errc::concurrent_step), e.what());
    } catch (...) {
    }
  }
  if (!interrupted && st->lost.load(std::memory_order_acquire))
    interrupted = run_interrupted{run_interrupted::why::lease_lost};
  if (!interrupted && st->cancel_seen) {
    // Asked to cancel, and it saw it: the run ends cancelled however its body ended (having handled the
    // cancel, or failed while cleaning up: kept as the cause).
    json::value cause = fin.status == storage::run_status::failed ? std::move(fin.error) : json::value();
    fin.status = storage::run_status::cancelled;
    fin.output = nullptr;
    fin.error = error_json(code_name(errc::cancelled), "run cancelled");
    if (!cause.is_null()) fin.error.as_object()["cause"] = std::move(cause);
  }
  if (!interrupted &&
      (fin.status == storage::run_status::failed || fin.status == storage::run_status::cancelled) &&
      !st->compensations.empty()) {
    co_await compensate(*st, fin, interrupted);
  }

  if (interrupted && interrupted->reason == run_interrupted::why::parked && st->parked &&
      st->parked->continued) {
    // Queued afresh by ctx.continue_as_new, due now: this worker may take it at once.
    emit(run_event::kind::continued, *st, {}, 0, st->parked->event);
    wake_claimer();
    co_return;
  }
  if (interrupted && interrupted->reason == run_interrupted::why::parked && st->parked) {
    // The wait's statement parked the run and released its lease: nothing more to write.
    const bool sleeping = st->parked->kind == storage::wait_kind::sleep;
    if (st->parked->until) {
      schedule_wakeup(*st->parked->until, sleeping ? std::optional<run_id>(st->claim.id) : std::nullopt);
    }
    emit(sleeping ? run_event::kind::sleeping : run_event::kind::waiting, *st, {}, 0,
         sleeping ? std::string() : st->parked->event);
    const std::string what = sleeping ? std::string("sleep") : st->parked->event;
    observe([&](const step_middleware& m) {
      if (m.on_wait) m.on_wait(st->claim.id, st->claim.workflow, what);
    });
    co_return;
  }
  if (interrupted && interrupted->reason == run_interrupted::why::released) {
    const auto lease = st->lease();
    auto r = co_await store_.release(lease);
    if (r) {
      emit(run_event::kind::released, *st);
    } else {
      emit(run_event::kind::abandoned, *st, {}, 0, r.error().message());
    }
    co_return;
  }
  if (interrupted) {
    emit(run_event::kind::abandoned, *st, {}, 0, "lease lost");
    co_return;
  }
  std::string detail;
  if (fin.status == storage::run_status::completed) {
    // Checked before the output is serialized or copied: a value nested too deep must not recurse.
    std::string why;
    if (auto c = storage::check_json(fin.output, store_.options().limits, &why); !c) {
      if (c.error() == storage::errc::payload_too_deep) storage::destroy_deep(std::move(fin.output));
      fin.status = storage::run_status::failed;
      fin.output = nullptr;
      fin.error = error_json(code_name(errc::output_rejected),
                             "the workflow's output cannot be stored (" + c.error().message() + "): " + why);
    }
  }
  detail = json::serialize(fin.status == storage::run_status::completed ? fin.output : fin.error);
  st->finishing = true;
  finishing_.fetch_add(1);
  wake_claimer();
  auto r = co_await store_.finish(fin);
  if (!r && r.error() != storage::errc::fenced && !storage::is_transient(r.error()) &&
      r.error() != storage::errc::shut_down) {
    // The database refused the outcome itself. A refused write is not a lost lease: record a failure that
    // carries nothing the database could refuse, so the run ends instead of being re-run by the next worker.
    log::error("engine", "run " + st->claim.id + ": its outcome was refused (" + r.error().message() +
                             "); failing it with output_rejected");
    fin.status = storage::run_status::failed;
    fin.output = nullptr;
    fin.error = error_json(code_name(errc::output_rejected),
                           "the run's outcome could not be stored: " + r.error().message());
    detail = json::serialize(fin.error);
    r = co_await store_.finish(fin);
  }
  const bool ok = fin.status == storage::run_status::completed;
  if (!r) {
    emit(run_event::kind::abandoned, *st, {}, 0, r.error().message());
    co_return;
  }
  if (auto* m = metrics_of(st->claim.workflow)) m->finished(fin.status);
  emit(ok                                             ? run_event::kind::completed
       : fin.status == storage::run_status::cancelled ? run_event::kind::cancelled
                                                      : run_event::kind::failed,
       *st, {}, 0, std::move(detail));
}

asio::awaitable<void> engine_impl::stop(std::chrono::milliseconds deadline) {
  // The control state belongs to ctl_: run the body there, whatever executor the caller is on.
  co_await asio::co_spawn(ctl_, stop_on_ctl(deadline), use_awaitable);
  if (started_once_.load()) {
    auto r = co_await store_.unregister_worker(worker_id_);
    if (!r) log::warn("engine", "cannot unregister this worker: " + r.error().message());
  }
  // Streams get what the log holds until now, then end (their consumer loops finish).
  co_await hub_->finish(std::chrono::seconds(2));
  // No background thread is left polling the database (the listener would log an outage that no longer
  // concerns anyone). The writer and the pool stay: gets and waits still work until destruction.
  store_.stop_listening();
}

asio::awaitable<void> engine_impl::stop_on_ctl(std::chrono::milliseconds deadline) {
  stopping_.store(true, std::memory_order_release);
  hub_->release_gate();  // runs paused by a stream's consumer go on to their release
  wake_claimer();
  webhook_waits_ended_.store(true, std::memory_order_release);
  wake_webhook_waiters();  // requests waiting for an answer get 202 now: their runs have them
  // Cut retry backoffs short: each run stops at its next step boundary and is released.
  for (auto& [id, st] : inflight_)  // (an init-capture: clang 14 cannot capture a structured binding)
    asio::post(st->strand, [st = st] { st->cancel_backoffs(); });
  asio::steady_timer limit(ctl_, deadline);
  bool expired = false;
  limit.async_wait([this, &expired](boost::system::error_code ec) {
    if (ec) return;
    expired = true;
    notify_changed();
  });
  while ((!inflight_.empty() || claim_loop_active_ || direct_claims_ > 0) && !expired)
    co_await wait_changed();
  if (!inflight_.empty()) {
    // Past the deadline: whatever is still running (a step that ignores cancellation, a write waiting out a
    // database outage) is abandoned. It writes nothing more; its lease lapses and another worker resumes it.
    log::warn("engine", "stop: " + std::to_string(inflight_.size()) +
                            " run(s) still in flight after the deadline; abandoning them");
    for (auto& [id, st] : inflight_)
      st->lost.store(true, std::memory_order_release);
    inflight_.clear();
  }
  limit.cancel();
  heartbeat_wait_.cancel();
  wakeup_timer_.cancel();
  step_watch_wait_.cancel();
  schedule_wait_.cancel();
  retention_wait_.cancel();
  key_sweep_wait_.cancel();
  while (heartbeat_active_ || watchdog_active_ || claim_loop_active_ || wakeup_active_ ||
         step_watch_active_ || schedule_loop_active_ || retention_active_ || key_sweep_active_)
    co_await wait_changed();
}

asio::awaitable<result<std::size_t>> engine_impl::tick() {
  co_return co_await asio::co_spawn(ctl_, tick_on_ctl(), use_awaitable);
}

asio::awaitable<result<std::size_t>> engine_impl::tick_on_ctl() {
  if (stopping()) co_return errc::shutting_down;
  const std::size_t got = (co_await claim_batch(options_.concurrency)).claimed;
  ensure_heartbeat();  // runs longer than a lease must keep it
  while (!inflight_.empty())
    co_await wait_changed();
  if (!started_) heartbeat_wait_.cancel();  // let the tick's heartbeat loop end now
  co_return got;
}

std::optional<int> engine_impl::registered_version(const std::string& workflow,
                                                   std::optional<int> wanted) const {
  auto it = workflows_.find(workflow);
  if (it == workflows_.end() || it->second.empty()) return std::nullopt;
  // The newest version unless told otherwise.
  const int version = wanted.value_or(it->second.rbegin()->first);
  if (!it->second.contains(version)) return std::nullopt;
  return version;
}

asio::awaitable<result<enqueued>> engine_impl::enqueue(std::string workflow, json::value input,
                                                       enqueue_options options) {
  const auto version = registered_version(workflow, options.version);
  if (!version) co_return errc::unknown_workflow;
  // The keys of a run come from what its version declares (keel.workflow_versions): an engine that
  // enqueues before any worker of the version started declares it first, or its runs would go unlimited.
  if (!declared_) {
    auto declared = co_await store_.declare_workflows(declarations_of(workflows_));
    if (!declared) co_return declared.error();
    declared_ = true;
  }
  const auto& def = *find_workflow(workflow, *version);
  auto debounce = debounce_of(def, input, options);
  if (!debounce) co_return debounce.error();
  // A key needs a limit, the enqueue's or the rule's; storage checks the rest before SQL.
  if (options.concurrency_key && !options.concurrency_limit && !def.concurrency)
    co_return storage::errc::invalid_argument;
  if (options.throttle_key && (!options.throttle_limit || !options.throttle_window) && !def.throttle)
    co_return storage::errc::invalid_argument;
  if (options.fairness_weight && !options.fairness_key && !def.fairness)
    co_return storage::errc::invalid_argument;
  storage::new_run run{new_run_id(),
                       std::move(workflow),
                       *version,
                       std::move(input),
                       std::move(options.idempotency_key),
                       options.priority,
                       options.run_at,
                       std::move(options.concurrency_key),
                       options.concurrency_limit,
                       std::move(options.throttle_key),
                       options.throttle_limit,
                       options.throttle_window,
                       std::move(options.fairness_key),
                       options.fairness_weight,
                       std::move(options.traceparent)};
  // Named first (GCC 12 destroys a temporary inside a co_await expression twice).
  auto pending =
      *debounce ? store_.enqueue_debounced(run, (*debounce)->key, (*debounce)->window) : store_.enqueue(run);
  auto r = co_await std::move(pending);
  // The only data an enqueue carries is the input (and key): a statement the server refuses means bad input.
  if (!r && r.error() == storage::errc::data_rejected) co_return errc::invalid_input;
  if (!r) co_return r.error();
  if (r->conflict) co_return errc::idempotency_conflict;
  emit(run_event{run_event::kind::enqueued, r->id, run.workflow, {}, 0, r->created ? "new" : "existing"});
  wake_claimer();
  co_return enqueued{r->id, r->created};
}

asio::awaitable<result<run_info>> engine_impl::get(run_id id) {
  if (!is_valid_run_id(id)) co_return errc::invalid_run_id;
  auto r = co_await store_.get(id);
  if (!r) co_return engine_error(r.error());
  if (!r->hooks.empty()) {
    // Their links, derived as create_hook derived them (tokens are never stored).
    auto secret = co_await hook_secret();
    if (!secret) co_return engine_error(secret.error());
    for (auto& h : r->hooks)
      h.path = (h.webhook ? "/v1/webhooks/" : "/v1/hooks/") +
               hook_token(*secret, r->id, r->generation, h.seq, h.name);
  }
  co_return std::move(*r);
}

asio::awaitable<result<run_info>> engine_impl::wait(run_id id, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::chrono::milliseconds delay{2};
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    auto r = co_await get(id);
    if (!r) co_return r.error();
    if (storage::is_terminal(r->status)) co_return r;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) co_return errc::wait_timeout;
    timer.expires_after(std::min<std::chrono::steady_clock::duration>(delay, deadline - now));
    co_await timer.async_wait(asio::as_tuple(use_awaitable));
    delay = std::min(delay * 2, std::chrono::milliseconds{100});
  }
}

}  // namespace detail

}  // namespace keel
