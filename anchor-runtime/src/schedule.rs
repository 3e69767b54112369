//! [`CronSchedule`]: one durable schedule as [`Client::schedules`](crate::Client::schedules)
//! reads it. A module of its own, below both the database boundary that reads the rows into
//! it and the cron module whose client methods return it.

use chrono::{DateTime, Utc};

use crate::ids::{ScheduleId, TaskId};

/// One durable schedule, as [`Client::schedules`](crate::Client::schedules) and
/// [`Client::get_schedule`](crate::Client::get_schedule) read it.
#[derive(Debug, Clone, PartialEq)]
pub struct CronSchedule {
    /// The schedule's id (negative; see [`ScheduleId`]).
    pub id: ScheduleId,
    /// The task each tick enqueues.
    pub task_name: String,
    /// [`DEFAULT_SCHEDULE_KEY`](crate::DEFAULT_SCHEDULE_KEY), the unique tag given to
    /// `run_foo`, or `params-<md5>` of the parameters given to `run_foo`.
    pub key: String,
    /// The cron expression (5 fields, or 6 with seconds first).
    pub expression: String,
    /// The IANA time zone the expression runs on; `None` for UTC.
    pub timezone: Option<String>,
    /// The parameters every occurrence gets.
    pub payload: serde_json::Value,
    /// The next tick to fire.
    pub next_fire_at: DateTime<Utc>,
    /// The tick the last occurrence was enqueued for.
    pub last_tick_at: Option<DateTime<Utc>>,
    /// The last occurrence's task id.
    pub last_task_id: Option<TaskId>,
    /// When the last occurrence was enqueued (database time).
    pub last_fired_at: Option<DateTime<Utc>>,
    /// Whether ticks fire.
    pub enabled: bool,
    /// Why the schedule is disabled: `orphaned` (no running worker runs its task), `paused`
    /// ([`Client::pause_schedule`](crate::Client::pause_schedule)) or `invalid` (its
    /// expression cannot be evaluated).
    pub disabled_reason: Option<String>,
    /// Detail for the reason, e.g. the parse error or the worker that disabled it.
    pub disabled_detail: Option<String>,
    /// When the schedule was registered.
    pub created_at: DateTime<Utc>,
    /// When the schedule last changed (including each fire).
    pub updated_at: DateTime<Utc>,
    /// Whether a tick fires while the last occurrence is still pending or running (default
    /// `true`); see
    /// [`Client::set_schedule_overlap`](crate::Client::set_schedule_overlap).
    pub allow_overlap: bool,
}
