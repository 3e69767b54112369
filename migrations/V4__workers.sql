-- V4: live workers and the task names they run.
--
-- Every running worker upserts its row every heartbeat interval (a few seconds) and deletes
-- it at graceful shutdown. The rescuer's maintenance pass reads it to find pending tasks
-- whose name no live worker has registered, and notes that on the task once (SPEC §4: an
-- unknown task name is recorded on the task). The claim never reads this table.
CREATE TABLE workers (
    id         text PRIMARY KEY,
    task_names text[] NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);
