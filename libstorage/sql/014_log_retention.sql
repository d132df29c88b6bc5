-- Retention of the run log (store::trim_log): a row goes once every run its events are about has finished
-- before the cutoff, and those runs are marked, so that a reader of one of them is told its log is
-- incomplete (log_page::gap_until) rather than handed part of it in silence. Rows are removed in small
-- batches, each its own transaction, skipping rows another statement holds: no long locks.
ALTER TABLE keel.runs ADD COLUMN log_trimmed bool NOT NULL DEFAULT false;
