#include "run_listener.hpp"

#include <poll.h>

#include "connection_pool.hpp"
#include "keel/common/log.hpp"
#include "pg_connection.hpp"

namespace keel::storage::detail {
namespace {

/// How often the thread looks at `stopping_` while the connection is quiet.
constexpr int k_poll_ms = 100;

}  // namespace

run_listener::run_listener(connection_config config, std::function<void()> on_notify,
                           std::function<void(const std::string&)> on_cancel)
    : config_(std::move(config)),
      on_notify_(std::move(on_notify)),
      on_cancel_(std::move(on_cancel)),
      thread_([this] { thread_main(); }) {}

run_listener::~run_listener() {
  stop();
}

void run_listener::stop() {
  stopping_.store(true, std::memory_order_release);
  if (thread_.joinable()) thread_.join();
}

void run_listener::thread_main() {
  pg_connection conn(config_);
  reconnector link(conn, "listener");
  bool listening = false;
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
                                     k_cancel_channel)) {
        conn.close();
        continue;
      }
      listening = true;
      on_notify_();  // anything enqueued while we were not listening is due now too
    }
    pollfd p{PQsocket(conn.native()), POLLIN, 0};
    const int ready = ::poll(&p, 1, k_poll_ms);
    if (ready <= 0) continue;
    if (PQconsumeInput(conn.native()) != 1) {
      conn.close();
      continue;
    }
    bool notified = false;
    while (PGnotify* n = PQnotifies(conn.native())) {
      if (std::string_view(n->relname) == k_cancel_channel) {
        if (on_cancel_ && n->extra != nullptr) on_cancel_(n->extra);
      } else {
        notified = true;
      }
      PQfreemem(n);
    }
    if (notified) on_notify_();
  }
}

}  // namespace keel::storage::detail
