//! Snapshots of `user_events` as Parquet in S3, and DuckDB over them.
//!
//! The export streams rows out of PostgreSQL through a cursor (one REPEATABLE READ snapshot, so
//! the manifest's row count is exactly what was written), appends them to a small DuckDB table,
//! and writes each chunk of about 128k rows to zstd Parquet, one `dt=YYYY-MM-DD/` directory per
//! day when the data spans more than one (sparse days share a file: see [`DAY_FILES_PER_PART`]).
//! Memory stays bounded by the chunk size whatever the table holds. The files are published with
//! `artifact::publish` (manifest last) and old versions are pruned.
//!
//! The reader keeps ONE DuckDB database per instance. At each switch to a new version the Parquet
//! files are loaded into an in-memory table (faster per query than reading Parquet each time);
//! the table is dropped once no request uses it any more. The summary and funnel run here with
//! bound parameters and return the same types as `analytics::postgres`, so both sources give
//! byte-identical JSON.

#[cfg(all(feature = "pg", feature = "s3"))]
mod export;
mod load;
#[cfg(test)]
mod tests;

#[cfg(all(feature = "pg", feature = "s3"))]
pub use export::*;
pub use load::*;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use duckdb::Connection;
use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::error::{Error, Result};

/// Where snapshots of `user_events` are published.
pub const PREFIX: &str = "snapshots/user_events";
/// The dependency named in 503s when a snapshot cannot be read or loaded.
pub const NAME: &str = "snapshot";
/// Rows per Parquet part and row group: large enough to compress well, small enough to bound memory.
pub const ROWS_PER_PART: usize = 131_072;
/// Days of one part that get a `dt=` file each. A part spanning more days (sparse days: 10,000
/// events on 10,000 days once made 10,000 files and a 56 s export) groups them into at most about
/// twice this many files, so the number of files grows with the rows, never with the dates.
pub const DAY_FILES_PER_PART: usize = 64;
/// Rows fetched from PostgreSQL per cursor round trip.
const FETCH_ROWS: i32 = 8_192;
/// Fetched batches in flight between PostgreSQL and the DuckDB writer (back-pressure).
const BATCHES_IN_FLIGHT: usize = 4;

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
pub struct SnapshotSettings {
    /// `QUIVER_SNAPSHOT_PREFIX` (default `snapshots/user_events`): the S3 prefix of the
    /// artifact. The template grants the functions `snapshots/*` only.
    pub prefix: String,
    /// `QUIVER_KEEP_VERSIONS` and `QUIVER_RETAIN_GRACE_S`: the versions kept in S3 after a publish.
    #[cfg(feature = "s3")]
    pub retention: crate::artifact::Retention,
    /// `QUIVER_SNAPSHOT_CHECK_S` (default 30): how often a reader looks at the manifest.
    pub check_every: Duration,
    /// `QUIVER_SNAPSHOT_TIMEOUT_S` (default 600): the limit on one whole export.
    pub export_timeout: Duration,
    /// `QUIVER_TMP_DIR`: where exports are written and snapshots unpacked.
    pub tmp_dir: PathBuf,
    pub duck: DuckSettings,
}

impl SnapshotSettings {
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
        let prefix = vars.get("QUIVER_SNAPSHOT_PREFIX").map(|p| p.trim().trim_matches('/'));
        Ok(SnapshotSettings {
            prefix: prefix.filter(|p| !p.is_empty()).unwrap_or(PREFIX).to_string(),
            #[cfg(feature = "s3")]
            retention: crate::artifact::Retention::from_vars(vars)?,
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
#[derive(Debug, Clone, Default, PartialEq, Eq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Window {
    /// Only events at or after (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<DateTime<Utc>>,
    /// Only events before (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<DateTime<Utc>>,
}

impl crate::http::FromParams for Window {
    fn from_params(p: &crate::http::Params) -> crate::Result<Self> {
        let w = Window { from: p.time("from")?, to: p.time("to")? };
        // Unlike a query's empty window, an empty export would publish an empty snapshot.
        if let (Some(from), Some(to)) = (w.from, w.to) {
            if from >= to {
                return Err(crate::Error::bad_param("to", "must be later than from"));
            }
        }
        Ok(w)
    }
}

/// What a snapshot's manifest says about it (`Manifest<SnapshotMeta>`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SnapshotMeta {
    pub table: String,
    /// Rows in all the files: a loaded version holding any other number is refused.
    pub row_count: u64,
    pub min_created_at: Option<String>,
    pub max_created_at: Option<String>,
    /// `[from, to)` of a windowed export (under its own prefix); both `None` for the whole table.
    #[serde(default)]
    pub window: WindowMeta,
    /// `dt` when the files are one directory per day.
    pub partitioned_by: Option<String>,
    pub schema: Vec<Column>,
}

#[cfg(feature = "s3")]
impl crate::artifact::Meta for SnapshotMeta {
    /// The loader opens only `part-N.parquet` files, optionally under `dt=YYYY-MM-DD/`.
    fn check_files(&self, files: &[crate::artifact::FileEntry]) -> std::result::Result<(), String> {
        if files.is_empty() {
            return Err("it lists no files".into());
        }
        match files.iter().find(|f| !load::valid_part_name(&f.name)) {
            Some(f) => Err(format!("{:?} is not a snapshot part", f.name)),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct WindowMeta {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// A Parquet column and its DuckDB type.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
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

fn duck_err(what: &str) -> impl Fn(duckdb::Error) -> Error + '_ {
    move |e| Error::unavailable(NAME, format!("{what}: {e}"))
}
