//! Cron: durable schedules whose ticks enqueue exactly one occurrence across all workers.
//!
//! A schedule is a row in `cron_schedules` (task, key, expression, time zone, parameters,
//! next tick). Every worker runs a scheduler (`worker/scheduler.rs`) that, in one transaction,
//! locks the due schedules of the tasks it runs with `FOR UPDATE SKIP LOCKED`, inserts one
//! occurrence per schedule and advances the schedule's next tick. The database's clock decides
//! what is due and the row lock decides who fires it; a unique key on (schedule, tick) in
//! `tasks` is the second guard. See `docs/cron.md` for the behaviour users rely on.
//!
//! - `register.rs`: creating and updating schedules (worker start, `run_foo` on a cron task).
//! - `fire.rs`: the due query, the occurrence insert and the next-tick computation.
//!
//! Their statements are in `db/cron.rs`.

mod fire;
mod register;

use crate::client::Client;
use crate::db::{self, cron::reason};
use crate::error::{Error, ErrorKind, Result};
use crate::schedule::CronSchedule;

pub(crate) use fire::{disable_orphans, fire_due, next_due, BATCH};
pub(crate) use register::register_at_start;

pub use crate::ids::ScheduleId;

/// The key of the schedule workers register for a cron task whose parameters all have
/// defaults.
pub const DEFAULT_SCHEDULE_KEY: &str = "default";

impl Client {
    /// Every cron schedule, sorted by task name and key.
    pub async fn schedules(&self) -> Result<Vec<CronSchedule>> {
        let conn = self.conn().await?;
        db::cron::list(&conn, self.sql()).await
    }

    /// One cron schedule, or `None` when no schedule has that id.
    pub async fn get_schedule(&self, id: ScheduleId) -> Result<Option<CronSchedule>> {
        let conn = self.conn().await?;
        db::cron::get(&conn, self.sql(), id).await
    }

    /// Stops a schedule from firing until [`Client::resume_schedule`] (or `run_foo` with the
    /// same parameters) enables it again. Workers starting do not resume a paused schedule.
    /// Occurrences already enqueued are not touched.
    pub async fn pause_schedule(&self, id: ScheduleId) -> Result<()> {
        self.set_schedule_enabled(id, false).await
    }

    /// Enables a schedule again. Its next tick is the first one after now: ticks that passed
    /// while it was disabled do not fire.
    pub async fn resume_schedule(&self, id: ScheduleId) -> Result<()> {
        self.set_schedule_enabled(id, true).await
    }

    /// Allows or forbids overlapping occurrences. Overlap is allowed by default: every tick
    /// enqueues its occurrence even while earlier ones run. With `allow = false`, a tick that
    /// comes while the schedule's last occurrence is still pending (e.g. waiting for a retry)
    /// or running is skipped — not queued — and the schedule fires again at the first tick
    /// after that occurrence finished (Kubernetes' `concurrencyPolicy: Forbid`).
    ///
    /// ```no_run
    /// # async fn demo(client: anchor_runtime::Client) -> anchor_runtime::Result<()> {
    /// for schedule in client.schedules().await? {
    ///     if schedule.task_name == "DailyCleanup" {
    ///         client.set_schedule_overlap(schedule.id, false).await?;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn set_schedule_overlap(&self, id: ScheduleId, allow: bool) -> Result<()> {
        let conn = self.conn().await?;
        if !db::cron::set_overlap(&conn, self.sql(), id, allow).await? {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no cron schedule with id {id}"),
            ));
        }
        Ok(())
    }

    async fn set_schedule_enabled(&self, id: ScheduleId, enabled: bool) -> Result<()> {
        let sql = self.sql();
        let mut conn = self.conn().await?;
        let tx = db::begin(&mut conn, "cannot begin the schedule update").await?;
        let state = db::cron::lock_by_id(&tx, sql, id).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("no cron schedule with id {id}"),
            )
        })?;
        let next = if enabled && !state.enabled {
            let schedule =
                register::parse_schedule("", &state.expression, state.timezone.as_deref())?;
            Some(register::first_tick(
                &schedule,
                state.now,
                &state.expression,
            )?)
        } else {
            None
        };
        let reason = (!enabled).then_some(reason::PAUSED);
        db::cron::set_enabled(&tx, sql, id, enabled, reason, next).await?;
        db::notify::schedules_changed(&*tx, sql).await?;
        db::commit(tx, &format!("cannot commit the update of schedule {id}")).await
    }
}
