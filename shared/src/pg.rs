//! PostgreSQL: one connection reused across warm Lambda invocations (a pool of one), a small pool
//! for the local server, and a timeout on every call so that a slow database is a 503, not a hang.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::{Config, ConfigError};
use crate::error::{Error, Result};

pub use deadpool_postgres::Object as Client;

/// The dependency name used in 503s and `/health`.
pub const NAME: &str = "postgres";

/// A lazily connecting pool; building it never touches the network.
#[derive(Clone)]
pub struct Pg {
    pool: Pool,
    timeout: Duration,
}

impl Pg {
    pub fn new(cfg: &Config) -> std::result::Result<Self, ConfigError> {
        let url = cfg.database_url.as_deref().ok_or(ConfigError { var: "QUIVER_DATABASE_URL", problem: "is not set".into() })?;
        Self::connect_lazy(url, cfg.pg_pool_size, cfg.pg_timeout)
    }

    /// A pool for `url` with `size` connections and `timeout` on connect, wait and every statement.
    pub fn connect_lazy(url: &str, size: usize, timeout: Duration) -> std::result::Result<Self, ConfigError> {
        let mut pg = tokio_postgres::Config::from_str(url)
            .map_err(|_| ConfigError { var: "QUIVER_DATABASE_URL", problem: "is not a valid PostgreSQL URL".into() })?;
        pg.connect_timeout(timeout);
        pg.application_name("quiver");
        // The server enforces the same limit, so a runaway statement is cancelled there too.
        pg.options(format!("-c statement_timeout={}", timeout.as_millis()));
        let mgr = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(mgr)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| ConfigError { var: "QUIVER_PG_POOL_SIZE", problem: e.to_string() })?;
        Ok(Pg { pool, timeout })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A `timed` wrapper with another limit, for work known to take longer (bulk loads).
    pub fn bounded(timeout: Duration) -> Timer {
        Timer { timeout }
    }

    /// A connection from the pool; a down or saturated database is a 503 naming PostgreSQL.
    pub async fn client(&self) -> Result<Client> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Runs `fut` under the configured timeout; PostgreSQL errors become problem responses.
    pub async fn timed<T, F>(&self, what: &str, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        Timer { timeout: self.timeout }.timed(what, fut).await
    }

    /// `SELECT 1` through the pool.
    pub async fn ping(&self) -> Result<()> {
        let c = self.client().await?;
        self.timed("ping", c.simple_query("SELECT 1")).await.map(|_| ())
    }
}

/// Bounds a PostgreSQL call by a timeout and maps its error.
#[derive(Debug, Clone, Copy)]
pub struct Timer {
    timeout: Duration,
}

impl Timer {
    pub async fn timed<T, F>(&self, what: &str, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(|e| db_error(what, e)),
            Err(_) => Err(Error::unavailable(NAME, format!("{what} timed out after {} ms", self.timeout.as_millis()))),
        }
    }
}

fn pool_error(e: PoolError) -> Error {
    match e {
        PoolError::Timeout(_) => Error::unavailable(NAME, "timed out waiting for a connection"),
        PoolError::Backend(e) => db_error("connect", e),
        other => Error::unavailable(NAME, other.to_string()),
    }
}

/// Connection problems and server-side cancellations are 503s; anything else is our bug.
pub fn db_error(what: &str, e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // 57014 query_canceled (statement_timeout), 57P0x shutdown/cannot connect now, 53xxx resources, 08xxx connection.
        if code == "57014" || code.starts_with("57P") || code.starts_with("53") || code.starts_with("08") {
            return Error::unavailable(NAME, format!("{what}: {}", db.message()));
        }
        return Error::Internal(format!("{what}: {} ({code})", db.message()));
    }
    // No server error: the connection is closed, refused or broken. The message holds no secrets.
    let reason = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
    Error::unavailable(NAME, format!("{what}: {reason}"))
}
