-- ctx.continue_as_new: a run starts its workflow afresh, under the same id, with a new input and an empty
-- history. Each fresh start is a new generation; hook tokens are derived from it, so that a link handed out
-- by an earlier generation never resumes a hook of a later one at the same position.
ALTER TABLE keel.runs ADD COLUMN generation int NOT NULL DEFAULT 0;
