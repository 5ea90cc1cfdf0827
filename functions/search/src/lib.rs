//! `search`: `GET /search?q=&limit=&offset=&tag=&from=&to=` over the newest index bundle that the
//! `indexer` published. An instance downloads the bundle once, checks its checksum, unpacks it
//! under `/tmp`, opens it with `MmapDirectory` and keeps one searcher for that version; the
//! manifest is checked again at most every `QUIVER_INDEX_CHECK_S` seconds, and a new version is
//! switched to atomically (a broken one leaves the old one serving). Answers go through the
//! Valkey cache under a key that includes the index version, so a new index never serves old hits.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::Response;
use axum::Router;
use http::HeaderMap;
use quiver::artifact::{Loaded, Manifest, Tracker, X_DATA_STALE};
use quiver::cache::{Cache, Computed, Key};
use quiver::config::ConfigError;
use quiver::http::{FromParams, Params, Query, ServerTiming};
use quiver::search::{self, Hit, IndexHandle, IndexMeta, SearchQuery, BUNDLE, DEFAULT_PREFIX};
use quiver::storage::Storage;
use quiver::{Config, Error, Result};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The function name in cache keys.
pub const FUNCTION: &str = "search";
const ROUTE: &str = "/search";
/// The index version an answer came from.
pub const X_INDEX_VERSION: &str = "x-index-version";
pub const MAX_LIMIT: usize = 100;
pub const MAX_OFFSET: usize = 10_000;
/// Indexes of up to this many documents are searched on the request's own task: such a search
/// takes tens of µs, less than the hop to a blocking thread and back. Larger ones are searched
/// on a blocking thread, so that a long search does not hold up other requests.
const INLINE_DOCS: u64 = 100_000;
/// Longest `q`, in characters: longer queries are abuse, not search (and 256 of them, each
/// percent-encoded, stay within the query-string limit).
pub const MAX_Q_CHARS: usize = 256;

/// Where the index comes from and how often to look for a new one.
#[derive(Debug, Clone)]
pub struct SearchSettings {
    /// S3 prefix holding `manifest.json` and the versions (`QUIVER_INDEX_PREFIX`, default `indexes/docs`).
    pub prefix: String,
    /// Where versions are unpacked (`<QUIVER_TMP_DIR>/quiver-search`).
    pub dir: PathBuf,
    /// `QUIVER_INDEX_CHECK_S` (default 30): how stale the view of the manifest may get.
    pub check_every: Duration,
}

impl SearchSettings {
    pub fn from_env(cfg: &Config) -> std::result::Result<Self, ConfigError> {
        Ok(SearchSettings {
            prefix: std::env::var("QUIVER_INDEX_PREFIX")
                .ok()
                .filter(|p| !p.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_PREFIX.into()),
            dir: PathBuf::from(&cfg.tmp_dir).join("quiver-search"),
            check_every: Duration::from_secs(quiver::config::setting(
                "QUIVER_INDEX_CHECK_S",
                30,
                0..=86_400,
            )?),
        })
    }
}

/// Per-instance state: the followed index and the cache.
pub struct Search {
    tracker: Arc<Tracker<IndexHandle, IndexMeta>>,
    cache: Cache,
    computations: AtomicU64,
}

/// What [`Search::warm`] loaded, and how long the download, unpack and open took.
#[derive(Debug, Clone, Serialize)]
pub struct Warm {
    pub version: String,
    pub docs: u64,
    pub ms: f64,
}

impl Search {
    pub async fn new(cfg: &Config) -> std::result::Result<Arc<Self>, ConfigError> {
        Self::with_settings(cfg, SearchSettings::from_env(cfg)?).await
    }

    /// With explicit settings (tests and benchmarks follow their own prefix and directory).
    pub async fn with_settings(
        cfg: &Config,
        s: SearchSettings,
    ) -> std::result::Result<Arc<Self>, ConfigError> {
        Ok(Arc::new(Search {
            tracker: Tracker::new(Storage::new(cfg).await?, &s.prefix, s.dir, s.check_every),
            cache: Cache::from_config(cfg)?.without_lock(),
            computations: AtomicU64::new(0),
        }))
    }

    /// Makes the next request start a manifest check, whatever the check interval.
    pub fn expire(&self) {
        self.tracker.expire();
    }

    /// Checks the manifest now and waits for a new version to load (tests, after a publish).
    pub async fn refresh(&self) -> Result<()> {
        self.tracker.refresh(open).await.map(|_| ())
    }

    /// How many searches this instance ran (cache HITs run none).
    pub fn computations(&self) -> u64 {
        self.computations.load(Ordering::Relaxed)
    }

    /// Loads the newest version now (at init, or to time a cold start), and starts connecting to
    /// Valkey meanwhile, so the first request is not a cache BYPASS.
    pub async fn warm(&self) -> Result<Warm> {
        let started = Instant::now();
        let _ = self.cache.get(&Key(0)).await;
        let loaded = self.current().await?;
        Ok(Warm {
            version: loaded.manifest.version.clone(),
            docs: loaded.value.doc_count,
            ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    async fn current(&self) -> Result<Arc<Loaded<IndexHandle, IndexMeta>>> {
        self.tracker.current(open).await
    }
}

/// Unpacks and opens a downloaded (checksum-verified) bundle, off the async executor. The bundle
/// is deleted once unpacked: `/tmp` holds the index once, not twice.
async fn open(manifest: Manifest<IndexMeta>, dir: PathBuf) -> Result<IndexHandle> {
    if !manifest.files.iter().any(|f| f.name == BUNDLE) {
        return Err(Error::unavailable(
            search::DEPENDENCY,
            format!("version {} has no {BUNDLE}", manifest.version),
        ));
    }
    quiver::blocking("opening the index", move || {
        let started = Instant::now();
        let bundle = dir.join(BUNDLE);
        let index_dir = dir.join("index");
        let bytes = search::unpack(&bundle, &index_dir)?;
        let handle = IndexHandle::open(&index_dir)?;
        let expected = manifest.meta.doc_count;
        if expected != handle.doc_count {
            return Err(Error::unavailable(
                search::DEPENDENCY,
                format!("version {} holds {} documents, its manifest says {expected}", manifest.version, handle.doc_count),
            ));
        }
        let _ = std::fs::remove_file(&bundle);
        tracing::info!(version = %manifest.version, docs = handle.doc_count, bytes, ms = started.elapsed().as_millis() as u64, "index opened");
        Ok(handle)
    })
    .await
}

/// The route, registered with its OpenAPI entry.
pub fn api() -> OpenApiRouter<Arc<Search>> {
    OpenApiRouter::new().routes(routes!(search_route))
}

pub fn routes(state: Arc<Search>) -> Router {
    Router::from(api()).with_state(state)
}

/// A validated `GET /search`: the OpenAPI parameters and their parser.
#[derive(Debug, Clone, PartialEq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Tantivy query syntax: terms, "phrases", AND/OR, field:term (title, body). Parsed
    /// leniently: a part that is not valid (an unclosed group, an unknown field) is dropped,
    /// never refused.
    #[param(min_length = 1, max_length = 256)]
    pub q: String,
    /// Results per page (default 10).
    #[param(required = false, minimum = 1, maximum = 100)]
    pub limit: usize,
    /// Results to skip (default 0).
    #[param(required = false, minimum = 0, maximum = 10000)]
    pub offset: usize,
    /// Only documents with this tag (case does not matter).
    #[param(pattern = "^[A-Za-z0-9._+#-]{1,64}$")]
    pub tag: Option<String>,
    /// `created_at` at or after: RFC 3339 or YYYY-MM-DD.
    #[param(value_type = Option<String>, schema_with = date_or_time)]
    pub from: Option<i64>,
    /// `created_at` at or before: RFC 3339 or YYYY-MM-DD (a date includes the whole day). A `to`
    /// before `from` is an empty window: no hits.
    #[param(value_type = Option<String>, schema_with = date_or_time)]
    pub to: Option<i64>,
}

/// A date (`YYYY-MM-DD`) or an RFC 3339 date-time.
fn date_or_time() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    let string = |f| {
        ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(f)))
    };
    let one_of =
        OneOfBuilder::new().item(string(KnownFormat::Date)).item(string(KnownFormat::DateTime));
    utoipa::openapi::Schema::OneOf(one_of.build())
}

impl FromParams for SearchParams {
    fn from_params(p: &Params) -> Result<Self> {
        let q = p.get("q").ok_or_else(|| {
            Error::bad_param("q", "is required: the text to search for, in Tantivy's query syntax")
        })?;
        if q.chars().count() > MAX_Q_CHARS {
            return Err(Error::bad_param("q", format!("must be at most {MAX_Q_CHARS} characters")));
        }
        let tag = match p.get("tag") {
            None => None,
            Some(t) => Some(
                search::normalize_tag(t)
                    .filter(|n| n.len() == t.len())
                    .ok_or_else(|| Error::bad_param("tag", "must be 1-64 of a-z 0-9 . _ + # -"))?
                    .into_owned(),
            ),
        };
        let time = |name: &str, end_of_day: bool| -> Result<Option<i64>> {
            let Some(v) = p.get(name) else { return Ok(None) };
            let secs = search::parse_time(v).filter(|_| v.trim() == v).ok_or_else(|| {
                Error::bad_param(name, "must be an RFC 3339 time or a YYYY-MM-DD date")
            })?;
            // A bare date (`YYYY-MM-DD`, nothing after it) as `to` includes that whole day; a
            // date-time, whatever its separator (`T`, `t`, a space), is that instant.
            Ok(Some(if end_of_day && v.len() == 10 { secs + 86_399 } else { secs }))
        };
        Ok(SearchParams {
            q: q.to_string(),
            limit: p.number("limit", Some(10), 1..=MAX_LIMIT)?,
            offset: p.number("offset", Some(0), 0..=MAX_OFFSET)?,
            tag,
            from: time("from", false)?,
            to: time("to", true)?,
        })
    }
}

impl SearchParams {
    /// Every input that changes the answer, for the cache key.
    pub fn normalized(&self) -> String {
        format!(
            "q={}\u{1f}limit={}\u{1f}offset={}\u{1f}tag={}\u{1f}from={:?}\u{1f}to={:?}",
            self.q,
            self.limit,
            self.offset,
            self.tag.as_deref().unwrap_or(""),
            self.from,
            self.to
        )
    }

    fn as_search(&self) -> SearchQuery<'_> {
        SearchQuery {
            q: &self.q,
            limit: self.limit,
            offset: self.offset,
            tag: self.tag.as_deref(),
            from: self.from,
            to: self.to,
        }
    }
}

/// The response body.
#[derive(Serialize, utoipa::ToSchema)]
struct Answer<'a> {
    query: &'a str,
    /// Exact: every matching document, not only this page.
    total_hits: u64,
    took_us: u64,
    index_version: &'a str,
    #[schema(value_type = Vec<Hit>)]
    results: &'a [Hit],
}

/// Full-text search over the newest index, cached under the index version.
#[utoipa::path(get, path = "/search", tag = "search", operation_id = "search",
    params(SearchParams),
    responses((status = 200, description = "One page of hits; `x-cache` and `x-index-version` headers.", body = Answer)))]
async fn search_route(
    State(s): State<Arc<Search>>,
    Query(q): Query<SearchParams>,
    headers: HeaderMap,
) -> Result<Response> {
    let started = Instant::now();
    let loaded = s.current().await?;
    let timing = ServerTiming::default().add("index", started.elapsed());
    let key = Key::new(FUNCTION, ROUTE, &q.normalized(), &loaded.manifest.version);
    let version = loaded.manifest.version.clone();
    let answer = s
        .cache
        .answer(key, true, timing, || {
            s.computations.fetch_add(1, Ordering::Relaxed);
            let inline = loaded.value.doc_count <= INLINE_DOCS;
            let run = move || {
                let t = Instant::now();
                let hits = loaded.value.search(&q.as_search())?;
                Computed::json(&Answer {
                    query: &q.q,
                    total_hits: hits.total,
                    took_us: t.elapsed().as_micros() as u64,
                    index_version: &loaded.manifest.version,
                    results: &hits.hits,
                })
            };
            async move {
                if inline {
                    run()
                } else {
                    quiver::blocking("search task", run).await
                }
            }
        })
        .await?;
    let answer = answer.with_header(X_INDEX_VERSION, &version);
    let answer = match s.tracker.stale() {
        Some(_) => answer.with_header(X_DATA_STALE, "true"),
        None => answer,
    };
    Ok(answer.respond(&headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: Option<&str>) -> Result<SearchParams> {
        Params::parse_as::<SearchParams>("/search", raw)
    }

    #[test]
    fn parameters_are_validated_and_named() {
        let ok =
            parse(Some("q=rust+search&limit=5&offset=10&tag=Rust&from=2026-01-01&to=2026-01-31"))
                .unwrap();
        assert_eq!((ok.limit, ok.offset, ok.tag.as_deref()), (5, 10, Some("rust")));
        assert_eq!(ok.to.unwrap() - ok.from.unwrap(), 31 * 86_400 - 1);
        // Only a bare date is widened to the end of its day; a date-time is its instant.
        for to in ["2026-01-01T00:00:00Z", "2026-01-01t00:00:00z", "2026-01-01%2000:00:00Z"] {
            let p = parse(Some(&format!("q=a&to={to}"))).unwrap();
            assert_eq!(p.to, Some(1_767_225_600), "{to}");
        }
        // Whitespace is a query (with no hits), and so is a window that ends before it starts.
        assert_eq!(parse(Some("q=+++")).unwrap().q, "   ");
        assert!(parse(Some("q=a&from=2026-02-01&to=2026-01-01")).is_ok());
        let long = format!("q={}", "é".repeat(MAX_Q_CHARS + 1));
        assert!(parse(Some(&format!("q={}", "é".repeat(MAX_Q_CHARS)))).is_ok());
        for (raw, param) in [
            ("", "q"),
            ("q=", "q"),
            (long.as_str(), "q"),
            ("q=a&limit=0", "limit"),
            ("q=a&limit=101", "limit"),
            ("q=a&limit=ten", "limit"),
            ("q=a&offset=10001", "offset"),
            ("q=a&offset=-1", "offset"),
            ("q=a&tag=a/b", "tag"),
            ("q=a&tag=+rust", "tag"),
            ("q=a&from=yesterday", "from"),
            ("q=a&to=2026-13-01", "to"),
            ("q=a&from=+2026-01-01", "from"),
            ("q=a&limt=5", "limt"),
        ] {
            let e = parse(Some(raw)).unwrap_err();
            assert_eq!(e.status(), 400, "{raw}");
            assert_eq!(e.problem().param.as_deref(), Some(param), "{raw}: {e}");
        }
    }
}
