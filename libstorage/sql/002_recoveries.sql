-- How many times a run was reclaimed after its lease expired (its worker crashed, was killed or stalled).
-- Past the engine's max_recoveries the claim fails the run as dead_lettered instead of running it again.
ALTER TABLE keel.runs ADD COLUMN recoveries int NOT NULL DEFAULT 0;

-- The claim that took the run last (client-chosen, per claim request): a claim retried after its COMMIT's
-- acknowledgement was lost finds the runs its first attempt took, instead of stranding them.
ALTER TABLE keel.runs ADD COLUMN claim_token uuid;
