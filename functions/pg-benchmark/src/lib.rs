//! `pg-benchmark`: the reference stack's row-decoding comparison, reproduced honestly. Each route
//! fetches a user's newest events with four decoders (`dynamic`, `typed`, `polars`,
//! `copy_binary`; see `quiver::rows`), after a warm-up round, and reports query and decode time.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use http::{StatusCode, Uri};
use quiver::config::ConfigError;
use quiver::http::{json, Params};
use quiver::pg::Pg;
use quiver::{rows, Config, Result};
use tokio::sync::OnceCell;

/// Most rows one approach may fetch.
pub const MAX_LIMIT: i64 = 10_000;
/// Most counted runs of `/samples/pg/benchmark`.
pub const MAX_RUNS: usize = 100;

/// Per-instance state: the PostgreSQL pool, and whether migrations ran.
pub struct PgBenchmark {
    pg: Pg,
    migrated: OnceCell<()>,
}

impl PgBenchmark {
    pub fn new(cfg: &Config) -> std::result::Result<Arc<Self>, ConfigError> {
        Ok(Self::with_pg(Pg::new(cfg)?))
    }

    /// State over a given pool (tests point one at a database that is down).
    pub fn with_pg(pg: Pg) -> Arc<Self> {
        Arc::new(PgBenchmark { pg, migrated: OnceCell::new() })
    }

    /// The pool, after applying migrations once per instance, so an empty database gives empty
    /// results rather than a missing-table error.
    async fn pg(&self) -> Result<&Pg> {
        self.migrated.get_or_try_init(|| quiver::migrate::run(&self.pg)).await?;
        Ok(&self.pg)
    }
}

pub fn routes(state: Arc<PgBenchmark>) -> Router {
    Router::new()
        .route("/samples/pg/benchmark", get(benchmark))
        .route("/samples/pg/benchmark-all", get(benchmark_all))
        .with_state(state)
}

/// `user_id` (default 1) and `limit` (default 100), each a 400 naming it when out of range.
fn target(p: &Params) -> Result<(i32, i64)> {
    Ok((p.number("user_id", Some(1), 1..=i32::MAX)?, p.number("limit", Some(100), 1..=MAX_LIMIT)?))
}

/// The decoding runs on the request's own task rather than `spawn_blocking`: a thread hop would
/// land inside the timings it measures, and the limits bound the work.
async fn benchmark(State(s): State<Arc<PgBenchmark>>, uri: Uri) -> Result<Response> {
    let p = Params::from_uri(&uri)?;
    let (user_id, limit) = target(&p)?;
    let runs: usize = p.number("runs", Some(5), 1..=MAX_RUNS)?;
    let report = rows::benchmark(s.pg().await?, user_id, limit, runs).await?;
    Ok(json(StatusCode::OK, &report))
}

async fn benchmark_all(State(s): State<Arc<PgBenchmark>>, uri: Uri) -> Result<Response> {
    let (user_id, limit) = target(&Params::from_uri(&uri)?)?;
    let report = rows::one_pass(s.pg().await?, user_id, limit).await?;
    Ok(json(StatusCode::OK, &report))
}
