-- Listing the runs an operator must act on (GET /v1/runs?status=dead_lettered|unclaimable), newest first,
-- keyset-paginated by id like 018_run_listing.sql's filters, each through an index that holds those runs
-- only (or little more), so that a page that does not fill reads no more than the runs it could show.

-- Dead-lettered runs: failed by a claim after losing their worker more than max_recoveries times. Only
-- they enter these indexes (a handful, whatever the number of failed runs); a retry takes a run out.
CREATE INDEX runs_dead_lettered ON keel.runs (id DESC)
  WHERE status = 'failed' AND (error->>'code') = 'dead_lettered';
CREATE INDEX runs_dead_lettered_by_workflow ON keel.runs (workflow, id DESC)
  WHERE status = 'failed' AND (error->>'code') = 'dead_lettered';

-- Queued runs by (workflow, version): unclaimable ones are those of a version no live worker registered
-- (keel.workers). A page skips from version to version (one descent each: there are few) and reads the
-- newest runs of each unregistered one, so a backlog of claimable runs costs it nothing. A run enters when
-- it is enqueued (or retried, rewound, or its debounce window moves) and leaves when it is claimed.
CREATE INDEX runs_queued_by_version ON keel.runs (workflow, version, id DESC) WHERE status = 'queued';
