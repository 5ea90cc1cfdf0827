use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use duckdb::types::{TimeUnit, Value};
use duckdb::Connection;

use super::load::sql_string;
use super::{
    duck_err, Column, DuckSettings, ExportReport, SnapshotMeta, SnapshotSettings, Window,
    WindowMeta, BATCHES_IN_FLIGHT, DAY_FILES_PER_PART, FETCH_ROWS, NAME, ROWS_PER_PART, SCHEMA,
};
use crate::analytics::pg_window;
use crate::error::{Error, Result};
use crate::time::{ms, rfc3339, DAY_US};

/// Flattens the metadata fields the queries use. `duration_ms` is the stored column that
/// `analytics::postgres` averages (migrations 3 and 4), so both sources average the same values;
/// `amount_cents` is set only where it is a whole number that fits. The raw JSON stays in `metadata`.
const EXPORT_SQL: &str = concat!(
    "SELECT id, user_id, event_type, page_url, created_at, \
       duration_ms, \
       metadata->>'browser', metadata->>'device', metadata->>'country', metadata->>'referrer', \
       CASE WHEN jsonb_typeof(metadata->'amount_cents') = 'number' AND (metadata->>'amount_cents') ~ '^-?[0-9]{1,18}$' \
            THEN (metadata->>'amount_cents')::int8 END, \
       metadata::text \
     FROM user_events WHERE ",
    pg_window!(),
    " ORDER BY created_at"
);

const STATS_SQL: &str = concat!(
    "SELECT count(*), min(created_at), max(created_at) FROM user_events WHERE ",
    pg_window!()
);

/// Exports `user_events` (within `window`) to Parquet, publishes it under `settings.prefix`
/// and prunes old versions. The whole export is bounded by `settings.export_timeout`.
pub async fn export(
    pg: &crate::pg::Pg,
    storage: &crate::storage::Storage,
    settings: &SnapshotSettings,
    window: &Window,
) -> Result<ExportReport> {
    let started = Instant::now();
    // One export per prefix at a time, across instances; the version is named once it is ours,
    // so versions are published in the order they are named.
    let ttl = settings.export_timeout + std::time::Duration::from_secs(60);
    let lease =
        crate::artifact::Lease::acquire(storage, &settings.prefix, "snapshot export", ttl).await?;
    let version = crate::artifact::new_version();
    let scratch = Scratch::new(settings.tmp_dir.join(format!("quiver-export-{version}")));
    let result = match tokio::time::timeout(
        settings.export_timeout,
        export_into(pg, storage, settings, window, &version, &scratch),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(Error::unavailable(
            NAME,
            format!("the export timed out after {} s", settings.export_timeout.as_secs()),
        )),
    };
    drop(scratch);
    lease.release().await;
    let mut report = result?;
    report.total_ms = ms(started.elapsed());
    tracing::info!(version = %report.version, rows = report.rows, files = report.files, bytes = report.bytes, ms = report.total_ms, "snapshot exported");
    Ok(report)
}

async fn export_into(
    pg: &crate::pg::Pg,
    storage: &crate::storage::Storage,
    settings: &SnapshotSettings,
    window: &Window,
    version: &str,
    scratch: &Scratch,
) -> Result<ExportReport> {
    let dir = scratch.dir.as_path();
    use tokio_postgres::IsolationLevel;
    let started = Instant::now();
    // `duration_ms` is read from its column, which migration 4 has filled for every row.
    let mut c = pg.client_at(crate::migrate::DURATION_MS).await?;
    // Every statement of the export runs under the export's own limit, not the API's
    // per-statement one (`QUIVER_PG_TIMEOUT_MS`): on a large table the count alone takes longer.
    let xp = pg.bounded(settings.export_timeout);
    let tx = xp
        .timed(
            "begin export",
            c.build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start(),
        )
        .await?;
    let limit_ms = settings.export_timeout.as_millis() as u64;
    xp.timed(
        "export timeout",
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {limit_ms}")),
    )
    .await?;
    // Only events within the API's range are exported ([`crate::events::CREATED_AT_US`]): one
    // stored before the range was enforced would name a day folder no reader accepts.
    let (first, end) = crate::events::created_at_bounds();
    let from = Some(window.from.map_or(first, |f| f.max(first)));
    let to = Some(window.to.map_or(end, |t| t.min(end)));
    let stats = xp.timed("export count", tx.query_one(STATS_SQL, &[&from, &to])).await?;
    let (count, min, max): (i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        (stats.get(0), stats.get(1), stats.get(2));
    let partitioned = match (min, max) {
        (Some(a), Some(b)) => {
            a.timestamp_micros().div_euclid(DAY_US) != b.timestamp_micros().div_euclid(DAY_US)
        }
        _ => false,
    };

    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| Error::Internal(format!("create {}: {e}", dir.display())))?;
    let (tx_rows, rx_rows) =
        tokio::sync::mpsc::channel::<Vec<tokio_postgres::Row>>(BATCHES_IN_FLIGHT);
    let writer = {
        let (duck, dir, stop) = (settings.duck.clone(), dir.to_path_buf(), scratch.stop.clone());
        tokio::task::spawn_blocking(move || {
            let written = PartWriter::run(&duck, &dir, partitioned, &stop, rx_rows);
            if stop.load(Ordering::SeqCst) {
                // Abandoned while this thread ran on: what it wrote since goes too.
                let _ = std::fs::remove_dir_all(&dir);
            }
            written
        })
    };
    let fetched: Result<()> = async {
        let stmt = xp.timed("prepare export", tx.prepare(EXPORT_SQL)).await?;
        let portal = xp.timed("open export cursor", tx.bind(&stmt, &[&from, &to])).await?;
        loop {
            let rows = xp.timed("fetch export rows", tx.query_portal(&portal, FETCH_ROWS)).await?;
            if rows.is_empty() {
                return Ok(());
            }
            if tx_rows.send(rows).await.is_err() {
                // The writer stopped; its error is reported below.
                return Ok(());
            }
        }
    }
    .await;
    drop(tx_rows);
    let written = writer.await.map_err(|e| Error::Internal(format!("snapshot writer: {e}")))?;
    fetched?;
    let (files, rows) = written?;
    xp.timed("end export", tx.commit()).await?;
    if rows != count as u64 {
        return Err(Error::Internal(format!(
            "exported {rows} rows but the snapshot holds {count}"
        )));
    }
    let export_ms = ms(started.elapsed());

    let uploaded = Instant::now();
    let meta = SnapshotMeta {
        table: "user_events".into(),
        row_count: rows,
        min_created_at: min.map(rfc3339),
        max_created_at: max.map(rfc3339),
        window: WindowMeta { from: window.from.map(rfc3339), to: window.to.map(rfc3339) },
        partitioned_by: partitioned.then(|| "dt".into()),
        schema: SCHEMA
            .iter()
            .map(|(n, t)| Column { name: n.to_string(), ty: t.to_string() })
            .collect(),
    };
    let manifest =
        crate::artifact::publish(storage, &settings.prefix, version, &files, meta).await?;
    let deleted =
        match crate::artifact::retain(storage, &settings.prefix, &settings.retention, &manifest)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                // The new version is live; pruning is retried by the next export.
                tracing::warn!(prefix = %settings.prefix, error = %e, "retention failed");
                Vec::new()
            }
        };
    Ok(ExportReport {
        version: version.to_string(),
        prefix: settings.prefix.clone(),
        rows,
        files: manifest.files.len(),
        bytes: manifest.files.iter().map(|f| f.size).sum(),
        partitioned_by_day: partitioned,
        min_created_at: min.map(rfc3339),
        max_created_at: max.map(rfc3339),
        deleted_versions: deleted,
        export_ms,
        upload_ms: ms(uploaded.elapsed()),
        total_ms: 0.0,
    })
}

/// The export's local folder. It goes when the export ends, however it ends (an error, its
/// timeout, a dropped request), and the Parquet writer, which runs on a thread of its own, stops
/// at its next step and removes whatever it wrote since.
struct Scratch {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
}

impl Scratch {
    fn new(dir: PathBuf) -> Self {
        Scratch { dir, stop: Arc::new(AtomicBool::new(false)) }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "removing an export's folder failed");
            }
        }
    }
}

/// Turns the stream of fetched rows into Parquet parts, on a blocking thread. Rows arrive ordered
/// by `created_at`, so a part is cut at a day boundary once it holds `ROWS_PER_PART` rows, or at
/// twice that inside one very busy day.
struct PartWriter<'a> {
    conn: Connection,
    dir: &'a Path,
    stop: &'a AtomicBool,
    partitioned: bool,
    in_chunk: usize,
    last_day: Option<i64>,
    seq: u32,
    rows: u64,
    files: Vec<(String, PathBuf)>,
}

const CHUNK_DDL: &str = "CREATE TABLE chunk (id BIGINT, user_id INTEGER, event_type VARCHAR, page_url VARCHAR, \
     created_at TIMESTAMPTZ, duration_ms DOUBLE, browser VARCHAR, device VARCHAR, country VARCHAR, referrer VARCHAR, \
     amount_cents BIGINT, metadata VARCHAR, day BIGINT)";

impl<'a> PartWriter<'a> {
    fn run(
        duck: &DuckSettings,
        dir: &'a Path,
        partitioned: bool,
        stop: &'a AtomicBool,
        mut rx: tokio::sync::mpsc::Receiver<Vec<tokio_postgres::Row>>,
    ) -> Result<(Vec<(String, PathBuf)>, u64)> {
        let conn = duck.open()?;
        conn.execute_batch(CHUNK_DDL).map_err(duck_err("create the export table"))?;
        let mut w = PartWriter {
            conn,
            dir,
            stop,
            partitioned,
            in_chunk: 0,
            last_day: None,
            seq: 0,
            rows: 0,
            files: Vec::new(),
        };
        while let Some(batch) = rx.blocking_recv() {
            w.write(&batch)?;
        }
        if w.in_chunk > 0 || w.files.is_empty() {
            // An empty export still publishes one (empty) part, so readers see the schema.
            w.flush()?;
        }
        w.files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((w.files, w.rows))
    }

    fn created_us(row: &tokio_postgres::Row) -> Result<i64> {
        row.try_get::<_, DateTime<Utc>>(4)
            .map(|t| t.timestamp_micros())
            .map_err(|e| Error::Internal(format!("export row created_at: {e}")))
    }

    fn write(&mut self, batch: &[tokio_postgres::Row]) -> Result<()> {
        let mut start = 0;
        while start < batch.len() {
            let mut end = start;
            while end < batch.len() {
                let day = Self::created_us(&batch[end])?.div_euclid(DAY_US);
                let full = self.in_chunk >= 2 * ROWS_PER_PART
                    || (self.in_chunk >= ROWS_PER_PART && self.last_day != Some(day));
                if full {
                    break;
                }
                self.in_chunk += 1;
                self.last_day = Some(day);
                end += 1;
            }
            self.append(&batch[start..end])?;
            if end < batch.len() {
                self.flush()?;
            }
            start = end;
        }
        Ok(())
    }

    fn append(&mut self, rows: &[tokio_postgres::Row]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let bad = |e: tokio_postgres::Error| Error::Internal(format!("export row: {e}"));
        let mut app = self.conn.appender("chunk").map_err(duck_err("export appender"))?;
        for r in rows {
            let us = Self::created_us(r)?;
            app.append_row(duckdb::params![
                r.try_get::<_, i64>(0).map_err(bad)?,
                r.try_get::<_, i32>(1).map_err(bad)?,
                r.try_get::<_, &str>(2).map_err(bad)?,
                r.try_get::<_, &str>(3).map_err(bad)?,
                Value::Timestamp(TimeUnit::Microsecond, us),
                r.try_get::<_, Option<f64>>(5).map_err(bad)?,
                r.try_get::<_, Option<&str>>(6).map_err(bad)?,
                r.try_get::<_, Option<&str>>(7).map_err(bad)?,
                r.try_get::<_, Option<&str>>(8).map_err(bad)?,
                r.try_get::<_, Option<&str>>(9).map_err(bad)?,
                r.try_get::<_, Option<i64>>(10).map_err(bad)?,
                r.try_get::<_, &str>(11).map_err(bad)?,
                us.div_euclid(DAY_US),
            ])
            .map_err(duck_err("export append"))?;
        }
        app.flush().map_err(duck_err("export append"))?;
        self.rows += rows.len() as u64;
        Ok(())
    }

    /// Writes the buffered rows as one part (per day when partitioned) and empties the buffer.
    fn flush(&mut self) -> Result<()> {
        let cols = SCHEMA.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        let opts = format!("(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROWS_PER_PART})");
        let groups = match self.partitioned {
            true => {
                let mut st = self
                    .conn
                    .prepare("SELECT day, count(*) FROM chunk GROUP BY day ORDER BY day")
                    .map_err(duck_err("export days"))?;
                let rows = st
                    .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as usize)))
                    .map_err(duck_err("export days"))?;
                day_groups(
                    &rows.collect::<duckdb::Result<Vec<_>>>().map_err(duck_err("export days"))?,
                )
            }
            // One file of every row.
            false => vec![(0, -1)],
        };
        let seq = self.seq;
        self.seq += 1;
        for (k, (first, last)) in groups.into_iter().enumerate() {
            if self.stop.load(Ordering::SeqCst) {
                return Err(Error::Internal("the export was abandoned".into()));
            }
            let name = match first == last {
                true => {
                    let date = DateTime::from_timestamp_micros(first * DAY_US)
                        .ok_or_else(|| Error::Internal(format!("day {first} is out of range")))?
                        .format("%Y-%m-%d");
                    format!("dt={date}/part-{seq:05}.parquet")
                }
                // Days that share a file: named by the part and the group, so never twice.
                false if self.partitioned => format!("part-{seq:05}{k:03}.parquet"),
                false => format!("part-{seq:05}.parquet"),
            };
            let path = self.dir.join(&name);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::Internal(format!("create {}: {e}", dir.display())))?;
            }
            // The days are our own integers and the path our own; COPY TO takes no parameters.
            let rows = match self.partitioned {
                true => format!("WHERE day BETWEEN {first} AND {last}"),
                false => String::new(),
            };
            let sql =
                format!("COPY (SELECT {cols} FROM chunk {rows}) TO {} {opts}", sql_string(&path));
            self.conn.execute_batch(&sql).map_err(duck_err("write a Parquet part"))?;
            self.files.push((name, path));
        }
        // Dropping the table (rather than deleting rows) gives its memory back at once.
        self.conn
            .execute_batch(&format!("DROP TABLE chunk; {CHUNK_DDL}"))
            .map_err(duck_err("reset the export table"))?;
        self.in_chunk = 0;
        Ok(())
    }
}

/// The files of one part, as ranges of days `(first, last)` (inclusive) from `(day, rows)` in
/// day order: a day each when there are at most [`DAY_FILES_PER_PART`]; otherwise a day with at
/// least its share of the rows keeps a file of its own, and the days between share one until it
/// holds that share: at most about twice [`DAY_FILES_PER_PART`] files.
fn day_groups(days: &[(i64, usize)]) -> Vec<(i64, i64)> {
    if days.len() <= DAY_FILES_PER_PART {
        return days.iter().map(|&(d, _)| (d, d)).collect();
    }
    let total: usize = days.iter().map(|&(_, n)| n).sum();
    let share = total.div_ceil(DAY_FILES_PER_PART).max(1);
    let mut groups = Vec::new();
    let mut open: Option<(i64, i64, usize)> = None;
    for &(day, rows) in days {
        if rows >= share {
            groups.extend(open.take().map(|(a, b, _)| (a, b)));
            groups.push((day, day));
            continue;
        }
        let (first, _, n) = open.unwrap_or((day, day, 0));
        open = Some((first, day, n + rows));
        if n + rows >= share {
            groups.extend(open.take().map(|(a, b, _)| (a, b)));
        }
    }
    groups.extend(open.map(|(a, b, _)| (a, b)));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 29, item 4: the number of files follows the rows, whatever the dates.
    #[test]
    fn sparse_days_share_files_and_busy_days_keep_their_own() {
        let few: Vec<_> = (0..DAY_FILES_PER_PART as i64).map(|d| (d, 1)).collect();
        assert_eq!(day_groups(&few).len(), DAY_FILES_PER_PART, "a file per day");
        let sparse: Vec<_> = (0..10_000).map(|d| (d * 3, 1)).collect();
        let groups = day_groups(&sparse);
        assert!(groups.len() <= 2 * DAY_FILES_PER_PART + 1, "{} files", groups.len());
        // Every day is in exactly one group, in order.
        let covered: usize = groups
            .iter()
            .map(|&(a, b)| sparse.iter().filter(|&&(d, _)| (a..=b).contains(&d)).count())
            .sum();
        assert_eq!(covered, sparse.len());
        assert!(groups.windows(2).all(|w| w[0].1 < w[1].0));
        let mut mixed = sparse.clone();
        mixed[5_000].1 = 100_000;
        let busy = mixed[5_000].0;
        assert!(day_groups(&mixed).contains(&(busy, busy)), "a busy day keeps its own file");
    }
}
