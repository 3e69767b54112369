//! Enqueue: a task's YAML defaults plus per-call overrides become one `pending` row.
//!
//! Overrides are validated into a [`NewTask`] before anything touches the database. Unique
//! tags use `INSERT … ON CONFLICT DO NOTHING` and, when the insert wrote nothing, read the
//! existing row's id — repeated, because the conflicting row can vanish (be cancelled)
//! between the two statements.

use std::time::Duration;

use serde::Serialize;

use crate::client::Client;
use crate::db::driver::{EnqueueTx, Run};
use crate::db::tasks::Insert;
use crate::db::{self, Sql};
use crate::definition::{TaskDefinition, TaskParameters};
use crate::dispatch::ReservedSlot;
use crate::error::{Error, ErrorKind, Result};
use crate::overrides::{DueOverride, OverrideKind, TaskOverride};
use crate::settings::{Due, NewTask, TaskSettings};
use crate::task::TaskId;

/// The longest unique tag accepted (the tag is a btree index key).
const MAX_TAG_BYTES: usize = 1024;

/// How often a tagged enqueue retries when the conflicting row disappears under it.
const TAG_ATTEMPTS: usize = 20;

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidOverride, message)
}

/// A duration in milliseconds, refused past [`anchor_core::MAX_DURATION`] (every deadline
/// computed from it must fit PostgreSQL's and chrono's time ranges).
fn millis(d: Duration, what: &str, task: &str) -> Result<i64> {
    if d > anchor_core::MAX_DURATION {
        return Err(invalid(format!(
            "{what} for task {task} is {} days, longer than the {}-day limit; give a shorter one",
            d.as_secs() / 86_400,
            anchor_core::MAX_DURATION.as_secs() / 86_400
        )));
    }
    i64::try_from(d.as_millis())
        .map_err(|_| invalid(format!("{what} for task {task} is too long ({d:?})")))
}

/// Merges a definition's defaults with overrides; every check happens here, before any write.
pub(crate) fn resolve(def: &TaskDefinition, overrides: &[TaskOverride]) -> Result<NewTask> {
    let name = def.name;
    if name.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            "a task definition has an empty name",
        ));
    }
    if def.timeout_ms == 0 {
        return Err(Error::new(
            ErrorKind::Config,
            format!("task {name} has a zero timeout in its definition; regenerate from tasks.yaml"),
        ));
    }
    if let Some(problem) = anchor_core::queue_name_problem(def.queue) {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "task {name} names queue `{}` in its definition, which is not a queue name: \
                 {problem}; {}",
                def.queue.escape_debug(),
                anchor_core::QUEUE_NAME_RULE
            ),
        ));
    }
    if !(0..=crate::LOWEST_PRIORITY).contains(&def.priority) {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "task {name} has priority {} in its definition; give 0 (runs first) to {} \
                 (runs last)",
                def.priority,
                crate::LOWEST_PRIORITY
            ),
        ));
    }
    let limit_ms = anchor_core::MAX_DURATION.as_millis();
    let too_long = std::iter::once(def.timeout_ms)
        .chain(
            def.retry
                .iter()
                .flat_map(|r| r.intervals_ms.iter().copied()),
        )
        .any(|ms| u128::from(ms) > limit_ms);
    if too_long {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "task {name} has a timeout or retry interval longer than the {}-day limit in \
                 its definition; regenerate from a tasks.yaml that `anchor validate` accepts",
                anchor_core::MAX_DURATION.as_secs() / 86_400
            ),
        ));
    }
    if def
        .retry
        .and_then(|r| r.max_retries)
        .is_some_and(|n| i32::try_from(n).is_err())
    {
        return Err(Error::new(
            ErrorKind::Config,
            format!("task {name}: max_retries in its definition is too large"),
        ));
    }
    let mut task = NewTask {
        name: name.to_string(),
        due: Due::Now,
        settings: TaskSettings::of_definition(def),
        unique_tag: None,
        parent_id: None,
    };
    let mut max_retries_override = None;
    let mut policy_max_retries = None;
    for TaskOverride(kind) in overrides {
        match kind {
            OverrideKind::RetryPolicy(policy) => {
                if policy.intervals.is_empty() {
                    return Err(invalid(format!(
                        "retry_policy for task {name} has no intervals; give at least one \
                         (RetryPolicy::parse(\"1m\", …))"
                    )));
                }
                for interval in &policy.intervals {
                    millis(*interval, "a retry interval", name)?;
                }
                let kept = task.settings.retry.as_ref().and_then(|p| p.max_retries);
                task.settings.retry = Some(anchor_core::RetryPolicy {
                    intervals: policy.intervals.clone(),
                    always_retry_on_failure: policy.always_retry_on_failure,
                    max_retries: kept,
                });
                if let Some(n) = policy.max_retries {
                    if i32::try_from(n).is_err() {
                        return Err(invalid(format!(
                            "retry_policy max_retries {n} for task {name} is too large \
                             (at most {})",
                            i32::MAX
                        )));
                    }
                    policy_max_retries = Some(n);
                }
            }
            OverrideKind::MaxRetries(n) => {
                if i32::try_from(*n).is_err() {
                    return Err(invalid(format!(
                        "max_retries({n}) for task {name} is too large (at most {})",
                        i32::MAX
                    )));
                }
                max_retries_override = Some(*n);
            }
            OverrideKind::Timeout(d) => {
                if d.is_zero() {
                    return Err(invalid(format!(
                        "timeout for task {name} must be longer than zero"
                    )));
                }
                millis(*d, "timeout", name)?;
                // Sub-millisecond timeouts round up so they never become zero.
                task.settings.timeout = (*d).max(Duration::from_millis(1));
            }
            OverrideKind::UniqueTag(tag) => {
                if tag.trim().is_empty() {
                    return Err(invalid(format!(
                        "unique_tag for task {name} is empty; give a non-empty tag"
                    )));
                }
                if tag.len() > MAX_TAG_BYTES {
                    return Err(invalid(format!(
                        "unique_tag for task {name} is {} bytes; at most {MAX_TAG_BYTES} are allowed",
                        tag.len()
                    )));
                }
                task.unique_tag = Some(tag.clone());
            }
            OverrideKind::Due(DueOverride::After(d)) => {
                task.due = Due::AfterMs(millis(*d, "run_after", name)?);
            }
            OverrideKind::Due(DueOverride::At(at)) => task.due = Due::At(*at),
            OverrideKind::Queue(queue) => {
                if let Some(problem) = anchor_core::queue_name_problem(queue) {
                    return Err(invalid(format!(
                        "queue `{}` for task {name} is not a queue name: {problem}; {}",
                        queue.escape_debug(),
                        anchor_core::QUEUE_NAME_RULE
                    )));
                }
                task.settings.queue = queue.clone();
            }
            OverrideKind::Priority(priority) => {
                if !(0..=crate::LOWEST_PRIORITY).contains(priority) {
                    return Err(invalid(format!(
                        "priority {priority} for task {name} is out of range; give 0 (runs \
                         first) to {} (runs last)",
                        crate::LOWEST_PRIORITY
                    )));
                }
                task.settings.priority = *priority;
            }
        }
    }
    if let (Some(n), Some(policy)) = (policy_max_retries, task.settings.retry.as_mut()) {
        policy.max_retries = Some(n);
    }
    if let Some(n) = max_retries_override {
        let Some(policy) = task.settings.retry.as_mut() else {
            return Err(invalid(format!(
                "max_retries({n}) for task {name}, which has no retry policy; add \
                 TaskOverride::retry_policy(...) or a retryPolicy in tasks.yaml"
            )));
        };
        policy.max_retries = Some(n);
    }
    Ok(task)
}

/// The settings and payloads of a bulk enqueue (`None`: nothing to enqueue).
fn many<P: Serialize>(
    def: &TaskDefinition,
    params: &[P],
    overrides: &[TaskOverride],
) -> Result<Option<(NewTask, Vec<String>)>> {
    let task = resolve(def, overrides)?;
    if task.unique_tag.is_some() {
        return Err(invalid(format!(
            "unique_tag cannot be used with enqueue_many (task {}): one tag names one task",
            def.name
        )));
    }
    if params.is_empty() {
        return Ok(None);
    }
    let payloads = params
        .iter()
        .map(|p| payload_text(def.name, p))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some((task, payloads)))
}

/// Serialises parameters to JSON text.
fn payload_text<P: Serialize + ?Sized>(name: &str, params: &P) -> Result<String> {
    serde_json::to_string(params).map_err(|err| {
        Error::with_source(
            ErrorKind::Payload,
            format!("cannot serialise the parameters of task {name} to JSON"),
            err,
        )
    })
}

/// What [`insert_one`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// A new row with this id.
    New(TaskId),
    /// Nothing: the unique tag is held by this task.
    Existing(TaskId),
}

impl Inserted {
    pub(crate) fn id(self) -> TaskId {
        match self {
            Inserted::New(id) | Inserted::Existing(id) => id,
        }
    }
}

/// Inserts one task `how` (or, for a unique tag that exists, finds the existing task)
/// through `conn`: one of anchor's pooled connections, or a caller's transaction.
pub(crate) async fn insert_one(
    conn: &mut impl Run,
    sql: &Sql,
    how: Insert<'_>,
    task: &NewTask,
    payload: &str,
) -> Result<Inserted> {
    for _ in 0..TAG_ATTEMPTS {
        if let Some(id) = db::tasks::insert(conn, sql, how, task, payload).await? {
            crate::observe::enqueued(&task.name, &task.settings.queue, 1);
            return Ok(Inserted::New(id));
        }
        // Nothing inserted: the tag is taken. Read the holder's id; if it has just been
        // cancelled, the next insert succeeds.
        let Some(tag) = &task.unique_tag else {
            return Err(Error::new(
                ErrorKind::Database,
                format!("enqueue of task {} inserted no row", task.name),
            ));
        };
        if let Some(id) = db::tasks::tag_holder(conn, sql, tag).await? {
            return Ok(Inserted::Existing(id));
        }
    }
    Err(Error::new(
        ErrorKind::Database,
        format!(
            "enqueue of task {} with unique tag {:?} kept conflicting with a row that vanished",
            task.name, task.unique_tag
        ),
    ))
}

impl Client {
    /// Enqueues one task with its definition's defaults and `overrides`; returns its id.
    ///
    /// With a [`TaskOverride::unique_tag`] that a task (not cancelled) already holds, nothing
    /// is written and that task's id is returned — also when enqueues race.
    ///
    /// A due task that an idle [`Worker`](crate::Worker) started on this client runs is
    /// inserted already leased to that worker and starts there when this returns (local
    /// dispatch, see [`WorkerConfig::local_dispatch`](crate::WorkerConfig)); otherwise it is
    /// inserted `pending` and the workers are notified.
    ///
    /// On a cron task this enqueues one run now, outside its schedule;
    /// [`Client::schedule`] registers or updates a schedule.
    pub async fn enqueue<P: Serialize + ?Sized>(
        &self,
        def: &TaskDefinition,
        params: &P,
        overrides: &[TaskOverride],
    ) -> Result<TaskId> {
        let task = resolve(def, overrides)?;
        let payload = payload_text(def.name, params)?;
        let due = task.due_now();
        // A due task that an idle worker of this process can start goes to it directly.
        if due {
            if let Some(slot) = self
                .inner
                .local_workers
                .reserve(&task.settings.queue, def.name)
            {
                // On a task of its own: the row is inserted already leased, so once the
                // insert is sent it must be seen through to the start of the run even if
                // the caller stops waiting (a request timeout, a `select!`); otherwise the
                // row would sit `running` under a lease no one renews.
                let client = self.clone();
                return tokio::spawn(
                    async move { client.enqueue_local(slot, task, payload).await },
                )
                .await
                .map_err(|err| {
                    Error::with_source(
                        ErrorKind::Database,
                        format!("the enqueue of task {} stopped", def.name),
                        err,
                    )
                })?;
            }
        }
        let conn = self.conn().await?;
        let sql = self.sql();
        // A due task wakes the workers. When no notification went out just now, it is
        // queued by the insert itself (one round trip, delivered on commit); otherwise the
        // debounced notifier covers it, so bursts of enqueues send few notifications.
        let inline = due && self.inner.notifier.try_inline();
        let how = if inline {
            Insert::PendingNotify
        } else {
            Insert::Pending
        };
        let mut pooled = self.pooled(&conn);
        let id = insert_one(&mut pooled, sql, how, &task, &payload)
            .await?
            .id();
        if due {
            self.inner.local_workers.wake();
            if !inline {
                self.inner.notifier.poke();
            }
        }
        tracing::debug!(task.id = %id, task.name = def.name, "task enqueued");
        Ok(id)
    }

    /// Inserts `task` already leased to the worker that reserved `slot` and starts it there
    /// (see `worker/local.rs`). The slot is freed if the insert fails or finds the unique
    /// tag taken.
    async fn enqueue_local(
        &self,
        slot: Box<dyn ReservedSlot>,
        task: NewTask,
        payload: String,
    ) -> Result<TaskId> {
        let conn = self.conn().await?;
        let sql = self.sql();
        let token: i64 = rand::random();
        let how = Insert::Running {
            owner: slot.worker_id(),
            token,
            lease_ms: slot.lease_ms(),
        };
        let sent = std::time::Instant::now();
        let mut pooled = self.pooled(&conn);
        // Nothing inserted: the queue is paused, or the unique tag is taken. The ordinary
        // insert (pending, announced) sorts out which, and the slot is freed.
        let Some(id) = db::tasks::insert(&mut pooled, sql, how, &task, &payload).await? else {
            drop(slot);
            let inserted =
                insert_one(&mut pooled, sql, Insert::PendingNotify, &task, &payload).await?;
            // A new pending row (the queue is paused): it was announced. A taken tag: nothing
            // new, and nothing to wake the workers for (a wake-up would also keep this
            // worker from counting as idle for the next local dispatch).
            if let Inserted::New(_) = inserted {
                self.inner.local_workers.wake();
            }
            return Ok(inserted.id());
        };
        drop(conn);
        crate::observe::enqueued(&task.name, &task.settings.queue, 1);
        tracing::debug!(task.id = %id, task.name = %task.name, "task enqueued and started locally");
        slot.start(task, id, payload, token, sent).await;
        Ok(id)
    }

    /// Enqueues one task inside the caller's transaction: workers see it only after the
    /// transaction commits, and it vanishes if it rolls back. The wake-up notification is
    /// sent in the same transaction, so Postgres delivers it on commit. `tx` is a
    /// tokio-postgres or deadpool transaction (`&tx`), or with the `sqlx` feature an sqlx
    /// transaction or connection (`&mut tx`); see [`EnqueueTx`].
    ///
    /// On a cron task this enqueues one run now, outside its schedule;
    /// [`Client::schedule_with_tx`] registers or updates a schedule.
    pub async fn enqueue_with_tx<P: Serialize + ?Sized>(
        &self,
        mut tx: impl EnqueueTx,
        def: &TaskDefinition,
        params: &P,
        overrides: &[TaskOverride],
    ) -> Result<TaskId> {
        self.check_config()?;
        let task = resolve(def, overrides)?;
        let payload = payload_text(def.name, params)?;
        let sql = self.sql();
        // The notification rides on the insert; Postgres delivers it on commit (once per
        // transaction however many tasks it enqueues).
        let how = if task.due_now() {
            Insert::PendingNotify
        } else {
            Insert::Pending
        };
        insert_one(&mut tx, sql, how, &task, &payload)
            .await
            .map(Inserted::id)
    }

    /// [`Client::enqueue`] with the definition taken from the parameters' type (see
    /// [`TaskParameters`](crate::TaskParameters)).
    pub async fn enqueue_params<P: TaskParameters>(
        &self,
        params: &P,
        overrides: &[TaskOverride],
    ) -> Result<TaskId> {
        self.enqueue(P::DEFINITION, params, overrides).await
    }

    /// [`Client::enqueue_with_tx`] with the definition taken from the parameters' type.
    pub async fn enqueue_params_with_tx<P: TaskParameters>(
        &self,
        tx: impl EnqueueTx,
        params: &P,
        overrides: &[TaskOverride],
    ) -> Result<TaskId> {
        self.enqueue_with_tx(tx, P::DEFINITION, params, overrides)
            .await
    }

    /// [`Client::enqueue_many`] with the definition taken from the parameters' type.
    pub async fn enqueue_params_many<P: TaskParameters>(
        &self,
        params: &[P],
        overrides: &[TaskOverride],
    ) -> Result<Vec<TaskId>> {
        self.enqueue_many(P::DEFINITION, params, overrides).await
    }

    /// [`Client::enqueue_many_with_tx`] with the definition taken from the parameters' type.
    pub async fn enqueue_params_many_with_tx<P: TaskParameters>(
        &self,
        tx: impl EnqueueTx,
        params: &[P],
        overrides: &[TaskOverride],
    ) -> Result<Vec<TaskId>> {
        self.enqueue_many_with_tx(tx, P::DEFINITION, params, overrides)
            .await
    }

    /// Enqueues many tasks of one kind with one statement; returns their ids in the order of
    /// `params`. A [`TaskOverride::unique_tag`] is refused here (one tag cannot name many
    /// tasks).
    pub async fn enqueue_many<P: Serialize>(
        &self,
        def: &TaskDefinition,
        params: &[P],
        overrides: &[TaskOverride],
    ) -> Result<Vec<TaskId>> {
        let Some((task, payloads)) = many(def, params, overrides)? else {
            return Ok(Vec::new());
        };
        let conn = self.conn().await?;
        let ids =
            db::tasks::insert_many(&mut self.pooled(&conn), self.sql(), &task, &payloads).await?;
        crate::observe::enqueued(&task.name, &task.settings.queue, ids.len());
        if task.due_now() {
            self.inner.local_workers.wake();
            self.inner.notifier.poke();
        }
        Ok(ids)
    }

    /// [`Client::enqueue_many`] inside the caller's transaction (see
    /// [`Client::enqueue_with_tx`]). The workers are notified when it commits.
    pub async fn enqueue_many_with_tx<P: Serialize>(
        &self,
        mut tx: impl EnqueueTx,
        def: &TaskDefinition,
        params: &[P],
        overrides: &[TaskOverride],
    ) -> Result<Vec<TaskId>> {
        self.check_config()?;
        let Some((task, payloads)) = many(def, params, overrides)? else {
            return Ok(Vec::new());
        };
        let sql = self.sql();
        let ids = db::tasks::insert_many(&mut tx, sql, &task, &payloads).await?;
        crate::observe::enqueued(&task.name, &task.settings.queue, ids.len());
        if task.due_now() {
            db::notify::wake_workers(&mut tx, &sql.notify.tasks_channel).await?;
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::RetryDefaults;
    use anchor_core::RetryPolicy;
    use chrono::Utc;

    const PLAIN: TaskDefinition = TaskDefinition {
        name: "Plain",
        retry: None,
        timeout_ms: 3_600_000,
        cron: None,
        on_failed: None,
        default_params: "{}",
        max_rescues: None,
        queue: "default",
        priority: 0,
    };

    const RETRYING: TaskDefinition = TaskDefinition {
        name: "Retrying",
        retry: Some(RetryDefaults {
            intervals_ms: &[1000, 2000],
            always_retry_on_failure: false,
            max_retries: Some(3),
        }),
        timeout_ms: 1000,
        cron: None,
        on_failed: Some("Handler"),
        default_params: "{}",
        max_rescues: None,
        queue: "default",
        priority: 0,
    };

    #[test]
    fn defaults_are_carried() {
        let t = resolve(&RETRYING, &[]).unwrap();
        let policy = t.settings.retry.as_ref().unwrap();
        assert_eq!(
            policy.intervals,
            [Duration::from_secs(1), Duration::from_secs(2)]
        );
        assert_eq!(policy.max_retries, Some(3));
        assert_eq!(t.settings.on_failed.as_deref(), Some("Handler"));
        assert_eq!(t.settings.timeout, Duration::from_secs(1));
        assert!(t.due_now());
    }

    #[test]
    fn a_policy_s_own_max_retries_replaces_the_definition_s() {
        let parsed = RetryPolicy::parse("1s", false).unwrap();
        let t = resolve(&RETRYING, &[TaskOverride::retry_policy(parsed.clone())]).unwrap();
        assert_eq!(
            t.settings.retry.unwrap().max_retries,
            Some(3),
            "parse sets none: the YAML's stays"
        );
        let bounded = RetryPolicy {
            max_retries: Some(7),
            ..parsed
        };
        let t = resolve(&RETRYING, &[TaskOverride::retry_policy(bounded.clone())]).unwrap();
        assert_eq!(t.settings.retry.unwrap().max_retries, Some(7));
        let t = resolve(
            &RETRYING,
            &[
                TaskOverride::retry_policy(bounded),
                TaskOverride::max_retries(1),
            ],
        )
        .unwrap();
        assert_eq!(
            t.settings.retry.unwrap().max_retries,
            Some(1),
            "max_retries has the last word"
        );
    }

    #[test]
    fn overrides_apply() {
        let t = resolve(
            &RETRYING,
            &[
                TaskOverride::retry_policy(RetryPolicy::parse("200ms,400ms", true).unwrap()),
                TaskOverride::max_retries(5),
                TaskOverride::timeout(Duration::from_secs(2)),
                TaskOverride::unique_tag("tag"),
                TaskOverride::run_after(Duration::from_secs(10)),
            ],
        )
        .unwrap();
        let policy = t.settings.retry.as_ref().unwrap();
        assert_eq!(
            policy.intervals,
            [Duration::from_millis(200), Duration::from_millis(400)]
        );
        assert!(policy.always_retry_on_failure);
        assert_eq!(policy.max_retries, Some(5));
        assert_eq!(t.settings.timeout, Duration::from_secs(2));
        assert_eq!(t.unique_tag.as_deref(), Some("tag"));
        assert_eq!(t.due, Due::AfterMs(10_000));
        assert!(!t.due_now());
    }

    #[test]
    fn run_after_and_run_at_set_one_due_time_and_the_last_wins() {
        let at = Utc::now() + chrono::Duration::hours(1);
        let after = TaskOverride::run_after(Duration::from_secs(5));
        let t = resolve(&PLAIN, &[after.clone(), TaskOverride::run_at(at)]).unwrap();
        assert_eq!(t.due, Due::At(at));
        let t = resolve(&PLAIN, &[TaskOverride::run_at(at), after]).unwrap();
        assert_eq!(t.due, Due::AfterMs(5_000));
        assert!(!t.due_now());
        assert_eq!(resolve(&PLAIN, &[]).unwrap().due, Due::Now);
    }

    #[test]
    fn invalid_overrides_are_refused() {
        let cases = [
            vec![TaskOverride::timeout(Duration::ZERO)],
            vec![TaskOverride::retry_policy(RetryPolicy {
                intervals: Vec::new(),
                always_retry_on_failure: true,
                max_retries: None,
            })],
            vec![TaskOverride::retry_policy(RetryPolicy {
                intervals: vec![anchor_core::MAX_DURATION * 2],
                always_retry_on_failure: true,
                max_retries: None,
            })],
            vec![TaskOverride::unique_tag("  ")],
            vec![TaskOverride::unique_tag("x".repeat(2000))],
            vec![TaskOverride::max_retries(3)],
        ];
        for overrides in cases {
            let err = resolve(&PLAIN, &overrides).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::InvalidOverride,
                "{overrides:?}: {err}"
            );
            assert!(err.to_string().contains("Plain"), "{err}");
        }
    }
}
