#include "statements.hpp"

// Batched statements take one jsonb array of rows ($1) and expand it with jsonb_to_recordset: one statement
// per kind of write, whatever the batch size, and no array-literal escaping of user JSON.
// Timestamps travel as microseconds since the Unix epoch.
namespace keel::storage::detail::sql {

const statement begin{"keel_begin", "BEGIN"};
const statement commit{"keel_commit", "COMMIT"};

// Inserts new runs; an existing id (a retried batch) or idempotency key is skipped. Returns the inserted ids.
const statement enqueue_insert{"keel_enqueue_insert", R"sql(
INSERT INTO keel.runs (id, workflow, version, status, input, idempotency_key, priority, due_at)
SELECT x.id, x.workflow, x.version, 'queued', x.input, x.key, x.priority,
       coalesce(to_timestamp(x.run_at::double precision / 1e6), now())
FROM jsonb_to_recordset($1::jsonb) AS x(id uuid, workflow text, version int, input jsonb, key text,
                                        priority int, run_at bigint)
ON CONFLICT DO NOTHING
RETURNING id::text)sql"};

// For rows with an idempotency key: the run that holds the key, and whether it matches the request.
// Runs after enqueue_insert in the same transaction, so it sees this batch's inserts and any committed rival.
const statement enqueue_resolve{"keel_enqueue_resolve", R"sql(
SELECT x.ord, r.id::text, (r.workflow = x.workflow AND r.input = x.input) AS same
FROM jsonb_to_recordset($1::jsonb) AS x(ord int, workflow text, input jsonb, key text)
JOIN keel.runs r ON r.idempotency_key = x.key AND r.idempotency_key IS NOT NULL
WHERE x.key IS NOT NULL)sql"};

// Wakes idle workers in other processes (delivered at commit; several in one transaction fold into one).
// Sent once per batch that enqueues: a NOTIFY takes a global lock at commit, so never once per run.
const statement notify_runs{"keel_notify_runs", "SELECT pg_notify('keel_runs', '')"};

// Fenced checkpoints: advance each run whose lease still matches and insert the step rows of exactly those
// runs, straight from the UPDATE's RETURNING (no second join). The UPDATE locks the run row, so a concurrent
// reclaim (which bumps epoch) either waits for this write or fences it. A retried batch re-applies the same
// update and skips the existing step rows. A batch holds at most one checkpoint per run: a run's next step
// starts only after its previous checkpoint committed.
const statement checkpoint_steps{"keel_checkpoint_steps", R"sql(
WITH fenced AS (
  UPDATE keel.runs r SET next_seq = greatest(r.next_seq, x.seq + 1)
  FROM jsonb_to_recordset($1::jsonb) AS x(id uuid, owner text, epoch bigint, seq int, name text, status text,
                                          output jsonb, error jsonb, attempts int, started bigint,
                                          finished bigint)
  WHERE r.id = x.id AND r.owner = x.owner AND r.epoch = x.epoch AND r.status = 'running'
  RETURNING x.*),
ins AS (
  INSERT INTO keel.steps (run_id, seq, name, status, output, error, attempts, started_at, finished_at, epoch)
  SELECT id, seq, name, status, output, error, attempts, to_timestamp(started::double precision / 1e6),
         to_timestamp(finished::double precision / 1e6), epoch
  FROM fenced
  ON CONFLICT (run_id, seq) DO NOTHING)
SELECT id::text, epoch, seq FROM fenced)sql"};

// Fenced completion or failure. Matching on owner+epoch (not status) keeps a retried batch idempotent.
// Both fenced statements return (id, epoch, seq): a write is acknowledged only by the row it wrote.
const statement finish_runs{"keel_finish_runs", R"sql(
UPDATE keel.runs r
SET status = x.status, output = x.output, error = x.error, due_at = NULL, finished_at = now()
FROM jsonb_to_recordset($1::jsonb) AS x(id uuid, owner text, epoch bigint, status text, output jsonb,
                                        error jsonb)
WHERE r.id = x.id AND r.owner = x.owner AND r.epoch = x.epoch
  AND (r.status = 'running' OR r.status = x.status)
RETURNING r.id::text, r.epoch, 0)sql"};

// Atomic claim: due runs (queued, or running with an expired lease) by priority then due time; SKIP LOCKED
// lets many workers claim at once without waiting on each other. Each claim bumps the epoch.
const statement claim_runs{"keel_claim_runs", R"sql(
WITH c AS (
  SELECT id FROM keel.runs
  WHERE status IN ('queued', 'running') AND due_at <= now() AND workflow = ANY($4::text[])
  ORDER BY priority DESC, due_at
  LIMIT $2
  FOR UPDATE SKIP LOCKED)
UPDATE keel.runs r
SET status = 'running', owner = $1, epoch = r.epoch + 1, claims = r.claims + 1,
    due_at = now() + $3::bigint * interval '1 millisecond', started_at = coalesce(r.started_at, now())
FROM c WHERE r.id = c.id
RETURNING r.id::text, r.workflow, r.version, r.input::text, r.epoch, r.claims, r.next_seq)sql"};

const statement load_steps{"keel_load_steps", R"sql(
SELECT run_id::text, seq, name, status, output::text, error::text, attempts,
       (extract(epoch FROM started_at) * 1e6)::bigint, (extract(epoch FROM finished_at) * 1e6)::bigint
FROM keel.steps WHERE run_id = ANY($1::uuid[]) ORDER BY run_id, seq)sql"};

// Extends held leases; rows not returned were taken over, cancelled or finished elsewhere.
const statement heartbeat{"keel_heartbeat", R"sql(
UPDATE keel.runs r SET due_at = now() + $2::bigint * interval '1 millisecond'
FROM jsonb_to_recordset($1::jsonb) AS x(id uuid, owner text, epoch bigint)
WHERE r.id = x.id AND r.owner = x.owner AND r.epoch = x.epoch AND r.status = 'running'
RETURNING r.id::text)sql"};

const statement release_run{"keel_release_run", R"sql(
UPDATE keel.runs SET status = 'queued', owner = NULL, epoch = epoch + 1, due_at = now()
WHERE id = $1::uuid AND owner = $2 AND epoch = $3::bigint AND status = 'running'
RETURNING id::text)sql"};

const statement get_run{"keel_get_run", R"sql(
SELECT id::text, workflow, version, status, input::text, output::text, error::text, idempotency_key, priority,
       owner, epoch, claims, (extract(epoch FROM created_at) * 1e6)::bigint,
       (extract(epoch FROM started_at) * 1e6)::bigint, (extract(epoch FROM finished_at) * 1e6)::bigint
FROM keel.runs WHERE id = $1::uuid)sql"};

const statement cancel_run{"keel_cancel_run", R"sql(
UPDATE keel.runs
SET status = 'cancelled', epoch = epoch + 1, due_at = NULL, finished_at = now(),
    error = '{"code":"cancelled","message":"run cancelled"}'::jsonb
WHERE id = $1::uuid AND status NOT IN ('completed', 'failed', 'cancelled')
RETURNING id::text)sql"};

const statement run_status_of{"keel_run_status", "SELECT status FROM keel.runs WHERE id = $1::uuid"};

}  // namespace keel::storage::detail::sql
