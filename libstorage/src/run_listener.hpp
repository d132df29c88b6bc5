// LISTEN/NOTIFY on a dedicated connection: what other workers announce (runs enqueued, cancel requests,
// run log growth, progress frames), and this worker's own announcements of the log and of frames.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "keel/storage/store.hpp"
#include "pg_connection.hpp"

namespace keel::storage::detail {

/// The channel the group writer notifies (once per committed batch that enqueued runs).
inline constexpr const char* k_runs_channel = "keel_runs";
/// The channel a cancel request is announced on (payload: the run's id).
inline constexpr const char* k_cancel_channel = "keel_cancel";
/// The channel the run log's growth is announced on (payload: the first position not yet readable then).
inline constexpr const char* k_log_channel = "keel_log";
/// The channel progress frames cross workers on (payload: the frame, as the engine encodes it).
inline constexpr const char* k_frames_channel = "keel_frames";
/// The channel webhook answers are announced on (payload: the webhook's token hash;
/// sql::set_webhook_response).
inline constexpr const char* k_webhooks_channel = "keel_webhooks";

/// A thread holding one connection that LISTENs on the channels above and calls the matching listener for
/// each notification (several runs or log notifications may be folded into one call). Reconnects with
/// backoff; a notification sent while it was reconnecting is lost, which only delays a claim or a log
/// reader until its next poll (and loses frames, which are best-effort).
///
/// It also sends: announce_log() (coalesced: at most one NOTIFY per k_announce_interval, in a transaction
/// of its own — a NOTIFY in the writer's transactions would serialise their commits on the notify queue's
/// lock) and publish_frame().
class run_listener {
 public:
  run_listener(connection_config config, store_listeners listeners);
  ~run_listener();
  run_listener(const run_listener&) = delete;
  run_listener& operator=(const run_listener&) = delete;

  /// Asks the thread to stop; it ends within its poll interval (100 ms) without touching the database again.
  /// Non-blocking. Idempotent.
  void request_stop() noexcept;

  /// Stops and joins the thread. Idempotent. Blocking.
  void stop();

  /// The run log grew here: tell other workers (soon, coalesced). Thread-safe, non-blocking.
  void announce_log() noexcept;

  /// Sends `payload` on k_frames_channel, best-effort: false (nothing sent) when it is too large for a
  /// notification, or when more than k_max_outbox frames wait (the oldest wait; this one is dropped).
  /// Thread-safe, non-blocking.
  bool publish_frame(std::string payload);

  /// Longest frame payload that fits a notification (PostgreSQL's limit is 8000 bytes, with the channel).
  static constexpr std::size_t k_max_frame_bytes = 7900;
  static constexpr std::size_t k_max_outbox = 4096;
  static constexpr std::chrono::milliseconds k_announce_interval{5};
  /// The listener session's application_name (unless the connection string sets one).
  static constexpr std::string_view k_application_name = "keel listener";

 private:
  void thread_main();
  void wake() noexcept;
  /// Sends what is due now (the log announcement, frames). Returns false if the connection broke.
  bool send_due(pg_connection& conn, std::chrono::steady_clock::time_point& last_announce);
  void dispatch(pg_connection& conn);

  connection_config config_;
  store_listeners listeners_;
  std::atomic<bool> stopping_{false};
  int wake_fd_ = -1;  // eventfd: wakes the thread's poll for something to send
  std::atomic<bool> log_due_{false};
  std::mutex outbox_mutex_;
  std::vector<std::string> frames_;  // under outbox_mutex_
  std::thread thread_;
};

}  // namespace keel::storage::detail
