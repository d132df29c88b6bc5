// Concurrency keys (026_concurrency_keys.sql): the sweep that starts parked runs whose key has a free slot.
// A freed slot wakes its key's first parked run at once (the release trigger); the sweep covers the runs
// a claim parked while the slot they needed was being freed, which the release could not yet see.
#include <string>

#include "keel/storage/store.hpp"
#include "pg_connection.hpp"
#include "row_text.hpp"
#include "statements.hpp"
#include "store_impl.hpp"

namespace keel::storage {

namespace detail::sql {
namespace {

// The keys with parked runs, walked through runs_key_parked one descent per key (at most $1 of them); for
// each, as many of its first parked runs as it has free slots become due. Rows others hold are skipped
// (a run being woken or cancelled): the next sweep sees them. Idle workers hear of it at commit.
//
// First, a safety net: a slot whose holder is no longer running (a way out of running that freed nothing)
// is freed. A claim sets a slot's holder and its run's status in one transaction, so a snapshot that shows
// the holder not running shows a leak; the update matches the holder it read, so a slot taken again
// meanwhile is left alone. It reads every held slot: at most one per run in flight.
const char* const wake_key_parked_sql = R"sql(
WITH RECURSIVE leaked AS (
  UPDATE keel.concurrency_slots s SET holder = NULL
  FROM (SELECT s.workflow, s.key, s.slot, s.holder
        FROM keel.concurrency_slots s LEFT JOIN keel.runs r ON r.id = s.holder
        WHERE s.holder IS NOT NULL AND (r.id IS NULL OR r.status <> 'running')) x
  WHERE s.workflow = x.workflow AND s.key = x.key AND s.slot = x.slot AND s.holder = x.holder
  RETURNING 1),
k(workflow, key) AS (
  (SELECT workflow, concurrency_key FROM keel.runs
   WHERE due_at = 'infinity' AND key_parked_at IS NOT NULL
   ORDER BY workflow, concurrency_key LIMIT 1)
  UNION ALL
  SELECT n.workflow, n.concurrency_key
  FROM k CROSS JOIN LATERAL (
    SELECT workflow, concurrency_key FROM keel.runs
    WHERE due_at = 'infinity' AND key_parked_at IS NOT NULL
      AND (workflow, concurrency_key) > (k.workflow, k.key)
    ORDER BY workflow, concurrency_key LIMIT 1) n),
keys AS (SELECT * FROM k LIMIT $1::int),
wake AS (
  SELECT p.id
  FROM keys
  CROSS JOIN LATERAL (
    SELECT count(*) AS free FROM keel.concurrency_slots s
    WHERE s.workflow = keys.workflow AND s.key = keys.key AND s.holder IS NULL) f
  CROSS JOIN LATERAL (
    SELECT id FROM keel.runs
    WHERE workflow = keys.workflow AND concurrency_key = keys.key
      AND due_at = 'infinity' AND key_parked_at IS NOT NULL
    ORDER BY priority DESC, key_parked_at
    LIMIT f.free
    FOR UPDATE SKIP LOCKED) p),
woken AS (
  UPDATE keel.runs parked_run SET due_at = now() FROM wake WHERE parked_run.id = wake.id
  RETURNING parked_run.id),
notified AS (SELECT pg_notify('keel_runs', '') WHERE EXISTS (SELECT 1 FROM woken))
SELECT (SELECT count(*) FROM woken), (SELECT count(*) FROM notified), (SELECT count(*) FROM leaked))sql";

}  // namespace

const statement wake_key_parked{"keel_wake_key_parked", wake_key_parked_sql};

}  // namespace detail::sql

boost::asio::awaitable<result<std::size_t>> store::wake_key_parked(std::size_t max_keys) {
  if (max_keys == 0 || max_keys > 100'000) co_return errc::invalid_argument;
  std::vector<std::optional<std::string>> params{std::to_string(max_keys)};
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice). A repeat is
  // harmless: a run woken twice is due either way.
  std::function<result<std::size_t>(detail::pg_connection&)> sweep =
      [params = std::move(params)](detail::pg_connection& c) -> result<std::size_t> {
    auto r = c.exec_blocking(detail::sql::wake_key_parked, params);
    if (!r) return r.error();
    return static_cast<std::size_t>(detail::to_int64(detail::get_text(r->get(), 0, 0)));
  };
  co_return co_await impl_->on_pool<std::size_t>(std::move(sweep), impl_->request_deadline());
}

}  // namespace keel::storage
