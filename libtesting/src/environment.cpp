#include "keel/testing/environment.hpp"

#include <libpq-fe.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "keel/storage/embedded_postgres.hpp"
#include "time_skip.hpp"

namespace keel::testing {

/// The throwaway server of an environment given no database: a temporary directory, removed at the end.
struct environment::embedded {
  std::filesystem::path dir;
  std::unique_ptr<storage::embedded_postgres> server;

  embedded() {
    std::string pattern = (std::filesystem::temp_directory_path() / "keel-testing.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::runtime_error("keel::testing: cannot create a temporary directory");
    dir = pattern;
    // The server may run as another user (root runs it as `postgres`): it must reach its data directory.
    ::chmod(dir.c_str(), 0755);
    storage::embedded_postgres_options o;
    o.data_dir = dir / "data";
    o.durable = false;  // a test's data need not survive a power cut
    server = std::make_unique<storage::embedded_postgres>(o);
    if (auto r = server->start_blocking(); !r) {
      std::filesystem::remove_all(dir);
      throw std::runtime_error("keel::testing: the embedded PostgreSQL did not start: " +
                               r.error().message());
    }
  }
  ~embedded() {
    server.reset();  // stops it
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  embedded(const embedded&) = delete;
  embedded& operator=(const embedded&) = delete;
};

environment::environment(environment_options options) : options_(std::move(options)) {
  if (options_.database_url.empty()) {
    embedded_ = std::make_unique<embedded>();
    conninfo_ = embedded_->server->connection_string();
  } else {
    conninfo_ = options_.database_url;
  }
  // A test should not wait long for what a production worker does at leisure: the defaults shrink, values
  // the caller chose stay.
  const engine_options defaults;
  auto& e = options_.engine;
  if (e.lease == defaults.lease) e.lease = std::chrono::seconds(2);
  if (e.schedule_poll_interval == defaults.schedule_poll_interval)
    e.schedule_poll_interval = std::chrono::milliseconds(100);
  // Runs parked for a throttle start when the key sweep sees their window move (after a skip, too).
  if (e.concurrency_sweep_interval == defaults.concurrency_sweep_interval)
    e.concurrency_sweep_interval = std::chrono::milliseconds(100);
  e.store.conninfo = conninfo_;
  e.migrate = true;
  start_worker_blocking();
}

environment::~environment() {
  if (engine_) engine_->stop_blocking(std::chrono::seconds(5));
  engine_.reset();
}

void environment::start_worker_blocking() {
  auto e = std::make_unique<keel::engine>(options_.engine);
  if (options_.register_workflows) options_.register_workflows(*e);
  if (auto r = e->start_blocking(); !r)
    throw std::runtime_error("keel::testing: the worker did not start: " + r.error().message());
  engine_ = std::move(e);
}

void environment::advance_blocking(std::chrono::milliseconds by) {
  if (by.count() < 0) throw std::invalid_argument("keel::testing: time only moves forward");
  // What can run now runs first: a run enqueued a moment ago has not reached its sleep yet, and skipping
  // time before it did would skip nothing.
  if (const long busy = detail::wait_until_settled_blocking(conninfo_, options_.settle_timeout); busy > 0) {
    throw std::runtime_error("keel::testing: cannot skip time: " + std::to_string(busy) +
                             " run(s) still running or due after " +
                             std::to_string(options_.settle_timeout.count()) + " ms");
  }
  detail::advance_timers_blocking(conninfo_, std::chrono::duration_cast<std::chrono::microseconds>(by));
}

void environment::kill_worker_blocking() {
  if (!engine_) return;
  const std::string worker = engine_->worker_id();
  // Stopped with no time to finish anything: what it runs mid-step is abandoned and fenced off, as after a
  // crash (a run that reaches a step boundary first is handed back instead).
  engine_->stop_blocking(std::chrono::milliseconds(0));
  engine_.reset();
  // Its leases end now instead of a lease period later.
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn(PQconnectdb(conninfo_.c_str()), &PQfinish);
  const char* params[] = {worker.c_str()};
  std::unique_ptr<PGresult, decltype(&PQclear)> r(
      PQexecParams(conn.get(), "UPDATE keel.runs SET due_at = now() WHERE status = 'running' AND owner = $1",
                   1, nullptr, params, nullptr, nullptr, 0),
      &PQclear);
  if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK)
    throw std::runtime_error("keel::testing: cannot expire the killed worker's leases: " +
                             std::string(PQerrorMessage(conn.get())));
}

void environment::restart_worker_blocking() {
  if (engine_) {
    engine_->stop_blocking();
    engine_.reset();
  }
  start_worker_blocking();
}

run_info environment::wait_blocking(const run_id& id, std::chrono::milliseconds timeout) {
  auto run = engine_->wait_blocking(id, timeout);
  if (!run) throw std::runtime_error("keel::testing: run " + id + ": " + run.error().message());
  return std::move(*run);
}

std::vector<std::string> environment::history_blocking(const run_id& id) {
  std::vector<std::string> out;
  read_log_options options;
  options.run = id;
  options.limit = 1000;
  std::int64_t after = 0;
  for (;;) {
    auto page = engine_->read_log_blocking(after, options);
    if (!page)
      throw std::runtime_error("keel::testing: cannot read the log of " + id + ": " + page.error().message());
    for (const auto& e : page->events) {
      std::string entry = e.kind;
      const auto* data = e.data.if_object();
      const auto* name = data != nullptr ? data->if_contains("name") : nullptr;
      if (e.kind.rfind("step_", 0) == 0 && name != nullptr && name->is_string())
        entry.append(":").append(name->as_string());
      out.push_back(std::move(entry));
      after = e.pos;
    }
    if (page->events.size() < options.limit) return out;
  }
}

}  // namespace keel::testing
