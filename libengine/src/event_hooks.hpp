// engine_options::hooks: asynchronous callbacks fed by a stream, awaited in order per run.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "keel/engine/engine.hpp"

namespace keel::detail {

class hook_dispatcher : public std::enable_shared_from_this<hook_dispatcher> {
 public:
  hook_dispatcher(boost::asio::io_context& ioc, std::vector<event_hook> hooks);

  /// Hands every event of `stream` to the hooks until the stream ends.
  boost::asio::awaitable<void> run(event_stream stream);

 private:
  /// Queues `e` behind its run's earlier events; starts the run's drain if none is running.
  void enqueue(stream_event e);
  /// Calls the hooks with the run's queued events, one at a time, until its queue is empty.
  boost::asio::awaitable<void> drain(run_id run);

  boost::asio::io_context& ioc_;
  const std::vector<event_hook> hooks_;
  std::mutex m_;
  /// Runs with events queued or being handled (present while their drain runs).
  std::unordered_map<run_id, std::deque<stream_event>> queues_;  // under m_
};

}  // namespace keel::detail
