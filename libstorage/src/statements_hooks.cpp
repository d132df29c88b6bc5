// Hooks and webhooks: creating one, resuming it from its URL, and a webhook's answer.
#include <string>

#include "statement_parts.hpp"
#include "statements.hpp"

namespace keel::storage::detail::sql {

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

}  // namespace keel::storage::detail::sql
