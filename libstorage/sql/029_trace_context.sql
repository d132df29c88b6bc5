-- The W3C trace context (a `traceparent` header value) a run was started with, so that its steps, its child
-- runs and the services they call continue the caller's trace on whichever worker runs it. Children copy
-- their parent's.
ALTER TABLE keel.runs ADD COLUMN traceparent text;
