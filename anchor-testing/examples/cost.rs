//! What a test database costs: `cargo run --release -p anchor-testing --example cost`
//! prints the first one's time (which starts the shared cluster, unless
//! `ANCHOR_TEST_DATABASE_URL` names a server) and the median of the next twenty (create,
//! migrate, connect; then drop).

use std::time::{Duration, Instant};

use anchor_testing::TestDatabase;

#[tokio::main]
async fn main() -> Result<(), anchor_testing::Error> {
    let started = Instant::now();
    let first = TestDatabase::new().await?;
    let first_took = started.elapsed();
    drop(first);
    let mut takes: Vec<Duration> = Vec::new();
    let mut drops: Vec<Duration> = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let db = TestDatabase::new().await?;
        takes.push(started.elapsed());
        let started = Instant::now();
        drop(db);
        drops.push(started.elapsed());
    }
    takes.sort();
    drops.sort();
    println!(
        "first database (cluster start included): {first_took:.2?}; each after: {:.2?} \
         (median of 20), dropping it: {:.2?}",
        takes[10], drops[10]
    );
    Ok(())
}
