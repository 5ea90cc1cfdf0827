//! PostgreSQL: one connection reused across warm Lambda invocations (a pool of one), a small pool
//! for the local server, and a timeout on every call so that a slow database is a 503, not a hang.
//!
//! TLS follows the URL's `sslmode` as libpq reads it: `disable`; `prefer` (the default: TLS when
//! the server offers it); `require` (TLS, but like libpq any certificate is accepted unless
//! `QUIVER_PG_CA_FILE` is set, which makes it `verify-ca`); `verify-ca` (the chain must lead to a
//! trusted CA); `verify-full` (and the host name must match). Trusted CAs are `QUIVER_PG_CA_FILE`
//! when set, else the Mozilla roots.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use deadpool_postgres::Object as Client;
use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Metrics, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::config::SslMode;

use crate::config::{Config, ConfigError};
use crate::error::{Error, Result};
use crate::tls::{MakeTls, Verify};

/// The dependency name used in 503s and `/health`.
pub const NAME: &str = "postgres";

/// A connection idle for longer than this is asked `""` before it is handed out again: after an
/// RDS failover or a NAT timeout it may be half-open, and a request would hang on it.
pub const VERIFY_IDLE: Duration = Duration::from_secs(5);
/// How long that check may take before the connection is replaced.
const VERIFY_LIMIT: Duration = Duration::from_secs(1);

/// When a call last failed in a way that can leave its connection unusable (a client-side
/// timeout: the backend may be hung; a broken stream). Every connection that was handed out
/// before that moment is replaced rather than reused: with Lambda's pool of one, one hung backend
/// would otherwise answer every request of the instance with a 503 until TCP gave up.
#[derive(Debug, Default)]
struct Faults(Mutex<Option<Instant>>);

impl Faults {
    fn record(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Whether a fault happened since the connection was last handed out.
    fn since(&self, m: &Metrics) -> bool {
        let out = m.recycled.unwrap_or(m.created);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|at| at >= out)
    }
}

/// The pool's check before it hands a connection out again (deadpool's `Fast` recycling checks
/// only that the socket is open).
fn recycle_check(faults: Arc<Faults>) -> Hook {
    Hook::async_fn(move |client, metrics| {
        let faults = faults.clone();
        Box::pin(async move {
            if faults.since(metrics) {
                tracing::warn!("postgres: replacing a connection that was out when a call failed");
                return Err(HookError::Message("a call failed while it was out".into()));
            }
            if metrics.last_used() > VERIFY_IDLE {
                let answered = tokio::time::timeout(VERIFY_LIMIT, client.simple_query("")).await;
                if !matches!(answered, Ok(Ok(_))) {
                    tracing::warn!(
                        idle_s = metrics.last_used().as_secs(),
                        "postgres: replacing an idle connection that did not answer"
                    );
                    return Err(HookError::Message("did not answer after being idle".into()));
                }
            }
            Ok(())
        })
    })
}

/// A lazily connecting pool; building it never touches the network.
#[derive(Clone)]
pub struct Pg {
    pool: Pool,
    timeout: Duration,
    faults: Arc<Faults>,
    /// The schema version this instance has seen (see [`Pg::client`]); shared by clones.
    schema: Arc<crate::migrate::check::Seen>,
}

impl Pg {
    pub fn new(cfg: &Config) -> std::result::Result<Self, ConfigError> {
        let url = cfg.database_url.as_deref().ok_or_else(|| ConfigError {
            var: "QUIVER_DATABASE_URL",
            problem: "is not set, and neither is QUIVER_DATABASE_SECRET_ARN (the Secrets Manager secret that holds it on AWS)".into(),
        })?;
        Self::build(url, cfg.pg_ca_file.as_deref(), cfg.pg_pool_size, cfg.pg_timeout)
    }

    /// A pool for `url` with `size` connections and `timeout` on connect, wait and every statement;
    /// TLS as the URL's `sslmode` says, against the Mozilla roots.
    pub fn connect_lazy(
        url: &str,
        size: usize,
        timeout: Duration,
    ) -> std::result::Result<Self, ConfigError> {
        Self::build(url, None, size, timeout)
    }

    fn build(
        url: &str,
        ca_file: Option<&str>,
        size: usize,
        timeout: Duration,
    ) -> std::result::Result<Self, ConfigError> {
        let (url, mode) = take_sslmode(url)?;
        let mut pg = tokio_postgres::Config::from_str(&url).map_err(|_| ConfigError {
            var: "QUIVER_DATABASE_URL",
            problem: "is not a valid PostgreSQL URL".into(),
        })?;
        pg.connect_timeout(timeout);
        pg.application_name("quiver");
        // The server enforces the same limit, so a runaway statement is cancelled there too.
        pg.options(format!("-c statement_timeout={}", timeout.as_millis()));
        let roots = ca_file
            .map(|path| crate::tls::ca_file("QUIVER_PG_CA_FILE", path).map(|(_, roots)| roots))
            .transpose()?;
        let verify = match mode {
            Mode::VerifyFull => Verify::Full,
            Mode::VerifyCa => Verify::Chain,
            // libpq: "if a root CA file exists, the behavior of sslmode=require will be the same as that of verify-ca".
            Mode::Require if roots.is_some() => Verify::Chain,
            _ => Verify::Nothing,
        };
        pg.ssl_mode(match mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        });
        let tls = MakeTls::new(verify, roots)
            .map_err(|e| ConfigError { var: "QUIVER_PG_CA_FILE", problem: e.to_string() })?;
        let mgr = Manager::from_config(
            pg,
            tls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let faults = Arc::new(Faults::default());
        let pool = Pool::builder(mgr)
            .pre_recycle(recycle_check(faults.clone()))
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| ConfigError { var: "QUIVER_PG_POOL_SIZE", problem: e.to_string() })?;
        Ok(Pg { pool, timeout, faults, schema: Default::default() })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A `timed` wrapper with another limit, for work known to take longer (bulk loads).
    pub fn bounded(&self, timeout: Duration) -> Timer {
        Timer { timeout, faults: Some(self.faults.clone()) }
    }

    /// A connection from the pool; a down or saturated database is a 503 naming PostgreSQL, and
    /// one whose schema is behind [`crate::migrate::BASE`] a 503 `schema`.
    ///
    /// It never migrates: schema changes are the migration step's, with limits of their own
    /// ([`crate::migrate`]), not a request's under the API's timeout.
    pub async fn client(&self) -> Result<Client> {
        self.client_at(crate::migrate::BASE).await
    }

    /// [`Pg::client`] for a query that needs the schema at `version` or later, such as
    /// [`crate::migrate::DURATION_MS`]. The version is read once per instance (again while behind,
    /// at most every [`crate::migrate::check::RECHECK`]), not per request.
    pub async fn client_at(&self, version: i32) -> Result<Client> {
        let c = self.connection().await?;
        self.schema.require(self, &c, version).await?;
        Ok(c)
    }

    /// A connection from the pool without the schema check: for the migration step, and tools
    /// that look at a database before it has a schema.
    pub async fn connection(&self) -> Result<Client> {
        self.pool.get().await.map_err(pool_error)
    }

    /// A connection of its own, outside the pool and closed when dropped, so that session state
    /// (the migration step's advisory lock and limits) ends with it.
    pub async fn session(&self) -> Result<deadpool_postgres::ClientWrapper> {
        Ok(deadpool_postgres::Object::take(self.connection().await?))
    }

    /// Runs `fut` under the configured timeout; PostgreSQL errors become problem responses.
    pub async fn timed<T, F>(&self, what: &str, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        self.bounded(self.timeout).timed(what, fut).await
    }

    /// `SELECT 1` through the pool.
    pub async fn ping(&self) -> Result<()> {
        let c = self.client().await?;
        self.timed("ping", c.simple_query("SELECT 1")).await.map(|_| ())
    }
}

/// libpq's `sslmode` values; tokio-postgres itself knows only the first three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// `url` without its `sslmode` parameter (the other parameters kept byte for byte), and the mode.
fn take_sslmode(url: &str) -> std::result::Result<(String, Mode), ConfigError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), Mode::Prefer));
    };
    let mut mode = Mode::Prefer;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some(value) = pair.strip_prefix("sslmode=") else {
            kept.push(pair);
            continue;
        };
        mode = match value {
            "disable" => Mode::Disable,
            // `allow` (plain first, TLS if refused) has no tokio-postgres equivalent; `prefer` reaches the same servers.
            "allow" | "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(ConfigError {
                    var: "QUIVER_DATABASE_URL",
                    problem: format!("sslmode={other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"),
                })
            }
        };
    }
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, mode))
}

/// Bounds a PostgreSQL call by a timeout and maps its error; a timeout or a broken connection is
/// recorded, so that the pool replaces the connection instead of handing it out again.
#[derive(Debug, Clone)]
pub struct Timer {
    timeout: Duration,
    faults: Option<Arc<Faults>>,
}

impl Timer {
    pub async fn timed<T, F>(&self, what: &str, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        let fault = || self.faults.iter().for_each(|f| f.record());
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                // No server error: the stream is closed or broken.
                if e.as_db_error().is_none() {
                    fault();
                }
                Err(db_error(what, e))
            }
            Err(_) => {
                fault();
                Err(Error::unavailable(
                    NAME,
                    format!("{what} timed out after {} ms", self.timeout.as_millis()),
                ))
            }
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
        // 57014 query_canceled (statement_timeout), 57P0x shutdown/cannot connect now, 53xxx resources, 08xxx connection,
        // 28xxx the server refuses us (pg_hba.conf, e.g. a plain connection to a TLS-only server; password).
        if code == "57014"
            || code.starts_with("57P")
            || code.starts_with("53")
            || code.starts_with("08")
            || code.starts_with("28")
        {
            return Error::unavailable(NAME, format!("{what}: {}", db.message()));
        }
        return Error::Internal(format!("{what}: {} ({code})", db.message()));
    }
    // No server error: the connection is closed, refused or broken. The message holds no secrets.
    let reason =
        std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
    Error::unavailable(NAME, format!("{what}: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_and_the_rest_kept_as_written() {
        let (url, mode) =
            take_sslmode("postgres://u:p%40ss@db:5432/q?sslmode=verify-full&options=-c%20x%3D1")
                .unwrap();
        assert_eq!(
            (url.as_str(), mode),
            ("postgres://u:p%40ss@db:5432/q?options=-c%20x%3D1", Mode::VerifyFull)
        );
        assert_eq!(
            take_sslmode("postgres://db/q").unwrap(),
            ("postgres://db/q".to_string(), Mode::Prefer)
        );
        assert_eq!(
            take_sslmode("postgres://db/q?sslmode=require").unwrap(),
            ("postgres://db/q".to_string(), Mode::Require)
        );
        assert_eq!(take_sslmode("postgres://db/q?sslmode=disable&").unwrap().1, Mode::Disable);
        assert_eq!(take_sslmode("postgres://db/q?sslmode=verify-ca").unwrap().1, Mode::VerifyCa);
    }

    #[test]
    fn every_sslmode_builds_a_pool_without_touching_the_network() {
        for mode in ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] {
            let url = format!("postgres://u:p@db.invalid/q?sslmode={mode}&application_name=t");
            assert!(Pg::connect_lazy(&url, 1, Duration::from_secs(1)).is_ok(), "{mode}");
        }
    }

    #[test]
    fn without_a_url_or_a_secret_the_error_names_both_variables() {
        let e = Pg::new(&Config::from_vars(&Default::default()).unwrap()).err().unwrap();
        let shown = e.to_string();
        assert!(
            shown.contains("QUIVER_DATABASE_URL") && shown.contains("QUIVER_DATABASE_SECRET_ARN"),
            "{shown}"
        );
    }

    #[test]
    fn an_unknown_sslmode_names_the_variable_not_the_password() {
        let e = Pg::connect_lazy(
            "postgres://u:hunter2@db/q?sslmode=verify_full",
            1,
            Duration::from_secs(1),
        )
        .err()
        .unwrap();
        assert_eq!(e.var, "QUIVER_DATABASE_URL");
        assert!(e.problem.contains("verify_full") && !e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn a_bad_ca_file_names_its_variable() {
        let cfg = |ca: &str| {
            let vars = [
                ("QUIVER_DATABASE_URL", "postgres://u:p@db/q?sslmode=verify-full"),
                ("QUIVER_PG_CA_FILE", ca),
            ];
            Config::from_vars(&vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
                .unwrap()
        };
        let e = Pg::new(&cfg("/nonexistent/rds-bundle.pem")).err().unwrap();
        assert_eq!(e.var, "QUIVER_PG_CA_FILE");
        assert!(e.problem.contains("/nonexistent/rds-bundle.pem"), "{e}");
        let not_pem =
            std::env::temp_dir().join(format!("quiver-not-pem-{}.txt", std::process::id()));
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let e = Pg::new(&cfg(&not_pem.to_string_lossy())).err().unwrap();
        let _ = std::fs::remove_file(&not_pem);
        assert_eq!(e.var, "QUIVER_PG_CA_FILE");
        assert!(e.problem.contains("no PEM certificate"), "{e}");
    }
}
