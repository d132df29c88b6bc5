#include "fairness.hpp"

#include <array>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/json.hpp>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
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

constexpr std::string_view k_component = "bench";
/// The big tenant's runs and the small tenants' are alike but for their workflow's name, which tells them
/// apart in the figures; both are fair by /tenant, so they share the one fair queue.
constexpr std::string_view k_burst = "burst";
constexpr std::string_view k_tenant = "tenant";
constexpr int k_small_tenants = 100;
constexpr int k_runs_per_small_tenant = 10;
constexpr std::size_t k_small_runs = k_small_tenants * k_runs_per_small_tenant;
/// The small runs arrive as from many clients at once.
constexpr std::size_t k_enqueuers = 64;
/// How much of the burst runs before the small runs arrive: the engine is busy with it, in steady state.
constexpr std::size_t k_burst_head_start = 2'000;

/// When each small run of a phase was enqueued and when its first step began (ns on the steady clock; 0:
/// not yet), by its index; and how many runs of the burst had been claimed when the last one began.
struct phase_marks {
  std::array<std::atomic<std::int64_t>, k_small_runs> enqueued{}, acknowledged{}, started{};
  std::atomic<std::size_t> started_count{0};
  std::atomic<std::size_t> burst_claimed_at_last{0};
};

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now().time_since_epoch()).count();
}

/// The two phases' marks, and the burst's claims so far (fed by the engine's events).
struct marks {
  phase_marks idle, loaded;
  std::atomic<std::size_t> burst_claimed{0};
  phase_marks& of(std::string_view phase) { return phase == "idle" ? idle : loaded; }
};

/// Three steps that do nothing, as noop3; a small run marks when its first step began.
workflow_definition fair_workflow(std::string_view name, marks& m) {
  workflow_definition def{std::string(name), 1,           {}, nullptr, {}, {}, {}, std::nullopt, std::nullopt,
                          std::nullopt,      std::nullopt};
  def.fairness = fairness_rule{"/tenant"};
  def.body = [&m](context& ctx, json::value input) -> asio::awaitable<json::value> {
    if (const auto* phase = input.as_object().if_contains("phase")) {
      auto& p = m.of(std::string_view(phase->as_string()));
      const auto n = static_cast<std::size_t>(input.at("n").to_number<std::int64_t>());
      std::int64_t unset = 0;
      if (p.started[n].compare_exchange_strong(unset, now_ns()) && ++p.started_count == k_small_runs)
        p.burst_claimed_at_last = m.burst_claimed.load();
    }
    for (int i = 1; i <= 3; ++i) {
      const std::string step_name = std::string("step").append(std::to_string(i));
      auto step = [i] { return json::value(i); };  // named: no closure temporary inside a co_await (GCC 12)
      co_await ctx.step(step_name, step);
    }
    co_return input;
  };
  return def;
}

/// Claims and completions of each workflow, fed by engine_options::on_event.
class tally {
 public:
  explicit tally(marks& m) : marks_(m) {}

  void on_event(const run_event& ev) {
    if (ev.what != run_event::kind::claimed && ev.what != run_event::kind::completed &&
        ev.what != run_event::kind::failed && ev.what != run_event::kind::abandoned)
      return;
    {
      // Under the lock, so that a waiter that just found the count short is waiting by the notify.
      std::lock_guard lock(mutex_);
      if (ev.what == run_event::kind::claimed) {
        if (ev.workflow == k_burst) ++marks_.burst_claimed;
      } else if (ev.what == run_event::kind::completed) {
        if (ev.workflow == k_tenant) ++small_completed_;
      } else {
        ++unsuccessful_;
      }
    }
    cv_.notify_all();
  }

  /// Waits until `burst` runs of the burst were claimed, or throws at `deadline`.
  void wait_for_burst(std::size_t burst, steady::time_point deadline) {
    wait([&] { return marks_.burst_claimed.load() >= burst; }, deadline, "the burst to get going");
  }
  /// Waits until `small` small runs completed in all, or throws at `deadline`.
  void wait_for_small(std::size_t small, steady::time_point deadline) {
    wait([&] { return small_completed_ >= small; }, deadline, "the small runs to complete");
  }

 private:
  template <class Pred>
  void wait(Pred done, steady::time_point deadline, const std::string& what) {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_until(lock, deadline, [&] { return done() || unsuccessful_ > 0; }))
      throw std::runtime_error("timed out waiting for " + what);
    if (unsuccessful_ > 0) throw std::runtime_error("a run failed or was abandoned");
  }

  marks& marks_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::size_t small_completed_ = 0, unsuccessful_ = 0;
};

/// Enqueues the 1,000 small runs (tenant i % 100), k_enqueuers at a time, marked with `phase`.
void enqueue_small_runs_blocking(engine& e, const std::string& phase, phase_marks& p) {
  struct shared {
    std::atomic<std::size_t> next{0};
    std::atomic<std::size_t> live{k_enqueuers};
    std::promise<void> done;
    std::mutex mutex;
    std::string error;
  };
  auto s = std::make_shared<shared>();
  auto finished = s->done.get_future();
  for (std::size_t i = 0; i < k_enqueuers; ++i) {
    auto enqueuer = [&e, &p, s, phase]() -> asio::awaitable<void> {
      for (std::size_t n = s->next.fetch_add(1); n < k_small_runs; n = s->next.fetch_add(1)) {
        json::object input;
        input["tenant"] = std::string("t").append(std::to_string(n % k_small_tenants));
        input["phase"] = phase;
        input["n"] = n;
        p.enqueued[n] = now_ns();
        // Named: GCC 12 destroys temporaries of a co_await expression twice.
        const json::value payload(std::move(input));
        const enqueue_options defaults;
        auto r = co_await e.enqueue(k_tenant, payload, defaults);
        p.acknowledged[n] = now_ns();
        if (!r) {
          std::lock_guard lock(s->mutex);
          if (s->error.empty()) s->error = r.error().message();
        }
      }
    };
    asio::co_spawn(e.get_executor(), enqueuer, [s](std::exception_ptr ep) {
      if (ep) {
        std::lock_guard lock(s->mutex);
        if (s->error.empty()) s->error = "an enqueuer threw";
      }
      if (s->live.fetch_sub(1) == 1) s->done.set_value();
    });
  }
  finished.wait();
  if (!s->error.empty()) throw std::runtime_error("enqueue failed: " + s->error);
}

/// The burst: `n` runs of tenant "big", inserted in SQL (the fair-queue trigger places them as it would an
/// enqueue's), then the workers are woken.
void insert_burst_blocking(const std::string& conninfo, std::size_t n) {
  auto conn = connect_blocking(conninfo);
  exec_blocking(conn.get(),
                "INSERT INTO keel.runs (id, workflow, version, status, input, priority, due_at, fair_key, "
                "fair_weight) SELECT gen_random_uuid(), '" +
                    std::string(k_burst) +
                    "', 1, 'queued', jsonb_build_object('tenant', 'big', 'i', g), 0, now(), 'big', 1 "
                    "FROM generate_series(1, " +
                    std::to_string(n) + ") g");
  exec_blocking(conn.get(), "ANALYZE keel.runs");
  exec_blocking(conn.get(), "SELECT pg_notify('keel_runs', '')");
}

struct phase_figures {
  double p50_ms = 0, p99_ms = 0, max_ms = 0;
  double enqueue_p99_ms = 0;  ///< of the enqueue calls alone (call to acknowledgement)
};

/// Enqueue call to first step, of each small run of a phase.
phase_figures delays_of(const phase_marks& p) {
  std::vector<double> ms, enqueue_ms;
  for (std::size_t n = 0; n < k_small_runs; ++n) {
    const auto started = p.started[n].load(), enqueued = p.enqueued[n].load();
    if (started == 0 || enqueued == 0)
      throw std::runtime_error("verification failed: a small run never started");
    ms.push_back(static_cast<double>(started - enqueued) / 1e6);
    enqueue_ms.push_back(static_cast<double>(p.acknowledged[n].load() - enqueued) / 1e6);
  }
  return {percentile(ms, 0.5), percentile(ms, 0.99), percentile(ms, 1.0), percentile(enqueue_ms, 0.99)};
}

}  // namespace

std::string fairness_blocking(const latency_setup& s) {
  auto m = std::make_unique<marks>();  // engine threads write it until the engine stopped
  tally seen(*m);
  auto eo = engine_options_for(s);
  eo.on_event = [&seen](const run_event& ev) { seen.on_event(ev); };
  engine e(eo);
  engine_guard guard(e, s);
  e.register_workflow(fair_workflow(k_burst, *m));
  e.register_workflow(fair_workflow(k_tenant, *m));
  // Migrates and declares the workflows (their fairness rule) before anything is enqueued.
  if (auto r = e.tick_blocking(); !r) throw std::runtime_error("engine setup failed: " + r.error().message());
  if (auto r = e.start_blocking(); !r)
    throw std::runtime_error("engine start failed: " + r.error().message());
  const auto deadline = steady::now() + s.timeout;

  log::info(k_component, "1,000 runs of 100 tenants on an idle engine");
  enqueue_small_runs_blocking(e, "idle", m->idle);
  seen.wait_for_small(k_small_runs, deadline);
  s.check_interrupted();

  log::info(k_component,
            std::string("a burst of ").append(std::to_string(s.runs)).append(" runs of one tenant"));
  insert_burst_blocking(s.conninfo, s.runs);
  seen.wait_for_burst(std::min(k_burst_head_start, s.runs / 2), deadline);
  log::info(k_component, "the same 1,000 runs while the burst is worked through");
  const std::size_t burst_before = m->burst_claimed.load();
  enqueue_small_runs_blocking(e, "loaded", m->loaded);
  seen.wait_for_small(2 * k_small_runs, deadline);
  s.check_interrupted();
  guard.stop_blocking();

  auto conn = connect_blocking(s.conninfo);
  const auto idle = delays_of(m->idle);
  const auto loaded = delays_of(m->loaded);
  // How much of the burst was claimed from the first small enqueue to the last small run's start: about a
  // hundredth as much (101 tenants take turns) and a claim batch, not all of it.
  const auto meanwhile = std::to_string(m->loaded.burst_claimed_at_last.load() - burst_before);
  const auto burst_left =
      field(exec_blocking(conn.get(), "SELECT count(*) FROM keel.runs WHERE workflow = '" +
                                          std::string(k_burst) + "' AND started_at IS NULL")
                .get(),
            0, 0);
  auto check = exec_blocking(conn.get(),
                             "SELECT count(*) FILTER (WHERE status = 'completed'), (SELECT count(*) FROM "
                             "keel.steps st JOIN keel.runs r ON r.id = st.run_id WHERE r.workflow = '" +
                                 std::string(k_tenant) +
                                 "'), current_setting('fsync'), current_setting('synchronous_commit'), "
                                 "current_setting('server_version') FROM keel.runs WHERE workflow = '" +
                                 std::string(k_tenant) + "'");
  if (field(check.get(), 0, 0) != std::to_string(2 * k_small_runs) ||
      field(check.get(), 0, 1) != std::to_string(2 * k_small_runs * 3))
    throw std::runtime_error(std::string("verification failed: ").append(field(check.get(), 0, 0)) +
                             " small runs completed with " + field(check.get(), 0, 1) + " steps");
  const server_settings settings{field(check.get(), 0, 2), field(check.get(), 0, 3),
                                 field(check.get(), 0, 4)};
  return std::string("{\"workload\":").append(json_string(k_fairness)) +
         ",\"burst_runs\":" + std::to_string(s.runs) + ",\"small_runs\":" + std::to_string(k_small_runs) +
         ",\"small_tenants\":" + std::to_string(k_small_tenants) +
         ",\"small_p99_ms\":" + fixed(loaded.p99_ms, 2) + ",\"idle_p99_ms\":" + fixed(idle.p99_ms, 2) +
         ",\"ratio\":" + fixed(idle.p99_ms > 0 ? loaded.p99_ms / idle.p99_ms : 0, 2) +
         ",\"small_p50_ms\":" + fixed(loaded.p50_ms, 2) + ",\"idle_p50_ms\":" + fixed(idle.p50_ms, 2) +
         ",\"small_max_ms\":" + fixed(loaded.max_ms, 2) +
         ",\"small_enqueue_p99_ms\":" + fixed(loaded.enqueue_p99_ms, 2) +
         ",\"idle_enqueue_p99_ms\":" + fixed(idle.enqueue_p99_ms, 2) +
         ",\"burst_started_meanwhile\":" + meanwhile + ",\"burst_still_queued\":" + burst_left +
         ",\"concurrency\":" + std::to_string(s.concurrency) + server_fields(settings) + "}";
}

}  // namespace keel::bench
