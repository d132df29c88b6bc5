-- Child runs: a run started by another run's ctx.child, which waits for it durably (`waiting`, holding no
-- worker). The parent's step position is kept with the child, for the record and the dashboard.
ALTER TABLE keel.runs ADD COLUMN parent_id uuid, ADD COLUMN parent_step int;
CREATE INDEX runs_children ON keel.runs (parent_id) WHERE parent_id IS NOT NULL;

-- A child that reaches completed, failed or cancelled — by its finish, a cancel (its own or a cascading
-- one) or a dead-letter — wakes its parent if the parent waits for it, in the same transaction. Every path
-- that ends a run is covered, including later ones, and runs without a parent pay only the WHEN test.
--
-- The parent row is key-share locked first, unconditionally: that conflicts with the FOR UPDATE the
-- parent's wait takes before it reads the child's status. Either this transaction locked first (the
-- parent's wait then reads the child finished) or the parent's wait committed first (the UPDATE below,
-- with a snapshot taken after the lock, finds it waiting and wakes it). Key share does not conflict with
-- the share lock of the parent's checkpoints, so a finishing child never waits for its running parent.
CREATE FUNCTION keel.wake_parent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM keel.runs WHERE id = NEW.parent_id FOR KEY SHARE;
  UPDATE keel.runs SET status = 'queued', due_at = now()
  WHERE id = NEW.parent_id AND status = 'waiting' AND waiting_for->>'kind' = 'child'
    AND waiting_for->>'child' = NEW.id::text;
  IF FOUND THEN
    PERFORM pg_notify('keel_runs', '');
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER runs_wake_parent AFTER UPDATE OF status ON keel.runs
FOR EACH ROW
WHEN (NEW.parent_id IS NOT NULL AND NEW.status IN ('completed', 'failed', 'cancelled')
      AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION keel.wake_parent();
