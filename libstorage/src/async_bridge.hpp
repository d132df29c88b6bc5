// Turns a job that completes on a database thread into an awaitable that resumes on the caller's executor.
#pragma once

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <functional>
#include <memory>

#include "keel/common/post_from_any_thread.hpp"
#include "keel/common/result.hpp"

namespace keel::storage::detail {

/// Calls `start(done)`; `done(result<T>)` may be invoked once from any thread, and the awaiting coroutine
/// resumes with that result on its own executor (its strand), never on the database thread. `home`: a
/// context that outlives the threads calling `done` (see store::outlived_by), posted to directly.
template <class T, class Start>
boost::asio::awaitable<result<T>> await_completion(Start start,
                                                   const boost::asio::execution_context* home = nullptr) {
  return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(result<T>)>(
      [start = std::move(start), home](auto handler) mutable {
        using handler_t = decltype(handler);
        auto shared = std::make_shared<handler_t>(std::move(handler));
        // Called once: the handler moves out, so the database thread keeps nothing of the caller's.
        start(std::function<void(result<T>)>([shared = std::move(shared), home](result<T> r) mutable {
          auto ex = boost::asio::get_associated_executor(*shared);
          auto resume = [shared = std::move(shared), r = std::move(r)]() mutable { (*shared)(std::move(r)); };
          if (home != nullptr && &boost::asio::query(ex, boost::asio::execution::context) == home) {
            boost::asio::post(ex, std::move(resume));
          } else {
            keel::detail::post_from_any_thread(std::move(ex), std::move(resume));
          }
        }));
      },
      boost::asio::use_awaitable);
}

}  // namespace keel::storage::detail
