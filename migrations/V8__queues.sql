-- V8: queues and priority, and pausing a queue.
--
-- Every task runs in a queue (`default` unless tasks.yaml or an enqueue override names
-- another) at a priority from 0 (runs first, the default) to 9 (runs last). A worker serves
-- each of its queues with its own concurrency and claims a queue's due tasks in priority
-- order, FIFO within a priority.
ALTER TABLE tasks
    ADD COLUMN queue    text     NOT NULL DEFAULT 'default',
    ADD COLUMN priority smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9);

-- The claim reads one queue at a time, one priority at a time, due rows first: each
-- (queue, priority) range starts with its due rows, so rows not due yet, other queues'
-- rows and finished rows are never read. The claim locks every row it picks, so it visits
-- the table for each entry anyway: `name` is not in the index, which keeps its entries
-- (written by every enqueue, walked by every claim) as narrow as the key allows.
-- Building it locks the table against writes for as long as the build takes (seconds per
-- million pending rows; finished rows are not in it).
DROP INDEX tasks_claim_idx;
CREATE INDEX tasks_claim_idx ON tasks (queue, priority, run_after, id) WHERE status = 0;

-- A task definition carries its queue and priority, for workers that enqueue the onFailed
-- handler of a task they do not know.
ALTER TABLE task_definitions
    ADD COLUMN queue    text     NOT NULL DEFAULT 'default',
    ADD COLUMN priority smallint NOT NULL DEFAULT 0;

-- Paused queues. A queue without a row (or with `paused_at` NULL) runs. Workers check it in
-- the claim itself, so a pause holds from the next claim of every worker, whether or not
-- the notification that also goes out reached them. Enqueueing into a paused queue works.
CREATE TABLE queues (
    name       text PRIMARY KEY,
    paused_at  timestamptz,
    -- Who paused it (free text: the CLI writes user@host).
    paused_by  text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- `task_view` gains the two columns (a view's columns are only ever added, at the end).
CREATE OR REPLACE VIEW task_view AS
SELECT id,
       name,
       task_status_name(status) AS status,
       attempts,
       failures,
       rescues,
       created_at,
       run_after,
       started_at,
       finished_at,
       updated_at,
       CASE WHEN jsonb_typeof(errors) = 'array' THEN errors -> -1 ->> 'message' END AS last_error,
       errors,
       payload,
       unique_tag,
       parent_id,
       timeout_ms * interval '1 millisecond' AS timeout,
       CASE WHEN retry_intervals_ms IS NOT NULL THEN
           ARRAY(SELECT ms * interval '1 millisecond'
                 FROM unnest(retry_intervals_ms) WITH ORDINALITY AS r(ms, n) ORDER BY n)
       END AS retry_intervals,
       retry_always,
       max_retries,
       on_failed,
       max_rescues,
       lease_owner,
       lease_expires_at,
       cron_schedule_id,
       cron_tick_at,
       queue,
       priority
FROM tasks;

-- Listing failed and cancelled tasks newest first (`Client::list_tasks`, `anchor tasks
-- list --status failed`) reads this instead of walking the whole table backwards; rows
-- enter it only when they fail or are cancelled, so the hot path does not pay for it.
CREATE INDEX tasks_dead_idx ON tasks (id) WHERE status IN (3, 4);

ANALYZE tasks;
