//! `anchor queues list|pause Q|resume Q`: the queues, and stopping or restarting the
//! claiming of one queue's tasks by hand.
//!
//! Exit codes: 0 done (the queue changed state; `list` always); 1 nothing done (it was
//! paused or running already, said on stderr or in the JSON); 2 usage or connection
//! problems, a queue name that cannot exist among them (with the rule).

use std::process::ExitCode;

use anchor_runtime::{Client, QueueInfo};
use comfy_table::{Cell, CellAlignment};
use serde_json::{json, Value};

use super::connect::{queue_name, Database};
use super::output::{age, millis, print_json, print_table, status_cell, table, time};

/// Flags of `anchor queues`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    db: Database,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// List every queue: running or paused (since when, by whom), tasks due, scheduled and
    /// running, and how long the oldest due task has waited.
    List,
    /// Pause a queue: workers start none of its tasks until it is resumed; runs in progress
    /// finish and enqueueing still works. Durable across worker restarts.
    Pause {
        /// The queue.
        #[arg(value_parser = queue_name)]
        queue: String,
        /// Who pauses it, shown by `anchor queues list` (default: $USER@$HOSTNAME).
        #[arg(long)]
        by: Option<String>,
    },
    /// Resume a paused queue; its workers are woken at once.
    Resume {
        /// The queue.
        #[arg(value_parser = queue_name)]
        queue: String,
    },
}

/// Runs the action and prints its result.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let json = args.db.json;
    args.db.run(|client| async move {
        match args.action {
            Action::List => list(&client, json).await,
            Action::Pause { queue, by } => {
                let by = by.unwrap_or_else(default_pauser);
                let done = client.pause_queue(&queue, &by).await?;
                report(&client, &queue, Verb::Pause, done, json).await
            }
            Action::Resume { queue } => {
                let done = client.resume_queue(&queue).await?;
                report(&client, &queue, Verb::Resume, done, json).await
            }
        }
    })
}

/// `$USER@$HOSTNAME`, each part `unknown` when the environment does not say (many shells
/// set `HOSTNAME` without exporting it, so the system's host name comes next).
fn default_pauser() -> String {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let user = var("USER")
        .or_else(|| var("LOGNAME"))
        .unwrap_or_else(|| "unknown".to_string());
    let host = var("HOSTNAME")
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_string());
    format!("{user}@{host}")
}

async fn list(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let queues = client.queues().await?;
    if json {
        print_json(&Value::Array(queues.iter().map(queue_json).collect()))?;
        return Ok(ExitCode::SUCCESS);
    }
    if queues.is_empty() {
        println!("no queues: no worker has stored its tasks' queues and no task waits");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = table([
        "QUEUE",
        "STATE",
        "DUE",
        "SCHEDULED",
        "RUNNING",
        "OLDEST DUE",
    ]);
    for column in rows.column_iter_mut().skip(2) {
        column.set_cell_alignment(CellAlignment::Right);
    }
    for queue in &queues {
        rows.add_row(vec![
            Cell::new(&queue.name),
            state_cell(queue),
            Cell::new(queue.due),
            Cell::new(queue.scheduled),
            Cell::new(queue.running),
            Cell::new(queue.oldest_due_age.map_or_else(|| "-".to_string(), age)),
        ]);
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

fn state_cell(queue: &QueueInfo) -> Cell {
    match queue.paused_at {
        None => status_cell("running", "enabled"),
        Some(at) => status_cell(
            format!(
                "paused since {} UTC by {}",
                time(Some(at)),
                queue.paused_by.as_deref().unwrap_or("unknown")
            ),
            "paused",
        ),
    }
}

/// One entry of `queues list --json`.
fn queue_json(queue: &QueueInfo) -> Value {
    json!({
        "name": queue.name,
        "paused": queue.paused_at.is_some(),
        "paused_at": queue.paused_at,
        "paused_by": queue.paused_by,
        "due": queue.due,
        "scheduled": queue.scheduled,
        "running": queue.running,
        "oldest_due_age_ms": queue.oldest_due_age.map(millis),
    })
}

#[derive(Debug, Clone, Copy)]
enum Verb {
    Pause,
    Resume,
}

async fn report(
    client: &Client,
    queue: &str,
    verb: Verb,
    done: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // The state afterwards follows from the verb; the lookup only adds since when and by
    // whom for a queue that was paused already, so its failure (a slow count on a large
    // table) must not turn a pause that happened into an error.
    let paused = matches!(verb, Verb::Pause);
    let info = if matches!(verb, Verb::Pause) && !done {
        client
            .queues()
            .await
            .ok()
            .and_then(|queues| queues.into_iter().find(|q| q.name == queue))
    } else {
        None
    };
    let code = if done {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if json {
        let action = match verb {
            Verb::Pause => "pause",
            Verb::Resume => "resume",
        };
        println!(
            "{}",
            json!({"queue": queue, "action": action, "done": done, "paused": paused})
        );
        return Ok(code);
    }
    match (verb, done) {
        (Verb::Pause, true) => println!(
            "queue {queue} paused: no worker starts its tasks until `anchor queues resume {queue}`"
        ),
        (Verb::Resume, true) => println!("queue {queue} resumed"),
        (Verb::Pause, false) => {
            let since = info
                .as_ref()
                .and_then(|q| q.paused_at.map(|at| (at, q.paused_by.clone())))
                .map(|(at, by)| {
                    format!(
                        " (since {} UTC by {})",
                        time(Some(at)),
                        by.as_deref().unwrap_or("unknown")
                    )
                })
                .unwrap_or_default();
            eprintln!("queue {queue} was not paused: it is paused already{since}");
        }
        (Verb::Resume, false) => {
            eprintln!("queue {queue} was not resumed: it is not paused");
        }
    }
    Ok(code)
}
