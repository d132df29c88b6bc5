-- Throttle (workflow_definition::throttle, enqueue_options::throttle_key): at most `limit` runs of a
-- workflow with the same key start in any `window`, across every process.
--
-- As concurrency keys (026), with slots that come free by time instead of by release: each key has `limit`
-- rows, and a run's first start takes one whose free_at has passed, moving it to now() + window, in the
-- claim statement (FOR UPDATE SKIP LOCKED on the one-table condition free_at <= now(), rechecked on the
-- newest row version). Two uses of one slot are a window apart, so any window holds at most `limit` starts
-- (by the runs' started_at) — a sliding window, exact. Only first starts count: a resume after a sleep, a
-- wait or a crash is no new start. A run that finds no slot is parked (due_at 'infinity', key_parked_at as
-- for concurrency keys) and the sweep makes as many of the key's parked runs due as it has slots come free,
-- at the moment the first one does.

ALTER TABLE keel.workflow_versions ADD COLUMN throttle_limit int CHECK (throttle_limit > 0),
                                   ADD COLUMN throttle_window_ms bigint CHECK (throttle_window_ms > 0),
                                   ADD COLUMN throttle_key text[];

ALTER TABLE keel.runs ADD COLUMN throttle_key text,
                      ADD COLUMN throttle_limit int,
                      ADD COLUMN throttle_window_ms bigint;

CREATE TABLE keel.throttle_slots (
  workflow text NOT NULL,
  key      text NOT NULL,
  slot     int NOT NULL,
  free_at  timestamptz NOT NULL DEFAULT '-infinity',
  PRIMARY KEY (workflow, key, slot)
);

-- Parked runs of a throttle key, in the order they start: the sweep reads only these.
CREATE INDEX runs_throttle_parked ON keel.runs (workflow, throttle_key, priority DESC, key_parked_at)
  WHERE due_at = 'infinity' AND key_parked_at IS NOT NULL AND throttle_key IS NOT NULL;
