-- Durable output streams (ctx.stream): ordered chunks a run writes to a named stream, readable by anyone
-- from any index (engine::read_stream). Chunks are numbered from 0 in the order they were appended; each
-- carries where its writer was: the execution (epoch), the step position (seq) and the attempt (0: the
-- workflow's own code, between steps).
--
-- No duplicates across retries and crashes: when a stream's writer position moves (output_streams holds
-- the last one), the chunks it supersedes go first — those of earlier executions at or past this
-- position (work being redone after a crash or a lost lease; replayed steps write nothing again), and
-- those of this step's earlier failed attempts. Both are always the stream's tail, so the indexes stay
-- contiguous: a reader reconnecting at n gets chunk n next.
CREATE TABLE keel.output_streams (
  run_id   uuid NOT NULL REFERENCES keel.runs (id) ON DELETE CASCADE,
  stream   text NOT NULL,
  epoch    bigint NOT NULL,
  seq      int NOT NULL,
  attempt  int NOT NULL,
  closed   bool NOT NULL DEFAULT false,
  PRIMARY KEY (run_id, stream)
);

CREATE TABLE keel.output_chunks (
  run_id   uuid NOT NULL,
  stream   text NOT NULL,
  idx      bigint NOT NULL CHECK (idx >= 0),
  epoch    bigint NOT NULL,
  seq      int NOT NULL,
  attempt  int NOT NULL,
  token    uuid NOT NULL,  -- the flush that wrote it (a retried transaction finds its own)
  data     jsonb NOT NULL,
  at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (run_id, stream, idx),
  FOREIGN KEY (run_id, stream) REFERENCES keel.output_streams (run_id, stream) ON DELETE CASCADE
);
CREATE INDEX output_chunks_writer ON keel.output_chunks (run_id, stream, epoch, seq, attempt);
