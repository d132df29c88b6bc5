// Listing runs newest first, a page at a time (keyset pagination on the UUIDv7 id; 018_run_listing.sql).
#include <algorithm>
#include <set>
#include <utility>

#include "keel/storage/json_limits.hpp"
#include "keel/storage/store.hpp"
#include "pg_connection.hpp"
#include "row_text.hpp"
#include "statements.hpp"
#include "step_rows.hpp"
#include "store_impl.hpp"

namespace keel::storage {

namespace detail::sql {
namespace {

// $1: the cursor (the last id of the previous page; NULL: from the newest), $2: the page size, then the
// filters. One statement per filter set, each with a plan that walks its index. (ORDER BY names r.id:
// a bare `id` would be the text column of the select list, sorted in full.)
#define KEEL_RUN_SUMMARY                                                                             \
  "SELECT id::text, workflow, version, status, error::text, idempotency_key, priority, "             \
  "(extract(epoch FROM created_at) * 1e6)::bigint, (extract(epoch FROM started_at) * 1e6)::bigint, " \
  "(extract(epoch FROM finished_at) * 1e6)::bigint, parent_id::text, "                               \
  "CASE WHEN status IN ('sleeping', 'waiting') THEN waiting_for::text END FROM keel.runs r "

#define KEEL_BEFORE_CURSOR "id < coalesce($1::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff') "

const statement list_runs{"keel_list_runs",
                          KEEL_RUN_SUMMARY "WHERE " KEEL_BEFORE_CURSOR "ORDER BY r.id DESC LIMIT $2::int"};
const statement list_runs_of_workflow{"keel_list_runs_of_workflow",
                                      KEEL_RUN_SUMMARY "WHERE workflow = $3 AND " KEEL_BEFORE_CURSOR
                                                       "ORDER BY r.workflow, r.id DESC LIMIT $2::int"};
// The states runs rest in off the happy path (018_run_listing.sql's partial indexes): spelled out, so that
// a generic plan can use those indexes.
#define KEEL_RESTING "status IN ('failed', 'cancelled', 'waiting', 'sleeping') "
const statement list_runs_by_status{"keel_list_runs_by_status", KEEL_RUN_SUMMARY
                                    "WHERE status = $3 AND " KEEL_RESTING "AND " KEEL_BEFORE_CURSOR
                                    "ORDER BY r.id DESC LIMIT $2::int"};
const statement list_runs_of_workflow_by_status{"keel_list_runs_of_workflow_by_status", KEEL_RUN_SUMMARY
                                                "WHERE workflow = $3 AND status = $4 AND " KEEL_RESTING
                                                "AND " KEEL_BEFORE_CURSOR "ORDER BY r.id DESC LIMIT $2::int"};
#undef KEEL_RESTING
// Queued or running: the primary key from the newest, or runs_claimable (spelled out for generic plans),
// whichever the planner finds cheaper: a page that does not fill must not walk the whole table.
const statement list_busy_runs{"keel_list_busy_runs", KEEL_RUN_SUMMARY
                               "WHERE status = $3 AND status IN ('queued', 'running') AND " KEEL_BEFORE_CURSOR
                               "ORDER BY r.id DESC LIMIT $2::int"};
const statement list_busy_runs_of_workflow{
    "keel_list_busy_runs_of_workflow", KEEL_RUN_SUMMARY
    "WHERE workflow = $3 AND status = $4 AND status IN ('queued', 'running') AND " KEEL_BEFORE_CURSOR
    "ORDER BY r.id DESC LIMIT $2::int"};
// Completed: the bulk of the table; the primary key (or runs_by_workflow) finds a page of them at once.
const statement list_completed_runs{"keel_list_completed_runs",
                                    KEEL_RUN_SUMMARY "WHERE status = $3 AND " KEEL_BEFORE_CURSOR
                                                     "ORDER BY r.id DESC LIMIT $2::int"};
const statement list_completed_runs_of_workflow{"keel_list_completed_runs_of_workflow", KEEL_RUN_SUMMARY
                                                "WHERE workflow = $3 AND status = $4 AND " KEEL_BEFORE_CURSOR
                                                "ORDER BY r.workflow, r.id DESC LIMIT $2::int"};

// No live worker has registered this (workflow, version): as get_run reads it.
#define KEEL_UNREGISTERED(workflow, version)                                                \
  "NOT EXISTS (SELECT 1 FROM keel.workers w WHERE w.expires_at > now() AND w.workflows @> " \
  "jsonb_build_array(jsonb_build_object('workflow', " workflow ", 'version', " version "))) "

// Unclaimable runs, through runs_queued_by_version (025_run_filters.sql): the queued (workflow, version)
// pairs one index descent each (a skip scan: there are few), then the newest runs before the cursor of each
// pair no live worker registered, merged newest first. A backlog of claimable runs is never read. `first`
// and `next` find the first pair and the one after (v.wf, v.ver): of every workflow, or of $3's only.
std::string unclaimable_sql(std::string_view first, std::string_view next) {
  return std::string(
             "WITH RECURSIVE versions(wf, ver) AS (\n"
             "  (SELECT workflow, version FROM keel.runs WHERE status = 'queued' ") +
         std::string(first) +
         " LIMIT 1)\n"
         "  UNION ALL\n"
         "  SELECT n.workflow, n.version FROM versions v CROSS JOIN LATERAL (\n"
         "    SELECT workflow, version FROM keel.runs WHERE status = 'queued' " +
         std::string(next) +
         " LIMIT 1) n),\n"
         "page(pid) AS (\n"
         "  SELECT q.id FROM versions v CROSS JOIN LATERAL (\n"
         "    SELECT id FROM keel.runs\n"
         "    WHERE status = 'queued' AND workflow = v.wf AND version = v.ver AND " KEEL_BEFORE_CURSOR
         "\n    ORDER BY workflow, version, id DESC LIMIT $2::int) q\n"
         "  WHERE " KEEL_UNREGISTERED("v.wf",
                                      "v.ver") "\n  ORDER BY q.id DESC LIMIT $2::int)\n" KEEL_RUN_SUMMARY
                                               "JOIN page ON r.id = page.pid ORDER BY r.id DESC";
}
const std::string list_unclaimable_runs_sql = unclaimable_sql(
    "ORDER BY workflow, version", "AND (workflow, version) > (v.wf, v.ver) ORDER BY workflow, version");
const std::string list_unclaimable_runs_of_workflow_sql =
    unclaimable_sql("AND workflow = $3 ORDER BY workflow, version",
                    "AND workflow = $3 AND version > v.ver ORDER BY workflow, version");

}  // namespace

// Dead-lettered runs (025_run_filters.sql: only they are in these indexes).
#define KEEL_DEAD_LETTERED "status = 'failed' AND (error->>'code') = 'dead_lettered' "
const statement list_dead_lettered_runs{"keel_list_dead_lettered_runs",
                                        KEEL_RUN_SUMMARY "WHERE " KEEL_DEAD_LETTERED "AND " KEEL_BEFORE_CURSOR
                                                         "ORDER BY r.id DESC LIMIT $2::int"};
const statement list_dead_lettered_runs_of_workflow{
    "keel_list_dead_lettered_runs_of_workflow",
    KEEL_RUN_SUMMARY "WHERE workflow = $3 AND " KEEL_DEAD_LETTERED "AND " KEEL_BEFORE_CURSOR
                     "ORDER BY r.workflow, r.id DESC LIMIT $2::int"};
#undef KEEL_DEAD_LETTERED

const statement list_unclaimable_runs{"keel_list_unclaimable_runs", list_unclaimable_runs_sql.c_str()};
const statement list_unclaimable_runs_of_workflow{"keel_list_unclaimable_runs_of_workflow",
                                                  list_unclaimable_runs_of_workflow_sql.c_str()};

// The (workflow, version) pairs live workers have registered: which queued runs of a page are unclaimable.
// keel.workers has a row per live worker process, read whole.
const statement live_versions{"keel_live_versions", R"sql(
SELECT DISTINCT x.workflow, x.version
FROM keel.workers w CROSS JOIN LATERAL jsonb_to_recordset(w.workflows) AS x(workflow text, version int)
WHERE w.expires_at > now())sql"};

// A run's children ($3), with the other filters when given ($4 workflow, $5 status, $6 run_filter):
// through runs_children (020_dashboard_reads.sql: parent, then id newest first), whatever the filters, so
// a page walks that run's children only.
const statement list_children{
    "keel_list_children", KEEL_RUN_SUMMARY
    "WHERE parent_id = $3::uuid AND parent_id IS NOT NULL "
    "AND ($4::text IS NULL OR workflow = $4::text) "
    "AND ($5::text IS NULL OR status = $5::text) "
    "AND ($6::text IS NULL OR ($6::text = 'dead_lettered' AND status = 'failed' "
    "AND (error->>'code') = 'dead_lettered') OR ($6::text = 'unclaimable' AND status = 'queued' "
    "AND " KEEL_UNREGISTERED("r.workflow", "r.version") ")) AND " KEEL_BEFORE_CURSOR
                                                        "ORDER BY r.parent_id, r.id DESC LIMIT $2::int"};

#undef KEEL_UNREGISTERED
#undef KEEL_BEFORE_CURSOR
#undef KEEL_RUN_SUMMARY

}  // namespace detail::sql

namespace {

run_summary summary_of(const PGresult* res, int row) {
  run_summary s;
  s.id = std::string(detail::get_text(res, row, 0));
  s.workflow = std::string(detail::get_text(res, row, 1));
  s.version = detail::to_int(detail::get_text(res, row, 2));
  s.status = run_status_from(detail::get_text(res, row, 3)).value_or(run_status::queued);
  s.error = detail::parse_json(res, row, 4);
  if (!PQgetisnull(res, row, 5)) s.idempotency_key = std::string(detail::get_text(res, row, 5));
  s.priority = detail::to_int(detail::get_text(res, row, 6));
  s.created_at = detail::from_micros(detail::get_text(res, row, 7));
  s.started_at = detail::opt_time(res, row, 8);
  s.finished_at = detail::opt_time(res, row, 9);
  if (!PQgetisnull(res, row, 10)) s.parent = std::string(detail::get_text(res, row, 10));
  s.waiting_for = detail::parse_json(res, row, 11);
  return s;
}

}  // namespace

boost::asio::awaitable<result<run_list>> store::list_runs(const run_query& q) {
  constexpr std::size_t k_max_page = 1000;
  if (q.limit == 0 || q.limit > k_max_page) co_return errc::invalid_argument;
  if (q.after && !is_valid_run_id(*q.after)) co_return errc::invalid_argument;
  if (q.parent && !is_valid_run_id(*q.parent)) co_return errc::invalid_argument;
  if (q.workflow && (q.workflow->size() > 255 || !is_valid_utf8(*q.workflow) ||
                     q.workflow->find('\0') != std::string::npos))
    co_return errc::invalid_argument;
  if (q.filter && q.status && *q.status != status_of(*q.filter)) co_return errc::invalid_argument;
  // One more than asked: whether another page follows.
  std::vector<std::optional<std::string>> params{q.after, std::to_string(q.limit + 1)};
  std::optional<std::string> status;
  if (q.status) status = std::string(to_string(*q.status));
  const detail::statement* stmt = &detail::sql::list_runs;
  if (q.parent) {
    // A run's children: one statement, the other filters optional in it.
    std::optional<std::string> filter;
    if (q.filter) filter = std::string(to_string(*q.filter));
    params.insert(params.end(), {*q.parent, q.workflow, status, filter});
    stmt = &detail::sql::list_children;
  } else if (q.filter) {
    // Each filter has indexes of its own (025_run_filters.sql); the status it implies is in the statement.
    if (q.workflow) params.emplace_back(*q.workflow);
    const bool dead = q.filter == run_filter::dead_lettered;
    stmt = q.workflow ? (dead ? &detail::sql::list_dead_lettered_runs_of_workflow
                              : &detail::sql::list_unclaimable_runs_of_workflow)
           : dead     ? &detail::sql::list_dead_lettered_runs
                      : &detail::sql::list_unclaimable_runs;
  } else {
    if (q.workflow) params.emplace_back(*q.workflow);
    if (status) params.emplace_back(*status);
    // Statuses a run rests in off the happy path have partial indexes; the others are found by scanning.
    const bool resting = q.status == run_status::failed || q.status == run_status::cancelled ||
                         q.status == run_status::waiting || q.status == run_status::sleeping;
    const bool busy = q.status == run_status::queued || q.status == run_status::running;
    if (q.workflow && q.status) {
      stmt = resting ? &detail::sql::list_runs_of_workflow_by_status
             : busy  ? &detail::sql::list_busy_runs_of_workflow
                     : &detail::sql::list_completed_runs_of_workflow;
    } else if (q.workflow) {
      stmt = &detail::sql::list_runs_of_workflow;
    } else if (q.status) {
      stmt = resting ? &detail::sql::list_runs_by_status
             : busy  ? &detail::sql::list_busy_runs
                     : &detail::sql::list_completed_runs;
    }
  }
  const auto limit = q.limit;
  // Every run of the unclaimable statement is unclaimable as its snapshot saw the workers.
  const bool all_unclaimable = q.filter == run_filter::unclaimable;
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<run_list>(detail::pg_connection&)> read =
      [params = std::move(params), stmt, limit,
       all_unclaimable](detail::pg_connection& c) -> result<run_list> {
    auto r = c.exec_blocking(*stmt, params);
    if (!r) return r.error();
    run_list out;
    const int rows = PQntuples(r->get());
    for (int row = 0; row < rows && out.runs.size() < limit; ++row)
      out.runs.push_back(summary_of(r->get(), row));
    if (static_cast<std::size_t>(rows) > limit) out.next = out.runs.back().id;
    // Why queued runs wait: those of a version no live worker registered say so. The workers are read
    // only for a page with queued runs (a second statement: a worker that registered or lapsed between the
    // two is seen as the second one saw it, as a get() a moment later would).
    const bool queued = std::any_of(out.runs.begin(), out.runs.end(),
                                    [](const run_summary& s) { return s.status == run_status::queued; });
    if (queued && !all_unclaimable) {
      auto live = c.exec_blocking(detail::sql::live_versions, {});
      if (!live) return live.error();
      std::set<std::pair<std::string, int>> registered;
      for (int row = 0; row < PQntuples(live->get()); ++row) {
        registered.emplace(std::string(detail::get_text(live->get(), row, 0)),
                           detail::to_int(detail::get_text(live->get(), row, 1)));
      }
      for (auto& s : out.runs) {
        if (s.status == run_status::queued && !registered.contains({s.workflow, s.version}))
          s.unclaimable = detail::unclaimable_reason(s.workflow, s.version);
      }
    } else if (all_unclaimable) {
      for (auto& s : out.runs)
        s.unclaimable = detail::unclaimable_reason(s.workflow, s.version);
    }
    return out;
  };
  co_return co_await impl_->on_pool<run_list>(std::move(read), impl_->request_deadline());
}

}  // namespace keel::storage
