// LISTEN keel_runs on a dedicated connection: tells idle workers at once that runs were enqueued elsewhere.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "pg_connection.hpp"

namespace keel::storage::detail {

/// The channel the group writer notifies (once per committed batch that enqueued runs).
inline constexpr const char* k_runs_channel = "keel_runs";
/// The channel a cancel request is announced on (payload: the run's id).
inline constexpr const char* k_cancel_channel = "keel_cancel";

/// A thread holding one connection that LISTENs on k_runs_channel and calls `on_notify` for each
/// notification (several may be folded into one call), and on k_cancel_channel, calling `on_cancel` with
/// each payload. Reconnects with backoff; a notification sent while
/// it was reconnecting is lost, which only delays a claim until the worker's next poll.
class run_listener {
 public:
  run_listener(connection_config config, std::function<void()> on_notify,
               std::function<void(const std::string&)> on_cancel = {});
  ~run_listener();
  run_listener(const run_listener&) = delete;
  run_listener& operator=(const run_listener&) = delete;

  /// Asks the thread to stop; it ends within its poll interval (100 ms) without touching the database again.
  /// Non-blocking. Idempotent.
  void request_stop() noexcept { stopping_.store(true, std::memory_order_release); }

  /// Stops and joins the thread. Idempotent. Blocking.
  void stop();

 private:
  void thread_main();

  connection_config config_;
  std::function<void()> on_notify_;
  std::function<void(const std::string&)> on_cancel_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace keel::storage::detail
