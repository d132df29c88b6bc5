#include "pg_connection.hpp"

#include <poll.h>

#include <cerrno>
#include <optional>

#include "keel/common/log.hpp"

namespace keel::storage::detail {
namespace {

std::vector<const char*> param_pointers(const std::vector<std::optional<std::string>>& params) {
  std::vector<const char*> out;
  out.reserve(params.size());
  for (const auto& p : params)
    out.push_back(p ? p->c_str() : nullptr);
  return out;
}

}  // namespace

pg_connection::pg_connection(connection_config config) : config_(std::move(config)) {}

pg_connection::~pg_connection() {
  close();
}

void pg_connection::close() noexcept {
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = nullptr;
  prepared_.clear();
  in_flight_.clear();
}

bool pg_connection::healthy() const noexcept {
  return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK;
}

std::string pg_connection::last_error() const {
  return last_error_;
}

result<void> pg_connection::connect_blocking() {
  close();
  // The defaults come first and the connection string last, expanded (expand_dbname): what the string sets
  // overrides a default.
  std::vector<const char*> keywords, values;
  for (const auto& [k, v] : config_.defaults) {
    keywords.push_back(k.c_str());
    values.push_back(v.c_str());
  }
  keywords.push_back("dbname");
  values.push_back(config_.conninfo.c_str());
  keywords.push_back(nullptr);
  values.push_back(nullptr);
  conn_ = PQconnectdbParams(keywords.data(), values.data(), 1);
  if (PQstatus(conn_) != CONNECTION_OK) {
    last_error_ = PQerrorMessage(conn_);
    close();
    return errc::connection_lost;
  }
  // Quiet NOTICEs (e.g. "relation already exists, skipping") that would otherwise go to stderr.
  PQsetNoticeProcessor(
      conn_, [](void*, const char*) {}, nullptr);
  // Every statement Keel runs reaches keel.runs and keel.steps by key over a bounded batch (ids, or the
  // claim index in order), so an index plan is always the right one. Under load the statistics of keel.runs
  // go stale within seconds (status and owner churn), and a stale estimate flips the batched joins to
  // sequential scans of the whole table (measured: the noop3 drain 3x slower once keel.runs had been
  // analyzed). Pin the access paths on the store's own sessions; nothing else runs on them. Hash joins stay
  // allowed: they only ever pair a batch with a batch.
  std::string setup = "SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_mergejoin = off;";
  setup += config_.session_sql;
  pg_result r{PQexec(conn_, setup.c_str())};
  if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
    last_error_ = PQerrorMessage(conn_);
    close();
    return errc::connection_lost;
  }
  return {};
}

error_code pg_connection::error_from(const PGresult* r) {
  last_error_ = r != nullptr ? PQresultErrorMessage(r) : PQerrorMessage(conn_);
  while (!last_error_.empty() && (last_error_.back() == '\n' || last_error_.back() == ' '))
    last_error_.pop_back();
  if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) return errc::connection_lost;
  const char* state = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  if (state == nullptr) return errc::connection_lost;
  return errc_from_sqlstate(state);
}

result<void> pg_connection::prepare_blocking(const statement& stmt) {
  if (prepared_.contains(stmt.name)) return {};
  pg_result r{PQprepare(conn_, stmt.name, stmt.sql, 0, nullptr)};
  if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
    auto ec = error_from(r.get());
    log::error("storage", std::string("prepare ") + stmt.name + " failed: " + last_error_);
    return ec;
  }
  prepared_.insert(stmt.name);
  return {};
}

result<pg_result> pg_connection::exec_blocking(const statement& stmt,
                                               const std::vector<std::optional<std::string>>& params) {
  if (!healthy()) return errc::connection_lost;
  if (auto p = prepare_blocking(stmt); !p) return p.error();
  auto ptrs = param_pointers(params);
  pg_result r{
      PQexecPrepared(conn_, stmt.name, static_cast<int>(ptrs.size()), ptrs.data(), nullptr, nullptr, 0)};
  const auto st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return error_from(r.get());
  return r;
}

result<void> pg_connection::exec_script_blocking(std::string_view sql) {
  if (!healthy()) return errc::connection_lost;
  std::string text(sql);
  pg_result r{PQexec(conn_, text.c_str())};
  const auto st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return error_from(r.get());
  return {};
}

result<std::vector<pg_result>> pg_connection::exec_pipeline_blocking(
    const std::vector<pipeline_query>& queries) {
  if (in_flight() != 0) return errc::invalid_argument;  // a caller bug: results would interleave
  if (auto sent = send_pipeline(queries); !sent) return sent.error();
  auto results = receive_pipeline();
  if (!results) {
    if (results.error() == errc::connection_lost) return results.error();
    if (auto ended = end_failed_transaction_blocking(); !ended) return ended.error();
  }
  return results;
}

result<void> pg_connection::send_pipeline(const std::vector<pipeline_query>& queries) {
  if (!healthy()) return errc::connection_lost;
  auto lost = [&] {
    // The connection is in an unknown pipeline state: drop it; the caller reconnects.
    last_error_ = PQerrorMessage(conn_);
    close();
    return errc::connection_lost;
  };
  // Non-blocking sends: a large batch queued behind one the server is still executing must not hold the
  // caller (the writer completes the acknowledged writes meanwhile); what is left goes out while the next
  // receive_pipeline waits. PQexec-style calls on this connection still block as before.
  if (PQisnonblocking(conn_) == 0 && PQsetnonblocking(conn_, 1) != 0) return lost();
  if (PQpipelineStatus(conn_) == PQ_PIPELINE_OFF && PQenterPipelineMode(conn_) != 1) return lost();
  // A statement's first use prepares it in the same pipeline; its result precedes the queries'.
  std::vector<const char*> prepares;
  for (const auto& q : queries) {
    if (prepared_.contains(q.stmt->name)) continue;
    if (PQsendPrepare(conn_, q.stmt->name, q.stmt->sql, 0, nullptr) != 1) return lost();
    prepared_.insert(q.stmt->name);
    prepares.push_back(q.stmt->name);
  }
  for (const auto& q : queries) {
    auto ptrs = param_pointers(q.params);
    if (PQsendQueryPrepared(conn_, q.stmt->name, static_cast<int>(ptrs.size()), ptrs.data(), nullptr, nullptr,
                            0) != 1) {
      return lost();
    }
  }
  if (PQpipelineSync(conn_) != 1) return lost();
  in_flight_.push_back(std::move(prepares));
  return {};
}

result<void> pg_connection::flush_blocking() {
  // Waits for both directions: the server may be blocked sending us results of an earlier pipeline while
  // we send it the next one, so input is read into libpq's buffer while output waits.
  for (;;) {
    const int pending = PQflush(conn_);
    if (pending == 0) return {};
    if (pending < 0) break;
    pollfd p{PQsocket(conn_), POLLIN | POLLOUT, 0};
    if (::poll(&p, 1, -1) < 0 && errno != EINTR) break;
    if ((p.revents & POLLIN) != 0 && PQconsumeInput(conn_) != 1) break;
  }
  last_error_ = PQerrorMessage(conn_);
  close();
  return errc::connection_lost;
}

result<std::vector<pg_result>> pg_connection::receive_pipeline() {
  if (in_flight_.empty()) return errc::invalid_argument;
  if (auto flushed = flush_blocking(); !flushed) return flushed.error();
  const std::vector<const char*> prepares = std::move(in_flight_.front());
  in_flight_.pop_front();
  std::size_t prepare_results = 0;
  std::vector<pg_result> results;
  std::optional<error_code> failure;
  for (;;) {
    if (!healthy()) {
      failure = errc::connection_lost;
      break;
    }
    pg_result r{PQgetResult(conn_)};
    if (!r) continue;  // NULL ends one query's results
    const auto st = PQresultStatus(r.get());
    if (st == PGRES_PIPELINE_SYNC) break;
    if (prepare_results < prepares.size()) {
      const char* name = prepares[prepare_results++];
      if (st != PGRES_COMMAND_OK) {
        // Not prepared (refused, or skipped after an earlier failure): prepared again on its next use.
        prepared_.erase(name);
        if (st != PGRES_PIPELINE_ABORTED && !failure) {
          failure = error_from(r.get());
          log::error("storage", std::string("prepare ") + name + " failed: " + last_error_);
        }
      }
      continue;
    }
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
      results.push_back(std::move(r));
      continue;
    }
    if (st == PGRES_PIPELINE_ABORTED) continue;
    // A failing query: remember the first error, keep reading to the sync.
    if (!failure) {
      failure = error_from(r.get());
      if (*failure == errc::connection_lost) break;
    }
  }
  if (failure && *failure == errc::connection_lost) {
    close();
    return errc::connection_lost;
  }
  if (in_flight_.empty() && PQexitPipelineMode(conn_) != 1) {
    last_error_ = PQerrorMessage(conn_);
    close();
    return errc::connection_lost;
  }
  if (failure) return *failure;
  return results;
}

result<void> pg_connection::end_failed_transaction_blocking() {
  if (!healthy() || in_flight() != 0) return errc::connection_lost;
  // A failed statement leaves an explicit transaction (BEGIN ... COMMIT in the pipeline) open and aborted.
  if (PQtransactionStatus(conn_) != PQTRANS_IDLE) {
    pg_result rb{PQexec(conn_, "ROLLBACK")};
    if (!rb || PQresultStatus(rb.get()) != PGRES_COMMAND_OK) {
      close();
      return errc::connection_lost;
    }
  }
  return {};
}

}  // namespace keel::storage::detail
