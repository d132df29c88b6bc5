#include "time_skip.hpp"

#include <libpq-fe.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

namespace keel::testing::detail {
namespace {

// $1: the skip in microseconds. Each statement moves the times that are still ahead (> now()) and leaves
// the past alone, so the order of what is already due does not change. Runs that are running keep their
// leases (due_at) in real time; only the grace of a cancel asked of them moves.
constexpr const char* k_statements[] = {
    // Sleeping and waiting runs come due at their soonest timer; queued ones at their run_at or debounce
    // window. 'infinity' marks runs parked for a concurrency key, a throttle or a fair turn: not timers.
    R"sql(UPDATE keel.runs SET due_at = due_at - $1::bigint * interval '1 microsecond'
          WHERE status IN ('queued', 'sleeping', 'waiting') AND due_at > now() AND due_at < 'infinity')sql",
    R"sql(UPDATE keel.runs SET cancel_deadline = cancel_deadline - $1::bigint * interval '1 microsecond'
          WHERE cancel_deadline > now() AND status NOT IN ('completed', 'failed', 'cancelled'))sql",
    // A wait's deadlines as the database keeps them (a resumed wait keeps its first): the wait's own, and
    // each alternative's of ctx.any / ctx.all and of parallel branches.
    R"sql(UPDATE keel.runs SET waiting_for = waiting_for
            || CASE WHEN (waiting_for->>'until')::bigint > keel.micros(now())
                    THEN jsonb_build_object('until', (waiting_for->>'until')::bigint - $1::bigint)
                    ELSE '{}'::jsonb END
            || CASE WHEN jsonb_typeof(waiting_for->'arms') = 'array' THEN jsonb_build_object('arms', (
                      SELECT jsonb_agg(CASE WHEN (a->>'until')::bigint > keel.micros(now())
                                            THEN a || jsonb_build_object('until', (a->>'until')::bigint - $1::bigint)
                                            ELSE a END ORDER BY n)
                      FROM jsonb_array_elements(waiting_for->'arms') WITH ORDINALITY e(a, n)))
                    ELSE '{}'::jsonb END
          WHERE status IN ('sleeping', 'waiting') AND jsonb_typeof(waiting_for) = 'object')sql",
    // ctx.now() records (keel.now, a bare number): the times relative deadlines are counted from when a
    // wait is replayed (ctx.all's timers, waits in parallel branches). All of a waiting run's recorded
    // times move, as if everything it did had happened `by` earlier.
    R"sql(UPDATE keel.steps s SET output = to_jsonb(s.output::text::bigint - $1::bigint)
          FROM keel.runs r
          WHERE r.id = s.run_id AND r.status IN ('queued', 'sleeping', 'waiting') AND s.name = 'keel.now'
            AND jsonb_typeof(s.output) = 'number')sql",
    // Engine records (keel.*) hold the times later executions replay: a sleep's wake time (recorded before
    // it parks; the replay compares it with the clock) and a hook's expiry (hook::expires_at).
    R"sql(UPDATE keel.steps s SET output = s.output
            || CASE WHEN (s.output->>'wake_at')::bigint > keel.micros(now())
                    THEN jsonb_build_object('wake_at', (s.output->>'wake_at')::bigint - $1::bigint)
                    ELSE '{}'::jsonb END
            || CASE WHEN (s.output->>'expires_at')::bigint > keel.micros(now())
                    THEN jsonb_build_object('expires_at', (s.output->>'expires_at')::bigint - $1::bigint)
                    ELSE '{}'::jsonb END
          FROM keel.runs r
          WHERE r.id = s.run_id AND r.status IN ('queued', 'sleeping', 'waiting') AND s.name LIKE 'keel.%'
            AND jsonb_typeof(s.output) = 'object'
            AND (jsonb_typeof(s.output->'wake_at') = 'number' OR jsonb_typeof(s.output->'expires_at') = 'number'))sql",
    R"sql(UPDATE keel.hooks SET expires_at = expires_at - $1::bigint * interval '1 microsecond'
          WHERE status = 'open' AND expires_at > now())sql",
    R"sql(UPDATE keel.throttle_slots SET free_at = free_at - $1::bigint * interval '1 microsecond'
          WHERE free_at > now())sql",
    // Every worker's claim loop looks for due work now rather than at its next poll (delivered at commit).
    "SELECT pg_notify('keel_runs', '')",
};

struct conn_deleter {
  void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
struct result_deleter {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};

void exec(PGconn* c, const char* sql, const char* param) {
  const char* params[] = {param};
  std::unique_ptr<PGresult, result_deleter> r(PQexecParams(
      c, sql, param != nullptr ? 1 : 0, nullptr, param != nullptr ? params : nullptr, nullptr, nullptr, 0));
  const auto status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    throw std::runtime_error(std::string("keel::testing: advancing time failed: ") + PQerrorMessage(c));
  }
}

}  // namespace

void advance_timers_blocking(const std::string& conninfo, std::chrono::microseconds by) {
  if (by.count() < 0) throw std::invalid_argument("keel::testing: time only moves forward");
  std::unique_ptr<PGconn, conn_deleter> conn(PQconnectdb(conninfo.c_str()));
  if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
    throw std::runtime_error("keel::testing: cannot connect to advance time: " +
                             std::string(conn ? PQerrorMessage(conn.get()) : "out of memory"));
  }
  const std::string micros = std::to_string(by.count());
  exec(conn.get(), "BEGIN", nullptr);
  for (const char* sql : k_statements)
    exec(conn.get(), sql,
         std::string_view(sql).find("$1") != std::string_view::npos ? micros.c_str() : nullptr);
  exec(conn.get(), "COMMIT", nullptr);
}

long wait_until_settled_blocking(const std::string& conninfo, std::chrono::milliseconds timeout) {
  std::unique_ptr<PGconn, conn_deleter> conn(PQconnectdb(conninfo.c_str()));
  if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
    throw std::runtime_error("keel::testing: cannot connect: " +
                             std::string(conn ? PQerrorMessage(conn.get()) : "out of memory"));
  }
  // Runs a worker holds, and queued runs it would take now: due ones, and those in the fair queue (which
  // sit at due_at 'infinity' like runs parked for a concurrency key or a throttle, which are not due).
  // Sleeping and waiting runs whose time came are due too (the claim takes them), until a worker has taken
  // them to their next wait. Runs no live worker can run (an unregistered version) would never settle:
  // they are not counted.
  constexpr const char* k_busy = R"sql(
SELECT count(*) FROM keel.runs r
WHERE (r.status = 'running'
       OR (r.status IN ('queued', 'sleeping', 'waiting') AND r.due_at <= now())
       OR (r.status = 'queued' AND r.fair_vtime IS NOT NULL))
  AND EXISTS (SELECT 1 FROM keel.workers w
              WHERE w.expires_at > now()
                AND w.workflows @> jsonb_build_array(jsonb_build_object('workflow', r.workflow,
                                                                        'version', r.version))))sql";
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::unique_ptr<PGresult, result_deleter> r(PQexec(conn.get(), k_busy));
    if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK)
      throw std::runtime_error("keel::testing: cannot read the runs: " +
                               std::string(PQerrorMessage(conn.get())));
    const long busy = std::stol(PQgetvalue(r.get(), 0, 0));
    if (busy == 0 || std::chrono::steady_clock::now() >= until) return busy;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace keel::testing::detail
