//! The data templates render from. Everything a template inserts into Rust code is prepared
//! here as a ready Rust token (string literals already escaped, numbers already converted),
//! so templates only arrange code and cannot produce an unescaped string.

use anchor_spec::model::{Spec, Task, DEFAULT_PRIORITY, DEFAULT_QUEUE};
use serde::Serialize;

use crate::names::TaskNames;
use crate::params::ParamsCode;

/// The template context.
#[derive(Debug, Serialize)]
pub(crate) struct Context {
    /// The spec path, as a Rust string literal.
    pub source_lit: String,
    /// The spec path as plain text, for doc comments.
    pub source: String,
    /// typify's parameter types.
    pub param_types: String,
    /// The tasks in declaration order.
    pub tasks: Vec<TaskContext>,
    /// Whether any task has a cron schedule (the runner then has `schedule_…` methods).
    pub has_cron: bool,
}

/// One task, as templates see it.
#[derive(Debug, Serialize)]
pub(crate) struct TaskContext {
    /// The YAML name as plain text (for doc comments).
    pub name: String,
    /// The YAML name as a Rust string literal.
    pub name_lit: String,
    /// The description lines, empty when there is none.
    pub description: Vec<String>,
    pub snake: String,
    pub constant: String,
    pub params_type: String,
    /// True when the template must emit an empty parameter struct.
    pub empty_params: bool,
    /// True when the parameters are the default failure-handler shape `{ taskID }`.
    pub default_failure_params: bool,
    pub retry: Option<RetryContext>,
    pub timeout_ms: u64,
    /// A human-readable timeout for docs (`1h`, `10m`).
    pub timeout_text: String,
    pub cron: Option<CronContext>,
    /// The `onFailed` target: its name literal and its constant's name.
    pub on_failed: Option<OnFailedContext>,
    /// The schema defaults as a JSON object, in a Rust string literal.
    pub default_params_lit: String,
    /// `Some(3)` or `None` as Rust code.
    pub max_rescues: String,
    /// `maxRescues` for docs, when set.
    pub max_rescues_text: Option<u32>,
    /// The queue's name as a Rust string literal.
    pub queue_lit: String,
    /// The priority (0 runs first).
    pub priority: i16,
    /// The queue and priority for docs (`` `emails`, priority 3 ``), when either is not the
    /// default.
    pub queue_text: Option<String>,
    pub is_failure_handler: bool,
}

/// A retry policy as Rust tokens.
#[derive(Debug, Serialize)]
pub(crate) struct RetryContext {
    /// `[300000, 600000]` style list of milliseconds.
    pub intervals_ms: Vec<u64>,
    pub always_retry_on_failure: bool,
    /// `Some(3)` or `None` as Rust code.
    pub max_retries: String,
    /// A sentence fragment for docs: `after 5m, 10m; always retried; at most 3 retries`.
    pub summary: String,
}

/// A cron schedule as Rust tokens.
#[derive(Debug, Serialize)]
pub(crate) struct CronContext {
    pub expression_lit: String,
    /// The expression as plain text for docs.
    pub expression: String,
    /// `Some("Europe/Berlin")` or `None` as Rust code.
    pub timezone: String,
    /// The time zone for docs: the IANA name, or `UTC`.
    pub timezone_text: String,
    /// `Some("{...}")` or `None` as Rust code.
    pub default_params: String,
}

/// The failure handler a task names.
#[derive(Debug, Serialize)]
pub(crate) struct OnFailedContext {
    pub name: String,
    pub name_lit: String,
}

/// The spec path as generated files name it: with `/` separators, so the output is the same
/// whichever operating system ran the generator.
pub(crate) fn display_source(source: &str) -> String {
    source.replace('\\', "/")
}

/// A Rust string literal for `text`, escaped the way the compiler reads it back.
pub(crate) fn rust_str(text: &str) -> String {
    proc_macro2::Literal::string(text).to_string()
}

pub(crate) fn build(spec: &Spec, params: &ParamsCode) -> Context {
    let tasks: Vec<TaskContext> = spec
        .tasks
        .iter()
        .enumerate()
        .map(|(index, task)| task_context(task, params.empty.contains(&index)))
        .collect();
    Context {
        source_lit: rust_str(&display_source(&spec.source)),
        source: display_source(&spec.source),
        param_types: params.types.clone(),
        has_cron: tasks.iter().any(|t| t.cron.is_some()),
        tasks,
    }
}

fn task_context(task: &Task, empty_params: bool) -> TaskContext {
    let names = TaskNames::new(&task.name);
    let defaults_json = serde_json::Value::Object(task.parameters.defaults.clone()).to_string();
    TaskContext {
        name: task.name.clone(),
        name_lit: rust_str(&task.name),
        description: task
            .description
            .as_deref()
            .map(|text| {
                text.trim()
                    .lines()
                    .map(|line| line.replace('\r', "").trim_end().to_string())
                    .collect()
            })
            .unwrap_or_default(),
        snake: names.snake,
        constant: names.constant,
        params_type: names.params_type,
        empty_params,
        default_failure_params: task.parameters.source
            == anchor_spec::model::ParametersSource::DefaultFailureHandler,
        retry: task.retry_policy.as_ref().map(|policy| RetryContext {
            intervals_ms: policy.intervals.iter().map(duration_ms).collect(),
            always_retry_on_failure: policy.always_retry_on_failure,
            max_retries: match policy.max_retries {
                Some(n) => format!("Some({n})"),
                None => "None".into(),
            },
            summary: retry_summary(policy),
        }),
        timeout_ms: duration_ms(&task.timeout),
        timeout_text: anchor_core::format_duration(task.timeout),
        cron: task.cron.as_ref().map(|cron| CronContext {
            expression_lit: rust_str(&cron.expression),
            expression: cron.expression.clone(),
            timezone: match &cron.timezone {
                Some(tz) => format!("Some({})", rust_str(tz)),
                None => "None".into(),
            },
            timezone_text: cron.timezone.clone().unwrap_or_else(|| "UTC".into()),
            default_params: if task.parameters.all_defaultable {
                format!("Some({})", rust_str(&defaults_json))
            } else {
                "None".into()
            },
        }),
        on_failed: task.on_failed.as_ref().map(|name| OnFailedContext {
            name: name.clone(),
            name_lit: rust_str(name),
        }),
        default_params_lit: rust_str(&defaults_json),
        max_rescues: match task.max_rescues {
            Some(n) => format!("Some({n})"),
            None => "None".into(),
        },
        max_rescues_text: task.max_rescues,
        queue_lit: rust_str(&task.queue),
        priority: task.priority,
        queue_text: (task.queue != DEFAULT_QUEUE || task.priority != DEFAULT_PRIORITY)
            .then(|| format!("`{}`, priority {}", task.queue, task.priority)),
        is_failure_handler: task.is_failure_handler,
    }
}

/// Describes a retry policy for the definition's doc comment.
fn retry_summary(policy: &anchor_core::RetryPolicy) -> String {
    let intervals: Vec<String> = policy
        .intervals
        .iter()
        .map(|d| anchor_core::format_duration(*d))
        .collect();
    let mut summary = format!("waits {}", intervals.join(", "));
    if policy.always_retry_on_failure {
        summary.push_str("; always retried on failure");
    }
    match policy.max_retries {
        Some(n) => summary.push_str(&format!("; at most {n} retries")),
        None if policy.always_retry_on_failure => summary.push_str("; until it succeeds"),
        None => {
            summary.push_str("; never retried (neither always_retry_on_failure nor max_retries)")
        }
    }
    summary
}

/// Milliseconds, saturating at `u64::MAX` (no validated duration comes near it).
fn duration_ms(duration: &std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn string_literals_escape_quotes_and_newlines() {
        assert_eq!(rust_str(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(rust_str("a\nb"), r#""a\nb""#);
    }

    #[test]
    fn spec_paths_use_forward_slashes() {
        assert_eq!(display_source("api\\tasks.yaml"), "api/tasks.yaml");
        assert_eq!(display_source("api/tasks.yaml"), "api/tasks.yaml");
    }

    #[test]
    fn durations_read_like_yaml() {
        assert_eq!(
            anchor_core::format_duration(Duration::from_secs(3600)),
            "1h"
        );
        assert_eq!(
            anchor_core::format_duration(Duration::from_secs(600)),
            "10m"
        );
        assert_eq!(anchor_core::format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(
            anchor_core::format_duration(Duration::from_millis(1500)),
            "1500ms"
        );
        assert_eq!(duration_ms(&Duration::from_secs(300)), 300_000);
    }
}
