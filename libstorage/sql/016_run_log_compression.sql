-- A writer batch's log row holds arrays of a thousand elements and more, stored out of line. Compressing
-- them with pglz (the default) was the log's largest CPU cost in the group-commit writer, the backend
-- every checkpoint waits for (perf: its top symbol there); lz4 costs a fraction of it. A server built
-- without lz4 keeps pglz.
DO $$
BEGIN
  ALTER TABLE keel.run_log
    ALTER COLUMN runs SET COMPRESSION lz4,
    ALTER COLUMN kinds SET COMPRESSION lz4,
    ALTER COLUMN data SET COMPRESSION lz4,
    ALTER COLUMN seqs SET COMPRESSION lz4,
    ALTER COLUMN epochs SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
  RAISE NOTICE 'keel.run_log: lz4 is not available; its arrays stay compressed with pglz';
END
$$;
