//! What the database command tests share: running the built `anchor` against a database,
//! reading its output and JSON. Each test binary uses part of it.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs `anchor ARGS` with `DATABASE_URL=url`, colour left to the defaults (stdout is a
/// pipe here, so none).
pub fn anchor(url: &str, args: &[&str]) -> Output {
    anchor_with(url, args, &[])
}

/// [`anchor`] with more environment variables.
pub fn anchor_with(url: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    environment(&mut Command::new(env!("CARGO_BIN_EXE_anchor")), url, envs)
        .args(args)
        .output()
        .expect("run anchor")
}

/// `command` with `DATABASE_URL=url`, none of the caller's colour settings, and `envs`.
pub fn environment<'a>(
    command: &'a mut Command,
    url: &str,
    envs: &[(&str, &str)],
) -> &'a mut Command {
    command
        .env("DATABASE_URL", url)
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR")
        .env_remove("CLICOLOR_FORCE")
        .envs(envs.iter().copied())
}

/// stdout then stderr, for assertions and their messages.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// stdout as JSON.
pub fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(output)))
}
