-- Listing runs newest first (GET /v1/runs): ids are UUIDv7, so the primary key already orders runs by
-- creation time; these serve the filters, keyset-paginated by id. Each index takes an entry on every
-- non-HOT update of a run (claims, wake-ups, ends), so the status ones leave out completed runs, the bulk
-- of the table, which a scan of the primary key (or of runs_by_workflow) fills a page with fast anyway.
CREATE INDEX runs_by_workflow ON keel.runs (workflow, id DESC);
CREATE INDEX runs_unfinished_by_status ON keel.runs (status, id DESC) WHERE status <> 'completed';
CREATE INDEX runs_unfinished_by_workflow_status ON keel.runs (workflow, status, id DESC)
  WHERE status <> 'completed';
