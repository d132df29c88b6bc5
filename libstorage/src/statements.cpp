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

/// `kept`: before a statement removes step rows (`gone`: the removed rows, all columns), their details go
/// into the log events that refer to them (see keel.run_log), so the log stays as it was written.
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

}  // namespace

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

// Waits (sleep, event) in two statements, so that the second reads events with a snapshot taken after the
// first locked the run rows: an event sent concurrently either committed before the lock (and is seen) or
// waits for it and then finds the run `waiting` (and wakes it). First, the fence: the runs whose lease holds,
// locked.
const statement wait_lock{"keel_wait_lock", R"sql(
SELECT x.ord
FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (id uuid, owner text, epoch bigint))
     WITH ORDINALITY AS x(id, owner, epoch, ord)
JOIN keel.runs r ON r.id = x.id AND r.owner = x.owner AND r.epoch = x.epoch AND r.status = 'running'
FOR UPDATE OF r)sql"};

// Then each fenced wait is decided: a wait recorded by an earlier attempt returns its record; an event wait
// consumes the oldest pending event of its name (recorded as the step's output in the same statement), or
// times out once its deadline passed; anything else parks the run — `sleeping` or `waiting`, due at its wake
// time or timeout, its lease released. Returns (ord, outcome, output) per fenced row; outcome is 'recorded',
// 'consumed', 'timed_out' or 'parked'. Idempotent on retry: a parked run no longer matches the fence, and a
// consumed event's step row is found as recorded.
const std::string wait_decide_sql = std::string(R"sql(
WITH x AS (
  SELECT * FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (id uuid, owner text, epoch bigint, seq int,
                                                             name text, kind text, event text,
                                                             hook_seq int, until bigint, started bigint,
                                                             seen bool))
       WITH ORDINALITY AS x(id, owner, epoch, seq, name, kind, event, hook_seq, until, started, seen, ord)),
fenced AS (
  -- A wait that parked before keeps the deadline it parked with: a timeout counts from the first execution
  -- that reached the wait, not from each resume. (The claim leaves waiting_for in place for this.)
  SELECT x.id, x.owner, x.epoch, x.seq, x.name, x.kind, x.event, x.hook_seq, x.started, x.ord,
         coalesce(CASE WHEN r.waiting_for->>'step' = x.seq::text AND r.waiting_for->>'kind' = x.kind
                       THEN (r.waiting_for->>'until')::bigint END,
                  x.until) AS until,
         r.cancel_deadline, coalesce(x.seen, false) AS seen
  FROM x JOIN keel.runs r
    ON r.id = x.id AND r.owner = x.owner AND r.epoch = x.epoch AND r.status = 'running'),
recorded AS (
  SELECT f.ord, s.output FROM fenced f JOIN keel.steps s ON s.run_id = f.id AND s.seq = f.seq
  WHERE f.kind IN ('event', 'hook')),
hk AS (
  SELECT f.ord, h.payload FROM fenced f JOIN keel.hooks h ON h.run_id = f.id AND h.seq = f.hook_seq
  WHERE f.kind = 'hook' AND h.status = 'resumed' AND f.ord NOT IN (SELECT ord FROM recorded)),
ev AS (
  SELECT f.ord, e.id AS event_id, e.payload
  FROM fenced f CROSS JOIN LATERAL (
    SELECT id, payload FROM keel.events e
    WHERE e.run_id = f.id AND e.name = f.event AND e.consumed_seq IS NULL
    ORDER BY e.id LIMIT 1
    FOR UPDATE) e
  WHERE f.kind = 'event' AND f.ord NOT IN (SELECT ord FROM recorded)),
consumed AS (
  UPDATE keel.events e SET consumed_seq = f.seq, consumed_at = now()
  FROM ev JOIN fenced f ON f.ord = ev.ord
  WHERE e.id = ev.event_id
  RETURNING e.id),
decided AS (
  SELECT f.*,
         CASE WHEN rec.ord IS NOT NULL THEN 'recorded'
              WHEN ev.ord IS NOT NULL OR hk.ord IS NOT NULL THEN 'consumed'
              -- A sleep whose wake time has come by the database's clock (the one the claim uses) is over,
              -- whatever the worker's clock says: parking it again would make it due at once, in a loop.
              WHEN f.kind = 'sleep' AND to_timestamp(f.until / 1e6) <= now() THEN 'timed_out'
              WHEN f.kind <> 'sleep' AND f.until IS NOT NULL AND to_timestamp(f.until / 1e6) <= now()
                THEN 'timed_out'
              -- Asked to cancel after the worker last looked: it must see that now, not park.
              WHEN f.cancel_deadline IS NOT NULL AND NOT f.seen THEN 'cancel'
              ELSE 'parked' END AS outcome,
         CASE WHEN rec.ord IS NOT NULL THEN rec.output
              WHEN ev.ord IS NOT NULL THEN jsonb_build_object('payload', ev.payload)
              WHEN hk.ord IS NOT NULL THEN jsonb_build_object('payload', hk.payload)
              WHEN f.kind <> 'sleep' AND f.until IS NOT NULL AND to_timestamp(f.until / 1e6) <= now()
                THEN jsonb_build_object('timed_out', true)
              WHEN f.kind <> 'sleep' THEN jsonb_strip_nulls(jsonb_build_object('until', f.until))
              ELSE jsonb_build_object('wake_at', f.until) END AS output
  FROM fenced f LEFT JOIN recorded rec ON rec.ord = f.ord LEFT JOIN ev ON ev.ord = f.ord
       LEFT JOIN hk ON hk.ord = f.ord),
step AS (
  INSERT INTO keel.steps (run_id, seq, name, status, output, error, attempts, started_at, finished_at, epoch)
  SELECT id, seq, name, 'completed', output, NULL, 1, to_timestamp(started / 1e6), now(), epoch
  FROM decided
  WHERE outcome IN ('consumed', 'timed_out') OR (outcome = 'parked' AND kind = 'sleep')
  ON CONFLICT (run_id, seq) DO NOTHING
  RETURNING run_id, seq, name, output),
parked AS (
  UPDATE keel.runs r
  SET status = CASE WHEN d.kind = 'sleep' THEN 'sleeping' ELSE 'waiting' END,
      owner = NULL,
      -- A run cleaning up after a cancel is fenced at its deadline even while it waits.
      due_at = least(to_timestamp(d.until / 1e6), d.cancel_deadline),
      waiting_for = jsonb_strip_nulls(jsonb_build_object(
                      'kind', d.kind, 'until', d.until, 'step', d.seq, 'name', d.name, 'started', d.started,
                      CASE WHEN d.kind = 'hook' THEN 'hook' ELSE 'event' END, d.event,
                      'hook_step', CASE WHEN d.kind = 'hook' THEN d.hook_seq END))
  FROM decided d
  WHERE r.id = d.id AND d.outcome = 'parked'
  RETURNING d.ord),
)sql") + log_cte(R"sql(
  SELECT d.id, 'step_completed', jsonb_build_object('seq', st.seq, 'name', st.name, 'output', st.output),
         d.ord * 2
  FROM step st JOIN decided d ON d.id = st.run_id AND d.seq = st.seq
  UNION ALL
  SELECT d.id, CASE WHEN d.kind = 'sleep' THEN 'run_sleeping' ELSE 'run_waiting' END,
         jsonb_strip_nulls(jsonb_build_object('kind', d.kind, 'until', d.until, 'step', d.seq, 'name', d.name,
                                              CASE WHEN d.kind = 'hook' THEN 'hook' ELSE 'event' END, d.event)),
         d.ord * 2 + 1
  FROM decided d WHERE d.outcome = 'parked')sql") +
                                    R"sql(
SELECT ord, outcome, output::text FROM decided)sql";
const statement wait_decide{"keel_wait_decide", wait_decide_sql.c_str()};

// A wait for any of several alternatives (arms: timers, events, hooks, child runs), after wait_lock like the
// others. Each arm that is ready has a completion time — an event's send, a hook's resume, a timer's due
// time, a child's end — and the earliest wins (ties: the earlier arm), so the winner does not depend on how
// late the run was claimed. The winner's event is consumed; the losers consume nothing, their open hooks
// close (a later resume gets hook_closed) and their timers are forgotten with the wait. Nothing ready: the
// run parks `waiting`, due at its soonest timer, and keeps its arms (with their deadlines) in waiting_for
// for the next decision. Every consumer and sender of a run's events and hooks locks the run row first, so
// the reads here need no locks.
// Modes (wait_mode): 'decide' as above; 'probe' (a parallel branch's wait) leaves the run as it is when
// nothing is ready ('blocked'); 'park' (the run's blocked branches, their arms together, grouped by branch)
// consumes nothing: 'ready' when an arm is, else the run parks — `sleeping` when every arm is a timer.
const std::string wait_any_decide_sql = std::string(R"sql(
WITH x AS (
  SELECT * FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (id uuid, owner text, epoch bigint, seq int,
                                                             name text, arms jsonb, started bigint,
                                                             seen bool, mode text, branch text,
                                                             branch_seq int))
       WITH ORDINALITY AS x(id, owner, epoch, seq, name, arms, started, seen, mode, branch, branch_seq,
                            ord)),
fenced AS (
  SELECT x.id, x.epoch, x.seq, x.name, x.started, x.ord, x.branch, x.branch_seq,
         coalesce(x.mode, 'decide') AS mode,
         CASE WHEN coalesce(x.mode, 'decide') = 'decide' AND r.waiting_for->>'kind' = 'any'
                   AND r.waiting_for->>'step' = x.seq::text
              THEN r.waiting_for->'arms' ELSE x.arms END AS arms,
         r.cancel_deadline, coalesce(x.seen, false) AS seen
  FROM x JOIN keel.runs r
    ON r.id = x.id AND r.owner = x.owner AND r.epoch = x.epoch AND r.status = 'running'),
recorded AS (
  SELECT f.ord, s.output FROM fenced f JOIN keel.steps s ON s.run_id = f.id AND s.seq = f.seq
  WHERE f.mode <> 'park'),
arm AS (
  SELECT f.ord, f.id, f.seq, a.kind, a.event, a.hook_seq, a.until, a.child, a.n
  FROM fenced f CROSS JOIN LATERAL ROWS FROM (
         jsonb_to_recordset(f.arms) AS (kind text, event text, hook_seq int, until bigint, child uuid))
       WITH ORDINALITY AS a(kind, event, hook_seq, until, child, n)
  WHERE f.ord NOT IN (SELECT ord FROM recorded)),
ready AS (
  SELECT a.ord, a.n, e.id AS event_id,
         CASE WHEN e.id IS NOT NULL THEN e.created_at
              WHEN h.status = 'resumed' THEN h.resumed_at
              WHEN h.status = 'closed' THEN now()
              WHEN c.status IN ('completed', 'failed', 'cancelled') THEN c.finished_at
              WHEN to_timestamp(a.until / 1e6) <= now() THEN to_timestamp(a.until / 1e6) END AS at,
         CASE WHEN e.id IS NOT NULL THEN jsonb_build_object('payload', e.payload)
              WHEN h.status = 'resumed' THEN jsonb_build_object('payload', h.payload)
              WHEN c.status IN ('completed', 'failed', 'cancelled')
                THEN jsonb_build_object('payload', jsonb_build_object('child', c.id, 'status', c.status,
                                                                      'output', c.output, 'error', c.error))
              ELSE jsonb_build_object('timed_out', true) END AS output
  FROM arm a
  LEFT JOIN keel.hooks h ON a.kind = 'hook' AND h.run_id = a.id AND h.seq = a.hook_seq
  LEFT JOIN keel.runs c ON a.kind = 'child' AND c.id = a.child
  LEFT JOIN LATERAL (
    SELECT ev.id, ev.payload, ev.created_at FROM keel.events ev
    WHERE a.kind = 'event' AND ev.run_id = a.id AND ev.name = a.event AND ev.consumed_seq IS NULL
    ORDER BY ev.id LIMIT 1) e ON true),
winner AS (
  SELECT DISTINCT ON (ord) ord, n, event_id, output FROM ready WHERE at IS NOT NULL ORDER BY ord, at, n),
taken AS (
  SELECT w.* FROM winner w JOIN fenced f ON f.ord = w.ord WHERE f.mode <> 'park'),
consumed AS (
  UPDATE keel.events e SET consumed_seq = f.seq, consumed_at = now()
  FROM taken w JOIN fenced f ON f.ord = w.ord
  WHERE e.id = w.event_id),
closed AS (
  UPDATE keel.hooks h SET status = 'closed'
  FROM arm a JOIN taken w ON w.ord = a.ord AND w.n <> a.n
  WHERE a.kind = 'hook' AND h.run_id = a.id AND h.seq = a.hook_seq AND h.status = 'open'),
decided AS (
  SELECT f.id, f.epoch, f.seq, f.name, f.started, f.ord, f.arms, f.cancel_deadline, f.mode, f.branch,
         f.branch_seq,
         CASE WHEN rec.ord IS NOT NULL THEN 'recorded'
              WHEN w.ord IS NOT NULL THEN CASE WHEN f.mode = 'park' THEN 'ready' ELSE 'consumed' END
              WHEN f.cancel_deadline IS NOT NULL AND NOT f.seen THEN 'cancel'
              WHEN f.mode = 'probe' THEN 'blocked'
              ELSE 'parked' END AS outcome,
         CASE WHEN rec.ord IS NOT NULL THEN rec.output
              WHEN w.ord IS NOT NULL THEN jsonb_build_object('index', w.n - 1) || w.output
              ELSE jsonb_strip_nulls(jsonb_build_object(
                     'until', (SELECT min((a->>'until')::bigint) FROM jsonb_array_elements(f.arms) a))) END
           AS output
  FROM fenced f LEFT JOIN recorded rec ON rec.ord = f.ord LEFT JOIN winner w ON w.ord = f.ord),
step AS (
  INSERT INTO keel.steps (run_id, seq, name, status, output, error, attempts, started_at, finished_at, epoch,
                          branch, branch_seq)
  SELECT id, seq, name, 'completed', output, NULL, 1, to_timestamp(started / 1e6), now(), epoch, branch,
         CASE WHEN branch IS NOT NULL THEN branch_seq END
  FROM decided WHERE outcome = 'consumed' AND name IS NOT NULL
  ON CONFLICT (run_id, seq) DO NOTHING),
parked AS (
  UPDATE keel.runs r
  SET status = CASE WHEN d.mode = 'park' AND NOT EXISTS (
                          SELECT 1 FROM jsonb_array_elements(d.arms) a WHERE a->>'kind' <> 'sleep')
                    THEN 'sleeping' ELSE 'waiting' END,
      owner = NULL,
      due_at = least(to_timestamp((d.output->>'until')::bigint / 1e6), d.cancel_deadline),
      waiting_for = jsonb_strip_nulls(jsonb_build_object(
                      'kind', 'any', 'until', d.output->'until',
                      'step', CASE WHEN d.mode = 'decide' THEN d.seq END,
                      'branches', CASE WHEN d.mode = 'park' THEN true END, 'arms', d.arms))
  FROM decided d
  WHERE r.id = d.id AND d.outcome = 'parked'),
)sql") + log_cte(R"sql(
  SELECT d.id, 'step_completed',
         jsonb_strip_nulls(jsonb_build_object('seq', d.seq, 'name', d.name, 'output', d.output,
                                              'branch', d.branch, 'branch_seq', d.branch_seq)),
         d.ord * 2
  FROM decided d WHERE d.outcome = 'consumed' AND d.name IS NOT NULL
  UNION ALL
  SELECT d.id,
         CASE WHEN d.mode = 'park' AND NOT EXISTS (
                     SELECT 1 FROM jsonb_array_elements(d.arms) a WHERE a->>'kind' <> 'sleep')
              THEN 'run_sleeping' ELSE 'run_waiting' END,
         jsonb_strip_nulls(jsonb_build_object('kind', 'any', 'until', d.output->'until', 'arms', d.arms,
                                              'step', CASE WHEN d.mode = 'decide' THEN d.seq END,
                                              'branches', CASE WHEN d.mode = 'park' THEN true END)),
         d.ord * 2 + 1
  FROM decided d WHERE d.outcome = 'parked')sql") +
                                        R"sql(
SELECT ord, outcome, output::text FROM decided)sql";
const statement wait_any_decide{"keel_wait_any_decide", wait_any_decide_sql.c_str()};

// A child run (ctx.child), after wait_lock like the waits: the child is inserted once per (parent, step
// position, attempt) — its idempotency key — and its outcome read with a snapshot taken after the parent's
// lock. A finished child is handed back ('consumed': {"child", "status", "output", "error"}; the engine
// records the parent's step); an unfinished one parks the parent `waiting` for it, with no deadline: the
// child's end wakes it (trigger keel.runs_wake_parent, serialised with this by the parent's row lock).
const std::string child_decide_sql = std::string(
                                         R"sql(
WITH x AS (
  SELECT * FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (id uuid, owner text, epoch bigint, seq int,
                                                             child uuid, workflow text, version int,
                                                             input jsonb, key text, priority int,
                                                             seen bool, run_at bigint))
       WITH ORDINALITY AS x(id, owner, epoch, seq, child, workflow, version, input, key, priority, seen,
                            run_at, ord)),
fenced AS (
  SELECT x.*, r.cancel_deadline, r.traceparent,
         -- asked to cancel after the worker last looked: no new child; the run must see the cancel now
         r.cancel_deadline IS NOT NULL AND NOT coalesce(x.seen, false) AS cancel
  FROM x JOIN keel.runs r
    ON r.id = x.id AND r.owner = x.owner AND r.epoch = x.epoch AND r.status = 'running'),
existing AS (
  SELECT f.ord, c.id, c.status, c.output, c.error
  FROM fenced f JOIN keel.runs c ON c.idempotency_key = f.key AND c.idempotency_key IS NOT NULL),
ins AS (
  INSERT INTO keel.runs (id, workflow, version, status, input, idempotency_key, priority, due_at, parent_id,
                         parent_step, concurrency_key, concurrency_limit, throttle_key, throttle_limit, throttle_window_ms,
                         fair_key, fair_weight, traceparent)
  SELECT f.child, f.workflow, f.version, 'queued', coalesce(f.input, 'null'), f.key, f.priority,
         coalesce(to_timestamp(f.run_at / 1e6), now()), f.id, f.seq,
         )sql" + flow_control_values("coalesce(f.input, 'null')", "v") +
                                         R"sql(, f.traceparent
  FROM fenced f )sql" + declared_rule_join("v", "f.workflow", "f.version") +
                                         R"sql( WHERE f.ord NOT IN (SELECT ord FROM existing) AND NOT f.cancel
  ON CONFLICT DO NOTHING
  RETURNING id, workflow, version, parent_id, parent_step, concurrency_key, concurrency_limit, throttle_key, throttle_limit, throttle_window_ms),)sql" +
                                         slots_made_cte("ins") + R"sql(
decided AS (
  SELECT f.id, f.seq, f.workflow, f.ord, f.cancel_deadline, coalesce(e.id, f.child) AS child,
         CASE WHEN e.status IN ('completed', 'failed', 'cancelled') THEN 'consumed'
              WHEN f.cancel THEN 'cancel' ELSE 'parked' END AS outcome,
         CASE WHEN e.status IN ('completed', 'failed', 'cancelled')
              THEN jsonb_build_object('child', e.id, 'status', e.status, 'output', e.output, 'error', e.error)
              ELSE jsonb_build_object('child', coalesce(e.id, f.child)) END AS output
  FROM fenced f LEFT JOIN existing e ON e.ord = f.ord),
parked AS (
  UPDATE keel.runs r
  SET status = 'waiting', owner = NULL, due_at = d.cancel_deadline,
      waiting_for = jsonb_build_object('kind', 'child', 'step', d.seq, 'child', d.child, 'workflow', d.workflow)
  FROM decided d
  WHERE r.id = d.id AND d.outcome = 'parked'),
notified AS (SELECT pg_notify('keel_runs', '') WHERE EXISTS (SELECT 1 FROM ins)),
)sql") + log_cte(R"sql(
  SELECT i.id, 'run_enqueued',
         jsonb_build_object('workflow', i.workflow, 'version', i.version, 'parent', i.parent_id,
                            'parent_step', i.parent_step),
         0::bigint
  FROM ins i
  UNION ALL
  SELECT d.id, 'run_waiting', jsonb_build_object('kind', 'child', 'child', d.child, 'step', d.seq), d.ord
  FROM decided d WHERE d.outcome = 'parked')sql") +
                                     R"sql(
SELECT ord, outcome, output::text, (SELECT count(*) FROM notified) FROM decided)sql";
const statement child_decide{"keel_child_decide", child_decide_sql.c_str()};

// Starts a child run without waiting for it (ctx.start_child), fenced by the parent's lease (share lock, like
// a checkpoint): inserted once per idempotency key. Returns the child's id (NULL: fenced; 'cancel': the
// parent was asked to cancel after it last looked ($11: whether it has seen that), and starts nothing).
const std::string start_child_sql = std::string(R"sql(
WITH fence AS (
  SELECT id, cancel_deadline IS NOT NULL AND NOT $11::bool AS cancel, traceparent FROM keel.runs
  WHERE id = $1::uuid AND owner = $2 AND epoch = $3::bigint AND status = 'running'
  FOR SHARE),
ins AS (
  INSERT INTO keel.runs (id, workflow, version, status, input, idempotency_key, priority, due_at, parent_id,
                         parent_step, concurrency_key, concurrency_limit, throttle_key, throttle_limit, throttle_window_ms,
                         fair_key, fair_weight, traceparent)
  SELECT $5::uuid, $6, $7::int, 'queued', $8::jsonb, $9, $10::int,
         coalesce(to_timestamp($12::bigint / 1e6), now()), fence.id, $4::int,
         )sql" + flow_control_values("$8::jsonb", "v") +
                                                R"sql(, fence.traceparent
  FROM fence )sql" + declared_rule_join("v", "$6", "$7::int") +
                                                R"sql(
  WHERE NOT cancel
  ON CONFLICT DO NOTHING
  RETURNING id, workflow, concurrency_key, concurrency_limit, throttle_key, throttle_limit, throttle_window_ms),)sql" +
                                                slots_made_cte("ins") + R"sql(
notified AS (SELECT pg_notify('keel_runs', '') FROM ins),
)sql") + log_cte(R"sql(
  SELECT id, 'run_enqueued',
         jsonb_build_object('workflow', $6::text, 'version', $7::int, 'parent', $1::uuid, 'parent_step', $4::int),
         0::bigint
  FROM ins)sql") +
                                    R"sql(
SELECT CASE WHEN (SELECT cancel FROM fence) THEN 'cancel'
            WHEN EXISTS (SELECT 1 FROM fence)
            THEN coalesce((SELECT id::text FROM ins),
                          (SELECT id::text FROM keel.runs WHERE idempotency_key = $9 AND idempotency_key IS NOT NULL))
       END,
       (SELECT count(*) FROM notified))sql";
const statement start_child{"keel_start_child", start_child_sql.c_str()};

// Delivers an event, in two statements of one transaction (like waits): first the run row is locked
// (send_event_lock returns its status; no row: no such run), then the event is kept and the run woken if it
// waits for that name now — only when the event is new (a repeated idempotency key changes nothing).
const statement send_event_lock{"keel_send_event_lock",
                                "SELECT status FROM keel.runs WHERE id = $1::uuid FOR UPDATE"};
//
// A run parked in a wait for exactly this event takes it straight into the wait's position: the event is
// kept already consumed and the wait's step recorded with its payload, so the run's next execution replays
// the wait instead of deciding it in another transaction.
const std::string send_event_sql = std::string(R"sql(
WITH waiting AS (
  SELECT r.id, r.epoch, (r.waiting_for->>'step')::int AS step, r.waiting_for->>'name' AS step_name,
         (r.waiting_for->>'started')::bigint AS started
  FROM keel.runs r
  WHERE r.id = $1::uuid AND r.status = 'waiting' AND r.waiting_for->>'kind' = 'event'
    AND r.waiting_for->>'event' = $2 AND r.waiting_for->>'name' IS NOT NULL),
ins AS (
  INSERT INTO keel.events (run_id, name, payload, idempotency_key, consumed_seq, consumed_at)
  SELECT $1::uuid, $2, $3::jsonb, $4, w.step, CASE WHEN w.step IS NOT NULL THEN now() END
  FROM (SELECT 1) AS one LEFT JOIN waiting w ON true
  ON CONFLICT (run_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
  RETURNING id, consumed_seq),
delivered AS (
  INSERT INTO keel.steps (run_id, seq, name, status, output, error, attempts, started_at, finished_at, epoch)
  SELECT w.id, w.step, w.step_name, 'completed', jsonb_build_object('payload', $3::jsonb), NULL, 1,
         coalesce(to_timestamp(w.started / 1e6), now()), now(), w.epoch
  FROM waiting w JOIN ins ON ins.consumed_seq = w.step),
run AS (
  UPDATE keel.runs r
  SET status = 'queued', due_at = now(),
      waiting_for = r.waiting_for || jsonb_build_object('woken_by', 'event', 'event', $2::text)
  WHERE r.id = $1::uuid AND EXISTS (SELECT 1 FROM ins) AND r.status = 'waiting'
    AND ((r.waiting_for->>'kind' = 'event' AND r.waiting_for->>'event' = $2)
         OR (r.waiting_for->>'kind' = 'any'
             AND r.waiting_for->'arms' @> jsonb_build_array(jsonb_build_object('kind', 'event', 'event', $2))))
  RETURNING r.id),
woken AS (SELECT pg_notify('keel_runs', '') FROM run),
)sql") + log_cte(R"sql(
  SELECT id, 'run_resumed', jsonb_build_object('by', 'event', 'event', $2::text, 'from', 'waiting'), 0::bigint
  FROM run
  UNION ALL
  SELECT w.id, 'step_completed',
         jsonb_build_object('seq', w.step, 'name', w.step_name, 'output', jsonb_build_object('payload', $3::jsonb)),
         1::bigint
  FROM waiting w JOIN ins ON ins.consumed_seq = w.step)sql") +
                                   R"sql(
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM woken))sql";
const statement send_event{"keel_send_event", send_event_sql.c_str()};

const statement hook_secret{"keel_hook_secret", "SELECT value FROM keel.secrets WHERE name = 'hook'"};

// A hook is created once per (run, step position), by the execution that holds the run's lease (a fenced
// execution creates nothing): a replay derives the same token and finds it. With $9 (a step name), the
// create_hook step is recorded in the same statement ($10 output, $11 start µs, $12 branch, $13 its
// position there). Returns whether the lease held.
const std::string create_hook_sql = std::string(R"sql(
WITH fence AS (
  SELECT id, workflow FROM keel.runs
  WHERE id = $2::uuid AND owner = $7 AND epoch = $8::bigint AND status = 'running'
  FOR SHARE),
ins AS (
  INSERT INTO keel.hooks (token_hash, run_id, seq, name, metadata, expires_at, signature_key, workflow,
                          webhook)
  SELECT decode($1, 'hex'), id, $3::int, $4, $5::jsonb, to_timestamp($6::bigint / 1e6), $14::text, workflow,
         $15::jsonb
  FROM fence
  ON CONFLICT (token_hash) DO NOTHING),
step AS (
  INSERT INTO keel.steps (run_id, seq, name, status, output, error, attempts, started_at, finished_at, epoch,
                          branch, branch_seq)
  SELECT id, $3::int, $9::text, 'completed', $10::jsonb, NULL, 1, to_timestamp($11::bigint / 1e6), now(),
         $8::bigint, $12::text, CASE WHEN $12::text IS NOT NULL THEN $13::int END
  FROM fence WHERE $9::text IS NOT NULL
  ON CONFLICT (run_id, seq) DO NOTHING
  RETURNING run_id, seq, name, output, branch, branch_seq),
)sql") + log_cte(R"sql(
  SELECT run_id, 'step_completed',
         jsonb_strip_nulls(jsonb_build_object('seq', seq, 'name', name, 'output', output, 'branch', branch,
                                              'branch_seq', branch_seq)),
         0::bigint
  FROM step)sql") +
                                    R"sql(
SELECT count(*) FROM fence)sql";
const statement create_hook{"keel_create_hook", create_hook_sql.c_str()};

// A resume is two statements in one transaction, for the same reason as waits: the run row is locked
// first, then the hook is read and changed with a snapshot taken after the lock, so a resume racing the
// run's wait either is seen by it or finds the run waiting and wakes it. Returns the run's status and id
// (no row: no such hook).
const statement resume_hook_lock{"keel_resume_hook_lock", R"sql(
SELECT r.status, r.id::text FROM keel.hooks h JOIN keel.runs r ON r.id = h.run_id
WHERE h.token_hash = decode($1, 'hex')
FOR UPDATE OF r)sql"};

// Then: resumes an open, unexpired hook of a live run ($4: the run is live), wakes the run if it waits for
// it now, and says what the hook was: (status, expired, same payload, resumed now, ..., its webhook rule).
// A webhook takes only deliveries, a plain hook only resumes ($10): the other kind finds no hook.
const std::string resume_hook_sql = std::string(R"sql(
WITH h AS (SELECT * FROM keel.hooks
           WHERE token_hash = decode($1, 'hex') AND (webhook IS NOT NULL) = $10::bool FOR UPDATE),
-- A hook with a signature key takes requests signed with it ($5: the keys the request's signature was
-- verified with), each signed message once ($6: its SHA-256, $7: its time, $8: this call, so that its own
-- repeat after a lost connection is no replay): a replay finds it recorded (by hook, so that two hooks may
-- take the same signed body). Records older than $9 seconds (well past the tolerance) go.
signed AS (SELECT h.signature_key IS NULL OR h.signature_key = ANY($5::text[]) AS ok FROM h),
seen AS (
  INSERT INTO keel.hook_signatures (digest, signed_at, attempt)
  SELECT sha256(h.token_hash || decode($6, 'hex')), to_timestamp($7::bigint), $8::uuid FROM h
  WHERE $6::text IS NOT NULL AND h.signature_key = ANY($5::text[])
  ON CONFLICT (digest) DO UPDATE SET signed_at = excluded.signed_at
    WHERE keel.hook_signatures.attempt = excluded.attempt
  RETURNING 1),
pruned AS (
  DELETE FROM keel.hook_signatures
  WHERE $6::text IS NOT NULL AND digest IN (
    SELECT digest FROM keel.hook_signatures WHERE signed_at < now() - make_interval(secs => $9::int)
    LIMIT 100 FOR UPDATE SKIP LOCKED)),
upd AS (
  UPDATE keel.hooks k
  SET status = 'resumed', payload = $2::jsonb, payload_hash = sha256(convert_to($2::jsonb::text, 'UTF8')),
      resumed_at = now(), resumed_by = $3
  FROM h
  WHERE k.token_hash = h.token_hash AND $4::bool AND h.status = 'open'
    AND (h.expires_at IS NULL OR h.expires_at > now())
    AND (h.signature_key IS NULL OR EXISTS (SELECT 1 FROM seen))
    -- A hook in a wait for any whose timer is already due has lost, even before the run decides so (it
    -- decides by completion time): refused as closed, not accepted and then ignored.
    -- (Blocked parallel branches park together: only a timer of the hook's own branch counts.)
    AND NOT EXISTS (
      SELECT 1 FROM keel.runs r CROSS JOIN LATERAL jsonb_array_elements(r.waiting_for->'arms') hk
                                CROSS JOIN LATERAL jsonb_array_elements(r.waiting_for->'arms') a
      WHERE r.id = h.run_id AND r.waiting_for->>'kind' = 'any'
        AND hk->>'kind' = 'hook' AND (hk->>'hook_seq')::int = h.seq
        AND coalesce(hk->>'group', '') = coalesce(a->>'group', '')
        AND a->>'kind' = 'sleep' AND to_timestamp((a->>'until')::bigint / 1e6) <= now())
  RETURNING k.run_id, k.seq),
wake AS (
  UPDATE keel.runs r
  SET status = 'queued', due_at = now(),
      waiting_for = r.waiting_for || jsonb_build_object('woken_by', 'hook', 'hook_step', upd.seq)
  FROM upd
  WHERE r.id = upd.run_id AND r.status = 'waiting'
    AND ((r.waiting_for->>'kind' = 'hook' AND (r.waiting_for->>'hook_step')::int = upd.seq)
         OR (r.waiting_for->>'kind' = 'any'
             AND r.waiting_for->'arms' @> jsonb_build_array(jsonb_build_object('kind', 'hook', 'hook_seq', upd.seq))))
  RETURNING r.id, r.epoch, r.waiting_for),
-- A run parked in hook.wait() for exactly this hook takes the payload straight into the wait's position
-- (recorded as its step), so its next execution replays the wait instead of deciding it again.
delivered AS (
  INSERT INTO keel.steps (run_id, seq, name, status, output, error, attempts, started_at, finished_at, epoch)
  SELECT w.id, (w.waiting_for->>'step')::int, w.waiting_for->>'name', 'completed',
         jsonb_build_object('payload', $2::jsonb), NULL, 1,
         coalesce(to_timestamp((w.waiting_for->>'started')::bigint / 1e6), now()), now(), w.epoch
  FROM wake w
  WHERE w.waiting_for->>'kind' = 'hook' AND w.waiting_for->>'name' IS NOT NULL),
notified AS (SELECT pg_notify('keel_runs', '') FROM wake),
)sql") + log_cte(R"sql(
  SELECT w.id, 'run_resumed',
         jsonb_build_object('by', 'hook', 'hook_step', w.waiting_for->'hook_step', 'from', 'waiting'), 0::bigint
  FROM wake w
  UNION ALL
  SELECT w.id, 'step_completed',
         jsonb_build_object('seq', (w.waiting_for->>'step')::int, 'name', w.waiting_for->>'name',
                            'output', jsonb_build_object('payload', $2::jsonb)),
         1::bigint
  FROM wake w WHERE w.waiting_for->>'kind' = 'hook' AND w.waiting_for->>'name' IS NOT NULL)sql") +
                                    R"sql(
-- A webhook's request is the same when its method, path, query and body are: a sender's retry changes
-- headers (a new signature timestamp, a retry count, a proxy's request id). (Fields picked with ->, which
-- is NULL on a plain hook's scalar payload: the planner may fold either branch of the CASE, and `-` raises.)
SELECT h.status, h.expires_at IS NOT NULL AND h.expires_at <= now(),
       CASE WHEN h.webhook IS NULL THEN h.payload = $2::jsonb
            ELSE (h.payload->'method', h.payload->'path', h.payload->'query', h.payload->'body',
                  h.payload->'body_base64') IS NOT DISTINCT FROM
                 ($2::jsonb->'method', $2::jsonb->'path', $2::jsonb->'query', $2::jsonb->'body',
                  $2::jsonb->'body_base64') END,
       (SELECT count(*) FROM upd), (SELECT count(*) FROM notified), NOT (SELECT ok FROM signed),
       h.signature_key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM seen), h.webhook::text
FROM h)sql";
const statement resume_hook{"keel_resume_hook", resume_hook_sql.c_str()};

// A webhook's answer, sent by the run that holds the lease (a fenced execution answers nothing): kept with
// the hook for the request waiting on it, which hears of it from the notification. Returns (the lease held,
// the run has such a webhook).
const statement set_webhook_response{"keel_set_webhook_response", R"sql(
WITH fence AS (
  SELECT id FROM keel.runs
  WHERE id = $1::uuid AND owner = $2 AND epoch = $3::bigint AND status = 'running'
  FOR SHARE),
upd AS (
  UPDATE keel.hooks h SET response = $5::jsonb
  FROM fence WHERE h.run_id = fence.id AND h.seq = $4::int AND h.webhook IS NOT NULL
  RETURNING h.token_hash),
notified AS (SELECT pg_notify('keel_webhooks', encode(token_hash, 'hex')) FROM upd)
SELECT (SELECT count(*) FROM fence), (SELECT count(*) FROM upd), (SELECT count(*) FROM notified))sql"};

// The answer a webhook's run sent, if any (NULL: none yet).
const statement webhook_response{
    "keel_webhook_response", "SELECT response::text FROM keel.hooks WHERE token_hash = decode($1, 'hex')"};

// Continue as new (fenced by the lease): the run is queued afresh under the same id with a new input, as the
// next generation. Its history goes — steps, the hooks its steps created (their links stop working: a
// resume gets hook_not_found) and the events it consumed; events still pending stay for the new
// generation. Recorded in keel.run_history. Returns the new generation (no row: fenced).
const std::string continue_as_new_sql = std::string(R"sql(
WITH r AS (
  UPDATE keel.runs
  SET status = 'queued', due_at = now(), owner = NULL, input = $4::jsonb, generation = generation + 1,
      waiting_for = NULL, recoveries = 0
  WHERE id = $1::uuid AND owner = $2 AND epoch = $3::bigint AND status = 'running'
  RETURNING id, generation),
steps AS (DELETE FROM keel.steps s USING r WHERE s.run_id = r.id RETURNING s.*),
hooks AS (DELETE FROM keel.hooks h USING r WHERE h.run_id = r.id RETURNING 1),
events AS (DELETE FROM keel.events e USING r WHERE e.run_id = r.id AND e.consumed_seq IS NOT NULL RETURNING 1),
logged AS (
  INSERT INTO keel.run_history (run_id, what, detail)
  SELECT id, 'continued_as_new',
         jsonb_build_object('generation', generation, 'steps_cleared', (SELECT count(*) FROM steps),
                            'hooks_removed', (SELECT count(*) FROM hooks),
                            'consumed_events_removed', (SELECT count(*) FROM events))
  FROM r),
)sql") + keep_step_details_cte("steps") +
                                        R"sql(,
notified AS (SELECT pg_notify('keel_runs', '') FROM r)
SELECT generation, (SELECT count(*) FROM notified) FROM r)sql";
const statement continue_as_new{"keel_continue_as_new", continue_as_new_sql.c_str()};

// Retry: a failed run continues from its failed step. That step's record goes (the step runs again), the
// checkpoints before it stay; the epoch is bumped (nothing of the failed execution can write again) and
// the recoveries start over. Recorded in keel.run_history. Returns one row if the run was failed.
const std::string retry_run_sql = std::string(R"sql(
WITH r AS (
  UPDATE keel.runs
  SET status = 'queued', due_at = now(), owner = NULL, epoch = epoch + 1, error = NULL, finished_at = NULL,
      recoveries = 0, waiting_for = NULL, cancel_deadline = NULL
  WHERE id = $1::uuid AND status = 'failed'
  RETURNING id, epoch),
gone AS (
  -- Only the step the run failed at: its last record, or the failed steps of the parallel region it ended
  -- in (branch steps past every main-line record). A failure the workflow caught earlier (and went on
  -- from) is part of the history the replay must see again.
  DELETE FROM keel.steps s USING r
  WHERE s.run_id = r.id AND s.status = 'failed'
    AND (s.seq = (SELECT max(seq) FROM keel.steps WHERE run_id = r.id)
         OR (s.branch IS NOT NULL
             AND s.seq > (SELECT coalesce(max(seq), -1) FROM keel.steps WHERE run_id = r.id AND branch IS NULL)
             -- the failure a branch ended with, not one it caught and went on from
             AND NOT EXISTS (SELECT 1 FROM keel.steps t
                             WHERE t.run_id = s.run_id AND t.branch = s.branch AND t.branch_seq > s.branch_seq)))
  RETURNING s.*),
logged AS (
  INSERT INTO keel.run_history (run_id, what, detail)
  SELECT id, 'retried', jsonb_build_object('epoch', epoch, 'failed_steps', (SELECT jsonb_agg(seq) FROM gone))
  FROM r),
)sql") + keep_step_details_cte("gone") +
                                  R"sql(,
notified AS (SELECT pg_notify('keel_runs', '') FROM r)
SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM notified))sql";
const statement retry_run{"keel_retry_run", retry_run_sql.c_str()};

// Rewind, in two statements of one transaction: the run row locked first (rewind_lock), so that the second
// statement's snapshot holds every checkpoint and consumed event committed before — a writer that held the
// row's share lock when the rewind began has committed by then.
// A retry's first statement: the run's row locked, its status, and where its compensations (if any ran)
// say the undone steps begin (the earliest `from_step` in its error's `compensation`).
const statement retry_lock{"keel_retry_lock", R"sql(
SELECT status,
       (SELECT min((c->>'from_step')::int)
        FROM jsonb_array_elements(CASE WHEN jsonb_typeof(error->'compensation') = 'array'
                                       THEN error->'compensation' ELSE '[]'::jsonb END) c
        WHERE jsonb_typeof(c->'from_step') = 'number')
FROM keel.runs WHERE id = $1::uuid FOR UPDATE)sql"};

const statement rewind_lock{"keel_rewind_lock", "SELECT 1 FROM keel.runs WHERE id = $1::uuid FOR UPDATE"};

// Rewind: the checkpoints from step position $2 on are discarded and the run queued to run again from
// there: on any status (a worker running it is fenced by the epoch bump, as by a cancel). Events those
// steps consumed are pending again and hooks they created go (their replay creates them again, with the
// same tokens). Recorded in keel.run_history with what was discarded. Returns the run's new epoch.
const std::string rewind_run_sql = std::string(R"sql(
WITH r AS (
  UPDATE keel.runs
  SET status = 'queued', due_at = now(), owner = NULL, epoch = epoch + 1, output = NULL, error = NULL,
      finished_at = NULL, recoveries = 0, waiting_for = NULL, cancel_deadline = NULL
  WHERE id = $1::uuid
  RETURNING id, epoch),
gone AS (
  DELETE FROM keel.steps s USING r WHERE s.run_id = r.id AND s.seq >= $2::int
  RETURNING s.*),
events AS (
  UPDATE keel.events e SET consumed_seq = NULL, consumed_at = NULL
  FROM r WHERE e.run_id = r.id AND e.consumed_seq >= $2::int
  RETURNING e.id),
hooks AS (
  DELETE FROM keel.hooks h USING r WHERE h.run_id = r.id AND h.seq >= $2::int
  RETURNING h.seq),
logged AS (
  INSERT INTO keel.run_history (run_id, what, detail)
  SELECT id, 'rewound',
         jsonb_build_object('epoch', epoch, 'from_step', $2::int,
                            'discarded', coalesce((SELECT jsonb_agg(jsonb_build_object('step', seq, 'name', name)
                                                                    ORDER BY seq) FROM gone), '[]'::jsonb),
                            'events_pending_again', (SELECT count(*) FROM events),
                            'hooks_removed', (SELECT count(*) FROM hooks))
  FROM r),
)sql") + keep_step_details_cte("gone") +
                                   R"sql(,
notified AS (SELECT pg_notify('keel_runs', '') FROM r)
SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM notified), (SELECT epoch FROM r))sql";
const statement rewind_run{"keel_rewind_run", rewind_run_sql.c_str()};

}  // namespace keel::storage::detail::sql
