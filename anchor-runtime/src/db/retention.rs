//! Retention's delete of finished tasks past their age, in bounded batches (see
//! `retention.rs`). The victims are found through `tasks_finished_idx`
//! (`migrations/V3__retention.sql`), a partial index that pending and running rows never
//! enter.

use super::{db_error, quote_ident, status, Caching, Sql};
use crate::error::Result;

/// A final status whose tasks retention deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finished {
    Completed,
    Failed,
    Cancelled,
}

impl Finished {
    fn code(self) -> i16 {
        match self {
            Finished::Completed => status::COMPLETED,
            Finished::Failed => status::FAILED,
            Finished::Cancelled => status::CANCELLED,
        }
    }
}

/// The pruning statements for one schema, one per final status.
#[derive(Debug)]
pub(crate) struct RetentionSql {
    completed: String,
    failed: String,
    cancelled: String,
}

impl RetentionSql {
    pub(crate) fn new(schema: &str) -> RetentionSql {
        RetentionSql {
            completed: prune_sql(schema, Finished::Completed.code()),
            failed: prune_sql(schema, Finished::Failed.code()),
            cancelled: prune_sql(schema, Finished::Cancelled.code()),
        }
    }

    /// The statement that prunes tasks of `finished` status.
    pub(crate) fn statement(&self, finished: Finished) -> &str {
        match finished {
            Finished::Completed => &self.completed,
            Finished::Failed => &self.failed,
            Finished::Cancelled => &self.cancelled,
        }
    }
}

/// The pruning statement for one status. The status is a literal, not a parameter, so the
/// planner can prove the partial index's predicate (`status >= 2`) for the prepared
/// statement. `$1` is the age in milliseconds, `$2` the batch size. One statement per batch
/// locks its victims with `FOR UPDATE SKIP LOCKED`, so two workers pruning at once take
/// different rows instead of waiting for each other.
fn prune_sql(schema: &str, status_code: i16) -> String {
    let tasks = format!("{}.tasks", quote_ident(schema));
    format!(
        "WITH doomed AS ( \
           SELECT id FROM {tasks} \
           WHERE status = {status_code} \
             AND finished_at < now() - $1::bigint * interval '1 millisecond' \
           ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         DELETE FROM {tasks} t USING doomed WHERE t.id = doomed.id"
    )
}

/// Deletes at most `limit` tasks of `finished` status that finished more than `age_ms`
/// ago; returns how many.
pub(crate) async fn prune_batch(
    conn: &impl Caching,
    sql: &Sql,
    finished: Finished,
    age_ms: i64,
    limit: i64,
) -> Result<u64> {
    let stmt = conn
        .prepare_cached(sql.retention.statement(finished))
        .await
        .map_err(|e| db_error("cannot prepare the retention delete", e))?;
    conn.execute(&stmt, &[&age_ms, &limit])
        .await
        .map_err(|e| db_error("cannot delete finished tasks past their retention", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_names_the_status_literally() {
        let sql = prune_sql("my\"schema", status::FAILED);
        assert!(sql.contains("\"my\"\"schema\".tasks"), "{sql}");
        assert!(sql.contains("status = 3"), "{sql}");
        assert!(sql.contains("FOR UPDATE SKIP LOCKED"), "{sql}");
        let rendered = RetentionSql::new("anchor");
        assert!(rendered
            .statement(Finished::Cancelled)
            .contains("status = 4"));
    }
}
