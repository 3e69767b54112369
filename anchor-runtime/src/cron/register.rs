//! Creating and updating schedules: the `default` schedules a worker registers when it
//! starts, and the schedules `run_foo(params)` registers on a cron task.
//!
//! Every change is made under the schedule row's lock (`SELECT … FOR UPDATE`, or an insert
//! that loses a race and then locks the winner's row) and sends a notification on the
//! schedule channel in the same transaction, so sleeping schedulers re-plan on commit.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::{GenericClient, Transaction};

use anchor_core::cron::Schedule;

use super::{ScheduleId, DEFAULT_SCHEDULE_KEY};
use crate::client::Client;
use crate::db::cron::{reason, Wanted};
use crate::db::{self, Sql};
use crate::definition::TaskDefinition;
use crate::error::{Error, ErrorKind, Result};
use crate::overrides::{OverrideKind, TaskOverride};
use crate::registry::Registry;

/// Who asks for a schedule: a worker starting (must not undo a pause from code) or code
/// calling `run_foo` (an explicit request, which also resumes a paused schedule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requester {
    WorkerStart,
    Code,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upserted {
    Created,
    Updated,
    Unchanged,
}

/// Parses a stored or defined expression with anchor-core's matcher (the code `anchor cron`
/// runs).
pub(crate) fn parse_schedule(
    task: &str,
    expression: &str,
    timezone: Option<&str>,
) -> Result<Schedule> {
    Schedule::new(expression, timezone).map_err(|err| {
        let task = if task.is_empty() {
            String::new()
        } else {
            format!("task {task}: ")
        };
        Error::with_source(
            ErrorKind::Cron,
            format!(
                "{task}cron expression `{expression}` (time zone {}) cannot be scheduled; check it \
                 with `anchor cron \"{expression}\"`",
                timezone.unwrap_or("UTC")
            ),
            err,
        )
    })
}

/// The first tick strictly after `now`.
pub(crate) fn first_tick(
    schedule: &Schedule,
    now: DateTime<Utc>,
    expression: &str,
) -> Result<DateTime<Utc>> {
    schedule.next_after(now).ok_or_else(|| {
        Error::new(
            ErrorKind::Cron,
            format!("cron expression `{expression}` has no fire time after {now}"),
        )
    })
}

/// Creates the schedule or brings it up to date, under its row lock. `conn` must be inside a
/// transaction.
async fn upsert<C: GenericClient>(
    conn: &C,
    sql: &Sql,
    wanted: &Wanted<'_>,
    requester: Requester,
) -> Result<(ScheduleId, Upserted)> {
    let schedule = parse_schedule(wanted.task_name, wanted.expression, wanted.timezone)?;
    let now = db::cron::now(conn).await?;
    let next = first_tick(&schedule, now, wanted.expression)?;
    // Two rounds suffice: an insert that loses to a concurrent one finds the winner's row
    // committed and locks it in the next round.
    for _ in 0..3 {
        if let Some(existing) = db::cron::lock_by_key(conn, sql, wanted).await? {
            let retimed = existing.expression != wanted.expression
                || existing.timezone.as_deref() != wanted.timezone;
            let enable = !existing.enabled
                && match existing.disabled_reason.as_deref() {
                    Some(reason::ORPHANED) | Some(reason::INVALID) => true,
                    _ => requester == Requester::Code,
                };
            if !retimed && existing.same_payload && !enable {
                return Ok((existing.id, Upserted::Unchanged));
            }
            // A new expression starts from now. So does a schedule resumed after a pause or
            // an invalid expression; an orphaned one keeps its next tick, so the ticks missed
            // while no worker ran it fire once, like after any outage.
            let restart = retimed
                || (enable && existing.disabled_reason.as_deref() != Some(reason::ORPHANED));
            db::cron::update(
                conn,
                sql,
                existing.id,
                wanted,
                restart.then_some(next),
                enable,
            )
            .await?;
            db::notify::schedules_changed(conn, sql).await?;
            return Ok((existing.id, Upserted::Updated));
        }
        if let Some(id) = db::cron::insert(conn, sql, wanted, next).await? {
            db::notify::schedules_changed(conn, sql).await?;
            return Ok((id, Upserted::Created));
        }
    }
    Err(Error::new(
        ErrorKind::Database,
        format!(
            "cannot register the cron schedule {}/{}: the row kept changing under concurrent \
             registrations",
            wanted.task_name, wanted.key
        ),
    ))
}

/// Registers the schedules of the cron tasks a starting worker runs (`names`):
/// - every schedule of such a task follows the task's current expression and time zone
///   (an edited `cronExpression` takes effect; its next tick is recomputed from now);
/// - a task whose parameters all have defaults gets its `default` schedule, created or
///   updated idempotently (unchanged definitions leave the row untouched, so its next tick —
///   and the catch-up of ticks missed while no worker ran — is kept);
/// - schedules of these tasks that were disabled as orphaned (or invalid) are enabled again.
///
/// A definition whose expression or default parameters are unusable is skipped with an error
/// log (validation refuses them, so only a hand-written definition can get here); the other
/// tasks are still scheduled. Database errors are returned; the scheduler retries.
pub(crate) async fn register_at_start(
    client: &Client,
    registry: &Registry,
    names: &[String],
    worker_id: &str,
) -> Result<()> {
    let sql = client.sql();
    let mut conn = client.conn().await?;
    let mut registered: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let Some(def) = registry.definition(name) else {
            continue;
        };
        let Some(cron) = def.cron else {
            continue;
        };
        let checked = parse_schedule(def.name, cron.expression, cron.timezone).and_then(|s| {
            check_default_params(def.name, cron.default_params)?;
            Ok(s)
        });
        let schedule = match checked {
            Ok(schedule) => schedule,
            Err(err) => {
                tracing::error!(
                    worker = %worker_id,
                    task = def.name,
                    error = %err,
                    "invalid cron definition; not scheduling it (regenerate from tasks.yaml)"
                );
                continue;
            }
        };
        // One transaction per task keeps lock sets small when many workers start at once.
        let tx = db::begin(&mut conn, "cannot begin the schedule registration").await?;
        let now = db::cron::now(&*tx).await?;
        let next = match first_tick(&schedule, now, cron.expression) {
            Ok(next) => next,
            Err(err) => {
                tracing::error!(worker = %worker_id, task = def.name, error = %err, "not scheduling it");
                continue;
            }
        };
        let retimed =
            db::cron::retime_task(&*tx, sql, def.name, cron.expression, cron.timezone, next)
                .await?;
        for key in &retimed {
            tracing::info!(
                worker = %worker_id,
                task = def.name,
                key = %key,
                expression = cron.expression,
                timezone = cron.timezone.unwrap_or("UTC"),
                next_fire_at = %next,
                "cron schedule follows the task's new expression"
            );
        }
        if !retimed.is_empty() {
            db::notify::schedules_changed(&*tx, sql).await?;
        }
        if let Some(params) = cron.default_params {
            let wanted = Wanted {
                task_name: def.name,
                key: DEFAULT_SCHEDULE_KEY,
                expression: cron.expression,
                timezone: cron.timezone,
                payload: params,
            };
            let (id, what) = upsert(&*tx, sql, &wanted, Requester::WorkerStart).await?;
            if what != Upserted::Unchanged {
                tracing::info!(
                    worker = %worker_id,
                    task = def.name,
                    schedule.id = %id,
                    change = ?what,
                    expression = cron.expression,
                    "default cron schedule registered"
                );
            }
        }
        db::commit(tx, "cannot commit the schedule registration").await?;
        registered.push(name.clone());
    }
    let enabled = db::cron::reenable_orphans(&conn, sql, &registered).await?;
    for schedule in &enabled {
        tracing::info!(
            worker = %worker_id,
            schedule.id = %schedule.id,
            task = %schedule.task,
            key = %schedule.key,
            "cron schedule enabled again: this worker runs its task"
        );
    }
    if !enabled.is_empty() {
        db::notify::schedules_changed(&**conn, sql).await?;
    }
    Ok(())
}

/// Checks that a definition's default parameters are a JSON object.
fn check_default_params(task: &str, params: Option<&str>) -> Result<()> {
    let Some(params) = params else {
        return Ok(());
    };
    match serde_json::from_str::<serde_json::Value>(params) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(Error::new(
            ErrorKind::Config,
            format!("task {task}: the cron default parameters are not a JSON object: {params}"),
        )),
        Err(err) => Err(Error::with_source(
            ErrorKind::Config,
            format!("task {task}: the cron default parameters are not valid JSON"),
            err,
        )),
    }
}

impl Client {
    /// Registers (or updates) a schedule of the cron task `def` with `params`, and returns
    /// its id; each tick of the schedule then enqueues one occurrence with these parameters.
    ///
    /// Equal parameters name the same schedule, so calling this again (at every service
    /// start, say) changes nothing; parameters equal to the cron defaults name the default
    /// schedule workers register at start. A [`TaskOverride::unique_tag`] names the schedule
    /// instead, so calling again with the same tag and new parameters updates it. Other
    /// overrides are refused: occurrences take their settings from tasks.yaml. A task
    /// without a cron schedule is an error of kind [`ErrorKind::Config`]. See `docs/cron.md`.
    pub async fn schedule<P: Serialize + ?Sized>(
        &self,
        def: &TaskDefinition,
        params: &P,
        overrides: &[TaskOverride],
    ) -> Result<ScheduleId> {
        let mut conn = self.conn().await?;
        let tx = db::begin(&mut conn, "cannot begin the schedule registration").await?;
        let id = self.schedule_with_tx(&tx, def, params, overrides).await?;
        db::commit(tx, "cannot commit the schedule registration").await?;
        Ok(id)
    }

    /// [`Client::schedule`] with the definition taken from the parameters' type (see
    /// [`TaskParameters`](crate::TaskParameters)).
    pub async fn schedule_params<P: crate::TaskParameters>(
        &self,
        params: &P,
        overrides: &[TaskOverride],
    ) -> Result<ScheduleId> {
        self.schedule(P::DEFINITION, params, overrides).await
    }

    /// [`Client::schedule_with_tx`] with the definition taken from the parameters' type.
    pub async fn schedule_params_with_tx<P: crate::TaskParameters>(
        &self,
        tx: &Transaction<'_>,
        params: &P,
        overrides: &[TaskOverride],
    ) -> Result<ScheduleId> {
        self.schedule_with_tx(tx, P::DEFINITION, params, overrides)
            .await
    }

    /// [`Client::schedule`] inside the caller's transaction: the schedule is registered or
    /// updated when `tx` commits, and not at all if it rolls back.
    pub async fn schedule_with_tx<P: Serialize + ?Sized>(
        &self,
        tx: &Transaction<'_>,
        def: &TaskDefinition,
        params: &P,
        overrides: &[TaskOverride],
    ) -> Result<ScheduleId> {
        self.check_config()?;
        let Some(cron) = def.cron else {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "task {} has no cron schedule; give it a `cronjob` in tasks.yaml, or \
                     enqueue it with `enqueue`",
                    def.name
                ),
            ));
        };
        let tag = schedule_tag(def.name, overrides)?;
        let payload = serde_json::to_string(params).map_err(|err| {
            Error::with_source(
                ErrorKind::Payload,
                format!(
                    "cannot serialise the parameters of task {} to JSON",
                    def.name
                ),
                err,
            )
        })?;
        register_params(
            tx,
            self.sql(),
            def,
            cron.expression,
            cron.timezone,
            &payload,
            tag,
            cron.default_params,
        )
        .await
    }
}

/// The unique tag among `overrides`, which names the schedule. Other overrides have no
/// meaning for a schedule (its occurrences take the task's tasks.yaml settings, and its
/// ticks decide when they run), so they are refused rather than silently dropped.
fn schedule_tag<'a>(task: &str, overrides: &'a [TaskOverride]) -> Result<Option<&'a str>> {
    let mut tag = None;
    for TaskOverride(kind) in overrides {
        match kind {
            OverrideKind::UniqueTag(t) => {
                if t.trim().is_empty() {
                    return Err(Error::new(
                        ErrorKind::InvalidOverride,
                        format!("unique_tag for cron task {task} is empty; give a non-empty tag"),
                    ));
                }
                tag = Some(t.as_str());
            }
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOverride,
                    format!(
                        "{other:?} cannot apply to cron task {task}: run_… on a cron task \
                         registers a schedule, whose occurrences take the retry policy and \
                         timeout from tasks.yaml; only TaskOverride::unique_tag (the schedule's \
                         key) is accepted"
                    ),
                ))
            }
        }
    }
    Ok(tag)
}

/// Registers the schedule for one set of parameters inside `tx`.
#[allow(clippy::too_many_arguments)]
async fn register_params(
    tx: &Transaction<'_>,
    sql: &Sql,
    def: &TaskDefinition,
    expression: &str,
    timezone: Option<&str>,
    payload: &str,
    tag: Option<&str>,
    default_params: Option<&str>,
) -> Result<ScheduleId> {
    let (hash, is_default) =
        db::cron::key_for_params(tx, def.name, payload, default_params).await?;
    // The same parameters always name the same schedule, so repeated calls (e.g. at every
    // service start) are idempotent; parameters equal to the defaults are the default
    // schedule, which workers register anyway.
    let key = match tag {
        Some(tag) => tag.to_string(),
        None if is_default => DEFAULT_SCHEDULE_KEY.to_string(),
        None => format!("params-{hash}"),
    };
    let wanted = Wanted {
        task_name: def.name,
        key: &key,
        expression,
        timezone,
        payload,
    };
    let (id, what) = upsert(tx, sql, &wanted, Requester::Code).await?;
    tracing::debug!(task = def.name, schedule.id = %id, key = %key, change = ?what, "cron schedule registered from code");
    Ok(id)
}
