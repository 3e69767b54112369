-- V5: a lost worker is not a failed task.
--
-- A task whose worker died or lost the database (its lease expired) goes back to `pending`
-- whatever its retry policy; `rescues` counts how often that happened. `run_started` says
-- whether the current run's start has been recorded: a claim clears it, the worker sets it
-- (together with `attempts`) once the run is under way, so `attempts` counts runs that
-- started and a task lost before it started counts none. When a worker is lost while the
-- task's run had started and that brings `rescues` to `max_rescues` (NULL: the rescuing
-- worker's default), the task fails as poison and its onFailed handler runs.
ALTER TABLE tasks ADD COLUMN rescues integer NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN max_rescues integer;
ALTER TABLE tasks ADD COLUMN run_started boolean NOT NULL DEFAULT false;
