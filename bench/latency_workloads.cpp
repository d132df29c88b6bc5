// keel-bench's latency workloads (start-latency, hook-latency, sleep-lateness, replay) and the dispatch to
// the others (event_latency.cpp, list_runs.cpp, http_load.cpp); see latency_workloads.hpp and README.md.
#include "latency_workloads.hpp"
#include "event_latency.hpp"
#include "fairness.hpp"
#include "http_load.hpp"
#include "list_runs.hpp"

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_to.hpp>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "json_line.hpp"
#include "keel/common/log.hpp"
#include "keel/engine.hpp"
#include "pg_util.hpp"

namespace keel::bench {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using std::chrono::system_clock;

constexpr std::string_view k_component = "bench";
constexpr std::string_view k_start_workflow = "start1";
constexpr std::string_view k_nap_workflow = "nap";
constexpr std::string_view k_hook_workflow = "approve";
constexpr std::string_view k_replay_workflow = "long_history";
/// Pause between two start-latency runs, after the previous one completed: the claim that the freed slot
/// triggers has come back empty by then, so every run is enqueued on an idle engine.
constexpr auto k_idle_gap = 10ms;
/// How long one start-latency run may take (enqueue to completion) before the benchmark fails.
constexpr auto k_run_limit = 30s;
/// sleep-lateness: the sleeps (uniform, chosen at enqueue time) and the time over which runs are enqueued.
constexpr std::int64_t k_sleep_min_ms = 500, k_sleep_max_ms = 2'000;
constexpr auto k_enqueue_spread = 1s;
/// A fixed seed, so that every measurement draws the same sleeps.
constexpr std::uint64_t k_seed = 7;
constexpr auto k_progress_every = 2s;

double to_ms(steady::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

std::int64_t to_micros(system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

/// What the workflows and the engine's events report, by run; shared by the engine's threads and the main
/// one.
class run_log {
 public:
  /// Called by a workflow step: the time it started, for run `id` (the first mark wins).
  void mark(const run_id& id, steady::time_point t) {
    {
      std::lock_guard lock(mutex_);
      marks_.emplace(id, t);
    }
    cv_.notify_all();
  }

  /// Fed by engine_options::on_event: counts outcomes.
  void on_event(const run_event& ev) {
    bool ok = false;
    switch (ev.what) {
      case run_event::kind::completed:
        ok = true;
        break;
      case run_event::kind::failed:
      case run_event::kind::abandoned:
      case run_event::kind::dead_lettered:
        break;
      default:
        return;
    }
    {
      std::lock_guard lock(mutex_);
      outcomes_[ev.id] = ok;
      (ok ? completed_ : unsuccessful_)++;
    }
    cv_.notify_all();
  }

  /// Waits until `done` (called under the lock) holds or `deadline` passes; returns `done`'s last answer.
  template <class Pred>
  bool wait_until(steady::time_point deadline, Pred done) {
    std::unique_lock lock(mutex_);
    return cv_.wait_until(lock, deadline, [&] { return done(*this); });
  }

  // Under the lock only (inside wait_until's predicate).
  [[nodiscard]] std::optional<steady::time_point> mark_of(const run_id& id) const {
    auto it = marks_.find(id);
    return it == marks_.end() ? std::nullopt : std::optional(it->second);
  }
  [[nodiscard]] bool finished(const run_id& id) const { return outcomes_.count(id) > 0; }
  [[nodiscard]] std::size_t completed() const noexcept { return completed_; }
  [[nodiscard]] std::size_t unsuccessful() const noexcept { return unsuccessful_; }

  /// Runs that failed or were abandoned so far (takes the lock: not from inside wait_until).
  [[nodiscard]] std::size_t unsuccessful_blocking() {
    std::lock_guard lock(mutex_);
    return unsuccessful_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<run_id, steady::time_point> marks_;
  std::map<run_id, bool> outcomes_;
  std::size_t completed_ = 0, unsuccessful_ = 0;
};

/// One enqueue call, timed on the engine's executor.
struct enqueue_timing {
  steady::time_point called, returned;
  run_id id;          // empty on failure
  std::string error;  // the failure
};

asio::awaitable<enqueue_timing> timed_enqueue(engine& e, std::string_view workflow, json::value input) {
  enqueue_timing t;
  t.called = steady::now();
  auto r = co_await e.enqueue(workflow, input);
  t.returned = steady::now();
  if (r) {
    t.id = *r;
  } else {
    t.error = r.error().message();
  }
  co_return t;
}

/// What a one-call-at-a-time workload measures: from a call starting, and from its return, to the moment
/// its run's marked step started.
struct call_to_step {
  std::vector<double> from_call, from_return;

  /// Waits for the call `timing` reports on, then for its run's mark and end; records both intervals.
  void measure(std::future<enqueue_timing>& timing, run_log& seen, std::string_view call) {
    if (timing.wait_for(k_run_limit) != std::future_status::ready)
      throw std::runtime_error("a call to " + std::string(call) + " did not return within " +
                               std::to_string(k_run_limit.count()) + " s");
    const auto t = timing.get();
    if (t.id.empty()) throw std::runtime_error(std::string(call) + " failed: " + t.error);
    std::optional<steady::time_point> marked;
    const bool done = seen.wait_until(steady::now() + k_run_limit, [&](const run_log& l) {
      marked = l.mark_of(t.id);
      return marked && l.finished(t.id);
    });
    if (!done) throw std::runtime_error("run " + t.id + " did not reach its marked step and finish in time");
    from_call.push_back(to_ms(*marked - t.called));
    from_return.push_back(to_ms(*marked - t.returned));
  }

  /// The JSON fields: p50_ms, p99_ms, max_ms from the call, returned_p50_ms, returned_p99_ms.
  [[nodiscard]] std::string fields() const {
    return ",\"p50_ms\":" + fixed(percentile(from_call, 0.5), 2) +
           ",\"p99_ms\":" + fixed(percentile(from_call, 0.99), 2) +
           ",\"max_ms\":" + fixed(*std::max_element(from_call.begin(), from_call.end()), 2) +
           ",\"returned_p50_ms\":" + fixed(percentile(from_return, 0.5), 2) +
           ",\"returned_p99_ms\":" + fixed(percentile(from_return, 0.99), 2);
  }
};

// ---------------------------------------------------------------------------------------------------------------
// start-latency

std::string start_latency_blocking(const latency_setup& s) {
  run_log seen;
  auto eo = engine_options_for(s);
  eo.on_event = [&seen](const run_event& ev) { seen.on_event(ev); };
  engine e(eo);
  engine_guard guard(e, s);
  // One step that notes when it started; the run's id tells which enqueue it belongs to.
  auto body = [&seen](context& ctx, json::value) -> asio::awaitable<json::value> {
    const run_id& id = ctx.id();
    auto first = [&seen, &id] {
      seen.mark(id, steady::now());
      return 0;
    };
    co_await ctx.step("first", first);
    co_return json::value(nullptr);
  };
  e.register_workflow<json::value, json::value>(std::string(k_start_workflow), 1, body);
  if (auto r = e.start_blocking(); !r)
    throw std::runtime_error("engine start failed: " + r.error().message());

  call_to_step figures;
  const auto t0 = steady::now();
  auto last_log = t0;
  for (std::size_t i = 0; i < s.runs; ++i) {
    s.check_interrupted();
    if (steady::now() - t0 > s.timeout)
      throw std::runtime_error("start-latency timed out after " + std::to_string(i) + " runs");
    // The engine is idle here: the previous run completed and its slot's claim came back empty.
    std::this_thread::sleep_for(k_idle_gap);
    json::object in;
    in["i"] = i;
    auto timing = asio::co_spawn(
        e.get_executor(), timed_enqueue(e, k_start_workflow, json::value(std::move(in))), asio::use_future);
    figures.measure(timing, seen, "enqueue");
    if (steady::now() - last_log >= k_progress_every) {
      last_log = steady::now();
      log::info(k_component, "started " + std::to_string(i + 1) + "/" + std::to_string(s.runs));
    }
  }
  guard.stop_blocking();
  if (seen.unsuccessful_blocking() > 0) throw std::runtime_error("some runs failed or were abandoned");
  const auto server = verify_blocking(s.conninfo, s.runs, 1);
  return "{\"workload\":" + json_string(s.workload) + ",\"runs\":" + std::to_string(s.runs) +
         figures.fields() + server_fields(server) + "}";
}

// ---------------------------------------------------------------------------------------------------------------
// sleep-lateness

/// Plans its wake time in a step (now + the input's sleep_ms, in µs), sleeps that long with ctx.sleep, then
/// notes in a step when it resumed (µs). The sleep records the wake time it computed itself ({"wake_at"}).
asio::awaitable<json::value> nap(context& ctx, json::value input) {
  const std::chrono::milliseconds d{json::value_to<std::int64_t>(input.at("sleep_ms"))};
  auto plan = [d] { return to_micros(system_clock::now() + d); };
  co_await ctx.step("plan", plan);
  co_await ctx.sleep(d);
  auto resumed = [] { return to_micros(system_clock::now()); };
  co_await ctx.step("resumed", resumed);
  co_return json::value(nullptr);
}

/// Shared by the enqueue completions.
struct spread_state {
  std::mutex mutex;
  std::condition_variable cv;
  std::size_t returned = 0;  // guarded by mutex
  std::size_t failures = 0;  // guarded by mutex
  std::string first_error;   // guarded by mutex
};

std::string sleep_lateness_blocking(const latency_setup& s) {
  run_log seen;
  auto eo = engine_options_for(s);
  eo.on_event = [&seen](const run_event& ev) { seen.on_event(ev); };
  engine e(eo);
  engine_guard guard(e, s);
  e.register_workflow<json::value, json::value>(std::string(k_nap_workflow), 1, nap);
  if (auto r = e.start_blocking(); !r)
    throw std::runtime_error("engine start failed: " + r.error().message());

  // Enqueued at an even pace over k_enqueue_spread, each call spawned without waiting for the earlier ones,
  // so that runs are enqueued while others start, plan and park.
  auto state = std::make_shared<spread_state>();
  std::mt19937_64 rng(k_seed);
  std::uniform_int_distribution<std::int64_t> sleep_ms(k_sleep_min_ms, k_sleep_max_ms);
  const auto spacing = std::chrono::duration_cast<steady::duration>(k_enqueue_spread) / s.runs;
  const auto t0 = steady::now();
  for (std::size_t i = 0; i < s.runs; ++i) {
    s.check_interrupted();
    std::this_thread::sleep_until(t0 + spacing * static_cast<steady::rep>(i));
    json::object in;
    in["sleep_ms"] = sleep_ms(rng);
    asio::co_spawn(e.get_executor(), timed_enqueue(e, k_nap_workflow, json::value(std::move(in))),
                   [state](std::exception_ptr ep, enqueue_timing t) {
                     std::string error = t.error;
                     if (ep) error = "exception in enqueue";
                     {
                       std::lock_guard lock(state->mutex);
                       ++state->returned;
                       if (!error.empty() && state->failures++ == 0) state->first_error = error;
                     }
                     state->cv.notify_all();
                   });
  }
  {
    std::unique_lock lock(state->mutex);
    if (!state->cv.wait_for(lock, k_run_limit, [&] { return state->returned == s.runs; }))
      throw std::runtime_error("enqueues did not return in time");
    if (state->failures > 0)
      throw std::runtime_error(std::to_string(state->failures) +
                               " enqueue(s) failed; first: " + state->first_error);
  }
  const double enqueue_seconds = std::chrono::duration<double>(steady::now() - t0).count();
  log::info(k_component, "enqueued " + std::to_string(s.runs) + " sleeping runs in " +
                             fixed(enqueue_seconds, 3) + " s; waiting for them to wake");

  auto last_log = steady::now();
  std::size_t finished = 0;
  for (;;) {
    s.check_interrupted();
    if (steady::now() - t0 > s.timeout) throw std::runtime_error("sleep-lateness timed out");
    if (seen.wait_until(steady::now() + 200ms, [&](const run_log& l) {
          finished = l.completed() + l.unsuccessful();
          return finished >= s.runs;
        }))
      break;
    if (steady::now() - last_log >= k_progress_every) {
      last_log = steady::now();
      log::info(k_component, "finished " + std::to_string(finished) + "/" + std::to_string(s.runs));
    }
  }
  guard.stop_blocking();
  const auto server = verify_blocking(s.conninfo, s.runs, 3);

  // Lateness from the steps' records: the resumed step's start against the wake time the sleep computed
  // (keel.sleep's wake_at), and against the one planned in the step before the sleep.
  auto conn = connect_blocking(s.conninfo);
  auto r = exec_blocking(conn.get(), R"sql(
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY late_ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY late_ms),
       max(late_ms), min(late_ms),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY planned_late_ms),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY planned_late_ms)
FROM (SELECT (x.resumed - x.wake) / 1000.0 AS late_ms, (x.resumed - x.planned) / 1000.0 AS planned_late_ms
      FROM (SELECT (p.output #>> '{}')::bigint AS planned, (w.output ->> 'wake_at')::bigint AS wake,
                   (z.output #>> '{}')::bigint AS resumed
            FROM keel.steps p
            JOIN keel.steps w ON w.run_id = p.run_id AND w.name = 'keel.sleep'
            JOIN keel.steps z ON z.run_id = p.run_id AND z.name = 'resumed'
            WHERE p.name = 'plan') x) l)sql");
  const PGresult* res = r.get();
  return "{\"workload\":" + json_string(s.workload) + ",\"runs\":" + std::to_string(s.runs) +
         ",\"p50_ms\":" + fixed(std::stod(field(res, 0, 0)), 2) +
         ",\"p99_ms\":" + fixed(std::stod(field(res, 0, 1)), 2) +
         ",\"max_ms\":" + fixed(std::stod(field(res, 0, 2)), 2) +
         ",\"min_ms\":" + fixed(std::stod(field(res, 0, 3)), 2) +
         ",\"planned_p50_ms\":" + fixed(std::stod(field(res, 0, 4)), 2) +
         ",\"planned_p99_ms\":" + fixed(std::stod(field(res, 0, 5)), 2) +
         ",\"enqueue_seconds\":" + fixed(enqueue_seconds, 3) + server_fields(server) + "}";
}

// ---------------------------------------------------------------------------------------------------------------
// hook-latency

/// Tokens handed out by the approve workflow, by run.
class token_book {
 public:
  void put(const run_id& id, std::string token) {
    std::lock_guard lock(mutex_);
    tokens_.emplace(id, std::move(token));
  }
  [[nodiscard]] std::size_t size() {
    std::lock_guard lock(mutex_);
    return tokens_.size();
  }
  [[nodiscard]] std::string of(const run_id& id) {
    std::lock_guard lock(mutex_);
    auto it = tokens_.find(id);
    return it == tokens_.end() ? std::string() : it->second;
  }

 private:
  std::mutex mutex_;
  std::map<run_id, std::string> tokens_;
};

/// One resume_hook call, timed on the engine's executor.
asio::awaitable<enqueue_timing> timed_resume(engine& e, std::string token, run_id id) {
  enqueue_timing t;
  t.called = steady::now();
  // Named: GCC 12 destroys temporaries of a co_await expression (the defaulted options too) twice.
  const json::value payload(true);
  const resume_options options;
  auto r = co_await e.resume_hook(token, payload, options);
  t.returned = steady::now();
  if (r) {
    t.id = std::move(id);
  } else {
    t.error = r.error().message();
  }
  co_return t;
}

std::string hook_latency_blocking(const latency_setup& s) {
  run_log seen;
  token_book tokens;
  std::atomic<std::size_t> parked{0};
  auto eo = engine_options_for(s);
  eo.on_event = [&seen, &parked](const run_event& ev) {
    if (ev.what == run_event::kind::waiting) parked.fetch_add(1, std::memory_order_relaxed);
    seen.on_event(ev);
  };
  engine e(eo);
  engine_guard guard(e, s);
  // Creates a hook, hands out its token, waits for it, then notes in a step when it went on.
  auto body = [&seen, &tokens](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto approval = co_await ctx.create_hook("approve");
    tokens.put(ctx.id(), approval.token());
    co_await approval.wait();
    const run_id& id = ctx.id();
    auto after = [&seen, &id] {
      seen.mark(id, steady::now());
      return 0;
    };
    co_await ctx.step("after", after);
    co_return json::value(nullptr);
  };
  e.register_workflow<json::value, json::value>(std::string(k_hook_workflow), 1, body);
  if (auto r = e.start_blocking(); !r)
    throw std::runtime_error("engine start failed: " + r.error().message());

  // All runs first, each parked on its hook (holding no worker); then the resumes, one at a time.
  std::vector<run_id> ids;
  ids.reserve(s.runs);
  for (std::size_t i = 0; i < s.runs; ++i) {
    s.check_interrupted();
    json::object in;
    in["i"] = i;
    auto id = e.enqueue_blocking(k_hook_workflow, json::value(std::move(in)));
    if (!id) throw std::runtime_error("enqueue failed: " + id.error().message());
    ids.push_back(*id);
  }
  const auto t0 = steady::now();
  while (parked.load(std::memory_order_relaxed) < s.runs) {
    s.check_interrupted();
    if (steady::now() - t0 > s.timeout) throw std::runtime_error("hook-latency: the runs did not all park");
    std::this_thread::sleep_for(10ms);
  }
  log::info(k_component, "all " + std::to_string(s.runs) + " runs wait on their hooks; resuming");

  call_to_step figures;
  auto last_log = steady::now();
  for (std::size_t i = 0; i < s.runs; ++i) {
    s.check_interrupted();
    std::this_thread::sleep_for(k_idle_gap);
    const std::string token = tokens.of(ids[i]);
    if (token.empty()) throw std::runtime_error("run " + ids[i] + " handed out no token");
    auto timing = asio::co_spawn(e.get_executor(), timed_resume(e, token, ids[i]), asio::use_future);
    figures.measure(timing, seen, "resume_hook");
    if (steady::now() - last_log >= k_progress_every) {
      last_log = steady::now();
      log::info(k_component, "resumed " + std::to_string(i + 1) + "/" + std::to_string(s.runs));
    }
  }
  guard.stop_blocking();
  if (seen.unsuccessful_blocking() > 0) throw std::runtime_error("some runs failed or were abandoned");
  const auto server = verify_blocking(s.conninfo, s.runs, 3);
  return "{\"workload\":" + json_string(s.workload) + ",\"runs\":" + std::to_string(s.runs) +
         figures.fields() + server_fields(server) + "}";
}

// ---------------------------------------------------------------------------------------------------------------
// replay

std::string replay_blocking(const latency_setup& s) {
  run_log seen;
  std::atomic<int> parked{0};
  auto eo = engine_options_for(s);
  eo.on_event = [&seen, &parked](const run_event& ev) {
    if (ev.what == run_event::kind::waiting) parked.fetch_add(1, std::memory_order_relaxed);
    seen.on_event(ev);
  };
  engine e(eo);
  engine_guard guard(e, s);
  // --runs steps, then a wait for an event: the resume replays every step from its record.
  const std::size_t steps = s.runs;
  auto body = [&seen, steps](context& ctx, json::value) -> asio::awaitable<json::value> {
    std::int64_t total = 0;
    for (std::size_t i = 0; i < steps; ++i) {
      auto iteration = [i] { return static_cast<std::int64_t>(i); };
      total += co_await ctx.step("iteration", iteration);
    }
    co_await ctx.wait_for_event("go");
    const run_id& id = ctx.id();
    auto after = [&seen, &id] {
      seen.mark(id, steady::now());
      return 0;
    };
    co_await ctx.step("after", after);
    co_return json::value(total);
  };
  e.register_workflow<json::value, json::value>(std::string(k_replay_workflow), 1, body);
  if (auto r = e.start_blocking(); !r)
    throw std::runtime_error("engine start failed: " + r.error().message());

  const auto t0 = steady::now();
  auto id = e.enqueue_blocking(k_replay_workflow, json::object{});
  if (!id) throw std::runtime_error("enqueue failed: " + id.error().message());
  while (parked.load(std::memory_order_relaxed) < 1) {
    s.check_interrupted();
    if (steady::now() - t0 > s.timeout) throw std::runtime_error("replay: the run did not record its steps");
    std::this_thread::sleep_for(5ms);
  }
  const double record_seconds = std::chrono::duration<double>(steady::now() - t0).count();
  std::this_thread::sleep_for(k_idle_gap);
  const auto sent = steady::now();
  if (auto r = e.send_event_blocking(*id, "go", json::value(true)); !r)
    throw std::runtime_error("send_event failed: " + r.error().message());
  std::optional<steady::time_point> went_on;
  if (!seen.wait_until(steady::now() + k_run_limit, [&](const run_log& l) {
        went_on = l.mark_of(*id);
        return went_on && l.finished(*id);
      }))
    throw std::runtime_error("the run did not go on after its event in time");
  guard.stop_blocking();
  const double resume_ms = to_ms(*went_on - sent);
  return "{\"workload\":" + json_string(s.workload) + ",\"steps\":" + std::to_string(steps) +
         ",\"resume_ms\":" + fixed(resume_ms, 2) + ",\"per_step_us\":" +
         fixed(resume_ms * 1000.0 / static_cast<double>(std::max<std::size_t>(steps, 1)), 3) +
         ",\"record_seconds\":" + fixed(record_seconds, 3) + "}";
}

}  // namespace

server_settings verify_blocking(const std::string& conninfo, std::size_t runs, std::size_t steps_per_run) {
  auto conn = connect_blocking(conninfo);
  auto r = exec_blocking(conn.get(), R"sql(
SELECT count(*), count(*) FILTER (WHERE status = 'completed'), (SELECT count(*) FROM keel.steps),
       current_setting('fsync'), current_setting('synchronous_commit'), current_setting('server_version')
FROM keel.runs)sql");
  const PGresult* res = r.get();
  const auto total = field(res, 0, 0), completed = field(res, 0, 1), steps = field(res, 0, 2);
  const auto expected_steps = std::to_string(runs * steps_per_run);
  if (total != std::to_string(runs) || completed != total || steps != expected_steps) {
    throw std::runtime_error("verification failed: keel.runs holds " + total + " runs (" + completed +
                             " completed), keel.steps " + steps + " rows; expected " + std::to_string(runs) +
                             " completed runs and " + expected_steps + " steps");
  }
  return {field(res, 0, 3), field(res, 0, 4), field(res, 0, 5)};
}

engine_options engine_options_for(const latency_setup& s) {
  engine_options eo;
  eo.store.conninfo = s.conninfo;
  eo.store.writers = s.writers;
  eo.store.max_batch = s.max_batch;
  eo.store.pool_size = s.pool;
  eo.concurrency = s.concurrency;
  eo.threads = s.threads;
  eo.migrate = true;
  return eo;
}

std::string server_fields(const server_settings& s) {
  return ",\"fsync\":" + json_string(s.fsync) +
         ",\"synchronous_commit\":" + json_string(s.synchronous_commit) +
         ",\"server_version\":" + json_string(s.server_version);
}

bool is_latency_workload(std::string_view workload) noexcept {
  return workload == k_start_latency || workload == k_sleep_lateness || workload == k_hook_latency ||
         workload == k_replay || workload == k_event_latency || workload == k_stream_write ||
         workload == k_list_runs || workload == k_fairness || is_http_workload(workload);
}

std::string run_latency_workload_blocking(const latency_setup& s) {
  if (s.workload == k_start_latency) return start_latency_blocking(s);
  if (s.workload == k_sleep_lateness) return sleep_lateness_blocking(s);
  if (s.workload == k_hook_latency) return hook_latency_blocking(s);
  if (s.workload == k_replay) return replay_blocking(s);
  if (s.workload == k_event_latency) return event_latency_blocking(s);
  if (s.workload == k_stream_write) return stream_write_blocking(s);
  if (s.workload == k_list_runs) return list_runs_blocking(s);
  if (s.workload == k_fairness) return fairness_blocking(s);
  if (is_http_workload(s.workload)) return http_workload_blocking(s);
  throw std::invalid_argument("not a latency workload: " + s.workload);
}

}  // namespace keel::bench
