// keel::context: what a workflow body uses to run checkpointed steps.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/json/array.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "keel/common/run_id.hpp"
#include "keel/common/trace_context.hpp"
#include "keel/engine/alternatives.hpp"
#include "keel/engine/error.hpp"
#include "keel/engine/fetch.hpp"
#include "keel/engine/json_types.hpp"
#include "keel/engine/output_stream.hpp"
#include "keel/engine/step_options.hpp"
#include "keel/engine/webhook.hpp"

namespace keel {

class context;

namespace detail {
struct run_state;
struct branch_state;
class engine_impl;

template <class T>
struct awaitable_value {
  using type = void;
  static constexpr bool is_awaitable = false;
};
template <class T, class Executor>
struct awaitable_value<boost::asio::awaitable<T, Executor>> {
  using type = T;
  static constexpr bool is_awaitable = true;
};

/// Converts a step's recorded JSON to the step function's value type.
template <class T>
boost::asio::awaitable<T> typed_step(boost::asio::awaitable<boost::json::value> step) {
  boost::json::value v = co_await std::move(step);
  if constexpr (!std::is_void_v<T>) co_return boost::json::value_to<T>(v);
}

/// Converts the branches' recorded JSON results to the branch functions' value types.
template <class... Ts, std::size_t... I>
std::tuple<Ts...> typed_results(std::vector<boost::json::value>& v, std::index_sequence<I...>) {
  return std::tuple<Ts...>(boost::json::value_to<Ts>(v[I])...);
}
template <class... Ts>
boost::asio::awaitable<std::tuple<Ts...>> typed_parallel(
    boost::asio::awaitable<std::vector<boost::json::value>> branches) {
  std::vector<boost::json::value> v = co_await std::move(branches);
  co_return typed_results<Ts...>(v, std::index_sequence_for<Ts...>{});
}
template <class T>
boost::asio::awaitable<std::vector<T>> typed_map(
    boost::asio::awaitable<std::vector<boost::json::value>> items) {
  std::vector<boost::json::value> v = co_await std::move(items);
  std::vector<T> out;
  out.reserve(v.size());
  for (auto& x : v)
    out.push_back(boost::json::value_to<T>(x));
  co_return out;
}

/// The value a parallel branch `awaitable<T>(context&)` produces, and a map function's
/// `awaitable<T>(context&, const Item&)`.
template <class Fn>
using branch_value_t = typename awaitable_value<std::invoke_result_t<Fn&, context&>>::type;
template <class Fn, class Item>
using map_value_t = typename awaitable_value<std::invoke_result_t<Fn&, context&, const Item&>>::type;

/// The value a step function produces: T for `awaitable<T> fn()`, else fn's return type.
template <class F>
using step_value_t =
    std::conditional_t<awaitable_value<std::invoke_result_t<F&>>::is_awaitable,
                       typename awaitable_value<std::invoke_result_t<F&>>::type, std::invoke_result_t<F&>>;
}  // namespace detail

class context;

/// Options of ctx.map.
struct map_options {
  /// How many branches run at once; 0: all of them.
  std::size_t concurrency = 0;
};

/// Options of ctx.create_hook.
struct hook_options {
  /// After this long (from the first execution that created it) resumes are refused (hook_expired) and
  /// hook::wait() returns nullopt. None: the hook lasts as long as its run.
  std::optional<std::chrono::milliseconds> ttl;
  /// Stored with the hook, for whoever lists or resumes it.
  boost::json::value metadata;
  /// For machine webhooks: a name in engine_options::webhook_secrets. Resumes must then carry a
  /// Keel-Signature made with one of its secrets, each signature accepted once (resume_options::signature);
  /// the token alone is not enough.
  std::optional<std::string> signature_key;
};

/// Options of ctx.child.
struct child_options {
  /// The child's workflow version; none: the newest registered on this worker (a workflow registered only
  /// on other workers needs its version given).
  std::optional<int> version;
  /// The child's priority (higher runs first).
  int priority = 0;
  /// A child that failed or was cancelled is started again, as a new run, until retry.max_attempts in all,
  /// each after a delay as a step's retries have (the next child is queued to start then; the parent waits
  /// for it holding no worker). Default: one attempt.
  retry_policy retry{.max_attempts = 1};
};

/// A point where a person or a webhook resumes the run (ctx.create_hook): an unguessable token, and the
/// URL path that carries it. Resumable from the moment it is created, before the run reaches wait() (the
/// payload is kept).
class hook {
 public:
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  /// 256 random-looking bits, URL-safe. Whoever holds it can resume the run: hand it only to them.
  [[nodiscard]] const std::string& token() const noexcept { return token_; }
  /// `/v1/hooks/<token>`: where keeld accepts the resume.
  [[nodiscard]] std::string path() const { return "/v1/hooks/" + token_; }
  [[nodiscard]] std::optional<std::chrono::system_clock::time_point> expires_at() const noexcept {
    return expires_at_;
  }
  /// Waits durably (like ctx.wait_for_event) for the resume's payload; nullopt once the hook expired. Takes
  /// a step position.
  boost::asio::awaitable<std::optional<boost::json::value>> wait();

 private:
  friend class context;
  friend class webhook;
  context* ctx_ = nullptr;
  detail::run_state* run_ = nullptr;
  detail::branch_state* made_in_ = nullptr;  ///< the parallel branch that made it (nullptr: main line)
  std::string name_;
  std::string token_;
  int seq_ = 0;
  std::optional<std::chrono::system_clock::time_point> expires_at_;
};

/// An endpoint a third party calls (ctx.create_webhook): `/v1/webhooks/<token>[/anything]` takes any
/// method, and the workflow receives the whole request, verifies it (a signature over its exact bytes) and
/// answers it: with webhook_options::respond_with, or from a step (respond), while the request waits.
/// Takes one request; a repeat of the same request (a sender's retry) gets the same answer.
class webhook {
 public:
  [[nodiscard]] const std::string& name() const noexcept { return hook_.name(); }
  /// 256 random-looking bits, URL-safe: whoever holds it can call the webhook.
  [[nodiscard]] const std::string& token() const noexcept { return hook_.token(); }
  /// `/v1/webhooks/<token>`: where keeld takes the request (any path below it too).
  [[nodiscard]] std::string path() const { return "/v1/webhooks/" + hook_.token(); }
  [[nodiscard]] std::optional<std::chrono::system_clock::time_point> expires_at() const noexcept {
    return hook_.expires_at();
  }
  /// Waits durably (like hook::wait, one step position) for the request; nullopt once the webhook expired.
  boost::asio::awaitable<std::optional<webhook_request>> wait();
  /// Answers the request (one step position, recorded: replays send nothing): the caller waiting on it gets
  /// this, and so does a repeat of the request. Before the request came, it answers the request to come.
  /// Pass the response by name (GCC 12).
  boost::asio::awaitable<void> respond(const webhook_response& response);

 private:
  friend class context;
  hook hook_;
};

/// A child run started by ctx.start_child, not waited for yet: wait for it, or make it an alternative of
/// ctx.any / ctx.all.
class child_run {
 public:
  [[nodiscard]] const run_id& id() const noexcept { return id_; }
  [[nodiscard]] const std::string& workflow() const noexcept { return workflow_; }
  /// Waits durably (one step position) for the child's output, like ctx.child; a child that failed or was
  /// cancelled fails this step with child_failed.
  boost::asio::awaitable<boost::json::value> wait();

 private:
  friend class context;
  context* ctx_ = nullptr;
  detail::run_state* run_ = nullptr;
  detail::branch_state* made_in_ = nullptr;  ///< the parallel branch that made it (nullptr: main line)
  run_id id_;
  std::string workflow_;
  std::optional<int> version_;
  int started_at_ = 0;  ///< the step position that started it (its key)
};

/// Handed to a workflow body for one execution of a run. Use it only from that body (it is bound to the
/// run's strand); it is not thread-safe and must not outlive the body.
class context {
 public:
  explicit context(detail::run_state& state, detail::branch_state* branch = nullptr) noexcept
      : state_(&state), branch_(branch) {}

  /// The run being executed.
  [[nodiscard]] const run_id& id() const noexcept;
  /// The workflow's name.
  [[nodiscard]] const std::string& workflow() const noexcept;
  /// 1 on the run's first execution; higher after a reclaim or resume (steps then replay from records).
  [[nodiscard]] int execution() const noexcept;

  /// Publishes a progress frame (LLM tokens, percent done) to the streams watching this run, on this
  /// worker and others (engine::stream): at most once, never durable, never part of the run's result, and
  /// never blocking. Dropped when this execution may have lost its lease (a zombie never shows), while the
  /// run replays steps an earlier execution recorded (they were published then), and when the frame is
  /// over the store's payload limits (logged). Frames cross to other workers best-effort, up to 7,900
  /// bytes serialized.
  void emit(const boost::json::value& frame);

  /// The run's durable output stream `name` (at most 255 bytes of UTF-8): see output_stream. The same
  /// name gives the same stream. On the main line only (in a ctx.parallel branch it fails the run).
  output_stream stream(std::string_view name);

  /// Sleeps durably until `wake`. One fenced statement records the wake time at this step position, marks
  /// the run `sleeping` (due at `wake`) and releases its lease: the run holds no worker, lease or memory
  /// while it sleeps, survives restarts of every worker, and continues on whichever worker claims it when
  /// it is due (its steps replay from their records). A time already past records the step and goes on.
  boost::asio::awaitable<void> sleep_until(std::chrono::system_clock::time_point wake);
  /// Sleeps durably for `duration`, counted from the first execution that reached this position.
  boost::asio::awaitable<void> sleep(std::chrono::milliseconds duration);

  /// Waits durably for the event `name` sent to this run (engine::send_event) and returns its payload, or
  /// nullopt once `timeout` (counted from the first execution that reached this position) passed first. An
  /// event sent before the run reached this wait was kept and is consumed here at once; each event is
  /// consumed by one wait, oldest first. While it waits the run is `waiting` and holds no worker.
  boost::asio::awaitable<std::optional<boost::json::value>> wait_for_event(
      std::string_view name, std::optional<std::chrono::milliseconds> timeout = std::nullopt);

  /// Creates a hook (one step position): a token that engine::resume_hook (or keeld's `POST /v1/hooks/...`)
  /// takes to resume this run with a payload, once. The same token on every replay. Pass options by name
  /// (GCC 12: no braced temporaries inside a co_await expression).
  boost::asio::awaitable<hook> create_hook(std::string_view name);
  boost::asio::awaitable<hook> create_hook(std::string_view name, const hook_options& options);

  /// Creates a webhook (one step position): like a hook, but its URL takes any method and the workflow
  /// receives the whole request (webhook::wait), to verify a third party's signature itself and answer it.
  /// The same token on every replay. Pass options by name (GCC 12).
  boost::asio::awaitable<webhook> create_webhook(std::string_view name, const webhook_options& options);

  /// Waits durably (one step position) for the first of several alternatives to complete — hooks, events
  /// (keel::event_wait) and timers (keel::timer) — and returns which one and its payload. Replays return the
  /// same winner. The earliest completion wins (an event's send, a hook's resume, a timer's due time; ties
  /// go to the earlier argument), however late the run is claimed. The losers are cancelled: an open hook
  /// is closed (a later resume gets hook_closed; a resume refused once a timer of the wait is due), an event
  /// wait consumes nothing, a timer never fires. While it waits the run is `waiting` and holds no worker.
  /// Pass hooks and event names that outlive the call (named, or literals).
  template <class... Alternatives>
  boost::asio::awaitable<any_result> any(const Alternatives&... alternatives) {
    static_assert(sizeof...(Alternatives) >= 1, "ctx.any needs at least one alternative");
    std::vector<detail::wait_alternative> all{alternative_of(alternatives)...};
    return run_any(std::move(all));
  }

  /// Waits durably for every alternative (like ctx.any's) to complete; returns their payloads in argument
  /// order (nullopt for timers, expired or closed hooks). Timers count from the first execution that reached
  /// the call. Takes one step position per alternative, plus one for the start time when a timer is given.
  template <class... Alternatives>
  boost::asio::awaitable<std::vector<std::optional<boost::json::value>>> all(
      const Alternatives&... alternatives) {
    static_assert(sizeof...(Alternatives) >= 1, "ctx.all needs at least one alternative");
    std::vector<detail::wait_alternative> every{alternative_of(alternatives)...};
    return run_all(std::move(every));
  }

  /// Starts a run of `workflow` as a child of this run (one step position; once, whatever the replays) and
  /// returns at once with its handle, to wait for later or race in ctx.any (e.g. against a keel::timer).
  /// Cancelling this run cancels it. Pass the input by name (GCC 12).
  template <class In = boost::json::value>
  boost::asio::awaitable<child_run> start_child(std::string_view workflow, const In& input,
                                                const child_options& options = {}) {
    return run_start_child(std::string(workflow), boost::json::value_from(input), options);
  }

  /// Runs `workflow` once per input as child runs, at most `options.concurrency` at once (0: all; at most
  /// 64), waiting durably between them (the run holds no worker meanwhile), and returns their outputs in
  /// input order. As one finishes the next starts; each start and each wait takes a step position, and the
  /// order children finished in is recorded, so a replay starts the same ones. Once all have ended, the
  /// first (in input order) that failed or was cancelled fails this call with child_failed. Inputs by name.
  boost::asio::awaitable<std::vector<boost::json::value>> map_children(
      std::string_view workflow, const std::vector<boost::json::value>& inputs,
      const map_options& options = {}, const child_options& child = {}) {
    return run_map_children(std::string(workflow), inputs, options, child);
  }

  /// Registers a compensating action (a saga's undo) for what the run has done so far, e.g. a refund after
  /// a charge. When the run then fails — an exception escapes its body — the registered compensations run
  /// in reverse order of registration, each as a durable step (`keel.compensate:<name>`, retried per
  /// `options`; after a crash the ones done replay from their records), and the run ends failed with its
  /// error plus what each compensation did (`"compensation": [{"step", "status", "error"}]`). A compensation
  /// that fails for good does not stop the others. Register on the main line, after the step it undoes
  /// succeeded; replays register again (registration itself is not recorded). `fn` as for ctx.step.
  /// engine::retry of the compensated run starts again at the earliest step undone (the workflow's latest
  /// ctx.step when each compensation was registered): it must not replay a record its compensation undid.
  template <class F>
  void compensate(std::string_view name, F&& fn, const step_options& options = {}) {
    add_compensation(std::string(name), erase(std::forward<F>(fn)), options);
  }

  /// Starts a run of `workflow` with `input` as a child of this run (one step position) and waits durably
  /// for its output, converted to Out: this run releases its worker while the child runs and is woken (on
  /// any worker) when the child ends. Started once per position: a replay finds the same child. A child that
  /// fails or is cancelled fails this step (step_failed_error, code child_failed, with the child's id and
  /// error) after options.retry.max_attempts. Cancelling this run cancels its children, recursively.
  /// Pass the input by name (GCC 12: no class temporaries inside a co_await expression).
  template <class Out = boost::json::value, class In = boost::json::value>
  boost::asio::awaitable<Out> child(std::string_view workflow, const In& input,
                                    const child_options& options = {}) {
    return detail::typed_step<Out>(run_child(std::string(workflow), boost::json::value_from(input), options));
  }

  /// Ends this execution and starts the workflow afresh under the same run id with `input`: the run's
  /// history (steps, the hooks it created, the events it consumed) is cleared, so an unbounded loop — an
  /// entity that handles events forever, an agent that runs for months — keeps a bounded history. Events
  /// still pending stay for the next generation; hooks of this one stop working (hook_not_found). Recorded
  /// in the run's history. Never returns: the body ends here (whatever it returns is not used).
  template <class In>
  boost::asio::awaitable<void> continue_as_new(const In& input) {
    return run_continue_as_new(boost::json::value_from(input));
  }

  /// How many times this run continued as new (0 on its first generation).
  [[nodiscard]] int generation() const noexcept;

  /// The W3C trace context the run was started with (enqueue_options::traceparent, the HTTP `traceparent`
  /// header, or its parent run's), its parent_id a span for where the run is now (derived from the run, its
  /// generation and its position, so the same on every replay); nullopt when the run has none. Send
  /// `ctx.trace()->traceparent()` on the calls a step makes, so that the callee's spans join the trace.
  [[nodiscard]] std::optional<trace_context> trace() const;

  /// Makes an outbound HTTP/1.1 request as a checkpointed step (one step position) and returns the
  /// response, whatever its status; replays return the recorded response without a request. TLS
  /// (https://) verifies the server's certificate and name (SNI) against the system's CAs plus
  /// engine_options::fetch_ca_file. Connection errors, timeouts, 5xx and 429 are retried per
  /// `options.retry` (Retry-After honoured; one over retry.max_delay ends them); when they run out, a
  /// connection error fails the step (code fetch_failed) and a 5xx/429 is returned. Every attempt carries the
  /// same `Idempotency-Key` (derived from the run and the step position, unless the request sets one) and,
  /// when the run has a trace context, `traceparent`. Pass the request by name (GCC 12).
  boost::asio::awaitable<fetch_response> fetch(const fetch_request& request,
                                               const step_options& options = {});

  /// Runs `branches` concurrently (on this run's strand, interleaved at their awaits) and returns their
  /// results as a tuple. Each branch is `awaitable<T>(context&)` and gets a context of its own: its steps
  /// keep positions of their own, so replay is exact whatever order the branches finished in, and each step
  /// is checkpointed as it finishes (after a crash only unfinished steps run again). Waits for every
  /// branch; then rethrows the first failure (in branch order), if any. A branch may do what the main line
  /// does, with its own context — steps, durable waits, hooks, child runs, nested parallel/map. A branch that
  /// waits blocks while the others go on; once every branch is blocked or done, the run parks until one of
  /// their waits completes, holding no worker, and its next execution replays the branches (each deciding its
  /// wait again). Hooks and child handles made in a branch are used in that branch. Not in a branch:
  /// continue_as_new, compensate. Takes branches by reference: name them (GCC 12). One step position.
  template <class... Branches>
  boost::asio::awaitable<std::tuple<detail::branch_value_t<Branches>...>> parallel(Branches&... branches) {
    static_assert(sizeof...(Branches) >= 1, "ctx.parallel needs at least one branch");
    std::vector<branch_fn> erased{erase_branch(branches)...};
    return detail::typed_parallel<detail::branch_value_t<Branches>...>(run_parallel(std::move(erased), 0));
  }

  /// Runs `fn(branch_context, item)` for every item as a parallel branch (like ctx.parallel), at most
  /// `options.concurrency` at once, and returns the results in item order.
  template <class T, class Fn>
  boost::asio::awaitable<std::vector<detail::map_value_t<Fn, T>>> map(const std::vector<T>& items, Fn& fn,
                                                                      const map_options& options = {}) {
    std::vector<branch_fn> erased;
    erased.reserve(items.size());
    for (const auto& item : items) {
      erased.push_back([&fn, &item](context& branch) -> boost::asio::awaitable<boost::json::value> {
        co_return boost::json::value_from(co_await fn(branch, item));
      });
    }
    return detail::typed_map<detail::map_value_t<Fn, T>>(
        run_parallel(std::move(erased), options.concurrency));
  }

  /// The time, recorded at this step position on first execution: replays return the same value.
  boost::asio::awaitable<std::chrono::system_clock::time_point> now();
  /// A uniformly random number in [0, 1), recorded like now().
  boost::asio::awaitable<double> random();
  /// A new UUID (time-ordered, version 7), recorded like now().
  boost::asio::awaitable<std::string> uuid();

  /// Runs `fn` (a plain callable or one returning asio::awaitable<T>) as the next step and checkpoints its
  /// output before returning it. On re-execution a step recorded at this position returns its recorded output
  /// without calling `fn`. Retries per `options`. Throws step_failed_error when the step fails for good,
  /// nondeterminism_error when the recorded step at this position has another name.
  /// The output type must convert to and from boost::json (value_from / value_to); void steps store null.
  template <class F>
  boost::asio::awaitable<detail::step_value_t<std::decay_t<F>>> step(std::string_view name, F&& fn,
                                                                     const step_options& options = {}) {
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
    // GCC 12 destroys a closure (or braced aggregate) temporary written inside a co_await expression twice.
    // Harmless when its captures are trivially destructible; a double free otherwise. Refuse to compile it.
    static_assert(
        !std::is_rvalue_reference_v<F&&> || std::is_trivially_destructible_v<std::decay_t<F>>,
        "keel::context::step: with GCC 12, a lambda temporary inside `co_await ctx.step(...)` must not "
        "capture values with destructors (std::string, shared_ptr, ...): GCC destroys it twice. Name "
        "the lambda first (`auto charge = [...] {...}; co_await ctx.step(\"charge\", charge);`) or "
        "capture by reference.");
#endif
    return detail::typed_step<detail::step_value_t<std::decay_t<F>>>(
        run_step(std::string(name), erase(std::forward<F>(fn)), options));
  }

 private:
  using erased_step = std::function<boost::asio::awaitable<boost::json::value>()>;

  template <class F>
  static erased_step erase(F&& f) {
    using fn_t = std::decay_t<F>;
    using result_t = std::invoke_result_t<fn_t&>;
    using value_t = detail::step_value_t<fn_t>;
    return [fn = fn_t(std::forward<F>(f))]() mutable -> boost::asio::awaitable<boost::json::value> {
      if constexpr (detail::awaitable_value<result_t>::is_awaitable) {
        if constexpr (std::is_void_v<value_t>) {
          co_await fn();
          co_return nullptr;
        } else {
          co_return boost::json::value_from(co_await fn());
        }
      } else {
        if constexpr (std::is_void_v<value_t>) {
          fn();
          co_return nullptr;
        } else {
          co_return boost::json::value_from(fn());
        }
      }
    };
  }

  boost::asio::awaitable<boost::json::value> run_step(std::string name, erased_step fn, step_options options);
  void add_compensation(std::string name, erased_step fn, const step_options& options);
  /// After the body failed: runs the registered compensations, newest first; returns what each did.
  boost::asio::awaitable<boost::json::array> run_compensations();
  friend class detail::engine_impl;
  friend class hook;
  friend class webhook;
  /// A durable wait at the next step position; returns its record ({"wake_at"}, {"payload"}, {"timed_out"}).
  /// `kind`: 0 sleep, 1 event (`event` = its name), 2 hook (`event` = its name, `hook_seq` its position),
  /// 3 the first of `alternatives` (their deadlines set).
  boost::asio::awaitable<boost::json::value> run_wait(
      int kind, std::string name, std::string event, int hook_seq,
      std::optional<std::chrono::system_clock::time_point> until,
      std::vector<detail::wait_alternative> alternatives = {});

  using branch_fn = std::function<boost::asio::awaitable<boost::json::value>(context&)>;
  template <class Fn>
  static branch_fn erase_branch(Fn& fn) {
    return [&fn](context& branch) -> boost::asio::awaitable<boost::json::value> {
      co_return boost::json::value_from(co_await fn(branch));
    };
  }
  boost::asio::awaitable<std::vector<boost::json::value>> run_parallel(std::vector<branch_fn> branches,
                                                                       std::size_t concurrency);
  /// ctx.continue_as_new and ctx.compensate act on the whole run: inside a parallel branch they fail the run,
  /// naming `what`.
  void main_line_only(std::string_view what);

  boost::asio::awaitable<child_run> run_start_child(std::string workflow, boost::json::value input,
                                                    child_options options);
  boost::asio::awaitable<std::vector<boost::json::value>> run_map_children(
      std::string workflow, std::vector<boost::json::value> inputs, map_options options, child_options child);
  /// Starts (once) and waits for a child at a new step position `name`; `started_at`: the child was
  /// started by ctx.start_child at that position (found by its key, one attempt).
  boost::asio::awaitable<boost::json::value> wait_child(std::string name, std::string workflow,
                                                        boost::json::value input, child_options options,
                                                        std::optional<int> started_at);
  friend class child_run;
  static detail::wait_alternative alternative_of(const child_run& c);
  static detail::wait_alternative alternative_of(const hook& h);
  /// (The payload a webhook wins with is its request: value_to<webhook_request>.)
  static detail::wait_alternative alternative_of(const webhook& w) {
    return alternative_of(w.hook_);
  }
  static detail::wait_alternative alternative_of(const timer& t);
  static detail::wait_alternative alternative_of(const event_wait& e);
  boost::asio::awaitable<void> run_continue_as_new(boost::json::value input);
  boost::asio::awaitable<boost::json::value> run_child(std::string workflow, boost::json::value input,
                                                       child_options options);
  boost::asio::awaitable<any_result> run_any(std::vector<detail::wait_alternative> alternatives);
  /// Waits inside a parallel branch, at the branch's own positions (decided as in branch_waits.cpp).
  boost::asio::awaitable<boost::json::value> branch_wait(std::string name,
                                                         std::vector<detail::wait_alternative> alternatives);
  boost::asio::awaitable<void> branch_sleep(std::string name, std::chrono::system_clock::time_point wake);
  /// ctx.create_hook, and ctx.create_webhook with its answering rule (`webhook`) and step names.
  boost::asio::awaitable<hook> make_hook(std::string name, hook_options options,
                                         std::optional<boost::json::value> webhook);
  boost::asio::awaitable<hook> branch_create_hook(std::string name, std::string secret,
                                                  std::optional<std::chrono::milliseconds> ttl,
                                                  boost::json::value metadata,
                                                  std::optional<std::string> signature_key,
                                                  std::optional<boost::json::value> webhook);
  boost::asio::awaitable<child_run> branch_start_child(std::string name, std::string workflow,
                                                       boost::json::value input, child_options options);
  /// ctx.child in a branch; `existing`: child_run::wait of a child started in the branch (one attempt).
  boost::asio::awaitable<boost::json::value> branch_child(std::string name, std::string workflow,
                                                          boost::json::value input, child_options options,
                                                          std::optional<run_id> existing);
  boost::asio::awaitable<std::vector<std::optional<boost::json::value>>> run_all(
      std::vector<detail::wait_alternative> alternatives);

  detail::run_state* state_;
  detail::branch_state* branch_ = nullptr;  ///< the parallel branch this context runs, or the main line
};

}  // namespace keel
