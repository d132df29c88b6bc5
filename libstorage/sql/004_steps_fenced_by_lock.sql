-- A checkpoint now checks its lease under a share lock on the run row instead of advancing a counter on it:
-- the run row no longer gets a new version per step. What the counter said is what keel.steps holds.
-- Stop every worker of an older version before this migration runs: their statements use the column (they
-- fail loudly without it rather than replay runs without their history).
ALTER TABLE keel.runs DROP COLUMN next_seq;
