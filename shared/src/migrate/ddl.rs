//! Schema statements under the migration step's own limits: `lock_timeout` so that a statement
//! waiting for a busy table gives up (and the queries queued behind it go on) instead of blocking
//! them, retried until it gets its turn; `statement_timeout` of its own, not the API's.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Row};

use super::{Limits, Migration};
use crate::error::{Error, Result};
use crate::pg::{db_error, NAME};

/// `SET LOCAL` lines that put `limits` on the transaction they open.
fn limits_sql(limits: &Limits) -> String {
    format!(
        "SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}",
        limits.lock_timeout.as_millis().max(1),
        limits.statement_timeout.as_millis().max(1)
    )
}

/// A bound on the client side too, in case the server cannot answer at all.
async fn bounded<T>(
    what: &str,
    limits: &Limits,
    fut: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> Result<std::result::Result<T, tokio_postgres::Error>> {
    let limit = limits.statement_timeout + Duration::from_secs(10);
    tokio::time::timeout(limit, fut).await.map_err(|_| {
        Error::unavailable(NAME, format!("{what} timed out after {} ms", limit.as_millis()))
    })
}

/// Runs `sql` and records `m.version` in one transaction, retrying while a lock is not granted
/// within `limits.lock_timeout`.
pub(super) async fn apply(s: &mut Client, m: &Migration, sql: &str, limits: &Limits) -> Result<()> {
    let what = format!("migration {} ({})", m.version, m.name);
    for attempt in 1..=limits.lock_attempts {
        let tx = async {
            let tx = s.transaction().await?;
            tx.batch_execute(&limits_sql(limits)).await?;
            tx.batch_execute(sql).await?;
            tx.execute("INSERT INTO quiver_migrations (version) VALUES ($1)", &[&m.version])
                .await?;
            tx.commit().await
        };
        match bounded(&what, limits, tx).await? {
            Ok(()) => return Ok(()),
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                tracing::info!(
                    version = m.version,
                    attempt,
                    "{what}: a lock was busy for {} ms; trying again",
                    limits.lock_timeout.as_millis()
                );
                tokio::time::sleep(limits.lock_timeout).await;
            }
            Err(e) => return Err(db_error(&what, e)),
        }
    }
    Err(Error::unavailable(
        NAME,
        format!(
            "{what}: a lock it needs stayed busy through {} tries of {} ms (a long transaction on the table, such as an export?); run the step again when it ends",
            limits.lock_attempts,
            limits.lock_timeout.as_millis()
        ),
    ))
}

/// One statement in a transaction of its own under `limits`.
pub(super) async fn simple(s: &Client, sql: &str, limits: &Limits) -> Result<()> {
    let batch = format!("BEGIN; {}; {sql}; COMMIT", limits_sql(limits));
    bounded("migration", limits, s.batch_execute(&batch)).await?.map_err(|e| db_error(sql, e))
}

/// The rows of one query, under `limits`.
pub(super) async fn rows(s: &Client, sql: &str, limits: &Limits) -> Result<Vec<Row>> {
    bounded("migration", limits, s.query(sql, &[])).await?.map_err(|e| db_error(sql, e))
}

/// Records `version` as applied (a step whose work is not one transaction records it last).
pub(super) async fn record(s: &Client, version: i32, limits: &Limits) -> Result<()> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&version];
    let insert = s.execute(
        "INSERT INTO quiver_migrations (version) VALUES ($1) ON CONFLICT DO NOTHING",
        &params,
    );
    bounded("record migration", limits, insert)
        .await?
        .map(|_| ())
        .map_err(|e| db_error("record migration", e))
}
