//! `quiver`: what the Quiver Lambda functions share. Each heavy dependency sits behind the feature
//! named after its area, so a function links only what it uses.
//!
//! # Layout
//! - Every function: [`config`] (environment, once per instance), [`error`] (one error type,
//!   rendered as problem+json; [`blocking`] for CPU work), [`time`] (the one RFC 3339 parser),
//!   [`http`] (`app` and `finish`: ETag/304, compression, `Server-Timing`, request ids;
//!   `params`: `FromParams` and the `Query<T>` extractor, one struct per route that is both its
//!   OpenAPI parameters and their parser; `body`, `encoding`), [`openapi`], [`events`] (the
//!   event shape and its parser).
//! - Clients: [`pg`] + [`migrate`] (`pg`), [`valkey`] (`cache`), [`storage`] (`s3`),
//!   [`secrets`] (`secrets`), [`lambda`] (`lambda`: init and the runtime loop).
//! - [`cache`] (`cache`): `entry` (keys, the stored value), `answer` (the one cached, versioned
//!   answer path: `Cache::answer` with `Computed { entry, timings }`).
//! - [`artifact`] (`s3`): versioned data in S3: `manifest`, `publish` (manifest last, retention),
//!   `fetch`, `tracker` (one loaded version per instance, switched atomically). [`background`]:
//!   the low-priority thread that switches and frees versions beside the requests.
//! - [`analytics`]: filters and result types; `postgres` (`pg`) and `duckdb` (`duckdb`) run the
//!   same queries and return byte-identical JSON.
//! - [`snapshot`] (`duckdb`): settings and schema; `export` (`pg` + `s3`: PostgreSQL to Parquet);
//!   `load` (Parquet into the instance's DuckDB, following the manifest).
//! - [`search`] (`tantivy`): schema and document; `corpus`, `jsonl`, `build`, `bundle`, `query`.
//! - [`process`] (`polars`): `parse` (serde visitors straight into columns), `check`,
//!   `generate`, `aggregate`.
//! - [`pg_bench`] (`pg` + `polars`): the four row-decoding approaches of `GET /samples/pg/*`.
//! - [`ingest`], [`generate`]: writing events (COPY) and generating them.
//! - `testing` (`testing`, dev-dependencies only): private PostgreSQL/Valkey servers and the
//!   `TestApp` harness every test file uses.

#[cfg(feature = "s3")]
pub mod artifact;
pub mod background;
#[cfg(feature = "cache")]
pub mod cache;
pub mod config;
pub mod error;
pub mod events;
pub mod generate;
pub mod http;

pub mod analytics;
#[cfg(feature = "pg")]
pub mod ingest;
#[cfg(feature = "lambda")]
pub mod lambda;
#[cfg(any(test, feature = "testing"))]
pub mod log_lines;
#[cfg(feature = "pg")]
pub mod migrate;
pub mod openapi;
#[cfg(feature = "pg")]
pub mod pg;
#[cfg(all(feature = "pg", feature = "polars"))]
pub mod pg_bench;
#[cfg(feature = "polars")]
pub mod process;
#[cfg(feature = "tantivy")]
pub mod search;
#[cfg(feature = "secrets")]
pub mod secrets;
#[cfg(feature = "duckdb")]
pub mod snapshot;
#[cfg(feature = "s3")]
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
#[cfg(any(feature = "pg", feature = "cache"))]
mod tls;
#[cfg(feature = "cache")]
pub mod valkey;

pub use config::{Config, Need};
pub use error::{blocking, Error, Result, ResultExt};

/// The version every function reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Most tags on one item, wherever the API takes tags (a search document, a processed point).
pub const MAX_TAGS: usize = 32;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;
