// Counting what the engine is doing, for /metrics and a dashboard: the unfinished runs, and the overview of
// GET /v1/stats. Every count is bounded in cost by an index: none reads the table's history.
#include <algorithm>
#include <string>

#include "keel/storage/store.hpp"
#include "pg_connection.hpp"
#include "row_text.hpp"
#include "statement_parts.hpp"
#include "statements.hpp"
#include "step_rows.hpp"
#include "store_impl.hpp"

namespace keel::storage {

namespace detail::sql {
namespace {

// Through runs_claimable, whose predicate it spells out (005_waits.sql): its cost is the unfinished runs'.
const statement count_unfinished_runs{
    "keel_count_unfinished_runs",
    "SELECT workflow, status, count(*), count(*) FILTER (WHERE due_at <= now() OR fair_vtime IS NOT NULL) "
    "FROM keel.runs "
    "WHERE status IN ('queued', 'running', 'sleeping', 'waiting') GROUP BY workflow, status "
    "ORDER BY workflow, status"};

// Failed and cancelled runs through runs_resting_by_status (018_run_listing.sql, its predicate spelled out),
// and the hooks that take a resume now through hooks_open_by_expiry (from now() on), each counted up to $1
// rows: their cost stays bounded when millions have piled up. With the database's clock.
const std::string count_at_rest_sql = R"sql(
SELECT (extract(epoch FROM now()) * 1e6)::bigint,
       (SELECT count(*) FROM (
          SELECT 1 FROM keel.runs
          WHERE status = 'failed' AND status IN ('failed', 'cancelled', 'waiting', 'sleeping')
          LIMIT $1::int) f),
       (SELECT count(*) FROM (
          SELECT 1 FROM keel.runs
          WHERE status = 'cancelled' AND status IN ('failed', 'cancelled', 'waiting', 'sleeping')
          LIMIT $1::int) c),
       (SELECT count(*) FROM (
          SELECT 1 FROM keel.hooks h )sql" +
                                      live_run_of("h", "1") + R"sql(
          WHERE h.webhook IS NULL AND )sql" +
                                      hook_is_open("h") +
                                      R"sql(
          LIMIT $1::int) h))sql";

}  // namespace

const statement count_at_rest{"keel_count_at_rest", count_at_rest_sql.c_str()};

// The last log row written a minute ago or earlier: a backward scan of the primary key that stops there,
// so it reads the last minute's rows (and one more), not the table. (Positions follow transaction ids and
// `at` the append's clock: close to the same order, not exactly; a transaction that ran for long may put
// a row of the last minute below it, left out of the count.)
const statement steps_log_boundary{"keel_steps_log_boundary",
                                   "SELECT pos FROM keel.run_log WHERE at <= now() - interval '60 s' "
                                   "ORDER BY pos DESC LIMIT 1"};

// The step_completed events of the log rows after that one ($1) written in the last minute. The position
// is a parameter, not a subquery, so that the planner sees how near the end it is and walks the primary
// key from there.
const statement count_steps_since{
    "keel_count_steps_since",
    "SELECT coalesce(sum(cardinality(array_positions(kinds, 'step_completed'))), 0) FROM keel.run_log "
    "WHERE pos > $1::bigint AND at > now() - interval '60 s'"};

}  // namespace detail::sql

namespace {

result<std::vector<run_count>> unfinished_runs(detail::pg_connection& c) {
  auto r = c.exec_blocking(detail::sql::count_unfinished_runs, {});
  if (!r) return r.error();
  std::vector<run_count> out;
  for (int row = 0; row < PQntuples(r->get()); ++row) {
    run_count n;
    n.workflow = std::string(detail::get_text(r->get(), row, 0));
    n.status = run_status_from(detail::get_text(r->get(), row, 1)).value_or(run_status::queued);
    n.runs = detail::to_int64(detail::get_text(r->get(), row, 2));
    n.due = detail::to_int64(detail::get_text(r->get(), row, 3));
    out.push_back(std::move(n));
  }
  return out;
}

capped_count capped(std::string_view counted, std::int64_t cap) {
  const auto n = detail::to_int64(counted);
  return {std::min(n, cap), n > cap};
}

}  // namespace

boost::asio::awaitable<result<std::vector<run_count>>> store::count_unfinished_runs() {
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<std::vector<run_count>>(detail::pg_connection&)> count = unfinished_runs;
  co_return co_await impl_->on_pool<std::vector<run_count>>(std::move(count), impl_->request_deadline());
}

boost::asio::awaitable<result<run_overview>> store::overview(std::int64_t cap,
                                                             std::chrono::milliseconds within) {
  if (cap < 1 || cap > 1'000'000) co_return errc::invalid_argument;
  // Named first, as above. Read-only statements: safe to repeat on a fresh connection.
  std::function<result<run_overview>(detail::pg_connection&)> count =
      [cap](detail::pg_connection& c) -> result<run_overview> {
    run_overview out;
    auto unfinished = unfinished_runs(c);
    if (!unfinished) return unfinished.error();
    out.unfinished = std::move(*unfinished);
    // One past the cap: whether there were more.
    auto rest = c.exec_blocking(detail::sql::count_at_rest, {std::to_string(cap + 1)});
    if (!rest) return rest.error();
    out.at = detail::from_micros(detail::get_text(rest->get(), 0, 0));
    out.failed = capped(detail::get_text(rest->get(), 0, 1), cap);
    out.cancelled = capped(detail::get_text(rest->get(), 0, 2), cap);
    out.open_hooks = capped(detail::get_text(rest->get(), 0, 3), cap);
    auto boundary = c.exec_blocking(detail::sql::steps_log_boundary, {});
    if (!boundary) return boundary.error();
    // No row a minute old: every row is younger (or the log is empty).
    const std::string from =
        PQntuples(boundary->get()) == 0 ? "0" : std::string(detail::get_text(boundary->get(), 0, 0));
    auto steps = c.exec_blocking(detail::sql::count_steps_since, {from});
    if (!steps) return steps.error();
    out.steps_last_minute = detail::to_int64(detail::get_text(steps->get(), 0, 0));
    return out;
  };
  co_return co_await impl_->on_pool<run_overview>(std::move(count),
                                                  std::chrono::steady_clock::now() + within);
}

}  // namespace keel::storage
