#include "run_listener.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json/array.hpp>
#include <boost/json/serialize.hpp>

#include "connection_pool.hpp"
#include "keel/common/log.hpp"
#include "pg_connection.hpp"

namespace keel::storage::detail {
namespace {

/// How often the thread looks at `stopping_` while the connection is quiet.
constexpr int k_poll_ms = 100;

const statement announce_log_stmt{"keel_announce_log", R"sql(
SELECT pg_notify('keel_log', (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)::text))sql"};

const statement publish_frames_stmt{
    "keel_publish_frames",
    "SELECT count(pg_notify('keel_frames', f)) FROM jsonb_array_elements_text($1::jsonb) f"};

}  // namespace

namespace {

/// The listener's session is named, so that operators (and tests) can tell it in pg_stat_activity.
connection_config named(connection_config config) {
  config.defaults.emplace_back("application_name", std::string(run_listener::k_application_name));
  return config;
}

}  // namespace

run_listener::run_listener(connection_config config, store_listeners listeners)
    : config_(named(std::move(config))),
      listeners_(std::move(listeners)),
      wake_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      thread_([this] { thread_main(); }) {}

run_listener::~run_listener() {
  stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void run_listener::request_stop() noexcept {
  stopping_.store(true, std::memory_order_release);
  wake();
}

void run_listener::stop() {
  request_stop();
  if (thread_.joinable()) thread_.join();
}

void run_listener::wake() noexcept {
  if (wake_fd_ < 0) return;
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void run_listener::announce_log() noexcept {
  if (!log_due_.exchange(true, std::memory_order_acq_rel)) wake();
}

bool run_listener::publish_frame(std::string payload) {
  if (payload.size() > k_max_frame_bytes) return false;
  {
    std::lock_guard lock(outbox_mutex_);
    if (frames_.size() >= k_max_outbox) return false;
    frames_.push_back(std::move(payload));
  }
  wake();
  return true;
}

bool run_listener::send_due(pg_connection& conn, std::chrono::steady_clock::time_point& last_announce) {
  std::vector<std::string> frames;
  {
    std::lock_guard lock(outbox_mutex_);
    frames.swap(frames_);
  }
  if (!frames.empty()) {
    boost::json::array a;
    a.reserve(frames.size());
    for (auto& f : frames)
      a.emplace_back(f);
    auto r = conn.exec_blocking(publish_frames_stmt, {boost::json::serialize(a)});
    if (!r && r.error() == errc::connection_lost) return false;
    if (!r) log::warn("listener", "frames not published: " + r.error().message());
  }
  const auto now = std::chrono::steady_clock::now();
  if (log_due_.load(std::memory_order_acquire) && now - last_announce >= k_announce_interval) {
    log_due_.store(false, std::memory_order_release);
    last_announce = now;
    auto r = conn.exec_blocking(announce_log_stmt, {});
    if (!r && r.error() == errc::connection_lost) return false;
  }
  return true;
}

void run_listener::dispatch(pg_connection& conn) {
  bool runs = false;
  bool grew = false;
  while (PGnotify* n = PQnotifies(conn.native())) {
    const std::string_view channel(n->relname);
    if (channel == k_cancel_channel) {
      if (listeners_.cancel_requested && n->extra != nullptr) listeners_.cancel_requested(n->extra);
    } else if (channel == k_log_channel) {
      grew = true;
    } else if (channel == k_frames_channel) {
      if (listeners_.frame && n->extra != nullptr) listeners_.frame(n->extra);
    } else if (channel == k_webhooks_channel) {
      if (listeners_.webhook_answered && n->extra != nullptr) listeners_.webhook_answered(n->extra);
    } else {
      runs = true;
    }
    PQfreemem(n);
  }
  if (runs && listeners_.runs_enqueued) listeners_.runs_enqueued();
  if (grew && listeners_.log_appended) listeners_.log_appended();
}

void run_listener::thread_main() {
  pg_connection conn(config_);
  reconnector link(conn, "listener");
  bool listening = false;
  auto last_announce = std::chrono::steady_clock::time_point{};
  while (!stopping_.load(std::memory_order_acquire)) {
    if (!link.ensure_connected()) {
      listening = false;
      // Short naps, so that stop() is never kept waiting for a long backoff.
      const auto until = std::chrono::steady_clock::now() + link.next_delay();
      while (!stopping_.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < until) {
        ::poll(nullptr, 0, k_poll_ms);
      }
      continue;
    }
    if (!listening) {
      if (!conn.exec_script_blocking(std::string("LISTEN ") + k_runs_channel + "; LISTEN " +
                                     k_cancel_channel + "; LISTEN " + k_log_channel + "; LISTEN " +
                                     k_frames_channel + "; LISTEN " + k_webhooks_channel)) {
        conn.close();
        continue;
      }
      listening = true;
      // Anything enqueued, or logged, while we were not listening is due now too.
      if (listeners_.runs_enqueued) listeners_.runs_enqueued();
      if (listeners_.log_appended) listeners_.log_appended();
    }
    if (!send_due(conn, last_announce)) {
      conn.close();
      continue;
    }
    dispatch(conn);  // what arrived while sending
    // An announcement held back by the interval is sent when it ends.
    int timeout = k_poll_ms;
    if (log_due_.load(std::memory_order_acquire)) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          last_announce + k_announce_interval - std::chrono::steady_clock::now());
      timeout = static_cast<int>(std::clamp<std::int64_t>(left.count() + 1, 0, k_poll_ms));
    }
    pollfd p[2] = {{PQsocket(conn.native()), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    const int ready = ::poll(p, wake_fd_ >= 0 ? 2 : 1, timeout);
    if (ready <= 0) continue;
    if (wake_fd_ >= 0 && (p[1].revents & POLLIN) != 0) {
      std::uint64_t count = 0;
      [[maybe_unused]] auto n = ::read(wake_fd_, &count, sizeof count);
    }
    if ((p[0].revents & POLLIN) != 0) {
      if (PQconsumeInput(conn.native()) != 1) {
        conn.close();
        continue;
      }
      dispatch(conn);
    }
  }
}

}  // namespace keel::storage::detail
