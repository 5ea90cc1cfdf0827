//! `process`: the reference stack's data processing API, with Polars.
//!
//! `POST /process` takes a `BatchData` body (`{batch_id, data: [{id, timestamp, category, value,
//! tags}]}`, at most 100,000 points), validates it while parsing it into columns, and returns its
//! statistics with `timings: {parse_ms, process_ms, total_ms}`. The cache key is xxh3 over the raw
//! body, so an identical batch is a HIT that never parses the body.
//!
//! `GET /process?size=N&seed=S` generates N points (1 ≤ N ≤ 5,000,000) straight into columns and
//! processes them, reporting `generation_ms` and `process_ms` apart, as the reference did. With a
//! `seed` the answer is deterministic and cached by (size, seed); without one a fresh seed is used
//! (and returned), so the route always measures the work itself.
//!
//! Polars keeps its default thread pool (one thread per core): a second core shortens generation
//! and aggregation of large batches (the bench's `process-*` rows measure it). Answers do not
//! depend on the thread count (see `quiver::process::aggregate`), so
//! a small Lambda (below 1,769 MB, under one vCPU) may set `POLARS_MAX_THREADS=1` and still
//! return the same bytes.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::Router;
use http::{header, HeaderMap, StatusCode};
use quiver::cache::{Cache, Computed, Key};
use quiver::config::ConfigError;
use quiver::http::{json, read_body, FromParams, Params, Query, ServerTiming, MAX_BODY_BYTES};
use quiver::process::{self, BatchStats, MAX_GENERATED};
use quiver::time::ms;
use quiver::{Config, Error, Result};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Part of every cache key: bump it when the response's shape or the statistics change.
const RESULT_VERSION: &[u8] = b"process-v1";
/// `GET /process` without `size`: the reference's batch.
pub const DEFAULT_SIZE: usize = 50_000;

/// Per-instance state: the response cache (Valkey, bypassed when it is down).
pub struct Process {
    cache: Cache,
}

impl Process {
    /// Builds the state; call at init, since it also tunes the process's memory reuse for
    /// batches (`quiver::process::init`).
    pub fn new(cfg: &Config) -> std::result::Result<Arc<Self>, ConfigError> {
        process::init();
        Ok(Arc::new(Process { cache: Cache::from_config(cfg)? }))
    }

    /// The response cache, e.g. to wait for its first connection in tests.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

/// The routes, each registered with its OpenAPI entry.
pub fn api() -> OpenApiRouter<Arc<Process>> {
    OpenApiRouter::new().routes(routes!(generated, batch))
}

pub fn routes(state: Arc<Process>) -> Router {
    Router::from(api()).with_state(state)
}

#[derive(Serialize, utoipa::ToSchema)]
struct BatchTimings {
    parse_ms: f64,
    process_ms: f64,
    total_ms: f64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct BatchReport {
    batch_id: String,
    #[serde(flatten)]
    stats: BatchStats,
    timings: BatchTimings,
}

#[derive(Serialize, utoipa::ToSchema)]
struct GeneratedTimings {
    generation_ms: f64,
    process_ms: f64,
    total_ms: f64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct GeneratedReport {
    size: usize,
    seed: u64,
    #[serde(flatten)]
    stats: BatchStats,
    timings: GeneratedTimings,
}

/// JSON, or no content type at all (curl -d sends form encoding; that is refused, not guessed).
fn check_content_type(headers: &HeaderMap) -> Result<()> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let mime =
        ct.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(format!(
            "Content-Type must be application/json, got {mime:?}"
        )))
    }
}

/// Statistics of a batch of points, with Polars; an identical body is a cache HIT.
#[utoipa::path(post, path = "/process", tag = "process", operation_id = "process_batch",
    request_body(content = process::BatchInput, content_type = "application/json",
        description = "At most 6 MB and 100,000 points (through Lambda, whose payload limit counts the escaped body, about 5.3 MB). Every problem (up to 20) is listed in the 400."),
    responses(
        (status = 200, description = "The statistics and how long each step took; `x-cache` says HIT, MISS or BYPASS.", body = BatchReport),
        (status = 413, description = "Over 6 MB or over 100,000 points.", body = quiver::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON.", body = quiver::error::Problem, content_type = "application/problem+json"),
    ))]
async fn batch(State(s): State<Arc<Process>>, headers: HeaderMap, body: Body) -> Result<Response> {
    let started = Instant::now();
    check_content_type(&headers)?;
    let bytes = read_body(&headers, body, MAX_BODY_BYTES).await?;
    // xxh3 runs at ~10 GB/s: hashing even a 6 MB body costs well under a millisecond.
    let key = Key::of_parts(&[RESULT_VERSION, b"POST /process", &bytes]);
    let work = move || {
        let t = Instant::now();
        let batch = process::parse(&bytes)?;
        let parsed = t.elapsed();
        let stats = process::aggregate(batch.columns)?;
        let processed = t.elapsed() - parsed;
        tracing::info!(batch_id = %batch.batch_id, points = stats.total_records, "batch processed");
        Computed::json(&BatchReport {
            batch_id: batch.batch_id,
            stats,
            timings: BatchTimings {
                parse_ms: ms(parsed),
                process_ms: ms(processed),
                total_ms: ms(started.elapsed()),
            },
        })
    };
    let answer = s
        .cache
        .answer(key, true, ServerTiming::default(), || quiver::blocking("processing task", work))
        .await?;
    Ok(answer.respond(&headers))
}

/// `GET /process`'s query.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Generate {
    /// Points to generate (default 50,000).
    #[param(required = false, minimum = 1, maximum = 5000000)]
    size: usize,
    /// With a seed the answer is deterministic and cached; without one a fresh seed is used and
    /// returned. An int64, so at most 2^63 - 1.
    seed: Option<u64>,
}

impl FromParams for Generate {
    fn from_params(p: &Params) -> Result<Self> {
        Ok(Generate {
            size: p.number("size", Some(DEFAULT_SIZE), 1..=MAX_GENERATED)?,
            seed: p.seed()?,
        })
    }
}

/// Generates `size` points and computes their statistics: the reference's processing benchmark.
#[utoipa::path(get, path = "/process", tag = "process", operation_id = "process_generated",
    params(Generate),
    responses((status = 200, description = "The statistics, with generation and processing timed apart.", body = GeneratedReport)))]
async fn generated(
    State(s): State<Arc<Process>>,
    headers: HeaderMap,
    Query(q): Query<Generate>,
) -> Result<Response> {
    let started = Instant::now();
    let (size, given_seed) = (q.size, q.seed);
    let seed = given_seed.unwrap_or_else(|| chrono::Utc::now().timestamp_micros() as u64);
    let work = move || {
        let t = Instant::now();
        let columns = process::generate(size, seed);
        let generation = t.elapsed();
        let stats = process::aggregate(columns)?;
        let processed = t.elapsed() - generation;
        Ok(GeneratedReport {
            size,
            seed,
            stats,
            timings: GeneratedTimings {
                generation_ms: ms(generation),
                process_ms: ms(processed),
                total_ms: ms(started.elapsed()),
            },
        })
    };
    match given_seed {
        Some(seed) => {
            let params = format!("size={size}&seed={seed}");
            let key = Key::of_parts(&[RESULT_VERSION, b"GET /process", params.as_bytes()]);
            let compute = || quiver::blocking("processing task", move || Computed::json(&work()?));
            Ok(s.cache.answer(key, true, ServerTiming::default(), compute).await?.respond(&headers))
        }
        None => {
            let report = quiver::blocking("processing task", work).await?;
            Ok(json(StatusCode::OK, &report))
        }
    }
}
