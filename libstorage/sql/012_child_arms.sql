-- A child run can be an alternative of a wait for any (ctx.any over a ctx.start_child handle): its end wakes
-- a parent whose wait for any lists it, as it wakes a parent waiting for it alone (008_child_runs.sql).
CREATE OR REPLACE FUNCTION keel.wake_parent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM keel.runs WHERE id = NEW.parent_id FOR KEY SHARE;
  UPDATE keel.runs SET status = 'queued', due_at = now()
  WHERE id = NEW.parent_id AND status = 'waiting'
    AND ((waiting_for->>'kind' = 'child' AND waiting_for->>'child' = NEW.id::text)
         OR (waiting_for->>'kind' = 'any'
             AND waiting_for->'arms' @> jsonb_build_array(jsonb_build_object('kind', 'child', 'child', NEW.id::text))));
  IF FOUND THEN
    PERFORM pg_notify('keel_runs', '');
  END IF;
  RETURN NULL;
END
$$;
