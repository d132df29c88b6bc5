#include "event_hooks.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/strand.hpp>

#include "keel/common/log.hpp"

namespace keel::detail {

namespace asio = boost::asio;

hook_dispatcher::hook_dispatcher(asio::io_context& ioc, std::vector<event_hook> hooks)
    : ioc_(ioc), hooks_(std::move(hooks)) {}

asio::awaitable<void> hook_dispatcher::run(event_stream stream) {
  while (auto e = co_await stream.next())
    enqueue(std::move(*e));
}

void hook_dispatcher::enqueue(stream_event e) {
  run_id run = e.run;
  {
    std::lock_guard lock(m_);
    auto [it, fresh] = queues_.try_emplace(run);
    it->second.push_back(std::move(e));
    if (!fresh) return;  // its drain is running and takes it in turn
  }
  // Each run's calls on a strand of their own: in order for the run, concurrent across runs.
  asio::co_spawn(asio::make_strand(ioc_), drain(std::move(run)),
                 [self = shared_from_this()](std::exception_ptr) {});
}

asio::awaitable<void> hook_dispatcher::drain(run_id run) {
  for (;;) {
    stream_event e;
    {
      std::lock_guard lock(m_);
      auto it = queues_.find(run);
      if (it->second.empty()) {
        queues_.erase(it);
        co_return;
      }
      e = std::move(it->second.front());
      it->second.pop_front();
    }
    for (const auto& hook : hooks_) {
      try {
        co_await hook(e);
      } catch (const std::exception& ex) {
        log::warn("engine", "an event hook threw (ignored): " + std::string(ex.what()));
      } catch (...) {
        log::warn("engine", "an event hook threw (ignored)");
      }
    }
  }
}

}  // namespace keel::detail
