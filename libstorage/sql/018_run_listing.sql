-- Listing runs newest first (GET /v1/runs): ids are UUIDv7, so the primary key already orders runs by
-- creation time; these serve the filters, keyset-paginated by id. Every non-HOT update of a run (its claim,
-- its end) adds an entry to each index whose predicate the new row version meets: the status indexes take
-- only the states a run rests in off the happy path (failed, cancelled, waiting, sleeping), so a run that is
-- queued, runs and completes costs them nothing; completed, queued and running runs are found through the
-- primary key (completed ones are the bulk; queued and running ones are recent).
CREATE INDEX runs_by_workflow ON keel.runs (workflow, id DESC);
CREATE INDEX runs_resting_by_status ON keel.runs (status, id DESC)
  WHERE status IN ('failed', 'cancelled', 'waiting', 'sleeping');
CREATE INDEX runs_resting_by_workflow_status ON keel.runs (workflow, status, id DESC)
  WHERE status IN ('failed', 'cancelled', 'waiting', 'sleeping');
