// Event triggers (022_event_triggers.sql): what each workflow version declares as it is registered, and
// whom a published event concerns — the workflows it starts and the unfinished runs it cancels.
#include <boost/json/serialize.hpp>
#include <string>

#include "keel/storage/json_limits.hpp"
#include "keel/storage/store.hpp"
#include "pg_connection.hpp"
#include "row_text.hpp"
#include "statement_parts.hpp"
#include "statements.hpp"
#include "store_impl.hpp"

namespace keel::storage {

namespace detail::sql {

// An identical declaration (every worker's, at every start) writes nothing.
const statement declare_workflows{"keel_declare_workflows", R"sql(
INSERT INTO keel.workflow_versions AS v (workflow, version, triggers, cancel_on, concurrency_limit,
                                         concurrency_key, throttle_limit, throttle_window_ms, throttle_key,
                                         fair_key)
SELECT x.workflow, x.version, ARRAY(SELECT jsonb_array_elements_text(x.triggers)), x.cancel_on, x.climit,
       CASE WHEN x.ckey IS NOT NULL THEN ARRAY(SELECT jsonb_array_elements_text(x.ckey)) END,
       x.tlimit, x.twindow,
       CASE WHEN x.tkey IS NOT NULL THEN ARRAY(SELECT jsonb_array_elements_text(x.tkey)) END,
       CASE WHEN x.fkey IS NOT NULL THEN ARRAY(SELECT jsonb_array_elements_text(x.fkey)) END
FROM jsonb_to_recordset($1::jsonb) AS x(workflow text, version int, triggers jsonb, cancel_on jsonb,
                                        climit int, ckey jsonb, tlimit int, twindow bigint, tkey jsonb,
                                        fkey jsonb)
ON CONFLICT (workflow, version) DO UPDATE SET triggers = EXCLUDED.triggers, cancel_on = EXCLUDED.cancel_on,
                                              concurrency_limit = EXCLUDED.concurrency_limit,
                                              concurrency_key = EXCLUDED.concurrency_key,
                                              throttle_limit = EXCLUDED.throttle_limit,
                                              throttle_window_ms = EXCLUDED.throttle_window_ms,
                                              throttle_key = EXCLUDED.throttle_key,
                                              fair_key = EXCLUDED.fair_key,
                                              declared_at = now()
WHERE (v.triggers, v.cancel_on, v.concurrency_limit, v.concurrency_key, v.throttle_limit,
       v.throttle_window_ms, v.throttle_key, v.fair_key)
      IS DISTINCT FROM (EXCLUDED.triggers, EXCLUDED.cancel_on, EXCLUDED.concurrency_limit,
                        EXCLUDED.concurrency_key, EXCLUDED.throttle_limit, EXCLUDED.throttle_window_ms,
                        EXCLUDED.throttle_key, EXCLUDED.fair_key))sql"};

// $1 the event, $2 its payload, $3 the most runs to cancel (runs asked to cancel already are not read again),
// $4 runs not to cancel (those this publish starts: a repeat would otherwise cancel the run it returns).
// The runs are read through runs_claimable (its predicate spelled out): what this costs is the unfinished
// runs', not the history's. A payload without the matched value (#> gives NULL) matches no run.
const statement event_subscribers{"keel_event_subscribers", R"sql(
WITH newest AS (
  SELECT DISTINCT ON (workflow) workflow, version, triggers, cancel_on
  FROM keel.workflow_versions ORDER BY workflow, version DESC)
(SELECT 's', workflow, version FROM newest WHERE $1 = ANY(triggers) ORDER BY workflow)
UNION ALL
(SELECT 'c', r.id::text, NULL::int
 FROM newest n
 CROSS JOIN LATERAL jsonb_to_recordset(n.cancel_on) AS c(event text, match text[], input text[])
 JOIN keel.runs r ON r.workflow = n.workflow
 WHERE c.event = $1 AND r.status IN ('queued', 'running', 'sleeping', 'waiting') AND r.cancel_deadline IS NULL
   AND r.id <> ALL($4::uuid[])
   AND (cardinality(c.match) = 0 OR r.input #> c.input = $2::jsonb #> c.match)
 LIMIT $3::int))sql"};

}  // namespace detail::sql

namespace {

boost::json::array path_json(const std::vector<std::string>& path) {
  boost::json::array out;
  for (const auto& p : path)
    out.emplace_back(p);
  return out;
}

}  // namespace

boost::asio::awaitable<result<void>> store::declare_workflows(
    const std::vector<workflow_declaration>& workflows) {
  boost::json::array rows;
  for (const auto& w : workflows) {
    if (!detail::valid_key(w.workflow)) co_return errc::invalid_argument;
    boost::json::array triggers, cancel_on;
    for (const auto& t : w.triggers) {
      if (!detail::valid_key(t)) co_return errc::invalid_argument;
      triggers.emplace_back(t);
    }
    for (const auto& c : w.cancel_on) {
      if (!detail::valid_key(c.event)) co_return errc::invalid_argument;
      cancel_on.push_back(boost::json::object{
          {"event", c.event}, {"match", path_json(c.match)}, {"input", path_json(c.input)}});
    }
    if (w.concurrency_limit && (*w.concurrency_limit <= 0 || *w.concurrency_limit > 10'000))
      co_return errc::invalid_argument;
    boost::json::object row{{"workflow", w.workflow},
                            {"version", w.version},
                            {"triggers", std::move(triggers)},
                            {"cancel_on", std::move(cancel_on)}};
    if (w.concurrency_limit) row["climit"] = *w.concurrency_limit;
    if (w.concurrency_key) row["ckey"] = path_json(*w.concurrency_key);
    if (w.throttle_limit && (*w.throttle_limit <= 0 || *w.throttle_limit > 10'000))
      co_return errc::invalid_argument;
    if (w.throttle_window && w.throttle_window->count() <= 0) co_return errc::invalid_argument;
    if (w.throttle_limit) row["tlimit"] = *w.throttle_limit;
    if (w.throttle_window) row["twindow"] = w.throttle_window->count();
    if (w.throttle_key) row["tkey"] = path_json(*w.throttle_key);
    if (w.fair_key) row["fkey"] = path_json(*w.fair_key);
    rows.push_back(std::move(row));
  }
  std::vector<std::optional<std::string>> params{boost::json::serialize(rows)};
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice). Idempotent.
  std::function<result<void>(detail::pg_connection&)> declare =
      [params = std::move(params)](detail::pg_connection& c) -> result<void> {
    auto r = c.exec_blocking(detail::sql::declare_workflows, params);
    if (!r) return r.error();
    return {};
  };
  co_return co_await impl_->on_pool<void>(std::move(declare), impl_->request_deadline());
}

boost::asio::awaitable<result<event_audience>> store::event_subscribers(std::string event,
                                                                        const boost::json::value& payload,
                                                                        std::size_t max_cancel,
                                                                        const std::vector<run_id>& spared) {
  if (!detail::valid_key(event)) co_return errc::invalid_argument;
  std::string why;
  if (auto c = check_json(payload, impl_->options_.limits, &why); !c) co_return c.error();
  for (const auto& id : spared)
    if (!is_valid_run_id(id)) co_return errc::invalid_argument;
  std::vector<std::optional<std::string>> params{std::move(event), boost::json::serialize(payload),
                                                 std::to_string(max_cancel), detail::text_array(spared)};
  std::function<result<event_audience>(detail::pg_connection&)> read =
      [params = std::move(params)](detail::pg_connection& c) -> result<event_audience> {
    auto r = c.exec_blocking(detail::sql::event_subscribers, params);
    if (!r) return r.error();
    event_audience out;
    for (int row = 0; row < PQntuples(r->get()); ++row) {
      if (detail::get_text(r->get(), row, 0) == "s") {
        out.start.push_back({std::string(detail::get_text(r->get(), row, 1)),
                             detail::to_int(detail::get_text(r->get(), row, 2))});
      } else {
        out.cancel.push_back(std::string(detail::get_text(r->get(), row, 1)));
      }
    }
    return out;
  };
  co_return co_await impl_->on_pool<event_audience>(std::move(read), impl_->request_deadline());
}

}  // namespace keel::storage
