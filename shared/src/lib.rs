//! `quiver`: what the Quiver Lambda functions share. Each heavy dependency sits behind the feature
//! named after its module, so a function links only what it uses.

#[cfg(feature = "s3")]
pub mod artifact;
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
