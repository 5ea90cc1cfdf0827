//! Valkey: a connection that reconnects by itself, with a short timeout on every call. A cache
//! that is down or slow is never fatal: callers get `Err` quickly and serve without it.
//!
//! `rediss://` is TLS, verified against the Mozilla roots (ElastiCache's certificates come from
//! Amazon Trust Services), or against `QUIVER_VALKEY_CA_FILE` alone when that is set.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::{Config, ConfigError};
use crate::error::{Error, Result};

/// The dependency name used in 503s and `/health`.
pub const NAME: &str = "valkey";

/// How long to wait before trying to connect again after a failure.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);

struct State {
    conn: Option<ConnectionManager>,
    connecting: bool,
    last_failure: Option<Instant>,
}

/// A lazily connected Valkey client shared by every invocation of a warm instance.
pub struct Valkey {
    client: redis::Client,
    timeout: Duration,
    connect_timeout: Duration,
    state: Mutex<State>,
}

impl Valkey {
    pub fn new(cfg: &Config) -> std::result::Result<Self, ConfigError> {
        let url = cfg
            .valkey_url
            .as_deref()
            .ok_or(ConfigError { var: "QUIVER_VALKEY_URL", problem: "is not set".into() })?;
        Self::build(url, cfg.valkey_ca_file.as_deref(), cfg.valkey_timeout, cfg.health_timeout)
    }

    /// `timeout` bounds each command; `connect_timeout` bounds each (background) connection attempt.
    pub fn with_timeouts(
        url: &str,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> std::result::Result<Self, ConfigError> {
        Self::build(url, None, timeout, connect_timeout)
    }

    fn build(
        url: &str,
        ca_file: Option<&str>,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> std::result::Result<Self, ConfigError> {
        // redis-rs spells the TLS scheme `rediss`; accept the `valkey(s)` aliases too.
        let url = url.replacen("valkeys://", "rediss://", 1).replacen("valkey://", "redis://", 1);
        let tls = url.starts_with("rediss://");
        let client = match ca_file {
            None => redis::Client::open(url),
            Some(_) if !tls => {
                return Err(ConfigError {
                    var: "QUIVER_VALKEY_CA_FILE",
                    problem: "is set, but QUIVER_VALKEY_URL is not a rediss:// URL".into(),
                })
            }
            Some(path) => {
                let (pem, _) = crate::tls::ca_file("QUIVER_VALKEY_CA_FILE", path)?;
                redis::Client::build_with_tls(
                    url,
                    redis::TlsCertificates { client_tls: None, root_cert: Some(pem) },
                )
            }
        }
        .map_err(|_| ConfigError {
            var: "QUIVER_VALKEY_URL",
            problem: "is not a valid redis:// or rediss:// URL".into(),
        })?;
        if tls {
            // Before the first handshake: redis-rs takes rustls' process-wide provider.
            crate::tls::provider();
        }
        Ok(Valkey {
            client,
            timeout,
            connect_timeout,
            state: Mutex::new(State { conn: None, connecting: false, last_failure: None }),
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(self.connect_timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1)
            .set_max_delay(200)
    }

    async fn connect(&self) -> Result<ConnectionManager> {
        let fut = ConnectionManager::new_with_config(self.client.clone(), self.manager_config());
        let res = match tokio::time::timeout(self.connect_timeout, fut).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(Error::unavailable(NAME, e.to_string())),
            Err(_) => Err(Error::unavailable(
                NAME,
                format!("connect timed out after {} ms", self.connect_timeout.as_millis()),
            )),
        };
        let mut st = self.state.lock().expect("valkey state lock");
        st.connecting = false;
        match &res {
            Ok(c) => {
                st.conn = Some(c.clone());
                st.last_failure = None;
            }
            Err(e) => {
                st.last_failure = Some(Instant::now());
                tracing::warn!(error = %e, "valkey connect failed; the cache is bypassed until it answers");
            }
        }
        res
    }

    /// The shared connection, or `Err` at once while it is (re)connecting in the background.
    pub fn connection(self: &std::sync::Arc<Self>) -> Result<ConnectionManager> {
        let mut st = self.state.lock().expect("valkey state lock");
        if let Some(c) = &st.conn {
            return Ok(c.clone());
        }
        let backoff_over = st.last_failure.is_none_or(|t| t.elapsed() >= RECONNECT_BACKOFF);
        if !st.connecting && backoff_over {
            st.connecting = true;
            let this = self.clone();
            tokio::spawn(async move {
                let _ = this.connect().await;
            });
        }
        Err(Error::unavailable(NAME, "not connected yet"))
    }

    /// Waits for a connection (used by `/health` and at init, where waiting is the point).
    pub async fn connection_wait(&self) -> Result<ConnectionManager> {
        if let Some(c) = self.state.lock().expect("valkey state lock").conn.clone() {
            return Ok(c);
        }
        self.connect().await
    }

    /// Runs one command under the call timeout.
    pub async fn run<T, F>(&self, what: &str, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::unavailable(NAME, format!("{what}: {e}"))),
            Err(_) => Err(Error::unavailable(
                NAME,
                format!("{what} timed out after {} ms", self.timeout.as_millis()),
            )),
        }
    }

    /// `PING`, waiting for a connection first.
    pub async fn ping(&self, timeout: Duration) -> Result<()> {
        let mut c = self.connection_wait().await?;
        match tokio::time::timeout(timeout, redis::cmd("PING").query_async::<String>(&mut c)).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error::unavailable(NAME, format!("PING: {e}"))),
            Err(_) => Err(Error::unavailable(
                NAME,
                format!("PING timed out after {} ms", timeout.as_millis()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Config {
        Config::from_vars(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
            .unwrap()
    }

    #[test]
    fn rediss_builds_without_touching_the_network() {
        assert!(Valkey::new(&cfg(&[("QUIVER_VALKEY_URL", "rediss://cache.invalid:6379")])).is_ok());
        assert!(Valkey::new(&cfg(&[(
            "QUIVER_VALKEY_URL",
            "valkeys://default:pw@cache.invalid:6379"
        )]))
        .is_ok());
    }

    #[test]
    fn a_ca_file_needs_rediss_and_a_readable_pem() {
        let e = Valkey::new(&cfg(&[
            ("QUIVER_VALKEY_URL", "redis://cache:6379"),
            ("QUIVER_VALKEY_CA_FILE", "/etc/hostname"),
        ]))
        .err()
        .unwrap();
        assert_eq!(e.var, "QUIVER_VALKEY_CA_FILE");
        assert!(e.problem.contains("rediss://"), "{e}");
        let e = Valkey::new(&cfg(&[
            ("QUIVER_VALKEY_URL", "rediss://cache:6379"),
            ("QUIVER_VALKEY_CA_FILE", "/nonexistent/ca.pem"),
        ]))
        .err()
        .unwrap();
        assert_eq!(e.var, "QUIVER_VALKEY_CA_FILE");
        assert!(e.problem.contains("/nonexistent/ca.pem"), "{e}");
    }
}
