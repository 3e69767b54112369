//! Text output shared by the operator commands: tables, status words in colour on a
//! terminal, times, ages and JSON.
//!
//! Colour is decided once, for stdout, the way clap decides it for its help
//! (`anstream`): on when stdout is a terminal that takes colour, off when `NO_COLOR` is
//! set or `CLICOLOR=0`, on when `CLICOLOR_FORCE` is set. Tables are laid out by
//! `comfy-table`, which colours the cells only when told to here.

use std::time::Duration;

use anchor_runtime::chrono::{DateTime, Utc};
use comfy_table::{presets, Cell, Color, ContentArrangement, Table};
use serde_json::Value;

/// Whether stdout takes colour.
pub fn colour() -> bool {
    anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never
}

/// A borderless table with these column headers: columns two spaces apart, no wrapping
/// (a long value makes its column wider; long texts are shortened before they get here).
pub fn table<I, T>(header: I) -> Table
where
    I: IntoIterator<Item = T>,
    T: Into<Cell>,
{
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.into_iter().map(Into::into).collect::<Vec<Cell>>());
    if colour() {
        table.enforce_styling().style_text_only();
    } else {
        table.force_no_tty();
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// Prints `table` without trailing blanks.
pub fn print_table(table: &Table) {
    println!("{}", table.trim_fmt());
}

/// The colour of a status word: a task's status, a queue's or a schedule's state.
fn status_colour(word: &str) -> Option<Color> {
    match word {
        "failed" | "invalid" | "orphaned" => Some(Color::Red),
        "completed" | "enabled" => Some(Color::Green),
        "running" => Some(Color::Yellow),
        "pending" => Some(Color::Blue),
        "paused" => Some(Color::Magenta),
        "cancelled" => Some(Color::DarkGrey),
        _ => None,
    }
}

/// A cell holding `text`, coloured as the status word `word` (when stdout takes colour).
pub fn status_cell(text: impl ToString, word: &str) -> Cell {
    let cell = Cell::new(text);
    match status_colour(word) {
        Some(colour) => cell.fg(colour),
        None => cell,
    }
}

/// A time to the second, in UTC (table headers say so), or `-`.
pub fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

/// A time to the millisecond with its zone, or `-` (`anchor tasks show`).
pub fn time_ms(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
    )
}

/// An age such as `3s`, `2m5s` or `1h0m12s` (whole seconds; below a second, `850ms`).
pub fn age(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    humantime::format_duration(Duration::from_secs(d.as_secs()))
        .to_string()
        .replace(' ', "")
}

/// A duration in milliseconds, for JSON.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `text` on one line and at most `max` characters, ending in `…` when shortened.
pub fn shorten(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let mut short: String = line.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// Prints a JSON document (lists and counts), indented.
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_shortened_texts() {
        assert_eq!(age(Duration::from_millis(850)), "850ms");
        assert_eq!(age(Duration::from_millis(125_400)), "2m5s");
        assert_eq!(age(Duration::from_secs(3612)), "1h12s");
        assert_eq!(shorten("a  b\nc", 10), "a b c");
        assert_eq!(shorten("abcdefghijk", 5), "abcd…");
    }
}
