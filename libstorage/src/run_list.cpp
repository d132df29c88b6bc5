// Listing runs newest first, a page at a time (keyset pagination on the UUIDv7 id; 018_run_listing.sql).
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

}  // namespace

// A run's children ($3), with the other filters when given ($4 workflow, $5 status): through runs_children
// (020_dashboard_reads.sql: parent, then id newest first), whatever the filters, so a page walks that run's
// children only.
const statement list_children{"keel_list_children", KEEL_RUN_SUMMARY
                              "WHERE parent_id = $3::uuid AND parent_id IS NOT NULL "
                              "AND ($4::text IS NULL OR workflow = $4::text) "
                              "AND ($5::text IS NULL OR status = $5::text) AND " KEEL_BEFORE_CURSOR
                              "ORDER BY r.parent_id, r.id DESC LIMIT $2::int"};

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
  // One more than asked: whether another page follows.
  std::vector<std::optional<std::string>> params{q.after, std::to_string(q.limit + 1)};
  std::optional<std::string> status;
  if (q.status) status = std::string(to_string(*q.status));
  const detail::statement* stmt = &detail::sql::list_runs;
  if (q.parent) {
    // A run's children: one statement, the other filters optional in it.
    params.insert(params.end(), {*q.parent, q.workflow, status});
    stmt = &detail::sql::list_children;
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
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<run_list>(detail::pg_connection&)> read =
      [params = std::move(params), stmt, limit](detail::pg_connection& c) -> result<run_list> {
    auto r = c.exec_blocking(*stmt, params);
    if (!r) return r.error();
    run_list out;
    const int rows = PQntuples(r->get());
    for (int row = 0; row < rows && out.runs.size() < limit; ++row)
      out.runs.push_back(summary_of(r->get(), row));
    if (static_cast<std::size_t>(rows) > limit) out.next = out.runs.back().id;
    return out;
  };
  co_return co_await impl_->on_pool<run_list>(std::move(read), impl_->request_deadline());
}

}  // namespace keel::storage
