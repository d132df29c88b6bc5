#include "group_writer.hpp"

#include <algorithm>

#include "connection_pool.hpp"
#include "keel/common/log.hpp"
#include "statements.hpp"

namespace keel::storage::detail {
namespace {

/// After this many connection losses in a row on one batch, the batch is bisected (it may be what breaks
/// the connection).
constexpr int k_losses_before_split = 3;
constexpr std::chrono::milliseconds k_first_transient_delay{50};
constexpr std::chrono::milliseconds k_max_transient_delay{2000};

void fail_all(std::vector<write_ptr>& batch, error_code ec) {
  for (auto& w : batch)
    w->fail(ec);
  batch.clear();
}

}  // namespace

group_writer::group_writer(connection_config config, std::size_t threads, std::size_t max_batch)
    : config_(std::move(config)), max_batch_(max_batch == 0 ? 1 : max_batch) {
  threads_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i)
    threads_.emplace_back([this, i] { thread_main(i); });
}

group_writer::~group_writer() {
  stop();
}

void group_writer::submit(write_ptr w) {
  {
    std::lock_guard lock(mutex_);
    if (!stopping_) {
      queue_.push_back(std::move(w));
      cv_.notify_one();
      return;
    }
  }
  w->fail(errc::shut_down);
}

void group_writer::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  stop_cv_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

bool group_writer::stopping() {
  std::lock_guard lock(mutex_);
  return stopping_;
}

void group_writer::thread_main(std::size_t index) {
  const std::string who = "writer#" + std::to_string(index);
  pg_connection conn(config_);
  reconnector link(conn, who);
  std::vector<write_ptr> batch;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued was committed or failed
      while (!queue_.empty() && batch.size() < max_batch_) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    int losses = 0;  // consecutive connection losses while committing this batch
    auto transient_delay = k_first_transient_delay;
    // Callers with a deadline (enqueue) get `ec` once it passes; engine writes wait as long as it takes.
    auto expire = [&](error_code ec) {
      const auto now = std::chrono::steady_clock::now();
      std::erase_if(batch, [&](write_ptr& w) {
        if (now < w->deadline()) return false;
        w->fail(ec);
        return true;
      });
    };
    auto wait_or_give_up = [&](std::chrono::milliseconds delay) {
      if (!backoff_wait(mutex_, stop_cv_, stopping_, delay)) fail_all(batch, errc::shut_down);
    };
    while (!batch.empty()) {
      if (!link.ensure_connected()) {
        expire(errc::connection_lost);
        wait_or_give_up(link.next_delay());
        continue;
      }
      if (losses < k_losses_before_split || batch.size() == 1) {
        auto r = commit_blocking(conn, batch);
        if (r) break;
        if (r.error() == errc::connection_lost) {
          // Reconnect and retry: every statement is idempotent on retry.
          conn.close();
          ++losses;
          continue;
        }
        if (is_transient(r.error())) {
          log::warn("storage", who + ": batch of " + std::to_string(batch.size()) +
                                   " hit a transient error, " + "retrying in " +
                                   std::to_string(transient_delay.count()) + " ms: " + conn.last_error());
          expire(errc::retryable);
          wait_or_give_up(transient_delay);
          transient_delay = std::min(transient_delay * 2, k_max_transient_delay);
          continue;
        }
        log::warn("storage", who + ": batch of " + std::to_string(batch.size()) +
                                 " refused; isolating the refused writes: " + conn.last_error());
      } else {
        log::warn("storage", who + ": batch of " + std::to_string(batch.size()) + " lost the connection " +
                                 std::to_string(losses) + " times in a row; isolating the writes");
      }
      losses = 0;
      std::vector<write_ptr> retry;
      const std::size_t half = batch.size() / 2;
      std::vector<write_ptr> first(
          std::make_move_iterator(batch.begin()),
          std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(half)));
      std::vector<write_ptr> second(
          std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(half)),
          std::make_move_iterator(batch.end()));
      batch.clear();
      isolate_blocking(conn, who, std::move(first), retry);
      isolate_blocking(conn, who, std::move(second), retry);
      batch = std::move(retry);
      if (!batch.empty()) {
        expire(errc::retryable);
        wait_or_give_up(transient_delay);
        transient_delay = std::min(transient_delay * 2, k_max_transient_delay);
      }
    }
  }
}

void group_writer::isolate_blocking(pg_connection& conn, const std::string& who, std::vector<write_ptr> part,
                                    std::vector<write_ptr>& retry) {
  if (part.empty()) return;
  if (!conn.healthy() && !conn.connect_blocking()) {
    for (auto& w : part)
      retry.push_back(std::move(w));
    return;
  }
  auto r = commit_blocking(conn, part);
  if (r) return;
  if (is_transient(r.error())) {
    if (r.error() == errc::connection_lost) conn.close();
    for (auto& w : part)
      retry.push_back(std::move(w));
    return;
  }
  if (part.size() == 1) {
    log::error("storage", who + ": write refused (" + r.error().message() + "): " + conn.last_error());
    part.front()->fail(r.error());
    return;
  }
  const std::size_t half = part.size() / 2;
  std::vector<write_ptr> second(std::make_move_iterator(part.begin() + static_cast<std::ptrdiff_t>(half)),
                                std::make_move_iterator(part.end()));
  part.resize(half);
  isolate_blocking(conn, who, std::move(part), retry);
  isolate_blocking(conn, who, std::move(second), retry);
}

result<void> group_writer::commit_blocking(pg_connection& conn, std::vector<write_ptr>& batch) {
  // Group by kind, in each kind's transaction order; stable, so rows keep their submission order.
  std::vector<pending_write*> sorted;
  sorted.reserve(batch.size());
  for (auto& w : batch)
    sorted.push_back(w.get());
  std::stable_sort(sorted.begin(), sorted.end(), [](const pending_write* a, const pending_write* b) {
    return a->kind().order() < b->kind().order();
  });

  struct group {
    const write_kind* kind;
    std::span<pending_write* const> writes;
    std::size_t first_result;
    std::size_t results;
  };
  std::vector<group> groups;
  std::vector<pipeline_query> tx;
  tx.push_back({&sql::begin, {}});
  for (std::size_t i = 0; i < sorted.size();) {
    std::size_t j = i;
    while (j < sorted.size() && &sorted[j]->kind() == &sorted[i]->kind())
      ++j;
    const std::span<pending_write* const> writes(sorted.data() + i, j - i);
    const std::size_t first = tx.size();
    sorted[i]->kind().add_statements(tx, writes);
    groups.push_back({&sorted[i]->kind(), writes, first, tx.size() - first});
    i = j;
  }
  tx.push_back({&sql::commit, {}});

  auto results = conn.exec_pipeline_blocking(tx);
  if (!results) return results.error();
  // Durable: hand each write its outcome.
  const std::span<const pg_result> all(*results);
  for (const auto& g : groups)
    g.kind->complete(all.subspan(g.first_result, g.results), g.writes);
  batches.fetch_add(1, std::memory_order_relaxed);
  writes.fetch_add(batch.size(), std::memory_order_relaxed);
  batch.clear();
  return {};
}

}  // namespace keel::storage::detail
