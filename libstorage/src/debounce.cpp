// Debounced enqueues (024_debounce.sql): enqueues of one workflow with the same debounce key, while its run
// has not started, collapse into that run — the last input wins, and it starts a window after the last one.
#include <boost/json/serialize.hpp>
#include <string>

#include "keel/storage/store.hpp"
#include "pg_connection.hpp"
#include "row_text.hpp"
#include "statement_parts.hpp"
#include "statements.hpp"
#include "store_impl.hpp"

namespace keel::storage {

namespace detail::sql {
namespace {

// One upsert on runs_debouncing: a new run, or the queued one holding the key takes this input, version and
// priority and is due a window from now. A run that started meanwhile has left the index for good (its
// status changed, and its claims count keeps it out if it is queued again), so the enqueue after it opens a
// new window with a new run. Logged in the same statement:
// run_enqueued for a new run, run_debounced for a collapse.
const std::string enqueue_debounced_sql = R"sql(
WITH up AS (
INSERT INTO keel.runs AS r (id, workflow, version, status, input, priority, due_at, debounce_key,
                            concurrency_key, concurrency_limit, throttle_key, throttle_limit, throttle_window_ms,
                            fair_key, fair_weight, traceparent)
SELECT $1::uuid, $2, $3::int, 'queued', $4::jsonb, $5::int, now() + $6::bigint * interval '1 millisecond', $7,
       )sql" +
                                          flow_control_values("$4::jsonb", "v",
                                                              {"$8", "$9::int", "$10", "$11::int",
                                                               "$12::bigint", "$13::text", "$14::int"}) +
                                          R"sql(, $15::text
FROM (SELECT) one )sql" + declared_rule_join("v", "$2", "$3::int") +
                                          R"sql(
ON CONFLICT (workflow, debounce_key) WHERE status = 'queued' AND claims = 0 AND debounce_key IS NOT NULL
DO UPDATE SET input = EXCLUDED.input, version = EXCLUDED.version, priority = EXCLUDED.priority,
              due_at = EXCLUDED.due_at, concurrency_key = EXCLUDED.concurrency_key,
              concurrency_limit = EXCLUDED.concurrency_limit, throttle_key = EXCLUDED.throttle_key,
              throttle_limit = EXCLUDED.throttle_limit, throttle_window_ms = EXCLUDED.throttle_window_ms,
              fair_key = EXCLUDED.fair_key, fair_weight = EXCLUDED.fair_weight,
              traceparent = EXCLUDED.traceparent
RETURNING r.id, r.workflow, r.version, r.priority, r.due_at, (r.xmax = 0) AS created, r.concurrency_key,
          r.concurrency_limit, r.throttle_key, r.throttle_limit, r.throttle_window_ms),)sql" +
                                          slots_made_cte("up") + "\n" + log_cte(R"sql(
  SELECT id, CASE WHEN created THEN 'run_enqueued' ELSE 'run_debounced' END,
         jsonb_build_object('workflow', workflow, 'version', version, 'priority', priority,
                            'run_at', keel.micros(due_at), 'debounce_key', $7::text),
         0::bigint
  FROM up)sql") + R"sql(
SELECT id::text, created FROM up)sql";

}  // namespace

const statement enqueue_debounced{"keel_enqueue_debounced", enqueue_debounced_sql.c_str()};

}  // namespace detail::sql

namespace {
std::optional<std::string> number_or_null(const std::optional<int>& n) {
  return n ? std::optional(std::to_string(*n)) : std::nullopt;
}
}  // namespace

boost::asio::awaitable<result<enqueue_outcome>> store::enqueue_debounced(const new_run& run,
                                                                         const std::string& key,
                                                                         std::chrono::milliseconds window) {
  // Limits before SQL, as enqueue.
  if (!detail::valid_key(run.workflow) || !detail::valid_key(key) || !is_valid_run_id(run.id) ||
      run.idempotency_key || run.run_at || window.count() <= 0 || !detail::valid_run_options(run))
    co_return errc::invalid_argument;
  if (auto c = impl_->check(run.input, "input", run.id); !c) co_return c.error();
  std::vector<std::optional<std::string>> params{
      run.id,
      run.workflow,
      std::to_string(run.version),
      boost::json::serialize(run.input),
      std::to_string(run.priority),
      std::to_string(window.count()),
      key,
      run.concurrency_key,
      number_or_null(run.concurrency_limit),
      run.throttle_key,
      number_or_null(run.throttle_limit),
      run.throttle_window ? std::optional(std::to_string(run.throttle_window->count())) : std::nullopt,
      run.fairness_key,
      number_or_null(run.fairness_weight),
      run.traceparent};
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice). A repeat after a
  // lost connection collapses into the run the first attempt made (same key), or makes it: safe.
  std::function<result<enqueue_outcome>(detail::pg_connection&)> upsert =
      [params = std::move(params)](detail::pg_connection& c) -> result<enqueue_outcome> {
    auto r = c.exec_blocking(detail::sql::enqueue_debounced, params);
    if (!r) return r.error();
    enqueue_outcome out;
    out.id = std::string(detail::get_text(r->get(), 0, 0));
    out.created = detail::get_text(r->get(), 0, 1) == "t";
    return out;
  };
  auto done = co_await impl_->on_pool<enqueue_outcome>(std::move(upsert), impl_->request_deadline());
  if (done) impl_->committed();  // it appended to the run log
  co_return done;
}

}  // namespace keel::storage
