#include "group_writer.hpp"

#include <boost/json/array.hpp>
#include <boost/json/serialize.hpp>
#include <unordered_map>
#include <unordered_set>

#include "connection_pool.hpp"
#include "keel/common/log.hpp"
#include "statements.hpp"

namespace keel::storage::detail {
namespace {

std::string_view text_of(const PGresult* r, int row, int col) {
  return get_text(r, row, col);
}

}  // namespace

group_writer::group_writer(std::string conninfo, std::size_t threads, std::size_t max_batch)
    : conninfo_(std::move(conninfo)), max_batch_(max_batch == 0 ? 1 : max_batch) {
  threads_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i)
    threads_.emplace_back([this, i] { thread_main(i); });
}

group_writer::~group_writer() {
  stop();
}

void group_writer::submit(write_op op) {
  {
    std::lock_guard lock(mutex_);
    if (!stopping_) {
      queue_.push_back(std::move(op));
      cv_.notify_one();
      return;
    }
  }
  op.done(errc::shut_down);
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

void group_writer::thread_main(std::size_t index) {
  const std::string who = "writer#" + std::to_string(index);
  pg_connection conn(conninfo_);
  reconnector link(conn, who);
  std::vector<write_op> batch;
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
    while (!batch.empty()) {
      if (!link.ensure_connected()) {
        // Callers with a deadline (enqueue) get an error; engine writes wait for the database.
        const auto now = std::chrono::steady_clock::now();
        std::erase_if(batch, [&](write_op& op) {
          if (now < op.deadline) return false;
          op.done(errc::connection_lost);
          return true;
        });
        if (!backoff_wait(mutex_, stop_cv_, stopping_, link.next_delay())) {
          for (auto& op : batch)
            op.done(errc::shut_down);
          batch.clear();
          break;
        }
        continue;
      }
      auto r = commit_blocking(conn, batch);
      if (r) {
        batch.clear();
        break;
      }
      if (r.error() == errc::connection_lost) {
        conn.close();
        continue;  // reconnect and retry: every statement is idempotent on retry
      }
      // A row the server rejects must not sink its neighbours: commit each write alone.
      log::warn("storage", who + ": batch of " + std::to_string(batch.size()) +
                               " failed, retrying one by one: " + conn.last_error());
      std::vector<write_op> rest = std::move(batch);
      batch.clear();
      for (auto& op : rest) {
        std::vector<write_op> single;
        single.push_back(std::move(op));
        auto one = commit_blocking(conn, single);
        if (one) continue;
        if (one.error() == errc::connection_lost) {
          // This write and the ones after it go back to the outer loop, which reconnects and retries.
          conn.close();
          batch.push_back(std::move(single.front()));
          continue;
        }
        log::error("storage", who + ": write rejected: " + conn.last_error());
        single.front().done(one.error());
      }
    }
  }
}

result<void> group_writer::commit_blocking(pg_connection& conn, std::vector<write_op>& batch) {
  boost::json::array enqueues, checkpoints, finishes;
  std::vector<std::size_t> enqueue_ops, checkpoint_ops, finish_ops;
  bool any_key = false;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    auto& op = batch[i];
    switch (op.k) {
      case write_op::kind::enqueue: {
        auto row = op.row;
        row["ord"] = static_cast<std::int64_t>(enqueue_ops.size());
        if (!row["key"].is_null()) any_key = true;
        enqueues.push_back(std::move(row));
        enqueue_ops.push_back(i);
        break;
      }
      case write_op::kind::checkpoint:
        checkpoints.push_back(op.row);
        checkpoint_ops.push_back(i);
        break;
      case write_op::kind::finish:
        finishes.push_back(op.row);
        finish_ops.push_back(i);
        break;
    }
  }

  std::vector<pipeline_query> queries;
  queries.push_back({&sql::begin, {}});
  int q_insert = -1, q_resolve = -1, q_checkpoint = -1, q_finish = -1;
  if (!enqueues.empty()) {
    auto rows = boost::json::serialize(enqueues);
    q_insert = static_cast<int>(queries.size());
    queries.push_back({&sql::enqueue_insert, {rows}});
    if (any_key) {
      q_resolve = static_cast<int>(queries.size());
      queries.push_back({&sql::enqueue_resolve, {std::move(rows)}});
    }
  }
  if (!checkpoints.empty()) {
    q_checkpoint = static_cast<int>(queries.size());
    queries.push_back({&sql::checkpoint_steps, {boost::json::serialize(checkpoints)}});
  }
  if (!finishes.empty()) {
    q_finish = static_cast<int>(queries.size());
    queries.push_back({&sql::finish_runs, {boost::json::serialize(finishes)}});
  }
  queries.push_back({&sql::commit, {}});

  auto results = conn.exec_pipeline_blocking(queries);
  if (!results) return results.error();
  auto& res = *results;

  // Durable: hand each write its outcome.
  if (q_insert >= 0) {
    std::vector<std::optional<enqueue_outcome>> resolved(enqueue_ops.size());
    if (q_resolve >= 0) {
      const PGresult* rr = res[static_cast<std::size_t>(q_resolve)].get();
      for (int row = 0; row < PQntuples(rr); ++row) {
        const auto ord = static_cast<std::size_t>(std::stoll(std::string(text_of(rr, row, 0))));
        std::string existing(text_of(rr, row, 1));
        const bool same = text_of(rr, row, 2) == "t";
        const auto& requested = batch[enqueue_ops[ord]].row.at("id").as_string();
        // The id is chosen by the client, so a run holding the key under our id is ours (inserted now, or
        // by an earlier attempt of this batch that committed before its connection broke).
        const bool ours = existing == std::string_view(requested);
        resolved[ord] = enqueue_outcome{existing, ours, !ours && !same};
      }
    }
    for (std::size_t j = 0; j < enqueue_ops.size(); ++j) {
      auto& op = batch[enqueue_ops[j]];
      if (resolved[j]) {
        op.done(*resolved[j]);
      } else {
        // No key: the id is ours, inserted now or by an earlier attempt of this same batch.
        op.done(enqueue_outcome{std::string(op.row.at("id").as_string()), true, false});
      }
    }
  }
  auto complete_fenced = [&](int q, const std::vector<std::size_t>& ops) {
    if (q < 0) return;
    std::unordered_set<std::string> ok;
    const PGresult* r = res[static_cast<std::size_t>(q)].get();
    for (int row = 0; row < PQntuples(r); ++row)
      ok.emplace(text_of(r, row, 0));
    for (auto i : ops) {
      auto& op = batch[i];
      if (ok.contains(std::string(op.row.at("id").as_string()))) {
        op.done(enqueue_outcome{});
      } else {
        op.done(errc::fenced);
      }
    }
  };
  complete_fenced(q_checkpoint, checkpoint_ops);
  complete_fenced(q_finish, finish_ops);
  batches.fetch_add(1, std::memory_order_relaxed);
  writes.fetch_add(batch.size(), std::memory_order_relaxed);
  return {};
}

}  // namespace keel::storage::detail
