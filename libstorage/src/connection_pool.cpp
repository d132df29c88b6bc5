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

connection_pool::connection_pool(std::string conninfo, std::size_t threads, std::string name)
    : conninfo_(std::move(conninfo)), name_(std::move(name)) {
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
      queue_.push_back(std::move(job));
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
  const std::string who = name_ + "#" + std::to_string(index);
  pg_connection conn(conninfo_);
  std::chrono::milliseconds delay{50};
  bool outage_logged = false;
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
      if (!conn.healthy()) {
        if (auto c = conn.connect_blocking(); !c) {
          if (!outage_logged) {
            log::warn("storage", who + ": database unreachable, retrying: " + conn.last_error());
            outage_logged = true;
          }
          bool stopping;
          {
            std::lock_guard lock(mutex_);
            stopping = stopping_;
          }
          if (stopping || std::chrono::steady_clock::now() + delay > job.deadline) {
            job.fail(stopping ? errc::shut_down : errc::connection_lost);
            break;
          }
          if (!backoff_wait(mutex_, stop_cv_, stopping_, delay)) {
            job.fail(errc::shut_down);
            break;
          }
          delay = std::min(delay * 2, std::chrono::milliseconds{2000});
          continue;
        }
        if (outage_logged) log::info("storage", who + ": database connection re-established");
        outage_logged = false;
        delay = std::chrono::milliseconds{50};
      }
      if (job.run(conn) == job_outcome::done) break;
      conn.close();
    }
  }
}

}  // namespace keel::storage::detail
