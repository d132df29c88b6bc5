-- Debounce (enqueue_options::debounce_key, workflow_definition::debounce): a queued run holds its workflow's
-- debounce key until it starts; enqueues with the same key meanwhile replace its input and push its start
-- back, in one upsert on this index. Only debounced runs that never started enter it: a run queued again
-- after it started (released, woken from a wait, retried, rewound) has claims > 0 and stays out, so that a
-- later enqueue neither rewrites its input nor collides with a newer run holding the key.
ALTER TABLE keel.runs ADD COLUMN debounce_key text;
CREATE UNIQUE INDEX runs_debouncing ON keel.runs (workflow, debounce_key)
  WHERE status = 'queued' AND claims = 0 AND debounce_key IS NOT NULL;
