//! The validated model that the generator and the runtime defaults are built from.

use std::time::Duration;

use anchor_spec::model::{
    ParametersSource, Spec, DEFAULT_PRIORITY, DEFAULT_QUEUE, DEFAULT_TIMEOUT, LOWEST_PRIORITY,
    MAX_QUEUE_NAME_LEN,
};
use serde_json::json;

fn load(file: &str) -> Spec {
    let path = format!("{}/../testdata/valid/{file}", env!("CARGO_MANIFEST_DIR"));
    let outcome = anchor_spec::load(&path).expect("fixture is readable");
    assert!(!outcome.has_errors(), "{file}: {:?}", outcome.diagnostics);
    outcome.spec.expect("a valid file has a model")
}

#[test]
fn default_failure_handler_gets_int64_task_id() {
    let spec = load("delete-opaque-key.yaml");
    let handler = &spec.tasks[1];
    assert_eq!(handler.name, "onDeleteOpaqueKeyFailed");
    assert!(handler.is_failure_handler);
    assert_eq!(
        handler.parameters.source,
        ParametersSource::DefaultFailureHandler
    );
    assert_eq!(
        handler.parameters.schema["properties"]["taskID"]["format"],
        "int64"
    );
    assert_eq!(handler.parameters.schema["required"], json!(["taskID"]));
    assert!(!handler.parameters.all_defaultable);
    let task = &spec.tasks[0];
    assert_eq!(task.on_failed.as_deref(), Some("onDeleteOpaqueKeyFailed"));
    assert!(!task.is_failure_handler);
    assert_eq!(task.parameters.source, ParametersSource::Declared);
    let retry = task.retry_policy.as_ref().expect("retry policy");
    assert_eq!(retry.intervals, [Duration::from_secs(30 * 60)]);
    assert!(retry.always_retry_on_failure);
    assert_eq!(retry.max_retries, None);
    assert_eq!(task.timeout, DEFAULT_TIMEOUT);
    assert!(spec.source.ends_with("delete-opaque-key.yaml"));
}

#[test]
fn declared_parameters_keep_schema_defaults_and_order() {
    let spec = load("all-features.yaml");
    let import = &spec.tasks[0];
    let props = import.parameters.schema["properties"]
        .as_object()
        .expect("properties");
    let names: Vec<&str> = props.keys().map(String::as_str).collect();
    assert_eq!(&names[..3], ["feedId", "batch", "attempt"]);
    assert_eq!(
        import.parameters.defaults,
        json!({"batch": 100, "ratio": 0.5, "dryRun": false, "mode": "incremental", "tags": ["catalog", "nightly"]})
            .as_object()
            .cloned()
            .expect("object")
    );
    assert!(!import.parameters.all_defaultable);
    assert_eq!(import.timeout, Duration::from_secs(90 * 60));
    let retry = import.retry_policy.as_ref().expect("retry policy");
    assert_eq!(retry.intervals.len(), 3);
    assert_eq!(retry.max_retries, Some(5));
    assert_eq!(import.max_rescues, Some(3));
    assert_eq!(import.queue, "catalog-imports");
    assert_eq!(import.priority, 5);

    let handler = &spec.tasks[1];
    assert!(handler.is_failure_handler);
    assert_eq!(handler.max_rescues, None);
    assert_eq!(handler.queue, DEFAULT_QUEUE);
    assert_eq!(handler.priority, 0);
    assert_eq!(handler.parameters.source, ParametersSource::Declared);

    let digest = &spec.tasks[2];
    assert!(digest.parameters.all_defaultable);
    let cron = digest.cron.as_ref().expect("cron");
    assert_eq!(cron.expression, "30 6 * * MON-FRI");
    assert_eq!(cron.timezone.as_deref(), Some("America/New_York"));
    assert_eq!((digest.queue.as_str(), digest.priority), ("reports", 9));

    let empty = &spec.tasks[3];
    assert!(empty.parameters.all_defaultable);
    assert!(empty.description.is_none());
}

#[test]
fn tasks_without_parameters_get_an_empty_object() {
    let spec = load("parameter-types.yaml");
    let long = spec
        .tasks
        .iter()
        .find(|t| t.name == "LongRunningTask")
        .expect("task");
    assert_eq!(long.parameters.source, ParametersSource::Empty);
    assert_eq!(
        long.parameters.schema,
        json!({"type": "object", "properties": {}})
    );
    assert!(long.parameters.all_defaultable);
    assert_eq!(long.timeout, Duration::from_secs(2 * 3600));
}

#[test]
fn queue_and_priority_default_and_accept_their_bounds() {
    let longest = "q".repeat(MAX_QUEUE_NAME_LEN);
    let yaml = format!(
        "tasks:\n  - name: Plain\n  - name: First\n    queue: a\n    priority: 0\n  - name: Last\n    queue: {longest}\n    priority: 9\n  - name: Mixed\n    queue: bulk-mail_2\n"
    );
    let outcome = anchor_spec::check("t.yaml", &yaml);
    assert!(!outcome.has_errors(), "{:#?}", outcome.diagnostics);
    let spec = outcome.spec.expect("model");
    let got: Vec<(&str, i16)> = spec
        .tasks
        .iter()
        .map(|t| (t.queue.as_str(), t.priority))
        .collect();
    assert_eq!(
        got,
        [
            (DEFAULT_QUEUE, DEFAULT_PRIORITY),
            ("a", 0),
            (longest.as_str(), LOWEST_PRIORITY),
            ("bulk-mail_2", DEFAULT_PRIORITY),
        ]
    );
    let too_long = format!("tasks:\n  - name: A\n    queue: {longest}q\n");
    let outcome = anchor_spec::check("t.yaml", &too_long);
    assert_eq!(outcome.error_count(), 1, "{:#?}", outcome.diagnostics);
}

#[test]
fn warnings_keep_the_model() {
    let outcome = anchor_spec::check(
        "t.yaml",
        "tasks:\n  - name: A\n    retryPolicy:\n      interval: 1m\n",
    );
    assert_eq!(outcome.warning_count(), 1);
    assert!(outcome.spec.is_some());
}

#[test]
fn all_problems_are_reported_in_one_run() {
    let yaml = "tasks:\n  - name: a-b\n    timeout: 5\n    retryPolicy:\n      interval: x\n    events:\n      onFailed: Nope\n";
    let outcome = anchor_spec::check("t.yaml", yaml);
    let lines: Vec<usize> = outcome.diagnostics.iter().map(|d| d.line).collect();
    assert_eq!(lines, [2, 3, 5, 7], "{:#?}", outcome.diagnostics);
}

#[test]
fn missing_file_is_a_load_error() {
    assert!(anchor_spec::load("/nonexistent/tasks.yaml").is_err());
}

#[test]
fn json_diagnostics_have_the_documented_fields() {
    let outcome = anchor_spec::check("t.yaml", "tasks:\n  - name: A\n    timout: 5m\n");
    let value = serde_json::to_value(&outcome.diagnostics).expect("serialisable");
    assert_eq!(
        value,
        json!([{
            "severity": "error",
            "file": "t.yaml",
            "line": 3,
            "column": 5,
            "message": "unknown key `timout` in task `A`",
            "hint": "did you mean `timeout`?"
        }])
    );
}

#[test]
fn top_level_x_keys_hold_shared_anchors() {
    let yaml = "\
x-retry: &defaultRetry
  interval: 1m,5m
  always_retry_on_failure: true
tasks:
  - name: SyncInventory
    retryPolicy: *defaultRetry
  - name: SyncPrices
    retryPolicy: *defaultRetry
";
    let outcome = anchor_spec::check("t.yaml", yaml);
    assert!(outcome.diagnostics.is_empty(), "{:?}", outcome.diagnostics);
    let spec = outcome.spec.expect("valid");
    assert_eq!(spec.tasks[0].retry_policy, spec.tasks[1].retry_policy);
    assert_eq!(
        spec.tasks[1]
            .retry_policy
            .as_ref()
            .map(|p| p.intervals.len()),
        Some(2)
    );
}
