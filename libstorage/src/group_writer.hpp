// Group commit: writes from many runs share one pipelined transaction; each resumes once it is durable.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "connection_pool.hpp"
#include "keel/common/histogram.hpp"
#include "pg_connection.hpp"
#include "write_kind.hpp"

namespace keel::storage::detail {

/// Writer threads, each with its own connection. A thread takes everything queued (up to max_batch) and
/// commits it as one transaction: BEGIN, each kind's statements, COMMIT, sent as a single pipeline. While it
/// commits, new writes queue up and form the next batch: with one run in flight nothing waits. Two
/// transactions are in flight at once (libpq pipeline mode), and the next one is sent before the writes of
/// the one acknowledged are handed their outcomes, so the server always has the next batch in hand.
///
/// Failures: errors that are transient by nature (is_transient) retry the batch, with a backoff; any other
/// error means some write in the batch is refused for good, and the batch is bisected until each refused
/// write fails alone with its error while every other write commits. A poisoned write costs its batch
/// O(log n) extra transactions, never a stall.
class group_writer {
 public:
  /// `after_commit` is called on a writer thread after each transaction commits (before its writes are
  /// completed); it must not block.
  group_writer(connection_config config, std::size_t threads, std::size_t max_batch,
               std::function<void()> after_commit = {});
  ~group_writer();
  group_writer(const group_writer&) = delete;
  group_writer& operator=(const group_writer&) = delete;

  /// Queues a write. Thread-safe. After stop() it fails at once with errc::shut_down.
  void submit(write_ptr w);

  /// Commits what is queued, fails what cannot be committed with shut_down, joins the threads. Idempotent.
  void stop();

  std::atomic<std::uint64_t> batches{0};
  std::atomic<std::uint64_t> writes{0};
  /// A transaction's time from being sent to its COMMIT's answer, in seconds.
  histogram commit_seconds{k_seconds_bounds};
  /// The writes each committed transaction carried.
  histogram batch_writes{k_batch_bounds};

 private:
  /// A batch as one transaction: BEGIN, each kind's statements, COMMIT; and which results go to which writes.
  struct transaction {
    /// `again`: see write_kind::add_statements.
    transaction(std::vector<write_ptr> batch, bool again);
    struct group {
      const write_kind* kind;
      std::span<pending_write* const> writes;
      std::size_t first_result;
      std::size_t results;
    };
    std::vector<write_ptr> writes;
    std::vector<pending_write*> sorted;  // into `writes`, grouped by kind
    std::vector<group> groups;
    std::vector<pipeline_query> queries;
    std::chrono::steady_clock::time_point sent_at = std::chrono::steady_clock::now();
  };
  static constexpr std::array<double, 12> k_batch_bounds{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048};

  void thread_main(std::size_t index);
  /// Up to max_batch queued writes, oldest first.
  std::vector<write_ptr> take_queued();
  /// Sends queued writes as new transactions while the pipeline has room. Returns false if the connection
  /// broke: then every write in flight, and the batch being sent, are in `doubt` and `flights` is empty.
  bool fill_pipeline(pg_connection& conn, std::deque<transaction>& flights, std::vector<write_ptr>& doubt);
  /// After COMMIT: completes every write of `tx` from `results`.
  void complete(transaction& tx, const std::vector<pg_result>& results);
  /// Runs `batch` as one transaction, with nothing else in flight; on success completes every write in it.
  /// On failure `batch` still holds every write.
  result<void> commit_blocking(pg_connection& conn, std::vector<write_ptr>& batch);
  /// Writes whose transaction failed (`failure`, or none yet): committed one transaction at a time until each
  /// write is committed or failed. Transient errors are retried with a backoff; any other error bisects
  /// the batch (isolate_blocking).
  void settle_blocking(pg_connection& conn, reconnector& link, const std::string& who,
                       std::vector<write_ptr>& batch, std::optional<error_code> failure);
  /// After a non-transient failure of `part`: commits it in halves, recursively, so that each refused write
  /// fails alone. Writes that meet a transient error go to `retry`.
  void isolate_blocking(pg_connection& conn, const std::string& who, std::vector<write_ptr> part,
                        std::vector<write_ptr>& retry);
  [[nodiscard]] bool stopping();

  connection_config config_;
  std::size_t max_batch_;
  std::function<void()> after_commit_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::condition_variable stop_cv_;
  std::deque<write_ptr> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace keel::storage::detail
