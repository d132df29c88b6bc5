#include "pg_util.hpp"

#include <stdexcept>

namespace keel::bench {
namespace {

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
    s.pop_back();
  return s;
}

}  // namespace

void throw_pg_error(std::string_view what, PGconn* conn, const PGresult* r) {
  std::string message = r != nullptr ? PQresultErrorMessage(r) : "";
  if (message.empty() && conn != nullptr) message = PQerrorMessage(conn);
  throw std::runtime_error(std::string(what) + ": " + trimmed(message));
}

pg_conn connect_blocking(const std::string& conninfo) {
  pg_conn c(PQconnectdb(conninfo.c_str()));
  if (!c) throw std::runtime_error("connect: out of memory");
  if (PQstatus(c.get()) != CONNECTION_OK) throw_pg_error("connect", c.get(), nullptr);
  // Quiet NOTICEs ("table does not exist, skipping"): stdout and stderr belong to the benchmark.
  PQsetNoticeProcessor(
      c.get(), [](void*, const char*) {}, nullptr);
  return c;
}

pg_result exec_blocking(PGconn* conn, const std::string& sql) {
  pg_result r(PQexec(conn, sql.c_str()));
  const auto st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) throw_pg_error(sql, conn, r.get());
  return r;
}

pg_result exec_params_blocking(PGconn* conn, const std::string& sql, const std::vector<std::string>& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params)
    values.push_back(p.c_str());
  pg_result r(PQexecParams(conn, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                           nullptr, nullptr, 0));
  const auto st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) throw_pg_error(sql, conn, r.get());
  return r;
}

std::string field(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return {};
  return {PQgetvalue(r, row, col), static_cast<std::size_t>(PQgetlength(r, row, col))};
}

}  // namespace keel::bench
