//! `analytics`: the read path. `GET /analytics/summary` and `GET /analytics/funnel` run in DuckDB
//! over the newest Parquet snapshot (loaded into an in-memory table when a version is switched
//! to), cached in Valkey under a key that includes the snapshot version; `source=postgres` runs the
//! same query on the live table instead. `GET /analytics/compare` shows the cache at work: a MISS
//! computed by DuckDB, then a HIT from Valkey, with the time each part took.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::Response;
use axum::Router;
use http::{HeaderMap, HeaderValue, StatusCode};
use quiver::analytics::{self, Filters, FunnelRow, Summary};
use quiver::artifact::X_DATA_STALE;
use quiver::cache::{Answer, Cache, Computed, Key, Status};
use quiver::config::ConfigError;
use quiver::http::{declared, json, FromParams, Params, Query, ServerTiming, X_CACHE};
use quiver::pg::Pg;
use quiver::snapshot::{LoadedSnapshot, SnapshotSettings, Snapshots, Table};
use quiver::storage::Storage;
use quiver::time::ms;
use quiver::ResultExt;
use quiver::{Config, Result};
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The function name in cache keys.
pub const FUNCTION: &str = "analytics";
/// The snapshot version an answer was computed from (`live` for `source=postgres`).
pub const X_DATA_VERSION: &str = "x-data-version";
const SUMMARY: &str = "/analytics/summary";
const FUNNEL: &str = "/analytics/funnel";

/// Per-instance state: the followed snapshot (with the instance's one DuckDB database), the
/// cache, and PostgreSQL for `source=postgres`.
pub struct Analytics {
    snapshots: Snapshots,
    cache: Cache,
    pg: Pg,
    computations: AtomicU64,
}

impl Analytics {
    pub async fn new(cfg: &Config) -> std::result::Result<Arc<Self>, ConfigError> {
        Self::with_settings(cfg, SnapshotSettings::from_env(cfg)?).await
    }

    /// With explicit settings (tests follow their own S3 prefix).
    pub async fn with_settings(
        cfg: &Config,
        settings: SnapshotSettings,
    ) -> std::result::Result<Arc<Self>, ConfigError> {
        let cache = Cache::from_config(cfg)?;
        cache.connect().await;
        Ok(Arc::new(Analytics {
            snapshots: Snapshots::new(Storage::new(cfg).await?, &settings),
            cache,
            pg: Pg::new(cfg)?,
            computations: AtomicU64::new(0),
        }))
    }

    /// How many DuckDB answers this instance computed (cache HITs and coalesced MISSes compute none).
    pub fn computations(&self) -> u64 {
        self.computations.load(Ordering::Relaxed)
    }

    /// Loads the newest snapshot now (at init, which runs at full CPU); the first request then
    /// finds it ready.
    pub async fn warm(&self) -> Result<()> {
        self.snapshots.warm().await.map(|_| ())
    }

    /// Makes the next request start a manifest check, whatever the check interval.
    pub fn expire(&self) {
        self.snapshots.expire();
    }

    /// Checks the manifest now and waits for a new snapshot to load (tests, after a publish).
    pub async fn refresh(&self) -> Result<()> {
        self.snapshots.refresh().await.map(|_| ())
    }

    /// Runs `run` over the loaded table on a blocking thread; the JSON is compressed there too,
    /// and the time DuckDB took comes back as the `duckdb` timing.
    async fn compute<T: Serialize + 'static>(
        &self,
        loaded: Arc<LoadedSnapshot>,
        filters: Filters,
        run: fn(&Table, &Filters) -> Result<T>,
    ) -> Result<Computed> {
        self.computations.fetch_add(1, Ordering::Relaxed);
        quiver::blocking("DuckDB task", move || {
            let started = Instant::now();
            let value = run(&loaded.value, &filters)?;
            let took = started.elapsed();
            Ok(Computed::json(&value)?.timed("duckdb", took))
        })
        .await
    }

    /// The cached answer of `run` for `route` over the newest snapshot (`cache=off`: computed
    /// without asking the cache).
    async fn duck_answer<T: Serialize + 'static>(
        &self,
        route: &'static str,
        filters: &Filters,
        use_cache: bool,
        run: fn(&Table, &Filters) -> Result<T>,
    ) -> Result<Answer> {
        let started = Instant::now();
        let loaded = self.snapshots.current().await?;
        let timing = ServerTiming::default().add("snapshot", started.elapsed());
        let version = loaded.manifest.version.clone();
        let key = Key::new(FUNCTION, route, &filters.normalized(), &version);
        let answer = self
            .cache
            .answer(key, use_cache, timing, || self.compute(loaded, filters.clone(), run))
            .await?;
        let answer = answer.with_header(X_DATA_VERSION, &version);
        Ok(match self.snapshots.stale() {
            Some(_) => answer.with_header(X_DATA_STALE, "true"),
            None => answer,
        })
    }
}

/// The routes, each registered with its OpenAPI entry.
pub fn api() -> OpenApiRouter<Arc<Analytics>> {
    OpenApiRouter::new().routes(routes!(summary)).routes(routes!(funnel)).routes(routes!(compare))
}

pub fn routes(state: Arc<Analytics>) -> Router {
    Router::from(api()).with_state(state)
}

/// The parameters of `summary` and `funnel`: the shared filters, `source` and `cache`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Options {
    /// `duckdb` (default): the newest snapshot; `postgres`: the live table, never cached.
    #[param(inline, required = false)]
    source: Source,
    /// `off` computes without asking the cache (default `on`).
    #[param(inline, required = false)]
    cache: CacheMode,
    #[param(ignore)]
    filters: Filters,
}

#[derive(Clone, Copy, PartialEq, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
enum Source {
    Duckdb,
    Postgres,
}

#[derive(Clone, Copy, PartialEq, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
enum CacheMode {
    On,
    Off,
}

impl FromParams for Options {
    fn names() -> Vec<String> {
        [declared::<Filters>(), declared::<Self>()].concat()
    }

    fn from_params(p: &Params) -> Result<Self> {
        let source = match p.choice("source", &["duckdb", "postgres"], "duckdb")? {
            "postgres" => Source::Postgres,
            _ => Source::Duckdb,
        };
        let cache = match p.choice("cache", &["on", "off"], "on")? {
            "off" => CacheMode::Off,
            _ => CacheMode::On,
        };
        Ok(Options { source, cache, filters: Filters::from_params(p)? })
    }
}

/// The body of `GET /analytics/compare`.
#[derive(Serialize, utoipa::ToSchema)]
struct Compare<'a> {
    /// `duckdb` on a MISS or BYPASS, `valkey` on a HIT.
    source: &'static str,
    cache_hit: bool,
    cache_lookup_us: u64,
    processing_ms: f64,
    total_ms: f64,
    data_version: &'a str,
    /// The cached summary, as its bytes are: a HIT costs no parse into a `Summary` and no
    /// re-encoding.
    #[schema(value_type = Summary)]
    summary: &'a RawValue,
}

fn set_version(res: &mut Response, version: &str) {
    if let Ok(v) = HeaderValue::from_str(version) {
        res.headers_mut().insert(X_DATA_VERSION, v);
    }
}

/// `source=postgres`: the live table has no data version to key a cache on, so it is never cached.
async fn postgres_answer<T: Serialize>(
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<Response> {
    let started = Instant::now();
    let value = fut.await?;
    let mut res = json(StatusCode::OK, &value);
    ServerTiming::default().add("postgres", started.elapsed()).apply(&mut res);
    res.headers_mut().insert(X_CACHE, HeaderValue::from_static("BYPASS"));
    set_version(&mut res, "live");
    Ok(res)
}

/// Event counts, users, average duration and time range, from DuckDB over the newest snapshot
/// (cached under the snapshot version) or from PostgreSQL.
#[utoipa::path(get, path = "/analytics/summary", tag = "analytics", params(Filters, Options),
    responses((status = 200, description = "The summary; `x-cache` says HIT, MISS or BYPASS and `x-data-version` which snapshot.", body = Summary)))]
async fn summary(
    State(s): State<Arc<Analytics>>,
    Query(o): Query<Options>,
    headers: HeaderMap,
) -> Result<Response> {
    if o.source == Source::Postgres {
        return postgres_answer(analytics::postgres::summary(&s.pg, &o.filters)).await;
    }
    let cached = o.cache == CacheMode::On;
    Ok(s.duck_answer(SUMMARY, &o.filters, cached, Table::summary).await?.respond(&headers))
}

/// Page views, clicks and conversions for the 20 busiest pages.
#[utoipa::path(get, path = "/analytics/funnel", tag = "analytics", params(Filters, Options),
    responses((status = 200, description = "One row per page, busiest first.", body = Vec<FunnelRow>)))]
async fn funnel(
    State(s): State<Arc<Analytics>>,
    Query(o): Query<Options>,
    headers: HeaderMap,
) -> Result<Response> {
    if o.source == Source::Postgres {
        return postgres_answer(analytics::postgres::funnel(&s.pg, &o.filters)).await;
    }
    let cached = o.cache == CacheMode::On;
    Ok(s.duck_answer(FUNNEL, &o.filters, cached, Table::funnel).await?.respond(&headers))
}

/// `GET /analytics/compare`: the summary through the cache, with what it cost. It shares the
/// summary's cache key (filters + snapshot version), so nothing that never repeats goes into it,
/// and nothing is computed before the cache is asked.
#[utoipa::path(get, path = "/analytics/compare", tag = "analytics", params(Filters),
    responses((status = 200, description = "The summary with the cache's part in it.", body = Compare)))]
async fn compare(
    State(s): State<Arc<Analytics>>,
    Query(filters): Query<Filters>,
) -> Result<Response> {
    let started = Instant::now();
    let answer = s.duck_answer(SUMMARY, &filters, true, Table::summary).await?;
    let summary = answer.entry.body()?;
    let processing = answer.timings.iter().map(|(_, took)| *took).sum::<Duration>();
    let hit = answer.status == Status::Hit;
    let version = answer.header(X_DATA_VERSION).unwrap_or_default().to_string();
    let summary: &RawValue =
        serde_json::from_slice(&summary).internal("reading the cached summary as JSON")?;
    let mut res = json(
        StatusCode::OK,
        &Compare {
            source: if hit { "valkey" } else { "duckdb" },
            cache_hit: hit,
            cache_lookup_us: answer.lookup.as_micros() as u64,
            processing_ms: ms(processing),
            total_ms: ms(started.elapsed()),
            data_version: &version,
            summary,
        },
    );
    res.headers_mut().insert(X_CACHE, HeaderValue::from_static(answer.status.as_str()));
    let timing = ServerTiming::default().add("cache", answer.lookup);
    let timing = if processing.is_zero() { timing } else { timing.add("duckdb", processing) };
    timing.apply(&mut res);
    set_version(&mut res, &version);
    Ok(res)
}
