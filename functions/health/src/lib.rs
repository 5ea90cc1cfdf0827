//! `health`: `GET /health` reports the version and, for PostgreSQL, Valkey and the S3 bucket,
//! whether each answered and how long it took. 200 when all answered, 503 otherwise; always JSON.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use http::StatusCode;
use quiver::config::ConfigError;
use quiver::pg::Pg;
use quiver::storage::Storage;
use quiver::valkey::Valkey;
use quiver::{Config, Error};
use serde::Serialize;

/// The clients, built once per instance. A service that is not configured is reported, not fatal.
pub struct Health {
    pg: Option<Pg>,
    valkey: Option<Valkey>,
    s3: Option<Storage>,
    timeout: Duration,
}

impl Health {
    pub async fn new(cfg: Config) -> Result<Arc<Self>, ConfigError> {
        Ok(Arc::new(Health {
            pg: cfg.database_url.is_some().then(|| Pg::new(&cfg)).transpose()?,
            valkey: cfg.valkey_url.is_some().then(|| Valkey::new(&cfg)).transpose()?,
            s3: match cfg.bucket.is_some() {
                true => Some(Storage::new(&cfg).await?),
                false => None,
            },
            timeout: cfg.health_timeout,
        }))
    }
}

/// One dependency's answer.
#[derive(Debug, Serialize)]
pub struct Check {
    pub ok: bool,
    pub ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub status: &'static str,
    pub version: &'static str,
    pub dependencies: BTreeMap<&'static str, Check>,
}

/// `/health` (and `/`, which is what `cargo lambda watch` serves at `/lambda-url/health/`).
pub fn routes(state: Arc<Health>) -> Router {
    Router::new().route("/health", get(health)).route("/", get(health)).with_state(state)
}

async fn probe<F>(timeout: Duration, unset: &'static str, fut: Option<F>) -> Check
where
    F: std::future::Future<Output = quiver::Result<()>>,
{
    let Some(fut) = fut else {
        return Check { ok: false, ms: 0.0, error: Some(format!("{unset} is not set")) };
    };
    let t = Instant::now();
    let res = tokio::time::timeout(timeout, fut).await;
    let ms = (t.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    match res {
        Ok(Ok(())) => Check { ok: true, ms, error: None },
        Ok(Err(Error::Unavailable { reason, .. })) => Check { ok: false, ms, error: Some(reason) },
        Ok(Err(e)) => Check { ok: false, ms, error: Some(e.to_string()) },
        Err(_) => Check { ok: false, ms, error: Some(format!("no answer within {} ms", timeout.as_millis())) },
    }
}

/// Probes every dependency concurrently, each bounded by `QUIVER_HEALTH_TIMEOUT_MS`.
pub async fn report(h: &Health) -> Report {
    let t = h.timeout;
    let (pg, valkey, s3) = tokio::join!(
        probe(t, "QUIVER_DATABASE_URL", h.pg.as_ref().map(|p| p.ping())),
        probe(t, "QUIVER_VALKEY_URL", h.valkey.as_ref().map(|v| v.ping(t))),
        probe(t, "QUIVER_BUCKET", h.s3.as_ref().map(|s| s.head_bucket())),
    );
    let dependencies = BTreeMap::from([("postgres", pg), ("valkey", valkey), ("s3", s3)]);
    let all_ok = dependencies.values().all(|c| c.ok);
    for (name, c) in dependencies.iter().filter(|(_, c)| !c.ok) {
        tracing::warn!(dependency = *name, error = c.error.as_deref().unwrap_or(""), "health check failed");
    }
    Report { status: if all_ok { "ok" } else { "degraded" }, version: quiver::VERSION, dependencies }
}

async fn health(State(h): State<Arc<Health>>) -> Response {
    let r = report(&h).await;
    let status = if r.status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut res = quiver::http::json(status, &r);
    res.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    res
}
