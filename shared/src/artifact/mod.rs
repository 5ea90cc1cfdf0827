//! Versioned artifacts in S3 (Parquet snapshots, index bundles): files go under
//! `<prefix>/<version>/`, then `<prefix>/manifest.json` is written last, so a half-published
//! version is never visible. Readers keep one loaded version per instance, check the manifest at
//! most every N seconds with a conditional GET (comparing the ETag too: some S3 servers ignore
//! `If-None-Match`), verify every file's size and checksum, and switch atomically. A broken new
//! version keeps the old one serving; with nothing loaded it is a 503 with the reason.

mod fetch;
mod manifest;
mod publish;
mod tracker;

pub use fetch::*;
pub use manifest::*;
pub use publish::*;
pub use tracker::*;

/// Files of one version downloaded at once.
const PARALLEL_DOWNLOADS: usize = 16;
