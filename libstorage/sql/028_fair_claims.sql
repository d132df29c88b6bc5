-- Weighted fair claims (workflow_definition::fairness, enqueue_options::fairness_key and fairness_weight):
-- when several keys (tenants) have queued work, claims interleave them by weight, so a key with 100,000
-- queued runs cannot hold back another key's single run by more than one claim batch.
--
-- Stride scheduling. Each run of a key is placed, as it is enqueued, at a virtual time (fair_vtime) 1/weight
-- after the key's last queued run of the same priority, or, when the key has none queued, 1/weight after the
-- first run queued in that priority (the current pass). A key's runs are spaced by 1/weight whatever their
-- number, and a key that had nothing queued joins at the current pass, level with the others' next runs:
-- no credit for having been idle, no debt for what it ran before. Claims take fair runs in virtual-time
-- order. So a burst of 50,000 runs of one key spans 50,000 virtual times, and a run of another key enqueued
-- while the burst is worked through lands next to the burst's next run. There is no clock to move and no
-- row every claim writes: the pass is read from the queue itself (one index descent). Runs nobody serves
-- (a workflow version no worker registered) can hold the pass back; that only favours newcomers.
--
-- A fair run waits outside the due-time range (due_at 'infinity', as parked runs do, so the claim's
-- due-time scan never reads the backlog) and in runs_fair, by priority and virtual time; the claim walks
-- both and takes one run of each in turn, the first of each turn by a coin toss (the runs without a
-- fairness key, and runs resumed after a sleep or a wait, count as one key of their own, and a claim of one
-- run takes either with even odds). A run enqueued to start later (run_at, debounce) is placed nowhere: it
-- starts in due order when it is due. A run parked for a concurrency key or throttle leaves the fair queue:
-- it starts in its key's order when a slot frees up.
--
-- The placement reads the key's last run without a lock, so enqueues never wait for each other: two
-- transactions enqueuing runs of one key at once (several writers or processes) can give their runs the
-- same virtual times, and for that stretch the key gets two runs where it would get one.

ALTER TABLE keel.workflow_versions ADD COLUMN fair_key text[];  -- the path of the key in the input

ALTER TABLE keel.runs ADD COLUMN fair_key text,
                      ADD COLUMN fair_weight int CHECK (fair_weight > 0),
                      ADD COLUMN fair_vtime double precision;  -- in the fair queue: its virtual time

-- The fair queue, as the claim walks it (and its current pass: each priority's first); and each key's last
-- queued run of a priority, for placing the next.
CREATE INDEX runs_fair ON keel.runs (priority DESC, fair_vtime) WHERE fair_vtime IS NOT NULL AND status = 'queued';
CREATE INDEX runs_fair_tail ON keel.runs (fair_key, priority, fair_vtime)
  WHERE fair_vtime IS NOT NULL AND status = 'queued';

-- A row trigger, unlike the slot CTEs of 026: every statement that inserts runs places them the same way,
-- and a batch of one key sees its own earlier rows (a BEFORE trigger's queries see the rows its statement
-- inserted before), so its runs are spaced one after another.
CREATE FUNCTION keel.fair_place() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.fair_vtime := coalesce((SELECT fair_vtime FROM keel.runs
                              WHERE fair_key = NEW.fair_key AND priority = NEW.priority
                                AND fair_vtime IS NOT NULL AND status = 'queued'
                              ORDER BY fair_vtime DESC LIMIT 1),
                             (SELECT fair_vtime FROM keel.runs
                              WHERE priority = NEW.priority AND fair_vtime IS NOT NULL AND status = 'queued'
                              ORDER BY fair_vtime LIMIT 1),
                             0)
                    + 1.0 / coalesce(NEW.fair_weight, 1);
  NEW.due_at := 'infinity';
  RETURN NEW;
END $$;

CREATE TRIGGER runs_fair_place
  BEFORE INSERT ON keel.runs
  FOR EACH ROW WHEN (NEW.fair_key IS NOT NULL AND NEW.status = 'queued' AND NEW.due_at <= now())
  EXECUTE FUNCTION keel.fair_place();
