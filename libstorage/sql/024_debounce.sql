-- Debounce (enqueue_options::debounce_key, workflow_definition::debounce): a queued run holds its workflow's
-- debounce key until it starts; enqueues with the same key meanwhile replace its input and push its start
-- back, in one upsert on this index. Only queued, debounced runs enter it.
ALTER TABLE keel.runs ADD COLUMN debounce_key text;
CREATE UNIQUE INDEX runs_debouncing ON keel.runs (workflow, debounce_key)
  WHERE status = 'queued' AND debounce_key IS NOT NULL;
