-- How many times a run was reclaimed after its lease expired (its worker crashed, was killed or stalled).
-- Past the engine's max_recoveries the claim fails the run as dead_lettered instead of running it again.
ALTER TABLE keel.runs ADD COLUMN recoveries int NOT NULL DEFAULT 0;
