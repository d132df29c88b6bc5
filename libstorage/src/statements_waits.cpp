// Durable waits: sleeps, events, waits for any of several alternatives, child runs, and sending events.
#include <string>

#include "statement_parts.hpp"
#include "statements.hpp"

namespace keel::storage::detail::sql {

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

}  // namespace keel::storage::detail::sql
