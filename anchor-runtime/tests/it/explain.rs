//! The hot-path statements keep their intended plans on a large table, checked with
//! `EXPLAIN` instead of a stopwatch: 1M finished and 100k pending rows, and the claim,
//! completion, renewal, rescue and retention statements exactly as the runtime prepares
//! them (`Client::statements`), under both custom and generic prepared-statement plans.
//! None of them may read the whole table, and each must use the index built for it.

use anchor_runtime::tokio_postgres;
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::harness::test_db;

/// Fills the table: 1M finished rows (completed, failed and cancelled, finished over the
/// last 10 days), 100k pending rows (a tenth of them not due yet) and 1000 running rows
/// (half with an expired lease), then analyses it as autovacuum would.
async fn fill(conn: &tokio_postgres::Client) -> Result<()> {
    conn.batch_execute(
        "INSERT INTO anchor.tasks (name, status, attempts, timeout_ms, payload, run_after, \
           created_at, started_at, finished_at) \
         SELECT 'Done' || (g % 5), CASE WHEN g % 50 = 0 THEN 3 WHEN g % 97 = 0 THEN 4 ELSE 2 END, \
           1, 60000, jsonb_build_object('i', g), now() - (g % 864000) * interval '1 second', \
           now() - (g % 864000) * interval '1 second', now() - (g % 864000) * interval '1 second', \
           now() - (g % 864000) * interval '1 second' \
         FROM generate_series(1, 1000000) g; \
         INSERT INTO anchor.tasks (name, status, timeout_ms, payload, run_after) \
         SELECT 'Work' || (g % 5), 0, 60000, jsonb_build_object('i', g), \
           CASE WHEN g % 10 = 0 THEN now() + interval '1 hour' ELSE now() - interval '1 minute' END \
         FROM generate_series(1, 100000) g; \
         INSERT INTO anchor.tasks (name, status, attempts, timeout_ms, payload, lease_owner, \
           lease_token, lease_expires_at, started_at) \
         SELECT 'Work' || (g % 5), 1, 1, 60000, '{}'::jsonb, 'w', g, \
           now() + CASE WHEN g % 2 = 0 THEN interval '30 seconds' ELSE interval '-30 seconds' END, \
           now() \
         FROM generate_series(1, 1000) g; \
         ANALYZE anchor.tasks;",
    )
    .await
    .context("cannot fill the table")?;
    Ok(())
}

/// A sample argument for a parameter of type `ty`, as SQL text. Plans depend on types and
/// rough sizes, not on exact values, so one value per type serves every statement and the
/// test keeps working when a statement gains or reorders parameters.
fn sample_argument(ty: &str, batch: &Batch) -> Result<String> {
    Ok(match ty {
        // A claim or renewal names a few task kinds; a worker id; a lease token.
        "text[]" => "ARRAY['Work0', 'Work1', 'Work2']::text[]".to_string(),
        "text" => "'worker-1'::text".to_string(),
        // A batch of ids (and tokens) of running rows.
        "bigint[]" => {
            let ids: Vec<String> = batch.clone().map(|i: i64| i.to_string()).collect();
            format!("'{{{}}}'::bigint[]", ids.join(","))
        }
        // The attempt numbers and started flags of a batch.
        "integer[]" => {
            let n = batch.clone().count();
            format!("array_fill(1, ARRAY[{n}])::integer[]")
        }
        // The new statuses of a batch of outcomes.
        "smallint[]" => {
            let n = batch.clone().count();
            format!("array_fill(2::smallint, ARRAY[{n}])::smallint[]")
        }
        "boolean[]" => {
            let n = batch.clone().count();
            format!("array_fill(true, ARRAY[{n}])::boolean[]")
        }
        // Limits (the largest claim a default worker makes), tokens, durations in ms.
        "bigint" => "500::bigint".to_string(),
        "integer" => "100".to_string(),
        "timestamp with time zone" => "now()".to_string(),
        other => bail!("no sample argument for a parameter of type {other}; add one"),
    })
}

/// The ids of running rows that batched statements get.
type Batch = std::ops::RangeInclusive<i64>;

/// 100 of the running rows of [`fill`], which come after its 1.1M others (identity ids
/// start at 1).
const LARGE_TABLE_BATCH: Batch = 1_100_001..=1_100_100;

/// Every plan node of an `EXPLAIN (FORMAT JSON)` result.
fn nodes(plan: &Value) -> Vec<&Value> {
    let mut out = vec![plan];
    if let Some(children) = plan.get("Plans").and_then(Value::as_array) {
        for child in children {
            out.extend(nodes(child));
        }
    }
    out
}

/// Explains `sql` as a prepared statement under `plan_cache_mode`, returning the plan's nodes
/// as (node type, relation, index) and the plan text for failure messages.
async fn explain(
    conn: &tokio_postgres::Client,
    sql: &str,
    plan_cache_mode: &str,
    batch: &Batch,
) -> Result<(Vec<(String, String, String)>, String)> {
    conn.batch_execute("DEALLOCATE ALL").await?;
    conn.batch_execute(&format!("SET plan_cache_mode = {plan_cache_mode}"))
        .await?;
    conn.batch_execute(&format!("PREPARE hot AS {sql}"))
        .await
        .with_context(|| format!("cannot prepare {sql}"))?;
    let types: Vec<String> = conn
        .query_one(
            "SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = 'hot'",
            &[],
        )
        .await?
        .get(0);
    let args = types
        .iter()
        .map(|t| sample_argument(t, batch))
        .collect::<Result<Vec<_>>>()?;
    let execute = if args.is_empty() {
        "EXECUTE hot".to_string()
    } else {
        format!("EXECUTE hot({})", args.join(", "))
    };
    let row = conn
        .query_one(&format!("EXPLAIN (FORMAT JSON) {execute}"), &[])
        .await
        .with_context(|| format!("cannot explain {sql}"))?;
    let json: Value = row.get(0);
    let plan = &json[0]["Plan"];
    let text = serde_json::to_string_pretty(plan)?;
    let found = nodes(plan)
        .into_iter()
        .map(|n| {
            let field = |k: &str| n.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            (
                field("Node Type"),
                field("Relation Name"),
                field("Index Name"),
            )
        })
        .collect();
    Ok((found, text))
}

/// Checks that `sql` reads `tasks` through `index` and never scans the table sequentially.
async fn assert_plan(
    conn: &tokio_postgres::Client,
    what: &str,
    sql: &str,
    index: &str,
) -> Result<()> {
    for mode in ["force_custom_plan", "force_generic_plan"] {
        let (found, text) = explain(conn, sql, mode, &LARGE_TABLE_BATCH).await?;
        let seq_scan = found
            .iter()
            .any(|(node, rel, _)| node == "Seq Scan" && rel == "tasks");
        assert!(!seq_scan, "{what} ({mode}) scans the whole table:\n{text}");
        let uses_index = found.iter().any(|(_, _, idx)| idx == index);
        assert!(uses_index, "{what} ({mode}) does not use {index}:\n{text}");
    }
    Ok(())
}

#[tokio::test]
async fn hot_statements_use_their_indexes_on_a_large_table() -> Result<()> {
    let db = test_db().await?;
    let (conn, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    fill(&conn).await?;
    let statements = db.client.statements();
    assert_plan(&conn, "the claim", &statements.claim, "tasks_claim_idx").await?;
    assert_plan(
        &conn,
        "the completion",
        &statements.set_outcomes,
        "tasks_pkey",
    )
    .await?;
    assert_plan(&conn, "the renewal", &statements.renew, "tasks_pkey").await?;
    assert_plan(
        &conn,
        "the rescue",
        &statements.rescue_select,
        "tasks_lease_idx",
    )
    .await?;
    assert_plan(
        &conn,
        "the retention delete",
        &statements.prune_completed,
        "tasks_finished_idx",
    )
    .await?;
    drop(conn);
    let _ = driver.await;
    Ok(())
}

/// Checks that `sql`, for `batch`, never scans the task table sequentially.
async fn assert_no_seq_scan(
    conn: &tokio_postgres::Client,
    what: &str,
    sql: &str,
    batch: &Batch,
) -> Result<()> {
    for mode in ["force_custom_plan", "force_generic_plan"] {
        let (found, text) = explain(conn, sql, mode, batch).await?;
        let seq_scan = found
            .iter()
            .any(|(node, rel, _)| node == "Seq Scan" && rel == "tasks");
        assert!(
            !seq_scan,
            "{what} ({mode}, {} ids) scans the whole table:\n{text}",
            batch.clone().count()
        );
    }
    Ok(())
}

static BURST: anchor_runtime::TaskDefinition = anchor_runtime::TaskDefinition {
    name: "Work0",
    retry: None,
    timeout_ms: 60_000,
    cron: None,
    on_failed: None,
    default_params: "{}",
    max_rescues: None,
    queue: "default",
    priority: 0,
};

/// Right after a burst into a fresh table, before autovacuum has analysed it, the planner
/// knows little about the rows: the claim and the batched writes must still go through
/// their indexes instead of hashing the whole table on every call (which made claims of a
/// few hundred tasks cost ~100 ms on a 50k-row table).
#[tokio::test]
async fn hot_statements_use_their_indexes_before_the_table_is_analysed() -> Result<()> {
    let db = test_db().await?;
    let (conn, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    // What a benchmark run after a previous one sees: the statistics were taken during an
    // earlier backlog, then the table was emptied and 50k tasks arrive through the bulk
    // enqueue, faster than autovacuum looks.
    conn.batch_execute(
        "INSERT INTO anchor.tasks (name, timeout_ms, payload) \
         SELECT 'Work0', 60000, '{}'::jsonb FROM generate_series(1, 50000); \
         ANALYZE anchor.tasks; \
         TRUNCATE anchor.tasks RESTART IDENTITY",
    )
    .await?;
    let params: Vec<serde_json::Value> =
        (0..50_000).map(|i| serde_json::json!({ "i": i })).collect();
    for chunk in params.chunks(5000) {
        db.client.enqueue_many(&BURST, chunk, &[]).await?;
    }
    // A first claim has leased some of them, as in a running worker.
    conn.batch_execute(
        "UPDATE anchor.tasks SET status = 1, lease_token = id, lease_owner = 'w', \
           lease_expires_at = now() WHERE id <= 1000",
    )
    .await?;
    let statements = db.client.statements();
    let batched = [
        ("the completion", &statements.set_outcomes),
        ("the renewal", &statements.renew),
        ("the lease check", &statements.lease_held),
        ("the release", &statements.release),
    ];
    for (what, sql) in [("the claim", &statements.claim)]
        .into_iter()
        .chain(batched)
    {
        assert_no_seq_scan(&conn, what, sql, &(1..=100)).await?;
    }
    // Once the table is analysed, a custom plan for a large batch (500 completions) was a
    // hash join over the whole table: the batched statements must stay on the primary key.
    conn.batch_execute("ANALYZE anchor.tasks").await?;
    for (what, sql) in batched {
        assert_no_seq_scan(&conn, what, sql, &(1..=500)).await?;
    }
    drop(conn);
    let _ = driver.await;
    Ok(())
}

/// The pages of the claim index the claim reads when it runs for real (`EXPLAIN (ANALYZE,
/// BUFFERS)`, rolled back): names `Work0`, 100 tasks, queue `queue`. Also the plan text.
async fn claim_buffers(
    conn: &mut tokio_postgres::Client,
    claim: &str,
    queue: &str,
) -> Result<(i64, String)> {
    // A prepared statement outlives the transaction it was made in.
    conn.batch_execute("DEALLOCATE ALL").await?;
    let tx = conn.transaction().await?;
    tx.batch_execute(&format!("PREPARE claim AS {claim}"))
        .await?;
    let row = tx
        .query_one(
            &format!(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE claim(\
                 ARRAY['Work0']::text[], 100, 'w', 1, 30000, '{queue}')"
            ),
            &[],
        )
        .await?;
    let json: Value = row.get(0);
    let plan = &json[0]["Plan"];
    // The pages its scans of the claim index read (the update's writes into the table and
    // its other indexes grow with their depth, whatever the claim reads).
    let touched: i64 = nodes(plan)
        .into_iter()
        .filter(|n| n.get("Index Name").and_then(Value::as_str) == Some("tasks_claim_idx"))
        .map(|n| {
            let pages = |k: &str| n.get(k).and_then(Value::as_i64).unwrap_or(0);
            pages("Shared Hit Blocks") + pages("Shared Read Blocks")
        })
        .sum();
    let claimed = plan.get("Actual Rows").and_then(Value::as_i64).unwrap_or(0);
    let text = serde_json::to_string_pretty(plan)?;
    tx.rollback().await?;
    ensure!(
        claimed == 100,
        "the claim took {claimed} rows, not 100:\n{text}"
    );
    Ok((touched, text))
}

/// A backlog of another queue (1M pending rows, older than every task of this one, so at
/// the head of the index before queues existed) costs the claim nothing: its scans read as
/// many index pages with it as without it (one more level of the tree at most). Tasks due later at a higher priority (a retry
/// waiting, a task scheduled for tomorrow) do not either.
#[tokio::test]
async fn the_claim_reads_nothing_of_other_queues_or_of_tasks_not_due() -> Result<()> {
    let db = test_db().await?;
    let (mut conn, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    conn.batch_execute(
        "INSERT INTO anchor.tasks (name, timeout_ms, payload, run_after, priority) \
         SELECT 'Work0', 60000, '{}'::jsonb, now() - interval '1 minute', 5 \
         FROM generate_series(1, 1000)",
    )
    .await?;
    // On its own: VACUUM cannot run inside the implicit transaction of several statements.
    conn.batch_execute("VACUUM ANALYZE anchor.tasks").await?;
    let claim = db.client.statements().claim;
    let (alone, _) = claim_buffers(&mut conn, &claim, "default").await?;
    conn.batch_execute(
        "INSERT INTO anchor.tasks (name, timeout_ms, payload, run_after, queue) \
         SELECT 'Foreign', 60000, '{}'::jsonb, now() - interval '1 day', 'other' \
         FROM generate_series(1, 1000000); \
         INSERT INTO anchor.tasks (name, timeout_ms, payload, run_after, priority) \
         SELECT 'Work0', 60000, '{}'::jsonb, now() + interval '1 hour', 0 \
         FROM generate_series(1, 100000)",
    )
    .await?;
    conn.batch_execute("VACUUM ANALYZE anchor.tasks").await?;
    let (with_backlog, plan) = claim_buffers(&mut conn, &claim, "default").await?;
    ensure!(
        with_backlog <= alone + alone / 5 + 20,
        "the claim read {with_backlog} pages of its index beside a foreign backlog and tasks \
         not due, {alone} without them:\n{plan}"
    );
    drop(conn);
    let _ = driver.await;
    Ok(())
}
