// What keel-bench's HTTP workloads (hook_resumes.cpp, sse_fanout.cpp) share: their clients' io_context
// thread, the engine's run events counted, waiting on the main thread, and the server they load.
#pragma once

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include "keel/common/log.hpp"
#include "keel/engine.hpp"
#include "keel/http/server.hpp"
#include "latency_workloads.hpp"

namespace keel::bench::http_load {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

inline constexpr std::string_view k_component = "bench";
/// Errors as values (eof, resets, timeouts), not exceptions; named, so no completion token is a temporary
/// inside a co_await expression.
inline constexpr auto k_nothrow = asio::as_tuple(asio::use_awaitable);
/// One request (connect, write, answer) may take this long before the client gives up on it.
inline constexpr auto k_request_limit = 30s;
inline constexpr auto k_progress_every = 2s;
inline constexpr auto k_poll = 5ms;

inline std::int64_t steady_micros(steady::time_point t = steady::now()) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

inline double ms_between(steady::time_point from, steady::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

inline double seconds_between(steady::time_point from, steady::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

/// Counts the engine's run events (engine_options::on_event, any engine thread): runs parked on a wait,
/// runs that completed and those that did not, and when the last outcome came.
class run_counter {
 public:
  void on_event(const run_event& ev) {
    bool ok = false;
    switch (ev.what) {
      case run_event::kind::waiting:
        waiting_.fetch_add(1, std::memory_order_relaxed);
        return;
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
      std::lock_guard lock(m_);
      last_ = steady::now();
    }
    // After last_: whoever sees the count sees the time too.
    (ok ? completed_ : unsuccessful_).fetch_add(1, std::memory_order_release);
  }
  [[nodiscard]] std::size_t waiting() const noexcept { return waiting_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::size_t completed() const noexcept { return completed_.load(std::memory_order_acquire); }
  [[nodiscard]] std::size_t unsuccessful() const noexcept {
    return unsuccessful_.load(std::memory_order_acquire);
  }
  /// When the latest outcome arrived.
  [[nodiscard]] steady::time_point last() {
    std::lock_guard lock(m_);
    return last_;
  }

 private:
  std::atomic<std::size_t> waiting_{0}, completed_{0}, unsuccessful_{0};
  std::mutex m_;
  steady::time_point last_;
};

/// Waits (polling; on the main thread) until `done()` holds; throws once `deadline` passes or a signal
/// asks the benchmark to stop. `progress()` says where it is, every k_progress_every.
template <class Done, class Progress>
void wait_until(const latency_setup& s, steady::time_point deadline, std::string_view what, Done done,
                Progress progress) {
  auto last_log = steady::now();
  while (!done()) {
    s.check_interrupted();
    const auto now = steady::now();
    if (now > deadline) throw std::runtime_error(std::string(what) + " timed out: " + progress());
    if (now - last_log >= k_progress_every) {
      last_log = now;
      log::info(k_component, std::string(what) + ": " + progress());
    }
    std::this_thread::sleep_for(k_poll);
  }
}

/// The setup's engine options, with `counter` fed every run event.
engine_options options_for(const latency_setup& s, run_counter& counter);

/// Serves the engine's API on 127.0.0.1, any free port, for up to `connections` clients at once.
std::unique_ptr<http::server> start_server_blocking(engine& e, std::size_t connections);

/// The load generator's io_context and its one thread. Whatever its coroutines use must outlive it.
class client_thread {
 public:
  client_thread() = default;
  ~client_thread() {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }
  client_thread(const client_thread&) = delete;
  client_thread& operator=(const client_thread&) = delete;

  asio::io_context& io() noexcept { return io_; }
  /// Runs the io_context until its coroutines are done.
  void start() {
    thread_ = std::thread([this] {
      io_.run();
      finished_.store(true, std::memory_order_release);
    });
  }
  [[nodiscard]] bool finished() const noexcept { return finished_.load(std::memory_order_acquire); }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  asio::io_context io_{1};
  std::thread thread_;
  std::atomic<bool> finished_{false};
};

/// The message of the exception a coroutine ended with ("" for none).
std::string what_of(std::exception_ptr ep);

/// The hook-resumes workload (hook_resumes.cpp).
std::string hook_resumes_blocking(const latency_setup& s);

/// The sse-fanout workload (sse_fanout.cpp).
std::string sse_fanout_blocking(const latency_setup& s);

}  // namespace keel::bench::http_load
