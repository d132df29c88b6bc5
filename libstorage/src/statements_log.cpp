// The run log's readers and retention (013_run_log.sql): what reads it back in order, and what trims it.
#include <string>

#include "statements.hpp"

namespace keel::storage::detail::sql {
namespace {

/// The columns of one event read back: pos, run, kind, at, data, workflow, parent. `l` is the log row,
/// `x` its unnested event. A checkpointed step's details come from keel.steps (see keel.run_log).
const std::string event_columns = R"sql(
  l.pos + x.i - 1 AS pos, x.run::text AS run, x.kind, keel.micros(l.at) AS at,
  coalesce(x.data, (
    SELECT jsonb_build_object('seq', s.seq, 'name', s.name, 'output', s.output, 'error', s.error,
                              'attempts', s.attempts, 'started_at', keel.micros(s.started_at),
                              'duration_us', keel.micros(s.finished_at) - keel.micros(s.started_at),
                              'branch', s.branch, 'branch_seq', s.branch_seq)
    FROM keel.steps s WHERE s.run_id = x.run AND s.seq = x.seq AND s.epoch = x.epoch),
  jsonb_build_object('seq', x.seq, 'discarded', true))::text AS data,
  r.workflow, r.parent_id::text AS parent)sql";

/// Unnests log rows `l` into events `x`, with their runs `r` (NULL once a run is no longer stored).
const std::string unnest_events = R"sql(
  CROSS JOIN LATERAL unnest(l.runs, l.kinds, l.data, l.seqs, l.epochs) WITH ORDINALITY x(run, kind, data, seq, epoch, i)
  LEFT JOIN keel.runs r ON r.id = x.run)sql";

// The run log after a position, in the order no later commit can break: only events of transactions older
// than every one still in progress (see 013_run_log.sql). A row's events share its transaction, so the rows
// to read start at the transaction of $1. Only runs of workflow $3 when it is not NULL. One row at least:
// the retention horizon, with the events (if any) beside it.
const std::string read_log_sql = R"sql(
SELECT h.removed, e.pos, e.run, e.kind, e.at, e.data, e.workflow, e.parent
FROM keel.run_log_horizon h
LEFT JOIN LATERAL (
  SELECT )sql" + event_columns + R"sql(
  FROM keel.run_log l)sql" + unnest_events +
                                 R"sql(
  WHERE l.pos >= ($1::bigint >> 20) << 20 AND l.pos + l.n - 1 > $1::bigint
    AND l.pos < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)
    AND l.pos + x.i - 1 > $1::bigint AND ($3::text IS NULL OR r.workflow = $3::text)
  ORDER BY l.pos, x.i LIMIT $2::int) e ON true
ORDER BY e.pos)sql";

// The same for some runs' events: those of $3 (uuid[]) and of the tree of $5 (a run and every run it
// started, recursively; NULL: none), found in the same snapshot as the log rows, through run_log_runs;
// $4 as $3 above. The horizon counts when log retention has trimmed one of them (or none is stored any
// more and no event of theirs is left).
const std::string read_runs_log_sql = R"sql(
WITH RECURSIVE tree(id) AS (
  SELECT id FROM keel.runs WHERE id = $5::uuid
  UNION
  SELECT r.id FROM keel.runs r JOIN tree t ON r.parent_id = t.id),
ids AS MATERIALIZED (SELECT coalesce($3::uuid[], '{}') || coalesce(array_agg(id), '{}') AS a FROM tree),
mine AS MATERIALIZED (
  SELECT l.* FROM keel.run_log l
  WHERE l.runs && (SELECT a FROM ids) AND l.pos >= ($1::bigint >> 20) << 20 AND l.pos + l.n - 1 > $1::bigint
    AND l.pos < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20))
SELECT CASE WHEN EXISTS (SELECT 1 FROM keel.runs WHERE id = ANY((SELECT a FROM ids)::uuid[]) AND log_trimmed)
              OR (NOT EXISTS (SELECT 1 FROM keel.runs WHERE id = ANY((SELECT a FROM ids)::uuid[]))
                  AND NOT EXISTS (SELECT 1 FROM keel.run_log WHERE runs && (SELECT a FROM ids)))
            THEN h.removed ELSE 0 END,
       e.pos, e.run, e.kind, e.at, e.data, e.workflow, e.parent
FROM keel.run_log_horizon h
LEFT JOIN LATERAL (
  SELECT )sql" + event_columns + R"sql(
  FROM mine l)sql" + unnest_events + R"sql(
  WHERE x.run = ANY((SELECT a FROM ids)::uuid[]) AND l.pos + x.i - 1 > $1::bigint
    AND ($4::text IS NULL OR r.workflow = $4::text)
  ORDER BY l.pos, x.i LIMIT $2::int) e ON true
ORDER BY e.pos)sql";

// A follower's read: the log rows after $1 as read_log orders them, whole (arrays as the server prints
// them: unnesting, sorting and joining each event costs the database several times more than reading the
// rows), at most $2 of them and only while the unread events (after $1) before each row number fewer than
// $2, so a page is full whenever more wait. Every row of the result also carries `top`, the first position
// not yet readable (events of transactions still in progress, or younger than one, start there), and
// `held`, whether committed events wait at or past it (an older transaction is still in progress: read
// again soon). A checkpointed step's details are not read here (see step_details). With $2 = 0, only the
// horizon row: where a follower that starts now begins.
const std::string follow_log_sql = R"sql(
WITH t AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20 AS top)
SELECT h.removed, t.top, EXISTS (SELECT 1 FROM keel.run_log WHERE pos >= t.top),
       e.pos, e.n, keel.micros(e.at), e.runs::text, e.kinds::text, e.data::text, e.seqs::text, e.epochs::text
FROM keel.run_log_horizon h CROSS JOIN t
LEFT JOIN LATERAL (
  SELECT w.* FROM (
    SELECT l.*, sum(l.unread) OVER (ORDER BY l.pos) - l.unread AS before
    FROM (SELECT l.*, l.n - greatest(0, least(l.n, $1::bigint - l.pos + 1)) AS unread FROM keel.run_log l
          WHERE l.pos >= ($1::bigint >> 20) << 20 AND l.pos + l.n - 1 > $1::bigint AND l.pos < t.top
          ORDER BY l.pos LIMIT $2::int) l) w
  WHERE w.before < $2::int) e ON true
ORDER BY e.pos)sql";

}  // namespace

const statement read_log{"keel_read_log", read_log_sql.c_str()};
const statement read_runs_log{"keel_read_runs_log", read_runs_log_sql.c_str()};
const statement follow_log{"keel_follow_log", follow_log_sql.c_str()};

// The details of checkpointed steps that log events refer to: $1..$3 (uuid[], int[], bigint[]) the steps'
// run, seq and epoch, $4 and $5 (bigint[], int[]) the log row holding each event and the event's place in
// it (1-based). Where the step row is gone (a rewind or retention removed it since the log was read), the
// details it copied into the log row instead. Returns, per event found, its ordinal in the arguments.
const statement step_details{"keel_step_details", R"sql(
SELECT x.ord, s.name, s.output::text, s.error::text, s.attempts, keel.micros(s.started_at),
       keel.micros(s.finished_at), s.branch, s.branch_seq, l.data[x.i]::text
FROM unnest($1::uuid[], $2::int[], $3::bigint[], $4::bigint[], $5::int[])
     WITH ORDINALITY x(run, seq, epoch, log_pos, i, ord)
LEFT JOIN keel.steps s ON s.run_id = x.run AND s.seq = x.seq AND s.epoch = x.epoch
LEFT JOIN keel.run_log l ON s.run_id IS NULL AND l.pos = x.log_pos
WHERE s.run_id IS NOT NULL OR l.data[x.i] IS NOT NULL)sql"};

// The workflow and parent of runs ($1: uuid[]).
const statement runs_meta{
    "keel_runs_meta", "SELECT id::text, workflow, parent_id::text FROM keel.runs WHERE id = ANY($1::uuid[])"};

// A run and every run it started, recursively (a stream following a run's tree starts from them).
const statement run_tree{"keel_run_tree", R"sql(
WITH RECURSIVE tree(id) AS (
  SELECT id FROM keel.runs WHERE id = $1::uuid
  UNION
  SELECT r.id FROM keel.runs r JOIN tree t ON r.parent_id = t.id)
SELECT id::text FROM tree)sql"};

// One batch of log retention ($1: the age in ms a row, and each of its runs' finish, must exceed; $2: rows
// at most): the rows whose runs all finished before the cutoff (a run no longer stored counts as finished),
// oldest first, skipping rows others hold. Their runs are marked log_trimmed, and the horizon moves past
// them. Returns the events removed.
const statement trim_log{"keel_trim_log", R"sql(
WITH doomed AS (
  SELECT l.pos FROM keel.run_log l
  WHERE l.at < now() - $1::bigint * interval '1 millisecond'
    AND NOT EXISTS (SELECT 1 FROM unnest(l.runs) AS u(id) JOIN keel.runs r ON r.id = u.id
                    WHERE r.status NOT IN ('completed', 'failed', 'cancelled')
                       OR r.finished_at >= now() - $1::bigint * interval '1 millisecond')
  ORDER BY l.pos LIMIT $2::int
  FOR UPDATE OF l SKIP LOCKED),
gone AS (
  DELETE FROM keel.run_log l USING doomed d WHERE l.pos = d.pos
  RETURNING l.pos + l.n - 1 AS last, l.n, l.runs),
marked AS (
  UPDATE keel.runs r SET log_trimmed = true
  WHERE r.id IN (SELECT DISTINCT unnest(runs) FROM gone) AND NOT r.log_trimmed),
moved AS (
  UPDATE keel.run_log_horizon SET removed = greatest(removed, (SELECT max(last) FROM gone))
  WHERE EXISTS (SELECT 1 FROM gone))
SELECT coalesce(sum(n), 0) FROM gone)sql"};

}  // namespace keel::storage::detail::sql
