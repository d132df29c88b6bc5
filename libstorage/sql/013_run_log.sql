-- The durable run event log: every lifecycle event of every run, appended by the statement that makes the
-- change it describes (a claim, a checkpoint, a finish, a wait, a wake-up...), so in the same transaction,
-- and as one row per statement: the appends are batched with the writes they belong to. (Triggers with
-- transition tables would cover every path by themselves, but capturing those tables costs the hot path
-- more than the appends do.) A session with keel.log = off appends nothing.
--
-- Its order is safe to read while transactions commit in any order. An event's `pos` is its transaction's
-- id (xid8) shifted left 20 bits plus its rank in that transaction (room for 2^43 transaction ids, and a
-- million events per transaction; log_next refuses beyond); a reader takes only events of
-- transactions older than every transaction still in progress (pg_snapshot_xmin of its snapshot). A
-- transaction that commits later therefore never puts an event below one already read: a reader that saw
-- pos N and asks for what follows N gets no gap and no duplicate, on any worker.
--
-- One row per appending statement (a writer batch, a claim, an enqueue), holding its events in order as
-- parallel arrays (event i, from 1, is at pos + i - 1): collecting values into arrays is cheap, where
-- building one JSON document per batch, or per step, would cost the writer about as much as its own
-- statements. A run's events are found through the GIN index on `runs`.
CREATE TABLE keel.run_log (
  pos    bigint PRIMARY KEY,            -- the first event's position; the row holds pos .. pos + n - 1
  n      int NOT NULL CHECK (n > 0),
  at     timestamptz NOT NULL DEFAULT clock_timestamp(),
  runs   uuid[] NOT NULL,               -- each event's run
  kinds  text[] NOT NULL,               -- each event's kind: run_started, step_completed, ...
  data   jsonb[] NOT NULL,              -- each event's details; NULL for a checkpointed step, whose details
                                        -- readers take from keel.steps (it was written with them; a
  seqs   int[],                         -- statement that removes step rows copies them here first)
  epochs bigint[],                      -- (a checkpointed step's seq, and the epoch that wrote it)
  CHECK ((pos & 1048575) + n <= 1048576)  -- a transaction's events stay in its own range
);
CREATE INDEX run_log_runs ON keel.run_log USING gin (runs);

-- Where retention has removed the log up to (a reader asking from before it is told of the gap).
CREATE TABLE keel.run_log_horizon (
  one      bool PRIMARY KEY DEFAULT true CHECK (one),
  removed  bigint NOT NULL
);
INSERT INTO keel.run_log_horizon (removed) VALUES (0);

-- The next position this transaction may use: its positions start at its xid8 << 20. (Readers are not
-- notified per transaction: a NOTIFY takes an instance-wide lock through the commit's WAL flush, which
-- would serialise every logging commit; followers poll, or listen to a channel only they make busy.)
CREATE FUNCTION keel.log_next() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  xid bigint := pg_current_xact_id()::text::bigint;
  first bigint;
BEGIN
  IF xid >= (1::bigint << 43) THEN
    RAISE EXCEPTION 'keel.run_log: transaction id % is past the log''s positions (2^43)', xid;
  END IF;
  SELECT coalesce(max(pos + n), (xid << 20) + 1) INTO first
  FROM keel.run_log WHERE pos >= xid << 20 AND pos < (xid + 1) << 20;
  RETURN first;
END
$$;

CREATE FUNCTION keel.micros(t timestamptz) RETURNS bigint LANGUAGE sql STABLE AS $$
  SELECT (extract(epoch FROM t) * 1e6)::bigint
$$;

-- What operators did (retry, rewind) and continue_as_new, as they are recorded in keel.run_history.
CREATE FUNCTION keel.log_history_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO keel.run_log (pos, n, runs, kinds, data)
  SELECT keel.log_next(), count(*), array_agg(h.run_id ORDER BY h.id),
         array_agg(CASE h.what WHEN 'continued_as_new' THEN 'run_continued' ELSE 'run_' || h.what END
                   ORDER BY h.id),
         array_agg(h.detail ORDER BY h.id)
  FROM new_history h
  WHERE current_setting('keel.log', true) IS DISTINCT FROM 'off'
  HAVING count(*) > 0;
  RETURN NULL;
END
$$;

CREATE TRIGGER history_log_inserted AFTER INSERT ON keel.run_history
REFERENCING NEW TABLE AS new_history FOR EACH STATEMENT EXECUTE FUNCTION keel.log_history_inserted();

-- A child's end wakes its parent as before (012), and logs it.
CREATE OR REPLACE FUNCTION keel.wake_parent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM keel.runs WHERE id = NEW.parent_id FOR KEY SHARE;
  UPDATE keel.runs
  SET status = 'queued', due_at = now(),
      waiting_for = waiting_for || jsonb_build_object('woken_by', 'child', 'child', NEW.id::text)
  WHERE id = NEW.parent_id AND status = 'waiting'
    AND ((waiting_for->>'kind' = 'child' AND waiting_for->>'child' = NEW.id::text)
         OR (waiting_for->>'kind' = 'any'
             AND waiting_for->'arms' @> jsonb_build_array(jsonb_build_object('kind', 'child', 'child', NEW.id::text))));
  IF FOUND THEN
    PERFORM pg_notify('keel_runs', '');
    IF current_setting('keel.log', true) IS DISTINCT FROM 'off' THEN
      INSERT INTO keel.run_log (pos, n, runs, kinds, data)
      VALUES (keel.log_next(), 1, ARRAY[NEW.parent_id], ARRAY['run_resumed'],
              ARRAY[jsonb_build_object('by', 'child', 'child', NEW.id, 'from', 'waiting')]);
    END IF;
  END IF;
  RETURN NULL;
END
$$;
