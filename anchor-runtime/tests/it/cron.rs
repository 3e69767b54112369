//! The cron scheduler against a real database: exactly one occurrence per tick across
//! workers, catch-up after a stop, failing occurrences, removed tasks, registration from
//! code and edited expressions.
//!
//! Each test uses its own task names and its own database, and gives every worker its own
//! client (its own pool), as separate processes would have.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchor_runtime::chrono::{DateTime, Utc};
use anchor_runtime::{
    Client, CronDefaults, CronSchedule, ErrorKind, Registry, ScheduleId, TaskContext,
    TaskDefinition, TaskError, TaskId, TaskOverride, TaskStatus, Worker, WorkerConfig,
    WorkerHandle,
};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::harness::{count, test_db, wait_for, TestDb};

const LONG: Duration = Duration::from_secs(30);

/// A cron task firing every second, scheduled at worker start (`{}` are its defaults).
const fn every_second(name: &'static str, on_failed: Option<&'static str>) -> TaskDefinition {
    TaskDefinition {
        name,
        retry: None,
        timeout_ms: 60_000,
        cron: Some(CronDefaults {
            expression: "*/1 * * * * *",
            timezone: None,
            default_params: Some("{}"),
        }),
        on_failed,
        default_params: "{}",
        max_rescues: None,
        queue: "default",
        priority: 0,
    }
}

static TICK: TaskDefinition = every_second("Tick", None);
static RESTARTED: TaskDefinition = every_second("Restarted", None);
static FAILING: TaskDefinition = every_second("FailingCron", Some("CronFailed"));
static CRON_FAILED: TaskDefinition = TaskDefinition {
    name: "CronFailed",
    retry: None,
    timeout_ms: 60_000,
    cron: None,
    on_failed: None,
    default_params: "{}",
    max_rescues: None,
    queue: "default",
    priority: 0,
};
static REMOVABLE: TaskDefinition = every_second("Removable", None);
/// A cron task of the deployment that no longer has `Removable`: its ticks show that the
/// new worker's scheduler is running.
static BEACON: TaskDefinition = every_second("Beacon", None);
static UNRELATED: TaskDefinition = TaskDefinition {
    name: "Unrelated",
    retry: None,
    timeout_ms: 60_000,
    cron: None,
    on_failed: None,
    default_params: "{}",
    max_rescues: None,
    queue: "default",
    priority: 0,
};
/// A cron task with a required parameter: scheduled only from code.
static REPORT_FOR: TaskDefinition = TaskDefinition {
    name: "ReportFor",
    retry: None,
    timeout_ms: 60_000,
    cron: Some(CronDefaults {
        expression: "*/1 * * * * *",
        timezone: None,
        default_params: None,
    }),
    on_failed: None,
    default_params: "{}",
    max_rescues: None,
    queue: "default",
    priority: 0,
};
/// The same task before and after its expression was edited in tasks.yaml.
static EDITED_V1: TaskDefinition = TaskDefinition {
    name: "Edited",
    retry: None,
    timeout_ms: 60_000,
    cron: Some(CronDefaults {
        expression: "0 0 1 1 *",
        timezone: Some("Europe/Berlin"),
        default_params: Some(r#"{"n":1}"#),
    }),
    on_failed: None,
    default_params: r#"{"n":1}"#,
    max_rescues: None,
    queue: "default",
    priority: 0,
};
static EDITED_COMPANION: TaskDefinition = every_second("EditedCompanion", None);
static EDITED_V2: TaskDefinition = TaskDefinition {
    name: "Edited",
    retry: None,
    timeout_ms: 60_000,
    cron: Some(CronDefaults {
        expression: "*/1 * * * * *",
        timezone: None,
        default_params: Some(r#"{"n":1}"#),
    }),
    on_failed: None,
    default_params: r#"{"n":1}"#,
    max_rescues: None,
    queue: "default",
    priority: 0,
};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Empty {}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Customer {
    customer: String,
}

#[derive(Debug, Clone, Deserialize)]
struct FailureParams {
    #[serde(rename = "taskID")]
    task_id: TaskId,
}

fn config(id: &str) -> WorkerConfig {
    WorkerConfig::default()
        .with_worker_id(id)
        .with_shutdown_grace(Duration::from_secs(5))
}

/// A worker on its own client, running `def` with a handler that succeeds.
async fn ok_worker(
    db: &TestDb,
    id: &str,
    defs: &[&'static TaskDefinition],
) -> Result<WorkerHandle> {
    let client = Client::connect(&db.url).await?;
    let mut registry = Registry::new();
    for def in defs {
        registry.register(def, |_ctx: TaskContext, _p: serde_json::Value| async {
            Ok::<(), TaskError>(())
        });
    }
    Ok(Worker::new(client, registry, config(id))?.start())
}

/// The occurrence ticks of `task`, oldest first, with how many occurrences each tick has.
async fn ticks(client: &Client, task: &str) -> Result<Vec<(DateTime<Utc>, i64)>> {
    let conn = client.pool().get().await?;
    let rows = conn
        .query(
            "SELECT cron_tick_at, count(*) FROM anchor.tasks \
             WHERE name = $1 AND cron_tick_at IS NOT NULL \
             GROUP BY cron_tick_at ORDER BY cron_tick_at",
            &[&task],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn db_now(client: &Client) -> Result<DateTime<Utc>> {
    let conn = client.pool().get().await?;
    Ok(conn.query_one("SELECT now()", &[]).await?.get(0))
}

async fn schedules_of(client: &Client, task: &str) -> Result<Vec<CronSchedule>> {
    Ok(client
        .schedules()
        .await?
        .into_iter()
        .filter(|s| s.task_name == task)
        .collect())
}

/// Waits until `task` has at least `n` occurrences.
async fn wait_for_occurrences(client: &Client, task: &str, n: i64) -> Result<()> {
    let clause = format!("name = '{task}' AND cron_tick_at IS NOT NULL");
    wait_for(&format!("{n} occurrences of {task}"), LONG, || async {
        Ok((count(client, &clause).await? >= n).then_some(()))
    })
    .await
}

fn assert_one_per_tick(ticks: &[(DateTime<Utc>, i64)]) -> Result<()> {
    if let Some((tick, n)) = ticks.iter().find(|(_, n)| *n != 1) {
        bail!("tick {tick} has {n} occurrences: {ticks:?}");
    }
    Ok(())
}

#[tokio::test]
async fn three_workers_fire_each_tick_exactly_once() -> Result<()> {
    let db = test_db().await?;
    let mut workers = Vec::new();
    for i in 0..3 {
        workers.push(ok_worker(&db, &format!("tick-{i}"), &[&TICK]).await?);
    }
    // The measurement window: ten seconds from the first tick (so that a slow start on a
    // busy machine does not count against the scheduler).
    wait_for_occurrences(&db.client, "Tick", 1).await?;
    let first = ticks(&db.client, "Tick").await?[0].0;
    tokio::time::sleep(Duration::from_secs(10)).await;
    for worker in workers {
        worker.shutdown().await;
    }
    let ticks = ticks(&db.client, "Tick").await?;
    assert_one_per_tick(&ticks)?;
    let window = first + chrono::Duration::seconds(10);
    let n = ticks.iter().filter(|(t, _)| *t < window).count();
    assert!((9..=11).contains(&n), "{n} ticks in 10 s: {ticks:?}");
    // Consecutive seconds: no tick skipped, all on whole seconds.
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1].0 - pair[0].0,
            chrono::Duration::seconds(1),
            "{ticks:?}"
        );
    }
    assert!(ticks.iter().all(|(t, _)| t.timestamp_subsec_nanos() == 0));
    // One schedule, registered once by three workers.
    let schedules = schedules_of(&db.client, "Tick").await?;
    assert_eq!(schedules.len(), 1, "{schedules:?}");
    assert_eq!(schedules[0].key, anchor_runtime::DEFAULT_SCHEDULE_KEY);
    // How late occurrences were enqueued after their tick (informational: timing is asserted
    // by benchmarks, not tests).
    let conn = db.client.pool().get().await?;
    let lag: Option<f64> = conn
        .query_one(
            "SELECT (percentile_cont(0.5) WITHIN GROUP (ORDER BY \
               extract(epoch FROM created_at - cron_tick_at)) * 1000)::float8 \
             FROM anchor.tasks WHERE name = 'Tick'",
            &[],
        )
        .await?
        .get(0);
    eprintln!("median lag between tick and enqueue: {lag:?} ms");
    Ok(())
}

#[tokio::test]
async fn a_stopped_worker_catches_up_with_one_occurrence() -> Result<()> {
    let db = test_db().await?;
    let first = ok_worker(&db, "before", &[&RESTARTED]).await?;
    wait_for_occurrences(&db.client, "Restarted", 2).await?;
    // Killed, as a crash would: no shutdown.
    first.abort();
    let stopped_at = db_now(&db.client).await?;
    // The outage: five ticks pass with no worker.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before_restart = ticks(&db.client, "Restarted").await?;
    let restarted_at = db_now(&db.client).await?;
    let second = ok_worker(&db, "after", &[&RESTARTED]).await?;
    wait_for_occurrences(&db.client, "Restarted", before_restart.len() as i64 + 3).await?;
    second.shutdown().await;

    let ticks = ticks(&db.client, "Restarted").await?;
    assert_one_per_tick(&ticks)?;
    // No occurrence was enqueued while no worker ran (the aborted worker may have fired the
    // tick it was stopped on).
    let during: Vec<_> = before_restart
        .iter()
        .filter(|(t, _)| *t > stopped_at + chrono::Duration::seconds(1))
        .collect();
    assert!(during.is_empty(), "fired while stopped: {during:?}");
    // After the restart: exactly one occurrence for the missed stretch, for its first tick,
    // then the regular ticks after the restart.
    let last_before = before_restart.last().context("no tick before the stop")?.0;
    let after: Vec<DateTime<Utc>> = ticks
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t > last_before)
        .collect();
    let missed: Vec<_> = after.iter().filter(|t| **t <= restarted_at).collect();
    assert_eq!(
        missed.len(),
        1,
        "catch-up occurrences: {missed:?}; all: {ticks:?}"
    );
    assert_eq!(*missed[0], last_before + chrono::Duration::seconds(1));
    assert!(after[1] > restarted_at, "{after:?}");
    for pair in after[1..].windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::Duration::seconds(1), "{after:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_failing_occurrence_never_stops_the_schedule() -> Result<()> {
    let db = test_db().await?;
    let handled = Arc::new(Mutex::new(HashSet::new()));
    let mut registry = Registry::new();
    registry.register(&FAILING, |_ctx: TaskContext, _p: Empty| async {
        Err::<(), TaskError>(TaskError::fatal("the report server is down"))
    });
    let seen = handled.clone();
    registry.register(&CRON_FAILED, move |_ctx: TaskContext, p: FailureParams| {
        let seen = seen.clone();
        async move {
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p.task_id);
            Ok::<(), TaskError>(())
        }
    });
    let client = Client::connect(&db.url).await?;
    let worker = Worker::new(client, registry, config("failing"))?.start();
    wait_for("three failure handlers", LONG, || async {
        Ok((handled.lock().unwrap_or_else(|e| e.into_inner()).len() >= 3).then_some(()))
    })
    .await?;
    worker.shutdown().await;
    let failed = count(&db.client, "name = 'FailingCron' AND status = 3").await?;
    assert!(failed >= 3, "{failed} failed occurrences");
    let handled = handled.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for id in &handled {
        let task = db
            .client
            .get_task(*id)
            .await?
            .context("occurrence vanished")?;
        assert_eq!(task.name, "FailingCron");
        assert_eq!(task.status, anchor_runtime::TaskStatus::Failed);
    }
    let schedules = schedules_of(&db.client, "FailingCron").await?;
    assert!(schedules[0].enabled);
    assert_one_per_tick(&ticks(&db.client, "FailingCron").await?)?;
    Ok(())
}

#[tokio::test]
async fn a_removed_task_stops_firing_and_is_disabled() -> Result<()> {
    let db = test_db().await?;
    let old = ok_worker(&db, "old", &[&REMOVABLE]).await?;
    wait_for_occurrences(&db.client, "Removable", 2).await?;
    old.shutdown().await;
    let fired = count(&db.client, "name = 'Removable'").await?;
    // The new deployment no longer has the task.
    let new = ok_worker(&db, "new", &[&UNRELATED, &BEACON]).await?;
    // Three ticks of the new deployment's own schedule: its scheduler has run through at
    // least two ticks of Removable's schedule too.
    wait_for_occurrences(&db.client, "Beacon", 3).await?;
    assert_eq!(count(&db.client, "name = 'Removable'").await?, fired);
    let schedule = schedules_of(&db.client, "Removable").await?.remove(0);
    assert!(
        schedule.enabled,
        "not yet overdue long enough: {schedule:?}"
    );
    // A minute later no worker has fired it: pretend that minute passed, and start another
    // worker of the new deployment, which sweeps at start.
    let conn = db.client.pool().get().await?;
    conn.execute(
        "UPDATE anchor.cron_schedules SET next_fire_at = now() - interval '2 minutes' \
         WHERE task_name = 'Removable'",
        &[],
    )
    .await?;
    let newer = ok_worker(&db, "newer", &[&UNRELATED]).await?;
    let disabled = wait_for("the orphaned schedule to be disabled", LONG, || async {
        let s = schedules_of(&db.client, "Removable").await?.remove(0);
        Ok((!s.enabled).then_some(s))
    })
    .await?;
    assert_eq!(disabled.disabled_reason.as_deref(), Some("orphaned"));
    assert!(disabled
        .disabled_detail
        .as_deref()
        .is_some_and(|d| d.contains("newer")));
    assert_eq!(count(&db.client, "name = 'Removable'").await?, fired);
    new.shutdown().await;
    newer.shutdown().await;
    // The task comes back (a rollback of the deploy): its schedule is enabled again and the
    // missed stretch fires once.
    let back = ok_worker(&db, "back", &[&REMOVABLE]).await?;
    wait_for_occurrences(&db.client, "Removable", fired + 2).await?;
    back.shutdown().await;
    let schedule = schedules_of(&db.client, "Removable").await?.remove(0);
    assert!(schedule.enabled && schedule.disabled_reason.is_none());
    assert_one_per_tick(&ticks(&db.client, "Removable").await?)?;
    Ok(())
}

#[tokio::test]
async fn schedule_registers_and_updates_schedules_and_enqueue_runs_once() -> Result<()> {
    let db = test_db().await?;
    let client = &db.client;
    let a = Customer {
        customer: "a".into(),
    };
    let b = Customer {
        customer: "b".into(),
    };
    let id_a = client.schedule(&REPORT_FOR, &a, &[]).await?;
    assert!(client.get_task(TaskId::new(id_a.get())).await?.is_none());
    // The same parameters name the same schedule.
    assert_eq!(client.schedule(&REPORT_FOR, &a, &[]).await?, id_a);
    let id_b = client.schedule(&REPORT_FOR, &b, &[]).await?;
    assert_ne!(id_b, id_a);
    // A unique tag names the schedule; calling again with new parameters updates it.
    let tag = [TaskOverride::unique_tag("nightly")];
    let c = Customer {
        customer: "c".into(),
    };
    let d = Customer {
        customer: "d".into(),
    };
    let id_tag = client.schedule(&REPORT_FOR, &c, &tag).await?;
    assert_eq!(client.schedule(&REPORT_FOR, &d, &tag).await?, id_tag);
    let tagged = client.get_schedule(id_tag).await?.context("schedule")?;
    assert_eq!(tagged.key, "nightly");
    assert_eq!(tagged.payload, serde_json::json!({"customer": "d"}));
    // Other overrides have no meaning for a schedule: refused, nothing written.
    let err = client
        .schedule(
            &REPORT_FOR,
            &Customer {
                customer: "e".into(),
            },
            &[TaskOverride::timeout(Duration::from_secs(5))],
        )
        .await
        .expect_err("a timeout override on a schedule");
    assert_eq!(err.kind(), ErrorKind::InvalidOverride);
    assert!(err.to_string().contains("ReportFor"), "{err}");
    // Inside a transaction: registered on commit, gone on rollback.
    let mut conn = client.pool().get().await?;
    let tx = conn.transaction().await?;
    let f = Customer {
        customer: "f".into(),
    };
    client.schedule_with_tx(&tx, &REPORT_FOR, &f, &[]).await?;
    tx.rollback().await?;
    assert_eq!(schedules_of(client, "ReportFor").await?.len(), 3);
    // A task without a cron schedule has no schedule to register.
    let err = client
        .schedule(&UNRELATED, &serde_json::json!({}), &[])
        .await
        .expect_err("a schedule of a task without cron");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("Unrelated"), "{err}");
    // `enqueue` on a cron task runs it once now, outside every schedule.
    let once = client
        .enqueue(
            &REPORT_FOR,
            &Customer {
                customer: "once".into(),
            },
            &[],
        )
        .await?;
    let task = client.get_task(once).await?.context("an ordinary task")?;
    assert_eq!(task.status, TaskStatus::Pending);
    assert_eq!(task.payload, serde_json::json!({"customer": "once"}));
    assert_eq!(schedules_of(client, "ReportFor").await?.len(), 3);

    // A worker fires each schedule with its parameters.
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut registry = Registry::new();
    let log = seen.clone();
    registry.register(&REPORT_FOR, move |_ctx: TaskContext, p: Customer| {
        let log = log.clone();
        async move {
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(p.customer);
            Ok::<(), TaskError>(())
        }
    });
    let worker = Worker::new(Client::connect(&db.url).await?, registry, config("reports"))?.start();
    let customers = || -> HashSet<String> {
        seen.lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    };
    wait_for("a, b and d to run", LONG, || async {
        let seen = customers();
        Ok((seen.contains("a") && seen.contains("b") && seen.contains("d")).then_some(()))
    })
    .await?;
    assert!(
        !customers().contains("c"),
        "the tagged schedule was updated to d"
    );
    // Paused: no more occurrences of a; resumed: they come back.
    client.pause_schedule(id_a).await?;
    let paused = client.get_schedule(id_a).await?.context("schedule")?;
    assert_eq!(paused.disabled_reason.as_deref(), Some("paused"));
    let clause = format!("cron_schedule_id = {id_a}");
    let before = count(client, &clause).await?;
    // Three more occurrences of b, on the same one-second schedule: two ticks of a passed.
    let clause_b = format!("cron_schedule_id = {id_b}");
    let b_before = count(client, &clause_b).await?;
    wait_for("three more occurrences of b", LONG, || async {
        Ok((count(client, &clause_b).await? >= b_before + 3).then_some(()))
    })
    .await?;
    assert_eq!(count(client, &clause).await?, before);
    client.resume_schedule(id_a).await?;
    wait_for("a to fire again", LONG, || async {
        Ok((count(client, &clause).await? > before).then_some(()))
    })
    .await?;
    worker.shutdown().await;
    let missing = client
        .pause_schedule(ScheduleId::new(-999_999))
        .await
        .expect_err("no such schedule");
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    Ok(())
}

#[tokio::test]
async fn an_edited_expression_updates_the_schedule_at_worker_start() -> Result<()> {
    let db = test_db().await?;
    let v1 = ok_worker(&db, "v1", &[&EDITED_V1]).await?;
    let first = wait_for("the default schedule", LONG, || async {
        Ok(schedules_of(&db.client, "Edited").await?.pop())
    })
    .await?;
    v1.shutdown().await;
    assert_eq!(first.expression, "0 0 1 1 *");
    assert_eq!(first.timezone.as_deref(), Some("Europe/Berlin"));
    // Midnight on 1 January in Berlin is 23:00 UTC on 31 December.
    assert_eq!(
        first.next_fire_at.format("%m-%d %H:%M:%S").to_string(),
        "12-31 23:00:00"
    );
    // Starting the same definition again changes nothing. The companion fires every
    // second, and a worker registers all of its schedules before it fires any: once the
    // companion has fired, `Edited` has been registered again.
    let again = ok_worker(&db, "v1-again", &[&EDITED_V1, &EDITED_COMPANION]).await?;
    wait_for_occurrences(&db.client, "EditedCompanion", 1).await?;
    again.shutdown().await;
    let unchanged = schedules_of(&db.client, "Edited").await?.remove(0);
    assert_eq!(unchanged.updated_at, first.updated_at);
    // The edited definition takes over the same schedule and fires every second.
    let v2 = ok_worker(&db, "v2", &[&EDITED_V2]).await?;
    wait_for_occurrences(&db.client, "Edited", 2).await?;
    v2.shutdown().await;
    let edited = schedules_of(&db.client, "Edited").await?;
    assert_eq!(edited.len(), 1);
    assert_eq!(edited[0].id, first.id);
    assert_eq!(edited[0].expression, "*/1 * * * * *");
    assert_eq!(edited[0].timezone, None);
    Ok(())
}

static EVALUATED: TaskDefinition = every_second("Evaluated", None);
/// A hand-written definition whose default parameters are not JSON: skipped with an error
/// log, without keeping the worker's other schedules from registering.
static BROKEN_DEFAULTS: TaskDefinition = TaskDefinition {
    name: "BrokenDefaults",
    retry: None,
    timeout_ms: 60_000,
    cron: Some(CronDefaults {
        expression: "*/1 * * * * *",
        timezone: None,
        default_params: Some("{not json"),
    }),
    on_failed: None,
    default_params: "{}",
    max_rescues: None,
    queue: "default",
    priority: 0,
};

#[tokio::test]
async fn a_schedule_that_cannot_be_evaluated_is_disabled_and_others_keep_firing() -> Result<()> {
    let db = test_db().await?;
    let worker = ok_worker(&db, "evaluating", &[&EVALUATED, &BROKEN_DEFAULTS]).await?;
    wait_for_occurrences(&db.client, "Evaluated", 1).await?;
    assert!(schedules_of(&db.client, "BrokenDefaults").await?.is_empty());
    // Someone edits the row by hand into something no worker can evaluate.
    let conn = db.client.pool().get().await?;
    conn.execute(
        "UPDATE anchor.cron_schedules SET timezone = 'Mars/Olympus' WHERE task_name = 'Evaluated'",
        &[],
    )
    .await?;
    let disabled = wait_for("the invalid schedule to be disabled", LONG, || async {
        let s = schedules_of(&db.client, "Evaluated").await?.remove(0);
        Ok((!s.enabled).then_some(s))
    })
    .await?;
    worker.shutdown().await;
    assert_eq!(disabled.disabled_reason.as_deref(), Some("invalid"));
    assert!(
        disabled
            .disabled_detail
            .as_deref()
            .is_some_and(|d| d.contains("Mars/Olympus")),
        "{disabled:?}"
    );
    // A worker starting with the task's definition repairs and enables it.
    let fired = count(&db.client, "name = 'Evaluated'").await?;
    let repaired = ok_worker(&db, "repairing", &[&EVALUATED]).await?;
    wait_for_occurrences(&db.client, "Evaluated", fired + 2).await?;
    repaired.shutdown().await;
    let schedule = schedules_of(&db.client, "Evaluated").await?.remove(0);
    assert!(schedule.enabled, "{schedule:?}");
    assert_eq!(schedule.timezone, None);
    assert_one_per_tick(&ticks(&db.client, "Evaluated").await?)?;
    Ok(())
}

static GUARDED: TaskDefinition = every_second("Guarded", None);

#[tokio::test]
async fn a_tick_that_already_has_an_occurrence_never_gets_a_second() -> Result<()> {
    let db = test_db().await?;
    let worker = ok_worker(&db, "guarded", &[&GUARDED]).await?;
    wait_for_occurrences(&db.client, "Guarded", 2).await?;
    // Rewind the schedule to a tick that already fired, as a scheduler acting on a stale
    // view would see it: the (schedule, tick) key refuses the second occurrence.
    let conn = db.client.pool().get().await?;
    let rewound = conn
        .execute(
            "UPDATE anchor.cron_schedules SET next_fire_at = last_tick_at \
             WHERE task_name = 'Guarded'",
            &[],
        )
        .await?;
    assert_eq!(rewound, 1);
    let after_rewind = count(&db.client, "name = 'Guarded'").await?;
    wait_for_occurrences(&db.client, "Guarded", after_rewind + 2).await?;
    worker.shutdown().await;
    assert_one_per_tick(&ticks(&db.client, "Guarded").await?)?;
    Ok(())
}

/// A slow cron task scheduled from code.
static EXCLUSIVE: TaskDefinition = TaskDefinition {
    name: "Exclusive",
    retry: None,
    timeout_ms: 60_000,
    cron: Some(CronDefaults {
        expression: "*/1 * * * * *",
        timezone: None,
        default_params: None,
    }),
    on_failed: None,
    default_params: "{}",
    max_rescues: None,
    queue: "default",
    priority: 0,
};

#[tokio::test]
async fn without_overlap_ticks_wait_for_the_last_occurrence() -> Result<()> {
    let db = test_db().await?;
    let params = Customer {
        customer: "x".into(),
    };
    let id = db.client.schedule(&EXCLUSIVE, &params, &[]).await?;
    assert!(
        db.client
            .get_schedule(id)
            .await?
            .context("schedule")?
            .allow_overlap
    );
    db.client.set_schedule_overlap(id, false).await?;
    let mut registry = Registry::new();
    registry.register(&EXCLUSIVE, |_ctx: TaskContext, _p: Customer| async {
        // Slower than the schedule's one-second ticks.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        Ok::<(), TaskError>(())
    });
    let worker = Worker::new(
        Client::connect(&db.url).await?,
        registry,
        config("exclusive"),
    )?
    .start();
    wait_for("three finished occurrences", LONG, || async {
        let done = count(&db.client, "name = 'Exclusive' AND status = 2").await?;
        Ok((done >= 3).then_some(()))
    })
    .await?;
    worker.shutdown().await;
    let conn = db.client.pool().get().await?;
    let rows = conn
        .query(
            "SELECT id, started_at, finished_at FROM anchor.tasks \
             WHERE name = 'Exclusive' AND status = 2 ORDER BY id",
            &[],
        )
        .await?;
    let runs: Vec<(i64, DateTime<Utc>, DateTime<Utc>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    for pair in runs.windows(2) {
        assert!(
            pair[1].1 >= pair[0].2,
            "occurrence {} started before {} finished: {runs:?}",
            pair[1].0,
            pair[0].0
        );
    }
    let ticks = ticks(&db.client, "Exclusive").await?;
    assert_one_per_tick(&ticks)?;
    for pair in ticks.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= chrono::Duration::seconds(2),
            "{ticks:?}"
        );
    }
    let missing = db
        .client
        .set_schedule_overlap(ScheduleId::new(-999_999), false)
        .await
        .expect_err("no such schedule");
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    Ok(())
}

static CONTENDED: TaskDefinition = every_second("Contended", None);

/// Reads of `cron_schedules` so far (every scheduler round reads it at least once).
async fn schedule_reads(client: &Client) -> Result<i64> {
    let conn = client.pool().get().await?;
    let row = conn
        .query_one(
            "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables \
             WHERE schemaname = 'anchor' AND relname = 'cron_schedules'",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// While another session holds a due schedule's row lock (an application transaction left
/// open on it), the scheduler backs off instead of looking again every millisecond.
#[tokio::test]
async fn a_locked_due_schedule_does_not_make_the_scheduler_spin() -> Result<()> {
    let db = test_db().await?;
    let worker = ok_worker(&db, "contender", &[&CONTENDED]).await?;
    wait_for_occurrences(&db.client, "Contended", 1).await?;
    let mut other = db.client.pool().get().await?;
    let tx = other.transaction().await?;
    tx.execute(
        "SELECT 1 FROM anchor.cron_schedules WHERE task_name = 'Contended' FOR UPDATE",
        &[],
    )
    .await?;
    // The next tick comes due while the lock is held.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Statistics reach the shared counters about once a second per busy backend.
    let before = schedule_reads(&db.client).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = schedule_reads(&db.client).await? - before;
    tx.rollback().await?;
    // Once the lock is gone, the due tick fires.
    let fired = count(
        &db.client,
        "name = 'Contended' AND cron_tick_at IS NOT NULL",
    )
    .await?;
    wait_for_occurrences(&db.client, "Contended", fired + 1).await?;
    worker.shutdown().await;
    assert!(
        during < 100,
        "the scheduler read the schedules {during} times in 3 s while one was locked"
    );
    Ok(())
}
