-- Live workers and the (workflow, version) pairs each one runs, so that a queued run that no worker can
-- claim (its version is registered nowhere) says so instead of waiting silently.
CREATE TABLE keel.workers (
  id          text PRIMARY KEY,                -- the lease owner name
  workflows   jsonb NOT NULL,                  -- [{"workflow": name, "version": n}, ...]
  started_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL             -- refreshed with the worker's heartbeats
);
