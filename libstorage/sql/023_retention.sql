-- Retention of finished runs (store::purge_runs) deletes each run's rows by run: events and hooks get an
-- index by run for it (their other indexes cover only pending events and open hooks).
CREATE INDEX events_by_run ON keel.events (run_id);
CREATE INDEX hooks_by_run ON keel.hooks (run_id);
