//! The schema check every connection goes through ([`crate::pg::Pg::client`]): a function compares
//! the recorded version with what its query needs, and answers 503 `schema` when the database is
//! behind, naming the step to run. It never migrates. The version is read once per instance and
//! kept; while it is behind, it is read again at most every [`RECHECK`], so an instance starts
//! answering once the step has run, without a query per request.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::pg::{Pg, NAME};

/// How long a version found behind is believed before it is read again.
pub const RECHECK: Duration = Duration::from_secs(5);

/// What to run, in the 503's log line.
pub const HOW: &str = "run the migration step: `quiver-local migrate` locally; in AWS, invoke the snapshot function with {\"detail-type\": \"quiver.migrate\"} (the stack's MigrateCommand output)";

/// The version this instance last read, and when.
#[derive(Debug)]
pub struct Seen {
    version: AtomicI32,
    checked: tokio::sync::Mutex<Option<Instant>>,
}

impl Default for Seen {
    fn default() -> Self {
        Seen { version: AtomicI32::new(-1), checked: Default::default() }
    }
}

impl Seen {
    /// Ok when the schema has reached `need`; else a 503 `schema`. Reads `quiver_migrations` only
    /// the first time, and then while behind at most every [`RECHECK`].
    pub async fn require(&self, pg: &Pg, c: &tokio_postgres::Client, need: i32) -> Result<()> {
        if self.version.load(Ordering::Acquire) >= need {
            return Ok(());
        }
        // One reader at a time: the others wait for its answer instead of asking too.
        let mut checked = self.checked.lock().await;
        let fresh = checked.is_some_and(|t| t.elapsed() < RECHECK);
        if !fresh {
            let version = read(pg, c).await?;
            self.version.fetch_max(version, Ordering::AcqRel);
            *checked = Some(Instant::now());
        }
        let have = self.version.load(Ordering::Acquire);
        if have >= need {
            return Ok(());
        }
        if !fresh {
            tracing::error!(have, need, "the database schema is behind this code; {HOW}");
        }
        Err(behind(have, need))
    }
}

/// The 503: the reason's words make [`Error::outage`] say `schema`.
pub fn behind(have: i32, need: i32) -> Error {
    Error::unavailable(
        NAME,
        format!("the database schema is behind this code (version {have}, needs {need}); {HOW}"),
    )
}

/// The highest recorded version; 0 when nothing was ever migrated (no `quiver_migrations`).
async fn read(pg: &Pg, c: &tokio_postgres::Client) -> Result<i32> {
    let what = "read the schema version";
    let exists = "SELECT to_regclass('quiver_migrations') IS NOT NULL";
    if !pg.timed(what, c.query_one(exists, &[])).await?.get::<_, bool>(0) {
        return Ok(0);
    }
    let max = "SELECT coalesce(max(version), 0) FROM quiver_migrations";
    Ok(pg.timed(what, c.query_one(max, &[])).await?.get(0))
}
