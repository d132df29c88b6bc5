// The store's internals, shared by the files that implement keel::storage::store.
#pragma once

#include <boost/json/value.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "async_bridge.hpp"
#include "connection_pool.hpp"
#include "group_writer.hpp"
#include "keel/common/log.hpp"
#include "keel/storage/store.hpp"
#include "row_text.hpp"
#include "run_listener.hpp"
#include "step_details_cache.hpp"
#include "write_kinds.hpp"

namespace keel::storage::detail {

using std::chrono::steady_clock;

/// Microseconds since the Unix epoch.
std::int64_t to_micros(clock::time_point t);
/// A nullable time column.
std::optional<clock::time_point> opt_time(const PGresult* r, int row, int col);
/// A PostgreSQL array literal (text[], uuid[]); every element quoted, so any name is safe.
std::string text_array(const std::vector<std::string>& items);
/// The lease columns of a batched row.
row_text lease_row(const lease_token& l);
/// `[{"workflow": name, "version": n}, ...]`.
std::string versions_json(const std::vector<workflow_version>& workflows);
/// What a connection runs first: every session's pinned settings, the server's defaults aside.
connection_config config_for(const store_options& o);
/// config_for, for the group writer's connections.
connection_config writer_config_for(const store_options& o);
/// Why a queued run of `workflow` at `version` waits when no live worker has registered that pair
/// (run_record::unclaimable, run_summary::unclaimable).
std::string unclaimable_reason(std::string_view workflow, int version);
/// A name or key that reaches SQL: present, at most k_max_key_bytes, valid UTF-8.
bool valid_key(std::string_view s);
/// A run's own flow control, if it gives any (valid keys, limits within 1..10,000, a window within a year),
/// and its trace context (a valid W3C traceparent).
bool valid_run_options(const new_run& run);

/// Runs `body` in a transaction on `c` (a pool connection): committed if it returns a value, rolled back
/// otherwise.
template <class T>
result<T> in_transaction(pg_connection& c, const std::function<result<T>()>& body) {
  if (auto b = c.exec_script_blocking("BEGIN"); !b) return b.error();
  auto out = body();
  if (!out) {
    (void)c.exec_script_blocking("ROLLBACK");  // a lost connection rolls back by itself
    return out;
  }
  if (auto e = c.exec_script_blocking("COMMIT"); !e) return e.error();
  return out;
}

class store_impl {
 public:
  explicit store_impl(store_options o)
      : options_(std::move(o)),
        config_(config_for(options_)),
        pool_(config_, options_.pool_size, "pool"),
        writer_(writer_config_for(options_), options_.writers, options_.max_batch, [this] { committed(); }) {}

  /// After a writer transaction commits: it may have appended to the run log.
  void committed() {
    if (auto* cb = local_commit_.load(std::memory_order_acquire)) (*cb)();
    if (auto* l = live_listener_.load(std::memory_order_acquire)) l->announce_log();
  }

  /// Runs `fn` on a pool connection and resumes the caller with its result. `fn` returns the result, or
  /// errc::connection_lost to be retried on a fresh connection (only for statements safe to repeat).
  template <class T>
  boost::asio::awaitable<result<T>> on_pool(std::function<result<T>(pg_connection&)> fn,
                                            steady_clock::time_point deadline, bool urgent = false) {
    return await_completion<T>(
        [this, fn = std::move(fn), deadline, urgent](std::function<void(result<T>)> done) {
          auto shared_done = std::make_shared<std::function<void(result<T>)>>(std::move(done));
          pool_.submit(db_job{[fn, shared_done](pg_connection& c) {
                                auto r = fn(c);
                                if (!r && r.error() == errc::connection_lost) return job_outcome::reconnect;
                                (*shared_done)(std::move(r));
                                return job_outcome::done;
                              },
                              [shared_done](error_code ec) { (*shared_done)(result<T>(ec)); }, deadline,
                              urgent});
        },
        home_.load(std::memory_order_acquire));
  }

  steady_clock::time_point request_deadline() const { return steady_clock::now() + options_.request_timeout; }

  /// Queues a write of `kind` and resumes once its transaction committed (or it failed).
  template <class T>
  boost::asio::awaitable<result<T>> write(const write_kind& kind, std::string&& row,
                                          steady_clock::time_point deadline) {
    return await_completion<T>(
        [this, &kind, row = std::move(row), deadline](std::function<void(result<T>)> done) mutable {
          writer_.submit(std::make_unique<typed_write<T>>(kind, std::move(row), deadline, std::move(done)));
        },
        home_.load(std::memory_order_acquire));
  }

  /// A fenced write the engine makes for a run it holds: waits out database outages (no deadline).
  /// `row` is moved from before the first suspension; pass a named string (GCC 12, see store.hpp).
  boost::asio::awaitable<result<void>> write_fenced(const write_kind& kind, std::string&& row) {
    auto r = co_await write<applied>(kind, std::move(row), steady_clock::time_point::max());
    if (!r) co_return r.error();
    co_return result<void>{};
  }

  /// Checks a payload against the limits; logs what was wrong.
  result<void> check(const boost::json::value& v, std::string_view what, const run_id& id) const {
    std::string why;
    auto r = check_json(v, options_.limits, &why);
    if (!r) log::warn("storage", std::string(what) + " of run " + id + " refused: " + why);
    return r;
  }

  store_options options_;
  connection_config config_;
  /// Checkpointed steps' details for the run log's follower (store::follow_log). Before pool_: its jobs
  /// use it until the pool is gone.
  step_details_cache step_details_;
  connection_pool pool_;
  group_writer writer_;
  /// A claim from its submission to its commit, in seconds.
  histogram claim_seconds{k_seconds_bounds};
  std::unique_ptr<run_listener> listener_;
  /// listener_ and the local commit callback, for writer threads (set once, before or while they run).
  std::atomic<run_listener*> live_listener_{nullptr};
  std::unique_ptr<std::function<void()>> local_commit_holder_;
  std::atomic<std::function<void()>*> local_commit_{nullptr};
  /// See store::outlived_by.
  std::atomic<const boost::asio::execution_context*> home_{nullptr};
};

}  // namespace keel::storage::detail
