-- Parallel branches (ctx.parallel, ctx.map): a step inside a branch is identified on replay by its branch
-- (a path such as "3:1", branch 1 of the parallel at position 3; nested: "3:1/2:0") and its position in
-- that branch, since branches finish in any order. Its seq is still unique in the run (taken from the
-- positions the parallel region spans), so everything keyed by (run_id, seq) holds. NULL on the main line.
ALTER TABLE keel.steps ADD COLUMN branch text, ADD COLUMN branch_seq int;
