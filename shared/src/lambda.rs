//! Lambda glue: tracing as Lambda expects it, a cold-start line with the init duration, and
//! `lambda_http::run` around the function's routes.
//!
//! Every `main.rs` runs on a current-thread runtime (`#[tokio::main(flavor = "current_thread")]`):
//! Lambda gives an instance one request at a time, and on a multi-thread runtime each request woke
//! a second worker thread (a futex and a context switch) for nothing. CPU-heavy work already goes
//! to `spawn_blocking` or to the libraries' own threads (DuckDB, Polars, Tantivy).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use axum::Router;
/// What `main` returns: any error at init fails the cold start with its message.
pub use lambda_http::Error;

static INIT_STARTED: OnceLock<Instant> = OnceLock::new();
static COLD: AtomicBool = AtomicBool::new(true);
/// Init duration, fixed when the runtime loop starts (not at the first event, which may come later).
static INIT_MS: OnceLock<f64> = OnceLock::new();

/// Call first in `main`: starts the init clock and sets up logging (JSON when Lambda asks for it).
pub fn init() {
    INIT_STARTED.get_or_init(Instant::now);
    lambda_http::tracing::init_default_subscriber();
}

/// The function's settings, read once at init: the environment, and on AWS the PostgreSQL URL
/// from the secret named by `QUIVER_DATABASE_SECRET_ARN` (every function linking `pg` links
/// `secrets`). Every `main.rs` starts here, so no function can skip the secret.
pub async fn config() -> Result<crate::Config, crate::config::ConfigError> {
    #[allow(unused_mut)]
    let mut cfg = crate::Config::from_env()?;
    #[cfg(feature = "secrets")]
    crate::secrets::resolve_database_url(&mut cfg).await?;
    Ok(cfg)
}

/// Loads `what` during init (which runs at full CPU), so that the first request finds it ready.
/// A failure is logged, not fatal: the first request tries again and answers 503 if it fails too.
pub async fn warm<T>(what: &str, load: impl std::future::Future<Output = crate::Result<T>>) {
    let started = Instant::now();
    match load.await {
        Ok(_) => {
            tracing::info!(ms = started.elapsed().as_secs_f64() * 1e3, "{what} loaded at init")
        }
        Err(e) => {
            tracing::warn!(error = %e, "no {what} loaded at init; the first request tries again")
        }
    }
}

/// Serves `routes` through the Lambda runtime, wrapped in the shared HTTP middleware.
pub async fn run(routes: Router) -> Result<(), lambda_http::Error> {
    lambda_http::run(wrap(routes)).await
}

/// Logs the cold start, with the init duration, on the first invocation only.
fn log_cold_start() {
    if COLD.swap(false, Ordering::Relaxed) {
        let init_ms = INIT_MS.get().copied().unwrap_or(0.0);
        tracing::info!(init_ms, function = %std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default(), "cold start");
    }
}

/// The shared HTTP middleware plus the cold-start line.
fn wrap(routes: Router) -> Router {
    INIT_MS
        .get_or_init(|| INIT_STARTED.get().map(|t| t.elapsed().as_secs_f64() * 1e3).unwrap_or(0.0));
    crate::http::app(routes).layer(axum::middleware::from_fn(
        |req, next: axum::middleware::Next| async move {
            log_cold_start();
            next.run(req).await
        },
    ))
}

/// One invocation of a function that is both scheduled and reachable over HTTP: a Function URL /
/// API Gateway v2 request, or an EventBridge event (`lambda_http::run` rejects the latter).
#[derive(Debug)]
pub enum Invocation {
    Http(Box<lambda_http::request::LambdaRequest>),
    /// Any payload carrying `detail-type`, as EventBridge (scheduled or not) sends it.
    Schedule(serde_json::Value),
}

impl<'de> serde::Deserialize<'de> for Invocation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // An HTTP request parses from almost any JSON object (its fields all have defaults), so the
        // EventBridge marker decides. `RawValue` needs serde_json's `raw_value`, which lambda_http enables.
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "detail-type")]
            detail_type: Option<serde::de::IgnoredAny>,
        }
        let probe: Probe = serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
        if probe.detail_type.is_some() {
            return serde_json::from_str(raw.get())
                .map(Invocation::Schedule)
                .map_err(serde::de::Error::custom);
        }
        serde_json::from_str(raw.get())
            .map(|r| Invocation::Http(Box::new(r)))
            .map_err(serde::de::Error::custom)
    }
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Reply<H> {
    Http(H),
    Schedule(serde_json::Value),
}

/// Like [`run`], for a function that is also scheduled: HTTP requests go to `routes`, EventBridge
/// events to `on_schedule`, whose JSON answer is the invocation's result. An `Err` from it fails
/// the invocation (so EventBridge's retry policy applies) with the error's message.
pub async fn run_http_or_schedule<F, Fut>(
    routes: Router,
    on_schedule: F,
) -> Result<(), lambda_http::Error>
where
    F: Fn(serde_json::Value) -> Fut,
    Fut: std::future::Future<Output = crate::Result<serde_json::Value>>,
{
    use lambda_http::{LambdaEvent, Service};
    let app = wrap(routes);
    let on_schedule = &on_schedule;
    lambda_http::lambda_runtime::run(lambda_http::service_fn(move |ev: LambdaEvent<Invocation>| {
        let app = app.clone();
        async move {
            match ev.payload {
                Invocation::Http(req) => {
                    let mut adapter = lambda_http::Adapter::from(app);
                    let res = adapter.call(LambdaEvent::new(*req, ev.context)).await?;
                    Ok::<_, lambda_http::Error>(Reply::Http(res))
                }
                Invocation::Schedule(event) => {
                    log_cold_start();
                    let kind = event.get("detail-type").and_then(|v| v.as_str()).unwrap_or("").to_string();
                    let done = if kind == MIGRATE {
                        migrate(ev.context.deadline).await
                    } else {
                        on_schedule(event).await
                    };
                    match done {
                        Ok(v) => Ok(Reply::Schedule(v)),
                        Err(e) => {
                            tracing::error!(detail_type = %kind, error = %e, "scheduled invocation failed");
                            Err(e.to_string().into())
                        }
                    }
                }
            }
        }
    }))
    .await
}

/// The `detail-type` of the deploy's migration step: a one-off invocation (README, "Migrations")
/// of a function started with [`run_http_or_schedule`] that links PostgreSQL (`snapshot`).
pub const MIGRATE: &str = "quiver.migrate";

/// Runs the migration step with its own limits, stopping a minute before the invocation's
/// `deadline_ms` (what is left is reported, and the next invocation finishes it).
#[cfg(feature = "pg")]
async fn migrate(deadline_ms: u64) -> crate::Result<serde_json::Value> {
    use crate::error::ResultExt;
    let cfg = config().await?;
    let pg = crate::pg::Pg::new(&cfg)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let left = std::time::Duration::from_millis(deadline_ms.saturating_sub(now_ms));
    let limits = crate::migrate::Limits {
        deadline: (deadline_ms > 0)
            .then(|| Instant::now() + left.saturating_sub(std::time::Duration::from_secs(60))),
        ..Default::default()
    };
    let report = crate::migrate::run_with(&pg, &limits).await?;
    tracing::info!(from = report.from, to = report.to, done = report.done, "migration step");
    serde_json::to_value(report).internal("migration report")
}

#[cfg(not(feature = "pg"))]
async fn migrate(_deadline_ms: u64) -> crate::Result<serde_json::Value> {
    Err(crate::Error::Internal(format!(
        "this function does not link PostgreSQL; send {MIGRATE} to snapshot"
    )))
}
