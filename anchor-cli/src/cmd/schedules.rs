//! `anchor schedules list|pause TARGET|resume TARGET`: the cron schedules, and stopping or
//! restarting their ticks by hand. TARGET is a schedule id (negative, e.g. `-3`) or a task
//! name (every schedule of that task).
//!
//! Exit codes: 0 done (at least one schedule changed; `list` always); 1 nothing done (no
//! schedule matched, or every one was paused or enabled already, said on stderr or in the
//! JSON); 2 usage or connection problems.

use std::process::ExitCode;

use anchor_runtime::{Client, CronSchedule, ScheduleId};
use comfy_table::Cell;
use serde_json::{json, Value};

use super::connect::Database;
use super::output::{print_json, print_table, status_cell, table, time};

/// Flags of `anchor schedules`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    db: Database,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// List every cron schedule: task, key, expression and time zone, enabled or why
    /// not, next fire and last fire.
    List,
    /// Pause schedules: their ticks stop firing until resumed (workers starting do not
    /// resume them); occurrences already enqueued are not touched.
    Pause {
        /// A schedule id (negative, as `list` shows it) or a task name (all its schedules).
        #[arg(allow_negative_numbers = true, value_parser = target)]
        target: Target,
    },
    /// Resume disabled schedules: each fires next at its first tick after now (ticks
    /// missed meanwhile do not fire).
    Resume {
        /// A schedule id (negative, as `list` shows it) or a task name (all its schedules).
        #[arg(allow_negative_numbers = true, value_parser = target)]
        target: Target,
    },
}

/// Which schedules a pause or resume acts on.
#[derive(Debug, Clone)]
enum Target {
    Id(ScheduleId),
    Task(String),
}

fn target(text: &str) -> Result<Target, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("give a schedule id (e.g. -3) or a task name".to_string());
    }
    Ok(match text.parse::<i64>() {
        Ok(id) => Target::Id(ScheduleId::new(id)),
        Err(_) => Target::Task(text.to_string()),
    })
}

impl Target {
    fn text(&self) -> String {
        match self {
            Target::Id(id) => id.to_string(),
            Target::Task(name) => name.clone(),
        }
    }

    fn matches(&self, schedule: &CronSchedule) -> bool {
        match self {
            Target::Id(id) => schedule.id == *id,
            Target::Task(name) => schedule.task_name == *name,
        }
    }

    /// Why nothing matched.
    fn missing(&self) -> String {
        match self {
            Target::Id(id) if id.get() > 0 => {
                format!("no cron schedule {id}: schedule ids are negative, e.g. -{id}")
            }
            Target::Id(id) => format!("no cron schedule {id}"),
            Target::Task(name) => format!("no cron schedule of task {name}"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Verb {
    Pause,
    Resume,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Pause => "pause",
            Verb::Resume => "resume",
        }
    }

    /// Whether the verb changes `schedule`: a pause one that is not paused (an orphaned
    /// schedule too, which workers would otherwise enable again), a resume a disabled one.
    fn applies(self, schedule: &CronSchedule) -> bool {
        match self {
            Verb::Pause => {
                schedule.enabled || schedule.disabled_reason.as_deref() != Some("paused")
            }
            Verb::Resume => !schedule.enabled,
        }
    }
}

/// Runs the action and prints its result.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let json = args.db.json;
    args.db.run(|client| async move {
        match args.action {
            Action::List => list(&client, json).await,
            Action::Pause { target } => act(&client, &target, Verb::Pause, json).await,
            Action::Resume { target } => act(&client, &target, Verb::Resume, json).await,
        }
    })
}

async fn list(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let schedules = client.schedules().await?;
    if json {
        print_json(&Value::Array(schedules.iter().map(schedule_json).collect()))?;
        return Ok(ExitCode::SUCCESS);
    }
    if schedules.is_empty() {
        println!("no cron schedules");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = table([
        "ID",
        "TASK",
        "KEY",
        "EXPRESSION",
        "STATE",
        "NEXT FIRE (UTC)",
        "LAST FIRED (UTC)",
    ]);
    for schedule in &schedules {
        let expression = match &schedule.timezone {
            Some(zone) => format!("{} ({zone})", schedule.expression),
            None => schedule.expression.clone(),
        };
        rows.add_row(vec![
            Cell::new(schedule.id),
            Cell::new(&schedule.task_name),
            Cell::new(&schedule.key),
            Cell::new(expression),
            state_cell(schedule),
            Cell::new(time(Some(schedule.next_fire_at))),
            Cell::new(time(schedule.last_fired_at)),
        ]);
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

fn state(schedule: &CronSchedule) -> String {
    if schedule.enabled {
        "enabled".to_string()
    } else {
        format!(
            "disabled: {}",
            schedule.disabled_reason.as_deref().unwrap_or("unknown")
        )
    }
}

fn state_cell(schedule: &CronSchedule) -> Cell {
    let word = if schedule.enabled {
        "enabled"
    } else {
        schedule.disabled_reason.as_deref().unwrap_or("")
    };
    status_cell(state(schedule), word)
}

/// One entry of `schedules list --json`, and of the `schedules` of a pause or resume.
fn schedule_json(schedule: &CronSchedule) -> Value {
    json!({
        "id": schedule.id.get(),
        "task_name": schedule.task_name,
        "key": schedule.key,
        "expression": schedule.expression,
        "timezone": schedule.timezone,
        "payload": schedule.payload,
        "enabled": schedule.enabled,
        "disabled_reason": schedule.disabled_reason,
        "disabled_detail": schedule.disabled_detail,
        "next_fire_at": schedule.next_fire_at,
        "last_tick_at": schedule.last_tick_at,
        "last_fired_at": schedule.last_fired_at,
        "last_task_id": schedule.last_task_id.map(|id| id.get()),
        "allow_overlap": schedule.allow_overlap,
        "created_at": schedule.created_at,
        "updated_at": schedule.updated_at,
    })
}

async fn act(client: &Client, target: &Target, verb: Verb, json: bool) -> anyhow::Result<ExitCode> {
    let matched: Vec<CronSchedule> = client
        .schedules()
        .await?
        .into_iter()
        .filter(|s| target.matches(s))
        .collect();
    let mut results = Vec::with_capacity(matched.len());
    // One schedule that cannot change (an expression that no longer parses cannot be
    // resumed) is reported with the others; it does not stop the rest or hide what changed.
    let mut errors: Vec<Option<String>> = Vec::with_capacity(matched.len());
    for schedule in matched {
        let mut changed = verb.applies(&schedule);
        let mut error = None;
        if changed {
            let acted = match verb {
                Verb::Pause => client.pause_schedule(schedule.id).await,
                Verb::Resume => client.resume_schedule(schedule.id).await,
            };
            if let Err(err) = acted {
                error = Some(err.to_string());
                changed = false;
            }
        }
        let after = client
            .get_schedule(schedule.id)
            .await
            .ok()
            .flatten()
            .unwrap_or(schedule);
        results.push((after, changed));
        errors.push(error);
    }
    let done = results.iter().any(|(_, changed)| *changed);
    let code = if done {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if json {
        let mut shape = json!({
            "target": target.text(),
            "action": verb.name(),
            "done": done,
            "schedules": results.iter().zip(&errors).map(|((s, changed), error)| {
                let mut entry = schedule_json(s);
                entry["changed"] = json!(changed);
                if let Some(error) = error {
                    entry["error"] = json!(error);
                }
                entry
            }).collect::<Vec<_>>(),
        });
        if results.is_empty() {
            shape["reason"] = json!(target.missing());
        }
        println!("{shape}");
        return Ok(code);
    }
    if results.is_empty() {
        eprintln!("nothing to {}: {}", verb.name(), target.missing());
    }
    for ((schedule, changed), error) in results.iter().zip(&errors) {
        let which = format!(
            "schedule {} ({}/{})",
            schedule.id, schedule.task_name, schedule.key
        );
        if let Some(error) = error {
            eprintln!("{which} was not {}d: {error}", verb.name());
            continue;
        }
        match (verb, changed) {
            (Verb::Pause, true) => println!("{which} paused"),
            (Verb::Resume, true) => println!(
                "{which} resumed: next fire {} UTC",
                time(Some(schedule.next_fire_at))
            ),
            (Verb::Pause, false) => eprintln!("{which} was not paused: it is paused already"),
            (Verb::Resume, false) => eprintln!("{which} was not resumed: it is enabled"),
        }
    }
    Ok(code)
}
