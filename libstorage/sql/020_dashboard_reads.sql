-- What a dashboard reads, each through an index: the inbox of pending decisions (GET /v1/hooks), its count
-- (GET /v1/stats), and a run's children a page at a time (GET /v1/runs?parent=).

-- The inbox: open hooks soonest expiry first (never-expiring ones last), ties by run and position, keyset
-- paginated on that key. Only open hooks are indexed: a resumed or closed hook leaves the index, so what a
-- page costs is the open hooks it walks, not the table's history. Expired hooks stay open (nothing closes
-- them) but sort before now(), where a scan starts. A hook of a finished run that never expires stays in the
-- index and is skipped by the join to its run.
CREATE INDEX hooks_open_by_expiry ON keel.hooks ((coalesce(expires_at, 'infinity'::timestamptz)), run_id, seq)
  WHERE status = 'open';
-- The planner keeps no statistics of a partial index's expressions: without these it would reckon a third
-- of the open hooks unexpired, whatever their number, and count them with a scan of the table.
CREATE STATISTICS keel.hooks_expiry_key ON (coalesce(expires_at, 'infinity'::timestamptz)) FROM keel.hooks;

-- The inbox of one workflow: the hook carries its run's workflow (a run never changes workflow), set when
-- it is created; hooks open now are filled in here, those resumed or closed before keep NULL.
ALTER TABLE keel.hooks ADD COLUMN workflow text;
UPDATE keel.hooks h SET workflow = r.workflow FROM keel.runs r WHERE r.id = h.run_id AND h.status = 'open';
CREATE INDEX hooks_open_by_workflow
  ON keel.hooks (workflow, (coalesce(expires_at, 'infinity'::timestamptz)), run_id, seq)
  WHERE status = 'open';

-- A run's children newest first: the index of children (008) gains the id, so that a page of them is read
-- in order, not all of them sorted. It still serves every lookup by parent (cancels, run trees).
DROP INDEX keel.runs_children;
CREATE INDEX runs_children ON keel.runs (parent_id, id DESC) WHERE parent_id IS NOT NULL;
