// An engine call given a time limit, for probes and scrapes that must answer soon even when the database
// hangs.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <memory>
#include <optional>

namespace keel::http::detail {

template <class T, class Call>
boost::asio::awaitable<void> settle(Call call, std::shared_ptr<std::optional<T>> answer,
                                    std::shared_ptr<boost::asio::steady_timer> waiting) {
  *answer = co_await call();
  waiting->cancel();
}

/// What `call()` (an awaitable of T) answers, or nullopt when it has not answered within `within`. The call
/// runs detached, so that it may outlast the request; `call` must keep what it uses alive.
template <class T, class Call>
boost::asio::awaitable<std::optional<T>> answer_within(std::chrono::milliseconds within, Call call) {
  // Both on the caller's strand: the call's end and the timer's never race.
  const auto ex = co_await boost::asio::this_coro::executor;
  auto answer = std::make_shared<std::optional<T>>();
  auto waiting = std::make_shared<boost::asio::steady_timer>(ex, within);
  boost::asio::co_spawn(ex, settle<T>(std::move(call), answer, waiting), boost::asio::detached);
  co_await waiting->async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  co_return std::move(*answer);
}

}  // namespace keel::http::detail
