-- Cooperative cancel: a started run asked to cancel sees a `cancelled` error at its next step or wait (and may
-- compensate) until this deadline; past it, it is fenced off and marked cancelled by the next claim that
-- finds it (its lease, capped at the deadline, lapses then). NULL: no cancel requested.
ALTER TABLE keel.runs ADD COLUMN cancel_deadline timestamptz;
