#include "connection_pool.hpp"

#include <algorithm>

#include "keel/common/log.hpp"

namespace keel::storage::detail {

bool backoff_wait(std::mutex& m, std::condition_variable& cv, const bool& stopping,
                  std::chrono::milliseconds delay) {
  std::unique_lock lock(m);
  cv.wait_for(lock, delay, [&] { return stopping; });
  return !stopping;
}

bool reconnector::ensure_connected() {
  if (conn_.healthy()) return true;
  if (conn_.connect_blocking()) {
    if (outage_) log::info("storage", who_ + ": database connection re-established");
    outage_ = false;
    delay_ = std::chrono::milliseconds{50};
    return true;
  }
  if (!outage_) log::warn("storage", who_ + ": database unreachable, retrying: " + conn_.last_error());
  outage_ = true;
  return false;
}

std::chrono::milliseconds reconnector::next_delay() {
  const auto d = delay_;
  delay_ = std::min(delay_ * 2, std::chrono::milliseconds{2000});
  return d;
}

connection_pool::connection_pool(connection_config config, std::size_t threads, std::string name)
    : config_(std::move(config)), name_(std::move(name)) {
  threads_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i)
    threads_.emplace_back([this, i] { thread_main(i); });
}

connection_pool::~connection_pool() {
  stop();
}

void connection_pool::submit(db_job job) {
  {
    std::lock_guard lock(mutex_);
    if (!stopping_) {
      if (job.urgent) {
        queue_.push_front(std::move(job));
      } else {
        queue_.push_back(std::move(job));
      }
      cv_.notify_one();
      return;
    }
  }
  job.fail(errc::shut_down);
}

void connection_pool::stop() {
  std::deque<db_job> dropped;
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
    dropped.swap(queue_);
  }
  cv_.notify_all();
  stop_cv_.notify_all();
  for (auto& j : dropped)
    j.fail(errc::shut_down);
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

void connection_pool::thread_main(std::size_t index) {
  pg_connection conn(config_);
  reconnector link(conn, name_ + "#" + std::to_string(index));
  for (;;) {
    db_job job;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    for (;;) {
      if (!link.ensure_connected()) {
        bool stopping;
        {
          std::lock_guard lock(mutex_);
          stopping = stopping_;
        }
        const auto delay = link.next_delay();
        if (stopping || std::chrono::steady_clock::now() + delay > job.deadline) {
          job.fail(stopping ? errc::shut_down : errc::connection_lost);
          break;
        }
        if (!backoff_wait(mutex_, stop_cv_, stopping_, delay)) {
          job.fail(errc::shut_down);
          break;
        }
        continue;
      }
      if (job.run(conn) == job_outcome::done) break;
      conn.close();
    }
  }
}

}  // namespace keel::storage::detail
