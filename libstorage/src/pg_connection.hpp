// A blocking libpq connection owned by one storage thread: connect, prepared statements, pipelined batches.
#pragma once

#include <libpq-fe.h>

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "keel/common/result.hpp"
#include "keel/storage/error.hpp"

namespace keel::storage::detail {

/// Owns a PGresult.
struct pg_result_deleter {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using pg_result = std::unique_ptr<PGresult, pg_result_deleter>;

/// A named SQL statement; the name shows in logs and in pg_stat_statements.
struct statement {
  const char* name;
  const char* sql;
};

/// One query of a pipelined batch: a statement and its text parameters (nullopt = SQL NULL).
struct pipeline_query {
  const statement* stmt;
  std::vector<std::optional<std::string>> params;
};

/// How to open a store session: where, with which libpq defaults, and what every session pins.
struct connection_config {
  std::string conninfo;
  /// libpq keywords applied unless `conninfo` sets them (connect_timeout, tcp_user_timeout, keepalives).
  std::vector<std::pair<std::string, std::string>> defaults;
  /// Run on every new session before anything else: settings that durability and latency depend on.
  std::string session_sql;
};

/// A blocking connection. Only the thread that owns it may use it; never use one on an io_context thread.
class pg_connection {
 public:
  explicit pg_connection(connection_config config);
  ~pg_connection();
  pg_connection(const pg_connection&) = delete;
  pg_connection& operator=(const pg_connection&) = delete;

  /// (Re)connects. Errors: connection_lost.
  result<void> connect_blocking();
  [[nodiscard]] bool healthy() const noexcept;
  void close() noexcept;

  /// Runs a prepared statement (preparing it on first use on this connection). Errors map SQLSTATE via errc.
  result<pg_result> exec_blocking(const statement& stmt,
                                  const std::vector<std::optional<std::string>>& params);

  /// Runs plain SQL with no parameters (may hold several statements).
  result<void> exec_script_blocking(std::string_view sql);

  /// Sends every query in one pipeline followed by a single sync and returns their results in order.
  /// The first failing query fails the whole call (PostgreSQL aborts the rest up to the sync).
  result<std::vector<pg_result>> exec_pipeline_blocking(const std::vector<pipeline_query>& queries);

  /// Pipelining: queues `queries` and a sync without waiting for the results of what is already in flight,
  /// so the server starts on them as soon as it is done with the previous ones. Does not wait for the socket
  /// either: what the socket does not take now is sent by the next receive_pipeline(). Statements not yet
  /// prepared on this connection are prepared in the same pipeline. Errors: connection_lost (the connection
  /// is closed: everything in flight is in doubt).
  result<void> send_pipeline(const std::vector<pipeline_query>& queries);
  /// The results of the oldest pipeline in flight, up to its sync. Errors: the first failing query's (the
  /// server skipped the rest up to the sync); connection_lost (closed: everything in flight is in doubt).
  result<std::vector<pg_result>> receive_pipeline();
  /// Pipelines sent and not yet received.
  [[nodiscard]] std::size_t in_flight() const noexcept { return in_flight_.size(); }
  /// After a failed pipeline, with none in flight: rolls back the explicit transaction it left open and
  /// aborted, if any. Errors: connection_lost (closed).
  result<void> end_failed_transaction_blocking();

  /// The last error message from the server or libpq, for logs.
  [[nodiscard]] std::string last_error() const;

  PGconn* native() noexcept { return conn_; }

 private:
  result<void> prepare_blocking(const statement& stmt);
  /// Sends what libpq holds back (non-blocking sends), reading input meanwhile. Errors: connection_lost.
  result<void> flush_blocking();
  error_code error_from(const PGresult* r);

  connection_config config_;
  PGconn* conn_ = nullptr;
  std::unordered_set<std::string> prepared_;
  /// Per pipeline in flight, oldest first: the statements it prepares (their results come first).
  std::deque<std::vector<const char*>> in_flight_;
  std::string last_error_;
};

/// Text of a column, or empty view for NULL.
inline std::string_view get_text(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return {};
  return {PQgetvalue(r, row, col), static_cast<std::size_t>(PQgetlength(r, row, col))};
}

}  // namespace keel::storage::detail
