-- Hooks a machine resumes can take signed requests only (Keel-Signature: HMAC-SHA256 with the secrets of
-- the key named here; the secrets live in the engines' configuration, never in the database).
ALTER TABLE keel.hooks ADD COLUMN signature_key text;

-- Signatures accepted lately, by hook (digest: SHA-256 of the token's hash and the signature): each is
-- accepted once, so a replay is refused. Kept well past the signatures' tolerance (5 minutes), then pruned
-- by later signed resumes.
CREATE TABLE keel.hook_signatures (
  digest     bytea PRIMARY KEY,
  signed_at  timestamptz NOT NULL
);
CREATE INDEX hook_signatures_signed_at ON keel.hook_signatures (signed_at);
