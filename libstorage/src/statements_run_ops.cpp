// What an operator or a run does to a whole run's history: continue as new, retry, rewind.
#include <string>

#include "statement_parts.hpp"
#include "statements.hpp"

namespace keel::storage::detail::sql {

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
