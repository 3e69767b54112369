-- V7: `task_view`, the tasks table for people who query it directly (psql, a BI tool, an
-- ad-hoc incident query): the status spelled out, durations as intervals, the last error
-- message as a column. Nothing in the runtime reads it; its columns are documented in
-- docs/operations.md and only ever added to.
CREATE VIEW task_view AS
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
       cron_tick_at
FROM tasks;
