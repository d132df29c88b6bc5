// keel::testing — a worker on a database of its own for a workflow's tests, with time skipping: a flow that
// sleeps for a week, or waits three days for an approval that never comes, is tested in milliseconds.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "keel/engine/engine.hpp"

namespace keel::testing {

struct environment_options {
  /// A PostgreSQL database (libpq conninfo) the environment may migrate and own for its lifetime; empty (the
  /// default): a throwaway embedded server of its own (fsync off), removed with the environment. Its
  /// server must not run as root: as root, the embedded server runs as the `postgres` user.
  std::string database_url;
  /// The worker's options; store.conninfo is the environment's. Its lease is 2 s unless set otherwise, so
  /// that a killed worker's runs come back soon.
  engine_options engine;
  /// Registers the workflows on every worker the environment starts (the first, and after restart_worker).
  std::function<void(keel::engine&)> register_workflows;
  /// How long advance_blocking waits for running and due runs to reach a wait or finish.
  std::chrono::milliseconds settle_timeout{10'000};
};

/// One worker on one database, started on construction. Blocking members: call them from the test's
/// thread, never from the engine's threads.
class environment {
 public:
  explicit environment(environment_options options);
  /// Stops the worker and, if the environment made it, the embedded server with its data.
  ~environment();
  environment(const environment&) = delete;
  environment& operator=(const environment&) = delete;

  /// The running worker (a new one after restart_worker).
  [[nodiscard]] keel::engine& engine() noexcept { return *engine_; }
  /// The database's connection string.
  [[nodiscard]] const std::string& conninfo() const noexcept { return conninfo_; }

  /// Time skipping: first waits (up to options.settle_timeout) until no run a live worker can run is running
  /// or due — what can run now runs, up to its next wait — then everything that waits for a time (sleeps,
  /// event and hook deadlines, ctx.any / ctx.all timers, hook expiries, delayed and debounced starts,
  /// cancellation graces, throttle windows) comes due as if `by` had passed: every time a waiting run
  /// recorded moves `by` earlier, ctx.now() records included. The worker looks for due work at once. Cron
  /// schedules keep real time. Throws std::invalid_argument for a negative `by`, std::runtime_error if runs
  /// did not settle or the database refused.
  void advance_blocking(std::chrono::milliseconds by);

  /// Crashes the worker: it stops with no time to finish, so a run in the middle of a step is abandoned
  /// (what it does after this is fenced off) and its lease is made to expire now, so that the next worker
  /// reclaims it at once, as a recovery. (A run that reaches a step boundary first is handed back instead,
  /// as a stop does; a real crash may also leave the worker registered until its registration expires.)
  void kill_worker_blocking();
  /// A fresh worker (workflows registered, started) in place of a killed or stopped one.
  void restart_worker_blocking();

  /// Waits until the run finished; throws std::runtime_error if it did not within `timeout`.
  run_info wait_blocking(const run_id& id, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  /// The run's history from the durable run log, oldest first: each event's kind, with the step's name for
  /// step events ("step_completed:charge"), e.g. to assert that a step ran once.
  std::vector<std::string> history_blocking(const run_id& id);

 private:
  struct embedded;
  void start_worker_blocking();

  environment_options options_;
  std::unique_ptr<embedded> embedded_;
  std::string conninfo_;
  std::unique_ptr<keel::engine> engine_;
};

}  // namespace keel::testing
