// Child runs (ctx.child): started once per step position, waited for durably, retried as new runs; and
// ctx.continue_as_new, which starts the run itself afresh.
#include <algorithm>
#include <boost/json/value.hpp>

#include "engine_impl.hpp"
#include "keel/common/log.hpp"
#include "keel/engine/context.hpp"
#include "keel/storage/json_limits.hpp"
#include "output_state.hpp"

namespace keel {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;

constexpr std::string_view k_child_step_prefix = "keel.child:";
constexpr std::string_view k_start_child_step_prefix = "keel.start_child:";
constexpr std::string_view k_child_wait_step_prefix = "keel.child_wait:";

/// The child's idempotency key: one child per (parent, generation, step position, attempt), whichever
/// execution of the parent gets there. `position`: the main line's seq, or "b<branch>@<position in it>".
std::string child_key(const run_id& parent, int generation, std::string_view position, int attempt) {
  // The generation too: after continue_as_new, positions start again at 0 and must find new children.
  // Appended piece by piece: g++ 12 at -O3 reports a false -Wrestrict in `"literal" + std::string&&`.
  std::string key = "keel.child:" + parent + ":";
  if (generation > 0) key.append("g").append(std::to_string(generation)).append(":");
  key.append(position);
  if (attempt > 1) key.append(":").append(std::to_string(attempt));
  return key;
}

/// A position in a parallel branch, as child keys name it (a branch's seqs depend on the order branches
/// ran in; its own positions do not).
std::string branch_position(const detail::branch_state& branch, int local) {
  std::string p = "b";
  p.append(branch.path).append("@").append(std::to_string(local));
  return p;
}

/// When attempt `attempt` of a child may start: at once for the first, after the retry policy's delay for
/// the next ones (counted from now: a replay finds the child already inserted, with its first due time).
std::optional<storage::clock::time_point> retry_at(detail::engine_impl& engine, const child_options& options,
                                                   int attempt) {
  if (attempt <= 1) return std::nullopt;
  return std::chrono::system_clock::now() + options.retry.delay_after(attempt - 1, engine.random_unit());
}

/// Checkpoints a child step's outcome (`rec`: its output, or its error when failed) and reports it; returns
/// the output or throws the error.
asio::awaitable<json::value> record_child_step(detail::run_state& st, storage::step_record rec) {
  auto& engine = st.engine;
  storage::step_checkpoint cp{st.lease(), std::move(rec)};
  auto written = co_await engine.store_.checkpoint(cp);
  if (!written) detail::lose_lease(st);
  if (cp.step.failed) {
    engine.emit(run_event::kind::step_failed, st, cp.step.name, cp.step.attempts,
                std::string(cp.step.error.at("message").as_string()));
    throw step_failed_error(std::move(cp.step.error));
  }
  engine.emit(run_event::kind::step_completed, st, cp.step.name, cp.step.attempts);
  co_return std::move(cp.step.output);
}

/// Whether a child could not be started because of what it was given (another try would be the same).
bool bad_child_input(const boost::system::error_code& e) {
  return e == storage::errc::invalid_argument || e == storage::errc::payload_too_large ||
         e == storage::errc::payload_too_deep;
}

json::value child_step_error(std::string_view code, std::string message, const std::string& step,
                             int attempts) {
  json::object o;
  o["code"] = code;
  o["message"] = storage::valid_utf8(message);
  o["step"] = storage::valid_utf8(step);
  o["attempts"] = attempts;
  return o;
}

}  // namespace

asio::awaitable<json::value> context::run_child(std::string workflow, json::value input,
                                                child_options options) {
  std::string name = std::string(k_child_step_prefix) + workflow;  // before `workflow` is moved from
  return wait_child(std::move(name), std::move(workflow), std::move(input), std::move(options), std::nullopt);
}

asio::awaitable<json::value> child_run::wait() {
  if (run_ != nullptr)
    detail::check_handle(*run_, made_in_, "child_run::wait of a '" + workflow_ + "' child");
  // The child started at `started_at_`: found by its key, never started again (one attempt).
  child_options existing;
  existing.version = version_;
  std::string name = std::string(k_child_wait_step_prefix) + workflow_;
  std::string workflow = workflow_;
  json::value no_input;  // named: no class temporary inside the co_await expression (GCC 12)
  if (ctx_->branch_ != nullptr) {
    std::optional<run_id> started(id_);
    co_return co_await ctx_->branch_child(std::move(name), std::move(workflow), std::move(no_input), existing,
                                          std::move(started));
  }
  co_return co_await ctx_->wait_child(std::move(name), std::move(workflow), std::move(no_input), existing,
                                      started_at_);
}

asio::awaitable<child_run> context::run_start_child(std::string workflow, json::value input,
                                                    child_options options) {
  auto& st = *state_;
  auto& engine = st.engine;
  std::string name = std::string(k_start_child_step_prefix) + workflow;
  if (branch_ != nullptr) {
    co_return co_await branch_start_child(std::move(name), std::move(workflow), std::move(input),
                                          std::move(options));
  }
  const detail::step_slot slot(st, st.in_step, name);
  const int seq = st.next_seq++;
  child_run handle;
  handle.ctx_ = this;
  handle.run_ = state_;
  handle.made_in_ = branch_;
  handle.workflow_ = workflow;
  handle.started_at_ = seq;
  const auto version = options.version ? options.version : engine.registered_version(workflow, std::nullopt);
  handle.version_ = version;
  if (const auto* rec = detail::replayed_step(st, seq, name)) {
    if (rec->failed) throw step_failed_error(rec->error);
    handle.id_ = std::string(rec->output.at("child").as_string());
    co_return handle;
  }
  detail::check_interrupt(st);
  auto fail = [&](json::value error) {
    st.poisoned = std::make_exception_ptr(step_failed_error(std::move(error)));
    std::rethrow_exception(st.poisoned);
  };
  if (!version) {
    fail(child_step_error(
        code_name(errc::unknown_workflow),
        "ctx.start_child: workflow '" + workflow +
            "' is not registered on this worker; give child_options::version to start it for "
            "other workers",
        name, 1));
  }
  const auto started = std::chrono::system_clock::now();
  storage::child_request request{
      st.lease(), seq,
      storage::new_run{new_run_id(), workflow, *version, std::move(input),
                       child_key(st.claim.id, st.claim.generation, std::to_string(seq), 1), options.priority,
                       std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt,
                       std::nullopt, std::nullopt, std::nullopt},
      st.cancel_seen};
  auto id = co_await engine.store_.start_child_only(request);
  if (!id) {
    const auto e = id.error();
    if (!bad_child_input(e)) detail::lose_lease(st);
    fail(child_step_error(code_name(errc::invalid_input),
                          "ctx.start_child: cannot start '" + workflow + "': " + e.message(), name, 1));
  }
  if (*id == "cancel") {
    // Asked to cancel since the check above: nothing was started; the cancel is seen here.
    st.cancel_requested.store(true, std::memory_order_release);
    detail::check_interrupt(st);
  }
  json::object out;
  out["child"] = *id;
  storage::step_checkpoint cp{st.lease(),
                              {seq,
                               name,
                               false,
                               json::value(std::move(out)),
                               nullptr,
                               1,
                               started,
                               std::chrono::system_clock::now(),
                               {},
                               0}};
  co_await detail::flush_outputs(st);  // the record commits after what the run wrote before it
  auto written = co_await engine.store_.checkpoint(cp);
  if (!written) detail::lose_lease(st);
  engine.emit(run_event::kind::step_completed, st, name, 1);
  handle.id_ = std::move(*id);
  co_return handle;
}

asio::awaitable<std::vector<json::value>> context::run_map_children(std::string workflow,
                                                                    std::vector<json::value> inputs,
                                                                    map_options options,
                                                                    child_options child) {
  const std::size_t n = inputs.size();
  const std::size_t width = std::min<std::size_t>(
      {options.concurrency == 0 ? n : options.concurrency, n, storage::k_max_wait_arms});
  std::vector<json::value> outputs(n);
  std::vector<json::value> failures(n);
  // Children running now, with the index of their input.
  std::vector<std::pair<child_run, std::size_t>> active;
  std::size_t next = 0;
  auto start_next = [&]() -> asio::awaitable<void> {
    const std::size_t i = next++;
    std::string name = workflow;
    json::value input = std::move(inputs[i]);
    auto handle = co_await run_start_child(std::move(name), std::move(input), child);
    active.emplace_back(std::move(handle), i);
  };
  while (next < width)
    co_await start_next();
  while (!active.empty()) {
    std::vector<detail::wait_alternative> alternatives;
    alternatives.reserve(active.size());
    for (const auto& [handle, i] : active)
      alternatives.push_back(alternative_of(handle));
    auto first = co_await run_any(std::move(alternatives));
    const std::size_t input = active[first.index].second;
    active.erase(active.begin() + static_cast<std::ptrdiff_t>(first.index));
    const auto& outcome = first.payload ? *first.payload : json::value();
    const auto* o = outcome.if_object();
    const auto* status = o ? o->if_contains("status") : nullptr;
    if (status && status->is_string() && status->as_string() == "completed") {
      outputs[input] = o->at("output");
    } else {
      failures[input] = outcome;
    }
    if (next < n) co_await start_next();
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (failures[i].is_null()) continue;
    const auto* o = failures[i].if_object();
    json::object error;
    error["code"] = code_name(errc::child_failed);
    error["message"] = std::string("map_children: the child for input ").append(std::to_string(i)) + " (" +
                       workflow + ") " +
                       (o && o->contains("status") ? std::string(o->at("status").as_string()) : "ended");
    error["input"] = i;
    if (o) {
      if (const auto* c = o->if_contains("child")) error["child"] = *c;
      if (const auto* e = o->if_contains("error")) error["child_error"] = *e;
    }
    throw step_failed_error(json::value(std::move(error)));
  }
  co_return outputs;
}

detail::wait_alternative context::alternative_of(const child_run& c) {
  return {detail::wait_alternative::what::child, c.id_, 0, std::nullopt, std::nullopt};
}

asio::awaitable<json::value> context::wait_child(std::string name, std::string workflow, json::value input,
                                                 child_options options, std::optional<int> started_at) {
  if (branch_ != nullptr) {
    std::optional<run_id> none;
    co_return co_await branch_child(std::move(name), std::move(workflow), std::move(input),
                                    std::move(options), std::move(none));
  }
  auto& st = *state_;
  auto& engine = st.engine;
  const detail::step_slot slot(st, st.in_step, name);
  const int seq = st.next_seq++;
  // The child's key: this position's (ctx.child), or the one that started it (child_run::wait).
  const int key_seq = started_at.value_or(seq);

  if (const auto* rec = detail::replayed_step(st, seq, name)) {
    if (rec->failed) throw step_failed_error(rec->error);
    co_return rec->output;
  }
  detail::check_interrupt(st);

  const auto started = std::chrono::system_clock::now();
  const int max_attempts = started_at ? 1 : std::max(1, options.retry.max_attempts);
  // A version given may be one only other workers run; none: the newest this worker runs.
  const auto version = options.version ? options.version : engine.registered_version(workflow, std::nullopt);
  json::value output, error;
  int attempts = 1;
  if (!version) {
    error = child_step_error(code_name(errc::unknown_workflow),
                             "ctx.child: workflow '" + workflow +
                                 "' is not registered on this worker; give child_options::version to start "
                                 "it for other workers",
                             name, attempts);
  }
  for (int attempt = 1; version && error.is_null(); ++attempt) {
    attempts = attempt;
    // Named, not a temporary inside the co_await expression: GCC 12 destroys such temporaries twice.
    storage::child_request request{
        st.lease(), seq,
        storage::new_run{new_run_id(), workflow, *version, input,
                         child_key(st.claim.id, st.claim.generation, std::to_string(key_seq), attempt),
                         options.priority, retry_at(engine, options, attempt), std::nullopt, std::nullopt,
                         std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt},
        st.cancel_seen};
    co_await detail::flush_outputs(st);  // what the run wrote is durable before it parks
    auto decided = co_await engine.store_.start_child(request);
    if (!decided) {
      const auto e = decided.error();
      if (!bad_child_input(e)) detail::lose_lease(st);
      // The input cannot be stored (or the name is invalid): another attempt would be the same.
      error = child_step_error(code_name(errc::invalid_input),
                               "ctx.child: cannot start '" + workflow + "': " + e.message(), name, attempt);
      break;
    }
    if (decided->outcome == storage::wait_outcome::what::cancel) {
      // Asked to cancel since the check above: no child is started; the cancel is seen here.
      st.cancel_requested.store(true, std::memory_order_release);
      detail::check_interrupt(st);
    }
    if (decided->outcome == storage::wait_outcome::what::parked) {
      // This execution ends here, holding nothing; the child's end wakes the run.
      st.parked = detail::run_state::parked_wait{storage::wait_kind::child, name, std::nullopt};
      st.poisoned = std::make_exception_ptr(detail::run_interrupted{detail::run_interrupted::why::parked});
      std::rethrow_exception(st.poisoned);
    }
    auto& child = decided->output.as_object();
    const std::string status(child.at("status").as_string());
    if (status == "completed") {
      output = std::move(child["output"]);
      break;
    }
    const std::string message =
        "child run " + std::string(child.at("child").as_string()) + " (" + workflow + ") " + status;
    if (attempt < max_attempts) {
      engine.emit(run_event::kind::step_retrying, st, name, attempt, message);
      continue;
    }
    error = child_step_error(code_name(errc::child_failed), message, name, attempt);
    error.as_object()["child"] = child.at("child");
    error.as_object()["child_status"] = status;
    error.as_object()["child_error"] = std::move(child["error"]);
  }

  const bool failed = !error.is_null();
  storage::step_record rec{seq,   name,     failed,  failed ? json::value() : std::move(output),
                           error, attempts, started, std::chrono::system_clock::now(),
                           {},    0};
  co_return co_await record_child_step(st, std::move(rec));
}

asio::awaitable<child_run> context::branch_start_child(std::string name, std::string workflow,
                                                       json::value input, child_options options) {
  auto& st = *state_;
  auto& engine = st.engine;
  const detail::step_slot slot(st, branch_->in_step, name);
  const int local = branch_->next_local++;
  child_run handle;
  handle.ctx_ = this;
  handle.run_ = state_;
  handle.made_in_ = branch_;
  handle.workflow_ = workflow;
  handle.started_at_ = local;
  const auto version = options.version ? options.version : engine.registered_version(workflow, std::nullopt);
  handle.version_ = version;
  if (const auto* rec = detail::replayed_branch_step(st, branch_->path, local, name)) {
    if (rec->failed) throw step_failed_error(rec->error);
    handle.id_ = std::string(rec->output.at("child").as_string());
    co_return handle;
  }
  detail::check_branch_interrupt(st, *branch_);
  auto fail = [&](json::value error) {
    st.poisoned = std::make_exception_ptr(step_failed_error(std::move(error)));
    std::rethrow_exception(st.poisoned);
  };
  if (!version) {
    fail(child_step_error(code_name(errc::unknown_workflow),
                          "ctx.start_child: workflow '" + workflow +
                              "' is not registered on this worker; give child_options::version to start it "
                              "for other workers",
                          name, 1));
  }
  const auto started = std::chrono::system_clock::now();
  // Cancel requests are the main line's to see: a branch starts its child whatever.
  storage::child_request request{
      st.lease(), -1,
      storage::new_run{new_run_id(), workflow, *version, std::move(input),
                       child_key(st.claim.id, st.claim.generation, branch_position(*branch_, local), 1),
                       options.priority, std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt,
                       std::nullopt, std::nullopt, std::nullopt, std::nullopt},
      true};
  auto id = co_await engine.store_.start_child_only(request);
  if (!id) {
    if (!bad_child_input(id.error())) detail::lose_lease(st);
    fail(child_step_error(code_name(errc::invalid_input),
                          "ctx.start_child: cannot start '" + workflow + "': " + id.error().message(), name,
                          1));
  }
  json::object out;
  out["child"] = *id;
  storage::step_checkpoint cp{st.lease(),
                              {st.take_branch_seq(), name, false, json::value(std::move(out)), nullptr, 1,
                               started, std::chrono::system_clock::now(), branch_->path, local}};
  auto written = co_await engine.store_.checkpoint(cp);
  if (!written) detail::lose_lease(st);
  engine.emit(run_event::kind::step_completed, st, name, 1);
  handle.id_ = std::move(*id);
  co_return handle;
}

asio::awaitable<json::value> context::branch_child(std::string name, std::string workflow, json::value input,
                                                   child_options options, std::optional<run_id> existing) {
  auto& st = *state_;
  auto& engine = st.engine;
  const detail::step_slot slot(st, branch_->in_step, name);
  const int local = branch_->next_local++;
  if (const auto* rec = detail::replayed_branch_step(st, branch_->path, local, name)) {
    if (rec->failed) throw step_failed_error(rec->error);
    co_return rec->output;
  }
  detail::check_branch_interrupt(st, *branch_);
  const auto started = std::chrono::system_clock::now();
  const int max_attempts = existing ? 1 : std::max(1, options.retry.max_attempts);
  const auto version = options.version ? options.version : engine.registered_version(workflow, std::nullopt);
  json::value output, error;
  int attempts = 1;
  if (!existing && !version) {
    error = child_step_error(code_name(errc::unknown_workflow),
                             "ctx.child: workflow '" + workflow +
                                 "' is not registered on this worker; give child_options::version to start "
                                 "it for other workers",
                             name, attempts);
  }
  for (int attempt = 1; error.is_null(); ++attempt) {
    attempts = attempt;
    run_id child;
    if (existing) {
      child = *existing;
    } else {
      // Started once per (branch position, attempt), whichever execution gets here.
      storage::child_request request{
          st.lease(), -1,
          storage::new_run{
              new_run_id(), workflow, *version, input,
              child_key(st.claim.id, st.claim.generation, branch_position(*branch_, local), attempt),
              options.priority, retry_at(engine, options, attempt), std::nullopt, std::nullopt, std::nullopt,
              std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt},
          true};
      auto id = co_await engine.store_.start_child_only(request);
      if (!id) {
        if (!bad_child_input(id.error())) detail::lose_lease(st);
        error = child_step_error(code_name(errc::invalid_input),
                                 "ctx.child: cannot start '" + workflow + "': " + id.error().message(), name,
                                 attempt);
        break;
      }
      child = std::move(*id);
    }
    // Its end, as a wait for any of one child: the branch blocks (or the run parks) until it comes.
    std::vector<storage::wait_arm> arms{{storage::wait_kind::child, child, 0, std::nullopt}};
    std::string no_record;  // the outcome is recorded below, after retries
    auto decided =
        co_await detail::decide_branch_wait(st, *branch_, local, std::move(no_record), std::move(arms));
    json::value outcome;
    if (auto* o = decided.if_object(); o && o->contains("payload")) outcome = std::move((*o)["payload"]);
    auto* c = outcome.if_object();
    const auto* status = c ? c->if_contains("status") : nullptr;
    const std::string status_text =
        status && status->is_string() ? std::string(status->as_string()) : "ended";
    if (status_text == "completed") {
      output = std::move((*c)["output"]);
      break;
    }
    const std::string message = "child run " + child + " (" + workflow + ") " + status_text;
    if (attempt < max_attempts) {
      engine.emit(run_event::kind::step_retrying, st, name, attempt, message);
      continue;
    }
    error = child_step_error(code_name(errc::child_failed), message, name, attempt);
    error.as_object()["child"] = child;
    error.as_object()["child_status"] = status_text;
    if (c) error.as_object()["child_error"] = (*c)["error"];
  }

  const bool failed = !error.is_null();
  storage::step_record rec{st.take_branch_seq(),
                           name,
                           failed,
                           failed ? json::value() : std::move(output),
                           error,
                           attempts,
                           started,
                           std::chrono::system_clock::now(),
                           branch_->path,
                           local};
  co_return co_await record_child_step(st, std::move(rec));
}

int context::generation() const noexcept {
  return state_->claim.generation;
}

std::optional<trace_context> context::trace() const {
  const auto& stored = state_->claim.traceparent;
  auto trace = stored ? parse_traceparent(*stored) : std::nullopt;
  if (!trace) return std::nullopt;
  std::string seed = state_->claim.id;
  seed.append("/").append(std::to_string(state_->claim.generation));
  if (branch_ != nullptr) {
    seed.append("/").append(branch_->path).append("/").append(std::to_string(branch_->next_local));
  } else {
    seed.append("/").append(std::to_string(state_->next_seq));
  }
  trace->parent_id = span_id_for(seed);
  return trace;
}

asio::awaitable<void> context::run_continue_as_new(json::value input) {
  main_line_only("ctx.continue_as_new");
  auto& st = *state_;
  auto& engine = st.engine;
  const std::string name = "keel.continue_as_new";
  const detail::step_slot slot(st, st.in_step, name);
  detail::check_interrupt(st);
  co_await detail::flush_outputs(st);
  auto restarted = co_await engine.store_.continue_as_new(st.lease(), input);
  if (!restarted) {
    const auto e = restarted.error();
    if (e == storage::errc::invalid_argument || e == storage::errc::payload_too_large ||
        e == storage::errc::payload_too_deep) {
      // The new input cannot be stored: a bug in the workflow, which another execution would repeat.
      json::object error;
      error["code"] = code_name(errc::invalid_input);
      error["message"] = "continue_as_new: the new input cannot be stored (" + e.message() + ")";
      st.poisoned = std::make_exception_ptr(step_failed_error(json::value(std::move(error))));
      std::rethrow_exception(st.poisoned);
    }
    detail::lose_lease(st);
  }
  // Queued afresh, due now: this execution ends here (the engine wakes its claim loop for it).
  detail::run_state::parked_wait continued;
  continued.continued = true;
  continued.event = std::string("generation ").append(std::to_string(*restarted));
  st.parked = std::move(continued);
  st.poisoned = std::make_exception_ptr(detail::run_interrupted{detail::run_interrupted::why::parked});
  std::rethrow_exception(st.poisoned);
}

}  // namespace keel
