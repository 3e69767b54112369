//! `anchor tasks show|retry|cancel|delete` end to end against a throwaway PostgreSQL: text
//! and `--json` output, and the exit codes (0 done, 1 nothing done, 2 connection or schema
//! problems).

use std::process::Output;

use anchor_runtime::{Client, TaskDefinition, TaskOverride};

mod common;
use common::{json, text};

static REPORT: TaskDefinition = TaskDefinition {
    name: "Report",
    retry: None,
    timeout_ms: 60_000,
    cron: None,
    on_failed: Some("ReportFailed"),
    default_params: "{}",
    max_rescues: None,
    queue: anchor_runtime::DEFAULT_QUEUE,
    priority: 0,
};

fn anchor(url: &str, args: &[&str]) -> Output {
    let args: Vec<&str> = std::iter::once("tasks")
        .chain(args.iter().copied())
        .collect();
    common::anchor(url, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_retry_cancel_and_delete_one_task() {
    let db = anchor_testkit::shared()
        .create_database("cli_tasks")
        .await
        .expect("database");
    let client = Client::connect(&db.url).await.expect("client");
    anchor_runtime::migrate(&client).await.expect("migrate");
    let later = [
        TaskOverride::run_after(std::time::Duration::from_secs(3600)),
        TaskOverride::unique_tag("report-2026-12"),
    ];
    let id = client
        .enqueue(&REPORT, &serde_json::json!({"month": "2026-12"}), &later)
        .await
        .expect("enqueue");
    let id = id.to_string();

    let shown = anchor(&db.url, &["show", &id]);
    assert!(shown.status.success(), "{}", text(&shown));
    let out = text(&shown);
    assert!(
        out.contains(&format!("task {id} Report (pending)")),
        "{out}"
    );
    assert!(
        out.contains("unique tag report-2026-12") && out.contains("on failure ReportFailed"),
        "{out}"
    );
    assert!(out.contains("queue default, priority 0"), "{out}");
    let shape = json(&anchor(&db.url, &["show", &id, "--json"]));
    assert_eq!(shape["status"], "pending");
    assert_eq!(shape["payload"]["month"], "2026-12");
    assert_eq!(shape["settings"]["timeout_ms"], 60_000);
    assert_eq!(shape["settings"]["on_failed"], "ReportFailed");
    assert!(shape["settings"]["retry"].is_null());
    assert_eq!(shape["settings"]["queue"], "default");
    assert_eq!(shape["settings"]["priority"], 0);

    // Delayed: a retry makes it due now; then cancel, delete.
    let retried = anchor(&db.url, &["retry", &id]);
    assert!(retried.status.success(), "{}", text(&retried));
    assert!(text(&retried).contains("retried"), "{}", text(&retried));
    let again = anchor(&db.url, &["retry", &id, "--json"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert_eq!(json(&again)["done"], false);
    let refused = anchor(&db.url, &["delete", &id]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused).contains("only a finished"),
        "{}",
        text(&refused)
    );
    let cancelled = anchor(&db.url, &["cancel", &id, "--json"]);
    assert!(cancelled.status.success(), "{}", text(&cancelled));
    assert_eq!(json(&cancelled)["status"], "cancelled");
    let deleted = anchor(&db.url, &["delete", &id]);
    assert!(deleted.status.success(), "{}", text(&deleted));
    let gone = anchor(&db.url, &["show", &id]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        text(&gone).contains(&format!("no task {id}")),
        "{}",
        text(&gone)
    );
}

#[tokio::test]
async fn a_database_that_is_unmigrated_or_down_is_exit_code_2_with_the_fix() {
    let db = anchor_testkit::shared()
        .create_database("cli_unmigrated")
        .await
        .expect("database");
    let unmigrated = anchor(&db.url, &["show", "1"]);
    assert_eq!(unmigrated.status.code(), Some(2), "{}", text(&unmigrated));
    assert!(
        text(&unmigrated).contains("anchor migrate"),
        "{}",
        text(&unmigrated)
    );
    let down = anchor("postgres://nobody@127.0.0.1:1/none", &["show", "1"]);
    assert_eq!(down.status.code(), Some(2), "{}", text(&down));
    let usage = anchor(&db.url, &["show", "not-a-number"]);
    assert_eq!(usage.status.code(), Some(2), "{}", text(&usage));
}
