//! `anchor tasks show|retry|cancel|delete ID`: one task, read or acted on by hand; and
//! `anchor tasks list|stats` (in `listing.rs`): many tasks, a page at a time, and counts.
//!
//! Exit codes: 0 done; 1 nothing done (no such task, or not in a state that allows it, with
//! the reason); 2 usage or connection problems (a bad URL, a database that is down, a
//! schema that was never migrated). `--json` prints a stable shape instead of text
//! (documented in `docs/operations.md`).

use std::process::ExitCode;

use anchor_runtime::{Client, TaskId, TaskRecord};
use serde_json::{json, Value};

use super::connect::Database;
use super::listing::{self, ListArgs, StatsArgs};
use super::output::{millis, time_ms};

/// Flags of `anchor tasks`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    db: Database,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// List tasks, newest first, a page at a time, filtered by status, name, queue, tag,
    /// parent or creation time.
    List(ListArgs),
    /// Count tasks per queue, name and status; the oldest due task's age; what each
    /// worker runs.
    Stats(StatsArgs),
    /// Show one task: status, attempts, settings, payload, error history.
    Show {
        /// The task's id.
        id: i64,
    },
    /// Make a failed, cancelled or delayed task due now (attempts and history are kept,
    /// failures start from zero).
    Retry {
        /// The task's id.
        id: i64,
    },
    /// Cancel a task; only a pending or running task can be cancelled (a running one is
    /// told to stop, and its outcome is not written).
    Cancel {
        /// The task's id.
        id: i64,
    },
    /// Delete a finished (completed, failed or cancelled) task.
    Delete {
        /// The task's id.
        id: i64,
    },
}

/// Runs the action and prints its result.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let json = args.db.json;
    args.db.run(|client| async move {
        match args.action {
            Action::List(list) => listing::list(&client, list, json).await,
            Action::Stats(stats) => listing::stats(&client, stats, json).await,
            Action::Show { id } => show(&client, TaskId::new(id), json).await,
            Action::Retry { id } => act(&client, TaskId::new(id), Verb::Retry, json).await,
            Action::Cancel { id } => act(&client, TaskId::new(id), Verb::Cancel, json).await,
            Action::Delete { id } => act(&client, TaskId::new(id), Verb::Delete, json).await,
        }
    })
}

async fn show(client: &Client, id: TaskId, json: bool) -> anyhow::Result<ExitCode> {
    let Some(task) = client.get_task(id).await? else {
        return not_found(id, json);
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&task_json(&task))?);
    } else {
        print!("{}", task_text(&task));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy)]
enum Verb {
    Retry,
    Cancel,
    Delete,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Retry => "retry",
            Verb::Cancel => "cancel",
            Verb::Delete => "delete",
        }
    }

    fn past(self) -> &'static str {
        match self {
            Verb::Retry => "retried",
            Verb::Cancel => "cancelled",
            Verb::Delete => "deleted",
        }
    }

    /// Why a task in `status` was left alone.
    fn refusal(self, status: &str) -> String {
        match self {
            Verb::Retry => format!(
                "it is {status}; only a failed or cancelled task, or a pending one waiting \
                 for its run_after, can be retried"
            ),
            Verb::Cancel => {
                format!("it is {status}; only a pending or running task can be cancelled")
            }
            Verb::Delete => format!(
                "it is {status}; only a finished (completed, failed or cancelled) task can be \
                 deleted; cancel a pending or running one first"
            ),
        }
    }
}

async fn act(client: &Client, id: TaskId, verb: Verb, json: bool) -> anyhow::Result<ExitCode> {
    let done = match verb {
        Verb::Retry => client.retry_task(id).await,
        Verb::Cancel => client.cancel_task(id).await,
        Verb::Delete => client.delete_task(id).await,
    };
    let done = match done {
        Ok(done) => done,
        // A refusal for what the task is (its unique tag taken): nothing done, exit 1.
        Err(err) if err.kind() == anchor_runtime::ErrorKind::InvalidOverride => {
            return refused(id, verb, &err.to_string(), None, json);
        }
        Err(err) => return Err(err.into()),
    };
    let after = client.get_task(id).await?;
    let status = after.as_ref().map(|t| t.status.to_string());
    if done {
        if json {
            let shape =
                json!({"id": id.get(), "action": verb.name(), "done": true, "status": status});
            println!("{shape}");
        } else {
            let due = if matches!(verb, Verb::Retry) {
                ": it is due now"
            } else {
                ""
            };
            println!("task {id} {}{due}", verb.past());
        }
        return Ok(ExitCode::SUCCESS);
    }
    match status {
        None => not_found(id, json),
        Some(status) => refused(id, verb, &verb.refusal(&status), Some(&status), json),
    }
}

fn refused(
    id: TaskId,
    verb: Verb,
    reason: &str,
    status: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if json {
        let shape = json!({
            "id": id.get(), "action": verb.name(), "done": false, "status": status,
            "reason": reason,
        });
        println!("{shape}");
    } else {
        eprintln!("task {id} was not {}: {reason}", verb.past());
    }
    Ok(ExitCode::from(1))
}

fn not_found(id: TaskId, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", json!({"id": id.get(), "error": "no such task"}));
    } else {
        eprintln!("no task {id} in this schema (deleted, pruned by retention, or never enqueued)");
    }
    Ok(ExitCode::from(1))
}

/// The `--json` shape of a task (docs/operations.md), also one entry of `tasks list`.
pub(crate) fn task_json(task: &TaskRecord) -> Value {
    let settings = &task.settings;
    json!({
        "id": task.id.get(),
        "name": task.name,
        "status": task.status.to_string(),
        "attempts": task.attempts,
        "failures": task.failures,
        "rescues": task.rescues,
        "created_at": task.created_at,
        "run_after": task.run_after,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "updated_at": task.updated_at,
        "parent_id": task.parent_id.map(TaskId::get),
        "unique_tag": task.unique_tag,
        "settings": {
            "timeout_ms": millis(settings.timeout),
            "retry": settings.retry.as_ref().map(|p| json!({
                "intervals_ms": p.intervals.iter().copied().map(millis).collect::<Vec<_>>(),
                "always_retry_on_failure": p.always_retry_on_failure,
                "max_retries": p.max_retries,
            })),
            "on_failed": settings.on_failed,
            "max_rescues": settings.max_rescues,
            "queue": settings.queue,
            "priority": settings.priority,
        },
        "lease": task.lease_owner.as_ref().map(|owner| json!({
            "owner": owner, "expires_at": task.lease_expires_at,
        })),
        "payload": task.payload,
        "errors": task.errors.iter().map(|e| json!({
            "attempt": e.attempt, "at": e.at, "message": e.message,
        })).collect::<Vec<_>>(),
    })
}

/// The text form of a task, one fact per line.
fn task_text(task: &TaskRecord) -> String {
    use std::fmt::Write;
    let time = time_ms;
    let settings = &task.settings;
    let retry = match &settings.retry {
        None => "none".to_string(),
        Some(p) => {
            let intervals: Vec<String> = p
                .intervals
                .iter()
                .map(|d| anchor_core::format_duration(*d))
                .collect();
            let mut bounds = Vec::new();
            if let Some(n) = p.max_retries {
                bounds.push(format!("at most {n}"));
            }
            if p.always_retry_on_failure {
                bounds.push("always".to_string());
            }
            if bounds.is_empty() {
                intervals.join(",")
            } else {
                format!("{} ({})", intervals.join(","), bounds.join(", "))
            }
        }
    };
    let mut out = String::new();
    let _ = writeln!(out, "task {} {} ({})", task.id, task.name, task.status);
    let _ = writeln!(
        out,
        "  attempts {}, failures {}, rescues {}",
        task.attempts, task.failures, task.rescues
    );
    let _ = writeln!(out, "  created   {}", time(Some(task.created_at)));
    let _ = writeln!(out, "  run after {}", time(Some(task.run_after)));
    let _ = writeln!(out, "  started   {}", time(task.started_at));
    let _ = writeln!(out, "  finished  {}", time(task.finished_at));
    let _ = writeln!(
        out,
        "  queue {}, priority {}",
        settings.queue, settings.priority
    );
    let _ = writeln!(
        out,
        "  timeout {}, retry {retry}, on failure {}, max rescues {}",
        anchor_core::format_duration(settings.timeout),
        settings.on_failed.as_deref().unwrap_or("-"),
        settings
            .max_rescues
            .map_or("worker default".to_string(), |n| n.to_string()),
    );
    if let Some(tag) = &task.unique_tag {
        let _ = writeln!(out, "  unique tag {tag}");
    }
    if let Some(parent) = task.parent_id {
        let _ = writeln!(out, "  handles the failure of task {parent}");
    }
    if let Some(owner) = &task.lease_owner {
        let _ = writeln!(
            out,
            "  leased by {owner} until {}",
            time(task.lease_expires_at)
        );
    }
    let _ = writeln!(out, "  payload {}", task.payload);
    if task.errors.is_empty() {
        let _ = writeln!(out, "  no errors");
    } else {
        let _ = writeln!(out, "  errors:");
        for e in &task.errors {
            let _ = writeln!(
                out,
                "    attempt {} at {}: {}",
                e.attempt,
                time(Some(e.at)),
                e.message
            );
        }
    }
    out
}
