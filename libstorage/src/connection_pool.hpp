// Dedicated database threads, each owning one connection; jobs are queued to them and never run on
// io_context.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pg_connection.hpp"

namespace keel::storage::detail {

/// What a job tells the pool after it ran.
enum class job_outcome {
  done,       ///< finished (successfully or with an error it has already reported)
  reconnect,  ///< the connection broke; run the job again on a fresh connection
};

/// A unit of work for a connection thread. `run` gets a healthy connection; `fail` is called instead when the
/// connection cannot be (re-)established before `deadline`, or when the pool stops.
struct db_job {
  std::function<job_outcome(pg_connection&)> run;
  std::function<void(error_code)> fail;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  /// Jumps the queue (heartbeats: late ones cost leases).
  bool urgent = false;
};

/// N threads, each with its own connection, reconnecting with capped exponential backoff and logging outages.
class connection_pool {
 public:
  connection_pool(connection_config config, std::size_t threads, std::string name);
  ~connection_pool();
  connection_pool(const connection_pool&) = delete;
  connection_pool& operator=(const connection_pool&) = delete;

  /// Queues a job. Thread-safe. After stop(), the job fails at once with errc::shut_down.
  void submit(db_job job);

  /// Fails queued jobs with shut_down, lets running ones finish, joins the threads. Idempotent.
  void stop();

 private:
  void thread_main(std::size_t index);

  connection_config config_;
  std::string name_;
  std::mutex mutex_;
  std::condition_variable cv_;       // work queued or stopping
  std::condition_variable stop_cv_;  // stopping (wakes reconnect backoff)
  std::deque<db_job> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

/// Keeps one thread's connection up: connects when needed, logs an outage once when it starts and once when
/// it ends, and hands out capped exponential backoff delays (50 ms doubling to 2 s) while it lasts.
class reconnector {
 public:
  reconnector(pg_connection& conn, std::string who) : conn_(conn), who_(std::move(who)) {}
  /// True when the connection is usable (connecting first if it is not).
  bool ensure_connected();
  /// How long to wait before the next attempt.
  std::chrono::milliseconds next_delay();

 private:
  pg_connection& conn_;
  std::string who_;
  std::chrono::milliseconds delay_{50};
  bool outage_ = false;
};

/// Sleeps for `delay` unless `stopping` becomes true first; returns false if stopping. Used by reconnect
/// loops.
bool backoff_wait(std::mutex& m, std::condition_variable& cv, const bool& stopping,
                  std::chrono::milliseconds delay);

}  // namespace keel::storage::detail
