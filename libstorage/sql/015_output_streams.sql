-- Durable output streams (ctx.stream): ordered chunks a run writes to a named stream, readable by anyone
-- from any index (engine::read_stream). Chunks are numbered from 0 in the order they were appended; each
-- carries where its writer was: the generation (ctx.continue_as_new), the execution (epoch), the step
-- position (seq) and the attempt (0: the workflow's own code, between steps).
--
-- No duplicates across retries and crashes: when a stream's writer position moves (output_streams holds
-- the last one), the chunks it supersedes go first — those of earlier executions at or past this
-- position (work being redone after a crash or a lost lease; replayed steps write nothing again), and
-- those of this step's earlier failed attempts, within the generation. Both are always the stream's tail,
-- so the indexes stay contiguous: a reader reconnecting at n gets chunk n next. A close is undone the same
-- way when the code before it is redone, and by a later generation.
CREATE TABLE keel.output_streams (
  run_id   uuid NOT NULL REFERENCES keel.runs (id) ON DELETE CASCADE,
  stream   text NOT NULL,
  generation int NOT NULL,
  epoch    bigint NOT NULL,
  seq      int NOT NULL,
  attempt  int NOT NULL,
  closed   bool NOT NULL DEFAULT false,
  closed_epoch bigint,   -- where the close was written (an execution redoing that code reopens it)
  closed_seq   int,
  PRIMARY KEY (run_id, stream)
);

CREATE TABLE keel.output_chunks (
  run_id   uuid NOT NULL,
  stream   text NOT NULL,
  idx      bigint NOT NULL CHECK (idx >= 0),
  generation int NOT NULL,
  epoch    bigint NOT NULL,
  seq      int NOT NULL,
  attempt  int NOT NULL,
  token    uuid NOT NULL,  -- the flush that wrote it (a retried transaction finds its own)
  data     jsonb NOT NULL,
  at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (run_id, stream, idx),
  FOREIGN KEY (run_id, stream) REFERENCES keel.output_streams (run_id, stream) ON DELETE CASCADE
);
CREATE INDEX output_chunks_writer ON keel.output_chunks (run_id, stream, generation, epoch, seq, attempt);
