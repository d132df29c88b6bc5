-- Durable waits: a run that sleeps or waits for an event holds no worker. It is `sleeping` (due at its wake
-- time) or `waiting` (due at its timeout, or never), and says what it waits for.
ALTER TABLE keel.runs ADD COLUMN waiting_for jsonb;  -- {"kind": "sleep"|"event", "event": name, "until": µs}

-- Sleeping and waiting runs become claimable when they are due (their wake time or timeout): the claim index
-- covers them. A waiting run without a timeout has no due_at and is woken by its event instead.
DROP INDEX keel.runs_claimable;
CREATE INDEX runs_claimable ON keel.runs (priority DESC, due_at)
  WHERE status IN ('queued', 'running', 'sleeping', 'waiting');

-- Events sent to runs, kept until a wait consumes them: an event sent before its run reaches the wait is not
-- lost. Each is consumed once, oldest first, by the wait at step position `consumed_seq`.
CREATE TABLE keel.events (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- send order
  run_id           uuid NOT NULL,
  name             text NOT NULL,
  payload          jsonb NOT NULL,
  idempotency_key  text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  consumed_seq     int,
  consumed_at      timestamptz
);
CREATE INDEX events_pending ON keel.events (run_id, name, id) WHERE consumed_seq IS NULL;
CREATE UNIQUE INDEX events_idempotency_key ON keel.events (run_id, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
