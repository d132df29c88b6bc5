// Cron schedules as stored (021_schedules.sql): their definitions, the due ones, and the compare-and-set
// firing that makes each occurrence start exactly one run, whatever the number of workers.
#include <boost/json/serialize.hpp>
#include <string>
#include <string_view>

#include "keel/common/time_text.hpp"
#include "keel/storage/json_limits.hpp"
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

// A timestamptz from microseconds since the epoch, exactly (a double divided by 1e6 may round a
// microsecond off, and a firing compares its expected occurrence for equality).
std::string at(std::string_view param) {
  return "(timestamptz 'epoch' + " + std::string(param) + "::bigint * interval '1 microsecond')";
}

const std::string columns =
    "name, workflow, version, cron, time_zone, input::text, priority, catch_up, paused, "
    "keel.micros(next_fire_at), "
    "keel.micros(last_fired_at), last_run::text, revision, keel.micros(created_at), keel.micros(updated_at)";

// Creates, or replaces a definition that differs (an identical put writes nothing: no row comes back). A
// replaced expression or time zone takes the occurrence computed for it ($9); otherwise the next occurrence
// stays, so that re-putting a schedule as every worker starts never skips or repeats one.
const std::string put_schedule_sql = R"sql(
INSERT INTO keel.schedules AS s (name, workflow, version, cron, time_zone, input, priority, catch_up,
                                 next_fire_at)
VALUES ($1, $2, $3::int, $4, $5, $6::jsonb, $7::int, $8::int, )sql" +
                                     at("$9") + R"sql()
ON CONFLICT (name) DO UPDATE SET
  workflow = EXCLUDED.workflow, version = EXCLUDED.version, cron = EXCLUDED.cron,
  time_zone = EXCLUDED.time_zone, input = EXCLUDED.input, priority = EXCLUDED.priority,
  catch_up = EXCLUDED.catch_up,
  next_fire_at = CASE WHEN s.cron = EXCLUDED.cron AND s.time_zone = EXCLUDED.time_zone THEN s.next_fire_at
                      ELSE EXCLUDED.next_fire_at END,
  revision = s.revision + 1, updated_at = now()
WHERE (s.workflow, s.version, s.cron, s.time_zone, s.input, s.priority, s.catch_up) IS DISTINCT FROM
      (EXCLUDED.workflow, EXCLUDED.version, EXCLUDED.cron, EXCLUDED.time_zone, EXCLUDED.input,
       EXCLUDED.priority, EXCLUDED.catch_up)
RETURNING (xmax = 0))sql";

const std::string get_schedule_sql = "SELECT " + columns + " FROM keel.schedules WHERE name = $1";

// $1 the workflow or NULL, $2 the name the page starts after ('' for the first), $3 the page size.
const std::string list_schedules_sql = "SELECT " + columns + R"sql( FROM keel.schedules
WHERE ($1::text IS NULL OR workflow = $1) AND name > $2
ORDER BY name LIMIT $3::int)sql";

// Through schedules_by_next_fire (its predicate spelled out), for the workflows a worker runs ($1), but for
// the schedules (names $3 at revisions $4) it found it cannot fire: they stay due for other workers, and
// must not fill every batch of this one.
const std::string due_schedules_sql = "SELECT keel.micros(now()), " + columns + R"sql( FROM keel.schedules
WHERE NOT paused AND next_fire_at IS NOT NULL AND next_fire_at <= now() AND workflow = ANY($1::text[])
  AND (name, revision) NOT IN (SELECT * FROM unnest($3::text[], $4::bigint[]))
ORDER BY next_fire_at LIMIT $2::int)sql";

const std::string soonest_schedule_sql = R"sql(
SELECT keel.micros(now()), keel.micros(min(next_fire_at)) FROM keel.schedules
WHERE NOT paused AND next_fire_at IS NOT NULL AND next_fire_at > now() AND workflow = ANY($1::text[]))sql";

// The firing: moves the schedule to its next occurrence ($4) only if it is still at the revision ($2) and
// occurrence ($3) its firer read, and inserts that occurrence's runs ($6: [{id, key}]) with their
// run_enqueued events, in one statement. Of several workers firing the same occurrence, the first moves the
// schedule and the others match no row and insert nothing; the runs' idempotency keys hold even against a
// schedule deleted and created again with the same name.
const std::string fire_schedule_sql = R"sql(
WITH s AS (
  UPDATE keel.schedules
  SET next_fire_at = )sql" + at("$4") +
                                      R"sql(, revision = revision + 1, updated_at = now(),
      last_fired_at = coalesce()sql" + at("$5") +
                                      R"sql(, last_fired_at)
  WHERE name = $1 AND revision = $2::bigint AND next_fire_at = )sql" +
                                      at("$3") + R"sql( AND NOT paused
  RETURNING name, workflow, input, priority),
ins AS (
  INSERT INTO keel.runs (id, workflow, version, status, input, idempotency_key, priority, due_at,
                         concurrency_key, concurrency_limit, throttle_key, throttle_limit, throttle_window_ms,
                         fair_key, fair_weight)
  SELECT x.id, s.workflow, $7::int, 'queued', s.input, x.key, s.priority, now(),
         )sql" + flow_control_values("s.input", "v") +
                                      R"sql(
  FROM s CROSS JOIN jsonb_to_recordset($6::jsonb) AS x(id uuid, key text)
  )sql" + declared_rule_join("v", "s.workflow", "$7::int") +
                                      R"sql(
  ON CONFLICT DO NOTHING
  RETURNING id, workflow, version, priority, concurrency_key, concurrency_limit, throttle_key, throttle_limit, throttle_window_ms),)sql" +
                                      slots_made_cte("ins") + "\n" + log_cte(R"sql(
  SELECT ins.id, 'run_enqueued',
         jsonb_build_object('workflow', ins.workflow, 'version', ins.version, 'priority', ins.priority,
                            'schedule', $1::text),
         0::bigint
  FROM ins)sql") + R"sql(
SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM ins))sql";

}  // namespace

// After a firing: the run that holds the newest occurrence's key (this firing's, or an earlier one's).
const statement schedule_last_run{"keel_schedule_last_run",
                                  "UPDATE keel.schedules SET last_run = (SELECT id FROM keel.runs WHERE "
                                  "idempotency_key = $2) WHERE name = $1"};

const statement put_schedule{"keel_put_schedule", put_schedule_sql.c_str()};
const statement get_schedule{"keel_get_schedule", get_schedule_sql.c_str()};
const statement list_schedules{"keel_list_schedules", list_schedules_sql.c_str()};
const statement pause_schedule{
    "keel_pause_schedule",
    "UPDATE keel.schedules SET paused = true, revision = revision + 1, updated_at = now() "
    "WHERE name = $1 AND NOT paused"};
// Resumes at the occurrence computed from the revision its caller read ($3); none: someone changed it first.
const statement resume_schedule{
    "keel_resume_schedule",
    "UPDATE keel.schedules SET paused = false, next_fire_at = (timestamptz 'epoch' "
    "+ $2::bigint * interval '1 microsecond'), revision = revision + 1, "
    "updated_at = now() WHERE name = $1 AND paused AND revision = $3::bigint"};
const statement delete_schedule{"keel_delete_schedule", "DELETE FROM keel.schedules WHERE name = $1"};
const statement due_schedules{"keel_due_schedules", due_schedules_sql.c_str()};
const statement soonest_schedule{"keel_soonest_schedule", soonest_schedule_sql.c_str()};
const statement fire_schedule{"keel_fire_schedule", fire_schedule_sql.c_str()};

}  // namespace detail::sql

namespace {

using detail::pg_connection;

std::optional<std::string> micros_param(const std::optional<std::chrono::system_clock::time_point>& t) {
  if (!t) return std::nullopt;
  return std::to_string(detail::to_micros(*t));
}

/// A row of detail::sql::columns, from column `first` on.
schedule_record schedule_of(const PGresult* res, int row, int first = 0) {
  schedule_record s;
  s.name = std::string(detail::get_text(res, row, first + 0));
  s.workflow = std::string(detail::get_text(res, row, first + 1));
  if (!PQgetisnull(res, row, first + 2)) s.version = detail::to_int(detail::get_text(res, row, first + 2));
  s.cron = std::string(detail::get_text(res, row, first + 3));
  s.time_zone = std::string(detail::get_text(res, row, first + 4));
  s.input = detail::parse_stored_json(detail::get_text(res, row, first + 5));
  s.priority = detail::to_int(detail::get_text(res, row, first + 6));
  s.catch_up = detail::to_int(detail::get_text(res, row, first + 7));
  s.paused = detail::get_text(res, row, first + 8) == "t";
  s.next_fire_at = detail::opt_time(res, row, first + 9);
  s.last_fired_at = detail::opt_time(res, row, first + 10);
  if (!PQgetisnull(res, row, first + 11)) s.last_run = std::string(detail::get_text(res, row, first + 11));
  s.revision = detail::to_int64(detail::get_text(res, row, first + 12));
  s.created_at = detail::from_micros(detail::get_text(res, row, first + 13));
  s.updated_at = detail::from_micros(detail::get_text(res, row, first + 14));
  return s;
}

result<schedule_record> read_schedule(pg_connection& c, const std::string& name) {
  auto r = c.exec_blocking(detail::sql::get_schedule, {name});
  if (!r) return r.error();
  if (PQntuples(r->get()) == 0) return errc::not_found;
  return schedule_of(r->get(), 0);
}

bool valid_workflow_name(const std::string& w) {
  return detail::valid_key(w) && w.find('\0') == std::string::npos;
}

}  // namespace

bool is_valid_schedule_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > k_max_schedule_name_bytes) return false;
  for (const char ch : name) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                    ch == '-' || ch == '_' || ch == '.' || ch == ':';
    if (!ok) return false;
  }
  return true;
}

std::string schedule_run_key(std::string_view name, std::chrono::system_clock::time_point at) {
  return "schedule:" + std::string(name) + "@" + rfc3339(at);
}

boost::asio::awaitable<result<schedule_put>> store::put_schedule(const schedule_record& s) {
  if (!is_valid_schedule_name(s.name) || !valid_workflow_name(s.workflow) || s.catch_up < 0 ||
      s.catch_up > k_max_catch_up || !detail::valid_key(s.cron) || !detail::valid_key(s.time_zone))
    co_return errc::invalid_argument;
  if (auto c = impl_->check(s.input, "schedule input", s.name); !c) co_return c.error();
  std::vector<std::optional<std::string>> params{
      s.name,
      s.workflow,
      s.version ? std::optional<std::string>(std::to_string(*s.version)) : std::nullopt,
      s.cron,
      s.time_zone,
      boost::json::serialize(s.input),
      std::to_string(s.priority),
      std::to_string(s.catch_up),
      micros_param(s.next_fire_at)};
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice). An upsert whose
  // repeat is harmless (an identical put writes nothing): safe to run again on a fresh connection.
  std::function<result<schedule_put>(pg_connection&)> put =
      [params = std::move(params)](pg_connection& c) -> result<schedule_put> {
    const std::function<result<schedule_put>()> body = [&]() -> result<schedule_put> {
      auto r = c.exec_blocking(detail::sql::put_schedule, params);
      if (!r) return r.error();
      schedule_put out;
      out.changed = PQntuples(r->get()) > 0;
      out.created = out.changed && detail::get_text(r->get(), 0, 0) == "t";
      auto row = read_schedule(c, *params[0]);
      if (!row) return row.error();
      out.schedule = std::move(*row);
      return out;
    };
    return detail::in_transaction(c, body);
  };
  co_return co_await impl_->on_pool<schedule_put>(std::move(put), impl_->request_deadline());
}

boost::asio::awaitable<result<schedule_record>> store::get_schedule(std::string name) {
  if (!is_valid_schedule_name(name)) co_return errc::invalid_argument;
  std::function<result<schedule_record>(pg_connection&)> get = [name = std::move(name)](pg_connection& c) {
    return read_schedule(c, name);
  };
  co_return co_await impl_->on_pool<schedule_record>(std::move(get), impl_->request_deadline());
}

boost::asio::awaitable<result<schedule_list>> store::list_schedules(const schedule_query& q) {
  constexpr std::size_t k_max_page = 1000;
  if (q.limit == 0 || q.limit > k_max_page) co_return errc::invalid_argument;
  if (q.workflow && !valid_workflow_name(*q.workflow)) co_return errc::invalid_argument;
  if (q.after && !is_valid_schedule_name(*q.after)) co_return errc::invalid_argument;
  // One more than asked: whether another page follows.
  std::vector<std::optional<std::string>> params{q.workflow, q.after.value_or(""),
                                                 std::to_string(q.limit + 1)};
  const auto limit = q.limit;
  std::function<result<schedule_list>(pg_connection&)> list =
      [params = std::move(params), limit](pg_connection& c) -> result<schedule_list> {
    auto r = c.exec_blocking(detail::sql::list_schedules, params);
    if (!r) return r.error();
    schedule_list out;
    const int rows = PQntuples(r->get());
    for (int row = 0; row < rows && out.schedules.size() < limit; ++row)
      out.schedules.push_back(schedule_of(r->get(), row));
    if (static_cast<std::size_t>(rows) > limit) out.next = out.schedules.back().name;
    return out;
  };
  co_return co_await impl_->on_pool<schedule_list>(std::move(list), impl_->request_deadline());
}

boost::asio::awaitable<result<schedule_record>> store::pause_schedule(std::string name) {
  if (!is_valid_schedule_name(name)) co_return errc::invalid_argument;
  std::function<result<schedule_record>(pg_connection&)> pause =
      [name = std::move(name)](pg_connection& c) -> result<schedule_record> {
    if (auto r = c.exec_blocking(detail::sql::pause_schedule, {name}); !r) return r.error();
    return read_schedule(c, name);
  };
  co_return co_await impl_->on_pool<schedule_record>(std::move(pause), impl_->request_deadline());
}

boost::asio::awaitable<result<std::size_t>> store::resume_schedule(std::string name, std::int64_t revision,
                                                                   std::optional<clock::time_point> next) {
  if (!is_valid_schedule_name(name)) co_return errc::invalid_argument;
  std::vector<std::optional<std::string>> params{std::move(name), micros_param(next),
                                                 std::to_string(revision)};
  std::function<result<std::size_t>(pg_connection&)> resume =
      [params = std::move(params)](pg_connection& c) -> result<std::size_t> {
    auto r = c.exec_blocking(detail::sql::resume_schedule, params);
    if (!r) return r.error();
    return static_cast<std::size_t>(detail::to_int64(PQcmdTuples(r->get())));
  };
  co_return co_await impl_->on_pool<std::size_t>(std::move(resume), impl_->request_deadline());
}

boost::asio::awaitable<result<std::size_t>> store::delete_schedule(std::string name) {
  if (!is_valid_schedule_name(name)) co_return errc::invalid_argument;
  std::function<result<std::size_t>(pg_connection&)> drop =
      [name = std::move(name)](pg_connection& c) -> result<std::size_t> {
    auto r = c.exec_blocking(detail::sql::delete_schedule, {name});
    if (!r) return r.error();
    return static_cast<std::size_t>(detail::to_int64(PQcmdTuples(r->get())));
  };
  co_return co_await impl_->on_pool<std::size_t>(std::move(drop), impl_->request_deadline());
}

boost::asio::awaitable<result<schedules_due>> store::due_schedules(
    const std::vector<std::string>& workflows, std::size_t limit,
    const std::vector<std::pair<std::string, std::int64_t>>& skipped) {
  std::vector<std::string> names;
  std::string revisions = "{";
  for (const auto& [name, revision] : skipped) {
    names.push_back(name);
    if (revisions.size() > 1) revisions += ',';
    revisions += std::to_string(revision);
  }
  revisions += '}';
  std::vector<std::optional<std::string>> params{detail::text_array(workflows), std::to_string(limit),
                                                 detail::text_array(names), std::move(revisions)};
  std::function<result<schedules_due>(pg_connection&)> read =
      [params = std::move(params)](pg_connection& c) -> result<schedules_due> {
    schedules_due out;
    auto due = c.exec_blocking(detail::sql::due_schedules, params);
    if (!due) return due.error();
    for (int row = 0; row < PQntuples(due->get()); ++row)
      out.due.push_back(schedule_of(due->get(), row, 1));
    auto soonest = c.exec_blocking(detail::sql::soonest_schedule, {params[0]});
    if (!soonest) return soonest.error();
    out.now = detail::from_micros(detail::get_text(soonest->get(), 0, 0));
    out.soonest = detail::opt_time(soonest->get(), 0, 1);
    return out;
  };
  co_return co_await impl_->on_pool<schedules_due>(std::move(read), impl_->request_deadline());
}

boost::asio::awaitable<result<std::size_t>> store::fire_schedule(const schedule_firing& f) {
  if (!is_valid_schedule_name(f.name)) co_return errc::invalid_argument;
  std::string runs = "[";
  for (const auto& o : f.occurrences) {
    if (runs.size() > 1) runs += ',';
    detail::row_text row;
    row.str("id", o.id).str("key", schedule_run_key(f.name, o.at));
    runs += std::move(row).finish();
  }
  runs += ']';
  std::optional<std::string> newest_key;
  if (!f.occurrences.empty()) newest_key = schedule_run_key(f.name, f.occurrences.back().at);
  std::vector<std::optional<std::string>> params{
      f.name,
      std::to_string(f.revision),
      std::to_string(detail::to_micros(f.expected_next)),
      micros_param(f.next),
      f.occurrences.empty() ? std::nullopt : micros_param(f.occurrences.back().at),
      std::move(runs),
      std::to_string(f.version)};
  // Named first, as above. A repeat after a lost connection is harmless: the revision moved on if the first
  // attempt committed, and then it changes nothing.
  std::function<result<std::size_t>(pg_connection&)> fire =
      [params = std::move(params),
       newest_key = std::move(newest_key)](pg_connection& c) -> result<std::size_t> {
    const std::function<result<std::size_t>()> body = [&]() -> result<std::size_t> {
      auto r = c.exec_blocking(detail::sql::fire_schedule, params);
      if (!r) return r.error();
      const auto fired = static_cast<std::size_t>(detail::to_int64(detail::get_text(r->get(), 0, 0)));
      if (fired == 0 || !newest_key) return fired;
      if (auto l = c.exec_blocking(detail::sql::schedule_last_run, {params[0], newest_key}); !l)
        return l.error();
      if (detail::get_text(r->get(), 0, 1) != "0") {
        if (auto n = c.exec_blocking(detail::sql::notify_runs, {}); !n) return n.error();
      }
      return fired;
    };
    return detail::in_transaction(c, body);
  };
  auto done = co_await impl_->on_pool<std::size_t>(std::move(fire), impl_->request_deadline());
  if (done && *done > 0) impl_->committed();  // it appended run_enqueued events to the run log
  co_return done;
}

}  // namespace keel::storage
