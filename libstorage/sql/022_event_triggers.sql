-- Event triggers (engine::publish_event): each workflow version a worker registers, with the events that
-- start it and those that cancel its runs, as the worker declared them when it started. The newest version
-- of a workflow speaks for it: what an event starts or cancels is read from that row.
CREATE TABLE keel.workflow_versions (
  workflow text NOT NULL,
  version int NOT NULL,
  triggers text[] NOT NULL DEFAULT '{}',
  -- [{"event": name, "match": [path...], "input": [path...]}]
  cancel_on jsonb NOT NULL DEFAULT '[]',
  declared_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (workflow, version)
);
