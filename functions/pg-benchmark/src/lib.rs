//! `pg-benchmark`: the reference stack's row-decoding comparison, reproduced honestly. Each route
//! fetches a user's newest events with four decoders (`dynamic`, `typed`, `polars`,
//! `copy_binary`; see `quiver::pg_bench`), after a warm-up round, and reports query and decode time.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Router;
use http::StatusCode;
use quiver::config::ConfigError;
use quiver::http::{declared, json, FromParams, Params, Query};
use quiver::pg::Pg;
use quiver::{pg_bench, Config, Result};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most rows one approach may fetch.
pub const MAX_LIMIT: i64 = 10_000;
/// Most counted runs of `/samples/pg/benchmark`.
pub const MAX_RUNS: usize = 100;

/// Per-instance state: the PostgreSQL pool (which applies migrations on first use, so an empty
/// database gives empty results rather than a missing-table error).
pub struct PgBenchmark {
    pg: Pg,
}

impl PgBenchmark {
    pub fn new(cfg: &Config) -> std::result::Result<Arc<Self>, ConfigError> {
        Ok(Self::with_pg(Pg::new(cfg)?))
    }

    /// State over a given pool (tests point one at a database that is down).
    pub fn with_pg(pg: Pg) -> Arc<Self> {
        Arc::new(PgBenchmark { pg })
    }
}

/// The routes, each registered with its OpenAPI entry.
pub fn api() -> OpenApiRouter<Arc<PgBenchmark>> {
    OpenApiRouter::new().routes(routes!(benchmark)).routes(routes!(benchmark_all))
}

pub fn routes(state: Arc<PgBenchmark>) -> Router {
    Router::from(api()).with_state(state)
}

/// `user_id` and `limit`: whose events, and how many.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Target {
    /// Whose newest events to fetch (default 1).
    #[param(required = false, minimum = 1, maximum = 2147483647)]
    user_id: i32,
    /// Rows each approach fetches (default 100).
    #[param(required = false, minimum = 1, maximum = 10000)]
    limit: i64,
}

impl FromParams for Target {
    fn from_params(p: &Params) -> Result<Self> {
        Ok(Target {
            user_id: p.number("user_id", Some(1), 1..=i32::MAX)?,
            limit: p.number("limit", Some(100), 1..=MAX_LIMIT)?,
        })
    }
}

/// The target and `runs`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Rounds {
    /// Counted rounds (default 5).
    #[param(required = false, minimum = 1, maximum = 100)]
    runs: usize,
    #[param(ignore)]
    target: Target,
}

impl FromParams for Rounds {
    fn names() -> Vec<String> {
        [declared::<Target>(), declared::<Self>()].concat()
    }

    fn from_params(p: &Params) -> Result<Self> {
        Ok(Rounds {
            runs: p.number("runs", Some(5), 1..=MAX_RUNS)?,
            target: Target::from_params(p)?,
        })
    }
}

/// The decoding runs on the request's own task rather than `spawn_blocking`: a thread hop would
/// land inside the timings it measures, and the limits bound the work.
/// Each row-decoding approach (`dynamic`, `typed`, `polars`, `copy_binary`) timed over `runs`
/// rounds after a warm-up, with query and decode apart.
#[utoipa::path(get, path = "/samples/pg/benchmark", tag = "pg-benchmark", params(Target, Rounds),
    responses((status = 200, description = "Percentiles per approach and which was fastest.", body = pg_bench::DecodeReport)))]
async fn benchmark(State(s): State<Arc<PgBenchmark>>, Query(q): Query<Rounds>) -> Result<Response> {
    let report = pg_bench::benchmark(&s.pg, q.target.user_id, q.target.limit, q.runs).await?;
    Ok(json(StatusCode::OK, &report))
}

/// One pass of every approach, in the reference's "Comprehensive Comparison" shape.
#[utoipa::path(get, path = "/samples/pg/benchmark-all", tag = "pg-benchmark", params(Target),
    responses((status = 200, description = "Each approach's times for one pass.", body = pg_bench::PassReport)))]
async fn benchmark_all(
    State(s): State<Arc<PgBenchmark>>,
    Query(target): Query<Target>,
) -> Result<Response> {
    let report = pg_bench::one_pass(&s.pg, target.user_id, target.limit).await?;
    Ok(json(StatusCode::OK, &report))
}
