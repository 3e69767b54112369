//! A small service that keeps its own data with sqlx and enqueues anchor tasks inside its
//! sqlx transactions: signing a user up writes the user's row and enqueues their welcome
//! mail in one transaction, so there is never a mail for a user who was not saved, nor a
//! saved user without their mail.
//!
//! The generated module (`src/taskgen`, from `api/tasks.yaml`) is the same whatever driver
//! the service uses; anchor-runtime's `sqlx` feature lets its `run_*_with_tx` methods take
//! an sqlx transaction.

pub mod taskgen;

use anchor_runtime::{TaskId, TaskOverride};
use sqlx::PgPool;

use crate::taskgen::{SendWelcomeParameters, TaskRunner};

/// What signing up can fail on: the service's own statements, or the enqueue.
#[derive(Debug)]
pub enum SignUpError {
    /// An sqlx statement of the service failed.
    Database(sqlx::Error),
    /// anchor refused or could not write the task.
    Enqueue(anchor_runtime::Error),
}

impl std::fmt::Display for SignUpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignUpError::Database(err) => write!(f, "cannot save the user: {err}"),
            SignUpError::Enqueue(err) => write!(f, "cannot enqueue the welcome mail: {err}"),
        }
    }
}

impl std::error::Error for SignUpError {}

impl From<sqlx::Error> for SignUpError {
    fn from(err: sqlx::Error) -> Self {
        SignUpError::Database(err)
    }
}

impl From<anchor_runtime::Error> for SignUpError {
    fn from(err: anchor_runtime::Error) -> Self {
        SignUpError::Enqueue(err)
    }
}

/// Creates the service's own table.
pub async fn create_tables(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS users (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE)",
    )
    .execute(pool)
    .await?;
    Ok(())
}

// ANCHOR: sign_up
/// Signs a user up: inserts the user and enqueues their welcome mail in one sqlx
/// transaction, committed when `commit` is true and rolled back otherwise (as when a later
/// step of the request fails). The mail's unique tag names the user, so a retried request
/// never mails twice. Returns the user's id and the task's.
pub async fn sign_up(
    pool: &PgPool,
    runner: &TaskRunner,
    email: &str,
    commit: bool,
) -> Result<(i64, TaskId), SignUpError> {
    let mut tx = pool.begin().await?;
    let (user_id,): (i64,) = sqlx::query_as("INSERT INTO users (email) VALUES ($1) RETURNING id")
        .bind(email)
        .fetch_one(&mut *tx)
        .await?;
    let params = SendWelcomeParameters {
        user_id,
        email: email.to_string(),
    };
    let tag = TaskOverride::unique_tag(format!("welcome:{user_id}"));
    let task_id = runner
        .run_send_welcome_with_tx(&mut tx, &params, &[tag])
        .await?;
    if commit {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok((user_id, task_id))
}
// ANCHOR_END: sign_up
