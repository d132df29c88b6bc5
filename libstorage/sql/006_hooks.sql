-- Hooks: a run waits for a person or a webhook to resume it through a URL holding an unguessable token. The
-- token is never stored: only its SHA-256. It is derived (HMAC) from a secret, the run and the step position,
-- so that a replay after a crash hands the workflow the same URL again.
CREATE TABLE keel.hooks (
  token_hash    bytea PRIMARY KEY,
  run_id        uuid NOT NULL,
  seq           int NOT NULL,                  -- the create_hook step's position
  name          text NOT NULL,
  metadata      jsonb,
  created_at    timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz,                   -- NULL: never
  status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resumed', 'closed')),
  payload       jsonb,
  -- The audit of the resume: when, by whom (when the caller said), and what (hash of the payload's text).
  payload_hash  bytea,
  resumed_at    timestamptz,
  resumed_by    text,
  UNIQUE (run_id, seq)
);

-- Secrets the engines of one database share. The hook secret here is used when engine_options::hook_secret
-- is empty: zero-setup, but then a read of the database is enough to compute live hook tokens.
CREATE TABLE keel.secrets (
  name   text PRIMARY KEY,
  value  text NOT NULL
);
INSERT INTO keel.secrets (name, value)
VALUES ('hook', encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text
                                         || clock_timestamp()::text, 'UTF8')), 'hex'));
