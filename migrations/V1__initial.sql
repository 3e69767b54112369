-- V1: the tasks table and the indexes its hot paths use.
--
-- The migration runner sets `search_path` to the runtime's schema (default `anchor`) inside
-- the migration transaction, so names here are unqualified and the same file serves any
-- schema name.
--
-- status: 0 = pending, 1 = running, 2 = completed, 3 = failed, 4 = cancelled.
-- A smallint keeps the hot row narrow; `task_status_name(status)` spells it for people.

CREATE TABLE tasks (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name               text        NOT NULL,
    status             smallint    NOT NULL DEFAULT 0 CHECK (status BETWEEN 0 AND 4),
    -- Runs started (a run released at shutdown is not counted).
    attempts           integer     NOT NULL DEFAULT 0,
    -- Failed runs that count against max_retries (errors, panics, timeouts, lost leases).
    failures           integer     NOT NULL DEFAULT 0,
    run_after          timestamptz NOT NULL DEFAULT now(),
    timeout_ms         bigint      NOT NULL CHECK (timeout_ms > 0),
    -- The retry policy this task runs under; NULL intervals = no policy, never retried.
    retry_intervals_ms bigint[],
    retry_always       boolean     NOT NULL DEFAULT false,
    max_retries        integer     CHECK (max_retries >= 0),
    -- The task enqueued when this one fails permanently.
    on_failed          text,
    unique_tag         text,
    -- For an onFailed handler: the task whose failure enqueued it. No foreign key, so that
    -- retention can prune parents and children independently.
    parent_id          bigint,
    lease_owner        text,
    lease_token        bigint,
    lease_expires_at   timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- Error history: [{"attempt": n, "at": timestamptz, "message": text}, ...].
    errors             jsonb       NOT NULL DEFAULT '[]'::jsonb,
    payload            jsonb       NOT NULL
);

-- The claim query reads only claimable rows, in order: a narrow partial index that finished
-- rows never enter.
CREATE INDEX tasks_claim_idx ON tasks (run_after, id) WHERE status = 0;

-- The rescuer looks for running tasks whose lease has expired.
CREATE INDEX tasks_lease_idx ON tasks (lease_expires_at) WHERE status = 1;

-- At most one task per tag among tasks that are not cancelled.
CREATE UNIQUE INDEX tasks_unique_tag_idx ON tasks (unique_tag)
    WHERE unique_tag IS NOT NULL AND status <> 4;

-- Failure handlers are looked up by the task that failed.
CREATE INDEX tasks_parent_idx ON tasks (parent_id) WHERE parent_id IS NOT NULL;

CREATE FUNCTION task_status_name(status smallint) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (ARRAY['pending', 'running', 'completed', 'failed', 'cancelled'])[status + 1] $$;

-- Give the planner statistics from the start. A table that was never analysed is costed
-- as if it were a few pages at most, which can pick quadratic join orders for the batched
-- completion and renewal statements on a table that has just received a bulk enqueue;
-- once analysed (even empty), estimates follow the table's real size.
ANALYZE tasks;
