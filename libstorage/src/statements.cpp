#include "statements.hpp"

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "statement_parts.hpp"

// Batched statements take one jsonb array of rows ($1) and expand it with jsonb_to_recordset: one statement
// per kind of write, whatever the batch size, and no array-literal escaping of user JSON. WITH ORDINALITY
// numbers the rows (`ord`, from 1), and a fenced statement returns the `ord` of each row it applied: a write
// is acknowledged only by the row it wrote. Timestamps travel as microseconds since the Unix epoch.
namespace keel::storage::detail::sql {

std::string log_cte(std::string_view source) {
  std::string sql = R"sql(logged AS (
  INSERT INTO keel.run_log (pos, n, runs, kinds, data)
  SELECT keel.log_next(), count(*), array_agg(ev.run), array_agg(ev.kind), array_agg(ev.data)
  FROM (SELECT * FROM ()sql";
  sql.append(source);
  // Sorted once, below the aggregates (which keep their input's order).
  sql.append(R"sql() e(run, kind, data, o)
        WHERE current_setting('keel.log', true) IS DISTINCT FROM 'off' ORDER BY e.o) ev
  HAVING count(*) > 0))sql");
  return sql;
}

std::string hook_expiry_key(std::string_view h) {
  return "coalesce(" + std::string(h) + ".expires_at, 'infinity'::timestamptz)";
}

std::string hook_is_open(std::string_view h) {
  return std::string(h) + ".status = 'open' AND " + hook_expiry_key(h) + " > now()";
}

std::string run_is_live(std::string_view r) {
  return std::string(r) + ".status IN ('queued', 'running', 'sleeping', 'waiting')";
}

std::string flow_control_values(std::string_view input, std::string_view v, const flow_overrides& o) {
  const std::string in(input), rule(v);
  const auto either = [](std::string_view own, const std::string& declared) {
    return std::string("coalesce(").append(own).append(", ").append(declared).append(")");
  };
  const std::string climit = either(o.concurrency_limit, rule + ".concurrency_limit");
  const std::string tlimit = either(o.throttle_limit, rule + ".throttle_limit");
  const std::string twindow = either(o.throttle_window_ms, rule + ".throttle_window_ms");
  const auto key = [&](std::string_view own, const std::string& path) {
    return std::string("keel.short_key(coalesce(").append(own).append(", ") + in + " #>> " + path + ", ''))";
  };
  const std::string throttled = tlimit + " IS NOT NULL AND " + twindow + " IS NOT NULL";
  const std::string fair =
      std::string("(").append(o.fair_key).append(" IS NOT NULL OR ") + rule + ".fair_key IS NOT NULL)";
  return "CASE WHEN " + climit + " IS NOT NULL THEN " + key(o.concurrency_key, rule + ".concurrency_key") +
         " END, " + climit + ", CASE WHEN " + throttled + " THEN " +
         key(o.throttle_key, rule + ".throttle_key") + " END, CASE WHEN " + throttled + " THEN " + tlimit +
         " END, CASE WHEN " + throttled + " THEN " + twindow + " END, CASE WHEN " + fair + " THEN " +
         key(o.fair_key, rule + ".fair_key") + " END, CASE WHEN " + fair + " THEN " +
         either(o.fair_weight, "1") + " END";
}

namespace {

/// `text` with each `{name}` in `values` replaced.
std::string fill(std::string text,
                 std::initializer_list<std::pair<std::string_view, std::string_view>> values) {
  for (const auto& [name, value] : values) {
    const std::string mark = std::string("{").append(name).append("}");
    for (auto at = text.find(mark); at != std::string::npos; at = text.find(mark, at + value.size()))
      text.replace(at, mark.size(), value);
  }
  return text;
}

/// `{cte}`: a CTE that makes slots 1..limit in `{table}` for each (workflow, key, limit) of `{from}` not made
/// yet (the last slot is made with the others, in one statement, so finding it means all are there).
constexpr std::string_view k_make_slots = R"sql(
{cte} AS (
  INSERT INTO {table} (workflow, key, slot)
  SELECT k.workflow, k.{key}, g
  FROM (SELECT DISTINCT workflow, {key}, {limit} FROM {from} WHERE {key} IS NOT NULL AND {limit} IS NOT NULL) k
  CROSS JOIN generate_series(1, k.{limit}) g
  WHERE NOT EXISTS (SELECT 1 FROM {table} s
                    WHERE s.workflow = k.workflow AND s.key = k.{key} AND s.slot = k.{limit})
  ON CONFLICT DO NOTHING),)sql";

}  // namespace

std::string slots_made_cte(std::string_view inserted) {
  return fill(std::string(k_make_slots), {{"cte", "slots_made"},
                                          {"table", "keel.concurrency_slots"},
                                          {"key", "concurrency_key"},
                                          {"limit", "concurrency_limit"},
                                          {"from", inserted}}) +
         fill(std::string(k_make_slots), {{"cte", "throttle_slots_made"},
                                          {"table", "keel.throttle_slots"},
                                          {"key", "throttle_key"},
                                          {"limit", "throttle_limit"},
                                          {"from", inserted}});
}

std::string declared_rule_join(std::string_view v, std::string_view workflow, std::string_view version) {
  return std::string("LEFT JOIN keel.workflow_versions ").append(v) + " ON " + std::string(v) +
         ".workflow = " + std::string(workflow) + " AND " + std::string(v) +
         ".version = " + std::string(version);
}

std::string slots_freed_ctes(std::string_view stopped) {
  return R"sql(
slots_freed AS (
  UPDATE keel.concurrency_slots s SET holder = NULL
  FROM (SELECT id, workflow, concurrency_key FROM )sql" +
         std::string(stopped) + R"sql( WHERE concurrency_key IS NOT NULL) x
  WHERE s.workflow = x.workflow AND s.key = x.concurrency_key AND s.holder = x.id
  RETURNING s.workflow, s.key),
slots_woken AS (
  UPDATE keel.runs parked_run SET due_at = now()
  FROM (SELECT p.id
        FROM (SELECT workflow, key, count(*) AS n FROM slots_freed GROUP BY workflow, key) f
        CROSS JOIN LATERAL (
          SELECT id FROM keel.runs
          WHERE workflow = f.workflow AND concurrency_key = f.key AND due_at = 'infinity'
            AND key_parked_at IS NOT NULL
          ORDER BY priority DESC, key_parked_at
          LIMIT f.n
          FOR UPDATE SKIP LOCKED) p) w
  WHERE parked_run.id = w.id
  RETURNING pg_notify('keel_runs', '')),)sql";
}

std::string hook_takes_resume(std::string_view h, std::string_view r) {
  return hook_is_open(h) + " AND " + run_is_live(r);
}

std::string live_run_of(std::string_view h, std::string_view columns) {
  return "CROSS JOIN LATERAL (SELECT " + std::string(columns) +
         " FROM keel.runs r WHERE r.id = " + std::string(h) + ".run_id AND " + run_is_live("r") +
         " OFFSET 0) r";
}

namespace {

/// The `logged` CTE of a checkpoint: its step rows, by reference (see keel.run_log), each after its
/// step_started when the step asks for it (`log_start`: a ctx.step whose start was not logged while it ran):
/// a fast step's start costs no statement of its own. `again`: only the rows inserted now (`ins`; a retry
/// finds its own earlier rows and logs nothing twice); otherwise every fenced row, all of which the statement
/// inserts (a join of the two CTEs would be a nested loop over the batch).
std::string log_steps_cte(bool again) {
  std::string sql = R"sql(logged AS (
  INSERT INTO keel.run_log (pos, n, runs, kinds, data, seqs, epochs)
  SELECT keel.log_next(), count(*), array_agg(ev.id), array_agg(ev.kind), array_agg(NULL::jsonb),
         array_agg(ev.seq), array_agg(ev.epoch)
  FROM (SELECT f.id, k.kind, f.seq, f.epoch
        FROM fenced f)sql";
  if (again) sql.append(" JOIN ins ON ins.run_id = f.id AND ins.seq = f.seq");
  sql.append(R"sql(
        CROSS JOIN LATERAL (VALUES (0, 'step_started'),
                                   (1, CASE WHEN f.status = 'completed' THEN 'step_completed'
                                            ELSE 'step_failed' END)) k(o, kind)
        WHERE current_setting('keel.log', true) IS DISTINCT FROM 'off'
          AND (k.o = 1 OR f.log_start IS TRUE)
        ORDER BY f.id, f.seq, k.o) ev
  HAVING count(*) > 0))sql");
  return sql;
}

}  // namespace

std::string keep_step_details_cte(std::string_view gone) {
  std::string sql = R"sql(kept AS (
  UPDATE keel.run_log l
  SET data = (SELECT array_agg(coalesce(x.data, CASE WHEN g.seq IS NOT NULL THEN jsonb_build_object(
                       'seq', g.seq, 'name', g.name, 'output', g.output, 'error', g.error,
                       'attempts', g.attempts, 'started_at', keel.micros(g.started_at),
                       'duration_us', keel.micros(g.finished_at) - keel.micros(g.started_at),
                       'branch', g.branch, 'branch_seq', g.branch_seq) END) ORDER BY x.i)
              FROM unnest(l.runs, l.data, l.seqs, l.epochs) WITH ORDINALITY x(run, data, seq, epoch, i)
              LEFT JOIN )sql";
  sql.append(gone);
  sql.append(R"sql( g ON g.run_id = x.run AND g.seq = x.seq AND g.epoch = x.epoch)
  WHERE l.runs @> ARRAY[$1::uuid] AND l.seqs IS NOT NULL
    AND l.epochs && ARRAY(SELECT DISTINCT epoch FROM )sql");
  sql.append(gone);
  sql.append(R"sql()))sql");
  return sql;
}

const statement begin{"keel_begin", "BEGIN"};
const statement commit{"keel_commit", "COMMIT"};

// Inserts new runs; an existing id (a retried batch) or idempotency key is skipped.
// A JSON null input arrives as SQL NULL from jsonb_to_recordset: stored as the JSON null it was.
const std::string enqueue_insert_sql = std::string(
                                           R"sql(
WITH ins AS (
INSERT INTO keel.runs (id, workflow, version, status, input, idempotency_key, priority, due_at,
                       concurrency_key, concurrency_limit, throttle_key, throttle_limit, throttle_window_ms,
                       fair_key, fair_weight, traceparent)
SELECT x.id, x.workflow, x.version, 'queued', coalesce(x.input, 'null'), x.key, x.priority,
       coalesce(to_timestamp(x.run_at::double precision / 1e6), now()),
       )sql" +
                                           flow_control_values("x.input", "v",
                                                               {"x.ckey", "x.climit", "x.tkey", "x.tlimit",
                                                                "x.twindow", "x.fkey", "x.fweight"}) +
                                           R"sql(, x.tp
FROM jsonb_to_recordset($1::jsonb) AS x(id uuid, workflow text, version int, input jsonb, key text,
                                        priority int, run_at bigint, ckey text, climit int, tkey text,
                                        tlimit int, twindow bigint, fkey text, fweight int, tp text)
)sql" + declared_rule_join("v", "x.workflow", "x.version") +
                                           R"sql(
ON CONFLICT DO NOTHING
RETURNING id, workflow, version, priority, due_at, fair_vtime, concurrency_key, concurrency_limit, throttle_key, throttle_limit, throttle_window_ms),)sql") +
                                       slots_made_cte("ins") + "\n" + log_cte(R"sql(
  SELECT id, 'run_enqueued',
         jsonb_strip_nulls(jsonb_build_object('workflow', workflow, 'version', version, 'priority', priority,
                                              'run_at', CASE WHEN due_at > now() AND fair_vtime IS NULL
                                                             THEN keel.micros(due_at) END)),
         0::bigint
  FROM ins)sql") +
                                       R"sql(
SELECT count(*) FROM ins)sql";
const statement enqueue_insert{"keel_enqueue_insert", enqueue_insert_sql.c_str()};

// For rows with an idempotency key: the run that holds the key, and whether it matches the request.
// Runs after enqueue_insert in the same transaction, so it sees this batch's inserts and any committed rival.
const statement enqueue_resolve{"keel_enqueue_resolve", R"sql(
SELECT x.ord, r.id::text, (r.workflow = x.workflow AND r.input = coalesce(x.input, 'null')) AS same
FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (workflow text, input jsonb, key text))
     WITH ORDINALITY AS x(workflow, input, key, ord)
JOIN keel.runs r ON r.idempotency_key = x.key AND r.idempotency_key IS NOT NULL
WHERE x.key IS NOT NULL)sql"};

// Wakes idle workers in other processes (delivered at commit; several in one transaction fold into one).
// Sent once per batch that enqueues: a NOTIFY takes a global lock at commit, so never once per run.
const statement notify_runs{"keel_notify_runs", "SELECT pg_notify('keel_runs', '')"};

// Fenced checkpoints: the step rows of exactly the runs whose lease (owner, epoch) still holds. The lease is
// checked under a share lock on the run row, not by updating it: a cancel or heartbeat (an UPDATE) waits
// for this transaction, and a claim skips the locked row (SKIP LOCKED) until it committed, so a step row
// never lands after its lease was lost; and the run row gets no new version per step. Today a batch holds at
// most one checkpoint per run (a run's next step starts only after its previous checkpoint committed).
namespace {
std::string checkpoint_steps_sql(bool again) {
  std::string sql = R"sql(
WITH x AS (
  SELECT * FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (id uuid, owner text, epoch bigint, seq int,
                                                             name text, status text, output jsonb,
                                                             error jsonb, attempts int, started bigint,
                                                             finished bigint, branch text, branch_seq int,
                                                             log_start bool))
       WITH ORDINALITY AS x(id, owner, epoch, seq, name, status, output, error, attempts, started, finished,
                            branch, branch_seq, log_start, ord)),
fenced AS (
  SELECT x.* FROM x JOIN keel.runs r
    ON r.id = x.id AND r.owner = x.owner AND r.epoch = x.epoch AND r.status = 'running'
  FOR SHARE OF r),
ins AS (
  INSERT INTO keel.steps (run_id, seq, name, status, output, error, attempts, started_at, finished_at, epoch,
                          branch, branch_seq)
  SELECT id, seq, name, status, output, error, attempts, to_timestamp(started::double precision / 1e6),
         to_timestamp(finished::double precision / 1e6), epoch, branch, branch_seq
  FROM fenced)sql";
  // What a checkpoint logs: the steps it inserted (a retry finds its own, and logs nothing twice).
  const auto logged = log_steps_cte(again);
  const std::string returning = "\n  RETURNING run_id, seq, status, epoch";
  if (!again) return sql + returning + "),\n" + logged + "\nSELECT ord FROM fenced";
  // A retry acknowledges what it inserted now, and the rows its own lost attempt wrote (same epoch, same
  // record); a different record at that position is not this write's, and is reported as fenced.
  return sql + R"sql(
  ON CONFLICT (run_id, seq) DO NOTHING)sql" +
         returning + "),\n" + logged + R"sql(
SELECT f.ord FROM fenced f
WHERE EXISTS (SELECT 1 FROM ins WHERE ins.run_id = f.id AND ins.seq = f.seq)
   OR EXISTS (SELECT 1 FROM keel.steps s
              WHERE s.run_id = f.id AND s.seq = f.seq AND s.epoch = f.epoch AND s.name = f.name
                AND s.status = f.status AND s.output IS NOT DISTINCT FROM f.output
                AND s.error IS NOT DISTINCT FROM f.error))sql";
}
// A first attempt inserts plainly: its step rows cannot exist yet (a conflict is an error, never silence).
const std::string checkpoint_first_sql = checkpoint_steps_sql(false);
// A batch retried after its COMMIT's acknowledgement was lost may find its own rows.
const std::string checkpoint_again_sql = checkpoint_steps_sql(true);
}  // namespace

const statement checkpoint_steps{"keel_checkpoint_steps", checkpoint_first_sql.c_str()};

namespace {
// Events a held run reports without a change of state (step_started, step_retrying): appended for the rows
// whose lease holds now (a fenced attempt's events never show). `again` (a retried transaction that may
// have committed): rows already logged are skipped, found by their run, kind and data.
std::string append_log_sql(bool again) {
  std::string sql = R"sql(
WITH x AS (
  SELECT * FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (id uuid, owner text, epoch bigint, kind text, data jsonb))
       WITH ORDINALITY AS x(id, owner, epoch, kind, data, ord)),
ok AS (
  SELECT x.* FROM x JOIN keel.runs r ON r.id = x.id AND r.owner = x.owner AND r.epoch = x.epoch
  WHERE r.status = 'running')sql";
  if (again) {
    sql += R"sql(
    AND NOT EXISTS (
      SELECT 1 FROM keel.run_log l CROSS JOIN LATERAL unnest(l.runs, l.kinds, l.data) u(run, kind, data)
      WHERE l.runs @> ARRAY[x.id] AND u.run = x.id AND u.kind = x.kind AND u.data = x.data))sql";
  }
  // Locked like a checkpoint's fence: a claim, cancel or rewind in progress is waited for, so an event of
  // the execution it fences cannot land after the new one's. (Appended piece by piece: g++ 12 at -O3
  // reports a false -Wrestrict in `"literal" + std::string&&`.)
  sql.append("\n  FOR SHARE OF r),\n")
      .append(log_cte("SELECT ok.id, ok.kind, ok.data, ok.ord FROM ok"))
      .append(R"sql(
SELECT ord FROM ok)sql");
  return sql;
}
const std::string append_log_first_sql = append_log_sql(false);
const std::string append_log_again_sql = append_log_sql(true);
}  // namespace
const statement append_log{"keel_append_log", append_log_first_sql.c_str()};
const statement append_log_again{"keel_append_log_again", append_log_again_sql.c_str()};
const statement checkpoint_steps_again{"keel_checkpoint_steps_again", checkpoint_again_sql.c_str()};

// Fenced completion or failure. Matching on owner+epoch (not status) keeps a retried batch idempotent; it
// logs only a finish it makes (a retry finds the run finished already).
const std::string finish_runs_sql = std::string(R"sql(
WITH x AS (
  SELECT * FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (id uuid, owner text, epoch bigint, status text,
                                                             output jsonb, error jsonb))
       WITH ORDINALITY AS x(id, owner, epoch, status, output, error, ord)),
was AS (SELECT r.id, r.status FROM keel.runs r JOIN x ON r.id = x.id),
upd AS (
  UPDATE keel.runs r
  SET status = x.status, output = x.output, error = x.error, due_at = NULL, finished_at = now()
  FROM x
  WHERE r.id = x.id AND r.owner = x.owner AND r.epoch = x.epoch
    AND (r.status = 'running' OR r.status = x.status)
  RETURNING x.ord, r.id, x.status, x.output, x.error, r.workflow, r.concurrency_key),)sql") +
                                    // A repeat frees nothing: the run's slot was freed by the first (and
                                    // whoever took it since is its holder). Not joined to `was`: a second
                                    // reference would materialize it, and the log's join to it would loop.
                                    slots_freed_ctes("upd") + "\n" + log_cte(R"sql(
  SELECT u.id, 'run_' || u.status,
         CASE WHEN u.status = 'completed' THEN jsonb_build_object('output', u.output)
              ELSE jsonb_build_object('error', u.error) END,
         u.ord
  FROM upd u JOIN was w ON w.id = u.id
  WHERE w.status = 'running')sql") +
                                    R"sql(
SELECT ord FROM upd)sql";
const statement finish_runs{"keel_finish_runs", finish_runs_sql.c_str()};

// Hands held runs back to the queue, due now. The epoch is left as it is (the next claim bumps it; clearing
// the owner already fences this worker), so that a retried batch finds its own release and acknowledges it.
// Not a recovery: the run was handed back, not lost.
const std::string release_runs_sql = std::string(R"sql(
WITH x AS (
  SELECT * FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (id uuid, owner text, epoch bigint))
       WITH ORDINALITY AS x(id, owner, epoch, ord)),
was AS (SELECT r.id, r.status FROM keel.runs r JOIN x ON r.id = x.id),
upd AS (
  UPDATE keel.runs r SET status = 'queued', owner = NULL, due_at = now()
  FROM x
  WHERE r.id = x.id AND r.epoch = x.epoch
    AND ((r.owner = x.owner AND r.status = 'running') OR (r.owner IS NULL AND r.status = 'queued'))
  RETURNING x.ord, r.id),
)sql") + log_cte(R"sql(
  SELECT u.id, 'run_released', '{}'::jsonb, u.ord
  FROM upd u JOIN was w ON w.id = u.id WHERE w.status = 'running')sql") +
                                     R"sql(
SELECT ord FROM upd)sql";
const statement release_runs{"keel_release_runs", release_runs_sql.c_str()};

namespace {

// Concurrency keys and throttles in a claim (026_concurrency_keys.sql, 027_throttle.sql). From `due` (the
// locked due runs, with their workflow, priority, due_at, claims, flow-control columns, key_parked_at,
// recovery and cancel), `c` is what the claim takes and `blocked` what it parks. A due run needs a slot of
// its concurrency key unless it holds one already (a recovery: it never stopped running) or is about to be
// cancelled, and a slot of its throttle key if this is its first start. The runs of one key are ranked in
// start order and matched to that key's free slots, locked here (SKIP LOCKED, on a one-table condition that
// PostgreSQL checks again on the newest row version: a slot taken meanwhile is never taken twice). A run
// takes its slots only if it gets every one it needs; the others stay as they were (locked until commit,
// unchanged), and the run is parked out of the claim range until a slot frees up.
std::string concurrency_slots_ctes() {
  return R"sql(
keyed AS MATERIALIZED (
  SELECT id, workflow, concurrency_key, concurrency_limit,
         row_number() OVER (PARTITION BY workflow, concurrency_key
                            ORDER BY priority DESC, coalesce(key_parked_at, due_at), id) AS n
  FROM due WHERE concurrency_key IS NOT NULL AND NOT recovery AND NOT cancel),
free AS MATERIALIZED (
  SELECT w.workflow, w.concurrency_key, s.slot,
         row_number() OVER (PARTITION BY w.workflow, w.concurrency_key ORDER BY s.slot) AS n
  FROM (SELECT workflow, concurrency_key, min(concurrency_limit) AS lim, count(*) AS wanted
        FROM keyed GROUP BY workflow, concurrency_key) w
  CROSS JOIN LATERAL (
    SELECT slot FROM keel.concurrency_slots
    WHERE workflow = w.workflow AND key = w.concurrency_key AND slot <= w.lim AND holder IS NULL
    ORDER BY slot LIMIT w.wanted
    FOR UPDATE SKIP LOCKED) s),
throttled AS MATERIALIZED (
  SELECT id, workflow, throttle_key, throttle_limit,
         row_number() OVER (PARTITION BY workflow, throttle_key
                            ORDER BY priority DESC, coalesce(key_parked_at, due_at), id) AS n
  FROM due WHERE throttle_key IS NOT NULL AND claims = 0 AND NOT recovery AND NOT cancel),
opened AS MATERIALIZED (
  SELECT w.workflow, w.throttle_key, s.slot,
         row_number() OVER (PARTITION BY w.workflow, w.throttle_key ORDER BY s.slot) AS n
  FROM (SELECT workflow, throttle_key, min(throttle_limit) AS lim, count(*) AS wanted
        FROM throttled GROUP BY workflow, throttle_key) w
  CROSS JOIN LATERAL (
    SELECT slot FROM keel.throttle_slots
    WHERE workflow = w.workflow AND key = w.throttle_key AND slot <= w.lim AND free_at <= now()
    ORDER BY slot LIMIT w.wanted
    FOR UPDATE SKIP LOCKED) s),
placed AS MATERIALIZED (
  SELECT d.id, d.workflow, d.concurrency_key, f.slot AS cslot, d.throttle_key, o.slot AS tslot,
         d.throttle_window_ms,
         (k.id IS NOT NULL AND f.slot IS NULL) OR (t.id IS NOT NULL AND o.slot IS NULL) AS short,
         k.id IS NOT NULL AND f.slot IS NULL AS for_concurrency
  FROM due d
  LEFT JOIN keyed k ON k.id = d.id
  LEFT JOIN free f ON f.workflow = k.workflow AND f.concurrency_key = k.concurrency_key AND f.n = k.n
  LEFT JOIN throttled t ON t.id = d.id
  LEFT JOIN opened o ON o.workflow = t.workflow AND o.throttle_key = t.throttle_key AND o.n = t.n
  WHERE k.id IS NOT NULL OR t.id IS NOT NULL),
c AS MATERIALIZED (
  SELECT * FROM due WHERE id NOT IN (SELECT id FROM placed WHERE short)),
blocked AS MATERIALIZED (
  SELECT due.*, p.for_concurrency FROM due JOIN placed p ON p.id = due.id WHERE p.short),
took AS (
  UPDATE keel.concurrency_slots s SET holder = p.id
  FROM placed p
  WHERE NOT p.short AND s.workflow = p.workflow AND s.key = p.concurrency_key AND s.slot = p.cslot),
spent AS (
  UPDATE keel.throttle_slots s SET free_at = now() + p.throttle_window_ms * interval '1 millisecond'
  FROM placed p
  WHERE NOT p.short AND s.workflow = p.workflow AND s.key = p.throttle_key AND s.slot = p.tslot),
parked AS (
  UPDATE keel.runs parked_run
  SET due_at = coalesce(parked_run.cancel_deadline, 'infinity'),  -- asked to cancel: cancelled by then
      key_parked_at = coalesce(parked_run.key_parked_at, b.due_at),
      fair_vtime = NULL  -- out of the fair queue: it starts in its key's order
  FROM blocked b WHERE parked_run.id = b.id
  RETURNING parked_run.id, NOT b.for_concurrency AS for_throttle),)sql";
}

// The log events of the runs a claim parks: run_blocked, the first time each waits for a key, with why.
std::string blocked_log_source() {
  return R"sql(SELECT b.id, 'run_blocked',
         CASE WHEN b.for_concurrency
              THEN jsonb_build_object('reason', 'concurrency', 'key', b.concurrency_key,
                                      'limit', b.concurrency_limit)
              ELSE jsonb_build_object('reason', 'throttle', 'key', b.throttle_key, 'limit', b.throttle_limit,
                                      'window_ms', b.throttle_window_ms) END,
         2::bigint
  FROM blocked b WHERE b.key_parked_at IS NULL)sql";
}

// The claim's result rows of the runs it parked: marked 'p' (for a concurrency key) or 'w' (for a throttle's
// window) where a claimed row says 'f'.
std::string parked_rows() {
  return "SELECT id::text, NULL, NULL, NULL, NULL, NULL, NULL, NULL, CASE WHEN for_throttle THEN 'w' ELSE "
         "'p' "
         "END, NULL, NULL, NULL, NULL FROM parked";
}

/// The columns of keel.runs a claim reads of each run it may take, but its due time.
constexpr std::string_view k_claimed_columns =
    "id, status, recoveries, cancel_deadline, claims, epoch, waiting_for, workflow, priority, "
    "concurrency_key, "
    "concurrency_limit, throttle_key, throttle_limit, throttle_window_ms, key_parked_at";

}  // namespace

// Atomic claim of due runs (queued, or running with an expired lease) by priority then due time, for the
// (workflow, version) pairs this worker has registered. SKIP LOCKED lets many workers claim at once.
//
// The scan reads only due work, however many runs are parked in the future: it walks the distinct priority
// bands of runs_claimable (one index descent each) and, inside a band, the index range due_at <= now(),
// so 200,000 runs queued for tomorrow cost one descent, not 200,000 index entries. Beside it, each band's
// fair queue (runs_fair, 028_fair_claims.sql) is read in virtual-time order, and the two take turns: one
// run of each in turn, the first by a coin toss, so the runs without a fairness key count as one key and a
// claim of one run starves neither.
//
// Idempotent on retry: each claim request carries a token ($6), stored on the runs it takes. A retry ($7
// true: the first attempt may have committed with its acknowledgement lost) first adopts the runs still held
// under that token — found among running runs, in the same index, so only the rare retry pays for it — and
// claims only the rest.
//
// A run whose lease expired is a recovery (its worker crashed or stalled); past $5 recoveries it is failed
// as dead_lettered instead of claimed again, so a run that crashes every worker stops and shows.
// Each claim bumps the epoch.
//
// Whether the run has history to load (column 7) is read from the locked row, never from keel.steps: a
// checkpoint that committed after this statement's snapshot (a stalled worker's, just before its lease was
// taken over) would be missed by a read of keel.steps here, and its step run again. Any run claimed before
// may have steps; the caller loads them after this transaction commits, and the bumped epoch fences
// everything later.
const std::string claim_runs_sql = std::string(R"sql(
WITH RECURSIVE band(p) AS (
  (SELECT priority FROM keel.runs WHERE status IN ('queued', 'running', 'sleeping', 'waiting') ORDER BY priority DESC LIMIT 1)
  UNION ALL
  SELECT (SELECT priority FROM keel.runs WHERE status IN ('queued', 'running', 'sleeping', 'waiting') AND priority < band.p
          ORDER BY priority DESC LIMIT 1)
  FROM band WHERE band.p IS NOT NULL),
wanted AS (SELECT w.workflow, w.version FROM jsonb_to_recordset($4::jsonb) AS w(workflow text, version int)),
coin AS (SELECT random() < 0.5 AS heads),  -- which queue goes first in each turn
prior AS (
  SELECT id FROM keel.runs
  WHERE $7::bool AND status = 'running' AND owner = $1 AND claim_token = $6::uuid),
due AS (
  SELECT x.id, x.status = 'running' AS recovery, x.status AS was, x.claims, x.epoch, x.recoveries,
         x.waiting_for,
         x.cancel_deadline IS NOT NULL AND x.cancel_deadline <= now() AS cancel,
         x.status = 'running' AND x.recoveries >= $5::int AS dead,
         x.workflow, x.priority, x.due_at, x.concurrency_key, x.concurrency_limit, x.throttle_key,
         x.throttle_limit, x.throttle_window_ms, x.key_parked_at, x.fair_vtime
  FROM band CROSS JOIN LATERAL (
    SELECT * FROM (
      SELECT n.*, NULL::double precision AS fair_vtime, row_number() OVER (ORDER BY n.due_at) AS turn
      FROM (SELECT )sql" + std::string(k_claimed_columns) +
                                               R"sql(, due_at
            FROM keel.runs
            WHERE status IN ('queued', 'running', 'sleeping', 'waiting') AND priority = band.p
              AND due_at <= now() AND fair_vtime IS NULL
              AND (workflow, version) IN (SELECT workflow, version FROM wanted)
            ORDER BY due_at
            LIMIT $2::int
            FOR UPDATE SKIP LOCKED) n
      UNION ALL
      -- The fair queue (028_fair_claims.sql): by virtual time; a run's due time is when it was enqueued.
      SELECT f.*, row_number() OVER (ORDER BY f.fair_vtime) AS turn
      FROM (SELECT )sql" + std::string(k_claimed_columns) +
                                               R"sql(, created_at AS due_at, fair_vtime
            FROM keel.runs
            WHERE fair_vtime IS NOT NULL AND status = 'queued' AND priority = band.p
              AND (workflow, version) IN (SELECT workflow, version FROM wanted)
            ORDER BY fair_vtime
            LIMIT $2::int
            FOR UPDATE SKIP LOCKED) f) both_queues
    ORDER BY turn, (fair_vtime IS NULL) = (SELECT heads FROM coin) DESC
    LIMIT $2::int) x
  WHERE band.p IS NOT NULL
  LIMIT greatest($2::int - (SELECT count(*) FROM prior), 0)),
)sql") + concurrency_slots_ctes() +
                                   R"sql(
claimed AS (
UPDATE keel.runs r
SET status = CASE WHEN c.cancel THEN 'cancelled' WHEN c.dead THEN 'failed' ELSE 'running' END,
    owner = CASE WHEN c.dead OR c.cancel THEN NULL ELSE $1 END,
    epoch = r.epoch + 1,
    claims = r.claims + CASE WHEN c.dead OR c.cancel THEN 0 ELSE 1 END,
    recoveries = r.recoveries + CASE WHEN c.recovery AND NOT c.cancel THEN 1 ELSE 0 END,
    due_at = CASE WHEN c.dead OR c.cancel THEN NULL
                  ELSE least(now() + $3::bigint * interval '1 millisecond',
                             coalesce(r.cancel_deadline, 'infinity')) END,
    started_at = coalesce(r.started_at, now()),
    finished_at = CASE WHEN c.dead OR c.cancel THEN now() END,
    claim_token = $6::uuid,
    key_parked_at = NULL,
    fair_vtime = NULL,
    error = CASE WHEN c.cancel THEN jsonb_build_object(
              'code', 'cancelled',
              'message', 'run cancelled: it did not finish within its cancel grace, and was fenced off')
            WHEN c.dead THEN jsonb_build_object(
              'code', 'dead_lettered',
              'message', 'the run lost its worker ' || (r.recoveries + 1) || ' times (a crash, a kill or a '
                         'stall past its lease each time); max_recoveries is ' || $5::int,
              'recoveries', r.recoveries + 1, 'claims', r.claims, 'last_owner', r.owner)
            ELSE r.error END
FROM c WHERE r.id = c.id
RETURNING r.id::text, r.workflow, r.version, r.input::text, r.epoch, r.claims, r.claims > 1, r.recoveries,
          CASE WHEN c.cancel THEN 'c' WHEN c.dead THEN 't' ELSE 'f' END, r.generation,
          r.cancel_deadline IS NOT NULL, r.parent_id::text, r.traceparent),
)sql" +
                                   log_cte(R"sql(
  SELECT c.id, 'run_resumed',
         jsonb_build_object('by', coalesce(c.waiting_for->>'woken_by', 'timer'), 'from', c.was), 0::bigint
  FROM c WHERE c.was IN ('sleeping', 'waiting') AND NOT c.cancel AND NOT c.dead
  UNION ALL
  SELECT c.id,
         CASE WHEN c.cancel THEN 'run_cancelled' WHEN c.dead THEN 'run_dead_lettered' ELSE 'run_started' END,
         CASE WHEN c.cancel
              THEN jsonb_build_object('error', jsonb_build_object('code', 'cancelled', 'reason', 'grace over'))
              WHEN c.dead
              THEN jsonb_build_object('error', jsonb_build_object('code', 'dead_lettered',
                                                                  'recoveries', c.recoveries + 1))
              ELSE jsonb_build_object('execution', c.claims + 1, 'worker', $1::text, 'epoch', c.epoch + 1,
                                      'recovery', c.recovery) END,
         1::bigint
  FROM c
  UNION ALL
  )sql" + blocked_log_source() + R"sql()sql") +
                                   R"sql(
SELECT * FROM claimed
UNION ALL
)sql" + parked_rows() + R"sql(
UNION ALL
SELECT r.id::text, r.workflow, r.version, r.input::text, r.epoch, r.claims, r.claims > 1, r.recoveries, 'f',
       r.generation, r.cancel_deadline IS NOT NULL, r.parent_id::text, r.traceparent
FROM keel.runs r WHERE r.id IN (SELECT id FROM prior))sql";
const statement claim_runs{"keel_claim_runs", claim_runs_sql.c_str()};

// Claims one run this worker parked in a sleep, when its wake-up timer fires: by id, due by the worker's
// clock ($3, µs; the wake time was the worker's too), so no slack for the database's clock is needed. The
// history is loaded by the next statement of the same transaction (a snapshot after this lock): a parked
// run has no writer in flight, and every checkpoint before its park committed before the park did.
// Idempotent on retry like keel_claim_runs ($6: an earlier attempt may have committed; $4: its token).
// Same columns as keel_claim_runs.
const std::string claim_parked_sql = std::string(R"sql(
WITH mine AS (
  SELECT id FROM keel.runs
  WHERE $6::bool AND id = $2::uuid AND status = 'running' AND owner = $1 AND claim_token = $4::uuid),
due AS (
  SELECT id, status AS was, claims, epoch, waiting_for, false AS recovery, false AS cancel, workflow, priority,
         due_at, concurrency_key, concurrency_limit, throttle_key, throttle_limit, throttle_window_ms,
         key_parked_at
  FROM keel.runs
  WHERE id = $2::uuid AND NOT EXISTS (SELECT 1 FROM mine)
    AND status IN ('queued', 'sleeping', 'waiting') AND due_at <= to_timestamp($3::bigint / 1e6)
    AND (cancel_deadline IS NULL OR cancel_deadline > now())
  FOR UPDATE SKIP LOCKED),
)sql") + concurrency_slots_ctes() +
                                     R"sql(
claimed AS (
  UPDATE keel.runs r
  SET status = 'running', owner = $1, epoch = r.epoch + 1, claims = r.claims + 1,
      due_at = least(now() + $5::bigint * interval '1 millisecond', coalesce(r.cancel_deadline, 'infinity')),
      started_at = coalesce(r.started_at, now()),
      claim_token = $4::uuid, key_parked_at = NULL
  FROM c WHERE r.id = c.id
  RETURNING r.id::text, r.workflow, r.version, r.input::text, r.epoch, r.claims, r.claims > 1, r.recoveries,
            'f', r.generation, r.cancel_deadline IS NOT NULL, r.parent_id::text, r.traceparent),
)sql" +
                                     log_cte(R"sql(
  SELECT c.id, 'run_resumed',
         jsonb_build_object('by', coalesce(c.waiting_for->>'woken_by', 'timer'), 'from', c.was), 0::bigint
  FROM c WHERE c.was IN ('sleeping', 'waiting')
  UNION ALL
  SELECT c.id, 'run_started',
         jsonb_build_object('execution', c.claims + 1, 'worker', $1::text, 'epoch', c.epoch + 1,
                            'recovery', false),
         1::bigint
  FROM c
  UNION ALL
  )sql" + blocked_log_source() + R"sql()sql") +
                                     R"sql(
SELECT * FROM claimed
UNION ALL
)sql" + parked_rows() + R"sql(
UNION ALL
SELECT r.id::text, r.workflow, r.version, r.input::text, r.epoch, r.claims, r.claims > 1, r.recoveries, 'f',
       r.generation, r.cancel_deadline IS NOT NULL, r.parent_id::text, r.traceparent
FROM keel.runs r WHERE r.id IN (SELECT id FROM mine))sql";
const statement claim_parked{"keel_claim_parked", claim_parked_sql.c_str()};

const statement load_steps{"keel_load_steps", R"sql(
SELECT run_id::text, seq, name, status, output::text, error::text, attempts,
       (extract(epoch FROM started_at) * 1e6)::bigint, (extract(epoch FROM finished_at) * 1e6)::bigint,
       branch, branch_seq
FROM keel.steps WHERE run_id = ANY($1::uuid[]) ORDER BY run_id, seq)sql"};

// Extends held leases; the (id, epoch) pairs not returned were taken over, cancelled or finished elsewhere.
// A run asked to cancel keeps its lease no later than its cancel deadline, and the reply says how long it
// has left (NULL: no cancel requested), so that its worker hears of the request even if it missed the
// notification, and starts nothing new past the deadline.
const statement heartbeat{"keel_heartbeat", R"sql(
UPDATE keel.runs r SET due_at = least(now() + $2::bigint * interval '1 millisecond',
                                      coalesce(r.cancel_deadline, 'infinity'))
FROM jsonb_to_recordset($1::jsonb) AS x(id uuid, owner text, epoch bigint)
WHERE r.id = x.id AND r.owner = x.owner AND r.epoch = x.epoch AND r.status = 'running'
RETURNING r.id::text, r.epoch,
          CASE WHEN r.cancel_deadline IS NOT NULL  -- (greatest() would turn a NULL into 0)
               THEN (greatest(extract(epoch FROM r.cancel_deadline - now()), 0) * 1000)::bigint END)sql"};

const statement get_run{"keel_get_run", R"sql(
SELECT id::text, workflow, version, status, input::text, output::text, error::text, idempotency_key, priority,
       owner, epoch, claims, (extract(epoch FROM created_at) * 1e6)::bigint,
       (extract(epoch FROM started_at) * 1e6)::bigint, (extract(epoch FROM finished_at) * 1e6)::bigint,
       recoveries,
       status IN ('queued', 'sleeping', 'waiting') AND NOT EXISTS (
         SELECT 1 FROM keel.workers w
         WHERE w.expires_at > now()
           AND w.workflows @> jsonb_build_array(jsonb_build_object('workflow', r.workflow, 'version', r.version)))
       , CASE WHEN status IN ('sleeping', 'waiting') THEN waiting_for::text END,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('at', (extract(epoch FROM h.at) * 1e6)::bigint,
                                                     'what', h.what, 'detail', h.detail) ORDER BY h.id),
                        '[]'::jsonb)::text
        FROM keel.run_history h WHERE h.run_id = r.id),
       generation, parent_id::text, concurrency_key, concurrency_limit,
       due_at = 'infinity' AND key_parked_at IS NOT NULL, throttle_key, throttle_limit, throttle_window_ms,
       fair_key, fair_weight, traceparent
FROM keel.runs r WHERE id = $1::uuid)sql"};

// A run's hooks that take a resume now, by position (none once the run finished: its hooks answer
// hook_closed), with the run's generation as this snapshot sees it (their tokens derive from it).
const std::string open_hooks_sql = R"sql(
SELECT h.seq, h.name, h.metadata::text, (extract(epoch FROM h.created_at) * 1e6)::bigint,
       (extract(epoch FROM h.expires_at) * 1e6)::bigint, r.generation, h.webhook IS NOT NULL
FROM keel.hooks h JOIN keel.runs r ON r.id = h.run_id
WHERE h.run_id = $1::uuid AND )sql" +
                                   hook_takes_resume("h", "r") +
                                   R"sql(
ORDER BY h.seq)sql";
const statement open_hooks{"keel_open_hooks", open_hooks_sql.c_str()};

// A worker announces (or refreshes) what it runs; its row lapses unless refreshed before `expires_at`.
const statement register_worker{"keel_register_worker", R"sql(
INSERT INTO keel.workers (id, workflows, expires_at)
VALUES ($1, $2::jsonb, now() + $3::bigint * interval '1 millisecond')
ON CONFLICT (id) DO UPDATE SET workflows = excluded.workflows, expires_at = excluded.expires_at)sql"};

const statement unregister_worker{"keel_unregister_worker", "DELETE FROM keel.workers WHERE id = $1"};

// Cancels a run ($2: the grace, ms). A run that never started, or with no grace, is cancelled at once: its
// epoch bumped, so a worker running it is fenced off at its next write. A started run with a grace is asked
// to cancel: it sees a `cancelled` error at its next step or wait (and may compensate) until its
// cancel_deadline, when the claim fences it; a parked one is woken to see it, and workers running it hear
// of it at once (NOTIFY keel_cancel, payload: the run id). Returns the run's status after the call.
const std::string cancel_run_sql = std::string(R"sql(
WITH was AS (SELECT status, cancel_deadline FROM keel.runs WHERE id = $1::uuid),
r AS (
  UPDATE keel.runs
  SET status = CASE WHEN claims = 0 OR $2::bigint = 0 THEN 'cancelled'
                    WHEN status IN ('sleeping', 'waiting') THEN 'queued' ELSE status END,
      epoch = CASE WHEN claims = 0 OR $2::bigint = 0 THEN epoch + 1 ELSE epoch END,
      due_at = CASE WHEN claims = 0 OR $2::bigint = 0 THEN NULL
                    WHEN status IN ('sleeping', 'waiting', 'queued') THEN now()
                    ELSE least(due_at, now() + $2::bigint * interval '1 millisecond') END,
      finished_at = CASE WHEN claims = 0 OR $2::bigint = 0 THEN now() END,
      error = CASE WHEN claims = 0 OR $2::bigint = 0
                   THEN '{"code":"cancelled","message":"run cancelled"}'::jsonb ELSE error END,
      cancel_deadline = CASE WHEN claims = 0 OR $2::bigint = 0 THEN cancel_deadline
                             ELSE coalesce(cancel_deadline, now() + $2::bigint * interval '1 millisecond') END,
      fair_vtime = NULL,  -- out of the fair queue (a rewind queues it again by due time)
      waiting_for = CASE WHEN status IN ('sleeping', 'waiting')
                         THEN waiting_for || '{"woken_by": "cancel"}'::jsonb ELSE waiting_for END
  WHERE id = $1::uuid AND status NOT IN ('completed', 'failed', 'cancelled')
  RETURNING id, status),
told AS (SELECT pg_notify('keel_cancel', id::text) FROM r WHERE status <> 'cancelled'),
woken AS (SELECT pg_notify('keel_runs', '') FROM r WHERE status = 'queued'),
)sql") + log_cte(R"sql(
  SELECT r.id, 'run_resumed', jsonb_build_object('by', 'cancel', 'from', w.status), 0::bigint
  FROM r, was w WHERE w.status IN ('sleeping', 'waiting') AND r.status = 'queued'
  UNION ALL
  SELECT r.id, CASE WHEN r.status = 'cancelled' THEN 'run_cancelled' ELSE 'run_cancel_requested' END,
         CASE WHEN r.status = 'cancelled' THEN jsonb_build_object('error', jsonb_build_object('code', 'cancelled'))
              ELSE jsonb_build_object('grace_ms', $2::bigint) END,
         1::bigint
  FROM r, was w WHERE r.status = 'cancelled' OR w.cancel_deadline IS NULL)sql") +
                                   R"sql(
SELECT status, (SELECT count(*) FROM told), (SELECT count(*) FROM woken) FROM r)sql";
const statement cancel_run{"keel_cancel_run", cancel_run_sql.c_str()};

// First in a cancel's transaction: the run and its descendants locked, deepest first, the order in which a
// finishing child locks its parent (keel.wake_parent): a cancel and a child's finish never wait for each
// other in a cycle.
const statement cancel_lock_tree{"keel_cancel_lock_tree", R"sql(
WITH RECURSIVE tree(id, depth) AS (
  SELECT $1::uuid, 0
  UNION ALL
  SELECT r.id, t.depth + 1 FROM keel.runs r JOIN tree t ON r.parent_id = t.id AND r.parent_id IS NOT NULL)
SELECT r.id FROM keel.runs r JOIN tree t ON t.id = r.id
ORDER BY t.depth DESC
FOR UPDATE OF r)sql"};

// After cancel_run, in the same transaction: the unfinished runs the cancelled run started (ctx.child),
// recursively, treated the same way ($2: the grace). Repeated until it changes nothing: a run that was
// inserting a child when it was cancelled held its row lock, so the cancel waited for that insert, and the
// next repetition (a new snapshot) sees the child.
const std::string cancel_descendants_sql = std::string(R"sql(
WITH RECURSIVE tree(id) AS (
  SELECT $1::uuid
  UNION ALL
  SELECT r.id FROM keel.runs r JOIN tree t ON r.parent_id = t.id AND r.parent_id IS NOT NULL),
was AS (SELECT r.id, r.status FROM keel.runs r JOIN tree t ON t.id = r.id),
r AS (
  UPDATE keel.runs r
  SET status = CASE WHEN r.claims = 0 OR $2::bigint = 0 THEN 'cancelled'
                    WHEN r.status IN ('sleeping', 'waiting') THEN 'queued' ELSE r.status END,
      epoch = CASE WHEN r.claims = 0 OR $2::bigint = 0 THEN r.epoch + 1 ELSE r.epoch END,
      due_at = CASE WHEN r.claims = 0 OR $2::bigint = 0 THEN NULL
                    WHEN r.status IN ('sleeping', 'waiting', 'queued') THEN now()
                    ELSE least(r.due_at, now() + $2::bigint * interval '1 millisecond') END,
      finished_at = CASE WHEN r.claims = 0 OR $2::bigint = 0 THEN now() END,
      error = CASE WHEN r.claims = 0 OR $2::bigint = 0
                   THEN jsonb_build_object('code', 'cancelled', 'message', 'run cancelled with its parent',
                                           'cancelled_with', $1::text)
                   ELSE r.error END,
      cancel_deadline = CASE WHEN r.claims = 0 OR $2::bigint = 0 THEN r.cancel_deadline
                             ELSE now() + $2::bigint * interval '1 millisecond' END,
      fair_vtime = NULL,
      waiting_for = CASE WHEN r.status IN ('sleeping', 'waiting')
                         THEN r.waiting_for || '{"woken_by": "cancel"}'::jsonb ELSE r.waiting_for END
  FROM tree t
  WHERE r.id = t.id AND r.id <> $1::uuid AND r.status NOT IN ('completed', 'failed', 'cancelled')
    AND (r.cancel_deadline IS NULL OR $2::bigint = 0)
  RETURNING r.id, r.status),
told AS (SELECT pg_notify('keel_cancel', id::text) FROM r WHERE status <> 'cancelled'),
woken AS (SELECT pg_notify('keel_runs', '') FROM r WHERE status = 'queued' LIMIT 1),
)sql") + log_cte(R"sql(
  SELECT r.id, 'run_resumed', jsonb_build_object('by', 'cancel', 'from', w.status), 0::bigint
  FROM r JOIN was w ON w.id = r.id WHERE w.status IN ('sleeping', 'waiting') AND r.status = 'queued'
  UNION ALL
  SELECT r.id, CASE WHEN r.status = 'cancelled' THEN 'run_cancelled' ELSE 'run_cancel_requested' END,
         CASE WHEN r.status = 'cancelled'
              THEN jsonb_build_object('error', jsonb_build_object('code', 'cancelled', 'cancelled_with', $1::text))
              ELSE jsonb_build_object('grace_ms', $2::bigint, 'cancelled_with', $1::text) END,
         1::bigint
  FROM r)sql") +
                                           R"sql(
SELECT id::text, (SELECT count(*) FROM told), (SELECT count(*) FROM woken) FROM r)sql";
const statement cancel_descendants{"keel_cancel_descendants", cancel_descendants_sql.c_str()};

const statement run_status_of{"keel_run_status", "SELECT status FROM keel.runs WHERE id = $1::uuid"};

}  // namespace keel::storage::detail::sql
