-- Webhooks (ctx.create_webhook) are hooks resumed by a whole HTTP request: `webhook` says how the request's
-- sender is answered ({"respond_with": {...}} or {"response_timeout_ms": n}; NULL: a plain hook), and
-- `response` holds the answer the workflow sent from a step, for the request that waits for it (and for a
-- sender's retry of the same request).
ALTER TABLE keel.hooks ADD COLUMN webhook jsonb, ADD COLUMN response jsonb;
