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

/// After this many connection losses in a row on one batch, the batch is split (it may be what breaks it).
constexpr int k_losses_before_split = 3;

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
    int losses = 0;  // consecutive connection losses while committing this batch
    std::chrono::milliseconds transient_delay{100};
    // Callers with a deadline (enqueue) get `ec` once it passes; engine writes wait as long as it takes.
    auto expire = [&](error_code ec) {
      const auto now = std::chrono::steady_clock::now();
      std::erase_if(batch, [&](write_op& op) {
        if (now < op.deadline) return false;
        op.done(ec);
        return true;
      });
    };
    while (!batch.empty()) {
      if (!link.ensure_connected()) {
        expire(errc::connection_lost);
        if (!backoff_wait(mutex_, stop_cv_, stopping_, link.next_delay())) {
          for (auto& op : batch)
            op.done(errc::shut_down);
          batch.clear();
        }
        continue;
      }
      if (losses < k_losses_before_split || batch.size() == 1) {
        auto r = commit_blocking(conn, batch);
        if (r) {
          batch.clear();
          break;
        }
        if (r.error() == errc::connection_lost) {
          // Reconnect and retry: every statement is idempotent on retry.
          conn.close();
          ++losses;
          continue;
        }
        log::warn("storage", who + ": batch of " + std::to_string(batch.size()) +
                                 " failed, committing one write at a time: " + conn.last_error());
      } else {
        log::warn("storage", who + ": batch of " + std::to_string(batch.size()) + " lost the connection " +
                                 std::to_string(losses) + " times in a row; committing one write at a time");
      }
      losses = 0;
      // One at a time: a row the server rejects fails alone, and cannot sink its neighbours; anything else
      // (a timeout, a full disk, a read-only server, a lost connection) goes back for another try.
      std::vector<write_op> rest = std::move(batch);
      batch.clear();
      bool transient = false;
      for (auto& op : rest) {
        std::vector<write_op> single;
        single.push_back(std::move(op));
        auto one = commit_blocking(conn, single);
        if (one) continue;
        if (one.error() == errc::data_rejected) {
          log::error("storage", who + ": write rejected: " + conn.last_error());
          single.front().done(one.error());
          continue;
        }
        if (one.error() == errc::connection_lost) {
          conn.close();
        } else {
          transient = true;
        }
        batch.push_back(std::move(single.front()));
      }
      if (transient && !batch.empty()) {
        log::warn("storage", who + ": " + std::to_string(batch.size()) + " writes failed, retrying in " +
                                 std::to_string(transient_delay.count()) + " ms: " + conn.last_error());
        expire(errc::query_failed);
        if (!backoff_wait(mutex_, stop_cv_, stopping_, transient_delay)) {
          for (auto& op : batch)
            op.done(errc::shut_down);
          batch.clear();
        }
        transient_delay = std::min(transient_delay * 2, std::chrono::milliseconds{2000});
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
    queries.push_back({&sql::notify_runs, {}});
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
    // Keyed by (id, epoch, seq): two executions of one run in a batch are told apart by their epochs.
    auto key = [](std::string_view id, std::string_view epoch, std::string_view seq) {
      return std::string(id).append("/").append(epoch).append("/").append(seq);
    };
    std::unordered_set<std::string> ok;
    const PGresult* r = res[static_cast<std::size_t>(q)].get();
    for (int row = 0; row < PQntuples(r); ++row)
      ok.emplace(key(text_of(r, row, 0), text_of(r, row, 1), text_of(r, row, 2)));
    for (auto i : ops) {
      auto& op = batch[i];
      const auto* seq = op.row.if_contains("seq");
      if (ok.contains(key(op.row.at("id").as_string(), std::to_string(op.row.at("epoch").as_int64()),
                          seq ? std::to_string(seq->as_int64()) : "0"))) {
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
