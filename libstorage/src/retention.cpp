// Retention of finished runs: those that finished (and began) longer ago than a given age are deleted with
// everything they own, a small batch per transaction, skipping rows others hold, so that nothing waits on it.
#include <cstdio>
#include <string>

#include "keel/storage/store.hpp"
#include "pg_connection.hpp"
#include "row_text.hpp"
#include "statements.hpp"
#include "store_impl.hpp"

namespace keel::storage {

namespace detail::sql {

// $1 the age in ms, $2 the batch, $3 the smallest UUIDv7 of a run begun at the cutoff (ids start with their
// creation time): the primary key is walked from the oldest run, and stops there. Runs begun before the
// cutoff that have not finished, or finished since, are walked past (they are few: long sleepers). Output
// streams go by their foreign key (ON DELETE CASCADE); run log rows by trim_log, which counts a run no
// longer stored as finished. A child stays while its parent has not finished (the parent finds it again by
// its key or id when it waits for it); a child's parent_id may outlive its parent's row.
const statement purge_runs{"keel_purge_runs", R"sql(
WITH doomed AS (
  SELECT id FROM keel.runs
  WHERE id < $3::uuid AND status IN ('completed', 'failed', 'cancelled')
    AND finished_at < now() - $1::bigint * interval '1 millisecond'
    AND (parent_id IS NULL OR NOT EXISTS (
          SELECT 1 FROM keel.runs p
          WHERE p.id = keel.runs.parent_id AND p.status IN ('queued', 'running', 'sleeping', 'waiting')))
  ORDER BY id LIMIT $2::int
  FOR UPDATE SKIP LOCKED),
steps AS (DELETE FROM keel.steps s USING doomed d WHERE s.run_id = d.id RETURNING 1),
events AS (DELETE FROM keel.events e USING doomed d WHERE e.run_id = d.id RETURNING 1),
hooks AS (DELETE FROM keel.hooks h USING doomed d WHERE h.run_id = d.id RETURNING 1),
history AS (DELETE FROM keel.run_history h USING doomed d WHERE h.run_id = d.id RETURNING 1),
runs AS (DELETE FROM keel.runs r USING doomed d WHERE r.id = d.id RETURNING 1)
SELECT (SELECT count(*) FROM runs),
       (SELECT count(*) FROM steps) + (SELECT count(*) FROM events) + (SELECT count(*) FROM hooks) +
       (SELECT count(*) FROM history))sql"};

}  // namespace detail::sql

namespace {

/// The smallest UUIDv7 with creation time `t` (its first 48 bits, milliseconds since the epoch).
std::string first_uuid_at(clock::time_point t) {
  const auto ms = std::max<std::int64_t>(
      0, std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count());
  char hex[13];
  std::snprintf(hex, sizeof hex, "%012llx", static_cast<unsigned long long>(ms) & 0xffffffffffffULL);
  const std::string h(hex);
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-0000-0000-000000000000";
}

}  // namespace

boost::asio::awaitable<result<purged>> store::purge_runs(std::chrono::milliseconds older_than,
                                                         std::size_t batch) {
  if (older_than.count() <= 0 || batch == 0 || batch > 10'000) co_return errc::invalid_argument;
  std::vector<std::optional<std::string>> params{std::to_string(older_than.count()), std::to_string(batch),
                                                 first_uuid_at(clock::now() - older_than)};
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice). A repeat after a
  // lost connection deletes the next batch, or nothing: safe.
  std::function<result<purged>(detail::pg_connection&)> purge =
      [params = std::move(params)](detail::pg_connection& c) -> result<purged> {
    auto r = c.exec_blocking(detail::sql::purge_runs, params);
    if (!r) return r.error();
    purged out;
    out.runs = detail::to_int64(detail::get_text(r->get(), 0, 0));
    out.rows = out.runs + detail::to_int64(detail::get_text(r->get(), 0, 1));
    return out;
  };
  co_return co_await impl_->on_pool<purged>(std::move(purge), impl_->request_deadline());
}

}  // namespace keel::storage
