-- V2: durable cron schedules, and the key that lets each tick enqueue exactly one occurrence.
--
-- Like every migration, this file uses unqualified names; the runner sets `search_path` to the
-- runtime's schema for the migration transaction.

-- One row per schedule. A cron task has a 'default' schedule (registered by workers when all
-- its parameters have defaults) and any number registered from code (`run_foo(params)`), keyed
-- by a hash of the parameters or by the unique tag given.
CREATE TABLE cron_schedules (
    -- Descending negative ids: `run_foo` on a cron task returns the schedule's id where a
    -- TaskId is expected, and a negative id can never name a task (task ids are positive).
    id              bigint      GENERATED ALWAYS AS IDENTITY (START WITH -1 INCREMENT BY -1)
                                PRIMARY KEY,
    task_name       text        NOT NULL,
    schedule_key    text        NOT NULL,
    -- 5 or 6 fields, evaluated by anchor-core's matcher (the code `anchor cron` runs).
    expression      text        NOT NULL,
    -- IANA time zone name; NULL = UTC.
    timezone        text,
    -- The parameters every occurrence gets.
    payload         jsonb       NOT NULL,
    -- The next tick to fire. Due when the database's now() reaches it; a scheduler advances it
    -- in the same transaction that inserts the occurrence.
    next_fire_at    timestamptz NOT NULL,
    -- The tick the last occurrence was enqueued for, its task id, and when it was enqueued.
    last_tick_at    timestamptz,
    last_task_id    bigint,
    last_fired_at   timestamptz,
    enabled         boolean     NOT NULL DEFAULT true,
    -- false: a tick that comes while the last occurrence is still pending or running is
    -- skipped (Client::set_schedule_overlap).
    allow_overlap   boolean     NOT NULL DEFAULT true,
    -- Why a schedule is disabled: 'orphaned' (no running worker has its task registered),
    -- 'paused' (Client::pause_schedule), 'invalid' (its expression or time zone cannot be
    -- evaluated). NULL while enabled.
    disabled_reason text,
    -- A human-readable detail for the reason (the parse error, the worker that disabled it).
    disabled_detail text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (task_name, schedule_key)
);

-- The schedulers' due query and their "when is the next tick" query read only enabled rows.
CREATE INDEX cron_schedules_due_idx ON cron_schedules (next_fire_at) WHERE enabled;

-- An occurrence remembers its schedule and tick. The unique index is the second guard behind
-- the row lock on the schedule: even a scheduler acting on a stale view cannot insert a second
-- occurrence of one tick.
ALTER TABLE tasks
    ADD COLUMN cron_schedule_id bigint,
    ADD COLUMN cron_tick_at     timestamptz;

CREATE UNIQUE INDEX tasks_cron_tick_idx ON tasks (cron_schedule_id, cron_tick_at)
    WHERE cron_schedule_id IS NOT NULL;
