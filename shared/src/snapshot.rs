//! Snapshots of `user_events` as Parquet in S3, and DuckDB over them.
//!
//! The export streams rows out of PostgreSQL through a cursor (one REPEATABLE READ snapshot, so
//! the manifest's row count is exactly what was written), appends them to a small DuckDB table,
//! and writes each chunk of about 128k rows to zstd Parquet, one `dt=YYYY-MM-DD/` directory per
//! day when the data spans more than one. Memory stays bounded by the chunk size whatever the
//! table holds. The files are published with `artifact::publish` (manifest last) and old versions
//! are pruned.
//!
//! The reader keeps ONE DuckDB database per instance. At each switch to a new version the Parquet
//! files are loaded into an in-memory table (faster per query than reading Parquet each time);
//! the table is dropped once no request uses it any more. The summary and funnel run here with
//! bound parameters and return the same types as `analytics::postgres`, so both sources give
//! byte-identical JSON.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use duckdb::types::{TimeUnit, Value};
use duckdb::Connection;
use serde::Serialize;

use crate::analytics::{Filters, FunnelRow, Summary, FUNNEL_PAGES};
use crate::config::{Config, ConfigError};
use crate::error::{Error, Result};
use crate::events::EventType;

/// Where snapshots of `user_events` are published.
pub const PREFIX: &str = "snapshots/user_events";
/// The dependency named in 503s when a snapshot cannot be read or loaded.
pub const NAME: &str = "snapshot";
/// Rows per Parquet part and row group: large enough to compress well, small enough to bound memory.
pub const ROWS_PER_PART: usize = 131_072;
/// Rows fetched from PostgreSQL per cursor round trip.
const FETCH_ROWS: i32 = 8_192;
/// Fetched batches in flight between PostgreSQL and the DuckDB writer (back-pressure).
const BATCHES_IN_FLIGHT: usize = 4;
const DAY_US: i64 = 86_400_000_000;

/// The Parquet columns, in order, with their DuckDB types; also written into the manifest.
pub const SCHEMA: [(&str, &str); 12] = [
    ("id", "BIGINT"),
    ("user_id", "INTEGER"),
    ("event_type", "VARCHAR"),
    ("page_url", "VARCHAR"),
    ("created_at", "TIMESTAMP WITH TIME ZONE"),
    ("duration_ms", "DOUBLE"),
    ("browser", "VARCHAR"),
    ("device", "VARCHAR"),
    ("country", "VARCHAR"),
    ("referrer", "VARCHAR"),
    ("amount_cents", "BIGINT"),
    ("metadata", "VARCHAR"),
];

/// Snapshot settings, read once at init.
#[derive(Debug, Clone)]
pub struct Settings {
    /// S3 prefix of the artifact (tests use their own).
    pub prefix: String,
    /// `QUIVER_KEEP_VERSIONS` (default 3): versions kept in S3 after a publish.
    pub keep: usize,
    /// `QUIVER_SNAPSHOT_CHECK_S` (default 30): how often a reader looks at the manifest.
    pub check_every: Duration,
    /// `QUIVER_SNAPSHOT_TIMEOUT_S` (default 600): the limit on one whole export.
    pub export_timeout: Duration,
    /// `QUIVER_TMP_DIR`: where exports are written and snapshots unpacked.
    pub tmp_dir: PathBuf,
    pub duck: DuckSettings,
}

impl Settings {
    pub fn from_env(cfg: &Config) -> std::result::Result<Self, ConfigError> {
        Self::from_vars(cfg, &std::env::vars().collect())
    }

    /// Reads the variables from a map; tests use this instead of the process environment.
    pub fn from_vars(
        cfg: &Config,
        vars: &HashMap<String, String>,
    ) -> std::result::Result<Self, ConfigError> {
        let num = |var: &'static str, default: u64, min: u64, max: u64| {
            crate::config::setting_in(vars, var, default, min..=max)
        };
        let tmp_dir = PathBuf::from(&cfg.tmp_dir);
        Ok(Settings {
            prefix: PREFIX.to_string(),
            keep: num("QUIVER_KEEP_VERSIONS", 3, 1, 1000)? as usize,
            check_every: Duration::from_secs(num("QUIVER_SNAPSHOT_CHECK_S", 30, 0, 86_400)?),
            export_timeout: Duration::from_secs(num("QUIVER_SNAPSHOT_TIMEOUT_S", 600, 1, 86_400)?),
            duck: DuckSettings::for_memory(cfg.memory_mb, &tmp_dir),
            tmp_dir,
        })
    }

    /// The same settings under another S3 prefix.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.trim_matches('/').to_string();
        self
    }
}

/// DuckDB's resources, sized from the Lambda memory size (Lambda gives one vCPU per 1,769 MB).
#[derive(Debug, Clone, PartialEq)]
pub struct DuckSettings {
    pub threads: usize,
    pub memory_limit_mb: u64,
    /// Spill directory, under the instance's temporary directory.
    pub temp_dir: PathBuf,
}

impl DuckSettings {
    /// `memory_mb` is `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`; outside Lambda, the machine's cores and 2 GB.
    pub fn for_memory(memory_mb: Option<u32>, tmp_dir: &Path) -> Self {
        let temp_dir = tmp_dir.join("quiver-duckdb");
        match memory_mb {
            // Leave ~40% for the Rust side, the HTTP buffers and the runtime.
            Some(mb) => DuckSettings {
                threads: (mb as usize).div_ceil(1769).clamp(1, 6),
                memory_limit_mb: (mb as u64 * 6 / 10).max(64),
                temp_dir,
            },
            None => DuckSettings {
                threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
                memory_limit_mb: 2048,
                temp_dir,
            },
        }
    }

    /// An in-memory database with these limits. Extensions are never downloaded.
    pub fn open(&self) -> Result<Connection> {
        let _ = std::fs::create_dir_all(&self.temp_dir);
        let config = duckdb::Config::default()
            .enable_autoload_extension(false)
            .and_then(|c| c.threads(self.threads as i64))
            .and_then(|c| c.max_memory(&format!("{}MB", self.memory_limit_mb)))
            .and_then(|c| c.with("temp_directory", self.temp_dir.to_string_lossy()))
            .map_err(|e| Error::Internal(format!("DuckDB settings: {e}")))?;
        Connection::open_in_memory_with_flags(config)
            .map_err(|e| Error::unavailable(NAME, format!("opening DuckDB: {e}")))
    }
}

/// A time window `[from, to)` to export; both ends optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// What one export did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExportReport {
    pub version: String,
    pub prefix: String,
    pub rows: u64,
    pub files: usize,
    pub bytes: u64,
    pub partitioned_by_day: bool,
    pub min_created_at: Option<String>,
    pub max_created_at: Option<String>,
    /// Versions removed by retention.
    pub deleted_versions: Vec<String>,
    pub export_ms: f64,
    pub upload_ms: f64,
    pub total_ms: f64,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn duck_err(what: &str) -> impl Fn(duckdb::Error) -> Error + '_ {
    move |e| Error::unavailable(NAME, format!("{what}: {e}"))
}

/// Flattens the metadata fields the queries use. `duration_ms` is a number only where the JSON
/// value is a number, exactly as `analytics::postgres` averages it; `amount_cents` only where it
/// is a whole number that fits. The raw JSON stays in `metadata`.
#[cfg(all(feature = "pg", feature = "s3"))]
const EXPORT_SQL: &str = "SELECT id, user_id, event_type, page_url, created_at, \
       CASE WHEN jsonb_typeof(metadata->'duration_ms') = 'number' THEN (metadata->>'duration_ms')::float8 END, \
       metadata->>'browser', metadata->>'device', metadata->>'country', metadata->>'referrer', \
       CASE WHEN jsonb_typeof(metadata->'amount_cents') = 'number' AND (metadata->>'amount_cents') ~ '^-?[0-9]{1,18}$' \
            THEN (metadata->>'amount_cents')::int8 END, \
       metadata::text \
     FROM user_events \
     WHERE ($1::timestamptz IS NULL OR created_at >= $1) AND ($2::timestamptz IS NULL OR created_at < $2) \
     ORDER BY created_at";

#[cfg(all(feature = "pg", feature = "s3"))]
const STATS_SQL: &str = "SELECT count(*), min(created_at), max(created_at) FROM user_events \
     WHERE ($1::timestamptz IS NULL OR created_at >= $1) AND ($2::timestamptz IS NULL OR created_at < $2)";

/// Exports `user_events` (within `window`) to Parquet, publishes it under `settings.prefix`
/// and prunes old versions. The whole export is bounded by `settings.export_timeout`.
#[cfg(all(feature = "pg", feature = "s3"))]
pub async fn export(
    pg: &crate::pg::Pg,
    storage: &crate::storage::Storage,
    settings: &Settings,
    window: &Window,
) -> Result<ExportReport> {
    let started = Instant::now();
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
    let mut report = result?;
    report.total_ms = ms(started.elapsed());
    tracing::info!(version = %report.version, rows = report.rows, files = report.files, bytes = report.bytes, ms = report.total_ms, "snapshot exported");
    Ok(report)
}

#[cfg(all(feature = "pg", feature = "s3"))]
async fn export_into(
    pg: &crate::pg::Pg,
    storage: &crate::storage::Storage,
    settings: &Settings,
    window: &Window,
    version: &str,
    dir: &Path,
) -> Result<ExportReport> {
    use tokio_postgres::IsolationLevel;
    let started = Instant::now();
    let mut c = pg.client().await?;
    let tx = pg
        .timed(
            "begin export",
            c.build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start(),
        )
        .await?;
    // The connection's statement_timeout is sized for API calls; the cursor lives as long as the export.
    let limit_ms = settings.export_timeout.as_millis() as u64;
    pg.timed(
        "export timeout",
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {limit_ms}")),
    )
    .await?;
    let stats =
        pg.timed("export count", tx.query_one(STATS_SQL, &[&window.from, &window.to])).await?;
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
        let stmt = pg.timed("prepare export", tx.prepare(EXPORT_SQL)).await?;
        let portal =
            pg.timed("open export cursor", tx.bind(&stmt, &[&window.from, &window.to])).await?;
        loop {
            let rows = pg.timed("fetch export rows", tx.query_portal(&portal, FETCH_ROWS)).await?;
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
    pg.timed("end export", tx.commit()).await?;
    if rows != count as u64 {
        return Err(Error::Internal(format!(
            "exported {rows} rows but the snapshot holds {count}"
        )));
    }
    let export_ms = ms(started.elapsed());

    let uploaded = Instant::now();
    let schema: Vec<_> =
        SCHEMA.iter().map(|(n, t)| serde_json::json!({"name": n, "type": t})).collect();
    let meta = serde_json::json!({
        "table": "user_events",
        "row_count": rows,
        "min_created_at": min.map(rfc3339),
        "max_created_at": max.map(rfc3339),
        "window": {"from": window.from.map(rfc3339), "to": window.to.map(rfc3339)},
        "partitioned_by": if partitioned { Some("dt") } else { None },
        "schema": schema,
    });
    let manifest =
        crate::artifact::publish(storage, &settings.prefix, version, &files, meta).await?;
    let deleted =
        match crate::artifact::retain(storage, &settings.prefix, settings.keep, version).await {
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
#[cfg(all(feature = "pg", feature = "s3"))]
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

#[cfg(all(feature = "pg", feature = "s3"))]
const CHUNK_DDL: &str = "CREATE TABLE chunk (id BIGINT, user_id INTEGER, event_type VARCHAR, page_url VARCHAR, \
     created_at TIMESTAMPTZ, duration_ms DOUBLE, browser VARCHAR, device VARCHAR, country VARCHAR, referrer VARCHAR, \
     amount_cents BIGINT, metadata VARCHAR, day BIGINT)";

#[cfg(all(feature = "pg", feature = "s3"))]
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

/// A single-quoted SQL string literal.
fn sql_string(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', "''"))
}

/// A manifest file name we are willing to open: `part-N.parquet`, optionally under `dt=YYYY-MM-DD/`.
fn valid_part_name(name: &str) -> bool {
    let (dt, file) = match name.split_once('/') {
        Some((dt, file)) => (Some(dt), file),
        None => (None, name),
    };
    let dt_ok = dt.is_none_or(|d| {
        d.strip_prefix("dt=").is_some_and(|d| {
            chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok() && d.len() == 10
        })
    });
    let file_ok = file
        .strip_prefix("part-")
        .and_then(|f| f.strip_suffix(".parquet"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    dt_ok && file_ok
}

/// The instance's one DuckDB database, with a pool of connections to it (a DuckDB connection
/// serves one query at a time; the database is shared).
pub struct Duck {
    root: Mutex<Connection>,
    idle: Mutex<Vec<Connection>>,
    tables: AtomicU64,
}

impl Duck {
    pub fn open(settings: &DuckSettings) -> Result<Arc<Self>> {
        let started = Instant::now();
        let root = settings.open()?;
        // DuckDB sets itself up on the first statement that creates a table (5 ms here); do it now,
        // while the snapshot's files are still downloading, not when they are loaded.
        root.execute_batch(
            "CREATE TEMP TABLE quiver_warm AS SELECT 1 AS x; DROP TABLE quiver_warm",
        )
        .map_err(duck_err("warm up DuckDB"))?;
        tracing::info!(
            threads = settings.threads,
            memory_limit_mb = settings.memory_limit_mb,
            ms = ms(started.elapsed()),
            "DuckDB opened"
        );
        Ok(Arc::new(Duck {
            root: Mutex::new(root),
            idle: Mutex::new(Vec::new()),
            tables: AtomicU64::new(0),
        }))
    }

    /// Runs `f` on a pooled connection (blocking: call from `spawn_blocking`).
    pub fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> duckdb::Result<T>,
    ) -> duckdb::Result<T> {
        let conn = self.idle.lock().expect("duck pool").pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = self.root.lock().expect("duck root").try_clone()?;
                c.set_prepared_statement_cache_capacity(32);
                c
            }
        };
        let out = f(&conn);
        self.idle.lock().expect("duck pool").push(conn);
        out
    }

    /// Loads a verified snapshot (the part files `names` under `dir`) into a new in-memory table
    /// (blocking). A file DuckDB cannot read, or a row count other than `expected_rows`, is a 503
    /// naming the version.
    pub fn load(
        self: &Arc<Self>,
        version: &str,
        names: &[&str],
        dir: &Path,
        expected_rows: Option<i64>,
    ) -> Result<Table> {
        let started = Instant::now();
        let v = version;
        if names.is_empty() {
            return Err(Error::unavailable(NAME, format!("version {v} lists no files")));
        }
        let mut paths = Vec::with_capacity(names.len());
        for name in names {
            if !valid_part_name(name) {
                return Err(Error::unavailable(
                    NAME,
                    format!("version {v} lists an unexpected file {name:?}"),
                ));
            }
            paths.push(sql_string(&dir.join(name)));
        }
        let name = format!("snap_{}", self.tables.fetch_add(1, Ordering::Relaxed));
        let files = format!("read_parquet([{}], hive_partitioning = false)", paths.join(", "));
        let codes: String = EventType::ALL
            .iter()
            .enumerate()
            .map(|(k, t)| format!(" WHEN '{}' THEN {k}", t.as_str()))
            .collect();
        // Only the columns the queries read, with the event type as a small code and the page as
        // an id numbered in URL order (so ordering by id is ordering by URL): the aggregates then
        // compare integers instead of strings, 3-4x faster. Rows are kept in time order so that
        // time filters skip whole row groups.
        // The files are read once (a snapshot is one small file per day, and opening each costs
        // more than its rows), into a temporary table both steps read.
        let sql = format!(
            "CREATE TEMP TABLE {name}_raw AS SELECT created_at, user_id, event_type, page_url, duration_ms FROM {files}; \
             CREATE TEMP TABLE {name}_pages AS SELECT (row_number() OVER (ORDER BY page_url) - 1)::INTEGER AS id, page_url \
               FROM (SELECT DISTINCT page_url FROM {name}_raw); \
             CREATE TABLE {name} AS SELECT e.created_at, e.user_id, (CASE e.event_type{codes} END)::UTINYINT AS et, \
               p.id AS page_id, e.duration_ms FROM {name}_raw e JOIN {name}_pages p USING (page_url) ORDER BY e.created_at;"
        );
        let loaded = self.with_conn(|c| {
            let result = (|| {
                c.execute_batch(&sql)?;
                let mut st =
                    c.prepare(&format!("SELECT page_url FROM {name}_pages ORDER BY id"))?;
                let pages = st
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<duckdb::Result<Vec<_>>>()?;
                let rows = c.query_row(&format!("SELECT count(*) FROM {name}"), [], |r| {
                    r.get::<_, i64>(0)
                })?;
                Ok((pages, rows))
            })();
            // Temp tables belong to this connection; the names live on in Rust.
            let _ = c.execute_batch(&format!(
                "DROP TABLE IF EXISTS {name}_pages; DROP TABLE IF EXISTS {name}_raw"
            ));
            result
        });
        let (pages, rows) = loaded.map_err(|e| {
            let _ = self.with_conn(|c| c.execute_batch(&format!("DROP TABLE IF EXISTS {name}")));
            Error::unavailable(NAME, format!("version {v} could not be loaded: {e}"))
        })?;
        let table = Table { duck: self.clone(), name, rows, pages };
        if let Some(expected) = expected_rows {
            if expected != rows {
                return Err(Error::unavailable(
                    NAME,
                    format!("version {v} holds {rows} rows, its manifest says {expected}"),
                ));
            }
        }
        tracing::info!(version = %v, rows, table = %table.name, ms = ms(started.elapsed()), "snapshot loaded into DuckDB");
        Ok(table)
    }
}

/// One loaded snapshot: an in-memory table, dropped when the last request using it is done.
pub struct Table {
    duck: Arc<Duck>,
    name: String,
    pub rows: i64,
    /// Page URLs by page id.
    pages: Vec<String>,
}

impl Drop for Table {
    fn drop(&mut self) {
        let sql = format!("DROP TABLE IF EXISTS {}", self.name);
        if let Err(e) = self.duck.with_conn(|c| c.execute_batch(&sql)) {
            tracing::warn!(table = %self.name, error = %e, "dropping an old snapshot table failed");
        }
    }
}

/// The event type's code in a loaded table: its position in `EventType::ALL`.
fn code(t: EventType) -> u8 {
    EventType::ALL.iter().position(|x| *x == t).expect("every type is in ALL") as u8
}

/// `WHERE` over the filters that are set, each value a bound parameter. Leaving out the unset ones
/// (instead of `? IS NULL OR ...`) lets DuckDB prune by zone maps.
fn where_clause(f: &Filters) -> (String, Vec<Value>) {
    let mut parts = Vec::new();
    let mut args = Vec::new();
    if let Some(t) = f.from {
        parts.push("created_at >= ?");
        args.push(Value::Timestamp(TimeUnit::Microsecond, t.timestamp_micros()));
    }
    if let Some(t) = f.to {
        parts.push("created_at < ?");
        args.push(Value::Timestamp(TimeUnit::Microsecond, t.timestamp_micros()));
    }
    if let Some(t) = f.event_type {
        parts.push("et = ?");
        args.push(Value::UTinyInt(code(t)));
    }
    let sql =
        if parts.is_empty() { String::new() } else { format!(" WHERE {}", parts.join(" AND ")) };
    (sql, args)
}

impl Table {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The summary, with the rounding of `analytics::Summary` (blocking). One pass groups by type
    /// (counts, duration sums, first and last); the distinct users are a grouped subquery, which
    /// DuckDB runs much faster than `count(DISTINCT)` next to other aggregates. The average is
    /// the duration sum over the duration count, as `avg` computes it.
    pub fn summary(&self, f: &Filters) -> Result<Summary> {
        let (w, mut args) = where_clause(f);
        args.extend(args.clone());
        let t = &self.name;
        let sql = format!(
            "SELECT et, count(*), sum(duration_ms), count(duration_ms), min(created_at), max(created_at), \
                    (SELECT count(*) FROM (SELECT user_id FROM {t}{w} GROUP BY user_id)) \
             FROM {t}{w} GROUP BY et"
        );
        type Group =
            (Option<u8>, i64, Option<f64>, i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>, i64);
        let groups: Vec<Group> = self
            .duck
            .with_conn(|c| {
                let mut st = c.prepare_cached(&sql)?;
                let rows = st.query_map(duckdb::params_from_iter(args.iter()), |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })?;
                rows.collect()
            })
            .map_err(|e| Error::Internal(format!("DuckDB summary over {t}: {e}")))?;
        let (mut total, mut unique, mut sum, mut with_duration) = (0i64, 0i64, 0f64, 0i64);
        let (mut first, mut last): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (None, None);
        let mut by_type = Vec::with_capacity(EventType::ALL.len());
        for (et, n, s, cd, mi, ma, u) in groups {
            total += n;
            unique = u;
            sum += s.unwrap_or(0.0);
            with_duration += cd;
            first = match (first, mi) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            last = last.max(ma);
            if let Some(t) = et.and_then(|k| EventType::ALL.get(k as usize)) {
                by_type.push((*t, n));
            }
        }
        let avg = (with_duration > 0).then(|| sum / with_duration as f64);
        Ok(Summary::new(total, unique, by_type, avg, first, last))
    }

    /// The funnel: the top pages by views, ties by URL, as `analytics::postgres::funnel` (blocking).
    pub fn funnel(&self, f: &Filters) -> Result<Vec<FunnelRow>> {
        let (w, args) = where_clause(f);
        let [pv, cl, co] = [EventType::PageView, EventType::Click, EventType::Conversion].map(code);
        let sql = format!(
            "SELECT page_id, count_if(et = {pv}) AS page_views, count_if(et = {cl}), count_if(et = {co}) \
             FROM {}{w} GROUP BY page_id ORDER BY page_views DESC, page_id ASC LIMIT {FUNNEL_PAGES}",
            self.name
        );
        let rows: Vec<(i32, i64, i64, i64)> = self
            .duck
            .with_conn(|c| {
                let mut st = c.prepare_cached(&sql)?;
                let rows = st.query_map(duckdb::params_from_iter(args.iter()), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?;
                rows.collect()
            })
            .map_err(|e| Error::Internal(format!("DuckDB funnel over {}: {e}", self.name)))?;
        rows.into_iter()
            .map(|(id, v, c, k)| {
                let url = self.pages.get(id as usize).ok_or_else(|| {
                    Error::Internal(format!("page id {id} is not in {}", self.name))
                })?;
                Ok(FunnelRow::new(url.clone(), v, c, k))
            })
            .collect()
    }
}

/// The newest snapshot for this instance: follows the manifest and loads new versions into the
/// instance's DuckDB database, which is opened at the first load and kept open.
#[cfg(feature = "s3")]
pub struct Snapshots {
    tracker: crate::artifact::Tracker<Table>,
    duck: tokio::sync::OnceCell<Arc<Duck>>,
    settings: DuckSettings,
}

#[cfg(feature = "s3")]
impl Snapshots {
    pub fn new(storage: crate::storage::Storage, settings: &Settings) -> Self {
        let dir = settings.tmp_dir.join("quiver-snapshots").join(settings.prefix.replace('/', "_"));
        Snapshots {
            tracker: crate::artifact::Tracker::new(
                storage,
                &settings.prefix,
                dir,
                settings.check_every,
            ),
            duck: tokio::sync::OnceCell::new(),
            settings: settings.duck.clone(),
        }
    }

    async fn duck(&self) -> Result<Arc<Duck>> {
        self.duck
            .get_or_try_init(|| async {
                let s = self.settings.clone();
                tokio::task::spawn_blocking(move || Duck::open(&s))
                    .await
                    .map_err(|e| Error::Internal(format!("opening DuckDB: {e}")))?
            })
            .await
            .cloned()
    }

    /// The loaded version (checking the manifest when the interval has passed).
    pub async fn current(&self) -> Result<Arc<crate::artifact::Loaded<Table>>> {
        self.tracker
            .current(|manifest, dir| async move {
                let duck = self.duck().await?;
                tokio::task::spawn_blocking(move || {
                    let names: Vec<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
                    let expected = manifest.meta.get("row_count").and_then(|n| n.as_i64());
                    duck.load(&manifest.version, &names, &dir, expected)
                })
                .await
                .map_err(|e| Error::Internal(format!("loading a snapshot: {e}")))?
            })
            .await
    }

    /// Loads the newest version now, opening DuckDB while its files download (opening takes as
    /// long as fetching a small snapshot): what a cold start does at init, so that the first
    /// request finds the table ready.
    pub async fn warm(&self) -> Result<Arc<crate::artifact::Loaded<Table>>> {
        let (duck, loaded) = tokio::join!(self.duck(), self.current());
        duck?;
        loaded
    }

    /// Makes the next `current` look at the manifest again.
    pub fn expire(&self) {
        self.tracker.expire();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duckdb_is_sized_from_the_lambda_memory() {
        let tmp = Path::new("/tmp");
        let s = DuckSettings::for_memory(Some(1024), tmp);
        assert_eq!((s.threads, s.memory_limit_mb), (1, 614));
        assert_eq!(DuckSettings::for_memory(Some(3538), tmp).threads, 2);
        assert_eq!(DuckSettings::for_memory(Some(10_240), tmp).threads, 6);
        assert_eq!(DuckSettings::for_memory(Some(128), tmp).memory_limit_mb, 76);
        assert!(s.temp_dir.starts_with("/tmp"));
    }

    #[test]
    fn only_part_files_are_opened() {
        assert!(valid_part_name("part-00000.parquet"));
        assert!(valid_part_name("dt=2026-10-01/part-00012.parquet"));
        for bad in [
            "../etc/passwd",
            "dt=2026-10-01/../../x.parquet",
            "part-.parquet",
            "dt=yesterday/part-1.parquet",
            "/abs/part-1.parquet",
            "part-1.csv",
        ] {
            assert!(!valid_part_name(bad), "{bad}");
        }
    }

    #[test]
    fn filters_become_bound_parameters() {
        let f = Filters {
            from: DateTime::from_timestamp_micros(1),
            to: None,
            event_type: Some(EventType::Click),
        };
        let (sql, args) = where_clause(&f);
        assert_eq!(sql, " WHERE created_at >= ? AND et = ?");
        assert_eq!(args.len(), 2);
        assert_eq!(where_clause(&Filters::default()).0, "");
    }

    #[test]
    fn settings_name_the_bad_variable() {
        let cfg = Config::from_vars(&HashMap::new()).unwrap();
        let vars = |k: &str, v: &str| {
            [(k.to_string(), v.to_string())].into_iter().collect::<HashMap<_, _>>()
        };
        assert_eq!(
            Settings::from_vars(&cfg, &vars("QUIVER_KEEP_VERSIONS", "0")).unwrap_err().var,
            "QUIVER_KEEP_VERSIONS"
        );
        assert_eq!(
            Settings::from_vars(&cfg, &vars("QUIVER_SNAPSHOT_CHECK_S", "x")).unwrap_err().var,
            "QUIVER_SNAPSHOT_CHECK_S"
        );
        let s = Settings::from_vars(&cfg, &HashMap::new()).unwrap();
        assert_eq!(
            (s.keep, s.check_every, s.prefix.as_str()),
            (3, Duration::from_secs(30), PREFIX)
        );
    }

    #[test]
    fn duckdb_loads_parquet_and_runs_the_queries() {
        let dir = std::env::temp_dir().join(format!("quiver-snapshot-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let duck = Duck::open(&DuckSettings::for_memory(Some(1024), Path::new("/tmp"))).unwrap();
        let part = dir.join("part-00000.parquet");
        duck.with_conn(|c| {
            c.execute_batch(&format!(
                "COPY (SELECT * FROM (VALUES
                   (TIMESTAMPTZ '2026-10-01 10:00:00+00', 1, 'page_view', '/b', 100.0),
                   (TIMESTAMPTZ '2026-10-01 11:00:00+00', 2, 'click', '/b', NULL),
                   (TIMESTAMPTZ '2026-10-01 11:30:00+00', 2, 'page_view', '/a', NULL),
                   (TIMESTAMPTZ '2026-10-02 12:00:00+00', 1, 'conversion', '/c', 201.0))
                   t(created_at, user_id, event_type, page_url, duration_ms)) TO {} (FORMAT parquet)",
                sql_string(&part)
            ))
        })
        .unwrap();
        assert!(
            duck.load("v0", &["part-00000.parquet"], &dir, Some(5)).is_err(),
            "a row count unlike the manifest's"
        );
        let t = duck.load("v1", &["part-00000.parquet"], &dir, Some(4)).unwrap();
        let s = t.summary(&Filters::default()).unwrap();
        assert_eq!((s.total_events, s.unique_users, s.avg_duration_ms), (4, 2, Some(150.5)));
        assert_eq!(s.first_event_at.as_deref(), Some("2026-10-01T10:00:00.000000Z"));
        assert_eq!(s.last_event_at.as_deref(), Some("2026-10-02T12:00:00.000000Z"));
        assert_eq!(
            (
                s.events_by_type["click"],
                s.events_by_type["page_view"],
                s.events_by_type["purchase"]
            ),
            (1, 2, 0)
        );
        let from =
            DateTime::parse_from_rfc3339("2026-10-01T10:30:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(
            t.summary(&Filters { from: Some(from), ..Default::default() }).unwrap().total_events,
            3
        );
        let s = t
            .summary(&Filters { event_type: Some(EventType::Click), ..Default::default() })
            .unwrap();
        assert_eq!((s.total_events, s.unique_users, s.avg_duration_ms), (1, 1, None));
        let s = t
            .summary(&Filters { event_type: Some(EventType::Signup), ..Default::default() })
            .unwrap();
        assert_eq!(
            (s.total_events, s.unique_users, s.avg_duration_ms, s.first_event_at),
            (0, 0, None, None)
        );
        // Ties on views are broken by URL.
        let funnel = t.funnel(&Filters::default()).unwrap();
        assert_eq!(funnel[0], FunnelRow::new("/a".into(), 1, 0, 0));
        assert_eq!(funnel[1], FunnelRow::new("/b".into(), 1, 1, 0));
        assert_eq!(funnel[2], FunnelRow::new("/c".into(), 0, 0, 1));
        let name = t.name().to_string();
        drop(t);
        let gone = duck.with_conn(|c| {
            c.query_row(&format!("SELECT count(*) FROM {name}"), [], |r| r.get::<_, i64>(0))
        });
        assert!(gone.is_err(), "the table is dropped with its last user");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
