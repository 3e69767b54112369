//! The metrics a worker and a client report through the `metrics` facade: a run of known
//! outcomes gives exactly the expected counts, captured by `metrics-util`'s debugging
//! recorder (installed for this whole test binary, so each test uses task names of its own).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anchor_runtime::observe;
use anchor_runtime::{
    Client, Registry, RetryDefaults, TaskContext, TaskDefinition, TaskError, TaskOverride, Worker,
    WorkerConfig,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("no other recorder in this test binary");
        snapshotter
    })
}

type Snapshot = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// Every metric of `task` in `snapshot` (taking a snapshot resets what it read, so a test
/// takes one): (kind, name) → counter value, gauge value or histogram count.
fn values_of(snapshot: &Snapshot, task: &str) -> HashMap<(MetricKind, String), f64> {
    let mut out = HashMap::new();
    for (key, _, _, value) in snapshot {
        let (kind, key) = (key.kind(), key.key());
        if !key.labels().any(|l| l.key() == "task" && l.value() == task) {
            continue;
        }
        let v = match value {
            DebugValue::Counter(n) => *n as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(h) => h.len() as f64,
        };
        out.insert((kind, key.name().to_string()), v);
    }
    out
}

fn value(values: &HashMap<(MetricKind, String), f64>, kind: MetricKind, name: &str) -> f64 {
    values
        .get(&(kind, name.to_string()))
        .copied()
        .unwrap_or(0.0)
}

const fn def(name: &'static str) -> TaskDefinition {
    TaskDefinition {
        name,
        retry: Some(RetryDefaults {
            intervals_ms: &[1],
            always_retry_on_failure: false,
            max_retries: Some(1),
        }),
        timeout_ms: 60_000,
        cron: None,
        on_failed: None,
        default_params: "{}",
        max_rescues: None,
        queue: "metered",
        priority: 0,
    }
}

static OK: TaskDefinition = def("MeteredOk");
static FLAKY: TaskDefinition = def("MeteredFlaky");
static SNOOZY: TaskDefinition = def("MeteredSnoozy");
static BROKEN: TaskDefinition = def("MeteredBroken");
static LATER: TaskDefinition = def("MeteredLater");

#[derive(serde::Serialize, serde::Deserialize)]
struct Job {}

async fn wait_final(client: &Client, ids: &[anchor_runtime::TaskId]) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut done = true;
        for id in ids {
            let task = client.get_task(*id).await?.expect("the task exists");
            done &= task.status.is_final();
        }
        if done {
            return Ok(());
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "tasks did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_run_of_known_outcomes_gives_exactly_the_expected_counts() -> anyhow::Result<()> {
    snapshotter();
    let url = anchor_testkit::shared()
        .create_database("metrics")
        .await?
        .url;
    let client = Client::connect(&url).await?;
    anchor_runtime::migrate(&client).await?;

    let mut registry = Registry::new();
    registry.register(&OK, |_: TaskContext, _: Job| async {
        Ok::<(), TaskError>(())
    });
    registry.register(&FLAKY, |ctx: TaskContext, _: Job| async move {
        if ctx.attempt() == 1 {
            Err(TaskError::failed("first time"))
        } else {
            Ok(())
        }
    });
    let snoozes = Arc::new(AtomicU32::new(0));
    let s = snoozes.clone();
    registry.register(&SNOOZY, move |_: TaskContext, _: Job| {
        let first = s.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                Err(TaskError::RetryWithoutErrorEvent)
            } else {
                Ok(())
            }
        }
    });
    registry.register(&BROKEN, |_: TaskContext, _: Job| async {
        Err::<(), _>(TaskError::fatal("broken"))
    });
    registry.register(&LATER, |_: TaskContext, _: Job| async {
        Ok::<(), TaskError>(())
    });

    let config = WorkerConfig::default().with_poll_interval(Duration::from_millis(20));
    let handle = Worker::new(client.clone(), registry, config)?.start();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(client.enqueue(&OK, &Job {}, &[]).await?);
    }
    ids.extend(client.enqueue_many(&FLAKY, &[Job {}, Job {}], &[]).await?);
    ids.push(client.enqueue(&SNOOZY, &Job {}, &[]).await?);
    ids.push(client.enqueue(&BROKEN, &Job {}, &[]).await?);
    let later = client
        .enqueue(
            &LATER,
            &Job {},
            &[TaskOverride::run_after(Duration::from_secs(3600))],
        )
        .await?;
    assert!(client.cancel_task(later).await?);
    wait_final(&client, &ids).await?;
    handle.shutdown().await;

    use MetricKind::{Counter, Gauge, Histogram};
    let snapshot: Snapshot = snapshotter().snapshot().into_vec();
    let ok = values_of(&snapshot, "MeteredOk");
    assert_eq!(value(&ok, Counter, observe::ENQUEUED), 3.0);
    assert_eq!(value(&ok, Counter, observe::STARTED), 3.0);
    assert_eq!(value(&ok, Counter, observe::SUCCEEDED), 3.0);
    assert_eq!(value(&ok, Counter, observe::FAILED), 0.0);
    assert_eq!(value(&ok, Histogram, observe::RUN_DURATION), 3.0);
    assert_eq!(value(&ok, Histogram, observe::QUEUE_WAIT), 3.0);
    assert_eq!(value(&ok, Gauge, observe::RUNNING), 0.0);

    let flaky = values_of(&snapshot, "MeteredFlaky");
    assert_eq!(value(&flaky, Counter, observe::ENQUEUED), 2.0);
    assert_eq!(value(&flaky, Counter, observe::STARTED), 4.0);
    assert_eq!(value(&flaky, Counter, observe::RETRIED), 2.0);
    assert_eq!(value(&flaky, Counter, observe::SUCCEEDED), 2.0);
    assert_eq!(value(&flaky, Histogram, observe::RUN_DURATION), 4.0);

    let snoozy = values_of(&snapshot, "MeteredSnoozy");
    assert_eq!(value(&snoozy, Counter, observe::SNOOZED), 1.0);
    assert_eq!(value(&snoozy, Counter, observe::RETRIED), 0.0);
    assert_eq!(value(&snoozy, Counter, observe::SUCCEEDED), 1.0);

    let broken = values_of(&snapshot, "MeteredBroken");
    assert_eq!(value(&broken, Counter, observe::STARTED), 1.0);
    assert_eq!(value(&broken, Counter, observe::FAILED), 1.0);
    assert_eq!(value(&broken, Counter, observe::RETRIED), 0.0);

    let cancelled = values_of(&snapshot, "MeteredLater");
    assert_eq!(value(&cancelled, Counter, observe::ENQUEUED), 1.0);
    assert_eq!(value(&cancelled, Counter, observe::CANCELLED), 1.0);
    assert_eq!(value(&cancelled, Counter, observe::STARTED), 0.0);

    // Every metric carries the queue label.
    for (key, _, _, _) in &snapshot {
        let key = key.key();
        if key
            .labels()
            .any(|l| l.key() == "task" && l.value().starts_with("Metered"))
        {
            assert!(
                key.labels()
                    .any(|l| l.key() == "queue" && l.value() == "metered"),
                "{key:?}"
            );
        }
    }
    Ok(())
}
