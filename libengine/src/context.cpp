// ctx.step: replay from records, run with retries and timeout, checkpoint, and resume only when durable.
#include "keel/engine/context.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>

#include "coded_step_failure.hpp"
#include "engine_impl.hpp"
#include "keel/common/log.hpp"
#include "keel/storage/json_limits.hpp"
#include "output_state.hpp"

namespace keel {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace boost::asio::experimental::awaitable_operators;

/// Longest failure message recorded for a step: what an exception says may be anything.
constexpr std::size_t k_max_message_bytes = 8192;

json::value step_error(errc code, std::string_view message, const std::string& step, int attempts,
                       bool retriable) {
  json::object o;
  o["code"] = code_name(code);
  // Valid UTF-8, bounded: a step that throws garbage must not make its own failure unrecordable.
  o["message"] = storage::valid_utf8(message.substr(0, k_max_message_bytes));
  o["step"] = storage::valid_utf8(step);
  o["attempts"] = attempts;
  if (!retriable) o["retriable"] = false;
  return o;
}

/// Runs one attempt and hands back its value or the exception it threw.
asio::awaitable<std::pair<json::value, std::exception_ptr>> capture_outcome(
    const std::function<asio::awaitable<json::value>()>& fn) {
  std::pair<json::value, std::exception_ptr> outcome;
  try {
    outcome.first = co_await fn();
  } catch (...) {
    outcome.second = std::current_exception();
  }
  co_return outcome;
}

}  // namespace

const run_id& context::id() const noexcept {
  return state_->claim.id;
}
const std::string& context::workflow() const noexcept {
  return state_->claim.workflow;
}
int context::execution() const noexcept {
  return state_->claim.claims;
}

output_stream context::stream(std::string_view name) {
  main_line_only("ctx.stream");
  auto& st = *state_;
  if (!storage::valid_utf8(name).empty() && (name.size() > 255 || storage::valid_utf8(name) != name))
    throw std::invalid_argument("ctx.stream: a stream name is at most 255 bytes of valid UTF-8");
  if (name.empty()) throw std::invalid_argument("ctx.stream: a stream needs a name");
  auto& s = st.outputs[std::string(name)];
  if (!s)
    s = std::make_shared<detail::output_state>(std::string(name), st.lease(), st.claim.generation,
                                               st.claim.claims > 1, st.engine.store_, st.strand);
  return output_stream(st, s);
}

void context::emit(const json::value& frame) {
  auto& st = *state_;
  // Replaying: the code between recorded steps runs again, and its frames were published the first time.
  if (branch_ == nullptr ? static_cast<std::size_t>(st.next_seq) < st.by_seq.size()
                         : st.by_branch.contains(std::pair(branch_->path, branch_->next_local)))
    return;
  std::string why;
  if (auto c = storage::check_json(frame, st.engine.store_.options().limits, &why); !c) {
    log::warn("engine", "run " + st.claim.id + ": ctx.emit dropped a frame: " + why);
    return;
  }
  st.engine.hub_->emit_frame(st, frame);
}

namespace detail {

run_state::run_state(engine_impl& e, storage::claimed_run c,
                     boost::asio::strand<boost::asio::io_context::executor_type> s,
                     std::chrono::steady_clock::time_point lease_until)
    : engine(e), claim(std::move(c)), strand(s), backoff(s), lease_deadline(lease_until) {
  cancel_requested.store(claim.cancel_requested, std::memory_order_relaxed);
  for (const auto& rec : claim.steps) {
    if (rec.branch) {
      by_branch.emplace(std::pair(*rec.branch, rec.branch_seq), &rec);
    }
    if (rec.seq < 0) continue;
    const auto at = static_cast<std::size_t>(rec.seq);
    if (by_seq.size() <= at) by_seq.resize(at + 1, nullptr);
    by_seq[at] = &rec;
  }
}

int run_state::take_branch_seq() {
  if (!spare_seqs.empty()) {
    const auto lowest = std::min_element(spare_seqs.begin(), spare_seqs.end());
    const int seq = *lowest;
    spare_seqs.erase(lowest);
    return seq;
  }
  while (static_cast<std::size_t>(next_free_seq) < by_seq.size() && by_seq[next_free_seq] != nullptr)
    ++next_free_seq;
  region_high = std::max(region_high, next_free_seq);
  return next_free_seq++;
}

void run_state::cancel_backoffs() {
  backoff.cancel();
  for (auto* t : branch_backoffs)
    t->cancel();
  if (join_watch != nullptr) join_watch->cancel();
}

step_slot::step_slot(run_state& st, bool& busy, const std::string& name) : busy_(busy) {
  if (st.poisoned) std::rethrow_exception(st.poisoned);
  if (busy) {
    st.poisoned = std::make_exception_ptr(concurrent_step_error(
        "step '" + name +
        "' started while another step of the same run was in progress: ctx.step calls of "
        "one run must not overlap (await each before starting the next)"));
    std::rethrow_exception(st.poisoned);
  }
  busy = true;
}

void check_interrupt(run_state& st, bool main_line) {
  if (std::chrono::steady_clock::now() > st.lease_deadline.load(std::memory_order_acquire)) {
    st.lost.store(true, std::memory_order_release);
  }
  if (st.lost.load(std::memory_order_acquire)) {
    st.poisoned = std::make_exception_ptr(run_interrupted{run_interrupted::why::lease_lost});
  } else if (st.engine.stopping()) {
    st.poisoned = std::make_exception_ptr(run_interrupted{run_interrupted::why::released});
  }
  if (st.poisoned) std::rethrow_exception(st.poisoned);
  if (main_line && !st.cancel_seen && st.cancel_requested.load(std::memory_order_acquire)) {
    // Once: the workflow may catch it and go on cleaning up (its steps run until the grace ends).
    st.cancel_seen = true;
    throw cancelled_error("run " + st.claim.id + " was asked to cancel");
  }
}

void check_branch_interrupt(run_state& st, branch_state& branch) {
  check_interrupt(st, false);
  if (branch.cancelled_before) {
    branch.cancelled_before = false;
    st.cancel_seen = true;
    throw cancelled_error("run " + st.claim.id + " was asked to cancel");
  }
}

void check_handle(run_state& st, const branch_state* made_in, std::string_view what) {
  if (made_in == nullptr) return;
  const bool live =
      std::find(st.live_branches.begin(), st.live_branches.end(), made_in) != st.live_branches.end();
  if (live && !made_in->done) return;
  json::object error;
  error["code"] = "invalid_argument";
  error["message"] = std::string(what) +
                     ": it was made in a ctx.parallel / ctx.map branch that has ended; a branch's hooks and "
                     "child handles are waited for in that branch (or passed to ctx.any / ctx.all)";
  error["retriable"] = false;
  st.poisoned = std::make_exception_ptr(step_failed_error(json::value(std::move(error))));
  std::rethrow_exception(st.poisoned);
}

void lose_lease(run_state& st) {
  st.lost.store(true, std::memory_order_release);
  st.poisoned = std::make_exception_ptr(run_interrupted{run_interrupted::why::lease_lost});
  std::rethrow_exception(st.poisoned);
}

const storage::step_record* replayed_step(run_state& st, int seq, const std::string& name) {
  if (seq < 0 || static_cast<std::size_t>(seq) >= st.by_seq.size() || st.by_seq[seq] == nullptr)
    return nullptr;
  const auto& rec = *st.by_seq[seq];
  if (rec.name != name || rec.branch) {
    st.poisoned = std::make_exception_ptr(
        nondeterminism_error("step #" + std::to_string(seq) + " is '" + name + "' but the run recorded '" +
                             rec.name + (rec.branch ? "' (in parallel branch " + *rec.branch + ")" : "'") +
                             " at that position: the workflow code changed or is not deterministic"));
    std::rethrow_exception(st.poisoned);
  }
  return &rec;
}

const storage::step_record* replayed_branch_step(run_state& st, const std::string& branch, int local,
                                                 const std::string& name) {
  auto it = st.by_branch.find(std::pair(branch, local));
  if (it == st.by_branch.end()) return nullptr;
  const auto& rec = *it->second;
  if (rec.name != name) {
    st.poisoned = std::make_exception_ptr(
        nondeterminism_error("step #" + std::to_string(local) + " of parallel branch " + branch + " is '" +
                             name + "' but the run recorded '" + rec.name +
                             "' at that position: the workflow code changed or is not deterministic"));
    std::rethrow_exception(st.poisoned);
  }
  st.region_high = std::max(st.region_high, rec.seq);
  return &rec;
}

}  // namespace detail

asio::awaitable<json::value> context::run_step(std::string name, erased_step fn, step_options options) {
  auto& st = *state_;
  auto& engine = st.engine;
  const detail::step_slot slot(st, branch_ ? branch_->in_step : st.in_step, name);
  // On the main line the position is the seq; in a parallel branch, the branch's own position, and a seq
  // from the region once the step is new.
  const int local = branch_ ? branch_->next_local++ : st.next_seq++;
  if (branch_ == nullptr && !name.starts_with("keel.")) st.last_user_step = local;
  const auto* replayed = branch_ ? detail::replayed_branch_step(st, branch_->path, local, name)
                                 : detail::replayed_step(st, local, name);
  // Replay: the step at this position was recorded by an earlier execution.
  if (replayed) {
    if (replayed->failed) throw step_failed_error(replayed->error);
    co_return replayed->output;
  }
  const int seq = branch_ ? st.take_branch_seq() : local;
  auto& backoff = branch_ ? branch_->backoff : st.backoff;

  auto interrupt_if_needed = [&] {
    if (branch_ != nullptr) {
      detail::check_branch_interrupt(st, *branch_);
    } else {
      detail::check_interrupt(st);
    }
  };
  // A bounded stream's consumer is behind: wait for it before new work (released by a cancel, a lost
  // lease or a stop, which the check below then reports).
  if (engine.hub_->paused()) co_await engine.hub_->pause_point(st);
  interrupt_if_needed();

  const int max_attempts = std::max(1, options.retry.max_attempts);
  const auto started = std::chrono::system_clock::now();
  // The step's start is logged by the engine's watch if it runs a while, else by its checkpoint.
  detail::step_watch watch(st, seq, name, branch_ ? std::optional<std::string>(branch_->path) : std::nullopt,
                           started);
  // The step's events in the run log (appended with the writes that follow; its checkpoint waits for
  // them, see step_watch::appends_settled).
  auto log_step = [&](std::string_view kind, int attempt, json::object data) {
    data["seq"] = seq;
    data["name"] = storage::valid_utf8(name);
    data["attempt"] = attempt;
    data["epoch"] = st.claim.epoch;  // the execution's: a later one's identical event is another event
    if (branch_ != nullptr) data["branch"] = branch_->path;
    engine.store_.append_log(st.lease(), kind, json::value(std::move(data)), watch.track_append());
  };
  const bool observed = !engine.options_.middleware.empty();
  const std::string* branch_path = branch_ ? &branch_->path : nullptr;
  for (int attempt = 1;; ++attempt) {
    if (branch_ == nullptr) st.step_attempt = attempt;
    const step_info info{st.claim.id, st.claim.workflow, name, seq, attempt, branch_path};
    if (observed) {
      engine.observe([&](const step_middleware& m) {
        if (m.before_step) m.before_step(info);
      });
    }
    json::value output;
    std::optional<std::string> failure;
    errc code = errc::step_failed;
    bool retriable = true;
    std::optional<detail::coded_step_failure> coded;  // the body's own code and attempts
    const auto attempt_began = std::chrono::steady_clock::now();
    try {
      if (options.timeout) {
        // `||` completes on the first *success*: the attempt reports its exception as a value so that a
        // failing attempt wins the race too, instead of waiting for the timer.
        asio::steady_timer timer(st.strand, *options.timeout);
        auto winner = co_await (capture_outcome(fn) || timer.async_wait(asio::use_awaitable));
        if (winner.index() == 1) {
          code = errc::step_timeout;
          failure = "step '" + name + "' timed out after " + std::to_string(options.timeout->count()) + " ms";
        } else {
          auto& [value, thrown] = std::get<0>(winner);
          if (thrown) std::rethrow_exception(thrown);
          output = std::move(value);
        }
      } else {
        output = co_await fn();
      }
    } catch (const detail::coded_step_failure& e) {
      failure = e.what();
      retriable = false;
      coded = e;
    } catch (const non_retriable_error& e) {
      failure = e.what();
      retriable = false;
    } catch (const std::exception& e) {
      failure = e.what();
    } catch (const detail::run_interrupted&) {
      throw;
    } catch (...) {
      failure = "step '" + name + "' threw an exception not derived from std::exception";
    }
    if (auto* m = engine.metrics_of(st.claim.workflow))
      m->step_seconds.observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - attempt_began).count());
    if (!failure) {
      // Checked before the output is copied or serialized (a value nested too deep must not recurse), and
      // before SQL: an output over the limits fails the step for good, since another attempt would return
      // the same.
      std::string why;
      if (auto c = storage::check_json(output, engine.store_.options().limits, &why); !c) {
        if (c.error() == storage::errc::payload_too_deep) storage::destroy_deep(std::move(output));
        output = nullptr;
        failure = "step '" + name + "' returned an output that cannot be stored (" + c.error().message() +
                  "): " + why;
        code = errc::output_rejected;
        retriable = false;
      }
    }

    storage::step_record rec{
        seq, name, false, nullptr, nullptr, attempt, started, std::chrono::system_clock::now(), {}, 0};
    if (branch_) {
      rec.branch = branch_->path;
      rec.branch_seq = local;
    }
    if (failure && observed) {
      const bool again = retriable && attempt < max_attempts;
      engine.observe([&](const step_middleware& m) {
        if (m.on_step_error) m.on_step_error(info, *failure, again);
      });
    }
    if (failure && retriable && attempt < max_attempts) {
      engine.emit(run_event::kind::step_retrying, st, name, attempt, *failure);
      const auto delay = options.retry.delay_after(attempt, engine.random_unit());
      json::object retrying;
      retrying["error"] = storage::valid_utf8(failure->substr(0, k_max_message_bytes));
      retrying["next_delay_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(delay).count();
      watch.log_start();  // below its retries in the log
      log_step("step_retrying", attempt, std::move(retrying));
      // A stop, cancel or lost lease that arrived during the attempt found no wait to cut short: check now.
      // (Same strand as the posted cancel, so nothing slips between this check and the wait.)
      interrupt_if_needed();
      backoff.expires_after(delay);
      co_await backoff.async_wait(asio::as_tuple(asio::use_awaitable));
      interrupt_if_needed();
      continue;
    }
    json::value error;
    if (failure) {
      error = step_error(code, *failure, name, attempt, retriable);
      if (coded) {
        // The body made its own attempts and chose its code: "retriable" would describe ctx.step's, not its.
        error.as_object()["code"] = coded->code();
        error.as_object()["attempts"] = coded->attempts();
        error.as_object().erase("retriable");
      }
      rec.failed = true;
      rec.error = error;
    } else {
      rec.output = std::move(output);  // moved back out once durable: no copy of the output on the hot path
    }
    // Ended first (no append of this step can start after it), then its appends are waited for, and the
    // output its code wrote is made durable: all before the step counts as done.
    rec.log_start = !watch.finish();
    co_await watch.appends_settled();
    co_await detail::flush_outputs(st, branch_ == nullptr ? attempt : 0);
    // Named, not a temporary inside the co_await expression: GCC 12 destroys such temporaries twice.
    storage::step_checkpoint cp{st.lease(), std::move(rec)};
    auto written = co_await engine.store_.checkpoint(cp);
    auto refused = [](const result<void>& w) {
      return !w && w.error() != storage::errc::fenced && w.error() != storage::errc::shut_down &&
             !storage::is_transient(w.error());
    };
    if (refused(written)) {
      // The database refused the record itself: a refused write is not a lost lease. Running the step again
      // would produce the same, so the step fails for good, with a failure that carries no user data.
      log::error("engine", "run " + st.claim.id + ": the checkpoint of step '" + storage::valid_utf8(name) +
                               "' was refused (" + written.error().message() + "); failing the step");
      failure = "step '" + name + "': its " + std::string(cp.step.failed ? "failure" : "output") +
                " could not be stored (" + written.error().message() + ")";
      code = errc::output_rejected;
      retriable = false;
      error = step_error(code, *failure, name, attempt, retriable);
      cp.step.failed = true;
      cp.step.output = nullptr;
      cp.step.error = error;
      written = co_await engine.store_.checkpoint(cp);
      if (refused(written)) {
        // Even a failure is refused (the step's name itself, say): nothing of this step can be recorded, and
        // abandoning the run would only re-run the step on the next worker. The run fails instead; its
        // finish writes no step row. Poisoned, so that workflow code catching this cannot go on.
        json::object unrecordable;
        unrecordable["code"] = code_name(errc::output_rejected);
        unrecordable["message"] = "step #" + std::to_string(seq) +
                                  ": neither its outcome nor its failure could be "
                                  "stored (" +
                                  written.error().message() + ")";
        unrecordable["attempts"] = attempt;
        st.poisoned = std::make_exception_ptr(step_failed_error(std::move(unrecordable)));
        std::rethrow_exception(st.poisoned);
      }
    }
    if (!written) detail::lose_lease(st);
    if (failure) {
      engine.emit(run_event::kind::step_failed, st, name, attempt, *failure);
      throw step_failed_error(std::move(error));
    }
    engine.emit(run_event::kind::step_completed, st, name, attempt);
    if (observed) {
      const auto took =
          std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now() - started);
      engine.observe([&](const step_middleware& m) {
        if (m.after_step) m.after_step(info, cp.step.output, took);
      });
    }
    co_return std::move(cp.step.output);
  }
}

void context::add_compensation(std::string name, erased_step fn, const step_options& options) {
  main_line_only("ctx.compensate");
  const int undoes = state_->last_user_step >= 0 ? state_->last_user_step : state_->next_seq;
  state_->compensations.push_back({std::move(name), std::move(fn), options, undoes});
}

asio::awaitable<json::array> context::run_compensations() {
  auto& st = *state_;
  json::array done;
  // Newest first; each a step of its own, so a crash part-way replays the ones done.
  auto pending = std::move(st.compensations);
  st.compensations.clear();
  for (auto it = pending.rbegin(); it != pending.rend(); ++it) {
    const std::string step = "keel.compensate:" + it->name;
    json::object outcome;
    outcome["step"] = storage::valid_utf8(step);
    outcome["from_step"] = it->from_step;
    try {
      co_await run_step(step, it->fn, it->options);
      outcome["status"] = "completed";
    } catch (const step_failed_error& e) {
      // Recorded as the step's failure; the remaining compensations still run.
      outcome["status"] = "failed";
      outcome["error"] = e.error();
    }
    done.emplace_back(std::move(outcome));
  }
  co_return done;
}

}  // namespace keel
