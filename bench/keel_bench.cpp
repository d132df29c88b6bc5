// keel-bench: Keel's throughput and latency on a standard workload, beside a raw-SQL ceiling measured on the
// same database. Prints one JSON line on stdout; progress and errors go to stderr. See bench/README.md.
#include <signal.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench_database.hpp"
#include "bench_options.hpp"
#include "ceiling.hpp"
#include "event_latency.hpp"
#include "fairness.hpp"
#include "http_load.hpp"
#include "json_line.hpp"
#include "keel/common/log.hpp"
#include "keel/engine.hpp"
#include "latency_workloads.hpp"
#include "list_runs.hpp"
#include "pg_util.hpp"

namespace keel::bench {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

constexpr std::string_view k_component = "bench";
constexpr int k_exit_failed = 1;
constexpr int k_exit_interrupted = 130;
constexpr int k_noop3_steps = 3;
/// keyed-overhead's keys, and the limit of each.
constexpr std::size_t k_keys = 100;
constexpr int k_key_limit = 8;
constexpr auto k_progress_every = 2s;
/// How long the engine may take to stop before the benchmark gives up on it.
constexpr std::chrono::seconds k_stop_limit{60};

/// Set by the first SIGINT or SIGTERM (the handler then reverts, so a second one kills the process at once).
std::atomic<bool> g_interrupted{false};

void on_signal(int) noexcept {
  g_interrupted.store(true, std::memory_order_relaxed);
}

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

/// Thrown when a signal asked the benchmark to stop; unwinding stops the engine and the server.
struct interrupted_error : std::runtime_error {
  interrupted_error() : std::runtime_error("interrupted") {}
};

void throw_if_interrupted() {
  if (g_interrupted.load(std::memory_order_relaxed)) throw interrupted_error();
}

// ---------------------------------------------------------------------------------------------------------------
// The workload.

/// noop3: three steps that each return a small object ({"i": 1}, {"i": 2}, {"i": 3}); the run returns
/// {"steps": 3}. Measures the engine's per-step overhead: the steps themselves do nothing.
asio::awaitable<json::value> noop3(context& ctx, json::value) {
  for (int i = 1; i <= k_noop3_steps; ++i) {
    const std::string name = "step" + std::to_string(i);
    auto step = [i] {  // named: no closure temporary inside a co_await expression (GCC 12)
      json::object out;
      out["i"] = i;
      return json::value(std::move(out));
    };
    co_await ctx.step(name, step);
  }
  json::object result;
  result["steps"] = k_noop3_steps;
  co_return json::value(std::move(result));
}

/// Counts runs that reached an outcome; fed by engine_options::on_event (run strands, any engine thread).
class outcome_counter {
 public:
  explicit outcome_counter(std::size_t target) : target_(target) {}

  void on_event(const run_event& ev) noexcept {
    switch (ev.what) {
      case run_event::kind::completed:
        completed_.fetch_add(1, std::memory_order_relaxed);
        break;
      case run_event::kind::failed:
      case run_event::kind::abandoned:
        // Counted so that the wait ends; the verification afterwards reports them.
        unsuccessful_.fetch_add(1, std::memory_order_relaxed);
        break;
      default:
        return;
    }
    if (finished_.fetch_add(1, std::memory_order_acq_rel) + 1 == target_) {
      {
        std::lock_guard lock(mutex_);
        last_ = steady::now();
      }
      cv_.notify_all();
    }
  }

  /// Waits up to `d` for every run's outcome; true once they are all in.
  bool wait_for(std::chrono::milliseconds d) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, d, [&] { return finished() >= target_; });
  }

  [[nodiscard]] std::size_t finished() const noexcept { return finished_.load(std::memory_order_acquire); }
  [[nodiscard]] std::size_t completed() const noexcept { return completed_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::size_t unsuccessful() const noexcept {
    return unsuccessful_.load(std::memory_order_relaxed);
  }
  /// When the last outcome arrived (valid once wait_for returned true).
  [[nodiscard]] steady::time_point last() {
    std::lock_guard lock(mutex_);
    return last_;
  }

 private:
  const std::size_t target_;
  std::atomic<std::size_t> finished_{0};
  std::atomic<std::size_t> completed_{0};
  std::atomic<std::size_t> unsuccessful_{0};
  std::mutex mutex_;
  std::condition_variable cv_;
  steady::time_point last_;
};

/// Shared by the enqueuing coroutines.
struct enqueue_state {
  std::size_t total = 0;
  bool keyed = false;                // run i gets concurrency key "tenant-<i % k_keys>", limit k_key_limit
  std::atomic<std::size_t> next{0};  // the next run index to enqueue
  std::atomic<std::size_t> enqueued{0};
  std::atomic<std::size_t> live{0};  // coroutines still running
  std::promise<void> done;
  std::mutex mutex;
  std::size_t failures = 0;  // guarded by mutex
  std::string first_error;   // guarded by mutex

  void fail(std::string message) {
    std::lock_guard lock(mutex);
    if (failures++ == 0) first_error = std::move(message);
  }
};

/// Enqueues runs until the shared index passes the total. Many run at once so the store group-commits them.
asio::awaitable<void> enqueue_some(engine& e, std::shared_ptr<enqueue_state> s) {
  for (std::size_t i = s->next.fetch_add(1); i < s->total; i = s->next.fetch_add(1)) {
    json::object input;
    input["n"] = i;
    enqueue_options options;
    if (s->keyed) {
      options.concurrency_key = std::string("tenant-").append(std::to_string(i % k_keys));
      options.concurrency_limit = k_key_limit;
    }
    const json::value payload(std::move(input));  // named: GCC 12 (temporaries in co_await)
    auto r = co_await e.enqueue(k_noop3, payload, options);
    if (r) {
      s->enqueued.fetch_add(1, std::memory_order_relaxed);
    } else {
      s->fail(r.error().message());
      s->next.store(s->total);  // no point in going on
    }
  }
}

/// Enqueues `runs` noop3 runs with `in_flight` enqueue calls at a time; returns the wall time it took.
double enqueue_all_blocking(engine& e, std::size_t runs, std::size_t in_flight, bool keyed) {
  // Shared with the coroutines: the last one may still be inside set_value() when this function returns.
  auto s = std::make_shared<enqueue_state>();
  s->total = runs;
  s->keyed = keyed;
  const std::size_t k = std::min(in_flight, runs);
  s->live = k;
  auto done = s->done.get_future();
  const auto t0 = steady::now();
  for (std::size_t i = 0; i < k; ++i) {
    asio::co_spawn(e.get_executor(), enqueue_some(e, s), [s](std::exception_ptr ep) {
      if (ep) {
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& ex) {
          s->fail(ex.what());
        } catch (...) {
          s->fail("unknown exception");
        }
      }
      if (s->live.fetch_sub(1) == 1) s->done.set_value();
    });
  }
  auto last_log = t0;
  while (done.wait_for(200ms) != std::future_status::ready) {
    // On a signal, stop handing out runs; the enqueues in flight end on their own (request_timeout).
    if (g_interrupted.load(std::memory_order_relaxed)) s->next.store(runs);
    if (steady::now() - last_log >= k_progress_every) {
      last_log = steady::now();
      log::info(k_component, "enqueued " + std::to_string(s->enqueued.load()) + "/" + std::to_string(runs));
    }
  }
  const double seconds = std::chrono::duration<double>(steady::now() - t0).count();
  throw_if_interrupted();
  std::lock_guard lock(s->mutex);
  if (s->failures > 0) {
    throw std::runtime_error(std::to_string(s->failures) + " enqueue(s) failed; first: " + s->first_error);
  }
  return seconds;
}

// ---------------------------------------------------------------------------------------------------------------
// Measuring.

/// Stops the engine when it goes out of scope (also on an exception), within `limit`: an engine that does not
/// stop cannot be destroyed safely, so after the limit the watchdog reports the hang, cleans up the database
/// and ends the process with k_exit_failed.
class engine_stopper {
 public:
  engine_stopper(engine& e, bench_database& db, std::chrono::seconds limit) : e_(e), db_(db), limit_(limit) {}
  ~engine_stopper() { stop_blocking(); }
  engine_stopper(const engine_stopper&) = delete;
  engine_stopper& operator=(const engine_stopper&) = delete;

  void stop_blocking() {
    if (stopped_) return;
    stopped_ = true;
    std::promise<void> done;
    std::thread watchdog([this, f = done.get_future()] {
      if (f.wait_for(limit_) == std::future_status::ready) return;
      log::error(k_component, "the engine did not stop within " + std::to_string(limit_.count()) +
                                  " s; cleaning up and exiting");
      db_.cleanup_blocking();
      std::_Exit(k_exit_failed);
    });
    e_.stop_blocking();
    done.set_value();
    watchdog.join();
  }

 private:
  engine& e_;
  bench_database& db_;
  std::chrono::seconds limit_;
  bool stopped_ = false;
};

/// Consumes every event of an engine's stream on a thread of its own until the stream ends.
class stream_consumer {
 public:
  explicit stream_consumer(engine& e) : stream_(open(e)), thread_([this] { consume(); }) {}
  ~stream_consumer() {
    if (thread_.joinable()) thread_.join();
  }
  stream_consumer(const stream_consumer&) = delete;
  stream_consumer& operator=(const stream_consumer&) = delete;
  /// Waits for the end of the stream (engine stopped) and returns how many events it delivered.
  std::uint64_t join() {
    if (thread_.joinable()) thread_.join();
    return events_;
  }

 private:
  static event_stream open(engine& e) {
    auto s = e.stream_blocking();
    if (!s) throw std::runtime_error("cannot open a stream: " + s.error().message());
    return std::move(*s);
  }
  void consume() {
    asio::io_context io;
    asio::co_spawn(
        io,
        [this]() -> asio::awaitable<void> {
          while (auto ev = co_await stream_.next())
            ++events_;
        },
        asio::detached);
    io.run();
  }
  event_stream stream_;
  std::uint64_t events_ = 0;
  std::thread thread_;
};

struct engine_figures {
  double enqueue_seconds = 0;
  std::uint64_t streamed = 0;  // events a stream attached to the engine delivered
  double seconds = 0;
  std::uint64_t batches = 0;  // write transactions during the drain
  std::uint64_t writes = 0;   // writes they carried
};

/// What a drain adds to plain noop3 runs.
enum class drain_extra {
  none,
  stream,  ///< one unbounded stream attached before the drain and consumed throughout
  keyed,   ///< a concurrency key on every run (k_keys keys, k_key_limit each)
};

/// Runs the noop3 drain on `conninfo`; `before_enqueue` (if any) runs on a migrated, empty schema.
engine_figures run_engine_blocking(const bench_options& o, bench_database& db, const std::string& conninfo,
                                   const std::function<void(const std::string&)>& before_enqueue = {},
                                   drain_extra extra = drain_extra::none) {
  const bool with_stream = extra == drain_extra::stream;
  outcome_counter counter(o.runs);
  engine_options eo;
  eo.store.conninfo = conninfo;
  eo.store.writers = o.writers;
  eo.store.max_batch = o.max_batch;
  eo.store.pool_size = o.pool;
  eo.concurrency = o.concurrency;
  eo.threads = o.threads;
  eo.migrate = true;
  eo.on_event = [&counter](const run_event& ev) { counter.on_event(ev); };
  engine e(eo);
  engine_stopper stopper(e, db, k_stop_limit);
  e.register_workflow<json::value, json::value>(std::string(k_noop3), 1, noop3);
  // Migrates and claims nothing (the queue is empty), so start() below does no migration inside the timing.
  if (auto r = e.tick_blocking(); !r) throw std::runtime_error("engine setup failed: " + r.error().message());
  if (before_enqueue) before_enqueue(conninfo);
  std::optional<stream_consumer> consumer;
  if (with_stream) consumer.emplace(e);

  engine_figures f;
  log::info(k_component, "enqueueing " + std::to_string(o.runs) + " runs");
  f.enqueue_seconds = enqueue_all_blocking(e, o.runs, o.enqueuers, extra == drain_extra::keyed);
  log::info(k_component, "enqueued in " + std::to_string(f.enqueue_seconds) + " s; draining");
  if (o.analyze) {
    // A fresh table has no statistics until autovacuum gets to it; this shows what the plans do with them.
    auto conn = connect_blocking(conninfo);
    exec_blocking(conn.get(), "ANALYZE keel.runs");
  }

  const auto before = e.store().stats();
  const auto t0 = steady::now();
  if (auto r = e.start_blocking(); !r)
    throw std::runtime_error("engine start failed: " + r.error().message());
  auto last_log = t0;
  while (!counter.wait_for(200ms)) {
    throw_if_interrupted();
    const auto now = steady::now();
    if (now - t0 > o.timeout) {
      throw std::runtime_error("drain timed out after " + std::to_string(o.timeout.count()) + " s with " +
                               std::to_string(counter.finished()) + "/" + std::to_string(o.runs) +
                               " runs done");
    }
    if (now - last_log >= k_progress_every) {
      last_log = now;
      const double secs = std::chrono::duration<double>(now - t0).count();
      log::info(k_component, "completed " + std::to_string(counter.completed()) + "/" +
                                 std::to_string(o.runs) + " (" +
                                 std::to_string(static_cast<long>(counter.completed() / secs)) + " runs/s)");
    }
  }
  f.seconds = std::chrono::duration<double>(counter.last() - t0).count();
  const auto after = e.store().stats();
  f.batches = after.batches - before.batches;
  f.writes = after.writes - before.writes;
  log::info(k_component, "drained in " + std::to_string(f.seconds) + " s; stopping the engine");
  stopper.stop_blocking();
  if (consumer) f.streamed = consumer->join();  // the stop ended the stream
  if (counter.unsuccessful() > 0) {
    throw std::runtime_error(std::to_string(counter.unsuccessful()) + " run(s) failed or were abandoned");
  }
  return f;
}

struct database_figures {
  double p50_ms = 0, p99_ms = 0;            // enqueue to completed
  double exec_p50_ms = 0, exec_p99_ms = 0;  // claimed to completed
  std::string fsync, synchronous_commit, server_version;
};

/// Marks the parked workload's extra runs, which the figures and the verification leave out.
constexpr std::string_view k_parked_marker = "parked";

/// Inserts `n` noop3 runs due a day from now (not timed; plain SQL, like a backlog left by earlier days).
void park_runs_blocking(const std::string& conninfo, std::size_t n) {
  auto conn = connect_blocking(conninfo);
  exec_blocking(conn.get(),
                "INSERT INTO keel.runs (id, workflow, version, status, input, priority, due_at) "
                "SELECT gen_random_uuid(), 'noop3', 1, 'queued', '{\"" +
                    std::string(k_parked_marker) +
                    "\": true}'::jsonb, 0, now() + interval '1 day' FROM generate_series(1, " +
                    std::to_string(n) + ")");
  exec_blocking(conn.get(), "VACUUM ANALYZE keel.runs");
}

/// Reads the latencies from keel.runs and checks every run completed with its 3 steps; throws otherwise.
/// Parked runs are left out.
database_figures read_and_verify_blocking(const std::string& conninfo, std::size_t runs, int steps_per_run) {
  auto conn = connect_blocking(conninfo);
  auto r = exec_blocking(conn.get(), R"sql(
SELECT count(*), count(*) FILTER (WHERE status = 'completed'), (SELECT count(*) FROM keel.steps),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY total_ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY total_ms),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY exec_ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY exec_ms),
       current_setting('fsync'), current_setting('synchronous_commit'), current_setting('server_version')
FROM (SELECT status, extract(epoch FROM finished_at - created_at) * 1000 AS total_ms,
             extract(epoch FROM finished_at - started_at) * 1000 AS exec_ms
      FROM keel.runs WHERE NOT input ? 'parked') r)sql");
  const PGresult* res = r.get();
  const auto total = field(res, 0, 0), completed = field(res, 0, 1), steps = field(res, 0, 2);
  const auto expected_steps = std::to_string(runs * static_cast<std::size_t>(steps_per_run));
  if (total != std::to_string(runs) || completed != total || steps != expected_steps) {
    throw std::runtime_error("verification failed: keel.runs holds " + total + " runs (" + completed +
                             " completed), keel.steps " + steps + " rows; expected " + std::to_string(runs) +
                             " completed runs and " + expected_steps + " steps");
  }
  database_figures f;
  f.p50_ms = std::stod(field(res, 0, 3));
  f.p99_ms = std::stod(field(res, 0, 4));
  f.exec_p50_ms = std::stod(field(res, 0, 5));
  f.exec_p99_ms = std::stod(field(res, 0, 6));
  f.fsync = field(res, 0, 7);
  f.synchronous_commit = field(res, 0, 8);
  f.server_version = field(res, 0, 9);
  return f;
}

/// The parked workload: the same drain with and without `o.parked` runs queued for tomorrow, each on a
/// database of its own on the same server.
int run_parked(const bench_options& o) {
  bench_database db(o);
  const auto plain = run_engine_blocking(o, db, db.conninfo());
  const auto plain_db = read_and_verify_blocking(db.conninfo(), o.runs, k_noop3_steps);
  const auto parked_conninfo = db.add_database_blocking("parked");
  log::info(k_component, "again, with " + std::to_string(o.parked) + " runs parked for tomorrow");
  const auto parked = run_engine_blocking(
      o, db, parked_conninfo, [&](const std::string& conninfo) { park_runs_blocking(conninfo, o.parked); });
  const auto parked_db = read_and_verify_blocking(parked_conninfo, o.runs, k_noop3_steps);
  const double steps = static_cast<double>(o.runs * static_cast<std::size_t>(k_noop3_steps));
  const double plain_rate = steps / plain.seconds, parked_rate = steps / parked.seconds;
  std::cout << "{\"workload\":" << json_string(o.workload) << ",\"runs\":" << o.runs
            << ",\"parked\":" << o.parked << ",\"steps_per_s\":" << fixed(plain_rate, 1)
            << ",\"parked_steps_per_s\":" << fixed(parked_rate, 1)
            << ",\"ratio\":" << fixed(parked_rate / plain_rate, 2)
            << ",\"p99_ms\":" << fixed(plain_db.p99_ms, 2)
            << ",\"parked_p99_ms\":" << fixed(parked_db.p99_ms, 2) << ",\"concurrency\":" << o.concurrency
            << ",\"fsync\":" << json_string(plain_db.fsync) << "}" << std::endl;
  return 0;
}

/// Turns the durable run log (013_run_log.sql) off for `conninfo`'s database: the log-overhead baseline.
void disable_run_log_blocking(const std::string& conninfo) {
  auto conn = connect_blocking(conninfo);
  exec_blocking(conn.get(),
                "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET keel.log = off', "
                "current_database()); END $$");
}

/// Lets the server settle after a drain on `conninfo`'s database: its tables vacuumed (else autovacuum
/// does it during the next drain) and a checkpoint taken.
void settle_blocking(const std::string& conninfo) {
  auto conn = connect_blocking(conninfo);
  exec_blocking(conn.get(), "VACUUM ANALYZE");
  exec_blocking(conn.get(), "CHECKPOINT");
}

/// The log-overhead workload: the noop3 drain without and with the durable run log, each on a database of
/// its own on the same server, four times in the order without, with, with, without (a later drain runs
/// on a busier server: the order cancels that out); ratio = the with-log drains' steps per second over the
/// without-log ones'.
int run_log_overhead(const bench_options& o) {
  bench_database db(o);
  const double steps = static_cast<double>(o.runs * static_cast<std::size_t>(k_noop3_steps));
  double on_seconds = 0, off_seconds = 0;
  database_figures on_db;
  std::string events = "0";
  const char* order[] = {"nolog1", "log1", "log2", "nolog2"};
  for (const std::string phase : order) {
    const bool with_log = phase.rfind("log", 0) == 0;
    log::info(k_component, std::string(with_log ? "with" : "without") + " the run log (" + phase + ")");
    const auto conninfo = db.add_database_blocking(phase);
    if (!with_log) disable_run_log_blocking(conninfo);  // before the engine's sessions start
    const auto figures = run_engine_blocking(o, db, conninfo);
    const auto verified = read_and_verify_blocking(conninfo, o.runs, k_noop3_steps);
    (with_log ? on_seconds : off_seconds) += figures.seconds;
    if (with_log) {
      on_db = verified;
      auto conn = connect_blocking(conninfo);
      events = field(exec_blocking(conn.get(), "SELECT coalesce(sum(n), 0) FROM keel.run_log").get(), 0, 0);
    }
    settle_blocking(conninfo);
  }
  const double on_rate = 2 * steps / on_seconds, off_rate = 2 * steps / off_seconds;
  std::cout << "{\"workload\":" << json_string(o.workload) << ",\"runs\":" << o.runs
            << ",\"steps_per_s\":" << fixed(on_rate, 1)
            << ",\"without_log_steps_per_s\":" << fixed(off_rate, 1)
            << ",\"ratio\":" << fixed(on_rate / off_rate, 2) << ",\"log_events_per_drain\":" << events
            << ",\"p99_ms\":" << fixed(on_db.p99_ms, 2) << ",\"concurrency\":" << o.concurrency
            << ",\"fsync\":" << json_string(on_db.fsync) << "}" << std::endl;
  return 0;
}

/// The stream-overhead workload: the noop3 drain without and with one unbounded stream attached and
/// consumed, each on a database of its own, in the order without, with, with, without (as log-overhead);
/// ratio = the with-stream drains' steps per second over the without-stream ones'.
int run_stream_overhead(const bench_options& o) {
  bench_database db(o);
  const double steps = static_cast<double>(o.runs * static_cast<std::size_t>(k_noop3_steps));
  double on_seconds = 0, off_seconds = 0;
  std::uint64_t streamed = 0;
  database_figures on_db;
  const char* order[] = {"nostream1", "stream1", "stream2", "nostream2"};
  for (const std::string phase : order) {
    const bool with_stream = phase.rfind("stream", 0) == 0;
    log::info(k_component, std::string(with_stream ? "with" : "without") + " a stream (" + phase + ")");
    const auto conninfo = db.add_database_blocking(phase);
    const auto figures =
        run_engine_blocking(o, db, conninfo, {}, with_stream ? drain_extra::stream : drain_extra::none);
    const auto verified = read_and_verify_blocking(conninfo, o.runs, k_noop3_steps);
    (with_stream ? on_seconds : off_seconds) += figures.seconds;
    if (with_stream) {
      on_db = verified;
      streamed += figures.streamed;
    }
    settle_blocking(conninfo);
  }
  const double on_rate = 2 * steps / on_seconds, off_rate = 2 * steps / off_seconds;
  std::cout << "{\"workload\":" << json_string(o.workload) << ",\"runs\":" << o.runs
            << ",\"steps_per_s\":" << fixed(on_rate, 1)
            << ",\"without_stream_steps_per_s\":" << fixed(off_rate, 1)
            << ",\"ratio\":" << fixed(on_rate / off_rate, 2)
            << ",\"events_streamed_per_drain\":" << streamed / 2 << ",\"p99_ms\":" << fixed(on_db.p99_ms, 2)
            << ",\"concurrency\":" << o.concurrency << ",\"fsync\":" << json_string(on_db.fsync) << "}"
            << std::endl;
  return 0;
}

/// The keyed-overhead workload: the noop3 drain without and with a concurrency key on every run (k_keys
/// keys round robin, k_key_limit each: the limits seldom bind, so what it measures is what the slots cost),
/// each on a database of its own, in the order without, with, with, without (as log-overhead); ratio = the
/// keyed drains' steps per second over the plain ones'.
int run_keyed_overhead(const bench_options& o) {
  bench_database db(o);
  const double steps = static_cast<double>(o.runs * static_cast<std::size_t>(k_noop3_steps));
  double on_seconds = 0, off_seconds = 0;
  database_figures on_db, off_db;
  std::string blocked = "0";
  const char* order[] = {"plain1", "keyed1", "keyed2", "plain2"};
  for (const std::string phase : order) {
    const bool keyed = phase.rfind("keyed", 0) == 0;
    log::info(k_component, std::string(keyed ? "with" : "without") + " concurrency keys (" + phase + ")");
    const auto conninfo = db.add_database_blocking(phase);
    const auto figures =
        run_engine_blocking(o, db, conninfo, {}, keyed ? drain_extra::keyed : drain_extra::none);
    const auto verified = read_and_verify_blocking(conninfo, o.runs, k_noop3_steps);
    (keyed ? on_seconds : off_seconds) += figures.seconds;
    (keyed ? on_db : off_db) = verified;
    if (keyed) {
      auto conn = connect_blocking(conninfo);
      const auto holders = field(
          exec_blocking(conn.get(), "SELECT count(*) FROM keel.concurrency_slots WHERE holder IS NOT NULL")
              .get(),
          0, 0);
      if (holders != "0") throw std::runtime_error("verification failed: " + holders + " slot(s) still held");
      blocked =
          field(exec_blocking(conn.get(),
                              "SELECT count(*) FROM keel.run_log, unnest(kinds) k WHERE k = 'run_blocked'")
                    .get(),
                0, 0);
    }
    settle_blocking(conninfo);
  }
  const double on_rate = 2 * steps / on_seconds, off_rate = 2 * steps / off_seconds;
  std::cout << "{\"workload\":" << json_string(o.workload) << ",\"runs\":" << o.runs << ",\"keys\":" << k_keys
            << ",\"limit\":" << k_key_limit << ",\"steps_per_s\":" << fixed(on_rate, 1)
            << ",\"plain_steps_per_s\":" << fixed(off_rate, 1)
            << ",\"ratio\":" << fixed(on_rate / off_rate, 2) << ",\"blocked_per_drain\":" << blocked
            << ",\"p99_ms\":" << fixed(on_db.p99_ms, 2) << ",\"plain_p99_ms\":" << fixed(off_db.p99_ms, 2)
            << ",\"concurrency\":" << o.concurrency << ",\"fsync\":" << json_string(on_db.fsync) << "}"
            << std::endl;
  return 0;
}

/// The latency workloads (latency_workloads.cpp) on a fresh database.
int run_latency(const bench_options& o) {
  bench_database db(o);
  latency_setup s;
  s.workload = o.workload;
  s.conninfo = db.conninfo();
  s.runs = o.runs;
  s.concurrency = o.concurrency;
  s.threads = o.threads;
  s.writers = o.writers;
  s.max_batch = o.max_batch;
  s.pool = o.pool;
  s.timeout = o.timeout;
  s.clients = o.clients;
  s.connections = o.connections;
  s.skip_direct = o.skip_ceiling;
  s.check_interrupted = throw_if_interrupted;
  s.stop_engine_blocking = [&db](engine& e) { engine_stopper(e, db, k_stop_limit).stop_blocking(); };
  std::cout << run_latency_workload_blocking(s) << std::endl;
  return 0;
}

int run(const bench_options& o) {
  if (o.workload == k_parked) return run_parked(o);
  if (o.workload == k_log_overhead) return run_log_overhead(o);
  if (o.workload == k_stream_overhead) return run_stream_overhead(o);
  if (o.workload == k_keyed_overhead) return run_keyed_overhead(o);
  if (is_latency_workload(o.workload)) return run_latency(o);
  bench_database db(o);
  const auto ef = run_engine_blocking(o, db, db.conninfo());
  const auto df = read_and_verify_blocking(db.conninfo(), o.runs, k_noop3_steps);
  const auto steps = o.runs * static_cast<std::size_t>(k_noop3_steps);
  const double steps_per_s = static_cast<double>(steps) / ef.seconds;

  std::optional<ceiling_result> ceiling, lifecycle;
  if (!o.skip_ceiling) {
    throw_if_interrupted();
    // The ceiling batches like the engine's writer can: up to `concurrency` runs' writes, capped by
    // max_batch.
    const std::size_t batch = std::min(o.concurrency, o.max_batch);
    log::info(k_component,
              "measuring the raw-SQL ceiling (" + std::to_string(batch) + " runs per transaction)");
    // As many connections as the engine has writers: the ceiling stays the best the same means can do.
    ceiling_plan plan{o.runs, batch, k_noop3_steps, o.writers, ceiling_writes::steps, o.ceiling_indexes_kept};
    ceiling = measure_ceiling_blocking(db.conninfo(), plan);
    throw_if_interrupted();
    log::info(k_component, "measuring the lifecycle ceiling (a claim and a finish per run besides)");
    plan.writes = ceiling_writes::lifecycle;
    lifecycle = measure_ceiling_blocking(db.conninfo(), plan);
  }

  std::string line = "{\"workload\":" + json_string(o.workload) + ",\"runs\":" + std::to_string(o.runs) +
                     ",\"steps\":" + std::to_string(steps) + ",\"seconds\":" + fixed(ef.seconds, 3) +
                     ",\"runs_per_s\":" + fixed(static_cast<double>(o.runs) / ef.seconds, 1) +
                     ",\"steps_per_s\":" + fixed(steps_per_s, 1) + ",\"p50_ms\":" + fixed(df.p50_ms, 2) +
                     ",\"p99_ms\":" + fixed(df.p99_ms, 2);
  if (ceiling) {
    const double ceiling_per_s = static_cast<double>(ceiling->steps) / ceiling->seconds;
    const double lifecycle_per_s = static_cast<double>(lifecycle->steps) / lifecycle->seconds;
    line += ",\"ceiling_steps_per_s\":" + fixed(ceiling_per_s, 1) +
            ",\"ratio\":" + fixed(steps_per_s / ceiling_per_s, 2) +
            ",\"lifecycle_ceiling_steps_per_s\":" + fixed(lifecycle_per_s, 1) +
            ",\"lifecycle_ratio\":" + fixed(steps_per_s / lifecycle_per_s, 2) +
            ",\"lifecycle_bound\":" + fixed(lifecycle_per_s / ceiling_per_s, 2);
  } else {
    line += ",\"ceiling_steps_per_s\":null,\"ratio\":null";
  }
  line += ",\"concurrency\":" + std::to_string(o.concurrency) + ",\"threads\":" + std::to_string(o.threads) +
          ",\"writers\":" + std::to_string(o.writers) + ",\"max_batch\":" + std::to_string(o.max_batch) +
          ",\"batches\":" + std::to_string(ef.batches) + ",\"writes_per_batch\":" +
          fixed(ef.batches ? static_cast<double>(ef.writes) / static_cast<double>(ef.batches) : 0.0, 1) +
          ",\"exec_p50_ms\":" + fixed(df.exec_p50_ms, 2) + ",\"exec_p99_ms\":" + fixed(df.exec_p99_ms, 2) +
          ",\"enqueue_seconds\":" + fixed(ef.enqueue_seconds, 3) +
          ",\"analyzed\":" + (o.analyze ? "true" : "false");
  if (ceiling) {
    line += ",\"ceiling_seconds\":" + fixed(ceiling->seconds, 3) +
            ",\"ceiling_batches\":" + std::to_string(ceiling->transactions) +
            ",\"lifecycle_ceiling_seconds\":" + fixed(lifecycle->seconds, 3) + ",\"lifecycle_hot_updates\":" +
            (lifecycle->hot_update_share < 0 ? std::string("null") : fixed(lifecycle->hot_update_share, 2)) +
            ",\"ceiling_indexes\":" + json_string(name_of(o.ceiling_indexes_kept));
  }
  line += ",\"fsync\":" + json_string(df.fsync) +
          ",\"synchronous_commit\":" + json_string(df.synchronous_commit) +
          ",\"server_version\":" + json_string(df.server_version) + "}";
  std::cout << line << std::endl;
  return 0;
}

}  // namespace
}  // namespace keel::bench

int main(int argc, char** argv) {
  using namespace keel::bench;
  if (argc > 1 && std::string_view(argv[1]) == k_event_consumer_flag) return run_event_consumer(argc, argv);
  if (argc > 1 && std::string_view(argv[1]) == k_stream_reader_flag) return run_stream_reader(argc, argv);
  auto parsed = parse_options(argc, argv);
  if (!parsed.options) return parsed.exit_code;
  install_signal_handlers();
  try {
    return run(*parsed.options);
  } catch (const interrupted_error&) {
    keel::log::error(k_component, "interrupted; cleaned up");
    return k_exit_interrupted;
  } catch (const std::exception& e) {
    keel::log::error(k_component, e.what());
    return k_exit_failed;
  }
}
