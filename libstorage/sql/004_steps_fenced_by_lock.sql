-- A checkpoint now checks its lease under a share lock on the run row instead of advancing a counter on it:
-- the run row no longer gets a new version per step. What the counter said is what keel.steps holds.
ALTER TABLE keel.runs DROP COLUMN next_seq;
