//! `analytics`: the read path. `GET /analytics/summary` and `GET /analytics/funnel` run in DuckDB
//! over the newest Parquet snapshot (loaded into an in-memory table when a version is switched
//! to), cached in Valkey under a key that includes the snapshot version; `source=postgres` runs the
//! same query on the live table instead. `GET /analytics/compare` shows the cache at work: a MISS
//! computed by DuckDB, then a HIT from Valkey, with the time each part took.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use quiver::analytics::{self, FilterParams, Filters, FunnelRow, Summary};
use quiver::artifact::Loaded;
use quiver::cache::{Cache, Entry, Key, Status};
use quiver::config::ConfigError;
use quiver::http::{json, Params, ServerTiming, X_CACHE};
use quiver::pg::Pg;
use quiver::snapshot::{Settings, Snapshots, Table};
use quiver::storage::Storage;
use quiver::{Config, Error, Result};
use serde::Serialize;
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
        Self::with_settings(cfg, Settings::from_env(cfg)?).await
    }

    /// With explicit settings (tests follow their own S3 prefix).
    pub async fn with_settings(
        cfg: &Config,
        settings: Settings,
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

    /// Makes the next request look at the manifest again, whatever the check interval.
    pub fn expire(&self) {
        self.snapshots.expire();
    }

    /// Runs `run` over the loaded table on a blocking thread and returns its JSON as a cache entry
    /// (compressed there too), recording the time DuckDB took in `took` (ns).
    async fn compute<T: Serialize + 'static>(
        &self,
        loaded: Arc<Loaded<Table>>,
        filters: Filters,
        run: fn(&Table, &Filters) -> Result<T>,
        took: &AtomicU64,
    ) -> Result<Entry> {
        self.computations.fetch_add(1, Ordering::Relaxed);
        let (entry, t) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let value = run(&loaded.value, &filters)?;
            let t = started.elapsed();
            let body = serde_json::to_vec(&value)
                .map_err(|e| Error::Internal(format!("serializing an answer: {e}")))?;
            Ok::<_, Error>((Entry::new(&body, "application/json"), t))
        })
        .await
        .map_err(|e| Error::Internal(format!("DuckDB task: {e}")))??;
        took.store(t.as_nanos() as u64, Ordering::Relaxed);
        Ok(entry)
    }

    /// A DuckDB answer for `route`, from the cache unless `cache=off`.
    async fn duck_answer<T: Serialize + 'static>(
        &self,
        route: &'static str,
        q: &Query,
        headers: &HeaderMap,
        run: fn(&Table, &Filters) -> Result<T>,
    ) -> Result<Response> {
        let started = Instant::now();
        let loaded = self.snapshots.current().await?;
        let timing = ServerTiming::default().add("snapshot", started.elapsed());
        let took = AtomicU64::new(0);
        let (entry, status, timing) = if q.cached {
            let key = Key::new(FUNCTION, route, &q.filters.normalized(), &loaded.manifest.version);
            let compute = || self.compute(loaded.clone(), q.filters.clone(), run, &took);
            let lookup = self.cache.get_or_compute(key, compute).await?;
            (lookup.entry, lookup.status, timing.add("cache", lookup.lookup))
        } else {
            (
                self.compute(loaded.clone(), q.filters.clone(), run, &took).await?,
                Status::Bypass,
                timing,
            )
        };
        let timing = match took.load(Ordering::Relaxed) {
            0 => timing,
            ns => timing.add("duckdb", Duration::from_nanos(ns)),
        };
        let mut res = entry.respond(status, headers, timing);
        set_version(&mut res, &loaded.manifest.version);
        Ok(res)
    }
}

/// The routes, each registered with its OpenAPI entry.
pub fn api() -> OpenApiRouter<Arc<Analytics>> {
    OpenApiRouter::new().routes(routes!(summary)).routes(routes!(funnel)).routes(routes!(compare))
}

pub fn routes(state: Arc<Analytics>) -> Router {
    Router::from(api()).with_state(state)
}

/// `source` and `cache` (documentation only: `Query::parse` reads them).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct SourceParams {
    /// `duckdb` (default): the newest snapshot; `postgres`: the live table, never cached.
    #[param(inline)]
    source: Option<Source>,
    /// `off` computes without asking the cache (default `on`).
    #[param(inline)]
    cache: Option<CacheMode>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
enum Source {
    Duckdb,
    Postgres,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
enum CacheMode {
    On,
    Off,
}

/// The body of `GET /analytics/compare` (documentation only: it is written by hand, around the
/// cached summary's bytes).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Compare {
    /// `duckdb` on a MISS or BYPASS, `valkey` on a HIT.
    source: String,
    cache_hit: bool,
    cache_lookup_us: u64,
    processing_ms: f64,
    total_ms: f64,
    data_version: String,
    summary: Summary,
}

/// The parameters of `summary` and `funnel`: the shared filters, `source` and `cache`.
struct Query {
    filters: Filters,
    postgres: bool,
    cached: bool,
}

impl Query {
    fn parse(uri: &Uri) -> Result<Self> {
        let p = Params::from_uri(uri)?;
        Ok(Query {
            filters: Filters::from_params(&p)?,
            postgres: p.choice("source", &["duckdb", "postgres"], "duckdb")? == "postgres",
            cached: p.choice("cache", &["on", "off"], "on")? == "on",
        })
    }
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
#[utoipa::path(get, path = "/analytics/summary", tag = "analytics", params(FilterParams, SourceParams),
    responses((status = 200, description = "The summary; `x-cache` says HIT, MISS or BYPASS and `x-data-version` which snapshot.", body = Summary)))]
async fn summary(
    State(s): State<Arc<Analytics>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    let q = Query::parse(&uri)?;
    if q.postgres {
        return postgres_answer(analytics::postgres::summary(&s.pg, &q.filters)).await;
    }
    s.duck_answer(SUMMARY, &q, &headers, Table::summary).await
}

/// Page views, clicks and conversions for the 20 busiest pages.
#[utoipa::path(get, path = "/analytics/funnel", tag = "analytics", params(FilterParams, SourceParams),
    responses((status = 200, description = "One row per page, busiest first.", body = Vec<FunnelRow>)))]
async fn funnel(State(s): State<Arc<Analytics>>, uri: Uri, headers: HeaderMap) -> Result<Response> {
    let q = Query::parse(&uri)?;
    if q.postgres {
        return postgres_answer(analytics::postgres::funnel(&s.pg, &q.filters)).await;
    }
    s.duck_answer(FUNNEL, &q, &headers, Table::funnel).await
}

/// `GET /analytics/compare`: the summary through the cache, with what it cost. It shares the
/// summary's cache key (filters + snapshot version), so nothing that never repeats goes into it,
/// and nothing is computed before the cache is asked.
#[utoipa::path(get, path = "/analytics/compare", tag = "analytics", params(FilterParams),
    responses((status = 200, description = "The summary with the cache's part in it.", body = Compare)))]
async fn compare(State(s): State<Arc<Analytics>>, uri: Uri) -> Result<Response> {
    let started = Instant::now();
    let p = Params::from_uri(&uri)?;
    let filters = Filters::from_params(&p)?;
    let loaded = s.snapshots.current().await?;
    let version = loaded.manifest.version.clone();
    let key = Key::new(FUNCTION, SUMMARY, &filters.normalized(), &version);
    let took = AtomicU64::new(0);
    let lookup = s
        .cache
        .get_or_compute(key, || s.compute(loaded.clone(), filters.clone(), Table::summary, &took))
        .await?;
    let summary = lookup.entry.body()?;
    let processing = Duration::from_nanos(took.load(Ordering::Relaxed));
    let hit = lookup.status == Status::Hit;
    let version_json =
        serde_json::to_string(&version).map_err(|e| Error::Internal(format!("version: {e}")))?;
    let mut body = Vec::with_capacity(summary.len() + 192);
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let _ = write!(
        body,
        r#"{{"source":"{}","cache_hit":{hit},"cache_lookup_us":{},"processing_ms":{},"total_ms":{},"data_version":{version_json},"summary":"#,
        if hit { "valkey" } else { "duckdb" },
        lookup.lookup.as_micros(),
        ms(processing),
        ms(started.elapsed()),
    );
    body.extend_from_slice(&summary);
    body.push(b'}');
    let mut res = (StatusCode::OK, body).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.headers_mut().insert(X_CACHE, HeaderValue::from_static(lookup.status.as_str()));
    let timing = ServerTiming::default().add("cache", lookup.lookup);
    let timing = if processing.is_zero() { timing } else { timing.add("duckdb", processing) };
    timing.apply(&mut res);
    set_version(&mut res, &version);
    Ok(res)
}
