// Group commit: writes from many runs share one pipelined transaction; each resumes once it is durable.
#pragma once

#include <atomic>
#include <boost/json/object.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "keel/storage/records.hpp"
#include "pg_connection.hpp"

namespace keel::storage::detail {

/// One write waiting for a transaction.
struct write_op {
  enum class kind { enqueue, checkpoint, finish };
  kind k;
  boost::json::object row;  ///< one row for the kind's jsonb_to_recordset statement
  /// Called once, from a writer thread: the outcome (enqueue) or success, or the error (fenced, ...).
  std::function<void(result<enqueue_outcome>)> done;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

/// Writer threads, each with its own connection. A thread takes everything queued (up to max_batch) and
/// commits it as one transaction: BEGIN, one statement per kind of write, COMMIT, sent as a single pipeline.
/// While it commits, new writes queue up and form the next batch: with one run in flight nothing waits.
class group_writer {
 public:
  group_writer(std::string conninfo, std::size_t threads, std::size_t max_batch);
  ~group_writer();
  group_writer(const group_writer&) = delete;
  group_writer& operator=(const group_writer&) = delete;

  /// Queues a write. Thread-safe. After stop() it fails at once with errc::shut_down.
  void submit(write_op op);

  /// Commits what is queued, fails what cannot be committed with shut_down, joins the threads. Idempotent.
  void stop();

  std::atomic<std::uint64_t> batches{0};
  std::atomic<std::uint64_t> writes{0};

 private:
  void thread_main(std::size_t index);
  /// Runs one batch as one transaction; on success completes every op.
  result<void> commit_blocking(pg_connection& conn, std::vector<write_op>& batch);

  std::string conninfo_;
  std::size_t max_batch_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::condition_variable stop_cv_;
  std::deque<write_op> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace keel::storage::detail
