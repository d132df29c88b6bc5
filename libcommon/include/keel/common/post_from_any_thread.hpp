// Completing a caller's operation from a database or follower thread without touching the caller's
// io_context after the caller may have destroyed it.
#pragma once

#include <atomic>
#include <boost/asio/post.hpp>
#include <memory>
#include <thread>
#include <utility>

namespace keel::detail {

/// Posts `fn` to `ex` from any thread; `fn` runs only once this call no longer touches `ex`.
///
/// Asio wakes an idle io_context by signalling its condition variable after releasing its lock, so a
/// context woken early (its run_for timed out, or a spurious wake-up) can run the handler, end its last
/// coroutine and be destroyed by its owner while the posting thread is still inside pthread_cond_signal
/// on it. The handler therefore waits for this call to have returned from `post` and dropped its copy
/// of the executor (which may hold the last reference to a strand); that wait is the few instructions
/// between the wake-up and the signal, and almost never happens at all. Pass `ex` and `fn` as
/// temporaries or moved values: nothing of the caller's must stay behind on this thread.
template <class Executor, class Fn>
void post_from_any_thread(Executor&& ex, Fn&& fn) {
  auto posted = std::make_shared<std::atomic<bool>>(false);
  {
    auto target = std::forward<Executor>(ex);
    boost::asio::post(target, [posted, fn = std::forward<Fn>(fn)]() mutable {
      while (!posted->load(std::memory_order_acquire))
        std::this_thread::yield();
      fn();
    });
  }
  posted->store(true, std::memory_order_release);
}

}  // namespace keel::detail
