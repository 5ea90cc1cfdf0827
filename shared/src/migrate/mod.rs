//! Versioned schema changes, applied by one explicit step with limits of its own: `quiver-local
//! migrate` (also run by `up`, `seed` and `bench`), and in AWS a one-off invocation of the
//! `snapshot` function with `{"detail-type": "quiver.migrate"}` (README, "Migrations"). A request
//! never migrates: a function that finds the schema behind what it needs answers 503 `schema`
//! ([`check`]).
//!
//! A migration that would rewrite a large table is split so that it stays online: a catalog-only
//! change and a trigger for new rows (a short lock, taken with `lock_timeout` and retried, so it
//! never queues in front of traffic for long), then a backfill in small transactions
//! ([`backfill`]), and only then the version that readers wait for.

mod backfill;
pub mod check;
mod ddl;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pg::Pg;

/// One migration: its version (recorded in `quiver_migrations` once done) and what it does.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub step: Step,
}

pub enum Step {
    /// SQL applied in one transaction together with its record; each statement is safe to run twice.
    Sql(&'static str),
    /// `user_events.duration_ms` filled for rows written before its trigger, in batches.
    BackfillDurationMs,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "user_events",
        step: Step::Sql(include_str!("../../migrations/0001_user_events.sql")),
    },
    Migration {
        version: 2,
        name: "locks_and_idempotency",
        step: Step::Sql(include_str!("../../migrations/0002_locks_and_idempotency.sql")),
    },
    Migration {
        version: 3,
        name: "duration_ms",
        step: Step::Sql(include_str!("../../migrations/0003_duration_ms.sql")),
    },
    Migration { version: 4, name: "duration_ms_backfill", step: Step::BackfillDurationMs },
];

/// The newest version this code knows.
pub const LATEST: i32 = 4;
/// What every query needs: `user_events`, and idempotency keys scoped to their caller.
pub const BASE: i32 = 2;
/// What a reader of `user_events.duration_ms` needs (`analytics` with `source=postgres`, the
/// snapshot export): the column filled for every row, not only for rows written since migration 3.
pub const DURATION_MS: i32 = 4;

/// The key of the advisory lock that lets one migration step run at a time.
const LOCK_KEY: i64 = 727000;

/// What the migration step may do to the traffic around it. These replace the API's own limits
/// (`QUIVER_PG_TIMEOUT_MS`), which are for requests, not for schema changes.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest wait for a table lock. A statement that waits longer rolls back and tries again
    /// later, so queries arriving behind it (PostgreSQL queues them after the waiting lock) wait
    /// at most this long.
    pub lock_timeout: Duration,
    /// Tries per locking step before the step gives up, naming what it waited for.
    pub lock_attempts: u32,
    /// `statement_timeout` of each statement the step runs (each DDL, each backfill batch).
    pub statement_timeout: Duration,
    /// Rows (by id) per backfill transaction.
    pub batch_rows: i64,
    /// Pause between backfill batches, which leaves the database's CPU and I/O to requests.
    pub pause: Duration,
    /// When set, the backfill stops before it (a Lambda invocation's end) and reports that more
    /// is left; the next run goes on from there.
    pub deadline: Option<Instant>,
    /// Apply up to this version only (tests, and rehearsing one step at a time).
    pub to: i32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            lock_timeout: Duration::from_millis(500),
            lock_attempts: 120,
            statement_timeout: Duration::from_secs(60),
            batch_rows: 10_000,
            pause: Duration::from_millis(20),
            deadline: None,
            to: LATEST,
        }
    }
}

/// What a migration step did: the version before and after, and whether anything is left (a
/// backfill stopped at the deadline; run the step again).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub from: i32,
    pub to: i32,
    pub applied: Vec<i32>,
    /// `false` when the deadline came first: run the step again to finish.
    pub done: bool,
    /// Rows the backfill updated.
    pub backfilled: u64,
    pub ms: f64,
}

/// Applies every migration not yet recorded, with the default [`Limits`].
pub async fn run(pg: &Pg) -> Result<Report> {
    run_with(pg, &Limits::default()).await
}

/// Applies every migration up to `limits.to` not yet recorded, on a session of its own that holds
/// the migration lock while it runs (a dropped or cancelled step closes it, and so releases the lock).
pub async fn run_with(pg: &Pg, limits: &Limits) -> Result<Report> {
    let started = Instant::now();
    let mut s = pg.session().await?;
    lock(&s, limits).await?;
    ddl::simple(
        &s,
        "CREATE TABLE IF NOT EXISTS quiver_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        limits,
    )
    .await?;
    let from = recorded(&s).await?;
    let mut report =
        Report { from, to: from, applied: Vec::new(), done: true, backfilled: 0, ms: 0.0 };
    let done: Vec<i32> = ddl::rows(&s, "SELECT version FROM quiver_migrations", limits)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for m in MIGRATIONS.iter().filter(|m| m.version <= limits.to && !done.contains(&m.version)) {
        let t = Instant::now();
        match m.step {
            Step::Sql(sql) => ddl::apply(&mut s, m, sql, limits).await?,
            Step::BackfillDurationMs => {
                let filled = backfill::duration_ms(&s, limits).await?;
                report.backfilled += filled.rows;
                if !filled.complete {
                    report.done = false;
                    tracing::warn!(
                        version = m.version,
                        rows = filled.rows,
                        "migration stopped at its deadline; run the step again to finish"
                    );
                    break;
                }
                ddl::record(&s, m.version, limits).await?;
            }
        }
        tracing::info!(
            version = m.version,
            name = m.name,
            ms = t.elapsed().as_secs_f64() * 1e3,
            "applied migration"
        );
        report.applied.push(m.version);
    }
    report.to = recorded(&s).await?;
    report.ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}

/// The highest version recorded (0 before any).
async fn recorded(s: &tokio_postgres::Client) -> Result<i32> {
    let row = s
        .query_one("SELECT coalesce(max(version), 0) FROM quiver_migrations", &[])
        .await
        .map_err(|e| crate::pg::db_error("read quiver_migrations", e))?;
    Ok(row.get(0))
}

/// Takes the migration lock, polling rather than queueing: a step given up while it waits leaves
/// nothing waiting on the server.
async fn lock(s: &tokio_postgres::Client, limits: &Limits) -> Result<()> {
    let give_up = Instant::now() + limits.lock_timeout * limits.lock_attempts;
    loop {
        let got: bool = s
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(|e| crate::pg::db_error("migration lock", e))?
            .get(0);
        if got {
            return Ok(());
        }
        if Instant::now() >= give_up {
            return Err(Error::unavailable(
                crate::pg::NAME,
                format!("another migration step holds the migration lock (advisory lock {LOCK_KEY}); let it finish, then run this one again"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
