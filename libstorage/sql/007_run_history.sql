-- What operators did to a run (retry, rewind): recorded, never silent.
CREATE TABLE keel.run_history (
  id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  run_id  uuid NOT NULL,
  at      timestamptz NOT NULL DEFAULT now(),
  what    text NOT NULL,
  detail  jsonb NOT NULL
);
CREATE INDEX run_history_run ON keel.run_history (run_id, id);
