// Group commit: writes from many runs share one pipelined transaction; each resumes once it is durable.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pg_connection.hpp"
#include "write_kind.hpp"

namespace keel::storage::detail {

/// Writer threads, each with its own connection. A thread takes everything queued (up to max_batch) and
/// commits it as one transaction: BEGIN, each kind's statements, COMMIT, sent as a single pipeline. While it
/// commits, new writes queue up and form the next batch: with one run in flight nothing waits.
///
/// Failures: errors that are transient by nature (is_transient) retry the batch, with a backoff; any other
/// error means some write in the batch is refused for good, and the batch is bisected until each refused
/// write fails alone with its error while every other write commits. A poisoned write costs its batch
/// O(log n) extra transactions, never a stall.
class group_writer {
 public:
  group_writer(connection_config config, std::size_t threads, std::size_t max_batch);
  ~group_writer();
  group_writer(const group_writer&) = delete;
  group_writer& operator=(const group_writer&) = delete;

  /// Queues a write. Thread-safe. After stop() it fails at once with errc::shut_down.
  void submit(write_ptr w);

  /// Commits what is queued, fails what cannot be committed with shut_down, joins the threads. Idempotent.
  void stop();

  std::atomic<std::uint64_t> batches{0};
  std::atomic<std::uint64_t> writes{0};

 private:
  void thread_main(std::size_t index);
  /// Runs `batch` as one transaction; on success completes every write in it.
  result<void> commit_blocking(pg_connection& conn, std::vector<write_ptr>& batch);
  /// After a non-transient failure of `part`: commits it in halves, recursively, so that each refused write
  /// fails alone. Writes that meet a transient error go to `retry`.
  void isolate_blocking(pg_connection& conn, const std::string& who, std::vector<write_ptr> part,
                        std::vector<write_ptr>& retry);
  [[nodiscard]] bool stopping();

  connection_config config_;
  std::size_t max_batch_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::condition_variable stop_cv_;
  std::deque<write_ptr> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace keel::storage::detail
