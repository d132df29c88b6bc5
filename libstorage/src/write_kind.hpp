// The group writer's extension point: a kind of write is its SQL, its parameters and its result type.
#pragma once

#include <chrono>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "keel/common/result.hpp"
#include "pg_connection.hpp"

namespace keel::storage::detail {

class write_kind;

/// One write waiting for a transaction: a row for its kind's statement and a way to complete the caller.
class pending_write {
 public:
  pending_write(const write_kind& kind, std::string row, std::chrono::steady_clock::time_point deadline)
      : kind_(&kind), row_(std::move(row)), deadline_(deadline) {}
  virtual ~pending_write() = default;
  pending_write(const pending_write&) = delete;
  pending_write& operator=(const pending_write&) = delete;

  [[nodiscard]] const write_kind& kind() const noexcept { return *kind_; }
  /// One JSON object, serialized by the caller's thread: an element of the kind's `$1` jsonb array.
  [[nodiscard]] const std::string& row() const noexcept { return row_; }
  /// Callers with a deadline (enqueue) fail with connection_lost once it passes; engine writes have none.
  [[nodiscard]] std::chrono::steady_clock::time_point deadline() const noexcept { return deadline_; }

  /// Completes the caller with an error. Exactly one of fail() or the kind's success completion is called.
  virtual void fail(error_code ec) = 0;

 private:
  const write_kind* kind_;
  std::string row_;
  std::chrono::steady_clock::time_point deadline_;
};

/// A pending write whose caller expects a `T`.
template <class T>
class typed_write : public pending_write {
 public:
  typed_write(const write_kind& kind, std::string row, std::chrono::steady_clock::time_point deadline,
              std::function<void(result<T>)> done)
      : pending_write(kind, std::move(row), deadline), done_(std::move(done)) {}
  void fail(error_code ec) override { done_(ec); }
  void succeed(T value) { done_(std::move(value)); }

 private:
  std::function<void(result<T>)> done_;
};

using write_ptr = std::unique_ptr<pending_write>;

/// A kind of write. The writer groups a batch by kind and, in one transaction, runs each kind's statements
/// in `order()`; after COMMIT each kind hands its writes their outcomes. Every statement must be idempotent
/// when the whole transaction is retried (a COMMIT whose acknowledgement was lost is retried).
///
/// Adding a kind: derive from this (or from fenced_kind when each write is one fenced row), declare its
/// statement in statements.cpp, and give the store a function that serializes the row and awaits
/// `typed_write<Result>`. Nothing in the writer changes.
class write_kind {
 public:
  virtual ~write_kind() = default;
  /// Kinds with a smaller order run first in the transaction (enqueues before claims, so that a claim in
  /// the same batch can take the runs just enqueued).
  [[nodiscard]] virtual int order() const noexcept = 0;
  /// Appends this kind's statements for `writes` (all of this kind, in batch order) to the transaction.
  /// `again`: an earlier attempt of some of these writes may have committed (its acknowledgement was lost,
  /// or it failed in a way that leaves that open), so the statements must accept their own earlier effects.
  virtual void add_statements(std::vector<pipeline_query>& tx, std::span<pending_write* const> writes,
                              bool again) const = 0;
  /// After COMMIT: completes every write of `writes` from `results`, the results of the statements
  /// add_statements appended (same count, same order).
  virtual void complete(std::span<const pg_result> results, std::span<pending_write* const> writes) const = 0;
};

/// `[row,row,...]`: the `$1` of a jsonb_to_recordset statement for `writes`.
std::string rows_array(std::span<pending_write* const> writes);

/// A kind whose writes are one fenced row each, acknowledged by the `ord` (1-based position in `$1`) that its
/// statement returns in its first column for every row it applied; a row not returned was fenced.
/// `again` is the statement for a retry, when the first one is not idempotent by itself.
class fenced_kind : public write_kind {
 public:
  fenced_kind(const statement& stmt, int order) : fenced_kind(stmt, stmt, order) {}
  fenced_kind(const statement& first, const statement& again, int order)
      : first_(first), again_(again), order_(order) {}
  [[nodiscard]] int order() const noexcept override { return order_; }
  void add_statements(std::vector<pipeline_query>& tx, std::span<pending_write* const> writes,
                      bool again) const override;
  void complete(std::span<const pg_result> results, std::span<pending_write* const> writes) const override;

 private:
  const statement& first_;
  const statement& again_;
  int order_;
};

}  // namespace keel::storage::detail
