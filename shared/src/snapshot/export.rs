use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use duckdb::types::{TimeUnit, Value};
use duckdb::Connection;

use super::load::sql_string;
use super::{
    duck_err, Column, DuckSettings, ExportReport, SnapshotMeta, SnapshotSettings, Window,
    WindowMeta, BATCHES_IN_FLIGHT, FETCH_ROWS, NAME, ROWS_PER_PART, SCHEMA,
};
use crate::analytics::pg_window;
use crate::error::{Error, Result};
use crate::time::{ms, rfc3339, DAY_US};

/// Flattens the metadata fields the queries use. `duration_ms` is the generated column that
/// `analytics::postgres` averages (migration 0003), so both sources average the same values;
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
    let dir = settings.tmp_dir.join(format!("quiver-export-{version}"));
    let result = match tokio::time::timeout(
        settings.export_timeout,
        export_into(pg, storage, settings, window, &version, &dir),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(Error::unavailable(
            NAME,
            format!("the export timed out after {} s", settings.export_timeout.as_secs()),
        )),
    };
    let _ = tokio::fs::remove_dir_all(&dir).await;
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
    dir: &Path,
) -> Result<ExportReport> {
    use tokio_postgres::IsolationLevel;
    let started = Instant::now();
    let mut c = pg.client().await?;
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
    let stats =
        xp.timed("export count", tx.query_one(STATS_SQL, &[&window.from, &window.to])).await?;
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
        let (duck, dir) = (settings.duck.clone(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || PartWriter::run(&duck, &dir, partitioned, rx_rows))
    };
    let fetched: Result<()> = async {
        let stmt = xp.timed("prepare export", tx.prepare(EXPORT_SQL)).await?;
        let portal =
            xp.timed("open export cursor", tx.bind(&stmt, &[&window.from, &window.to])).await?;
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

/// Turns the stream of fetched rows into Parquet parts, on a blocking thread. Rows arrive ordered
/// by `created_at`, so a part is cut at a day boundary once it holds `ROWS_PER_PART` rows, or at
/// twice that inside one very busy day.
struct PartWriter<'a> {
    conn: Connection,
    dir: &'a Path,
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
        mut rx: tokio::sync::mpsc::Receiver<Vec<tokio_postgres::Row>>,
    ) -> Result<(Vec<(String, PathBuf)>, u64)> {
        let conn = duck.open()?;
        conn.execute_batch(CHUNK_DDL).map_err(duck_err("create the export table"))?;
        let mut w = PartWriter {
            conn,
            dir,
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
        let seq = self.seq;
        self.seq += 1;
        if self.partitioned {
            let days: Vec<i64> = {
                let mut st = self
                    .conn
                    .prepare("SELECT DISTINCT day FROM chunk ORDER BY day")
                    .map_err(duck_err("export days"))?;
                let rows =
                    st.query_map([], |r| r.get::<_, i64>(0)).map_err(duck_err("export days"))?;
                rows.collect::<duckdb::Result<_>>().map_err(duck_err("export days"))?
            };
            for day in days {
                let date = DateTime::from_timestamp_micros(day * DAY_US)
                    .ok_or_else(|| Error::Internal(format!("day {day} is out of range")))?
                    .format("%Y-%m-%d");
                let name = format!("dt={date}/part-{seq:05}.parquet");
                let path = self.dir.join(&name);
                std::fs::create_dir_all(path.parent().expect("a partition directory"))
                    .map_err(|e| Error::Internal(format!("create {}: {e}", path.display())))?;
                // `day` is our own integer and the path our own; COPY TO takes no bound parameters.
                let sql = format!(
                    "COPY (SELECT {cols} FROM chunk WHERE day = {day}) TO {} {opts}",
                    sql_string(&path)
                );
                self.conn.execute_batch(&sql).map_err(duck_err("write a Parquet part"))?;
                self.files.push((name, path));
            }
        } else {
            let name = format!("part-{seq:05}.parquet");
            let path = self.dir.join(&name);
            let sql = format!("COPY (SELECT {cols} FROM chunk) TO {} {opts}", sql_string(&path));
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
