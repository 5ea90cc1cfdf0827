//! Versioned SQL embedded in the crate. Applying twice is harmless: each file is idempotent and
//! the applied versions are recorded.

use crate::error::Result;
use crate::pg::Pg;

/// `(version, sql)`, in order.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_user_events.sql")),
    (2, include_str!("../migrations/0002_locks_and_idempotency.sql")),
    (3, include_str!("../migrations/0003_duration_ms.sql")),
];

/// Applies every migration not yet recorded. [`Pg::client`] does this on an instance's first
/// connection; tools call it to prepare a database before using it.
pub async fn run(pg: &Pg) -> Result<()> {
    let mut c = pg.connection().await?;
    apply(pg, &mut c).await
}

/// Applies every migration not yet recorded on `c`, all in one transaction that first takes a
/// transaction-level advisory lock, so that concurrent cold starts do not race. The lock ends with
/// the transaction: a cancelled or dropped migration (its `Transaction` rolls back on drop) cannot
/// leave a pooled connection holding it.
pub(crate) async fn apply(pg: &Pg, c: &mut crate::pg::Client) -> Result<()> {
    let tx = pg.timed("migrate", c.transaction()).await?;
    pg.timed(
        "migrate",
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(727000);
             CREATE TABLE IF NOT EXISTS quiver_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());",
        ),
    )
    .await?;
    let done: Vec<i32> = pg
        .timed("migrate", tx.query("SELECT version FROM quiver_migrations", &[]))
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| !done.contains(v)) {
        pg.timed("migrate", tx.batch_execute(sql)).await?;
        pg.timed(
            "migrate",
            tx.execute("INSERT INTO quiver_migrations (version) VALUES ($1)", &[version]),
        )
        .await?;
        applied.push(*version);
    }
    pg.timed("migrate", tx.commit()).await?;
    for version in applied {
        tracing::info!(version, "applied migration");
    }
    Ok(())
}
