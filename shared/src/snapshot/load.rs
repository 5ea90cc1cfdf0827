use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use duckdb::Connection;

use super::{duck_err, DuckSettings, SnapshotSettings, NAME};
use crate::error::{Error, Result};
use crate::events::EventType;
use crate::time::ms;

/// A single-quoted SQL string literal.
pub(super) fn sql_string(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', "''"))
}

/// A manifest file name we are willing to open: `part-N.parquet`, optionally under `dt=YYYY-MM-DD/`.
pub(super) fn valid_part_name(name: &str) -> bool {
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

/// The least memory a load beside the serving version is started with.
const MIN_BESIDE_MB: u64 = 16;

/// A DuckDB database, with a pool of connections to it (a DuckDB connection serves one query at a
/// time; the database is shared). An instance opens one for its first snapshot and one more for
/// each switch (`Duck::load_beside`), which is closed when its table goes; the first stays open.
pub struct Duck {
    /// `None` only while dropping.
    root: Mutex<Option<Connection>>,
    idle: Mutex<Vec<Connection>>,
    tables: AtomicU64,
    /// A thread count to set from the next caller's thread that is not the background one (0:
    /// none). DuckDB starts its worker threads from the thread that raises the count, and they
    /// inherit its priority: a database opened on the background thread gets its workers from
    /// the first request.
    raise_threads: AtomicUsize,
}

impl Duck {
    /// Opens the database. On the background thread it starts with one thread, its own, and
    /// gets the rest from the first request ([`crate::background`]).
    pub fn open(settings: &DuckSettings) -> Result<Arc<Self>> {
        let started = Instant::now();
        let (settings, raise) = match crate::background::is_current() {
            true => (&DuckSettings { threads: 1, ..settings.clone() }, settings.threads),
            false => (settings, 0),
        };
        let root = settings.open()?;
        // DuckDB sets itself up on the first statement that creates a table; do it now,
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
            root: Mutex::new(Some(root)),
            idle: Mutex::new(Vec::new()),
            tables: AtomicU64::new(0),
            raise_threads: AtomicUsize::new(raise),
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
                let root = self.root.lock().expect("duck root");
                let c = root.as_ref().expect("an open database").try_clone()?;
                c.set_prepared_statement_cache_capacity(32);
                c
            }
        };
        let threads = match crate::background::is_current() {
            true => 0,
            false => self.raise_threads.swap(0, Ordering::Relaxed),
        };
        if threads > 0 {
            if let Err(e) = conn.execute_batch(&format!("SET threads = {threads}")) {
                tracing::warn!(threads, error = %e, "raising DuckDB's thread count failed");
            }
        }
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
        // compare integers instead of strings, 3-4x faster. The ids come from an ENUM of the
        // sorted URLs, a lookup per row that keeps the rows in the files' order, which is time
        // order (the export sorts by `created_at`), so time filters skip whole row groups with
        // neither a join nor a sort (a join and an ORDER BY took half the load).
        // The files are read once (a snapshot is one small file per day, and opening each costs
        // more than its rows), into a temporary table both steps read.
        let sql = format!(
            "CREATE TEMP TABLE {name}_raw AS SELECT created_at, user_id, event_type, page_url, duration_ms FROM {files}; \
             CREATE TYPE {name}_page AS ENUM (SELECT DISTINCT page_url FROM {name}_raw ORDER BY page_url); \
             CREATE TABLE {name} AS SELECT created_at, user_id, (CASE event_type{codes} END)::UTINYINT AS et, \
               enum_code(page_url::{name}_page)::INTEGER AS page_id, duration_ms FROM {name}_raw;"
        );
        let loaded = self.with_conn(|c| {
            let result = (|| {
                c.execute_batch(&sql)?;
                let mut st =
                    c.prepare(&format!("SELECT unnest(enum_range(NULL::{name}_page))::VARCHAR"))?;
                let pages = st
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<duckdb::Result<Vec<_>>>()?;
                let rows = c.query_row(&format!("SELECT count(*) FROM {name}"), [], |r| {
                    r.get::<_, i64>(0)
                })?;
                Ok((pages, rows))
            })();
            // The temporary table and the type are only for the load; the URLs live on in Rust.
            let _ = c.execute_batch(&format!(
                "DROP TABLE IF EXISTS {name}_raw; DROP TYPE IF EXISTS {name}_page"
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

    /// Loads a version while `serving` answers requests (blocking; on the background thread):
    /// into a database of its own, so that the load's work stays on that thread, off the ones
    /// that answer requests. Its memory limit is what `serving` leaves of the instance's until
    /// the load is done; `serving` goes with its own last request.
    pub fn load_beside(
        serving: &Duck,
        settings: &DuckSettings,
        version: &str,
        names: &[&str],
        dir: &Path,
        expected_rows: Option<i64>,
    ) -> Result<Table> {
        let used = serving
            .with_conn(|c| {
                c.query_row(
                    "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .map_err(duck_err("reading DuckDB's memory use"))?;
        // Both databases stay within the instance's limit together: a version that does not fit
        // beside the serving one is refused (the instance reports it stale and does not download
        // it again until the manifest changes), never loaded past the limit.
        let left = settings.memory_limit_mb.saturating_sub(used as u64 >> 20);
        tracing::info!(
            version,
            serving_mb = used >> 20,
            left_mb = left,
            "loading a version beside the serving one"
        );
        if left < MIN_BESIDE_MB {
            return Err(Error::unavailable(
                NAME,
                format!(
                    "version {version} could not be loaded beside the serving one: out of memory \
                     ({left} MB of {} MB left)",
                    settings.memory_limit_mb
                ),
            ));
        }
        let aside = DuckSettings { memory_limit_mb: left, ..settings.clone() };
        let table = Duck::open(&aside)?.load(version, names, dir, expected_rows)?;
        let limit = format!("SET memory_limit = '{}MB'", settings.memory_limit_mb);
        table.duck.with_conn(|c| c.execute_batch(&limit)).map_err(duck_err("sizing DuckDB"))?;
        Ok(table)
    }
}

/// One loaded snapshot: an in-memory table, dropped when the last request using it is done.
pub struct Table {
    pub(crate) duck: Arc<Duck>,
    pub(crate) name: String,
    pub rows: i64,
    /// Page URLs by page id.
    pub(crate) pages: Vec<String>,
}

impl Drop for Table {
    /// The table goes on a thread of its own, so that the request that held the last reference
    /// does not wait for its memory to be freed, and at normal priority, so that it does go
    /// under load (before the next switch needs the room).
    fn drop(&mut self) {
        let (duck, name) = (self.duck.clone(), self.name.clone());
        crate::background::free(move || {
            let sql = format!("DROP TABLE IF EXISTS {name}");
            if let Err(e) = duck.with_conn(|c| c.execute_batch(&sql)) {
                tracing::warn!(table = %name, error = %e, "dropping an old snapshot table failed");
            }
        });
    }
}

impl Drop for Duck {
    /// A database that served an old version is closed the same way.
    fn drop(&mut self) {
        let mut conns = std::mem::take(&mut *self.idle.lock().expect("duck pool"));
        conns.extend(self.root.lock().expect("duck root").take());
        crate::background::free(move || drop(conns));
    }
}

/// The newest snapshot for this instance: follows the manifest and loads the first version into
/// a DuckDB database opened for it (at init, while the files download), and each later one into
/// a database of its own, beside the one that serves. A loaded version's Parquet files are
/// deleted at once: the table is in memory.
#[cfg(feature = "s3")]
pub struct Snapshots {
    tracker: Arc<crate::artifact::Tracker<Table, super::SnapshotMeta>>,
    duck: Arc<tokio::sync::OnceCell<Arc<Duck>>>,
    settings: DuckSettings,
}

/// A loaded snapshot version.
#[cfg(feature = "s3")]
pub type LoadedSnapshot = crate::artifact::Loaded<Table, super::SnapshotMeta>;

#[cfg(feature = "s3")]
impl Snapshots {
    pub fn new(storage: crate::storage::Storage, settings: &SnapshotSettings) -> Self {
        let dir = settings.tmp_dir.join("quiver-snapshots").join(settings.prefix.replace('/', "_"));
        Snapshots {
            tracker: crate::artifact::Tracker::new(
                storage,
                &settings.prefix,
                dir,
                settings.check_every,
            ),
            duck: Arc::new(tokio::sync::OnceCell::new()),
            settings: settings.duck.clone(),
        }
    }

    async fn duck(&self) -> Result<Arc<Duck>> {
        open_duck(&self.duck, &self.settings).await
    }

    /// The loaded version; a manifest check that is due runs in the background.
    pub async fn current(&self) -> Result<Arc<LoadedSnapshot>> {
        let load = self.loader();
        self.tracker.current(move |m, dir| load_version(load, m, dir)).await
    }

    /// Checks the manifest now and waits for a new version to load.
    pub async fn refresh(&self) -> Result<Arc<LoadedSnapshot>> {
        let load = self.loader();
        self.tracker.refresh(move |m, dir| load_version(load, m, dir)).await
    }

    fn loader(&self) -> Loader {
        Loader {
            cell: self.duck.clone(),
            settings: self.settings.clone(),
            serving: self.tracker.loaded().map(|l| l.value.duck.clone()),
        }
    }

    /// Loads the newest version now, opening DuckDB while its files download (opening takes as
    /// long as fetching a small snapshot): what a cold start does at init, so that the first
    /// request finds the table ready.
    pub async fn warm(&self) -> Result<Arc<LoadedSnapshot>> {
        let (duck, loaded) = tokio::join!(self.duck(), self.current());
        duck?;
        loaded
    }

    /// Makes the next `current` start a manifest check.
    pub fn expire(&self) {
        self.tracker.expire();
    }

    /// Why this instance serves an older snapshot than the newest, if it does.
    pub fn stale(&self) -> Option<crate::artifact::Stale> {
        self.tracker.stale()
    }
}

/// How to load a version: into the instance's first database when nothing is loaded yet, else
/// beside the database that serves.
#[cfg(feature = "s3")]
struct Loader {
    cell: Arc<tokio::sync::OnceCell<Arc<Duck>>>,
    settings: DuckSettings,
    serving: Option<Arc<Duck>>,
}

/// Turns a downloaded version into a table (what the tracker calls, in the background), then
/// deletes its files: the table is in memory.
#[cfg(feature = "s3")]
async fn load_version(
    load: Loader,
    manifest: crate::artifact::Manifest<super::SnapshotMeta>,
    dir: std::path::PathBuf,
) -> Result<Table> {
    let first = match load.serving {
        Some(_) => None,
        None => Some(open_duck(&load.cell, &load.settings).await?),
    };
    crate::blocking("loading a snapshot", move || {
        let names: Vec<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
        let (v, rows) = (&manifest.version, Some(manifest.meta.row_count as i64));
        let table = match (first, &load.serving) {
            (Some(duck), _) => duck.load(v, &names, &dir, rows),
            (None, Some(serving)) => {
                Duck::load_beside(serving, &load.settings, v, &names, &dir, rows)
            }
            (None, None) => unreachable!("a first load has its database"),
        };
        let _ = std::fs::remove_dir_all(&dir);
        table
    })
    .await
}

#[cfg(feature = "s3")]
async fn open_duck(
    cell: &tokio::sync::OnceCell<Arc<Duck>>,
    settings: &DuckSettings,
) -> Result<Arc<Duck>> {
    cell.get_or_try_init(|| async {
        let s = settings.clone();
        crate::blocking("opening DuckDB", move || Duck::open(&s)).await
    })
    .await
    .cloned()
}
