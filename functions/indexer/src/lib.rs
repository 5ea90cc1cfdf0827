//! `indexer`: builds a Tantivy index from documents, packs it into one `index.tar.zst` bundle,
//! uploads it under `<prefix>/<version>/` and writes `<prefix>/manifest.json` last, then keeps the
//! newest `QUIVER_KEEP_VERSIONS` versions. It runs on a schedule (EventBridge) and on
//! `POST /index`; the documents come from a JSONL object in S3, a JSONL request body, or one of
//! the generated corpora (`reference`, `realistic`).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};
use quiver::artifact;
use quiver::config::ConfigError;
use quiver::http::{json, read_body, FromParams, Params, Query, MAX_BODY_BYTES};
use quiver::search::{
    self, BuildOptions, Corpus, Doc, IndexMeta, JsonlDocs, BUNDLE, DEFAULT_PREFIX,
};
use quiver::storage::{s3_error, Storage};
use quiver::{Config, Error, Result};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most documents a generated corpus may have.
pub const MAX_DOCS: u64 = 1_000_000;
/// Largest JSONL source object: it is streamed to local disk (Lambda's `/tmp` goes to 10 GB).
pub const MAX_SOURCE_BYTES: u64 = 4 << 30;
/// Uploading a bundle of hundreds of MB takes longer than the per-call S3 limit meant for small
/// objects, so the indexer's client allows at least this long.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest one build may take, and its publisher lease: Lambda's own limit.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(900);
const DEFAULT_DOCS: u64 = 10_000;
const DEFAULT_SEED: u64 = 42;

/// Where to publish and how to build.
#[derive(Debug, Clone)]
pub struct IndexerSettings {
    /// `QUIVER_INDEX_PREFIX` (default `indexes/docs`).
    pub prefix: String,
    /// `QUIVER_KEEP_VERSIONS` and `QUIVER_RETAIN_GRACE_S`: the versions kept after a publish.
    pub retention: artifact::Retention,
    /// Scratch space for the index and the bundle (`<QUIVER_TMP_DIR>/quiver-indexer`).
    pub work_dir: PathBuf,
    /// `QUIVER_INDEX_SOURCE_KEY`: the JSONL object a scheduled run (or a bare `POST /index`)
    /// indexes; without it, the reference corpus.
    pub source_key: Option<String>,
    /// Writer heap and threads, from `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`.
    pub build: BuildOptions,
}

impl IndexerSettings {
    pub fn from_env(cfg: &Config) -> std::result::Result<Self, ConfigError> {
        let nonempty =
            |v: &str| std::env::var(v).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        Ok(IndexerSettings {
            prefix: nonempty("QUIVER_INDEX_PREFIX").unwrap_or_else(|| DEFAULT_PREFIX.into()),
            retention: artifact::Retention::from_vars(&std::env::vars().collect())?,
            work_dir: PathBuf::from(&cfg.tmp_dir).join("quiver-indexer"),
            source_key: nonempty("QUIVER_INDEX_SOURCE_KEY"),
            build: BuildOptions::for_memory(cfg.memory_mb),
        })
    }
}

/// Where the documents come from.
#[derive(Debug, Clone)]
pub enum Source {
    Corpus {
        corpus: Corpus,
        docs: u64,
        seed: u64,
    },
    /// A JSONL object in the bucket.
    S3 {
        key: String,
    },
    /// A local JSONL file (`quiver-local index --file`; never from a request).
    File(PathBuf),
    /// A JSONL request body.
    Body(Bytes),
}

impl Source {
    fn label(&self) -> String {
        match self {
            Source::Corpus { corpus, docs, seed } => {
                format!("{}:{docs}:seed={seed}", corpus.as_str())
            }
            Source::S3 { key } => format!("s3:{key}"),
            Source::File(p) => format!("file:{}", p.display()),
            Source::Body(b) => format!("body:{}B", b.len()),
        }
    }
}

/// What one run did, with the time each step took.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IndexReport {
    pub version: String,
    pub source: String,
    pub docs: u64,
    /// Segments the build wrote (merged into one only when there were too many).
    pub segments: usize,
    /// Adding every document and committing.
    pub index_ms: f64,
    pub docs_per_s: f64,
    pub merge_ms: f64,
    pub pack_ms: f64,
    pub bundle_bytes: u64,
    pub upload_ms: f64,
    pub total_ms: f64,
    pub heap_per_thread: usize,
    pub threads: usize,
    /// Old versions deleted by retention.
    pub deleted: Vec<String>,
}

/// Per-instance state: the S3 client and the settings. Builds run one at a time per instance:
/// the writer heap is sized for the instance's memory.
pub struct Indexer {
    storage: Storage,
    settings: IndexerSettings,
    busy: tokio::sync::Mutex<()>,
}

impl Indexer {
    pub async fn new(cfg: &Config) -> std::result::Result<Arc<Self>, ConfigError> {
        Self::with_settings(cfg, IndexerSettings::from_env(cfg)?).await
    }

    /// With explicit settings (tests publish under their own prefix).
    pub async fn with_settings(
        cfg: &Config,
        settings: IndexerSettings,
    ) -> std::result::Result<Arc<Self>, ConfigError> {
        let mut cfg = cfg.clone();
        cfg.s3_timeout = cfg.s3_timeout.max(UPLOAD_TIMEOUT);
        Ok(Arc::new(Indexer {
            storage: Storage::new(&cfg).await?,
            settings,
            busy: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn settings(&self) -> &IndexerSettings {
        &self.settings
    }

    /// What a scheduled run or a bare `POST /index` indexes.
    pub fn default_source(&self) -> Source {
        match &self.settings.source_key {
            Some(key) => Source::S3 { key: key.clone() },
            None => {
                Source::Corpus { corpus: Corpus::Reference, docs: DEFAULT_DOCS, seed: DEFAULT_SEED }
            }
        }
    }

    /// Builds, packs, publishes and prunes. Bad documents are a 400 naming the line; nothing is
    /// published unless the whole source indexed.
    pub async fn run(&self, source: Source) -> Result<IndexReport> {
        let _one_at_a_time = self.busy.lock().await;
        let started = Instant::now();
        // One build per prefix at a time across instances, for at most RUN_TIMEOUT.
        let prefix = &self.settings.prefix;
        let lease =
            artifact::Lease::acquire(&self.storage, prefix, "index build", RUN_TIMEOUT).await?;
        let run = tokio::time::timeout(RUN_TIMEOUT, self.build_and_publish(source, started)).await;
        lease.release().await;
        run.unwrap_or_else(|_| {
            Err(Error::unavailable(
                search::DEPENDENCY,
                format!("the index build timed out after {} s", RUN_TIMEOUT.as_secs()),
            ))
        })
    }

    async fn build_and_publish(&self, source: Source, started: Instant) -> Result<IndexReport> {
        let version = artifact::new_version();
        let work = Scratch(self.settings.work_dir.join(&version));
        tokio::fs::create_dir_all(&work.0)
            .await
            .map_err(|e| Error::Internal(format!("create {}: {e}", work.0.display())))?;
        let label = source.label();
        let input = match source {
            Source::Corpus { corpus, docs, seed } => Input::Corpus(corpus, docs, seed),
            Source::S3 { key } => {
                Input::File(self.fetch(&key, &work.0.join("source.jsonl")).await?)
            }
            Source::File(path) => Input::File(path),
            Source::Body(bytes) => Input::Body(bytes),
        };
        let (dir, opts) = (work.0.clone(), self.settings.build);
        let (built, bundle_bytes, pack_ms) = quiver::blocking("index build task", move || {
            let docs: Box<dyn Iterator<Item = Result<Doc>>> = match input {
                Input::Corpus(corpus, docs, seed) => corpus.docs(docs, seed),
                Input::File(path) => {
                    let f = std::fs::File::open(&path).map_err(|e| {
                        Error::bad_param("file", format!("{}: {e}", path.display()))
                    })?;
                    Box::new(JsonlDocs::new(BufReader::with_capacity(1 << 20, f)))
                }
                Input::Body(bytes) => Box::new(JsonlDocs::new(std::io::Cursor::new(bytes))),
            };
            let built = search::build(&dir.join("index"), docs, &opts)?;
            if built.docs == 0 {
                return Err(Error::invalid(
                    "the source holds no documents; nothing was published",
                    vec![],
                ));
            }
            let t = Instant::now();
            let size = search::pack(&dir.join("index"), &dir.join(BUNDLE))?;
            let index_bytes = dir_bytes(&dir.join("index"));
            Ok(((built, index_bytes), size, t.elapsed().as_secs_f64() * 1e3))
        })
        .await?;
        let (built, index_bytes) = built;

        let t = Instant::now();
        let meta = IndexMeta {
            doc_count: built.docs,
            bundle_size: bundle_bytes,
            index_bytes,
            source: label.clone(),
            schema: "id,title,body,tags,created_at".into(),
            index_ms: built.index_ms,
        };
        let files = [(BUNDLE.to_string(), work.0.join(BUNDLE))];
        let manifest =
            artifact::publish(&self.storage, &self.settings.prefix, &version, &files, meta).await?;
        let upload_ms = t.elapsed().as_secs_f64() * 1e3;
        // The new version is live; failing to prune old ones is logged, not a failed publish.
        let deleted = artifact::retain(&self.storage, &self.settings.prefix, &self.settings.retention, &manifest).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, prefix = %self.settings.prefix, "retention failed; old versions kept");
            Vec::new()
        });
        let report = IndexReport {
            version,
            source: label,
            docs: built.docs,
            segments: built.segments,
            index_ms: built.index_ms,
            docs_per_s: built.docs_per_s.round(),
            merge_ms: built.merge_ms,
            pack_ms,
            bundle_bytes,
            upload_ms,
            total_ms: started.elapsed().as_secs_f64() * 1e3,
            heap_per_thread: opts.heap_per_thread,
            threads: opts.threads,
            deleted,
        };
        tracing::info!(version = %report.version, docs = report.docs, index_ms = report.index_ms, bundle_bytes, total_ms = report.total_ms, "index published");
        Ok(report)
    }

    /// Streams a JSONL object to `dest`. A missing object is the caller's mistake (400 naming
    /// `key`); S3 being down is a 503.
    async fn fetch(&self, key: &str, dest: &Path) -> Result<PathBuf> {
        let s = &self.storage;
        let mut o = s.client.get_object().bucket(&s.bucket).key(key).send().await.map_err(|e| {
            if e.as_service_error().is_some_and(|se| se.is_no_such_key())
                || e.raw_response().is_some_and(|r| r.status().as_u16() == 404)
            {
                Error::bad_param("key", format!("{key} does not exist in the bucket"))
            } else {
                s3_error("GetObject", key, e)
            }
        })?;
        if o.content_length().unwrap_or(0) as u64 > MAX_SOURCE_BYTES {
            return Err(Error::TooLarge {
                what: "source object",
                limit: MAX_SOURCE_BYTES as usize,
            });
        }
        let io = |e: std::io::Error| Error::Internal(format!("write {}: {e}", dest.display()));
        let mut f = tokio::io::BufWriter::with_capacity(
            1 << 20,
            tokio::fs::File::create(dest).await.map_err(io)?,
        );
        let mut size = 0u64;
        while let Some(chunk) =
            o.body.try_next().await.map_err(|e| s3_error("GetObject", key, e))?
        {
            size += chunk.len() as u64;
            if size > MAX_SOURCE_BYTES {
                return Err(Error::TooLarge {
                    what: "source object",
                    limit: MAX_SOURCE_BYTES as usize,
                });
            }
            f.write_all(&chunk).await.map_err(io)?;
        }
        f.flush().await.map_err(io)?;
        Ok(dest.to_path_buf())
    }

    /// The EventBridge entry point: `detail` may name a source like `POST /index` does
    /// (`{"key": ...}` or `{"corpus": ..., "docs": ..., "seed": ...}`); otherwise the default source.
    pub async fn on_schedule(
        self: Arc<Self>,
        event: serde_json::Value,
    ) -> Result<serde_json::Value> {
        let detail: Detail = match event.get("detail") {
            Some(d) if d.is_object() => serde_json::from_value(d.clone()).map_err(|e| {
                Error::invalid(format!("the event's detail does not name a source: {e}"), vec![])
            })?,
            _ => Detail::default(),
        };
        let source = detail.source()?.unwrap_or_else(|| self.default_source());
        let report = self.run(source).await?;
        serde_json::to_value(&report)
            .map_err(|e| Error::Internal(format!("serializing a report: {e}")))
    }
}

/// A source once it is local.
enum Input {
    Corpus(Corpus, u64, u64),
    File(PathBuf),
    Body(Bytes),
}

/// Bytes of the files under `dir` (an index: one level of files).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// Removes a run's scratch directory however the run ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A source as named by query parameters or an event's detail.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Detail {
    /// A generated corpus: `reference` (the reference's 10,000 templated documents) or `realistic`.
    #[param(pattern = "^(reference|realistic)$")]
    corpus: Option<String>,
    /// Documents to generate (default 10,000; with `corpus`).
    #[param(minimum = 1, maximum = 1000000)]
    docs: Option<u64>,
    /// Generator seed (default 42; with `corpus`).
    seed: Option<u64>,
    /// A JSONL object in the bucket instead.
    #[param(min_length = 1, max_length = 1024)]
    key: Option<String>,
}

impl FromParams for Detail {
    fn from_params(p: &Params) -> Result<Self> {
        Ok(Detail {
            corpus: p.get("corpus").map(str::to_string),
            docs: p.opt_number("docs", 1..=MAX_DOCS)?,
            seed: p.seed()?,
            key: p.text("key", 1024)?.map(str::to_string),
        })
    }
}

impl Detail {
    fn source(self) -> Result<Option<Source>> {
        if let Some(key) = self.key {
            if self.corpus.is_some() {
                return Err(Error::bad_param("key", "give either corpus or key, not both"));
            }
            if key.is_empty()
                || key.len() > 1024
                || key.starts_with('/')
                || key.chars().any(char::is_control)
            {
                return Err(Error::bad_param(
                    "key",
                    "must be an S3 object key of 1-1024 characters, without a leading /",
                ));
            }
            return Ok(Some(Source::S3 { key }));
        }
        let Some(corpus) = self.corpus else {
            if self.docs.is_some() || self.seed.is_some() {
                let p = if self.docs.is_some() { "docs" } else { "seed" };
                return Err(Error::bad_param(p, "only applies with corpus=reference|realistic"));
            }
            return Ok(None);
        };
        let corpus = Corpus::parse(&corpus)
            .ok_or_else(|| Error::bad_param("corpus", "must be one of reference, realistic"))?;
        let docs = self.docs.unwrap_or(DEFAULT_DOCS);
        if !(1..=MAX_DOCS).contains(&docs) {
            return Err(Error::bad_param(
                "docs",
                format!("must be between 1 and {MAX_DOCS}, got {docs}"),
            ));
        }
        Ok(Some(Source::Corpus { corpus, docs, seed: self.seed.unwrap_or(DEFAULT_SEED) }))
    }
}

/// The route, registered with its OpenAPI entry.
pub fn api() -> OpenApiRouter<Arc<Indexer>> {
    OpenApiRouter::new().routes(routes!(index))
}

pub fn routes(state: Arc<Indexer>) -> Router {
    Router::from(api()).with_state(state)
}

/// `POST /index?corpus=reference|realistic&docs=N&seed=S`, `POST /index?key=path.jsonl`, or a
/// JSONL body; nothing at all indexes the default source.
#[utoipa::path(post, path = "/index", tag = "search",
    params(Detail),
    request_body(content = String, content_type = "application/x-ndjson",
        description = "Optional: JSONL of `{id, title, body, tags?, created_at?}` (at most 6 MB; through Lambda, whose payload limit counts the body base64-encoded, about 4.7 MB), instead of `corpus` or `key`."),
    responses(
        (status = 201, description = "Indexed, packed, uploaded and published.", body = IndexReport),
        (status = 413, description = "A body over 6 MB.", body = quiver::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not JSONL.", body = quiver::error::Problem, content_type = "application/problem+json"),
    ))]
async fn index(
    State(s): State<Arc<Indexer>>,
    Query(detail): Query<Detail>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let from_params = detail.source()?;
    let bytes = read_body(&headers, body, MAX_BODY_BYTES).await?;
    let source = if bytes.iter().all(u8::is_ascii_whitespace) {
        from_params.unwrap_or_else(|| s.default_source())
    } else {
        if from_params.is_some() {
            return Err(Error::invalid(
                "give the documents either as a JSONL body or with corpus/key, not both",
                vec![],
            ));
        }
        let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let ct = ct.split(';').next().unwrap_or("").trim();
        if !matches!(ct, "" | "application/x-ndjson" | "application/jsonl" | "application/json") {
            return Err(Error::UnsupportedMediaType(format!(
                "content type {ct:?}: send JSONL as application/x-ndjson"
            )));
        }
        Source::Body(bytes)
    };
    let report = s.run(source).await?;
    Ok(json(StatusCode::CREATED, &report))
}
