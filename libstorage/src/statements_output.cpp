// Durable output streams (015_output_streams.sql): a flush is two statements of one transaction — the
// first fences the run and, when the stream's writer position moved, removes the chunks it supersedes
// (logging `stream_rewound` from the first of them); the second appends after what is left (it sees the
// first's deletes). A flush without chunks only moves the writer: a redo that writes nothing still
// removes what its earlier attempt or execution wrote.
#include <string>

#include "statement_parts.hpp"
#include "statements.hpp"

namespace keel::storage::detail::sql {
namespace {

/// A flush per row: the lease, the stream, the writer's position, the chunks, whether it closes, and the
/// flush's token.
const std::string flush_rows = R"sql(
WITH x AS (
  SELECT * FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (id uuid, owner text, epoch bigint, stream text,
                                                             generation int, seq int, attempt int,
                                                             chunks jsonb, close bool, close_seq int,
                                                             token uuid))
       WITH ORDINALITY AS x(id, owner, epoch, stream, generation, seq, attempt, chunks, close, close_seq, token,
                            ord)),
fenced AS (
  SELECT x.* FROM x JOIN keel.runs r
    ON r.id = x.id AND r.owner = x.owner AND r.epoch = x.epoch AND r.status = 'running'
  FOR SHARE OF r))sql";

std::string output_trim_sql() {
  std::string sql = flush_rows;
  sql.append(R"sql(,
moved AS (
  INSERT INTO keel.output_streams AS s (run_id, stream, generation, epoch, seq, attempt)
  SELECT id, stream, generation, epoch, seq, attempt FROM fenced f
  -- a flush without chunks only removes what it supersedes: a later generation has nothing to remove
  -- (and must not undo an earlier generation's close by writing nothing)
  WHERE jsonb_array_length(f.chunks) > 0 OR f.close
     OR NOT EXISTS (SELECT 1 FROM keel.output_streams o
                    WHERE o.run_id = f.id AND o.stream = f.stream AND o.generation < f.generation)
  ON CONFLICT (run_id, stream) DO UPDATE
    SET generation = excluded.generation, epoch = excluded.epoch, seq = excluded.seq, attempt = excluded.attempt,
        -- what `gone` removes below, counted here (one statement cannot update this row twice)
        trimmed_from = coalesce((SELECT min(c.idx) FROM keel.output_chunks c
                                 WHERE c.run_id = s.run_id AND c.stream = s.stream
                                   AND c.generation = excluded.generation
                                   AND ((c.epoch < excluded.epoch AND c.seq >= excluded.seq)
                                        OR (c.epoch = excluded.epoch AND c.seq = excluded.seq AND c.attempt > 0
                                            AND c.attempt < excluded.attempt))), s.trimmed_from),
        trims = s.trims + CASE WHEN EXISTS (
                  SELECT 1 FROM keel.output_chunks c
                  WHERE c.run_id = s.run_id AND c.stream = s.stream AND c.generation = excluded.generation
                    AND ((c.epoch < excluded.epoch AND c.seq >= excluded.seq)
                         OR (c.epoch = excluded.epoch AND c.seq = excluded.seq AND c.attempt > 0
                             AND c.attempt < excluded.attempt))) THEN 1 ELSE 0 END,
        -- a close this writer redoes (an earlier execution's, at or past its position) or outlives (an
        -- earlier generation's) is undone
        closed = s.closed AND NOT (s.generation < excluded.generation
                                   OR (s.generation = excluded.generation AND s.closed_epoch < excluded.epoch
                                       AND s.closed_seq >= excluded.seq))
    WHERE (s.generation, s.epoch, s.seq, s.attempt)
            IS DISTINCT FROM (excluded.generation, excluded.epoch, excluded.seq, excluded.attempt)
      AND excluded.seq >= 0  -- a close alone (seq -1) writes nothing: it moves no writer
  RETURNING s.run_id, s.stream, s.generation, s.epoch, s.seq, s.attempt),
gone AS (
  DELETE FROM keel.output_chunks c USING moved m
  WHERE c.run_id = m.run_id AND c.stream = m.stream AND c.generation = m.generation
    AND ((c.epoch < m.epoch AND c.seq >= m.seq)
         OR (c.epoch = m.epoch AND c.seq = m.seq AND c.attempt > 0 AND c.attempt < m.attempt))
  RETURNING c.run_id, c.stream, c.idx),
)sql");
  // Readers that already read the superseded chunks start again at the first of them.
  sql.append(log_cte(R"sql(
  SELECT run_id, 'stream_rewound', jsonb_build_object('stream', stream, 'from', min(idx)), 0
  FROM gone GROUP BY run_id, stream)sql"));
  sql.append(R"sql(
SELECT ord FROM fenced)sql");
  return sql;
}

const std::string output_trim_text = output_trim_sql();

/// `again`: a retried transaction's flush may have committed: a flush whose token is there is not
/// appended twice.
std::string output_append_sql(bool again) {
  std::string sql = flush_rows;
  sql.append(R"sql(,
base AS (
  SELECT f.*, coalesce((SELECT c.idx + 1 FROM keel.output_chunks c WHERE c.run_id = f.id AND c.stream = f.stream
                        ORDER BY c.idx DESC LIMIT 1), 0) AS first
  FROM fenced f JOIN keel.output_streams s ON s.run_id = f.id AND s.stream = f.stream
  WHERE NOT s.closed)sql");
  if (again) {
    sql.append(R"sql(
    AND NOT EXISTS (SELECT 1 FROM keel.output_chunks c WHERE c.run_id = f.id AND c.stream = f.stream
                                                         AND c.token = f.token))sql");
  }
  sql.append(R"sql(),
ins AS (
  INSERT INTO keel.output_chunks (run_id, stream, idx, generation, epoch, seq, attempt, token, data)
  SELECT b.id, b.stream, b.first + c.i - 1, b.generation, b.epoch, b.seq, b.attempt, b.token, c.v
  FROM base b CROSS JOIN LATERAL jsonb_array_elements(b.chunks) WITH ORDINALITY c(v, i)),
closing AS (
  UPDATE keel.output_streams s SET closed = true, closed_epoch = b.epoch, closed_seq = b.close_seq
  FROM base b WHERE b.close AND s.run_id = b.id AND s.stream = b.stream),
)sql");
  sql.append(log_cte(R"sql(
  SELECT b.id, CASE WHEN b.close THEN 'stream_closed' ELSE 'stream_appended' END,
         jsonb_build_object('stream', b.stream, 'from', b.first, 'to', b.first + jsonb_array_length(b.chunks)),
         b.ord
  FROM base b
  WHERE b.close OR jsonb_array_length(b.chunks) > 0  -- a flush that only moves the writer appends nothing
)sql"));
  sql.append(R"sql(
SELECT ord FROM fenced)sql");
  return sql;
}

const std::string output_append_first_sql = output_append_sql(false);
const std::string output_append_again_sql = output_append_sql(true);

}  // namespace

const statement output_trim{"keel_output_trim", output_trim_text.c_str()};
const statement output_append{"keel_output_append", output_append_first_sql.c_str()};
const statement output_append_again{"keel_output_append_again", output_append_again_sql.c_str()};

// A page of a stream's chunks from $3, with whether the stream is closed, whether its run has ended, and
// its trims so far and where the last began (on the first row; one row at least).
const statement output_read{"keel_output_read", R"sql(
SELECT coalesce(s.closed, false), coalesce(r.status IN ('completed', 'failed', 'cancelled'), true),
       c.idx, c.data::text, coalesce(s.trims, 0), s.trimmed_from
FROM (SELECT 1) one
LEFT JOIN keel.runs r ON r.id = $1::uuid
LEFT JOIN keel.output_streams s ON s.run_id = $1::uuid AND s.stream = $2
LEFT JOIN LATERAL (
  SELECT idx, data FROM keel.output_chunks
  WHERE run_id = $1::uuid AND stream = $2 AND idx >= $3::bigint ORDER BY idx LIMIT $4::int) c ON true
ORDER BY c.idx)sql"};

}  // namespace keel::storage::detail::sql
