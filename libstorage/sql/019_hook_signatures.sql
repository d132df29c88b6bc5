-- Hooks a machine resumes can take signed requests only (Keel-Signature: HMAC-SHA256 with the secrets of
-- the key named here; the secrets live in the engines' configuration, never in the database).
ALTER TABLE keel.hooks ADD COLUMN signature_key text;

-- Signed messages accepted lately, by hook (digest: SHA-256 of the token's hash and of the message's own
-- SHA-256, "<t>.<body>"): each is accepted once, so a replay is refused, also by a hook a rewind created
-- again with the same token. `attempt` is the resume call that recorded it: the same call repeated after a
-- lost connection is not a replay. Kept well past the signatures' tolerance, then pruned by later signed
-- resumes.
CREATE TABLE keel.hook_signatures (
  digest     bytea PRIMARY KEY,
  signed_at  timestamptz NOT NULL,
  attempt    uuid NOT NULL
);
CREATE INDEX hook_signatures_signed_at ON keel.hook_signatures (signed_at);
