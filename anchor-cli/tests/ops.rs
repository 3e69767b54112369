//! The operator commands end to end against a throwaway PostgreSQL: `anchor tasks
//! list|stats` (filters, paging by cursor, counts), `anchor queues list|pause|resume`,
//! `anchor schedules list|pause|resume`, `anchor tasks cancel` of a running task, and colour
//! only where stdout is a terminal.

use std::future::Future;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anchor_runtime::{
    Client, CronDefaults, Registry, TaskContext, TaskDefinition, TaskError, TaskId, TaskOverride,
    TaskStatus, Worker, WorkerConfig,
};
use serde_json::{json, Value};

mod common;
use common::{anchor, anchor_with, environment, json, text};

const fn def(name: &'static str, cron: Option<CronDefaults>) -> TaskDefinition {
    TaskDefinition {
        name,
        retry: None,
        timeout_ms: 60_000,
        cron,
        on_failed: None,
        default_params: "{}",
        max_rescues: None,
        queue: anchor_runtime::DEFAULT_QUEUE,
        priority: 0,
    }
}

static REPORT: TaskDefinition = def("Report", None);
static EMAIL: TaskDefinition = def("Email", None);
static DOOMED: TaskDefinition = def("Doomed", None);
static WAITER: TaskDefinition = def("Waiter", None);
/// Cron tasks with a required parameter: scheduled from code only, never by a worker's
/// start (and no worker runs here, so they never fire).
static NIGHTLY: TaskDefinition = def(
    "Nightly",
    Some(CronDefaults {
        expression: "0 3 * * *",
        timezone: Some("Europe/Berlin"),
        default_params: None,
    }),
);
static HOURLY: TaskDefinition = def(
    "Hourly",
    Some(CronDefaults {
        expression: "0 * * * *",
        timezone: None,
        default_params: None,
    }),
);

/// A migrated database of its own, and a client on it.
async fn setup(prefix: &str) -> (String, Client) {
    let db = anchor_testkit::shared()
        .create_database(prefix)
        .await
        .expect("database");
    let client = Client::connect(&db.url).await.expect("client");
    anchor_runtime::migrate(&client).await.expect("migrate");
    (db.url, client)
}

/// Polls `check` every 20 ms until it gives a value; panics after 10 s naming `what`.
async fn wait<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_status(client: &Client, id: TaskId, status: TaskStatus) {
    wait(&format!("task {id} to be {status}"), || async {
        let task = client.get_task(id).await.expect("get_task")?;
        (task.status == status).then_some(())
    })
    .await;
}

fn ids(shape: &Value) -> Vec<i64> {
    shape["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks in {shape}"))
        .iter()
        .map(|t| t["id"].as_i64().expect("id"))
        .collect()
}

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

fn has_escape(output: &Output) -> bool {
    output.stdout.contains(&0x1b)
}

/// Runs `anchor ARGS` under a pseudo-terminal (`script`, from util-linux), so that stdout
/// is a terminal as it is for an operator; returns what the terminal showed.
fn on_a_terminal(url: &str, args: &str, envs: &[(&str, &str)]) -> String {
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_anchor"));
    let out = environment(&mut Command::new("script"), url, envs)
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .output()
        .expect("run script");
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_list_filters_pages_by_cursor_and_stats_counts() {
    let (url, client) = setup("cli_list").await;
    // One task that fails for good, run by a real worker that is then stopped.
    let mut registry = Registry::new();
    registry.register(&DOOMED, |_ctx: TaskContext, _p: Value| async {
        Err::<(), TaskError>(TaskError::fatal("customer 7 does not exist"))
    });
    let worker = Worker::new(client.clone(), registry, WorkerConfig::default())
        .expect("worker")
        .start();
    let doomed = client
        .enqueue(&DOOMED, &json!({"customer": 7}), &[])
        .await
        .expect("enqueue");
    wait_for_status(&client, doomed, TaskStatus::Failed).await;
    worker.shutdown().await;
    let mut all = vec![doomed.get()];
    for n in 0..3 {
        let id = client.enqueue(&REPORT, &json!({"n": n}), &[]).await;
        all.push(id.expect("enqueue").get());
    }
    for n in 0..2 {
        let emails = [TaskOverride::queue("emails")];
        let id = client.enqueue(&EMAIL, &json!({"n": n}), &emails).await;
        all.push(id.expect("enqueue").get());
    }
    all.reverse(); // newest first

    let listed = anchor(&url, &["tasks", "list"]);
    assert_eq!(code(&listed), Some(0), "{}", text(&listed));
    let out = text(&listed);
    for word in ["ID", "QUEUE", "PRIORITY", "LAST ERROR", "Report", "emails"] {
        assert!(out.contains(word), "{word}: {out}");
    }
    assert!(
        out.lines()
            .any(|l| l.contains("Doomed") && l.contains("failed") && l.contains("customer 7")),
        "{out}"
    );
    assert!(!has_escape(&listed), "escape codes in a pipe: {out:?}");
    assert!(!out.contains("more tasks"), "{out}");

    let shape = json(&anchor(&url, &["tasks", "list", "--json"]));
    assert_eq!(ids(&shape), all);
    assert!(shape["next"].is_null(), "{shape}");
    let failed = json(&anchor(
        &url,
        &["tasks", "list", "--status", "failed", "--json"],
    ));
    assert_eq!(ids(&failed), [doomed.get()]);
    assert_eq!(failed["tasks"][0]["errors"][0]["attempt"], 1);
    let either = [
        "tasks", "list", "--status", "failed", "--status", "pending", "--json",
    ];
    assert_eq!(ids(&json(&anchor(&url, &either))), all);
    let named = json(&anchor(
        &url,
        &["tasks", "list", "--name", "Email", "--json"],
    ));
    assert_eq!(ids(&named), all[..2]);
    let queued = json(&anchor(
        &url,
        &["tasks", "list", "--queue", "emails", "--json"],
    ));
    assert_eq!(ids(&queued), all[..2]);
    assert_eq!(queued["tasks"][0]["settings"]["queue"], "emails");
    assert_eq!(queued["tasks"][0]["settings"]["priority"], 0);

    // Pages of two, each after the cursor the last one printed, until there is none.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["tasks", "list", "--limit", "2", "--json"];
        if let Some(cursor) = &after {
            args.extend(["--after", cursor.as_str()]);
        }
        let page = json(&anchor(&url, &args));
        pages += 1;
        seen.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
        assert!(pages < 10, "paging does not end: {seen:?}");
    }
    assert_eq!((pages, &seen), (3, &all), "newest first, no repeats");
    let first = anchor(&url, &["tasks", "list", "--limit", "2"]);
    let cursor = format!("--after {}", all[1]);
    assert!(text(&first).contains(&cursor), "{}", text(&first));

    let recent = json(&anchor(&url, &["tasks", "list", "--since", "1h", "--json"]));
    assert_eq!(ids(&recent), all);
    let future = ["tasks", "list", "--since", "2999-01-01T00:00:00Z"];
    let none = anchor(&url, &future);
    assert_eq!(code(&none), Some(0), "{}", text(&none));
    assert_eq!(text(&none).trim(), "no tasks match");
    let bogus = anchor(&url, &["tasks", "list", "--status", "bogus"]);
    assert_eq!(code(&bogus), Some(2), "{}", text(&bogus));
    assert!(
        text(&bogus).contains("pending, running, completed, failed, cancelled"),
        "{}",
        text(&bogus)
    );
    for bad in [["--limit", "0"], ["--limit", "1001"], ["--since", "soon"]] {
        let refused = anchor(&url, &["tasks", "list", bad[0], bad[1]]);
        assert_eq!(code(&refused), Some(2), "{bad:?}: {}", text(&refused));
    }

    let stats = anchor(&url, &["tasks", "stats", "--json"]);
    assert_eq!(code(&stats), Some(0), "{}", text(&stats));
    let stats = json(&stats);
    assert_eq!(stats["window_ms"], 3_600_000);
    let counts: Vec<(String, String, String, u64)> = stats["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .map(|c| {
            let field = |k: &str| c[k].as_str().expect("string").to_string();
            let count = c["count"].as_u64().expect("count");
            (field("queue"), field("name"), field("status"), count)
        })
        .collect();
    let count = |queue: &str, name: &str, status: &str, n: u64| {
        (queue.to_string(), name.to_string(), status.to_string(), n)
    };
    assert_eq!(
        counts,
        [
            count("default", "Doomed", "failed", 1),
            count("default", "Report", "pending", 3),
            count("emails", "Email", "pending", 2),
        ]
    );
    assert!(stats["oldest_due_age_ms"].is_u64(), "{stats}");
    assert_eq!(stats["running_by_worker"], json!([]));
    let stats = anchor(&url, &["tasks", "stats", "--window", "30m"]);
    let out = text(&stats);
    assert!(out.contains("over the last 30m"), "{out}");
    assert!(
        out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["emails", "Email", "2", "0", "0", "0", "0"]),
        "{out}"
    );
    assert!(out.contains("oldest due task: waiting for"), "{out}");
    let bad = anchor(&url, &["tasks", "stats", "--window", "30"]);
    assert_eq!(code(&bad), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("unit is missing"), "{}", text(&bad));

    // Colour: on a terminal, not with NO_COLOR; forced with CLICOLOR_FORCE.
    let terminal = on_a_terminal(&url, "tasks list --status failed", &[]);
    assert!(terminal.contains("\u{1b}["), "{terminal:?}");
    assert!(terminal.contains("Doomed"), "{terminal:?}");
    let plain = on_a_terminal(&url, "tasks list --status failed", &[("NO_COLOR", "1")]);
    assert!(!plain.contains('\u{1b}'), "{plain:?}");
    assert!(plain.contains("Doomed"), "{plain:?}");
    let forced = anchor_with(&url, &["tasks", "stats"], &[("CLICOLOR_FORCE", "1")]);
    assert!(has_escape(&forced), "{}", text(&forced));
    let json_out = on_a_terminal(&url, "tasks list --json", &[]);
    assert!(!json_out.contains('\u{1b}'), "{json_out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_list_pause_and_resume() {
    let (url, client) = setup("cli_queues").await;
    let emails = [TaskOverride::queue("emails")];
    client
        .enqueue(&EMAIL, &json!({}), &emails)
        .await
        .expect("enqueue");
    client
        .enqueue(&REPORT, &json!({}), &[])
        .await
        .expect("enqueue");
    let queue = |shape: &Value, name: &str| -> Value {
        let list = shape.as_array().unwrap_or_else(|| panic!("{shape}"));
        list.iter()
            .find(|q| q["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {shape}"))
            .clone()
    };

    let listed = json(&anchor(&url, &["queues", "list", "--json"]));
    let emails = queue(&listed, "emails");
    assert_eq!(emails["paused"], false, "{emails}");
    assert_eq!((&emails["due"], &emails["running"]), (&json!(1), &json!(0)));
    assert!(emails["oldest_due_age_ms"].is_u64(), "{emails}");
    assert_eq!(queue(&listed, "default")["due"], 1);

    let paused = anchor(&url, &["queues", "pause", "emails", "--by", "ops@test"]);
    assert_eq!(code(&paused), Some(0), "{}", text(&paused));
    assert!(
        text(&paused).contains("queue emails paused"),
        "{}",
        text(&paused)
    );
    let emails = queue(
        &json(&anchor(&url, &["queues", "list", "--json"])),
        "emails",
    );
    assert_eq!(
        (&emails["paused"], &emails["paused_by"]),
        (&json!(true), &json!("ops@test"))
    );
    let out = text(&anchor(&url, &["queues", "list"]));
    assert!(
        out.lines().any(|l| l.starts_with("emails")
            && l.contains("paused since")
            && l.contains("by ops@test")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("default") && l.contains("running")),
        "{out}"
    );

    let again = anchor(&url, &["queues", "pause", "emails"]);
    assert_eq!(code(&again), Some(1), "{}", text(&again));
    assert!(text(&again).contains("paused already"), "{}", text(&again));
    assert!(text(&again).contains("by ops@test"), "{}", text(&again));
    let again = anchor(&url, &["queues", "pause", "emails", "--json"]);
    assert_eq!(code(&again), Some(1));
    let shape = json!({"queue": "emails", "action": "pause", "done": false, "paused": true});
    assert_eq!(json(&again), shape);

    let resumed = anchor(&url, &["queues", "resume", "emails", "--json"]);
    assert_eq!(code(&resumed), Some(0), "{}", text(&resumed));
    let shape = json!({"queue": "emails", "action": "resume", "done": true, "paused": false});
    assert_eq!(json(&resumed), shape);
    let again = anchor(&url, &["queues", "resume", "emails"]);
    assert_eq!(code(&again), Some(1), "{}", text(&again));
    assert!(text(&again).contains("not paused"), "{}", text(&again));

    // Who paused it, by default: the user at the host.
    let by_default = anchor_with(
        &url,
        &["queues", "pause", "emails"],
        &[("USER", "alice"), ("HOSTNAME", "box")],
    );
    assert_eq!(code(&by_default), Some(0), "{}", text(&by_default));
    let emails = queue(
        &json(&anchor(&url, &["queues", "list", "--json"])),
        "emails",
    );
    assert_eq!(emails["paused_by"], "alice@box");

    let bad = anchor(&url, &["queues", "pause", "Bad!"]);
    assert_eq!(code(&bad), Some(2), "{}", text(&bad));
    let rule = anchor_core::QUEUE_NAME_RULE;
    assert!(text(&bad).contains(rule), "{}", text(&bad));
    let down = anchor("postgres://nobody@127.0.0.1:1/none", &["queues", "list"]);
    assert_eq!(code(&down), Some(2), "{}", text(&down));
}

#[tokio::test]
async fn schedules_list_pause_and_resume_by_id_or_task() {
    let (url, client) = setup("cli_schedules").await;
    let a = client
        .schedule(&NIGHTLY, &json!({"customer": "a"}), &[])
        .await;
    let a = a.expect("schedule").get();
    let b = client
        .schedule(&NIGHTLY, &json!({"customer": "b"}), &[])
        .await;
    let b = b.expect("schedule").get();
    let tag = [TaskOverride::unique_tag("hourly")];
    let h = client.schedule(&HOURLY, &json!({}), &tag).await;
    let h = h.expect("schedule").get();
    let list = || json(&anchor(&url, &["schedules", "list", "--json"]));
    let find = |shape: &Value, id: i64| -> Value {
        shape
            .as_array()
            .and_then(|l| l.iter().find(|s| s["id"] == id))
            .unwrap_or_else(|| panic!("no schedule {id} in {shape}"))
            .clone()
    };

    let listed = list();
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
    let nightly = find(&listed, a);
    assert_eq!(nightly["task_name"], "Nightly");
    assert_eq!(nightly["timezone"], "Europe/Berlin");
    assert_eq!(nightly["payload"], json!({"customer": "a"}));
    assert_eq!(
        (&nightly["enabled"], &nightly["disabled_reason"]),
        (&json!(true), &Value::Null)
    );
    assert_eq!(find(&listed, h)["key"], "hourly");
    let out = text(&anchor(&url, &["schedules", "list"]));
    assert!(out.contains("0 3 * * * (Europe/Berlin)"), "{out}");
    assert!(
        out.contains("NEXT FIRE (UTC)") && out.contains("enabled"),
        "{out}"
    );

    // By id: a negative number is the target, not a flag.
    let id_a = a.to_string();
    let paused = anchor(&url, &["schedules", "pause", &id_a]);
    assert_eq!(code(&paused), Some(0), "{}", text(&paused));
    assert!(
        text(&paused).contains(&format!("schedule {a} (Nightly/")),
        "{}",
        text(&paused)
    );
    let nightly = find(&list(), a);
    assert_eq!(
        (&nightly["enabled"], &nightly["disabled_reason"]),
        (&json!(false), &json!("paused"))
    );
    let out = text(&anchor(&url, &["schedules", "list"]));
    assert!(
        out.lines()
            .any(|l| l.starts_with(&id_a) && l.contains("disabled: paused")),
        "{out}"
    );
    let again = anchor(&url, &["schedules", "pause", &id_a]);
    assert_eq!(code(&again), Some(1), "{}", text(&again));
    assert!(text(&again).contains("paused already"), "{}", text(&again));

    // By task name: every schedule of the task; only the ones not paused change.
    let by_task = anchor(&url, &["schedules", "pause", "Nightly", "--json"]);
    assert_eq!(code(&by_task), Some(0), "{}", text(&by_task));
    let shape = json(&by_task);
    assert_eq!(
        (&shape["action"], &shape["done"]),
        (&json!("pause"), &json!(true))
    );
    let mut changed: Vec<(i64, bool)> = shape["schedules"]
        .as_array()
        .expect("schedules")
        .iter()
        .map(|s| (s["id"].as_i64().expect("id"), s["changed"] == true))
        .collect();
    changed.sort();
    let mut expected = vec![(a, false), (b, true)];
    expected.sort();
    assert_eq!(changed, expected, "{shape}");
    assert_eq!(
        find(&list(), h)["enabled"],
        true,
        "another task's schedule is untouched"
    );

    let resumed = anchor(&url, &["schedules", "resume", "Nightly"]);
    assert_eq!(code(&resumed), Some(0), "{}", text(&resumed));
    assert!(
        text(&resumed).contains("resumed: next fire"),
        "{}",
        text(&resumed)
    );
    let listed = list();
    assert!(
        [a, b]
            .iter()
            .all(|id| find(&listed, *id)["enabled"] == true),
        "{listed}"
    );
    let again = anchor(&url, &["schedules", "resume", "Nightly", "--json"]);
    assert_eq!(code(&again), Some(1), "{}", text(&again));
    assert_eq!(json(&again)["done"], false);
    let id_h = h.to_string();
    let resume_h = anchor(&url, &["schedules", "resume", &id_h]);
    assert_eq!(code(&resume_h), Some(1), "{}", text(&resume_h));
    assert!(
        text(&resume_h).contains("it is enabled"),
        "{}",
        text(&resume_h)
    );

    // A schedule whose expression no longer parses cannot be resumed: it is reported, and
    // the task's other schedules are resumed all the same.
    for id in [a, b] {
        let paused = anchor(&url, &["schedules", "pause", &id.to_string()]);
        assert_eq!(code(&paused), Some(0), "{}", text(&paused));
    }
    client
        .pool()
        .get()
        .await
        .expect("a connection")
        .execute(
            "UPDATE anchor.cron_schedules SET expression = 'not cron' WHERE id = $1",
            &[&a],
        )
        .await
        .expect("break schedule a");
    let mixed = anchor(&url, &["schedules", "resume", "Nightly"]);
    assert_eq!(code(&mixed), Some(0), "{}", text(&mixed));
    assert!(
        text(&mixed).contains(&format!("schedule {a} (Nightly/"))
            && text(&mixed).contains("was not resumed:"),
        "{}",
        text(&mixed)
    );
    assert_eq!(find(&list(), b)["enabled"], true, "b is resumed");
    assert_eq!(find(&list(), a)["enabled"], false, "a stays paused");

    for missing in ["-999999", "NoSuchTask"] {
        let none = anchor(&url, &["schedules", "pause", missing]);
        assert_eq!(code(&none), Some(1), "{missing}: {}", text(&none));
        assert!(text(&none).contains("no cron schedule"), "{}", text(&none));
    }
    let none = json(&anchor(&url, &["schedules", "pause", "-999999", "--json"]));
    assert_eq!(
        (&none["done"], &none["schedules"]),
        (&json!(false), &json!([]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_cancel_stops_a_running_task() {
    let (url, client) = setup("cli_cancel").await;
    let noticed = Arc::new(AtomicBool::new(false));
    let mut registry = Registry::new();
    let told = noticed.clone();
    registry.register(&WAITER, move |ctx: TaskContext, _p: Value| {
        let told = told.clone();
        async move {
            ctx.cancelled().await;
            told.store(true, Ordering::SeqCst);
            Err::<(), TaskError>(TaskError::failed("stopped because cancelled"))
        }
    });
    let config = WorkerConfig::default()
        .with_worker_id("cli-worker")
        .with_shutdown_grace(Duration::from_millis(100));
    let worker = Worker::new(client.clone(), registry, config)
        .expect("worker")
        .start();
    let id = client
        .enqueue(&WAITER, &json!({}), &[])
        .await
        .expect("enqueue");
    wait_for_status(&client, id, TaskStatus::Running).await;
    let id_text = id.to_string();

    let running = json(&anchor(
        &url,
        &["tasks", "list", "--status", "running", "--json"],
    ));
    assert_eq!(ids(&running), [id.get()]);
    assert_eq!(running["tasks"][0]["lease"]["owner"], "cli-worker");
    let stats = json(&anchor(&url, &["tasks", "stats", "--json"]));
    assert_eq!(
        stats["running_by_worker"],
        json!([{"worker": "cli-worker", "running": 1}])
    );
    let out = text(&anchor(&url, &["tasks", "stats"]));
    assert!(
        out.lines()
            .any(|l| l.contains("cli-worker") && l.ends_with('1')),
        "{out}"
    );

    let cancelled = anchor(&url, &["tasks", "cancel", &id_text]);
    assert_eq!(code(&cancelled), Some(0), "{}", text(&cancelled));
    assert_eq!(text(&cancelled).trim(), format!("task {id} cancelled"));
    wait("the run to be told", || async {
        noticed.load(Ordering::SeqCst).then_some(())
    })
    .await;
    let task = client.get_task(id).await.expect("get_task").expect("task");
    assert_eq!(task.status, TaskStatus::Cancelled);
    let again = anchor(&url, &["tasks", "cancel", &id_text]);
    assert_eq!(code(&again), Some(1), "{}", text(&again));
    assert!(
        text(&again).contains("it is cancelled; only a pending or running task can be cancelled"),
        "{}",
        text(&again)
    );
    worker.shutdown().await;
}
