// Concurrency keys and throttles (026_concurrency_keys.sql, 027_throttle.sql): the sweeps that start parked
// runs whose key has a slot free. A freed concurrency slot wakes its key's next run by itself; its sweep
// covers the runs a claim parked while the slot they needed was being freed, which the release could not
// yet see, and frees slots whose holder stopped running without freeing them. Throttle slots come free by
// time: their sweep is how throttled runs start, and says when the next slot comes free.
#include <string>

#include "keel/storage/store.hpp"
#include "pg_connection.hpp"
#include "row_text.hpp"
#include "statements.hpp"
#include "step_rows.hpp"
#include "store_impl.hpp"

namespace keel::storage {

namespace detail::sql {
namespace {

// The keys with runs parked for them, walked through `index_columns`' index one descent per key, at most
// $1 of them after the cursor ($2, $3: the last key of the previous sweep; NULL: from the first).
std::string parked_keys_cte(std::string_view key_column) {
  const std::string k(key_column);
  const std::string parked = "due_at = 'infinity' AND key_parked_at IS NOT NULL AND " + k + " IS NOT NULL";
  return R"sql(
k(workflow, key) AS (
  (SELECT workflow, )sql" +
         k + " FROM keel.runs WHERE " + parked + " AND ($2::text IS NULL OR (workflow, " + k +
         R"sql() > ($2, $3))
   ORDER BY workflow, )sql" +
         k + R"sql( LIMIT 1)
  UNION ALL
  SELECT n.workflow, n.key
  FROM k CROSS JOIN LATERAL (
    SELECT workflow, )sql" +
         k + " AS key FROM keel.runs WHERE " + parked + " AND (workflow, " + k + R"sql() > (k.workflow, k.key)
    ORDER BY workflow, )sql" +
         k + R"sql( LIMIT 1) n),
keys AS MATERIALIZED (SELECT * FROM k LIMIT $1::int),
head AS MATERIALIZED (
  SELECT keys.workflow, keys.key, h.lim
  FROM keys CROSS JOIN LATERAL (
    SELECT )sql" +
         (k == "concurrency_key" ? std::string("concurrency_limit") : std::string("throttle_limit")) +
         R"sql( AS lim FROM keel.runs
    WHERE workflow = keys.workflow AND )sql" +
         k + " = keys.key AND " + parked + R"sql(
    ORDER BY priority DESC, key_parked_at LIMIT 1) h),)sql";
}

// The first parked runs of each key in `free` (workflow, key, free: how many to wake) become due.
std::string wake_ctes(std::string_view key_column) {
  const std::string k(key_column);
  return R"sql(
wake AS (
  SELECT p.id FROM free
  CROSS JOIN LATERAL (
    SELECT id FROM keel.runs
    WHERE workflow = free.workflow AND )sql" +
         k + R"sql( = free.key AND due_at = 'infinity' AND key_parked_at IS NOT NULL
    ORDER BY priority DESC, key_parked_at
    LIMIT free.n
    FOR UPDATE SKIP LOCKED) p),
woken AS (
  UPDATE keel.runs parked_run SET due_at = now() FROM wake WHERE parked_run.id = wake.id
  RETURNING parked_run.id),
notified AS (SELECT pg_notify('keel_runs', '') WHERE EXISTS (SELECT 1 FROM woken)))sql";
}

// Concurrency keys. First, a safety net: a slot of a key that has parked runs whose holder is no longer
// running (a way out of running that freed nothing) is freed. A claim sets a slot's holder and its run's
// status in one transaction, so a snapshot that shows the holder not running shows a leak; the update
// matches the holder it read, so a slot taken again meanwhile is left alone. Then each key wakes as many
// parked runs as it has free slots its first parked run may take (slot <= its limit).
const std::string wake_key_parked_sql = std::string("WITH RECURSIVE") + parked_keys_cte("concurrency_key") +
                                        R"sql(
leaked AS (
  UPDATE keel.concurrency_slots s SET holder = NULL
  FROM (SELECT s.workflow, s.key, s.slot, s.holder
        FROM keys JOIN keel.concurrency_slots s ON s.workflow = keys.workflow AND s.key = keys.key
        LEFT JOIN keel.runs r ON r.id = s.holder
        WHERE s.holder IS NOT NULL AND (r.id IS NULL OR r.status <> 'running')) x
  WHERE s.workflow = x.workflow AND s.key = x.key AND s.slot = x.slot AND s.holder = x.holder
  RETURNING 1),
free AS (
  SELECT head.workflow, head.key, f.n FROM head CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM keel.concurrency_slots s
    WHERE s.workflow = head.workflow AND s.key = head.key AND s.slot <= head.lim AND s.holder IS NULL) f),)sql" +
                                        wake_ctes("concurrency_key") + R"sql(
SELECT (SELECT count(*) FROM woken), (SELECT count(*) FROM keys),
       (SELECT workflow FROM keys ORDER BY workflow DESC, key DESC LIMIT 1),
       (SELECT key FROM keys ORDER BY workflow DESC, key DESC LIMIT 1),
       NULL::bigint, (SELECT count(*) FROM notified), (SELECT count(*) FROM leaked))sql";

// Throttles: each key wakes as many parked runs as it has slots come free (slot <= its first parked run's
// limit), and the sweep learns when the next slot of a swept key comes free (µs since the epoch).
const std::string wake_throttled_sql = std::string("WITH RECURSIVE") + parked_keys_cte("throttle_key") +
                                       R"sql(
free AS (
  SELECT head.workflow, head.key, f.n FROM head CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM keel.throttle_slots s
    WHERE s.workflow = head.workflow AND s.key = head.key AND s.slot <= head.lim AND s.free_at <= now()) f),
soonest AS (
  SELECT min(s.free_at) AS at FROM head JOIN keel.throttle_slots s
    ON s.workflow = head.workflow AND s.key = head.key AND s.slot <= head.lim AND s.free_at > now()),)sql" +
                                       wake_ctes("throttle_key") + R"sql(
SELECT (SELECT count(*) FROM woken), (SELECT count(*) FROM keys),
       (SELECT workflow FROM keys ORDER BY workflow DESC, key DESC LIMIT 1),
       (SELECT key FROM keys ORDER BY workflow DESC, key DESC LIMIT 1),
       (SELECT keel.micros(at) FROM soonest), (SELECT count(*) FROM notified))sql";

}  // namespace

const statement wake_key_parked{"keel_wake_key_parked", wake_key_parked_sql.c_str()};
const statement wake_throttled{"keel_wake_throttled", wake_throttled_sql.c_str()};

}  // namespace detail::sql

boost::asio::awaitable<result<parked_sweep>> store::wake_parked(parked_kind kind, std::size_t max_keys,
                                                                const std::optional<parked_key>& after) {
  if (max_keys == 0 || max_keys > 100'000) co_return errc::invalid_argument;
  std::vector<std::optional<std::string>> params{std::to_string(max_keys),
                                                 after ? std::optional(after->workflow) : std::nullopt,
                                                 after ? std::optional(after->key) : std::nullopt};
  const auto* statement =
      kind == parked_kind::concurrency ? &detail::sql::wake_key_parked : &detail::sql::wake_throttled;
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice). A repeat is
  // harmless: a run woken twice is due either way.
  std::function<result<parked_sweep>(detail::pg_connection&)> sweep =
      [params = std::move(params), statement, max_keys](detail::pg_connection& c) -> result<parked_sweep> {
    auto r = c.exec_blocking(*statement, params);
    if (!r) return r.error();
    const PGresult* res = r->get();
    parked_sweep out;
    out.woken = static_cast<std::size_t>(detail::to_int64(detail::get_text(res, 0, 0)));
    const auto keys = static_cast<std::size_t>(detail::to_int64(detail::get_text(res, 0, 1)));
    // A full page: the next sweep goes on after its last key; otherwise it starts over.
    if (keys == max_keys && !PQgetisnull(res, 0, 2))
      out.next =
          parked_key{std::string(detail::get_text(res, 0, 2)), std::string(detail::get_text(res, 0, 3))};
    if (!PQgetisnull(res, 0, 4)) out.next_free_at = detail::from_micros(detail::get_text(res, 0, 4));
    return out;
  };
  co_return co_await impl_->on_pool<parked_sweep>(std::move(sweep), impl_->request_deadline());
}

}  // namespace keel::storage
