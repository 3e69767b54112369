//! From the YAML tree to the validated model, in two steps (STYLE §2): first the tree is read
//! into raw structs that keep each value's node (so every later message can point at it),
//! reporting wrong shapes and unknown keys; then the rules that span tasks are checked and,
//! when nothing is wrong, the model is built.

use std::collections::HashMap;
use std::time::Duration;

use anchor_core::cron::{parse_timezone, CronExpr};
use anchor_core::{parse_duration, parse_intervals, IntervalError, RetryPolicy, MAX_DURATION};
use heck::ToSnakeCase;
use serde_json::{json, Map, Value};

use crate::model::{
    CronJob, Parameters, ParametersSource, Spec, Task, DEFAULT_PRIORITY, DEFAULT_QUEUE,
    DEFAULT_TIMEOUT, LOWEST_PRIORITY, MAX_QUEUE_NAME_LEN, MAX_RESCUES_LIMIT,
};
use crate::report::{did_you_mean, hint_did_you_mean, Reporter};
use crate::schema::{self, Checked, Property};
use crate::yaml::{Node, NodeKind, Pos, Scalar};
use anchor_core::is_queue_char;

const TOP_KEYS: &[&str] = &["tasks"];
const TASK_KEYS: &[&str] = &[
    "name",
    "description",
    "parameters",
    "retryPolicy",
    "cronjob",
    "events",
    "timeout",
    "maxRescues",
    "queue",
    "priority",
];
const RETRY_KEYS: &[&str] = &["interval", "always_retry_on_failure", "max_retries"];
const CRON_KEYS: &[&str] = &["cronExpression", "timezone"];
const EVENT_KEYS: &[&str] = &["onFailed"];

/// Where a key that is misplaced belongs, for a hint such as "`interval` belongs under
/// `retryPolicy:`".
fn home_of(key: &str) -> Option<&'static str> {
    if RETRY_KEYS.contains(&key) {
        Some("`retryPolicy:`")
    } else if CRON_KEYS.contains(&key) {
        Some("`cronjob:`")
    } else if EVENT_KEYS.contains(&key) {
        Some("`events:`")
    } else if TASK_KEYS.contains(&key) {
        Some("a task (`- name: ...`)")
    } else {
        None
    }
}

/// The failure-handler schema a task gets when it is an `onFailed` target without
/// `parameters` (`taskID` is an int64: a `TaskId` is 64-bit).
pub fn default_failure_handler_schema() -> Value {
    json!({
        "type": "object",
        "required": ["taskID"],
        "properties": {
            "taskID": {
                "type": "integer",
                "format": "int64",
                "description": "The ID of the task that triggered this event"
            }
        }
    })
}

/// A string value with the node it came from.
struct Text<'n> {
    node: &'n Node,
    value: String,
}

struct RawRetry<'n> {
    key: &'n Node,
    intervals: Option<Vec<Duration>>,
    always: bool,
    max_retries: Option<u32>,
    complete: bool,
}

struct RawCron<'n> {
    key: &'n Node,
    expression: Option<Text<'n>>,
    timezone: Option<String>,
    complete: bool,
}

struct RawTask<'n> {
    node: &'n Node,
    label: String,
    name: Option<Text<'n>>,
    description: Option<String>,
    parameters: Option<(&'n Node, Option<Checked>)>,
    retry: Option<RawRetry<'n>>,
    cron: Option<RawCron<'n>>,
    on_failed: Option<Text<'n>>,
    timeout: Option<Duration>,
    max_rescues: Option<u32>,
    queue: Option<String>,
    priority: Option<i16>,
}

/// The known entries of a mapping: key name, key node, value node.
type Entries<'n> = Vec<(&'static str, &'n Node, &'n Node)>;

/// Reads the keys of a mapping, reporting a non-mapping (an empty value at its `key`),
/// duplicate keys and unknown keys. Returns the known keys with their key and value nodes
/// (first occurrence only), and the keys that unknown keys were probably meant to be, so a
/// "missing `interval`" error is not added to "unknown key `intervall`; did you mean
/// `interval`?".
fn fields_and_guesses<'n>(
    r: &mut Reporter<'_>,
    node: &'n Node,
    what: &str,
    allowed: &[&'static str],
    key: Option<&Node>,
) -> Option<(Entries<'n>, Vec<&'static str>)> {
    let Some(entries) = node.as_map() else {
        if let (Some(key), Some(Scalar::Null)) = (key, node.as_scalar()) {
            let expected = allowed
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            r.error_at(
                key,
                format!("{what} is empty"),
                Some(format!(
                    "give it the keys it needs ({expected}), or remove it"
                )),
            );
            return None;
        }
        let expected = allowed
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        r.error_at(
            node,
            format!("{what} must be a mapping, found {}", node.kind_name()),
            Some(format!("it takes the keys {expected}")),
        );
        return None;
    };
    let mut out: Entries<'n> = Vec::new();
    let mut guesses: Vec<&'static str> = Vec::new();
    for (key, value) in entries {
        let Some(name) = key.scalar_text() else {
            r.error_at(
                key,
                format!(
                    "keys in {what} must be plain names, found {}",
                    key.kind_name()
                ),
                None,
            );
            continue;
        };
        if let Some(known) = allowed.iter().find(|k| **k == name) {
            if let Some((_, first, _)) = out.iter().find(|(k, _, _)| k == known) {
                r.error_at(
                    key,
                    format!(
                        "duplicate key `{name}` in {what} (first written on line {})",
                        first.span.start.line
                    ),
                    Some("remove one of them; YAML keeps only one".into()),
                );
                continue;
            }
            out.push((known, key, value));
            continue;
        }
        // Top-level `x-...` keys are free for YAML anchors shared by several tasks, as in
        // docker-compose files.
        if allowed == TOP_KEYS && name.starts_with("x-") {
            continue;
        }
        if name == "<<" {
            // Whatever the merge would have supplied is not reported missing as well.
            guesses.extend(allowed.iter().copied());
            r.error_at(
                key,
                format!("merge keys (`<<`) are not supported in {what}"),
                Some("alias the whole value instead, e.g. `retryPolicy: *defaultRetry` with `x-retry: &defaultRetry {...}` at the top level".into()),
            );
            continue;
        }
        // A key of another level, written exactly, belongs there: `maxRescues` under
        // `retryPolicy` is not a misspelt `max_retries`.
        let home = home_of(name);
        let guess = if home.is_some() {
            None
        } else {
            did_you_mean(name, allowed.iter().copied())
        };
        guesses.extend(guess);
        let hint = guess
            .map(|g| format!("did you mean `{g}`?"))
            .or_else(|| home.map(|home| format!("`{name}` belongs under {home}")))
            .or_else(|| {
                Some(format!(
                    "{what} takes {}",
                    allowed
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            });
        r.error_at(key, format!("unknown key `{name}` in {what}"), hint);
    }
    Some((out, guesses))
}

/// A text value: strings, and the source text of numbers when `numbers_as_text` (so a
/// `timeout: 5` gets the duration parser's "unit is missing" message).
fn text<'n>(r: &mut Reporter<'_>, node: &'n Node, what: &str, example: &str) -> Option<Text<'n>> {
    match &node.kind {
        NodeKind::Scalar {
            value: Scalar::Str(s),
            ..
        } => Some(Text {
            node,
            value: s.clone(),
        }),
        NodeKind::Scalar {
            value: Scalar::Null,
            ..
        } => {
            r.error_at(
                node,
                format!("{what} is empty"),
                Some(format!("write e.g. `{example}`")),
            );
            None
        }
        _ => {
            r.error_at(
                node,
                format!("{what} must be text, found {}", node.kind_name()),
                Some(format!("write e.g. `{example}`")),
            );
            None
        }
    }
}

/// A duration value (`timeout`, `interval`): the text of a string or a number.
fn duration_text<'n>(r: &mut Reporter<'_>, node: &'n Node, what: &str) -> Option<Text<'n>> {
    match &node.kind {
        NodeKind::Scalar {
            value: Scalar::Int(_) | Scalar::Float(_),
            text,
            ..
        } => Some(Text {
            node,
            value: text.clone(),
        }),
        _ => text(r, node, what, "10m"),
    }
}

/// [`MAX_DURATION`] in whole days, as messages name it.
fn max_days() -> u64 {
    MAX_DURATION.as_secs() / 86_400
}

/// The fix for a duration past [`MAX_DURATION`].
fn limit_hint() -> String {
    format!(
        "write at most `{}d` (ten years): every deadline anchor computes from a duration must fit PostgreSQL's and chrono's time ranges",
        max_days()
    )
}

/// The source position of the character `offset` bytes into a scalar's text, when it can be
/// known exactly; otherwise the scalar's start.
fn pos_in(node: &Node, text: &str, offset: usize, len: usize) -> (Pos, usize) {
    if !node.offsets_are_exact() || offset > text.len() {
        return (node.span.start, node.span.width());
    }
    let start = node.text_start();
    let before = text.get(..offset).map_or(0, |s| s.chars().count());
    let width = text
        .get(offset..(offset + len).min(text.len()))
        .map_or(1, |s| s.chars().count().max(1));
    (
        Pos {
            line: start.line,
            column: start.column + before,
        },
        width,
    )
}

fn read_retry<'n>(
    r: &mut Reporter<'_>,
    key: &'n Node,
    node: &'n Node,
    label: &str,
) -> Option<RawRetry<'n>> {
    let what = format!("`retryPolicy` of {label}");
    let (entries, guesses) = fields_and_guesses(r, node, &what, RETRY_KEYS, Some(key))?;
    let mut raw = RawRetry {
        key,
        intervals: None,
        always: false,
        max_retries: None,
        complete: true,
    };
    for (name, _, value) in &entries {
        match *name {
            "interval" => {
                let Some(t) = duration_text(r, value, &format!("`interval` in {what}")) else {
                    raw.complete = false;
                    continue;
                };
                match parse_intervals(&t.value) {
                    Ok(list) => {
                        let mut offset = 0;
                        for (index, (item, d)) in t.value.split(',').zip(&list).enumerate() {
                            if *d > MAX_DURATION {
                                raw.complete = false;
                                let (pos, width) = pos_in(value, &t.value, offset, item.len());
                                r.error_pos(
                                    pos,
                                    width,
                                    format!(
                                        "`interval` {}`{}` in {what} is longer than the {}-day limit",
                                        if list.len() > 1 {
                                            format!("item {} ", index + 1)
                                        } else {
                                            String::new()
                                        },
                                        item.trim(),
                                        max_days()
                                    ),
                                    Some(limit_hint()),
                                );
                            }
                            offset += item.len() + 1;
                        }
                        raw.intervals = Some(list);
                    }
                    Err(err) => {
                        raw.complete = false;
                        let index = match &err {
                            IntervalError::EmptyItem { index }
                            | IntervalError::BadItem { index, .. } => *index,
                        };
                        let offset: usize =
                            t.value.split(',').take(index).map(|s| s.len() + 1).sum();
                        let len = t.value.split(',').nth(index).map_or(0, str::len);
                        let (pos, width) = pos_in(value, &t.value, offset, len);
                        let message = match &err {
                            IntervalError::EmptyItem { .. } => {
                                format!("bad `interval` in {what}: {err}")
                            }
                            IntervalError::BadItem { source, .. } => format!(
                                "bad `interval` in {what}: item {} `{}` is not a duration: {}",
                                index + 1,
                                source.input.trim(),
                                source.reason
                            ),
                        };
                        r.error_pos(
                            pos,
                            width,
                            message,
                            Some("write one duration (`30m`) or a comma list (`1m,2m,4m`)".into()),
                        );
                    }
                }
            }
            "always_retry_on_failure" => match value.as_scalar() {
                Some(Scalar::Bool(b)) => raw.always = *b,
                _ => {
                    raw.complete = false;
                    let found = value
                        .scalar_text()
                        .map_or_else(|| value.kind_name().to_string(), |t| format!("`{t}`"));
                    r.error_at(
                        value,
                        format!("`always_retry_on_failure` in {what} must be `true` or `false`, found {found}"),
                        Some("write `true` or `false` without quotes".into()),
                    );
                }
            },
            "max_retries" => match value.as_scalar() {
                Some(Scalar::Int(n)) if *n >= 0 => match u32::try_from(*n) {
                    Ok(n) => raw.max_retries = Some(n),
                    Err(_) => {
                        raw.complete = false;
                        r.error_at(value, format!("`max_retries` in {what} is too large ({n})"), Some(format!("use at most {}, or leave `max_retries` out with `always_retry_on_failure: true` to retry until success", u32::MAX)));
                    }
                },
                _ => {
                    raw.complete = false;
                    let found = value
                        .scalar_text()
                        .map_or_else(|| value.kind_name().to_string(), |t| format!("`{t}`"));
                    r.error_at(
                        value,
                        format!("`max_retries` in {what} must be a whole number of 0 or more, found {found}"),
                        Some("write e.g. `max_retries: 3` (without quotes)".into()),
                    );
                }
            },
            _ => {}
        }
    }
    if raw.complete && raw.intervals.is_none() {
        raw.complete = false;
        if guesses.contains(&"interval") {
            return Some(raw);
        }
        r.error_at(
            key,
            format!("{what} has no `interval`"),
            Some("add e.g. `interval: 30m` (or `1m,2m,4m` for backoff)".into()),
        );
    }
    Some(raw)
}

fn read_cron<'n>(
    r: &mut Reporter<'_>,
    key: &'n Node,
    node: &'n Node,
    label: &str,
) -> Option<RawCron<'n>> {
    let what = format!("`cronjob` of {label}");
    let (entries, guesses) = fields_and_guesses(r, node, &what, CRON_KEYS, Some(key))?;
    let mut raw = RawCron {
        key,
        expression: None,
        timezone: None,
        complete: true,
    };
    for (name, _, value) in &entries {
        match *name {
            "cronExpression" => {
                let t = match value.as_scalar() {
                    Some(Scalar::Int(_) | Scalar::Float(_)) => value.scalar_text().map(|s| Text {
                        node: value,
                        value: s.to_string(),
                    }),
                    _ => text(
                        r,
                        value,
                        &format!("`cronExpression` in {what}"),
                        "\"0 */5 * * * *\"",
                    ),
                };
                let Some(t) = t else {
                    raw.complete = false;
                    continue;
                };
                if let Err(err) = CronExpr::parse(&t.value) {
                    raw.complete = false;
                    let (pos, width) = pos_in(value, &t.value, err.offset, err.len);
                    let place = err.field.map_or(String::new(), |f| format!(" ({f} field)"));
                    r.error_pos(
                        pos,
                        width,
                        format!("bad `cronExpression` in {what}{place}: {}", err.message),
                        Some("check it with `anchor cron \"EXPR\"`; fields are [second] minute hour day-of-month month day-of-week".into()),
                    );
                } else {
                    raw.expression = Some(t);
                }
            }
            "timezone" => {
                let Some(t) = text(r, value, &format!("`timezone` in {what}"), "Europe/Berlin")
                else {
                    raw.complete = false;
                    continue;
                };
                match parse_timezone(&t.value) {
                    Ok(_) => raw.timezone = Some(t.value),
                    Err(err) => {
                        raw.complete = false;
                        let hint = match &err.suggestion {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => "use an IANA name such as `UTC`, `Europe/Berlin` or `America/New_York`".into(),
                        };
                        r.error_at(
                            value,
                            format!("unknown time zone `{}` in {what}", t.value),
                            Some(hint),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    if raw.complete && raw.expression.is_none() {
        raw.complete = false;
        if guesses.contains(&"cronExpression") {
            return Some(raw);
        }
        r.error_at(
            key,
            format!("{what} has no `cronExpression`"),
            Some("add e.g. `cronExpression: \"0 0 2 * * *\"` (02:00 daily)".into()),
        );
    }
    Some(raw)
}

fn read_task<'n>(r: &mut Reporter<'_>, node: &'n Node, index: usize) -> Option<RawTask<'n>> {
    // Name the task in messages by its name when it has a usable one.
    let label = node
        .as_map()
        .and_then(|entries| {
            entries
                .iter()
                .find(|(k, _)| k.scalar_text() == Some("name"))
        })
        .and_then(|(_, v)| v.as_str())
        .map_or_else(|| format!("task #{}", index + 1), |n| format!("task `{n}`"));
    if matches!(node.as_scalar(), Some(Scalar::Null)) {
        r.error_at(
            node,
            format!("{label} is empty"),
            Some(
                "write the task after the `-`, e.g. `- name: SendEmail`, or remove the line".into(),
            ),
        );
        return None;
    }
    let (entries, guesses) = fields_and_guesses(r, node, &label, TASK_KEYS, None)?;
    let mut task = RawTask {
        node,
        label: label.clone(),
        name: None,
        description: None,
        parameters: None,
        retry: None,
        cron: None,
        on_failed: None,
        timeout: None,
        max_rescues: None,
        queue: None,
        priority: None,
    };
    let mut name_seen = false;
    for (key_name, key, value) in entries {
        match key_name {
            "name" => {
                name_seen = true;
                task.name = text(r, value, &format!("`name` of {label}"), "sendEmail");
            }
            "description" => match value.as_scalar() {
                Some(Scalar::Null) | None => {
                    r.error_at(
                        value,
                        format!(
                            "`description` of {label} must be text, found {}",
                            value.kind_name()
                        ),
                        None,
                    );
                }
                Some(_) => task.description = value.scalar_text().map(str::to_string),
            },
            "parameters" => {
                let checked = schema::check_parameters(r, key, value);
                task.parameters = Some((key, checked));
            }
            "retryPolicy" => task.retry = read_retry(r, key, value, &label),
            "cronjob" => task.cron = read_cron(r, key, value, &label),
            "events" => {
                if let Some((events, _)) = fields_and_guesses(
                    r,
                    value,
                    &format!("`events` of {label}"),
                    EVENT_KEYS,
                    Some(key),
                ) {
                    for (_, _, target) in events {
                        task.on_failed = text(
                            r,
                            target,
                            &format!("`onFailed` of {label}"),
                            "HandleTaskFailure",
                        );
                    }
                }
            }
            "timeout" => {
                if let Some(t) = duration_text(r, value, &format!("`timeout` of {label}")) {
                    match parse_duration(&t.value) {
                        Ok(d) if d > MAX_DURATION => r.error_at(
                            value,
                            format!(
                                "`timeout` {} of {label} is longer than the {}-day limit",
                                t.value.trim(),
                                max_days()
                            ),
                            Some(limit_hint()),
                        ),
                        Ok(d) => task.timeout = Some(d),
                        Err(err) => r.error_at(
                            value,
                            format!("bad `timeout` of {label}: {err}"),
                            Some("write a duration such as `30s`, `10m` or `2h`".into()),
                        ),
                    }
                }
            }
            "maxRescues" => task.max_rescues = max_rescues(r, value, &label),
            "queue" => task.queue = queue(r, value, &label),
            "priority" => task.priority = priority(r, value, &label),
            _ => {}
        }
    }
    if !name_seen && !guesses.contains(&"name") {
        r.error_at(
            node,
            format!("{label} has no `name`"),
            Some("add `name: SomeTask` (letters, digits and `_`, starting with a letter)".into()),
        );
    }
    Some(task)
}

/// A task's `maxRescues`: a whole number from 1 to [`MAX_RESCUES_LIMIT`].
fn max_rescues(r: &mut Reporter<'_>, value: &Node, label: &str) -> Option<u32> {
    let what = format!("`maxRescues` of {label}");
    let example =
        "write e.g. `maxRescues: 5` (without quotes), or leave it out for the worker's default (5)";
    let too_many = |r: &mut Reporter<'_>, shown: &str| {
        r.error_at(
            value,
            format!("{what} is {shown}, more than the limit of {MAX_RESCUES_LIMIT}"),
            Some(format!(
                "use at most {MAX_RESCUES_LIMIT}; a task whose worker is lost that often is poison"
            )),
        );
    };
    match value.as_scalar() {
        Some(Scalar::Int(n)) => match u32::try_from(*n) {
            Ok(n @ 1..=MAX_RESCUES_LIMIT) => return Some(n),
            Ok(0) | Err(_) if *n <= 0 => r.error_at(
                value,
                format!("{what} must be at least 1, found `{n}`"),
                Some("write `maxRescues: 1` to fail the task the first time its worker is lost during a run, or leave it out for the worker's default (5)".into()),
            ),
            _ => too_many(r, &n.to_string()),
        },
        // An integer too large for i64 reads as a float.
        Some(Scalar::Float(f)) if f.fract() == 0.0 && *f > f64::from(MAX_RESCUES_LIMIT) => {
            too_many(r, value.scalar_text().unwrap_or("too large"));
        }
        Some(Scalar::Null) => r.error_at(value, format!("{what} is empty"), Some(example.into())),
        _ => {
            let found = value
                .scalar_text()
                .map_or_else(|| value.kind_name().to_string(), |t| format!("`{t}`"));
            r.error_at(
                value,
                format!(
                    "{what} must be a whole number from 1 to {MAX_RESCUES_LIMIT}, found {found}"
                ),
                Some(example.into()),
            );
        }
    }
    None
}

/// What a queue name is, as messages state it.
fn queue_shape() -> String {
    format!(
        "a queue name is 1 to {MAX_QUEUE_NAME_LEN} lowercase ASCII letters, digits, `_` and `-`, starting with a letter"
    )
}

/// A task's `queue`: 1 to [`MAX_QUEUE_NAME_LEN`] lowercase ASCII letters, digits, `_` and
/// `-`, starting with a letter. Lowercase only, so `Emails` and `emails` cannot become two
/// queues.
fn queue(r: &mut Reporter<'_>, value: &Node, label: &str) -> Option<String> {
    let what = format!("`queue` of {label}");
    let name = match value.as_scalar() {
        Some(Scalar::Str(s)) if !s.is_empty() => s.as_str(),
        Some(Scalar::Str(_) | Scalar::Null) => {
            r.error_at(
                value,
                format!("{what} is empty"),
                Some("write e.g. `queue: emails`, or leave it out for the `default` queue".into()),
            );
            return None;
        }
        _ => {
            let found = value.scalar_text().map_or_else(
                || value.kind_name().to_string(),
                |t| format!("{} `{t}`", value.kind_name()),
            );
            r.error_at(
                value,
                format!("{what} must be a queue name, found {found}"),
                Some(format!("{}; write e.g. `queue: emails`", queue_shape())),
            );
            return None;
        }
    };
    let count = name.chars().count();
    let bad = name.chars().find(|c| !is_queue_char(*c));
    let (problem, fix) = if count > MAX_QUEUE_NAME_LEN {
        (
            format!("it has {count} characters, more than the limit of {MAX_QUEUE_NAME_LEN}"),
            "shorten it".to_string(),
        )
    } else if let Some(bad) = bad {
        let shown = if bad.is_whitespace() {
            "a space".to_string()
        } else {
            format!("`{bad}`")
        };
        let fix = near_queue(name).unwrap_or_else(|| "emails".into());
        (
            format!("{shown} is not allowed"),
            format!("write e.g. `queue: {fix}`"),
        )
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        let fix = near_queue(name).map_or_else(
            || "put a letter first".to_string(),
            |near| format!("write e.g. `queue: {near}`"),
        );
        ("it must start with a letter".to_string(), fix)
    } else {
        return Some(name.to_string());
    };
    r.error_at(
        value,
        format!("{what} is not a queue name: {problem}"),
        Some(format!("{}; {fix}", queue_shape())),
    );
    None
}

/// A valid queue name close to `name` (`Emails!` → `emails`, `Bulk Mail` → `bulk_mail`,
/// `_internal` → `internal`), when one can be had by changing case and punctuation only.
fn near_queue(name: &str) -> Option<String> {
    if !name.is_ascii() {
        return None;
    }
    let mut near = String::new();
    for c in name.trim().chars().map(|c| c.to_ascii_lowercase()) {
        if is_queue_char(c) {
            near.push(c);
        } else if (c.is_whitespace() || matches!(c, '.' | '/' | ':')) && !near.ends_with('_') {
            near.push('_');
        }
    }
    let near = near.trim_matches(['_', '-']);
    near.starts_with(|c: char| c.is_ascii_lowercase())
        .then(|| near.to_string())
}

/// A task's `priority`: an integer from 0 (the default, runs first) to [`LOWEST_PRIORITY`].
fn priority(r: &mut Reporter<'_>, value: &Node, label: &str) -> Option<i16> {
    let what = format!("`priority` of {label}");
    let rule = format!("{what} must be an integer from 0 (runs first) to {LOWEST_PRIORITY}");
    let example = "write e.g. `priority: 3` (without quotes), or leave it out for 0";
    let out_of_range = |r: &mut Reporter<'_>, negative: bool| {
        let hint = if negative {
            "0 is the highest priority (runs first, and the default); write `priority: 0`"
                .to_string()
        } else {
            format!("{LOWEST_PRIORITY} is the lowest priority (runs last); write at most `priority: {LOWEST_PRIORITY}`")
        };
        let shown = value.scalar_text().unwrap_or_default();
        r.error_at(value, format!("{rule}, found `{shown}`"), Some(hint));
    };
    match value.as_scalar() {
        Some(Scalar::Int(n)) => match i16::try_from(*n) {
            Ok(p @ DEFAULT_PRIORITY..=LOWEST_PRIORITY) => return Some(p),
            _ => out_of_range(r, *n < 0),
        },
        // An integer too large for i64 reads as a float.
        Some(Scalar::Float(f)) if f.fract() == 0.0 && f.abs() > f64::from(LOWEST_PRIORITY) => {
            out_of_range(r, *f < 0.0);
        }
        Some(Scalar::Null) => r.error_at(
            value,
            format!("{what} is empty"),
            Some(format!(
                "write e.g. `priority: 3` (0 runs first, {LOWEST_PRIORITY} last), or leave it out for 0"
            )),
        ),
        Some(Scalar::Str(s)) => {
            let hint = match s.trim().parse::<i64>() {
                Ok(n) => format!("write it without quotes: `priority: {n}`"),
                Err(_) => format!(
                    "a priority is a number, not a word: 0 (the default) runs first, {LOWEST_PRIORITY} last"
                ),
            };
            r.error_at(value, format!("{rule}, found text `{s}`"), Some(hint));
        }
        _ => {
            let found = value
                .scalar_text()
                .map_or_else(|| value.kind_name().to_string(), |t| format!("`{t}`"));
            r.error_at(value, format!("{rule}, found {found}"), Some(example.into()));
        }
    }
    None
}

/// Whether a task name can become Rust identifiers (`FooParameters`, `execute_foo`).
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks a whole document and, when it has no errors, returns the model.
pub(crate) fn check_document(
    r: &mut Reporter<'_>,
    source: &str,
    root: Option<&Node>,
) -> Option<Spec> {
    let Some(root) = root else {
        r.error_pos(
            Pos { line: 1, column: 1 },
            1,
            "the file has no tasks; it must start with `tasks:`",
            Some("write `tasks:` followed by a list of `- name: ...` entries".into()),
        );
        return None;
    };
    let (top, guesses) = fields_and_guesses(r, root, "the top level", TOP_KEYS, None)?;
    let Some((_, tasks_key, tasks_node)) = top.iter().find(|(k, _, _)| *k == "tasks") else {
        if guesses.contains(&"tasks") {
            return None;
        }
        r.error_at(
            root,
            "the file has no `tasks` list",
            Some("start the file with `tasks:` followed by `- name: ...` entries".into()),
        );
        return None;
    };
    let items: &[Node] = match &tasks_node.kind {
        NodeKind::Seq(items) => items,
        NodeKind::Scalar {
            value: Scalar::Null,
            ..
        } => &[],
        _ => {
            r.error_at(
                tasks_node,
                format!("`tasks` must be a list, found {}", tasks_node.kind_name()),
                Some("write each task as a list item: `- name: SendEmail`".into()),
            );
            return None;
        }
    };
    let _ = tasks_key;
    let tasks: Vec<RawTask<'_>> = items
        .iter()
        .enumerate()
        .filter_map(|(i, node)| read_task(r, node, i))
        .collect();

    check_names(r, &tasks);
    let by_name: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.name.as_ref().map(|n| (n.value.as_str(), i)))
        .collect();
    let names: Vec<&str> = tasks
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.value.as_str()))
        .collect();

    // onFailed targets must exist; remember the edges for the handler and cycle checks.
    let mut edges: Vec<Option<usize>> = vec![None; tasks.len()];
    for (i, task) in tasks.iter().enumerate() {
        let Some(target) = &task.on_failed else {
            continue;
        };
        match by_name.get(target.value.as_str()) {
            Some(&j) => edges[i] = Some(j),
            None => {
                let hint = hint_did_you_mean(&target.value, names.iter().copied()).or_else(|| {
                    Some(format!(
                        "add a task named `{}`, or fix the name",
                        target.value
                    ))
                });
                r.error_at(
                    target.node,
                    format!(
                        "`onFailed` of {} names `{}`, but no task has that name",
                        task.label, target.value
                    ),
                    hint,
                );
            }
        }
    }
    let mut handler_of: Vec<Option<usize>> = vec![None; tasks.len()];
    for (i, edge) in edges.iter().enumerate() {
        if let Some(j) = edge {
            handler_of[*j].get_or_insert(i);
        }
    }
    for (j, origin) in handler_of.iter().enumerate() {
        if let Some(i) = origin {
            check_handler(r, &tasks[j], &tasks[*i]);
        }
    }
    check_cycles(r, &tasks, &edges);
    warn_retry_and_cron(r, &tasks, &handler_of);

    if r.error_count() > 0 {
        return None;
    }
    let mut model = Vec::with_capacity(tasks.len());
    for (i, task) in tasks.iter().enumerate() {
        model.push(build_task(task, handler_of[i].is_some())?);
    }
    Some(Spec {
        source: source.to_string(),
        tasks: model,
    })
}

fn check_names(r: &mut Reporter<'_>, tasks: &[RawTask<'_>]) {
    let mut seen: HashMap<String, &Text<'_>> = HashMap::new();
    for task in tasks {
        let Some(name) = &task.name else { continue };
        if name.value.is_empty() {
            r.error_at(
                name.node,
                "the task name is empty",
                Some("write a name such as `SendEmail`".into()),
            );
            continue;
        }
        if !is_identifier(&name.value) {
            let suggestion = heck::ToLowerCamelCase::to_lower_camel_case(name.value.as_str());
            let hint = if is_identifier(&suggestion) {
                format!("start with a letter and use only ASCII letters, digits and `_`, e.g. `{suggestion}`")
            } else {
                "start with a letter and use only ASCII letters, digits and `_`, e.g. `sendEmail`"
                    .to_string()
            };
            r.error_at(
                name.node,
                format!("task name `{}` is not an identifier", name.value),
                Some(hint),
            );
            continue;
        }
        let key = name.value.to_snake_case();
        if let Some(first) = seen.get(&key) {
            let line = first.node.span.start.line;
            if first.value == name.value {
                r.error_at(
                    name.node,
                    format!(
                        "duplicate task name `{}` (first defined on line {line})",
                        name.value
                    ),
                    Some("task names must be unique; rename or remove one".into()),
                );
            } else {
                r.error_at(
                    name.node,
                    format!(
                        "task name `{}` collides with `{}` (line {line}): both become `{key}` in generated code",
                        name.value, first.value
                    ),
                    Some("task names must differ in more than case or `_`; rename one".into()),
                );
            }
            continue;
        }
        seen.insert(key, name);
    }
}

/// An `onFailed` target receives `{ taskID }` plus its schema defaults, so it must
/// accept an integer `taskID` and need nothing else.
fn check_handler(r: &mut Reporter<'_>, handler: &RawTask<'_>, origin: &RawTask<'_>) {
    let Some((params_key, checked)) = &handler.parameters else {
        return; // The default `{ taskID: int64 }` schema fits.
    };
    let Some(checked) = checked else {
        return; // The schema has errors, already reported.
    };
    let handler_name = handler.name.as_ref().map_or("?", |n| n.value.as_str());
    let origin_name = origin.name.as_ref().map_or("?", |n| n.value.as_str());
    let properties: &[Property] = &checked.properties;
    match properties.iter().find(|p| p.name == "taskID") {
        None => {
            let near = schema::closest_property(properties, "taskID");
            let hint = match near {
                Some(n) => format!("rename `{n}` to `taskID` (exact spelling), with `type: integer`"),
                None => "add `taskID: {type: integer, format: int64}` under `properties`, or remove `parameters` to get that default".into(),
            };
            r.error_at(
                params_key,
                format!("`{handler_name}` is the onFailed handler of `{origin_name}`, so its parameters must have an integer `taskID` (the failed task's id)"),
                Some(hint),
            );
        }
        Some(p) if schema::integer_property(properties, "taskID").is_none() => {
            r.error(
                p.key_span,
                format!("`taskID` of onFailed handler `{handler_name}` must be `type: integer` (it receives the failed task's id)"),
                Some("write `type: integer` with `format: int64` (or int32)".into()),
            );
        }
        Some(_) => {}
    }
    for p in properties
        .iter()
        .filter(|p| p.required && p.default.is_none() && p.name != "taskID")
    {
        r.error(
            p.key_span,
            format!(
                "required parameter `{}` of onFailed handler `{handler_name}` has no `default`; the runtime enqueues the handler with only `taskID` when `{origin_name}` fails",
                p.name
            ),
            Some(format!("add a `default` to `{}`, or remove it from `required`", p.name)),
        );
    }
}

fn check_cycles(r: &mut Reporter<'_>, tasks: &[RawTask<'_>], edges: &[Option<usize>]) {
    // Each task has at most one onFailed edge, so a walk from each task finds any cycle.
    // state: 0 = unvisited, 1 = on the current walk, 2 = finished.
    let mut state = vec![0u8; tasks.len()];
    for start in 0..tasks.len() {
        let mut path = Vec::new();
        let mut at = Some(start);
        while let Some(i) = at {
            match state[i] {
                2 => break,
                1 => {
                    let from = path.iter().position(|&p| p == i).unwrap_or(0);
                    let cycle = &path[from..];
                    let name = |k: usize| {
                        tasks[k]
                            .name
                            .as_ref()
                            .map_or("?", |n| n.value.as_str())
                            .to_string()
                    };
                    let Some(node) = tasks[i].on_failed.as_ref().map(|t| t.node) else {
                        break;
                    };
                    if cycle.len() == 1 {
                        r.error_at(node, format!("task `{}` names itself in `events.onFailed`", name(i)), Some("a failure handler must be another task; remove `onFailed` or point it at a different task".into()));
                    } else {
                        let mut chain: Vec<String> =
                            cycle.iter().map(|&k| format!("`{}`", name(k))).collect();
                        chain.push(format!("`{}`", name(i)));
                        r.error_at(
                            node,
                            format!("onFailed cycle: {}", chain.join(" → ")),
                            Some("a failure would enqueue handlers forever; remove `onFailed` from one of these tasks".into()),
                        );
                    }
                    break;
                }
                _ => {
                    state[i] = 1;
                    path.push(i);
                    at = edges[i];
                }
            }
        }
        for i in path {
            state[i] = 2;
        }
    }
}

fn warn_retry_and_cron(r: &mut Reporter<'_>, tasks: &[RawTask<'_>], handler_of: &[Option<usize>]) {
    for (i, task) in tasks.iter().enumerate() {
        if let Some(retry) = &task.retry {
            if retry.complete && retry.max_retries == Some(0) {
                r.warning_at(
                    retry.key,
                    format!(
                        "`retryPolicy` of {} never retries: `max_retries` is 0",
                        task.label
                    ),
                    Some(
                        "raise `max_retries`, or remove `retryPolicy` (no policy means no retries)"
                            .into(),
                    ),
                );
            } else if retry.complete && !retry.always && retry.max_retries.is_none() {
                r.warning_at(
                    retry.key,
                    format!("`retryPolicy` of {} never retries: `always_retry_on_failure` is not true and there is no `max_retries`", task.label),
                    Some("set `always_retry_on_failure: true` (retry until success) or `max_retries: N`, or remove `retryPolicy`".into()),
                );
            }
        }
        let Some(cron) = &task.cron else { continue };
        if !cron.complete {
            continue;
        }
        let missing: Vec<String> = match &task.parameters {
            Some((_, Some(checked))) => checked
                .properties
                .iter()
                .filter(|p| p.required && p.default.is_none())
                .map(|p| format!("`{}`", p.name))
                .collect(),
            Some((_, None)) => continue,
            None if handler_of[i].is_some() => vec!["`taskID`".to_string()],
            None => Vec::new(),
        };
        if !missing.is_empty() {
            let name = task
                .name
                .as_ref()
                .map_or("foo".to_string(), |n| n.value.to_snake_case());
            r.warning_at(
                cron.key,
                format!(
                    "cron {} has required parameters without a `default` ({}), so it is not scheduled when a worker starts; it runs only after a schedule is registered from code with `schedule_{name}(params)`",
                    task.label,
                    missing.join(", ")
                ),
                Some("give every required parameter a `default` to schedule it automatically".into()),
            );
        }
    }
}

fn build_task(task: &RawTask<'_>, is_failure_handler: bool) -> Option<Task> {
    let name = task.name.as_ref()?.value.clone();
    let parameters = match &task.parameters {
        Some((_, checked)) => {
            let checked = checked.as_ref()?;
            let mut defaults = Map::new();
            for p in &checked.properties {
                if let Some(d) = &p.default {
                    defaults.insert(p.name.clone(), d.clone());
                }
            }
            Parameters {
                source: ParametersSource::Declared,
                schema: checked.json.clone(),
                defaults,
                all_defaultable: checked
                    .properties
                    .iter()
                    .all(|p| !p.required || p.default.is_some()),
            }
        }
        None if is_failure_handler => Parameters {
            source: ParametersSource::DefaultFailureHandler,
            schema: default_failure_handler_schema(),
            defaults: Map::new(),
            all_defaultable: false,
        },
        None => Parameters {
            source: ParametersSource::Empty,
            schema: json!({ "type": "object", "properties": {} }),
            defaults: Map::new(),
            all_defaultable: true,
        },
    };
    let retry_policy = match &task.retry {
        Some(retry) => Some(RetryPolicy {
            intervals: retry.intervals.clone()?,
            always_retry_on_failure: retry.always,
            max_retries: retry.max_retries,
        }),
        None => None,
    };
    let cron = match &task.cron {
        Some(c) => Some(CronJob {
            expression: c.expression.as_ref()?.value.trim().to_string(),
            timezone: c.timezone.clone(),
        }),
        None => None,
    };
    let _ = task.node;
    Some(Task {
        name,
        description: task.description.clone(),
        parameters,
        retry_policy,
        cron,
        on_failed: task.on_failed.as_ref().map(|t| t.value.clone()),
        timeout: task.timeout.unwrap_or(DEFAULT_TIMEOUT),
        max_rescues: task.max_rescues,
        queue: task
            .queue
            .clone()
            .unwrap_or_else(|| DEFAULT_QUEUE.to_string()),
        priority: task.priority.unwrap_or(DEFAULT_PRIORITY),
        is_failure_handler,
    })
}
