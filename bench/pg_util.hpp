// Small blocking libpq helpers for keel-bench's setup, verification and ceiling (never on a hot engine path).
#pragma once

#include <libpq-fe.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace keel::bench {

/// Owns a PGconn.
struct pg_conn_deleter {
  void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
using pg_conn = std::unique_ptr<PGconn, pg_conn_deleter>;

/// Owns a PGresult.
struct pg_result_deleter {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using pg_result = std::unique_ptr<PGresult, pg_result_deleter>;

/// Connects to `conninfo` (URL or key=value). Throws std::runtime_error with libpq's message on failure.
pg_conn connect_blocking(const std::string& conninfo);

/// Runs `sql` (no parameters; may hold several statements). Throws std::runtime_error unless it succeeds.
pg_result exec_blocking(PGconn* conn, const std::string& sql);

/// Runs one statement with text parameters. Throws std::runtime_error unless it succeeds.
pg_result exec_params_blocking(PGconn* conn, const std::string& sql, const std::vector<std::string>& params);

/// The text of a field ("" for NULL).
std::string field(const PGresult* r, int row, int col);

/// Throws std::runtime_error naming `what` with the result's (or connection's) error message.
[[noreturn]] void throw_pg_error(std::string_view what, PGconn* conn, const PGresult* r);

}  // namespace keel::bench
