-- Concurrency keys (workflow_definition::concurrency, enqueue_options::concurrency_key): at most `limit` runs
-- of a workflow with the same key hold a worker at once, across every process.
--
-- Each key has `limit` slot rows; a run must hold one to be running. The claim statement takes free slots
-- with FOR UPDATE SKIP LOCKED on a one-table condition (holder IS NULL), which PostgreSQL checks again on
-- the newest row version once it holds the lock: two claimers can never both take one slot, so the limit is
-- exact, with no counter to drift. The statements that insert runs make their keys' slots. A run gives its
-- slot back the moment it stops running (it finishes, sleeps, waits, is released, cancelled or
-- dead-lettered), in the statement that changes its status (see the trigger below). A run whose lease
-- expired keeps its slot until it is claimed again (its worker may still be running it), and its reclaim
-- needs no new one.
--
-- A due run whose key has no free slot is parked rather than left due (claims would read it again and
-- again, ahead of other keys' work): its due_at moves to 'infinity', out of the claim range, and
-- key_parked_at keeps when it first queued there, so that parked runs start in their order. A freed slot
-- wakes the key's first parked run in the same transaction. A run parked while a slot was being freed (the
-- claim read the slot as held, the release found no run parked yet) is woken by the periodic sweep
-- (keel_wake_key_parked), so a free slot never waits for long.

-- The rule a workflow version declares: its limit, and the path (#>> form) of the key in the input; a NULL
-- path: one key for the whole workflow.
ALTER TABLE keel.workflow_versions ADD COLUMN concurrency_limit int CHECK (concurrency_limit > 0),
                                   ADD COLUMN concurrency_key text[];

ALTER TABLE keel.runs ADD COLUMN concurrency_key text,
                      ADD COLUMN concurrency_limit int,
                      ADD COLUMN key_parked_at timestamptz;

-- A key read from the input may be any size: past 256 bytes it is kept as its digest (an index entry has a
-- size limit, and distinct keys stay distinct).
CREATE FUNCTION keel.short_key(k text) RETURNS text IMMUTABLE PARALLEL SAFE LANGUAGE sql
  AS $$ SELECT CASE WHEN octet_length(k) <= 256 THEN k ELSE 'md5:' || md5(k) END $$;

CREATE TABLE keel.concurrency_slots (
  workflow text NOT NULL,
  key      text NOT NULL,
  slot     int NOT NULL,
  holder   uuid,  -- the running run that holds it; NULL: free
  PRIMARY KEY (workflow, key, slot)
);

-- Parked runs of a key, in the order they start: the release trigger and the sweep read only these.
CREATE INDEX runs_key_parked ON keel.runs (workflow, concurrency_key, priority DESC, key_parked_at)
  WHERE due_at = 'infinity' AND key_parked_at IS NOT NULL;

-- A run that stops running frees its slot, and the key's first parked run becomes due. The statement that
-- finishes runs (the hot path: every run passes it once, in batches) does this itself, set-based, and the
-- trigger skips it: that is the change to a final status that leaves the epoch as it is (a finish is fenced
-- by the epoch). Every other way out of running (a sleep, a wait, a release, a cancel, a dead-letter)
-- comes here. A slot whose holder is no longer running for any other reason is freed by the sweep.
CREATE FUNCTION keel.release_concurrency_slot() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE keel.concurrency_slots SET holder = NULL
  WHERE workflow = NEW.workflow AND key = NEW.concurrency_key AND holder = NEW.id;
  IF FOUND THEN
    UPDATE keel.runs SET due_at = now()
    WHERE id = (SELECT id FROM keel.runs
                WHERE workflow = NEW.workflow AND concurrency_key = NEW.concurrency_key
                  AND due_at = 'infinity' AND key_parked_at IS NOT NULL
                ORDER BY priority DESC, key_parked_at
                LIMIT 1 FOR UPDATE SKIP LOCKED);
    IF FOUND THEN
      PERFORM pg_notify('keel_runs', '');
    END IF;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER runs_release_concurrency_slot
  AFTER UPDATE OF status ON keel.runs
  FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status <> 'running' AND NEW.concurrency_key IS NOT NULL
                     AND (NEW.status IN ('queued', 'sleeping', 'waiting') OR NEW.epoch <> OLD.epoch))
  EXECUTE FUNCTION keel.release_concurrency_slot();
