//! Migration 4: `user_events.duration_ms` for the rows written before migration 3 gave the column
//! its trigger. One short transaction per `batch_rows` ids, so no row is locked for long and a
//! stopped backfill keeps what it did; rows that already hold their value are skipped, so running
//! it again goes on where it stopped.

use std::time::Instant;

use tokio_postgres::Client;

use super::Limits;
use crate::error::Result;
use crate::pg::db_error;

/// What one run did.
pub(super) struct Filled {
    pub rows: u64,
    /// `false` when the deadline came first.
    pub complete: bool,
}

/// Fills the column batch by batch, from the lowest id to the highest one at the start: every row
/// written after that (whatever its id) went through the trigger, which existed before this began.
/// A database that applied the first form of migration 3 (a generated column) has nothing to fill.
pub(super) async fn duration_ms(s: &Client, limits: &Limits) -> Result<Filled> {
    let generated: bool = s
        .query_one(
            "SELECT coalesce((SELECT attgenerated = 's' FROM pg_attribute \
              WHERE attrelid = 'user_events'::regclass AND attname = 'duration_ms' AND NOT attisdropped), false)",
            &[],
        )
        .await
        .map_err(|e| db_error("inspect user_events.duration_ms", e))?
        .get(0);
    if generated {
        tracing::info!("user_events.duration_ms is a generated column (migration 3 as first written): nothing to backfill");
        return Ok(Filled { rows: 0, complete: true });
    }
    let bounds = s
        .query_one("SELECT min(id), max(id) FROM user_events", &[])
        .await
        .map_err(|e| db_error("user_events id range", e))?;
    let (Some(lo), Some(hi)) = (bounds.get::<_, Option<i64>>(0), bounds.get::<_, Option<i64>>(1))
    else {
        return Ok(Filled { rows: 0, complete: true });
    };
    let update = s
        .prepare(
            "UPDATE user_events SET duration_ms = quiver_duration_ms(metadata) \
             WHERE id >= $1 AND id < $2 AND duration_ms IS NULL AND quiver_duration_ms(metadata) IS NOT NULL",
        )
        .await
        .map_err(|e| db_error("prepare the duration_ms backfill", e))?;
    let set_limits = format!(
        "SET statement_timeout = {}; SET lock_timeout = {}",
        limits.statement_timeout.as_millis().max(1),
        limits.lock_timeout.as_millis().max(1)
    );
    s.batch_execute(&set_limits).await.map_err(|e| db_error("backfill limits", e))?;
    let started = Instant::now();
    let mut rows = 0u64;
    let mut next = lo;
    while next <= hi {
        if limits.deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Filled { rows, complete: false });
        }
        let end = next.saturating_add(limits.batch_rows.max(1));
        // Autocommit: each batch is its own transaction.
        rows += s
            .execute(&update, &[&next, &end])
            .await
            .map_err(|e| db_error(&format!("backfill duration_ms for ids {next}..{end}"), e))?;
        next = end;
        tokio::time::sleep(limits.pause).await;
    }
    tracing::info!(
        rows,
        ms = started.elapsed().as_secs_f64() * 1e3,
        ids = hi - lo + 1,
        "backfilled user_events.duration_ms"
    );
    Ok(Filled { rows, complete: true })
}
