-- V6: task definitions known to the database; a failed task frees its unique tag.
--
-- Every worker upserts the definitions of its registry (the YAML defaults the generated
-- code carries) when it starts. A worker that fails a task whose onFailed handler it does
-- not know itself (another service's tasks.yaml) reads the handler's settings here, so the
-- handler always runs with its own retry policy, timeout and default parameters.
CREATE TABLE task_definitions (
    name               text PRIMARY KEY,
    timeout_ms         bigint      NOT NULL,
    retry_intervals_ms bigint[],
    retry_always       boolean     NOT NULL DEFAULT false,
    max_retries        integer,
    max_rescues        integer,
    on_failed          text,
    default_params     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    updated_by         text,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- A unique tag names at most one task among those that are pending, running or
-- completed. A failed task (3) frees its tag, as a cancelled one (4) always did, so the
-- same work can be enqueued again after it failed for good.
DROP INDEX tasks_unique_tag_idx;
CREATE UNIQUE INDEX tasks_unique_tag_idx ON tasks (unique_tag)
    WHERE unique_tag IS NOT NULL AND status NOT IN (3, 4);
