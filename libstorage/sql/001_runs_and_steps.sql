-- Runs and their checkpointed steps.
CREATE TABLE keel.runs (
  id               uuid PRIMARY KEY,             -- UUIDv7 chosen by the client: retried inserts are idempotent
  workflow         text NOT NULL,
  version          int NOT NULL,
  -- queued -> running -> completed | failed | cancelled; running -> queued on release.
  -- Reserved for later issues: sleeping, waiting (durable timers, events, hooks).
  status           text NOT NULL CHECK (status IN ('queued', 'running', 'sleeping', 'waiting',
                                                  'completed', 'failed', 'cancelled')),
  input            jsonb NOT NULL,
  output           jsonb,
  error            jsonb,                        -- {code, message, step, attempts}
  idempotency_key  text,
  priority         int NOT NULL DEFAULT 0,
  -- When the run next needs a worker: queued = run_at; running = lease expiry; NULL when terminal.
  due_at           timestamptz,
  owner            text,                         -- worker holding the lease
  epoch            bigint NOT NULL DEFAULT 0,    -- fencing token: bumped by every claim, release and cancel
  next_seq         int NOT NULL DEFAULT 0,       -- steps checkpointed so far
  claims           int NOT NULL DEFAULT 0,       -- how many times a worker claimed the run
  created_at       timestamptz NOT NULL DEFAULT now(),
  started_at       timestamptz,
  finished_at      timestamptz
) WITH (fillfactor = 85);  -- room on each page keeps per-step updates (next_seq only) HOT

-- Partial: most runs have no key, and a full index would take a new entry on every non-HOT update.
CREATE UNIQUE INDEX runs_idempotency_key ON keel.runs (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- The claim scan: runs that need a worker, by priority then due time.
CREATE INDEX runs_claimable ON keel.runs (priority DESC, due_at) WHERE status IN ('queued', 'running');

CREATE TABLE keel.steps (
  -- No foreign key: a step row is only ever inserted by the fenced checkpoint, which joins it to its run
  -- row (locked by the same statement), so the reference holds by construction; an RI trigger would add a
  -- per-row lookup and lock on the hot path. Deleting runs deletes their steps explicitly.
  run_id       uuid NOT NULL,
  seq          int NOT NULL,                     -- position in the workflow's deterministic step order
  name         text NOT NULL,
  status       text NOT NULL CHECK (status IN ('completed', 'failed')),
  output       jsonb,
  error        jsonb,
  attempts     int NOT NULL,
  started_at   timestamptz NOT NULL,
  finished_at  timestamptz NOT NULL,
  epoch        bigint NOT NULL,                  -- the lease epoch that wrote it
  PRIMARY KEY (run_id, seq)
);
