//! Behaviour of the compiled golden modules: the type mapping of `docs/generate.md` (each field's Rust
//! type is pinned by a typed binding, so a wrong mapping fails to compile), serde names,
//! defaults and optional fields, the definitions table, and executors routed through
//! `register`.

use std::sync::Arc;
use std::time::Duration;

use anchor_runtime::chrono::{DateTime, NaiveDate, TimeZone, Utc};
use anchor_runtime::{Registry, TaskContext, TaskError, TaskId};
use anchor_testgen::codegen::{required_defaults, seed, types};
use anchor_testgen::seed_executors::SeedExecutor;
use serde_json::{json, Map, Value};

fn full_payload() -> Value {
    json!({
        "smallInt": 7,
        "bigInt": 9_000_000_000i64,
        "defaultInt": -3,
        "ratio": 0.5,
        "amount": 12.25,
        "title": "hello",
        "type": "kind",
        "status": "in-progress",
        "address": { "street": "Main St 1", "zipCode": "10115" },
        "lines": [ { "sku": "A-1", "quantity": 2 }, { "sku": "B-2", "quantity": 1 } ],
        "tags": ["x", "y"],
        "day": "2024-05-01",
        "at": "2024-05-01T12:30:00Z",
        "metadata": { "anything": [1, 2, 3] },
        "note": "optional",
        "retries": 5,
        "level": "ops",
        "enabled": false,
        "priority": "high"
    })
}

#[test]
fn every_spec_type_mapping_row_has_the_documented_rust_type() {
    let p: types::MapTypesParameters = serde_json::from_value(full_payload()).unwrap();
    // integer + int32 → i32; int64 and no format → i64.
    let small: i32 = p.small_int;
    let big: i64 = p.big_int;
    let default_int: i64 = p.default_int;
    // number + float → f32, otherwise f64.
    let ratio: f32 = p.ratio;
    let amount: f64 = p.amount;
    // string → String; a keyword property becomes `type_`.
    let title: String = p.title.clone();
    let kind: Option<String> = p.type_.clone();
    // enum → Rust enum with serde renames.
    let status: types::MapTypesParametersStatus = p.status;
    // nested object → struct; array of objects → Vec<struct>; array → Vec<T>.
    let street: &String = &p.address.street;
    let zip: &Option<String> = &p.address.zip_code;
    let lines: &Vec<types::MapTypesParametersLinesItem> = &p.lines;
    let tags: &Vec<String> = &p.tags;
    // date → chrono::NaiveDate; date-time → chrono::DateTime<Utc>.
    let day: NaiveDate = p.day;
    let at: DateTime<Utc> = p.at;
    // object without properties → serde_json::Map<String, Value>.
    let metadata: &Map<String, Value> = &p.metadata;
    // optional → Option<T>.
    let note: &Option<String> = &p.note;

    assert_eq!((small, big, default_int), (7, 9_000_000_000, -3));
    assert_eq!((ratio, amount), (0.5, 12.25));
    assert_eq!((title.as_str(), kind.as_deref()), ("hello", Some("kind")));
    assert_eq!(status, types::MapTypesParametersStatus::InProgress);
    assert_eq!(
        (street.as_str(), zip.as_deref()),
        ("Main St 1", Some("10115"))
    );
    assert_eq!(lines[0].sku, "A-1");
    let quantity: i32 = lines[0].quantity;
    assert_eq!(quantity, 2);
    assert_eq!(tags, &vec!["x".to_string(), "y".to_string()]);
    assert_eq!(day, NaiveDate::from_ymd_opt(2024, 5, 1).unwrap());
    assert_eq!(at, Utc.with_ymd_and_hms(2024, 5, 1, 12, 30, 0).unwrap());
    assert_eq!(metadata["anything"], json!([1, 2, 3]));
    assert_eq!(note.as_deref(), Some("optional"));
}

#[test]
fn serialising_uses_the_schema_names_and_round_trips() {
    let payload = full_payload();
    let p: types::MapTypesParameters = serde_json::from_value(payload.clone()).unwrap();
    let back = serde_json::to_value(&p).unwrap();
    assert_eq!(back, payload);
    let again: types::MapTypesParameters = serde_json::from_value(back).unwrap();
    assert_eq!(again, p);
}

#[test]
fn defaults_fill_missing_fields_and_none_is_not_serialised() {
    let mut payload = full_payload();
    let object = payload.as_object_mut().unwrap();
    for key in [
        "retries", "level", "enabled", "priority", "note", "type", "metadata",
    ] {
        object.remove(key);
    }
    object["address"].as_object_mut().unwrap().remove("zipCode");
    let p: types::MapTypesParameters = serde_json::from_value(payload).unwrap();
    let retries: i32 = p.retries;
    assert_eq!(retries, 3);
    assert_eq!(p.level, "admin");
    assert!(p.enabled);
    assert_eq!(p.priority, types::MapTypesParametersPriority::Medium);
    assert_eq!(p.note, None);
    assert_eq!(p.address.zip_code, None);

    let out = serde_json::to_value(&p).unwrap();
    assert!(out.get("note").is_none(), "{out}");
    assert!(out.get("type").is_none(), "{out}");
    assert!(out["address"].get("zipCode").is_none(), "{out}");
    // Defaulted fields are always written, so workers see the effective value.
    assert_eq!(out["retries"], json!(3));
    assert_eq!(out["priority"], json!("medium"));
}

#[test]
fn required_fields_with_a_default_decode_to_it_when_absent() {
    use required_defaults::{
        RequiredDefaultsParameters as Params, RequiredDefaultsParametersPriority as Priority,
    };
    // Only what has no default: `userId` and the nested `window.unit`.
    let p: Params =
        serde_json::from_value(json!({ "userId": 7, "window": { "unit": "minutes" } })).unwrap();
    let retries: i32 = p.retries;
    let total: i64 = p.total;
    assert_eq!((p.user_id, retries, total), (7, 3, -9_000_000_000));
    assert_eq!(p.level, "admin");
    assert!(p.enabled);
    assert!(!p.quiet);
    assert_eq!(p.priority, Priority::Medium);
    assert_eq!(p.ratio, 0.25);
    assert_eq!(p.tags, ["nightly", "batch"]);
    assert_eq!(p.since, NaiveDate::from_ymd_opt(2024, 5, 1).unwrap());
    let size: i32 = p.window.size;
    assert_eq!((size, p.window.unit.as_str()), (10, "minutes"));
    assert_eq!(p.note, "none");

    // Defaulted fields are written out, so a worker sees the effective value.
    let out = serde_json::to_value(&p).unwrap();
    assert_eq!(out["retries"], json!(3));
    assert_eq!(out["priority"], json!("medium"));
    assert_eq!(out["window"], json!({ "size": 10, "unit": "minutes" }));

    // A value that is sent wins over the default; a field without one is still required.
    let sent: Params = serde_json::from_value(
        json!({ "userId": 1, "retries": 9, "window": { "unit": "s", "size": 2 } }),
    )
    .unwrap();
    assert_eq!((sent.retries, sent.window.size), (9, 2));
    let err = serde_json::from_value::<Params>(json!({ "window": { "unit": "s" } })).unwrap_err();
    assert!(err.to_string().contains("userId"), "{err}");
    let err = serde_json::from_value::<Params>(json!({ "userId": 1, "window": {} })).unwrap_err();
    assert!(err.to_string().contains("unit"), "{err}");
}

#[test]
fn invalid_payloads_are_rejected_with_the_field_named() {
    let mut missing = full_payload();
    missing.as_object_mut().unwrap().remove("smallInt");
    let err = serde_json::from_value::<types::MapTypesParameters>(missing).unwrap_err();
    assert!(err.to_string().contains("smallInt"), "{err}");

    let mut bad_enum = full_payload();
    bad_enum["status"] = json!("paused");
    let err = serde_json::from_value::<types::MapTypesParameters>(bad_enum).unwrap_err();
    assert!(err.to_string().contains("paused"), "{err}");

    let mut too_big = full_payload();
    too_big["smallInt"] = json!(5_000_000_000i64);
    assert!(serde_json::from_value::<types::MapTypesParameters>(too_big).is_err());

    let mut bad_date = full_payload();
    bad_date["day"] = json!("2024-13-01");
    assert!(serde_json::from_value::<types::MapTypesParameters>(bad_date).is_err());
}

#[test]
fn failure_handlers_without_parameters_get_task_id_and_others_an_empty_struct() {
    let handler: seed::HandleOrderFailureParameters =
        serde_json::from_value(json!({ "taskID": 9_000_000_000i64 })).unwrap();
    // The failed task's id, typed as one: it goes to `Client::get_task` as it is.
    let id: TaskId = handler.task_id;
    assert_eq!(id.get(), 9_000_000_000);
    assert_eq!(
        serde_json::to_value(&handler).unwrap(),
        json!({ "taskID": 9_000_000_000i64 })
    );

    let empty = seed::CleanupParameters {};
    assert_eq!(serde_json::to_value(&empty).unwrap(), json!({}));
    let _: seed::CleanupParameters = serde_json::from_value(json!({})).unwrap();
}

#[test]
fn definitions_carry_the_yaml_defaults() {
    use seed::definitions as d;
    let email = d::SEND_EMAIL;
    assert_eq!(email.name, "SendEmail");
    let retry = email.retry.unwrap();
    assert_eq!(retry.intervals_ms, &[300_000]);
    assert!(retry.always_retry_on_failure);
    assert_eq!(retry.max_retries, None);
    assert_eq!(email.timeout_ms, 3_600_000);
    assert_eq!(email.cron, None);
    assert_eq!(email.on_failed, None);

    let order = d::PROCESS_ORDER;
    assert_eq!(order.timeout_ms, 600_000);
    assert_eq!(order.on_failed, Some("HandleOrderFailure"));
    assert_eq!(d::HANDLE_ORDER_FAILURE.retry, None);

    let notify = d::SEND_NOTIFICATION.retry.unwrap();
    assert_eq!(notify.intervals_ms, &[60_000, 120_000, 240_000, 480_000]);
    assert_eq!(notify.max_retries, Some(4));

    assert_eq!(
        d::ESCALATE_FAILED_NOTIFICATION.default_params,
        r#"{"escalationLevel":"admin"}"#
    );

    let reports = d::PROCESS_DAILY_REPORTS.cron.unwrap();
    assert_eq!(reports.expression, "0 0 1 * * *");
    assert_eq!(reports.timezone, None);
    assert_eq!(
        reports.default_params, None,
        "`date` is required without a default"
    );

    let import = d::IMPORT_CATALOG_FAILED.cron.unwrap();
    assert_eq!(import.expression, "*/15 * * * *");
    assert_eq!(import.timezone, Some("Europe/Berlin"));
    assert_eq!(import.default_params, Some(r#"{"batchSize":100}"#));
}

#[test]
fn the_catalog_lists_every_task_in_order_with_its_name_constant() {
    let names: Vec<&str> = seed::TASKS.iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "SendEmail",
            "ProcessDailyReports",
            "ProcessOrder",
            "HandleOrderFailure",
            "SendNotification",
            "EscalateFailedNotification",
            "deleteOpaqueKey",
            "onDeleteOpaqueKeyFailed",
            "import_catalog_failed",
            "Cleanup",
        ]
    );
    assert_eq!(seed::task_names::DELETE_OPAQUE_KEY, "deleteOpaqueKey");
    assert_eq!(
        seed::task_names::IMPORT_CATALOG_FAILED,
        "import_catalog_failed"
    );
}

#[test]
fn register_routes_every_task_name() {
    let mut registry = Registry::new();
    seed::register(&mut registry, Arc::new(SeedExecutor::default()));
    let mut names = registry.task_names();
    names.sort_unstable();
    let mut expected: Vec<&str> = seed::TASKS.iter().map(|t| t.name).collect();
    expected.sort_unstable();
    assert_eq!(names, expected);
    let def = registry.definition("deleteOpaqueKey").unwrap();
    assert_eq!(def.on_failed, Some("onDeleteOpaqueKeyFailed"));
}

#[tokio::test]
async fn executors_written_with_async_fn_run_with_typed_parameters() {
    use seed::Executor as _;
    let executor = SeedExecutor::default();
    let ctx = TaskContext::new(TaskId::new(11), "SendEmail", 1, Duration::from_secs(60));
    let mut variables = Map::new();
    variables.insert("name".into(), json!("Ada"));
    executor
        .execute_send_email(
            &ctx,
            seed::SendEmailParameters {
                user_id: 7,
                template_id: "welcome".into(),
                variables,
            },
        )
        .await
        .unwrap();
    let fatal = executor
        .execute_process_order(&ctx, seed::ProcessOrderParameters { order_id: 0 })
        .await
        .unwrap_err();
    assert!(fatal.is_fatal());
    let later = executor
        .execute_send_notification(
            &ctx,
            seed::SendNotificationParameters {
                user_id: 1,
                message: "hi".into(),
                priority: Some(seed::SendNotificationParametersPriority::Low),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(later, TaskError::RetryWithoutErrorEvent));
    let log = executor.log.lock().unwrap().clone();
    assert_eq!(log, ["task 11: email welcome to user 7 (hello Ada)"]);
}

#[test]
fn each_parameter_type_names_its_own_task_s_definition() {
    use anchor_runtime::TaskParameters;
    use seed::definitions as d;
    assert_eq!(
        <seed::SendEmailParameters as TaskParameters>::DEFINITION,
        &d::SEND_EMAIL
    );
    assert_eq!(
        <seed::HandleOrderFailureParameters as TaskParameters>::DEFINITION.name,
        "HandleOrderFailure"
    );
    assert_eq!(
        <seed::CleanupParameters as TaskParameters>::DEFINITION.name,
        "Cleanup"
    );
    // Every task of the module, through its parameter type, is the definition in TASKS.
    let mut registry = Registry::new();
    seed::register(&mut registry, Arc::new(SeedExecutor::default()));
    for def in seed::TASKS {
        assert_eq!(
            registry.definition(def.name),
            Some(def),
            "{} is registered with its own definition",
            def.name
        );
    }
}
