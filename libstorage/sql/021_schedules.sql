-- Cron schedules (engine::put_schedule). The expression is read by the engine (keel::cron_schedule), which
-- stores each schedule's next occurrence; a worker fires a due schedule by moving it to its next occurrence
-- and inserting the runs in one statement that applies only if the schedule is still at the revision it
-- read (see fire_schedule): of several workers, exactly one fires each occurrence.
CREATE TABLE keel.schedules (
  name text PRIMARY KEY,
  workflow text NOT NULL,
  version int,
  cron text NOT NULL,
  time_zone text NOT NULL,
  input jsonb NOT NULL,
  priority int NOT NULL DEFAULT 0,
  catch_up int NOT NULL DEFAULT 0 CHECK (catch_up BETWEEN 0 AND 1000),
  paused boolean NOT NULL DEFAULT false,
  next_fire_at timestamptz,
  last_fired_at timestamptz,
  last_run uuid,
  revision bigint NOT NULL DEFAULT 1,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- What workers look for every second: the active schedules by next occurrence.
CREATE INDEX schedules_by_next_fire ON keel.schedules (next_fire_at) WHERE NOT paused AND next_fire_at IS NOT NULL;
CREATE INDEX schedules_by_workflow ON keel.schedules (workflow, name);
